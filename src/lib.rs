//! ringgate: a WebSocket edge gateway for game backends, thread-per-core on io_uring
//! (monoio), speaking Bannou's Connect v1 wire protocol.
//!
//! # Layout
//!
//! The modules are layers: each imports only from the ones listed before it (a test,
//! `tests/layers.rs`, fails on an import from a layer above). The sans-IO protocol core
//! is a crate of its own, `ringgate-proto` (re-exported as [`proto`]), whose
//! dependencies hold no runtime.
//!
//! 1. `rt`: runtime plumbing (clock, raw socket calls, isolated tasks, mailbox, wakeup).
//!    `tls`: rustls driven over those raw descriptors (certificates, roots, `Wire`).
//! 2. [`client`]: a Bannou Connect v1 client (the tests and the bench harness use it).
//! 3. [`auth`]: JWT verification with pinned algorithms (clock passed in).
//! 4. `metrics`: per-shard counters, Prometheus text.
//! 5. [`config`]: TOML config, embedded defaults, `RINGGATE_*` overrides, validation.
//! 6. `admission`: the connection caps and upgrade rate all shards share.
//! 7. [`registry`]: the immutable endpoint registry snapshot shared by all shards.
//! 8. `session`: a session, its handle, its outbox, the shard's session table.
//! 9. `push`: the push plane's directory, hub, push inboxes' messages, topics.
//! 10. `upstream`: backends (the call contract, the HTTP pool, the backend link).
//! 11. `shard`: one shard's state (`ShardCtx`), its read gate, its mailbox messages.
//! 12. `edge`: accept, handshake, the connection task, request dispatch, the sweep,
//!     the push inbox.
//! 13. `admin`: `/healthz`, `/readyz`, `/metrics`, the push API.
//! 14. [`server`]: listeners, shard threads, signals; the top.
//!
//! Public: what the binary, the bench harness and the tests need — [`Gateway`],
//! [`Config`], [`client`], [`proto`], [`auth`], [`config`], [`registry`], [`server`]
//! (start and signals), [`io`] (the outbox and socket calls the harness's servers reuse)
//! and [`Metrics`].

pub use ringgate_proto as proto;

mod admin;
mod admission;
pub mod auth;
pub mod client;
pub mod config;
mod edge;
mod metrics;
mod push;
pub mod registry;
mod rt;
pub mod server;
mod session;
mod shard;
mod tls;
mod upstream;

/// The write coalescing and raw socket calls the bench harness's servers reuse.
pub mod io {
    pub use crate::rt::sys::{recv_into, shutdown_write, Nb};
    pub use crate::session::{Flush, Outbox};
}

pub use config::Config;
pub use metrics::Metrics;
pub use server::{Gateway, StartError};
