//! ringgate: a WebSocket edge gateway for game backends, thread-per-core on io_uring
//! (monoio), speaking Bannou's Connect v1 wire protocol.
//!
//! # Layout
//!
//! - [`proto`]: the sans-IO protocol core (upgrade, framing, Bannou headers, GUIDs,
//!   events, backend HTTP codec), the `ringgate-proto` crate re-exported. No runtime,
//!   sockets or clocks.
//! - [`auth`]: JWT verification with pinned algorithms (clock passed in).
//! - [`config`]: TOML config, embedded defaults, `RINGGATE_*` overrides, validation.
//! - [`registry`]: the immutable endpoint registry snapshot shared by all shards.
//! - [`server`]: binds the listeners, starts shard threads and the admin listener.
//! - [`shard`]: one thread + monoio runtime: accept loop, timer sweep, mailbox.
//! - [`mailbox`]: the cross-thread queue into a shard.
//! - [`conn`]: one client connection: handshake, read/decode, outbox flush, close.
//! - [`dispatch`]: a client request → backend call → response (channels, codes).
//! - [`backend`]: the per-shard HTTP/1.1 keep-alive pools.
//! - [`link`]: the per-shard backend link (one multiplexed WebSocket per service).
//! - [`outbox`]: per-connection write coalescing and the shard-local wakeup.
//! - [`sys`]: the few raw non-blocking socket calls.
//! - [`clock`]: the per-thread cached clock (one reading per batch of work).
//! - [`admin`]: `/healthz`, `/readyz`, `/metrics`.
//! - [`metrics`]: per-shard counters and Prometheus rendering.
//! - [`client`]: a Bannou Connect v1 client (tests and the bench harness use it).

pub mod admin;
pub mod auth;
pub mod backend;
pub mod client;
pub mod clock;
pub mod config;
pub mod conn;
pub mod dispatch;
pub mod gate;
pub mod link;
pub mod mailbox;
pub mod metrics;
pub mod outbox;
/// The sans-IO protocol core, the `ringgate-proto` crate (kept at its old path).
pub use ringgate_proto as proto;
pub mod registry;
pub mod server;
pub mod shard;
pub mod sys;

pub use config::Config;
pub use server::{Gateway, StartError};
