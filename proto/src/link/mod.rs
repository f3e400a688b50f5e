//! The backend link codec (docs/DESIGN.md §5, `docs/LINK.md`): the messages ringgate and a link
//! backend exchange over one multiplexed WebSocket per shard.
//!
//! Why a link next to HTTP: an HTTP/1.1 exchange per request makes the gateway build and
//! parse a head per request, and the backend parse one; on loopback that is most of the
//! cost of a forwarded request. Over the link a request is one binary WebSocket message
//! with a fixed 28-byte prefix, any number of them leave in one write, replies come back
//! in any order matched by a call id, and the same connection carries the backend's
//! actions (push to a session, close it). Any language with a WebSocket library can be
//! a link backend.
//!
//! Why hand-written: the messages are fixed big-endian layouts like Bannou's own
//! headers (`crate::bannou`); a serialisation crate would add a copy and a schema
//! language for six messages. Decoding borrows from (or slices) the input, so a
//! request's payload reaches the client's outbox without a copy.
//!
//! Sans-IO: no runtime, socket or clock; the WebSocket framing around each message is
//! `crate::ws`/`crate::frame`, the connection is the gateway's `upstream::link`.
//!
//! ```text
//! ringgate → backend ("events")
//!   OPEN    0x01 | session u64 | sid_len u16 | session id | acct_len u16 | account id
//!                | roles_len u16 | roles (comma-separated)
//!   REQUEST 0x02 | session u64 | call u64 | message_id u64 | flags u8 | path_len u16
//!                | path | payload                     (call 0 = an event: no reply)
//!   CLOSED  0x03 | session u64
//!   CLIENT_ANSWER 0x04 | call u64 | code u8 | payload    (the answer to CALL_CLIENT)
//! backend → ringgate ("actions")
//!   REPLY   0x81 | call u64 | status u16 | payload      (HTTP status semantics)
//!   SEND    0x82 | session u64 | flags u8 | payload     (flags: 0 or 0x01 binary)
//!   CLOSE   0x83 | session u64 | code u16 | reason (UTF-8, ≤ 123 bytes)
//! ```
//!
//! # Layout
//!
//! One file per concern; everything public is re-exported here, so each item's path
//! is `link::Item` whichever file holds it.
//!
//! - `mod.rs`: the subprotocol, the message kinds, the fixed sizes and [`LinkError`].
//! - `reader.rs`: the bounds-checked cursor every decoder reads with.
//! - `to_backend.rs`: the events, [`ToBackend`] (ringgate encodes, backends decode).
//! - `from_backend.rs`: the actions, [`FromBackend`] (backends encode, ringgate
//!   decodes and validates).
//! - `upgrade.rs`: opening a link: [`upgrade_request`], [`check_upgrade_response`],
//!   [`UpgradeError`].

mod from_backend;
mod reader;
mod to_backend;
mod upgrade;

pub use from_backend::FromBackend;
pub use to_backend::ToBackend;
pub use upgrade::{check_upgrade_response, upgrade_request, UpgradeError, MAX_UPGRADE_RESPONSE};

/// The WebSocket subprotocol ringgate offers and requires the backend to select.
pub const SUBPROTOCOL: &str = "ringgate-link.v1";

/// Message kinds (the first byte of every link message).
pub mod kind {
    /// A session made its first request to this backend over this link.
    pub const OPEN: u8 = 0x01;
    /// A client request (or event) for the backend.
    pub const REQUEST: u8 = 0x02;
    /// A session the backend was told about has ended.
    pub const CLOSED: u8 = 0x03;
    /// A client's answer to CALL_CLIENT (or ringgate's, when there was none).
    pub const CLIENT_ANSWER: u8 = 0x04;
    /// The answer to a request.
    pub const REPLY: u8 = 0x81;
    /// A push to one session.
    pub const SEND: u8 = 0x82;
    /// Close one session's connection.
    pub const CLOSE: u8 = 0x83;
}

/// Fixed bytes of a REQUEST before its path.
pub const REQUEST_PREFIX_LEN: usize = 1 + 8 + 8 + 8 + 1 + 2;
/// Fixed bytes of a REPLY before its payload.
pub const REPLY_PREFIX_LEN: usize = 1 + 8 + 2;
/// Longest close reason (a close frame's body is at most 125 bytes, 2 of them the code).
pub const MAX_CLOSE_REASON: usize = 123;

/// A link message that could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("empty link message")]
    Empty,
    #[error("unknown link message kind {0:#04x}")]
    UnknownKind(u8),
    #[error("link message kind {kind:#04x} truncated: {len} bytes")]
    Truncated { kind: u8, len: usize },
    #[error("link message kind {kind:#04x}: {field} is not valid UTF-8")]
    NotUtf8 { kind: u8, field: &'static str },
    #[error("link message kind {kind:#04x}: {field} of {len} bytes is too long")]
    TooLong {
        kind: u8,
        field: &'static str,
        len: usize,
    },
    #[error("SEND with flags {0:#04x}: only 0x01 (binary) may be set")]
    BadSendFlags(u8),
    #[error("CLOSE with code {0}, which may not be sent (use 1000 or 3000-4999)")]
    BadCloseCode(u16),
    #[error("REPLY for call 0 (0 marks events, which get no reply)")]
    ReplyToEvent,
}
