//! TLS: `wss://` for clients, `https://` backends and `wss://` links, over the same raw
//! non-blocking descriptors everything else uses.
//!
//! Why not `monoio-rustls`: its streams own a read and a write buffer of 32 KiB each
//! per connection and are driven by owned-buffer reads, while the gateway's
//! connections wait on readiness with no buffer (docs/DESIGN.md §1) and gather their
//! outbox into one `sendmsg` (`rt::sys`). So rustls' own connection state sits behind
//! the connection's descriptor here (`TlsSession`), fed from and drained to it
//! synchronously when the socket is ready; an idle TLS connection keeps only what
//! rustls keeps between records (its keys and a small receive buffer).
//!
//! # Layout
//! - `certs`: the server's certificate (PEM files; swapped in place on a reload),
//!   the client side's roots (the system's, or a CA file), typed errors naming the file.
//! - `session`: `TlsSession`, one connection's rustls state driven over a descriptor,
//!   `handshake`, the async loop that completes a handshake, and `connect`, the client
//!   side's session and handshake within a deadline (backends, links).
//! - `wire`: `Wire`, a descriptor with or without a TLS session: what the outbox
//!   flushes to and a connection reads from.

pub mod certs;
pub mod session;
pub mod wire;

pub use certs::{client_config, ServerTls, TlsError};
pub use session::{connect, handshake, TlsSession};
pub use wire::Wire;
