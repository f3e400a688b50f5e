//! The client edge: connections from their accept to their close, and each request's
//! route from its frame to a backend.
//!
//! # Layout
//! - `accept`: the shard's accept loop.
//! - `answer`: error answers to a request (and when an event gets none).
//! - `handshake`: the upgrade, authentication, the new session (its own short task).
//! - `conn`: one upgraded connection's task: read, decode, flush, close.
//! - `dispatch`: one request: header checks, GUID → endpoint, codes, ordered
//!   channels, the backend call.
//! - `manifest`: the capability manifest push.
//! - `sweep`: the shard's once-a-second pass over its sessions.
//! - `peer`: client-to-client messages (flag 0x20) and broadcasts.
//! - `topic`: topic endpoints (publish, subscribe, unsubscribe without a backend).
//! - `client_rpc`: a backend's request to a client and the client's answer back.
//! - `inbox`: the shard's push inbox (what the hub posts to this shard).
//! - `raw`: raw routes (plain WebSocket messages relayed to a link service).
//! - `resume`: a reconnection token's session back on a new connection (handed to the
//!   session's shard if another accepted it).

pub mod accept;
mod answer;
mod client_rpc;
mod conn;
mod dispatch;
pub mod handshake;
pub mod inbox;
pub mod manifest;
mod peer;
mod raw;
mod resume;
pub mod sweep;
mod topic;
