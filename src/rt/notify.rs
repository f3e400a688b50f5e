//! The shard-local wakeup: "something happened" for one task, from tasks of the same
//! thread.
//!
//! Why: a connection task sleeps until its outbox has work or a close is asked for, and
//! a shard's drain waits for its table to empty. A `Cell<bool>` and a waker is cheaper
//! than a channel and never crosses threads (cross-shard traffic uses the shard
//! mailbox, `rt::mailbox`).

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::task::{Poll, Waker};

/// A single-threaded "something happened" flag with a waker: cheaper than a channel,
/// and never crosses threads (cross-shard traffic uses the shard mailbox).
#[derive(Debug, Default)]
pub struct LocalNotify {
    flag: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl LocalNotify {
    /// Sets the flag and wakes the waiting task, if any.
    pub fn notify(&self) {
        self.flag.set(true);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// Takes the flag if set; else registers `waker` to be woken by the next `notify`.
    pub fn poll_take(&self, waker: &Waker) -> bool {
        if self.flag.replace(false) {
            return true;
        }
        let mut slot = self.waker.borrow_mut();
        match slot.as_ref() {
            Some(w) if w.will_wake(waker) => {}
            _ => *slot = Some(waker.clone()),
        }
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
