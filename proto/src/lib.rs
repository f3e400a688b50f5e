//! ringgate-proto: ringgate's sans-IO protocol core. Everything that is protocol
//! lives here, with no runtime, no socket and no clock (callers pass `now`); it is
//! unit-tested and fuzzed without sockets.
//!
//! Why a crate of its own and not a module of `ringgate`: so that Cargo keeps it
//! sans-IO. Its dependencies are codecs, hashes and ciphers only (no monoio, no
//! io-uring, no libc or socket crates), so code here cannot reach for a runtime or a
//! syscall without a change to its `Cargo.toml` that says so. It also lets the fuzz
//! targets build the decoders without the gateway's runtime. The gateway re-exports
//! it as `ringgate::proto`, so `ringgate::proto::ws::Decoder` and the like name the
//! same items as `ringgate_proto::ws::Decoder`.
//!
//! # Layout
//!
//! - [`handshake`]: the HTTP/1.1 WebSocket upgrade (RFC 6455 §4) and credential lookup.
//! - [`frame`], [`ws`]: RFC 6455 framing, in place and zero-copy.
//! - [`bannou`]: the Bannou Connect v1 binary headers and response codes.
//! - [`guid`]: salted per-session endpoint GUIDs.
//! - [`event`]: server push events (capability manifest, disconnect notice).
//! - [`ratelimit`]: the per-connection token bucket.
//! - [`resume`]: reconnection tokens (which session, which of its connections).
//! - [`http1`]: the backend HTTP/1.1 client codec (request head encoder, incremental
//!   response parser, body framing).
//! - [`link`]: the backend link messages (one multiplexed WebSocket per shard).
//! - [`push_api`]: the push API's request bodies, checked into typed requests.
//! - `fuzz_checks` (tests, feature `fuzzing`): what the fuzz targets assert, so `cargo
//!   test` replays the committed corpora too.

pub mod bannou;
pub mod event;
pub mod frame;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz_checks;
pub mod guid;
pub mod handshake;
pub mod http1;
pub mod link;
pub mod push_api;
pub mod ratelimit;
pub mod resume;
pub mod ws;

/// A byte's two lowercase hex digits, high first (one table lookup): GUID strings
/// (`guid::format_guid`) and the correlation id's request number (`http1`).
pub(crate) fn hex_pair(b: u8) -> [u8; 2] {
    const PAIRS: [[u8; 2]; 256] = {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut t = [[0u8; 2]; 256];
        let mut i = 0;
        while i < 256 {
            t[i] = [HEX[i >> 4], HEX[i & 0xf]];
            i += 1;
        }
        t
    };
    PAIRS[usize::from(b)]
}
