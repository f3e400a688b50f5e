//! Shortcuts: pre-bound calls a backend publishes for a session (Bannou's
//! `session.shortcut-published`). Each appears in the session's manifest as service
//! `shortcut` under a GUID of its own; invoking it sends the bound payload to the target
//! endpoint as if the client had called it. Expired → 70, target gone → 71, revoked → 72.
//!
//! Why kept per shard, by session: a shortcut belongs to one connection's session and
//! is read only when that client invokes it or its manifest is built, both on its
//! shard. A shortcut's number (in its GUID) is fixed for the session's life, also when
//! it is published again under the same name; a revoked one keeps its number so its
//! GUID answers 72, not 30.

use std::collections::HashMap;

use bytes::Bytes;

/// Most shortcuts one session may hold (revoked ones included).
pub const MAX_PER_SESSION: usize = 256;

/// One shortcut of a session.
#[derive(Debug, Clone)]
pub struct Shortcut {
    /// Its number within the session (what its GUID seals).
    pub id: u32,
    /// What the manifest calls it (`endpoint`).
    pub name: Box<str>,
    /// The endpoint path the bound payload goes to.
    pub target: Box<str>,
    pub payload: Bytes,
    /// Unix milliseconds after which invoking it answers 70; 0 = never.
    pub expires_unix_ms: u64,
    pub revoked: bool,
}

impl Shortcut {
    pub fn expired(&self, now_unix_ms: u64) -> bool {
        self.expires_unix_ms != 0 && now_unix_ms >= self.expires_unix_ms
    }
}

/// A session holds `MAX_PER_SESSION` shortcuts already.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the session holds {MAX_PER_SESSION} shortcuts already")]
pub struct TooMany;

/// One shard's shortcuts, by session (its shard-unique number).
#[derive(Debug, Default)]
pub struct Shortcuts {
    by_session: HashMap<u64, Vec<Shortcut>, ahash::RandomState>,
}

impl Shortcuts {
    /// Publishes (or replaces, by name) a shortcut for `session`; returns its number.
    pub fn publish(
        &mut self,
        session: u64,
        name: &str,
        target: &str,
        payload: Bytes,
        expires_unix_ms: u64,
    ) -> Result<u32, TooMany> {
        let list = self.by_session.entry(session).or_default();
        if let Some(s) = list.iter_mut().find(|s| &*s.name == name) {
            s.target = target.into();
            s.payload = payload;
            s.expires_unix_ms = expires_unix_ms;
            s.revoked = false;
            return Ok(s.id);
        }
        if list.len() >= MAX_PER_SESSION {
            return Err(TooMany);
        }
        let id = list.len() as u32;
        list.push(Shortcut {
            id,
            name: name.into(),
            target: target.into(),
            payload,
            expires_unix_ms,
            revoked: false,
        });
        Ok(id)
    }

    /// Revokes `session`'s shortcut `name`; true if one was listed.
    pub fn revoke(&mut self, session: u64, name: &str) -> bool {
        match self
            .by_session
            .get_mut(&session)
            .and_then(|l| l.iter_mut().find(|s| &*s.name == name && !s.revoked))
        {
            Some(s) => {
                s.revoked = true;
                s.payload = Bytes::new();
                true
            }
            None => false,
        }
    }

    /// Shortcut number `id` of `session`.
    pub fn get(&self, session: u64, id: u32) -> Option<&Shortcut> {
        self.by_session.get(&session)?.get(id as usize)
    }

    /// The shortcuts `session`'s manifest lists (not revoked).
    pub fn listed(&self, session: u64) -> impl Iterator<Item = &Shortcut> {
        self.by_session
            .get(&session)
            .into_iter()
            .flatten()
            .filter(|s| !s.revoked)
    }

    /// `session` ended.
    pub fn remove_session(&mut self, session: u64) {
        self.by_session.remove(&session);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shortcut_keeps_its_number_when_published_again_and_after_revocation() {
        let mut s = Shortcuts::default();
        let a = s
            .publish(1, "join", "/game/join", Bytes::from_static(b"{}"), 0)
            .unwrap();
        let b = s
            .publish(1, "leave", "/game/leave", Bytes::new(), 0)
            .unwrap();
        assert_ne!(a, b);
        assert_eq!(
            s.publish(1, "join", "/game/join2", Bytes::new(), 5)
                .unwrap(),
            a
        );
        assert_eq!(&*s.get(1, a).unwrap().target, "/game/join2");
        assert!(s.revoke(1, "join"));
        assert!(!s.revoke(1, "join"), "once");
        assert!(
            s.get(1, a).unwrap().revoked,
            "its number still answers (72)"
        );
        assert_eq!(s.listed(1).count(), 1);
        assert_eq!(
            s.publish(1, "join", "/game/join", Bytes::new(), 0).unwrap(),
            a
        );
        assert_eq!(s.listed(1).count(), 2);
    }

    #[test]
    fn a_shortcut_expires_at_its_time_and_never_without_one() {
        let mut s = Shortcuts::default();
        let a = s.publish(1, "x", "/x", Bytes::new(), 1000).unwrap();
        assert!(!s.get(1, a).unwrap().expired(999));
        assert!(s.get(1, a).unwrap().expired(1000));
        let b = s.publish(1, "y", "/y", Bytes::new(), 0).unwrap();
        assert!(!s.get(1, b).unwrap().expired(u64::MAX));
    }

    #[test]
    fn a_session_holds_a_bounded_number_of_shortcuts() {
        let mut s = Shortcuts::default();
        for i in 0..MAX_PER_SESSION {
            s.publish(1, &format!("s{i}"), "/t", Bytes::new(), 0)
                .unwrap();
        }
        assert_eq!(
            s.publish(1, "one more", "/t", Bytes::new(), 0),
            Err(TooMany)
        );
        assert!(
            s.publish(1, "s3", "/t", Bytes::new(), 0).is_ok(),
            "replacing is fine"
        );
    }
}
