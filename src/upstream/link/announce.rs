//! Telling the backend of sessions (OPEN) other than before a first request: every
//! session of the shard for a service that asks (`announce_all`), at its connect and
//! whenever the link comes up; and again, with its new roles, for an announced session
//! whose roles changed; and, to `announce_all` services, that a session's client went
//! away (AWAY) or came back (RESUMED).

use std::rc::Rc;

use crate::proto::link::ToBackend;
use crate::session::ConnShared;

use super::inner::Inner;
use super::state::Phase;

impl Inner {
    /// A session connected: with `announce_all`, the backend is told now.
    pub(super) fn announce(&self, c: &Rc<ConnShared>) {
        if self.settings.announce_all && self.put_open(c, false) {
            self.wake_writer();
        }
    }

    /// The link came up: with `announce_all`, every session of the shard is told.
    pub(super) fn announce_every_session(&self) {
        if !self.settings.announce_all {
            return;
        }
        let mut any = false;
        for c in self.plane.sessions.all() {
            if !c.is_gone() {
                any |= self.put_open(&c, false);
            }
        }
        if any {
            self.wake_writer();
        }
    }

    /// A session's roles changed: if the backend was told of it, it is told again (the
    /// newer OPEN replaces the older: docs/LINK.md).
    pub(super) fn reannounce(&self, c: &Rc<ConnShared>) {
        if self.put_open(c, true) {
            self.wake_writer();
        }
    }

    /// A session's client dropped and the session is kept: an `announce_all` service
    /// that was told of it is told (AWAY).
    pub(super) fn away(&self, link_ref: u64) {
        self.put_life_event(link_ref, ToBackend::Away { session: link_ref });
    }

    /// A session's client came back on a new connection (`c`): the link reaches the
    /// new handle, and an `announce_all` service that was told of it is told (RESUMED).
    pub(super) fn resumed(&self, c: &Rc<ConnShared>) {
        let id = c.session.link_ref;
        let known = {
            let mut st = self.st.borrow_mut();
            match st.sessions.get_mut(&id) {
                Some(w) => {
                    *w = Rc::downgrade(c);
                    true
                }
                None => false,
            }
        };
        if known {
            self.put_life_event(id, ToBackend::Resumed { session: id });
        } else {
            self.announce(c);
        }
    }

    /// Writes AWAY or RESUMED (`event`) for `session`, to an `announce_all` service
    /// that was told of it.
    fn put_life_event(&self, session: u64, event: ToBackend<'_>) {
        if !self.settings.announce_all {
            return;
        }
        let mut st = self.st.borrow_mut();
        if st.phase == Phase::Down || self.retired.get() || !st.sessions.contains_key(&session) {
            return;
        }
        st.put_message(&event);
        drop(st);
        self.wake_writer();
    }

    /// Writes an OPEN for `c`: if it was not announced yet (`again` false), or only if
    /// it was (`again` true). Returns whether one was written.
    fn put_open(&self, c: &Rc<ConnShared>, again: bool) -> bool {
        let mut st = self.st.borrow_mut();
        if st.phase == Phase::Down || self.retired.get() {
            return false;
        }
        let s = &c.session;
        if st.sessions.contains_key(&s.link_ref) != again {
            return false;
        }
        let roles = s.roles().join(",");
        let open = ToBackend::Open {
            session: s.link_ref,
            session_id: &s.session_id,
            account_id: s.account_id.as_deref().unwrap_or(""),
            roles: &roles,
        };
        if let Err(e) = open.check() {
            tracing::debug!(service = %self.service, error = %e, "session not announced");
            return false;
        }
        st.put_message(&open);
        st.sessions.insert(s.link_ref, Rc::downgrade(c));
        true
    }
}
