//! The hub: every shard's push inbox and the directory, shared by all threads.
//!
//! Why one object: whoever pushes — a backend link on any shard, the admin thread's
//! push API, a client's peer message — does the same two things: find the shards (and
//! table slots) concerned, then post each a [`PushMsg`]. Frames are encoded here,
//! once, before posting, so a shard only queues bytes.

use crate::proto::resume::{ResumeKey, ResumePlace};
use crate::session::ResumeStore;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use crate::proto::event::push_message_id;
use crate::rt::mailbox::Mailbox;
use crate::rt::task::unix_now;

use super::directory::{Directory, Loc};
use super::frame::{conflation_key, push_frame};
use super::msg::{Published, PushMsg};
use super::{MAX_KEY_BYTES, MAX_TOPIC_BYTES};

/// Whom a push names.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// Every connection of a session id.
    Session(&'a str),
    /// Every connection of every session of an account.
    Account(&'a str),
}

/// Push messages a shard may have waiting in its inbox before publishes to it are
/// refused ([`PublishError::Behind`]): a publisher faster than the shard gets told,
/// instead of the shard's memory growing without bound (about 300 bytes each: ~20 MB).
pub const MAX_INBOX_BACKLOG: usize = 65_536;

/// A publish that was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error("topic must be 1 to {MAX_TOPIC_BYTES} bytes (got {0})")]
    BadTopic(usize),
    #[error("key must be at most {MAX_KEY_BYTES} bytes (got {0})")]
    BadKey(usize),
    /// A shard with subscribers has `MAX_INBOX_BACKLOG` pushes waiting: nothing was
    /// sent anywhere; retry later (publishes arrive faster than they are delivered).
    #[error("shard {shard} is behind ({queued} pushes waiting): publish refused, retry later")]
    Behind { shard: u16, queued: usize },
}

/// The shards' push inboxes and the directory.
#[derive(Debug)]
pub struct Hub {
    pub directory: Directory,
    inboxes: Box<[Arc<Mailbox<PushMsg>>]>,
    /// Messages posted to each shard's inbox and not yet applied.
    queued: Box<[AtomicUsize]>,
    counter: AtomicU16,
    publishes: AtomicU64,
    refused: AtomicU64,
    /// Mints and finds reconnection tokens for every shard (one key per process).
    pub resume: Arc<dyn ResumeStore>,
}

impl Hub {
    pub fn new(shards: usize) -> Hub {
        Hub {
            resume: Arc::new(ResumeKey::new(crate::rt::sys::random_bytes())),
            directory: Directory::new(shards),
            inboxes: (0..shards).map(|_| Arc::default()).collect(),
            queued: (0..shards).map(|_| AtomicUsize::new(0)).collect(),
            counter: AtomicU16::new(0),
            publishes: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// Where the session a reconnection token names is kept, if the token is one of
    /// this gateway's.
    pub fn find_resumable(&self, token: &str) -> Option<ResumePlace> {
        self.resume.find(token)
    }

    pub fn shards(&self) -> usize {
        self.inboxes.len()
    }

    /// Shard `shard`'s push inbox (its `edge::inbox` task receives from it).
    pub fn inbox(&self, shard: usize) -> Arc<Mailbox<PushMsg>> {
        self.inboxes[shard].clone()
    }

    /// Posts `msg` to `shard` (ignored for a shard that does not exist).
    pub fn post(&self, shard: u16, msg: PushMsg) {
        if let Some(inbox) = self.inboxes.get(shard as usize) {
            self.queued[shard as usize].fetch_add(1, Relaxed);
            inbox.send(msg);
        }
    }

    /// Shard `shard` applied `n` messages of its inbox.
    pub fn applied(&self, shard: usize, n: usize) {
        self.queued[shard].fetch_sub(n, Relaxed);
    }

    /// Messages waiting in `shard`'s inbox.
    pub fn queued(&self, shard: u16) -> usize {
        self.queued
            .get(shard as usize)
            .map_or(0, |q| q.load(Relaxed))
    }

    /// Whether `shard` has so many pushes waiting that more should be refused.
    pub fn behind(&self, shard: u16) -> Option<PublishError> {
        let queued = self.queued(shard);
        (queued >= MAX_INBOX_BACKLOG).then_some(PublishError::Behind { shard, queued })
    }

    /// Where the connections `target` names are.
    pub fn locate(&self, target: Target<'_>) -> Vec<Loc> {
        match target {
            Target::Session(id) => self.directory.session(id),
            Target::Account(id) => self.directory.account(id),
        }
    }

    /// A fresh push message id (Bannou's `unix_ms << 16 | counter`), for pushes made
    /// off the shards.
    pub fn next_push_id(&self) -> u64 {
        let c = self.counter.fetch_add(1, Relaxed);
        push_message_id(unix_now().as_millis() as u64, c)
    }

    /// Publishes `payload` to every subscriber of `topic` on every shard: the push
    /// frame is encoded once here and shared; only shards with a subscriber are sent
    /// anything. With a `key`, a slow subscriber's unsent older message with the same
    /// key is replaced. Returns how many shards it was sent to.
    pub fn publish(
        &self,
        topic: &str,
        key: Option<&str>,
        binary: bool,
        payload: &[u8],
    ) -> Result<usize, PublishError> {
        if topic.is_empty() || topic.len() > MAX_TOPIC_BYTES {
            return Err(PublishError::BadTopic(topic.len()));
        }
        if let Some(k) = key {
            if k.len() > MAX_KEY_BYTES {
                return Err(PublishError::BadKey(k.len()));
            }
        }
        let shards = self.directory.topic_shards(topic);
        if let Some(e) = shards.iter().find_map(|&s| self.behind(s)) {
            self.refused.fetch_add(1, Relaxed);
            return Err(e);
        }
        self.publishes.fetch_add(1, Relaxed);
        if shards.is_empty() {
            return Ok(0);
        }
        let p = Arc::new(Published {
            topic: topic.into(),
            key: key
                .filter(|k| !k.is_empty())
                .map(|k| conflation_key(topic, k)),
            frame: push_frame(self.next_push_id(), binary, payload),
        });
        for &s in &shards {
            self.post(s, PushMsg::Publish(p.clone()));
        }
        Ok(shards.len())
    }

    /// Pushes `payload` to every session of every shard (the frame encoded once).
    /// Refused, sending nothing, while a shard is too far behind.
    pub fn broadcast(&self, binary: bool, payload: &[u8]) -> Result<usize, PublishError> {
        if let Some(e) = (0..self.shards() as u16).find_map(|s| self.behind(s)) {
            self.refused.fetch_add(1, Relaxed);
            return Err(e);
        }
        let frame = push_frame(self.next_push_id(), binary, payload);
        for s in 0..self.shards() {
            self.post(
                s as u16,
                PushMsg::Broadcast {
                    frame: frame.clone(),
                    except: None,
                },
            );
        }
        Ok(self.shards())
    }

    /// Publishes accepted since start (all sources).
    pub fn publishes(&self) -> u64 {
        self.publishes.load(Relaxed)
    }

    /// Publishes refused because a shard was behind.
    pub fn refused(&self) -> u64 {
        self.refused.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publish_is_posted_only_to_shards_with_subscribers_and_once_each() {
        let hub = Hub::new(3);
        let topic: Arc<str> = "t".into();
        hub.directory.set_topic_shard(&topic, 2, true);
        assert_eq!(hub.publish("t", Some("k"), false, b"{}"), Ok(1));
        assert_eq!(hub.publish("nobody", None, false, b"{}"), Ok(0));
        assert!(hub.inboxes[0].try_recv().is_none());
        assert!(hub.inboxes[1].try_recv().is_none());
        match hub.inboxes[2].try_recv() {
            Some(PushMsg::Publish(p)) => {
                assert_eq!(&*p.topic, "t");
                assert!(p.key.is_some());
            }
            other => panic!("{other:?}"),
        }
        assert!(hub.inboxes[2].try_recv().is_none());
    }

    #[test]
    fn a_publish_to_a_shard_too_far_behind_is_refused_and_accepted_again_once_it_caught_up() {
        let hub = Hub::new(2);
        let topic: Arc<str> = "t".into();
        hub.directory.set_topic_shard(&topic, 1, true);
        for _ in 0..MAX_INBOX_BACKLOG {
            hub.publish("t", None, false, b"{}").unwrap();
        }
        assert_eq!(
            hub.publish("t", None, false, b"{}"),
            Err(PublishError::Behind {
                shard: 1,
                queued: MAX_INBOX_BACKLOG
            })
        );
        assert_eq!(hub.refused(), 1);
        assert_eq!(hub.queued(0), 0, "shard 0 was never sent anything");
        hub.applied(1, 10);
        assert_eq!(hub.publish("t", None, false, b"{}"), Ok(1));
    }

    #[test]
    fn a_publish_with_a_bad_topic_or_key_is_refused_naming_why() {
        let hub = Hub::new(1);
        assert_eq!(
            hub.publish("", None, false, b""),
            Err(PublishError::BadTopic(0))
        );
        let long = "x".repeat(300);
        assert_eq!(
            hub.publish(&long, None, false, b""),
            Err(PublishError::BadTopic(300))
        );
        assert_eq!(
            hub.publish("t", Some(&long), false, b""),
            Err(PublishError::BadKey(300))
        );
    }
}
