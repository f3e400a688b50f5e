//! One shard's half of the push plane: its session table, its topic subscriptions
//! and the hub, with the operations that keep the directory in step with them.
//!
//! Why one struct: every change here has two sides — the shard's own tables and the
//! gateway-wide directory — and keeping both in step in one place is what lets a push
//! from any thread find exactly the connections that are there. Shard-local (`Rc`,
//! `RefCell`): only the shard's thread calls it.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use crate::metrics::{bump, ShardMetrics};
use crate::session::{ConnShared, Queued, SessionRef, SessionTable};

use bytes::Bytes;

use crate::proto::bannou::ResponseCode;

use super::client_calls::{ClientCall, ClientCalls};
use super::directory::Loc;
use super::hub::Hub;
use super::msg::{Published, PushMsg};
use super::shortcuts::Shortcuts;
use super::topics::{Change, Topics};

/// One shard's sessions and subscriptions, and the hub.
#[derive(Debug)]
pub struct ShardPlane {
    pub shard: u16,
    pub hub: Arc<Hub>,
    pub sessions: SessionTable,
    pub topics: RefCell<Topics>,
    /// Backends' calls to this shard's clients awaiting answers.
    pub client_calls: RefCell<ClientCalls>,
    /// Shortcuts published for this shard's sessions.
    pub shortcuts: RefCell<Shortcuts>,
    metrics: Arc<ShardMetrics>,
}

impl ShardPlane {
    pub fn new(shard: usize, hub: Arc<Hub>, metrics: Arc<ShardMetrics>) -> ShardPlane {
        ShardPlane {
            shard: shard as u16,
            hub,
            sessions: SessionTable::default(),
            topics: RefCell::default(),
            client_calls: RefCell::default(),
            shortcuts: RefCell::default(),
            metrics,
        }
    }

    /// Adds a connection to the shard's table and the directory.
    pub fn add(&self, c: Rc<ConnShared>) -> SessionRef {
        let at = self.sessions.insert(c.clone());
        let s = &c.session;
        self.hub
            .directory
            .register(&s.session_id, s.account_id.as_deref(), self.loc(at));
        at
    }

    /// Removes a connection (it ended): from the table, the directory and every topic.
    /// Returns whether it was there.
    pub fn remove(&self, at: SessionRef, c: &ConnShared) -> bool {
        // Only the handle in the place now: a superseded one must not take its
        // successor's place with it.
        let here = self.sessions.get(at).is_some_and(|x| std::ptr::eq(&*x, c));
        if !here || !self.sessions.remove(at) {
            return false;
        }
        let s = &c.session;
        self.hub
            .directory
            .unregister(&s.session_id, s.account_id.as_deref(), self.loc(at));
        self.shortcuts.borrow_mut().remove_session(s.link_ref);
        self.answer_calls_gone(s.link_ref);
        let left = self.topics.borrow().of_session(s.link_ref).len();
        if left > 0 {
            let emptied = self.topics.borrow_mut().remove_session(s.link_ref);
            self.metrics.subscriptions.fetch_sub(left as i64, Relaxed);
            for t in emptied {
                self.hub.directory.set_topic_shard(&t, self.shard, false);
            }
        }
        true
    }

    /// The connection of `c` ended and its session is kept for its client: what
    /// backends asked of that client is answered 31 (the client is not there); its
    /// subscriptions, shortcuts and place stay, and pushes keep arriving in its outbox.
    pub fn park(&self, c: &ConnShared) {
        self.answer_calls_gone(c.session.link_ref);
    }

    /// A new connection of the session at `at` takes its place (a resume): the table
    /// and every topic now reach `new`; calls to the old connection's client are
    /// answered 31. Returns the handle replaced (`None` if the session has ended).
    pub fn replace(&self, at: SessionRef, new: &Rc<ConnShared>) -> Option<Rc<ConnShared>> {
        let old = self.sessions.replace(at, new.clone())?;
        let id = new.session.link_ref;
        self.topics.borrow_mut().rebind(id, new);
        self.answer_calls_gone(id);
        Some(old)
    }

    fn answer_calls_gone(&self, link_ref: u64) {
        let calls = self.client_calls.borrow_mut().take_session(link_ref);
        for call in calls {
            self.answer_call(call, ResponseCode::ClientNotFound.as_u8(), Bytes::new());
        }
    }

    /// Sends a client's answer (or the gateway's code for it) back to the backend that
    /// made the call.
    pub fn answer_call(&self, call: ClientCall, code: u8, payload: Bytes) {
        self.hub.post(
            call.origin,
            PushMsg::ClientAnswer {
                service: call.service,
                call: call.call,
                code,
                payload,
            },
        );
    }

    /// Where a connection of this shard is, for the directory and peer GUIDs.
    pub fn loc(&self, at: SessionRef) -> Loc {
        Loc {
            shard: self.shard,
            at,
        }
    }

    /// Subscribes `c` to `topic`; true if it was not subscribed yet.
    pub fn subscribe(&self, c: &Rc<ConnShared>, topic: &str) -> bool {
        if c.is_gone() {
            return false;
        }
        let change = self
            .topics
            .borrow_mut()
            .subscribe(topic, c.session.link_ref, c);
        self.after(change, true)
    }

    /// Unsubscribes `c` from `topic`; true if it was subscribed.
    pub fn unsubscribe(&self, c: &ConnShared, topic: &str) -> bool {
        let change = self
            .topics
            .borrow_mut()
            .unsubscribe(topic, c.session.link_ref);
        self.after(change, false)
    }

    fn after(&self, change: Change, on: bool) -> bool {
        let delta = if on { 1 } else { -1 };
        match change {
            Change::None => false,
            Change::Changed => {
                self.metrics.subscriptions.fetch_add(delta, Relaxed);
                true
            }
            Change::Edge(topic) => {
                self.metrics.subscriptions.fetch_add(delta, Relaxed);
                self.hub.directory.set_topic_shard(&topic, self.shard, on);
                true
            }
        }
    }

    /// Queues a topic message for every subscriber of its topic on this shard (keyed:
    /// replacing an unsent older one with the same key). Subscribers with nothing else
    /// queued are added to `flush`: the caller writes to them once it has queued all it
    /// has for now (`ConnShared::flush_now`), one write per subscriber however many
    /// messages, and no task woken. Returns how many got it.
    pub fn deliver(&self, p: &Published, flush: &mut Vec<Rc<ConnShared>>) -> usize {
        let topics = self.topics.borrow();
        let mut n = 0;
        for c in topics.subscribers(&p.topic) {
            match c.queue_pushed(p.frame.clone(), p.key.as_ref()) {
                Queued::No => {}
                Queued::Yes => n += 1,
                Queued::FlushLater => {
                    n += 1;
                    flush.push(c.clone());
                }
            }
        }
        bump(&self.metrics.topic_deliveries, n as u64);
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::frame::{conflation_key, push_frame};
    use crate::rt::heap_count;
    use crate::session::tests_support::{shared, shared_numbered};

    #[test]
    fn a_session_that_ends_leaves_the_directory_and_its_topics_shard_bits() {
        let hub = Arc::new(Hub::new(2));
        let plane = ShardPlane::new(1, hub.clone(), Default::default());
        let c = Rc::new(shared(1 << 20));
        let at = plane.add(c.clone());
        assert_eq!(c.at(), at);
        assert_eq!(hub.directory.session("s"), [plane.loc(at)]);
        assert!(plane.subscribe(&c, "npc.1"));
        assert!(!plane.subscribe(&c, "npc.1"), "once");
        assert_eq!(hub.directory.topic_shards("npc.1"), [1]);
        let p = Published {
            topic: "npc.1".into(),
            key: Some(conflation_key("npc.1", "1")),
            frame: push_frame(1, false, b"{}"),
        };
        let mut flush = Vec::new();
        assert_eq!(plane.deliver(&p, &mut flush), 1);
        assert_eq!(plane.deliver(&p, &mut flush), 1, "replaced the unsent one");
        assert!(
            flush.is_empty(),
            "a handle with no socket is its task's to write"
        );
        assert_eq!(c.outbox.borrow().len(), p.frame.len(), "one frame queued");
        assert!(plane.remove(at, &c));
        assert!(hub.directory.session("s").is_empty());
        assert!(hub.directory.topic_shards("npc.1").is_empty());
        assert_eq!(plane.metrics.subscriptions.load(Relaxed), 0);
    }

    #[test]
    fn twenty_subscriptions_add_less_than_two_kib_to_a_session() {
        // 1,000 observers each watching 20 of 1,000 NPC topics (as in the NPC world).
        let hub = Arc::new(Hub::new(1));
        let plane = ShardPlane::new(0, hub, Default::default());
        let conns: Vec<Rc<ConnShared>> = (0..1000)
            .map(|i| Rc::new(shared_numbered(1 << 20, i + 1)))
            .collect();
        let names: Vec<String> = (0..1000).map(|i| format!("npc.{i}")).collect();
        let before = heap_count::held();
        for (i, c) in conns.iter().enumerate() {
            for k in 0..20 {
                plane.subscribe(c, &names[(i * 37 + k * 101) % 1000]);
            }
        }
        let per_session = (heap_count::held() - before) as f64 / 1000.0;
        let per_subscription = per_session / 20.0;
        eprintln!(
            "{per_session:.0} B per session of 20 subscriptions ({per_subscription:.0} B each)"
        );
        assert!(per_session < 2048.0, "{per_session:.0} B per session");
        assert_eq!(plane.metrics.subscriptions.load(Relaxed), 20_000);
    }
}
