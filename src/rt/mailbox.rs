//! Per-shard mailboxes: the one way anything reaches a shard from another thread
//! (what a shard is sent is `shard::ShardMsg`).
//!
//! Why: a connection lives and dies on the shard that accepted it, and shards share no
//! locks on the message path (docs/DESIGN.md §1). Control (shutdown, a new registry snapshot)
//! and, later, cross-shard traffic (a push to a session on another shard, a topic
//! publish, a peer message) are queued on the target shard's lock-free queue and the
//! shard is woken; it applies them between events. monoio's `sync` feature makes the
//! waker safe to call from any thread.

use std::future::poll_fn;
use std::task::Poll;

use atomic_waker::AtomicWaker;
use crossbeam_queue::SegQueue;

/// A multi-producer, single-consumer queue with an async receive side.
#[derive(Debug)]
pub struct Mailbox<T> {
    queue: SegQueue<T>,
    waker: AtomicWaker,
}

impl<T> Default for Mailbox<T> {
    fn default() -> Self {
        Mailbox {
            queue: SegQueue::new(),
            waker: AtomicWaker::new(),
        }
    }
}

impl<T> Mailbox<T> {
    /// Queues `msg` and wakes the shard (any thread).
    pub fn send(&self, msg: T) {
        self.queue.push(msg);
        self.waker.wake();
    }

    /// The next message if one is queued, without waiting.
    pub fn try_recv(&self) -> Option<T> {
        self.queue.pop()
    }

    /// The next message (shard thread only).
    pub async fn recv(&self) -> T {
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
