//! The client edge: connections from their accept to their close, and each request's
//! route from its frame to a backend.
//!
//! # Layout
//! - `accept`: the shard's accept loop.
//! - `handshake`: the upgrade, authentication, the new session (its own short task).
//! - `conn`: one upgraded connection's task: read, decode, flush, close.
//! - `dispatch`: one request: header checks, GUID → endpoint, codes, ordered
//!   channels, the backend call.
//! - `manifest`: the capability manifest push.
//! - `sweep`: the shard's once-a-second pass over its sessions.

pub mod accept;
mod conn;
mod dispatch;
pub mod handshake;
pub mod manifest;
pub mod sweep;
