//! What other threads send a shard, through its mailbox (`rt::mailbox`).
//!
//! Why an enum of its own: every cross-thread request a shard obeys is listed here
//! (today control: shutdown and registry snapshots; with the push plane, pushes to a
//! session on this shard, topic publishes and peer messages), and the shard applies
//! them between events, never under a lock.

use std::sync::Arc;

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
