//! The way in: a client request placed on the link. It is encoded straight into the
//! write buffer (after its session's OPEN, the first time this connection sees the
//! session) and registered as a call, or refused at once (link down or retired, too
//! many calls, backend not reading, too long).

use std::rc::Rc;

use crate::proto::bannou::flags;
use crate::proto::link::{self as wire, LinkError, ToBackend};
use crate::session::ConnShared;
use crate::upstream::{Done, LinkFailure};

use super::calls::Pending;
use super::inner::Inner;
use super::state::Phase;

/// Unsent bytes a link may hold; requests beyond fail with [`LinkFailure::Overloaded`]
/// (a backend that stops reading must not grow the gateway's memory without bound).
const MAX_UNSENT_BYTES: usize = 64 << 20;

/// One client request for the link (borrowed; encoded into the write buffer at once).
#[derive(Debug, Clone, Copy)]
pub struct LinkRequest<'a> {
    /// The client's message id.
    pub message_id: u64,
    /// The client's Bannou flags (0x10 = an event: no reply).
    pub flags: u8,
    /// The endpoint path (a meta request's ends in `/meta/<kind>`).
    pub path: &'a str,
    pub payload: &'a [u8],
}

/// A call that could not be placed hands its callback back with the reason.
type Refused = (Done, LinkFailure);

impl Inner {
    /// Queues `req` (after its session's OPEN if this connection has not seen the
    /// session). `Ok(None)`: the call waits for its reply; `Ok(Some)`: an event, queued,
    /// whose callback the caller runs now.
    pub(super) fn place(
        &self,
        session: &Rc<ConnShared>,
        req: LinkRequest<'_>,
        on_done: Done,
    ) -> Result<Option<Done>, Refused> {
        let event = req.flags & flags::EVENT != 0;
        let fail = |on_done: Done, e: LinkFailure| Err((on_done, e));
        if self.retired.get() {
            return fail(on_done, LinkFailure::Retired);
        }
        let mut st = self.st.borrow_mut();
        if st.phase == Phase::Down {
            return fail(on_done, LinkFailure::Down);
        }
        if st.calls.len() >= self.settings.max_inflight {
            return fail(on_done, LinkFailure::Overloaded("too many calls waiting"));
        }
        if st.wbuf.len() - st.sent > MAX_UNSENT_BYTES {
            return fail(on_done, LinkFailure::Overloaded("backend not reading"));
        }
        let s = &session.session;
        let sref = s.link_ref;
        let announce = !st.sessions.contains_key(&sref);
        let roles;
        let open = if announce {
            roles = s.roles().join(",");
            let open = ToBackend::Open {
                session: sref,
                session_id: &s.session_id,
                account_id: s.account_id.as_deref().unwrap_or(""),
                roles: &roles,
            };
            if let Err(e) = open.check() {
                return fail(on_done, LinkFailure::Encode(e));
            }
            Some(open)
        } else {
            None
        };
        let mut req = ToBackend::Request {
            session: sref,
            call: 0,
            message_id: req.message_id,
            flags: req.flags,
            path: req.path,
            payload: req.payload,
        };
        if let Err(e) = req.check() {
            return fail(on_done, LinkFailure::Encode(e));
        }
        if req.encoded_len() > self.settings.max_message_bytes {
            return fail(
                on_done,
                LinkFailure::Encode(LinkError::TooLong {
                    kind: wire::kind::REQUEST,
                    field: "message",
                    len: req.encoded_len(),
                }),
            );
        }
        if let Some(open) = open {
            st.put_message(&open);
            st.sessions.insert(sref, Rc::downgrade(session));
        }
        let unfinished = if event {
            Some(on_done)
        } else {
            let deadline = crate::rt::clock::recent() + self.settings.request_timeout;
            if let ToBackend::Request { call, .. } = &mut req {
                *call = st.calls.insert(Pending { on_done, deadline });
            }
            None
        };
        st.put_message(&req);
        drop(st);
        self.wake_writer();
        Ok(unfinished)
    }
}
