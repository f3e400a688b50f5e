//! The sans-IO protocol core: everything that is protocol, with no runtime, no socket
//! and no clock (callers pass `now`). Unit-tested and fuzzed without sockets.
//!
//! - [`handshake`]: the HTTP/1.1 WebSocket upgrade (RFC 6455 §4) and credential lookup.
//! - [`frame`], [`ws`]: RFC 6455 framing, in place and zero-copy.
//! - [`bannou`]: the Bannou Connect v1 binary headers and response codes.
//! - [`guid`]: salted per-session endpoint GUIDs.
//! - [`event`]: server push events (capability manifest, disconnect notice).
//! - [`ratelimit`]: the per-connection token bucket.
//! - [`http1`]: the backend HTTP/1.1 client codec.
//! - [`link`]: the backend link messages (one multiplexed WebSocket per shard).

pub mod bannou;
pub mod event;
pub mod frame;
pub mod guid;
pub mod handshake;
pub mod http1;
pub mod link;
pub mod ratelimit;
pub mod ws;
