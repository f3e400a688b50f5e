//! The limit probe: raw TCP ping-pong over io_uring with messages of the same size as
//! the WebSocket ones, measured the same way. `probe-server` echoes length-prefixed
//! messages; `probe` loads it (open loop at a fixed rate, or saturation with a window of
//! messages in flight) and writes a report.
//!
//! Why it exists: a ratio is only meaningful against what the machine can do at all.
//! The probe does the least any server can do per message (one length prefix parsed,
//! bytes written back verbatim from the buffer they were read into, with monoio's
//! owned-buffer `read`/`write` straight on io_uring), on the same cores, with the same
//! message sizes and the same latency accounting as `rpc`. ringgate's throughput over the
//! probe's is the share of the machine's limit the gateway reaches.
//!
//! The files: `wire` (the message format, raw and `--ws`, and how every probe loop
//! reads), `server` (`probe-server`, with its WebSocket mode), `client` (`probe`); the
//! server and the client import `wire`, not each other.

mod client;
mod server;
mod wire;

pub use client::run_client;
pub use server::run_server;
