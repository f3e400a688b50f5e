//! The pool's call slots: a FIFO semaphore, local to the shard.
//!
//! Why apart: it knows nothing of connections or calls (a slot is a count, a waiter
//! a waker), and the pool's own code reads better without its poll and drop details.
//! The pool holds `max_conns_per_shard × pipeline_depth` slots; an awaited call waits
//! here for one ([`Acquire`]), and so does the feeder of started calls (once, for all
//! of them).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// FIFO connection-slot limiter (a local, `!Send` semaphore).
///
/// A released slot is handed directly to the oldest waiter, so late arrivals
/// cannot overtake the queue.
pub(super) struct Limiter {
    state: RefCell<LimiterState>,
}

struct LimiterState {
    max: usize,
    in_use: usize,
    queue: VecDeque<Rc<RefCell<Waiter>>>,
}

struct Waiter {
    waker: Option<Waker>,
    granted: bool,
}

impl Limiter {
    pub(super) fn new(max: usize) -> Self {
        Limiter {
            state: RefCell::new(LimiterState {
                max,
                in_use: 0,
                queue: VecDeque::new(),
            }),
        }
    }

    /// A slot now, if one is free and nobody is waiting.
    pub(super) fn try_acquire(&self) -> Option<Slot<'_>> {
        let mut st = self.state.borrow_mut();
        if st.queue.is_empty() && st.in_use < st.max {
            st.in_use += 1;
            return Some(Slot(self));
        }
        None
    }

    pub(super) fn acquire(&self) -> Acquire<'_> {
        Acquire {
            limiter: self,
            waiter: None,
            done: false,
        }
    }

    /// Gives a slot back: to the oldest waiter if there is one.
    pub(super) fn release(&self) {
        let waker = {
            let mut st = self.state.borrow_mut();
            match st.queue.pop_front() {
                Some(waiter) => {
                    let mut w = waiter.borrow_mut();
                    w.granted = true;
                    w.waker.take()
                }
                None => {
                    st.in_use -= 1;
                    None
                }
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Slots taken.
    pub(super) fn in_use(&self) -> usize {
        self.state.borrow().in_use
    }

    /// Callers waiting in line for a slot.
    pub(super) fn queued(&self) -> usize {
        self.state.borrow().queue.len()
    }
}

/// Waiting for a slot, in line (see [`Limiter::acquire`]); dropping it leaves the
/// line, or passes on a slot granted but not yet seen.
pub(super) struct Acquire<'a> {
    limiter: &'a Limiter,
    waiter: Option<Rc<RefCell<Waiter>>>,
    done: bool,
}

/// A slot taken (released on drop).
pub(super) struct Slot<'a>(&'a Limiter);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.release();
    }
}

impl<'a> Future for Acquire<'a> {
    type Output = Slot<'a>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Slot<'a>> {
        let this = &mut *self;
        match &this.waiter {
            None => {
                let mut st = this.limiter.state.borrow_mut();
                if st.queue.is_empty() && st.in_use < st.max {
                    st.in_use += 1;
                    this.done = true;
                    return Poll::Ready(Slot(this.limiter));
                }
                let waiter = Rc::new(RefCell::new(Waiter {
                    waker: Some(cx.waker().clone()),
                    granted: false,
                }));
                st.queue.push_back(waiter.clone());
                this.waiter = Some(waiter);
                Poll::Pending
            }
            Some(waiter) => {
                let mut w = waiter.borrow_mut();
                if w.granted {
                    drop(w);
                    this.done = true;
                    return Poll::Ready(Slot(this.limiter));
                }
                match &w.waker {
                    Some(old) if old.will_wake(cx.waker()) => {}
                    _ => w.waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        }
    }
}

impl Drop for Acquire<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let Some(waiter) = self.waiter.take() else {
            return;
        };
        if waiter.borrow().granted {
            // Granted but never observed (e.g. timed out at the same
            // moment): pass the slot on.
            self.limiter.release();
        } else {
            self.limiter
                .state
                .borrow_mut()
                .queue
                .retain(|w| !Rc::ptr_eq(w, &waiter));
        }
    }
}
