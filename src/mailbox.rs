//! Per-shard mailboxes: the one way anything reaches a shard from another thread.
//!
//! Why: a connection lives and dies on the shard that accepted it, and shards share no
//! locks on the message path (DESIGN §1). Control (shutdown, a new registry snapshot)
//! and, later, cross-shard traffic (a push to a session on another shard, a topic
//! publish, a peer message) are queued on the target shard's lock-free queue and the
//! shard is woken; it applies them between events. monoio's `sync` feature makes the
//! waker safe to call from any thread.

use std::future::poll_fn;
use std::sync::Arc;
use std::task::Poll;

use atomic_waker::AtomicWaker;
use crossbeam_queue::SegQueue;

use crate::registry::Registry;

/// What can be sent to a shard.
#[derive(Debug)]
pub enum ShardMsg {
    /// Stop accepting, close every connection with 1001, exit when done or after the
    /// grace period.
    Shutdown,
    /// A new endpoint registry snapshot to use from now on.
    Registry(Arc<Registry>),
}

/// A multi-producer, single-consumer queue with an async receive side.
#[derive(Debug, Default)]
pub struct Mailbox {
    queue: SegQueue<ShardMsg>,
    waker: AtomicWaker,
}

impl Mailbox {
    /// Queues `msg` and wakes the shard (any thread).
    pub fn send(&self, msg: ShardMsg) {
        self.queue.push(msg);
        self.waker.wake();
    }

    /// The next message (shard thread only).
    pub async fn recv(&self) -> ShardMsg {
        poll_fn(|cx| {
            if let Some(m) = self.queue.pop() {
                return Poll::Ready(m);
            }
            self.waker.register(cx.waker());
            // A message pushed between the pop and the register would otherwise wait
            // for the next wake.
            match self.queue.pop() {
                Some(m) => Poll::Ready(m),
                None => Poll::Pending,
            }
        })
        .await
    }
}
