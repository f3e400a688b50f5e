//! What the backend sends once a message is decoded (`proto::link::FromBackend`):
//! REPLY answers a call, SEND pushes to a session's client, CLOSE closes it; the push
//! plane's actions go on to `push_actions`.

use std::rc::{Rc, Weak};
use std::sync::atomic::Ordering::Relaxed;

use crate::proto::bannou::{flags, RequestHeader};
use crate::proto::http1::Response;
use crate::proto::link::{FromBackend, ReplyMsg};
use crate::session::ConnShared;

use super::inner::Inner;

impl Inner {
    /// A REPLY: the call it answers gets its result (a late or unknown one is counted).
    pub(super) fn on_reply(&self, r: ReplyMsg) {
        let pending = self.st.borrow_mut().calls.remove(r.call);
        match pending {
            Some(p) => p.on_done.run(Ok(Response {
                status: r.status,
                body: r.payload,
                keep_alive: true,
            })),
            None => {
                self.metrics.link_late_replies.fetch_add(1, Relaxed);
            }
        }
    }

    pub(super) fn on_action(&self, action: FromBackend) {
        match action {
            FromBackend::Reply {
                call,
                status,
                payload,
            } => self.on_reply(ReplyMsg {
                call,
                status,
                payload,
            }),
            FromBackend::Send {
                session,
                flags: f,
                payload,
            } => match (self.raw_conn(session), self.session(session)) {
                // A raw route's client gets a plain message, not a Bannou push.
                (Some(c), _) => self.raw_send(&c, f, payload),
                (None, Some(c)) => {
                    let mut head = RequestHeader::push((self.push_ids)());
                    head.flags |= f & flags::BINARY;
                    c.send_binary(&head.encode(), payload);
                }
                (None, None) => {
                    tracing::debug!(service = %self.service, session, "SEND for a session that is gone; dropped")
                }
            },
            // (A raw route's client is closed the same way.)
            FromBackend::Close {
                session,
                code,
                reason,
            } => match self.session(session).or_else(|| self.raw_conn(session)) {
                Some(c) => {
                    let reason = String::from_utf8_lossy(&reason).into_owned();
                    c.request_final_close(code, reason);
                }
                None => {
                    tracing::debug!(service = %self.service, session, "CLOSE for a session that is gone; dropped")
                }
            },
            // The push plane's (`push_actions`).
            other => self.on_push_action(other),
        }
    }

    /// The live session announced on this connection as `session`.
    pub(super) fn session(&self, session: u64) -> Option<Rc<ConnShared>> {
        self.st
            .borrow()
            .sessions
            .get(&session)
            .and_then(Weak::upgrade)
            .filter(|c| !c.is_gone())
    }
}
