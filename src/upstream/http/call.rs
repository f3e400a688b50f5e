//! One call's lifecycle: a request on its way to the backend and back, shared by
//! whoever waits for it and the connection that carries it.
//!
//! Why apart: what a call is (its head and body, its deadline, its state from waiting
//! to answered), how an attempt fails ([`Failure`]) and whether it may be tried once
//! more, and what a started call carries instead of a task (its slot and its
//! callback: [`Detached`], [`Pending`]) are the same whichever connection the call
//! rides on. This file sits below the lane and the pool: it reaches the pool it
//! belongs to only through [`CallPool`], which the pool implements.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::task::Waker;
use std::time::Instant;

use bytes::Bytes;

use crate::proto::http1::Response;
use crate::upstream::{BackendError, Done};

/// How one attempt of a call failed.
#[derive(Debug)]
pub(super) enum Failure {
    /// The connection was dead before any byte of the response arrived:
    /// retried once if the connection was a reused one.
    Stale(BackendError),
    /// The backend never processed the request (it was not written, or it
    /// was queued behind a response that closed the connection): retried
    /// once.
    Unprocessed(BackendError),
    Fatal(BackendError),
}

impl Failure {
    /// Whether a first attempt that failed this way may be retried (once): never
    /// processed, or dead before any answer on a connection that had answered before
    /// (`reused`).
    pub(super) fn may_retry(&self, reused: bool) -> bool {
        match self {
            Failure::Stale(_) => reused,
            Failure::Unprocessed(_) => true,
            Failure::Fatal(_) => false,
        }
    }

    pub(super) fn error(&self) -> &BackendError {
        match self {
            Failure::Stale(e) | Failure::Unprocessed(e) | Failure::Fatal(e) => e,
        }
    }

    pub(super) fn into_error(self) -> BackendError {
        match self {
            Failure::Stale(e) | Failure::Unprocessed(e) | Failure::Fatal(e) => e,
        }
    }
}

/// One request on one connection, shared by the caller (awaiting it) and the
/// lane (writing it, then completing it). `done` is where a started call's result
/// goes, kept in the call's own allocation (taken when it runs); an awaited call has
/// none.
pub(super) struct Call {
    pub(super) head: Bytes,
    pub(super) body: Bytes,
    pub(super) head_request: bool,
    pub(super) deadline: Instant,
    pub(super) state: RefCell<CallState>,
    pub(super) done: Cell<Option<Done>>,
}

pub(super) enum CallState {
    /// A task awaits it ([`Pool::call`](super::Pool::call)).
    Waiting(Option<Waker>),
    /// Nobody awaits it: its result goes to a callback
    /// ([`Pool::start`](super::Pool::start)).
    Detached(Detached),
    Done(Result<Response, Failure>),
    Taken,
    /// The caller gave up (deadline); a response that still arrives is dropped.
    Abandoned,
}

impl Call {
    pub(super) fn len(&self) -> usize {
        self.head.len() + self.body.len()
    }

    /// Still awaited by its caller (not answered, failed, timed out or abandoned).
    pub(super) fn is_live(&self) -> bool {
        matches!(
            *self.state.borrow(),
            CallState::Waiting(_) | CallState::Detached(_)
        )
    }

    pub(super) fn complete(self: &Rc<Self>, result: Result<Response, Failure>) {
        let mut st = self.state.borrow_mut();
        match &mut *st {
            CallState::Waiting(waker) => {
                let waker = waker.take();
                *st = CallState::Done(result);
                drop(st);
                if let Some(w) = waker {
                    w.wake();
                }
            }
            CallState::Detached(_) => {
                let CallState::Detached(d) = std::mem::replace(&mut *st, CallState::Taken) else {
                    unreachable!("matched Detached above")
                };
                drop(st);
                d.finish(self, result);
            }
            _ => {}
        }
    }
}

/// What a started call's retry needs (its callback is the call's `done`).
pub(super) struct Detached {
    /// Placed on a connection that had answered before (a stale one may be retried).
    pub(super) reused: bool,
    pub(super) affinity: u64,
    /// Its call slot (released when the call ends); holds the pool too.
    pub(super) _slot: OwnedSlot,
}

impl Detached {
    /// Hands the result over, or retries once (in a task, like
    /// [`Pool::call`](super::Pool::call)'s retry) when the backend certainly or
    /// probably never processed it.
    fn finish(self, call: &Rc<Call>, result: Result<Response, Failure>) {
        let retry = matches!(&result, Err(f) if f.may_retry(self.reused));
        if retry {
            if let Err(f) = &result {
                tracing::debug!(error = %f.error(), "backend request not processed; retrying once");
            }
            let Detached {
                affinity,
                _slot: slot,
                ..
            } = self;
            // The retry takes a slot of its own: this one is given back first.
            let pool = slot.0.clone();
            drop(slot);
            pool.retry(call.clone(), affinity);
            return;
        }
        if let Some(done) = call.done.take() {
            done.run(result.map_err(Failure::into_error));
        }
    }
}

/// The pool, as a started call sees it: where its slot goes back, and where its retry
/// runs. The pool implements it, so that this file needs nothing of the pool's.
pub(super) trait CallPool {
    /// Gives a call slot back.
    fn release_slot(&self);
    /// Runs `call` once more, in a task, as [`Pool::call`](super::Pool::call) would
    /// (`affinity` as before); the result goes to the call's `done`.
    fn retry(self: Rc<Self>, call: Rc<Call>, affinity: u64);
}

/// A call slot owned by a started call (released on drop).
pub(super) struct OwnedSlot(pub(super) Rc<dyn CallPool>);

impl Drop for OwnedSlot {
    fn drop(&mut self) {
        self.0.release_slot();
    }
}

/// A started call not yet placed on a connection: it waits in the pool's queue for a
/// slot (every slot taken), with no task and no timer of its own. The pool's feeder
/// (`feed_loop`) places queued calls in order as slots free up; the sweeper answers
/// those whose deadline passes first ([`BackendError::Saturated`]).
pub(super) struct Pending {
    pub(super) call: CallParts,
    pub(super) on_done: Done,
}

/// What a started call sends, and until when.
pub(super) struct CallParts {
    pub(super) head: Bytes,
    pub(super) body: Bytes,
    pub(super) head_request: bool,
    pub(super) deadline: Instant,
    pub(super) affinity: u64,
}
