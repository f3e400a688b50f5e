//! One shard's topic subscriptions: subscribers per topic, topics per session.
//!
//! Why this shape: a publish walks a topic's subscribers, so they sit in a dense
//! `IndexMap` (iteration is a walk over a vector); a session leaving (or one of
//! 100k observers unsubscribing) must not scan that vector, so entries are keyed by the
//! session's shard-unique number and removed by `swap_remove`. Each session's own list
//! is what its disconnect walks. Topic names are shared `Arc<str>`s, stored once per
//! shard. Cost per subscription: an `IndexMap` entry (hash, number, `Rc`) and its
//! index slot, plus one `Arc` in the session's list — about 60 bytes.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use indexmap::IndexMap;

use crate::session::ConnShared;

type Subscribers = IndexMap<u64, Rc<ConnShared>, ahash::RandomState>;

/// One shard's subscriptions.
#[derive(Default)]
pub struct Topics {
    by_topic: HashMap<Arc<str>, Subscribers, ahash::RandomState>,
    by_session: HashMap<u64, Vec<Arc<str>>, ahash::RandomState>,
}

impl std::fmt::Debug for Topics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Topics({} topics, {} sessions)",
            self.by_topic.len(),
            self.by_session.len()
        )
    }
}

/// What a subscription change did to the shard's set of topics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Nothing (already subscribed, or was not).
    None,
    /// Changed; the topic still has (or already had) other subscribers here.
    Changed,
    /// The topic's first subscriber on this shard came, or its last left: the
    /// directory's shard bit must follow.
    Edge(Arc<str>),
}

impl Topics {
    /// Subscribes `conn` (shard-unique number `id`) to `topic`.
    pub fn subscribe(&mut self, topic: &str, id: u64, conn: &Rc<ConnShared>) -> Change {
        let (name, first) = match self.by_topic.get_key_value(topic) {
            Some((name, subs)) => {
                if subs.contains_key(&id) {
                    return Change::None;
                }
                (name.clone(), false)
            }
            None => (Arc::<str>::from(topic), true),
        };
        self.by_topic
            .entry(name.clone())
            .or_default()
            .insert(id, conn.clone());
        self.by_session.entry(id).or_default().push(name.clone());
        if first {
            Change::Edge(name)
        } else {
            Change::Changed
        }
    }

    /// Unsubscribes session `id` from `topic`.
    pub fn unsubscribe(&mut self, topic: &str, id: u64) -> Change {
        let Some(list) = self.by_session.get_mut(&id) else {
            return Change::None;
        };
        let Some(i) = list.iter().position(|t| &**t == topic) else {
            return Change::None;
        };
        let name = list.swap_remove(i);
        if list.is_empty() {
            self.by_session.remove(&id);
        }
        self.leave(name, id)
    }

    /// Session `id` ended: it leaves every topic. Returns the topics left with no
    /// subscriber on this shard.
    pub fn remove_session(&mut self, id: u64) -> Vec<Arc<str>> {
        let Some(list) = self.by_session.remove(&id) else {
            return Vec::new();
        };
        let mut emptied = Vec::new();
        for name in list {
            if let Change::Edge(t) = self.leave(name, id) {
                emptied.push(t);
            }
        }
        emptied
    }

    fn leave(&mut self, name: Arc<str>, id: u64) -> Change {
        let Some(subs) = self.by_topic.get_mut(&name) else {
            return Change::None;
        };
        subs.swap_remove(&id);
        if subs.is_empty() {
            self.by_topic.remove(&name);
            Change::Edge(name)
        } else {
            Change::Changed
        }
    }

    /// Session `id`'s subscriptions now reach `conn` (its new connection, on a resume).
    pub fn rebind(&mut self, id: u64, conn: &Rc<ConnShared>) {
        let Some(list) = self.by_session.get(&id) else {
            return;
        };
        for name in list {
            if let Some(c) = self.by_topic.get_mut(name).and_then(|s| s.get_mut(&id)) {
                *c = conn.clone();
            }
        }
    }

    /// The subscribers of `topic` on this shard.
    pub fn subscribers(&self, topic: &str) -> impl Iterator<Item = &Rc<ConnShared>> {
        self.by_topic
            .get(topic)
            .into_iter()
            .flat_map(|s| s.values())
    }

    /// The topics session `id` is subscribed to.
    pub fn of_session(&self, id: u64) -> &[Arc<str>] {
        self.by_session.get(&id).map_or(&[], |v| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::tests_support::shared;

    #[test]
    fn the_first_subscriber_and_the_last_to_leave_are_edges_for_the_directory() {
        let mut t = Topics::default();
        let (a, b) = (Rc::new(shared(1024)), Rc::new(shared(1024)));
        assert!(matches!(t.subscribe("npc.1", 1, &a), Change::Edge(_)));
        assert_eq!(t.subscribe("npc.1", 1, &a), Change::None, "once");
        assert_eq!(t.subscribe("npc.1", 2, &b), Change::Changed);
        assert_eq!(t.subscribers("npc.1").count(), 2);
        assert_eq!(t.unsubscribe("npc.1", 1), Change::Changed);
        assert_eq!(t.unsubscribe("npc.1", 1), Change::None);
        assert!(matches!(t.unsubscribe("npc.1", 2), Change::Edge(_)));
        assert_eq!(t.subscribers("npc.1").count(), 0);
    }

    #[test]
    fn a_session_that_ends_leaves_every_topic_and_reports_the_ones_emptied() {
        let mut t = Topics::default();
        let (a, b) = (Rc::new(shared(1024)), Rc::new(shared(1024)));
        for i in 0..20 {
            t.subscribe(&format!("npc.{i}"), 7, &a);
        }
        t.subscribe("npc.3", 8, &b);
        assert_eq!(t.of_session(7).len(), 20);
        let emptied = t.remove_session(7);
        assert_eq!(emptied.len(), 19, "npc.3 still has a subscriber");
        assert!(t.of_session(7).is_empty());
        assert_eq!(t.subscribers("npc.3").count(), 1);
        assert_eq!(t.by_topic.len(), 1);
    }
}
