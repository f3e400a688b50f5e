//! The backend link codec (docs/DESIGN.md §5, `docs/LINK.md`): the messages ringgate and a link
//! backend exchange over one multiplexed WebSocket per shard.
//!
//! Why a link next to HTTP: an HTTP/1.1 exchange per request makes the gateway build and
//! parse a head per request, and the backend parse one; on loopback that is most of the
//! cost of a forwarded request. Over the link a request is one binary WebSocket message
//! with a fixed 28-byte prefix, any number of them leave in one write, replies come back
//! in any order matched by a call id, and the same connection carries the backend's
//! actions (push to a session, close it; and the push plane: topics, roles, kicks,
//! shortcuts, requests to a client). Any language with a WebSocket library can be a
//! link backend.
//!
//! Why hand-written: the messages are fixed big-endian layouts like Bannou's own
//! headers (`crate::bannou`); a serialisation crate would add a copy and a schema
//! language for a few fixed layouts. Decoding borrows from (or slices) the input, so a
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
//!   AWAY    0x05 | session u64   (its client dropped; resumable, pushes are kept)
//!   RESUMED 0x06 | session u64   (its client is back, on a new connection)
//!   RAW_OPEN 0x07 | session u64 | path_len u16 | route path | sid_len u16 | session id
//!                 | acct_len u16 | account id | roles_len u16 | roles
//!                                (a client connected to a raw route of the service)
//!   MESSAGE 0x08 | session u64 | flags u8 | payload  (a raw route's client message;
//!                                flags 0x01 = binary, 0 = text)
//! backend → ringgate ("actions")
//!   REPLY   0x81 | call u64 | status u16 | payload      (HTTP status semantics)
//!   SEND    0x82 | session u64 | flags u8 | payload     (flags: 0 or 0x01 binary)
//!   CLOSE   0x83 | session u64 | code u16 | reason (UTF-8, ≤ 123 bytes)
//! push plane (actions; addr = 0x01 session u64 | 0x02 len u16 session id
//!                                | 0x03 len u16 account id)
//!   PUBLISH         0x84 | flags u8 | topic_len u16 | topic | key_len u16 | key | payload
//!   SUBSCRIBE       0x85 | addr | topic_len u16 | topic
//!   UNSUBSCRIBE     0x86 | addr | topic_len u16 | topic
//!   PUSH            0x87 | addr | flags u8 | payload
//!   ROLES           0x88 | addr | add_len u16 | add | remove_len u16 | remove
//!   KICK            0x89 | addr | code u16 | reason
//!   SHORTCUT        0x8a | addr | name_len u16 | name | target_len u16 | target
//!                        | expires_unix_ms u64 | payload
//!   SHORTCUT_REVOKE 0x8b | addr | name_len u16 | name
//!   CALL_CLIENT     0x8c | addr | call u64 | timeout_ms u32 | flags u8 | payload
//!   BROADCAST       0x8d | flags u8 | payload                (to every session)
//! ```
//!
//! CLIENT_ANSWER and the push plane are additions to `ringgate-link.v1`: a backend that
//! never sends a push-plane action never receives CLIENT_ANSWER and sees nothing new.
//! AWAY and RESUMED go only to services with `announce_all` (which asked to follow
//! every session); the others see a session stay open while its client is away and
//! CLOSED when its reconnection window ends. RAW_OPEN and MESSAGE go only to services
//! with raw routes. On a raw route's connection, SEND sends the payload as a plain
//! WebSocket message (text unless flags 0x01) and CLOSE closes it.
//!
//! # Layout
//!
//! One file per concern; everything public is re-exported here, so each item's path
//! is `link::Item` whichever file holds it.
//!
//! - `mod.rs`: the subprotocol, the message kinds, the fixed sizes and [`LinkError`].
//! - `reader.rs`: the bounds-checked cursor every decoder reads with.
//! - `addr.rs`: [`Addr`], who a push-plane action is for.
//! - `to_backend.rs`: the events, [`ToBackend`] (ringgate encodes, backends decode).
//! - `from_backend.rs`: the actions, [`FromBackend`] (backends encode, ringgate
//!   decodes and validates).
//! - `upgrade.rs`: opening a link: [`upgrade_request`], [`check_upgrade_response`],
//!   [`UpgradeError`].

mod addr;
mod from_backend;
mod reader;
mod to_backend;
mod upgrade;

pub use addr::Addr;
pub use from_backend::{FromBackend, ReplyMsg};
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
    /// A session's client dropped; the session is kept for its reconnection window.
    pub const AWAY: u8 = 0x05;
    /// A session's client resumed it on a new connection.
    pub const RESUMED: u8 = 0x06;
    /// A client connected to one of the service's raw routes.
    pub const RAW_OPEN: u8 = 0x07;
    /// A message from a raw route's client.
    pub const MESSAGE: u8 = 0x08;
    /// The answer to a request.
    pub const REPLY: u8 = 0x81;
    /// A push to one session.
    pub const SEND: u8 = 0x82;
    /// Close one session's connection.
    pub const CLOSE: u8 = 0x83;
    /// A message to every subscriber of a topic, on every shard.
    pub const PUBLISH: u8 = 0x84;
    /// Subscribe sessions to a topic.
    pub const SUBSCRIBE: u8 = 0x85;
    /// Unsubscribe sessions from a topic.
    pub const UNSUBSCRIBE: u8 = 0x86;
    /// A push to the sessions an address names.
    pub const PUSH: u8 = 0x87;
    /// Grant and revoke roles.
    pub const ROLES: u8 = 0x88;
    /// Close sessions' connections, without resume.
    pub const KICK: u8 = 0x89;
    /// Add a manifest entry that sends a bound payload to an endpoint.
    pub const SHORTCUT: u8 = 0x8a;
    /// Remove a shortcut.
    pub const SHORTCUT_REVOKE: u8 = 0x8b;
    /// Send one client a request; its answer comes back as CLIENT_ANSWER.
    pub const CALL_CLIENT: u8 = 0x8c;
    /// Push to every session of every shard.
    pub const BROADCAST: u8 = 0x8d;
}

/// Fixed bytes of a REQUEST before its path.
pub const REQUEST_PREFIX_LEN: usize = 1 + 8 + 8 + 8 + 1 + 2;
/// Fixed bytes of a REPLY before its payload.
pub const REPLY_PREFIX_LEN: usize = 1 + 8 + 2;
/// Longest close reason (a close frame's body is at most 125 bytes, 2 of them the code).
pub const MAX_CLOSE_REASON: usize = 123;
/// Longest topic (PUBLISH, SUBSCRIBE, UNSUBSCRIBE); the shortest is 1 byte.
pub const MAX_TOPIC: usize = 255;
/// Longest PUBLISH conflation key.
pub const MAX_KEY: usize = 255;
/// Longest shortcut name (SHORTCUT, SHORTCUT_REVOKE); the shortest is 1 byte.
pub const MAX_SHORTCUT_NAME: usize = 255;

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
    #[error("link message kind {kind:#04x}: {field} is empty")]
    EmptyField { kind: u8, field: &'static str },
    #[error("unknown address kind {0:#04x} (0x01 link session, 0x02 session id, 0x03 account id)")]
    BadAddr(u8),
    #[error(
        "link message kind {kind:#04x} with flags {flags:#04x}: only 0x01 (binary) may be set"
    )]
    BadFlags { kind: u8, flags: u8 },
    #[error("link message kind {kind:#04x}: topic of {len} bytes (must be 1 to 255)")]
    BadTopic { kind: u8, len: usize },
    #[error("KICK with code {0}, which may not be sent (use 1000 or 3000-4999)")]
    BadKickCode(u16),
    #[error("SHORTCUT target is not a path (it must start with '/')")]
    BadShortcutTarget,
    #[error("CALL_CLIENT with call 0 (the answer needs a call id)")]
    CallClientZero,
    #[error("CALL_CLIENT addressed to an account (a call has one answer: address one session)")]
    CallClientAccount,
}
