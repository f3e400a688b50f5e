//! Where sessions and topic subscribers are: session id → connections, account id →
//! connections, topic → shards with at least one subscriber.
//!
//! Why a concurrent map (dashmap) rather than a directory shard reached by mailbox:
//! every entry changes only on connect, disconnect, subscribe and unsubscribe, and is
//! read by whoever pushes (a link on any shard, the admin thread) — a read-mostly map
//! with fine-grained locks answers at once, from any thread, and no client frame or
//! push delivery touches it. A session id may have several connections (one client
//! connected twice with the same token): pushes reach all of them.

use std::sync::Arc;

use dashmap::DashMap;

use crate::session::SessionRef;

/// Where one connection is: its shard and its place in that shard's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loc {
    pub shard: u16,
    pub at: SessionRef,
}

/// The connections under one key: almost always one, kept inline (no allocation per
/// session beyond its key: every connected session has an entry here, twice with an
/// account, so this is part of an idle connection's cost).
#[derive(Debug, Clone, Default)]
enum Locs {
    #[default]
    None,
    One(Loc),
    // A thin pointer (the enum stays 16 bytes) for the rare key with several.
    #[allow(clippy::box_collection)]
    Many(Box<Vec<Loc>>),
}

impl Locs {
    fn push(&mut self, loc: Loc) {
        *self = match std::mem::take(self) {
            Locs::None => Locs::One(loc),
            Locs::One(a) => Locs::Many(Box::new(vec![a, loc])),
            Locs::Many(mut v) => {
                v.push(loc);
                Locs::Many(v)
            }
        };
    }

    fn remove(&mut self, loc: Loc) {
        *self = match std::mem::take(self) {
            Locs::One(a) if a == loc => Locs::None,
            Locs::Many(mut v) => {
                v.retain(|l| *l != loc);
                match v.len() {
                    0 => Locs::None,
                    1 => Locs::One(v[0]),
                    _ => Locs::Many(v),
                }
            }
            other => other,
        };
    }

    fn is_empty(&self) -> bool {
        matches!(self, Locs::None)
    }

    fn to_vec(&self) -> Vec<Loc> {
        match self {
            Locs::None => Vec::new(),
            Locs::One(a) => vec![*a],
            Locs::Many(v) => v.to_vec(),
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        match self {
            Locs::None => 0,
            Locs::One(_) => 1,
            Locs::Many(v) => v.len(),
        }
    }
}

/// Sessions by id and by account, and the shards subscribed to each topic.
#[derive(Debug)]
pub struct Directory {
    sessions: DashMap<Box<str>, Locs, ahash::RandomState>,
    accounts: DashMap<Box<str>, Locs, ahash::RandomState>,
    /// One bit per shard (64 shards per word).
    topics: DashMap<Arc<str>, Box<[u64]>, ahash::RandomState>,
    words: usize,
    /// Raw routes: route path + NUL + user → the user's one connection on the route.
    raw: DashMap<Box<str>, Loc, ahash::RandomState>,
}

impl Directory {
    pub fn new(shards: usize) -> Directory {
        Directory {
            sessions: DashMap::default(),
            accounts: DashMap::default(),
            topics: DashMap::default(),
            words: shards.div_ceil(64).max(1),
            raw: DashMap::default(),
        }
    }

    /// `loc` is now `user`'s connection on raw route `path`; returns the one it
    /// replaces, if any (to be closed: one connection per user per route).
    pub fn claim_raw(&self, path: &str, user: &str, loc: Loc) -> Option<Loc> {
        self.raw
            .insert(raw_key(path, user), loc)
            .filter(|old| *old != loc)
    }

    /// The connection at `loc` left raw route `path` (its claim goes, unless a newer
    /// connection took it).
    pub fn release_raw(&self, path: &str, user: &str, loc: Loc) {
        self.raw.remove_if(&*raw_key(path, user), |_, l| *l == loc);
    }

    /// A connection of session `session_id` (of `account`, if any) is at `loc`.
    pub fn register(&self, session_id: &str, account: Option<&str>, loc: Loc) {
        self.sessions
            .entry(session_id.into())
            .or_default()
            .push(loc);
        if let Some(a) = account {
            self.accounts.entry(a.into()).or_default().push(loc);
        }
    }

    /// The connection at `loc` has ended.
    pub fn unregister(&self, session_id: &str, account: Option<&str>, loc: Loc) {
        remove_loc(&self.sessions, session_id, loc);
        if let Some(a) = account {
            remove_loc(&self.accounts, a, loc);
        }
    }

    /// Where the connections of session `session_id` are.
    pub fn session(&self, session_id: &str) -> Vec<Loc> {
        self.sessions
            .get(session_id)
            .map(|v| v.to_vec())
            .unwrap_or_default()
    }

    /// Where the connections of every session of `account` are.
    pub fn account(&self, account: &str) -> Vec<Loc> {
        self.accounts
            .get(account)
            .map(|v| v.to_vec())
            .unwrap_or_default()
    }

    /// Connections registered now (all shards).
    #[cfg(test)]
    pub fn connections(&self) -> usize {
        self.sessions.iter().map(|e| e.value().len()).sum()
    }

    /// Marks whether `shard` has subscribers to `topic` (its first subscriber came, or
    /// its last left). Only that shard changes its own bit.
    pub fn set_topic_shard(&self, topic: &Arc<str>, shard: u16, on: bool) {
        let (w, bit) = (shard as usize / 64, 1u64 << (shard % 64));
        if on {
            let mut e = self
                .topics
                .entry(topic.clone())
                .or_insert_with(|| vec![0; self.words].into_boxed_slice());
            e[w] |= bit;
        } else {
            let mut empty = false;
            if let Some(mut e) = self.topics.get_mut(&**topic) {
                e[w] &= !bit;
                empty = e.iter().all(|&x| x == 0);
            }
            if empty {
                self.topics
                    .remove_if(&**topic, |_, v| v.iter().all(|&x| x == 0));
            }
        }
    }

    /// The shards with at least one subscriber to `topic`.
    pub fn topic_shards(&self, topic: &str) -> Vec<u16> {
        let Some(bits) = self.topics.get(topic) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (w, &word) in bits.iter().enumerate() {
            let mut word = word;
            while word != 0 {
                let b = word.trailing_zeros();
                out.push((w * 64) as u16 + b as u16);
                word &= word - 1;
            }
        }
        out
    }
}

fn raw_key(path: &str, user: &str) -> Box<str> {
    format!("{path}\0{user}").into()
}

fn remove_loc(map: &DashMap<Box<str>, Locs, ahash::RandomState>, key: &str, loc: Loc) {
    let mut empty = false;
    if let Some(mut v) = map.get_mut(key) {
        v.remove(loc);
        empty = v.is_empty();
    }
    if empty {
        map.remove_if(key, |_, v| v.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(shard: u16, slot: u32) -> Loc {
        Loc {
            shard,
            at: SessionRef {
                slot,
                generation: 1,
            },
        }
    }

    #[test]
    fn every_connection_of_a_session_and_of_an_account_is_found_until_it_ends() {
        let d = Directory::new(2);
        d.register("s1", Some("acct"), loc(0, 1));
        d.register("s2", Some("acct"), loc(1, 1));
        d.register("s1", Some("acct"), loc(1, 2));
        assert_eq!(d.session("s1"), [loc(0, 1), loc(1, 2)]);
        assert_eq!(d.account("acct").len(), 3);
        d.unregister("s1", Some("acct"), loc(0, 1));
        assert_eq!(d.session("s1"), [loc(1, 2)]);
        d.unregister("s1", Some("acct"), loc(1, 2));
        assert!(d.session("s1").is_empty());
        assert_eq!(d.account("acct"), [loc(1, 1)]);
        assert_eq!(d.connections(), 1);
    }

    #[test]
    fn a_key_with_one_connection_costs_no_allocation_and_sixteen_bytes() {
        assert!(std::mem::size_of::<Locs>() <= 16);
        let mut l = Locs::default();
        l.push(loc(0, 1));
        assert!(matches!(l, Locs::One(_)));
        l.push(loc(1, 2));
        assert_eq!(l.len(), 2);
        l.remove(loc(0, 1));
        assert!(matches!(l, Locs::One(x) if x == loc(1, 2)), "back inline");
        l.remove(loc(1, 2));
        assert!(l.is_empty());
    }

    #[test]
    fn a_raw_route_has_one_connection_per_user_and_a_replaced_one_releases_nothing() {
        let d = Directory::new(2);
        assert_eq!(d.claim_raw("/lobby", "u", loc(0, 1)), None);
        assert_eq!(d.claim_raw("/game", "u", loc(0, 2)), None, "another route");
        assert_eq!(d.claim_raw("/lobby", "u", loc(1, 3)), Some(loc(0, 1)));
        d.release_raw("/lobby", "u", loc(0, 1));
        assert_eq!(
            d.claim_raw("/lobby", "u", loc(1, 4)),
            Some(loc(1, 3)),
            "the older one's end did not release the newer's claim"
        );
        d.release_raw("/lobby", "u", loc(1, 4));
        assert_eq!(d.claim_raw("/lobby", "u", loc(0, 5)), None);
    }

    #[test]
    fn a_topic_lists_only_the_shards_with_subscribers_beyond_64_shards_too() {
        let d = Directory::new(70);
        let t: Arc<str> = "npc.1".into();
        d.set_topic_shard(&t, 3, true);
        d.set_topic_shard(&t, 66, true);
        assert_eq!(d.topic_shards("npc.1"), [3, 66]);
        d.set_topic_shard(&t, 3, false);
        assert_eq!(d.topic_shards("npc.1"), [66]);
        d.set_topic_shard(&t, 66, false);
        assert!(d.topic_shards("npc.1").is_empty());
        assert!(d.topics.is_empty(), "an empty topic leaves no entry");
    }
}
