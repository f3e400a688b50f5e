//! The shard-local wakeup: "something happened" for one task, from tasks of the same
//! thread.
//!
//! Why: a connection task sleeps until its outbox has work or a close is asked for, and
//! a shard's drain waits for its table to empty. A `Cell<bool>` and a waker is cheaper
//! than a channel and never crosses threads (cross-shard traffic uses the shard
//! mailbox, `rt::mailbox`).

use std::cell::Cell;
use std::future::poll_fn;
use std::task::{Poll, Waker};

/// A single-threaded "something happened" flag with a waker: cheaper than a channel,
/// and never crosses threads (cross-shard traffic uses the shard mailbox).
#[derive(Default)]
pub struct LocalNotify {
    flag: Cell<bool>,
    /// (A `Cell`, taken and put back: eight bytes less than a `RefCell` in every
    /// connection's handle.)
    waker: Cell<Option<Waker>>,
}

impl std::fmt::Debug for LocalNotify {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalNotify")
            .field("flag", &self.flag.get())
            .finish_non_exhaustive()
    }
}

impl LocalNotify {
    /// Sets the flag and wakes the waiting task, if any.
    pub fn notify(&self) {
        self.flag.set(true);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Takes the flag if set; else registers `waker` to be woken by the next `notify`.
    pub fn poll_take(&self, waker: &Waker) -> bool {
        if self.flag.replace(false) {
            return true;
        }
        let kept = match self.waker.take() {
            Some(w) if w.will_wake(waker) => w,
            _ => waker.clone(),
        };
        self.waker.set(Some(kept));
        false
    }

    /// Waits for the next `notify` (or returns at once if one is pending).
    pub async fn notified(&self) {
        poll_fn(|cx| {
            if self.poll_take(cx.waker()) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_before_wait_is_not_lost() {
        let n = LocalNotify::default();
        n.notify();
        let w = futures_waker();
        assert!(n.poll_take(&w));
        assert!(!n.poll_take(&w));
    }

    fn futures_waker() -> Waker {
        use std::sync::Arc;
        use std::task::Wake;
        struct Nop;
        impl Wake for Nop {
            fn wake(self: Arc<Self>) {}
        }
        Waker::from(Arc::new(Nop))
    }
}
