//! A shard's state and what reaches it: one thread, one monoio runtime, one
//! `SO_REUSEPORT` listener, and everything its connections touch.
//!
//! # Layout
//! - `ctx`: [`ShardCtx`], all of one shard's state (registry snapshot, services,
//!   sessions, read buffer, GUID cache, read gate, metrics).
//! - `gate`: read batching while the shard's thread is busy.
//! - `msg`: [`ShardMsg`], what other threads send a shard through its mailbox.
//!
//! The shard's tasks (accept, sweep, the mailbox loop, the drain) use this state and
//! live above it: `edge` and `server::shard_thread`.

mod ctx;
pub mod gate;
mod msg;

pub use ctx::{ClientTlsCell, ProcessShared, ShardCtx, READ_CHUNK};
pub use msg::ShardMsg;
