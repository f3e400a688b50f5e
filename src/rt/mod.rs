//! Runtime plumbing every layer above uses, with no knowledge of sessions, backends or
//! the protocol: the per-thread clock, raw non-blocking socket calls, isolated task
//! spawning, the cross-thread mailbox and the shard-local wakeup.
//!
//! # Layout
//! - `clock`: the per-thread cached clock (one reading per batch of work).
//! - `sys`: `recv`/`sendmsg`/`shutdown` on a raw descriptor, randomness, fd limits.
//! - `task`: `spawn_isolated` (a panic ends one task, not the shard), `unix_now`.
//! - `mailbox`: a lock-free multi-producer queue with an async receive side.
//! - `notify`: a single-threaded "something happened" flag with a waker.
//! - `heap_count` (test builds): a per-thread counting allocator, to measure costs.

pub mod clock;
#[cfg(test)]
pub mod heap_count;
pub mod mailbox;
pub mod notify;
pub mod sys;
pub mod task;
