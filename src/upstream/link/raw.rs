//! Raw routes' connections on the link (docs/LINK.md, "Raw routes"): a client on a raw
//! route speaks plain WebSocket messages; the backend hears RAW_OPEN, then a MESSAGE
//! per message, then CLOSED, and answers with SEND (a plain message back) and CLOSE.
//!
//! Why apart from sessions (`announce`): a raw connection has no Bannou header, no
//! manifest and no GUIDs, so the link keeps it in a table of its own — a SEND to it is
//! a plain text or binary message, not a Bannou push — and it is tied to the link's
//! connection: when that connection is lost the backend has forgotten it, so its
//! clients are closed (1011) rather than left talking to nobody.

use std::rc::Rc;

use crate::proto::frame::{encode_header, OpCode};
use crate::proto::link::ToBackend;
use crate::session::ConnShared;

use super::inner::Inner;
use super::state::Phase;

/// Close code for a raw route's client whose backend link was lost.
pub(super) const CLOSE_BACKEND_LOST: u16 = 1011;

impl Inner {
    pub(super) fn raw_opened(&self, c: &Rc<ConnShared>, path: &str) -> bool {
        let mut st = self.st.borrow_mut();
        if st.phase != Phase::Up || self.retired.get() {
            return false;
        }
        let s = &c.session;
        let roles = s.roles().join(",");
        let open = ToBackend::RawOpen {
            session: s.link_ref,
            path,
            session_id: &s.session_id,
            account_id: s.account_id.as_deref().unwrap_or(""),
            roles: &roles,
        };
        if open.check().is_err() {
            return false;
        }
        st.put_message(&open);
        st.raw.insert(s.link_ref, Rc::downgrade(c));
        drop(st);
        self.wake_writer();
        true
    }

    pub(super) fn raw_message(&self, session: u64, binary: bool, payload: &[u8]) -> bool {
        let mut st = self.st.borrow_mut();
        if st.phase != Phase::Up || !st.raw.contains_key(&session) {
            return false;
        }
        st.put_message(&ToBackend::Message {
            session,
            flags: u8::from(binary),
            payload,
        });
        drop(st);
        self.wake_writer();
        true
    }

    /// The raw connection announced as `session`, if it is still there.
    pub(super) fn raw_conn(&self, session: u64) -> Option<Rc<ConnShared>> {
        self.st.borrow().raw.get(&session).and_then(|w| w.upgrade())
    }

    /// The backend's SEND to a raw connection: `payload` as one plain WebSocket
    /// message (binary with flag 0x01, else text, which must be UTF-8).
    pub(super) fn raw_send(&self, c: &ConnShared, flags: u8, payload: bytes::Bytes) {
        let binary = flags & 0x01 != 0;
        if !binary && std::str::from_utf8(&payload).is_err() {
            tracing::warn!(service = %self.service, session = c.session.link_ref, "SEND of a text message that is not UTF-8 to a raw route's client; dropped (set flag 0x01 for binary)");
            return;
        }
        let opcode = if binary { OpCode::Binary } else { OpCode::Text };
        let mut head = [0u8; 14];
        let n = encode_header(&mut head, true, opcode, None, payload.len());
        c.send_raw_frame(&head[..n], payload);
    }

    /// The link's connection was lost: its raw clients are closed (the backend has
    /// forgotten them).
    pub(super) fn close_raw_clients(&self) {
        let conns: Vec<_> = self.st.borrow_mut().raw.drain().collect();
        for (_, w) in conns {
            if let Some(c) = w.upgrade() {
                c.request_final_close(CLOSE_BACKEND_LOST, "backend link lost");
            }
        }
    }
}
