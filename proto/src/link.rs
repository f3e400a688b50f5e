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
//! headers (`super::bannou`); a serialisation crate would add a copy and a schema
//! language for six messages. Decoding borrows from (or slices) the input, so a
//! request's payload reaches the client's outbox without a copy.
//!
//! Sans-IO: no runtime, socket or clock; the WebSocket framing around each message is
//! `super::ws`/`super::frame`, the connection is the gateway's `ringgate::link`.
//!
//! ```text
//! ringgate → backend ("events")
//!   OPEN    0x01 | session u64 | sid_len u16 | session id | acct_len u16 | account id
//!                | roles_len u16 | roles (comma-separated)
//!   REQUEST 0x02 | session u64 | call u64 | message_id u64 | flags u8 | path_len u16
//!                | path | payload                     (call 0 = an event: no reply)
//!   CLOSED  0x03 | session u64
//! backend → ringgate ("actions")
//!   REPLY   0x81 | call u64 | status u16 | payload      (HTTP status semantics)
//!   SEND    0x82 | session u64 | flags u8 | payload     (flags: 0 or 0x01 binary)
//!   CLOSE   0x83 | session u64 | code u16 | reason (UTF-8, ≤ 123 bytes)
//! ```

use bytes::{BufMut, Bytes};

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

/// A message from ringgate to the backend, borrowed from the buffer it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToBackend<'a> {
    Open {
        session: u64,
        session_id: &'a str,
        /// Empty when the token carried no account.
        account_id: &'a str,
        /// Comma-separated, as in Bannou's `X-Roles` header.
        roles: &'a str,
    },
    Request {
        session: u64,
        /// 0 for an event (the client expects no answer; do not reply). Opaque to the
        /// backend: echo it in the REPLY.
        call: u64,
        /// The client's message id (for the backend's logs and correlation).
        message_id: u64,
        /// The client's Bannou flags (0x01 binary payload, 0x10 event, 0x80 meta).
        flags: u8,
        /// The endpoint path; a meta request's path ends in `/meta/<kind>`.
        path: &'a str,
        payload: &'a [u8],
    },
    Closed {
        session: u64,
    },
}

/// A message from the backend to ringgate; payloads are slices of the decoded buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromBackend {
    Reply {
        call: u64,
        /// HTTP status semantics: 2xx → code 0, 400 → 50, 401/403 → 52, 404 → 51,
        /// 409 → 53, else → 60 (docs/DESIGN.md §2). Only a 2xx reply's payload reaches the client.
        status: u16,
        payload: Bytes,
    },
    Send {
        session: u64,
        /// 0 (JSON payload) or 0x01 (binary payload); becomes the push's flags with 0x10.
        flags: u8,
        payload: Bytes,
    },
    Close {
        session: u64,
        code: u16,
        reason: Bytes,
    },
}

fn check_len(kind: u8, field: &'static str, s: &[u8]) -> Result<u16, LinkError> {
    u16::try_from(s.len()).map_err(|_| LinkError::TooLong {
        kind,
        field,
        len: s.len(),
    })
}

impl ToBackend<'_> {
    /// Bytes [`ToBackend::encode`] appends.
    pub fn encoded_len(&self) -> usize {
        match self {
            ToBackend::Open {
                session_id,
                account_id,
                roles,
                ..
            } => 1 + 8 + 6 + session_id.len() + account_id.len() + roles.len(),
            ToBackend::Request { path, payload, .. } => {
                REQUEST_PREFIX_LEN + path.len() + payload.len()
            }
            ToBackend::Closed { .. } => 1 + 8,
        }
    }

    /// Checks the variable-length fields fit their u16 length prefixes; `encode` may
    /// then not fail.
    pub fn check(&self) -> Result<(), LinkError> {
        match self {
            ToBackend::Open {
                session_id,
                account_id,
                roles,
                ..
            } => {
                check_len(kind::OPEN, "session id", session_id.as_bytes())?;
                check_len(kind::OPEN, "account id", account_id.as_bytes())?;
                check_len(kind::OPEN, "roles", roles.as_bytes())?;
            }
            ToBackend::Request { path, .. } => {
                check_len(kind::REQUEST, "path", path.as_bytes())?;
            }
            ToBackend::Closed { .. } => {}
        }
        Ok(())
    }

    /// Appends the message to `out` (`encoded_len()` bytes). Fails, appending nothing,
    /// if a field is too long for its length prefix.
    pub fn encode<B: BufMut>(&self, out: &mut B) -> Result<(), LinkError> {
        self.check()?;
        match *self {
            ToBackend::Open {
                session,
                session_id,
                account_id,
                roles,
            } => {
                out.put_u8(kind::OPEN);
                out.put_u64(session);
                for s in [session_id, account_id, roles] {
                    out.put_u16(s.len() as u16);
                    out.put_slice(s.as_bytes());
                }
            }
            ToBackend::Request {
                session,
                call,
                message_id,
                flags,
                path,
                payload,
            } => {
                out.put_u8(kind::REQUEST);
                out.put_u64(session);
                out.put_u64(call);
                out.put_u64(message_id);
                out.put_u8(flags);
                out.put_u16(path.len() as u16);
                out.put_slice(path.as_bytes());
                out.put_slice(payload);
            }
            ToBackend::Closed { session } => {
                out.put_u8(kind::CLOSED);
                out.put_u64(session);
            }
        }
        Ok(())
    }
}

impl<'a> ToBackend<'a> {
    /// Decodes one message (what a link backend does with each binary message).
    pub fn decode(msg: &'a [u8]) -> Result<ToBackend<'a>, LinkError> {
        let (&k, _) = msg.split_first().ok_or(LinkError::Empty)?;
        let mut r = Reader {
            msg,
            at: 1,
            kind: k,
        };
        let m = match k {
            kind::OPEN => ToBackend::Open {
                session: r.u64()?,
                session_id: r.str16("session id")?,
                account_id: r.str16("account id")?,
                roles: r.str16("roles")?,
            },
            kind::REQUEST => ToBackend::Request {
                session: r.u64()?,
                call: r.u64()?,
                message_id: r.u64()?,
                flags: r.u8()?,
                path: r.str16("path")?,
                payload: r.rest(),
            },
            kind::CLOSED => ToBackend::Closed { session: r.u64()? },
            other => return Err(LinkError::UnknownKind(other)),
        };
        r.end()?;
        Ok(m)
    }
}

impl FromBackend {
    /// Decodes one action; payloads and the reason are slices of `msg`.
    pub fn decode(msg: &Bytes) -> Result<FromBackend, LinkError> {
        let (&k, _) = msg.split_first().ok_or(LinkError::Empty)?;
        let mut r = Reader {
            msg,
            at: 1,
            kind: k,
        };
        let m = match k {
            kind::REPLY => {
                let call = r.u64()?;
                if call == 0 {
                    return Err(LinkError::ReplyToEvent);
                }
                let status = r.u16()?;
                FromBackend::Reply {
                    call,
                    status,
                    payload: msg.slice(r.at..),
                }
            }
            kind::SEND => {
                let session = r.u64()?;
                let flags = r.u8()?;
                if flags & !crate::bannou::flags::BINARY != 0 {
                    return Err(LinkError::BadSendFlags(flags));
                }
                FromBackend::Send {
                    session,
                    flags,
                    payload: msg.slice(r.at..),
                }
            }
            kind::CLOSE => {
                let session = r.u64()?;
                let code = r.u16()?;
                if !(code == 1000 || (3000..=4999).contains(&code)) {
                    return Err(LinkError::BadCloseCode(code));
                }
                let start = r.at;
                let reason = r.rest();
                if reason.len() > MAX_CLOSE_REASON {
                    return Err(LinkError::TooLong {
                        kind: k,
                        field: "reason",
                        len: reason.len(),
                    });
                }
                if simdutf8::basic::from_utf8(reason).is_err() {
                    return Err(LinkError::NotUtf8 {
                        kind: k,
                        field: "reason",
                    });
                }
                FromBackend::Close {
                    session,
                    code,
                    reason: msg.slice(start..),
                }
            }
            other => return Err(LinkError::UnknownKind(other)),
        };
        Ok(m)
    }

    /// Bytes [`FromBackend::encode`] appends.
    pub fn encoded_len(&self) -> usize {
        match self {
            FromBackend::Reply { payload, .. } => REPLY_PREFIX_LEN + payload.len(),
            FromBackend::Send { payload, .. } => 1 + 8 + 1 + payload.len(),
            FromBackend::Close { reason, .. } => 1 + 8 + 2 + reason.len(),
        }
    }

    /// Appends the action to `out` (what a link backend sends). Not validated: a
    /// backend may send anything, and ringgate's decoder is what checks.
    pub fn encode<B: BufMut>(&self, out: &mut B) {
        match self {
            FromBackend::Reply {
                call,
                status,
                payload,
            } => {
                out.put_u8(kind::REPLY);
                out.put_u64(*call);
                out.put_u16(*status);
                out.put_slice(payload);
            }
            FromBackend::Send {
                session,
                flags,
                payload,
            } => {
                out.put_u8(kind::SEND);
                out.put_u64(*session);
                out.put_u8(*flags);
                out.put_slice(payload);
            }
            FromBackend::Close {
                session,
                code,
                reason,
            } => {
                out.put_u8(kind::CLOSE);
                out.put_u64(*session);
                out.put_u16(*code);
                out.put_slice(reason);
            }
        }
    }
}

/// The upgrade request ringgate sends to open a link (`key`: the base64
/// `Sec-WebSocket-Key`; `host`: the URL's `host:port`).
pub fn upgrade_request(host: &str, path: &str, key: &str, shard: usize) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: {SUBPROTOCOL}\r\nX-Ringgate-Shard: {shard}\r\n\r\n"
    )
}

/// Why a backend's answer to the link upgrade was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpgradeError {
    #[error("malformed upgrade response: {0}")]
    Malformed(String),
    #[error("upgrade response head larger than {0} bytes")]
    TooLarge(usize),
    #[error("backend answered HTTP {0} instead of 101 Switching Protocols")]
    Status(u16),
    #[error("missing or wrong Sec-WebSocket-Accept")]
    BadAccept,
    #[error("backend did not select subprotocol {SUBPROTOCOL} (got {0:?})")]
    NoSubprotocol(Option<String>),
}

/// Largest upgrade response head accepted.
pub const MAX_UPGRADE_RESPONSE: usize = 8 * 1024;

/// Checks the backend's answer to [`upgrade_request`] in `buf`: `Ok(None)` while the
/// head is incomplete, `Ok(Some(n))` once a valid `101` head of `n` bytes is there
/// (frames may follow it in `buf`).
pub fn check_upgrade_response(buf: &[u8], key: &str) -> Result<Option<usize>, UpgradeError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let n = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_UPGRADE_RESPONSE => {
            return Err(UpgradeError::TooLarge(MAX_UPGRADE_RESPONSE))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(UpgradeError::Malformed(e.to_string())),
    };
    let status = resp.code.unwrap_or(0);
    if status != 101 {
        return Err(UpgradeError::Status(status));
    }
    let header = |name: &str| {
        resp.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let want = super::handshake::accept_key(key);
    if header("sec-websocket-accept").map(<[u8]>::trim_ascii) != Some(want.as_bytes()) {
        return Err(UpgradeError::BadAccept);
    }
    match header("sec-websocket-protocol").map(<[u8]>::trim_ascii) {
        Some(p) if p == SUBPROTOCOL.as_bytes() => Ok(Some(n)),
        other => Err(UpgradeError::NoSubprotocol(
            other.map(|p| String::from_utf8_lossy(p).into_owned()),
        )),
    }
}

/// A bounds-checked big-endian cursor over one message.
struct Reader<'a> {
    msg: &'a [u8],
    at: usize,
    kind: u8,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], LinkError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.msg.len());
        let Some(end) = end else {
            return Err(LinkError::Truncated {
                kind: self.kind,
                len: self.msg.len(),
            });
        };
        let s = &self.msg[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, LinkError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, LinkError> {
        Ok(u16::from_be_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }

    fn u64(&mut self) -> Result<u64, LinkError> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn str16(&mut self, field: &'static str) -> Result<&'a str, LinkError> {
        let n = self.u16()? as usize;
        let s = self.take(n)?;
        simdutf8::basic::from_utf8(s).map_err(|_| LinkError::NotUtf8 {
            kind: self.kind,
            field,
        })
    }

    fn rest(&mut self) -> &'a [u8] {
        let s = &self.msg[self.at..];
        self.at = self.msg.len();
        s
    }

    /// Fixed-layout messages must not carry trailing bytes.
    fn end(&self) -> Result<(), LinkError> {
        if self.at == self.msg.len() {
            Ok(())
        } else {
            Err(LinkError::TooLong {
                kind: self.kind,
                field: "message",
                len: self.msg.len(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(m: ToBackend<'_>) {
        let mut out = Vec::new();
        m.encode(&mut out).unwrap();
        assert_eq!(out.len(), m.encoded_len(), "{m:?}");
        assert_eq!(ToBackend::decode(&out).unwrap(), m);
    }

    #[test]
    fn every_event_round_trips_and_encoded_len_is_exact() {
        round_trip(ToBackend::Open {
            session: 7,
            session_id: "3f2a-b",
            account_id: "acct-1",
            roles: "user,admin",
        });
        round_trip(ToBackend::Open {
            session: u64::MAX,
            session_id: "s",
            account_id: "",
            roles: "",
        });
        round_trip(ToBackend::Request {
            session: 1,
            call: 42,
            message_id: 0x0102_0304_0506_0708,
            flags: 0x01,
            path: "/account/get",
            payload: b"{\"a\":1}",
        });
        round_trip(ToBackend::Request {
            session: 1,
            call: 0,
            message_id: 9,
            flags: 0x10,
            path: "",
            payload: b"",
        });
        round_trip(ToBackend::Closed { session: 99 });
    }

    #[test]
    fn a_request_has_the_documented_byte_layout() {
        let mut out = Vec::new();
        ToBackend::Request {
            session: 0x1122_3344_5566_7788,
            call: 0x0102_0304_AABB_CCDD,
            message_id: 5,
            flags: 0x80,
            path: "/p",
            payload: b"xy",
        }
        .encode(&mut out)
        .unwrap();
        assert_eq!(
            out,
            [
                0x02, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 1, 2, 3, 4, 0xAA, 0xBB, 0xCC,
                0xDD, 0, 0, 0, 0, 0, 0, 0, 5, 0x80, 0, 2, b'/', b'p', b'x', b'y'
            ]
        );
        assert_eq!(REQUEST_PREFIX_LEN + 2, out.len() - 2);
    }

    #[test]
    fn every_action_round_trips_with_payload_slices_of_the_input() {
        for a in [
            FromBackend::Reply {
                call: 3,
                status: 200,
                payload: Bytes::from_static(b"ok"),
            },
            FromBackend::Send {
                session: 8,
                flags: 1,
                payload: Bytes::from_static(b"\x00\x01"),
            },
            FromBackend::Close {
                session: 8,
                code: 4002,
                reason: Bytes::from_static(b"kicked"),
            },
        ] {
            let mut out = Vec::new();
            a.encode(&mut out);
            assert_eq!(out.len(), a.encoded_len());
            let buf = Bytes::from(out);
            let back = FromBackend::decode(&buf).unwrap();
            assert_eq!(back, a);
            if let FromBackend::Reply { payload, .. } = back {
                assert_eq!(
                    payload.as_ptr(),
                    buf[REPLY_PREFIX_LEN..].as_ptr(),
                    "no copy"
                );
            }
        }
    }

    #[test]
    fn truncated_messages_name_their_kind_and_never_panic() {
        let mut out = Vec::new();
        ToBackend::Open {
            session: 1,
            session_id: "abc",
            account_id: "d",
            roles: "r",
        }
        .encode(&mut out)
        .unwrap();
        for n in 1..out.len() {
            assert_eq!(
                ToBackend::decode(&out[..n]),
                Err(LinkError::Truncated {
                    kind: kind::OPEN,
                    len: n
                }),
                "{n}"
            );
        }
        for k in [kind::REPLY, kind::SEND, kind::CLOSE] {
            let e = FromBackend::decode(&Bytes::from(vec![k, 0, 0])).unwrap_err();
            assert_eq!(e, LinkError::Truncated { kind: k, len: 3 });
        }
        assert_eq!(ToBackend::decode(&[]), Err(LinkError::Empty));
        assert_eq!(FromBackend::decode(&Bytes::new()), Err(LinkError::Empty));
    }

    #[test]
    fn unknown_kinds_and_trailing_bytes_are_errors() {
        assert_eq!(
            ToBackend::decode(&[0x7f]),
            Err(LinkError::UnknownKind(0x7f))
        );
        assert_eq!(
            FromBackend::decode(&Bytes::from_static(&[0x02, 0])),
            Err(LinkError::UnknownKind(0x02)),
            "an event kind from the backend is not an action"
        );
        let mut out = Vec::new();
        ToBackend::Closed { session: 1 }.encode(&mut out).unwrap();
        out.push(0);
        assert!(matches!(
            ToBackend::decode(&out),
            Err(LinkError::TooLong {
                field: "message",
                ..
            })
        ));
    }

    #[test]
    fn actions_the_gateway_cannot_carry_out_are_rejected_by_the_decoder() {
        let enc = |a: FromBackend| {
            let mut out = Vec::new();
            a.encode(&mut out);
            FromBackend::decode(&Bytes::from(out))
        };
        assert_eq!(
            enc(FromBackend::Send {
                session: 1,
                flags: 0x10,
                payload: Bytes::new()
            }),
            Err(LinkError::BadSendFlags(0x10))
        );
        for code in [0, 1005, 1006, 2000, 5000] {
            assert_eq!(
                enc(FromBackend::Close {
                    session: 1,
                    code,
                    reason: Bytes::new()
                }),
                Err(LinkError::BadCloseCode(code))
            );
        }
        assert_eq!(
            enc(FromBackend::Close {
                session: 1,
                code: 4000,
                reason: Bytes::from_static(b"\xff")
            }),
            Err(LinkError::NotUtf8 {
                kind: kind::CLOSE,
                field: "reason"
            })
        );
        assert!(matches!(
            enc(FromBackend::Close {
                session: 1,
                code: 4000,
                reason: Bytes::from(vec![b'x'; 124])
            }),
            Err(LinkError::TooLong {
                field: "reason",
                ..
            })
        ));
        assert_eq!(
            enc(FromBackend::Reply {
                call: 0,
                status: 200,
                payload: Bytes::new()
            }),
            Err(LinkError::ReplyToEvent)
        );
    }

    #[test]
    fn a_field_too_long_for_its_prefix_fails_to_encode_and_appends_nothing() {
        let long = "x".repeat(70_000);
        let mut out = Vec::new();
        let e = ToBackend::Request {
            session: 1,
            call: 1,
            message_id: 1,
            flags: 0,
            path: &long,
            payload: b"",
        }
        .encode(&mut out)
        .unwrap_err();
        assert_eq!(
            e,
            LinkError::TooLong {
                kind: kind::REQUEST,
                field: "path",
                len: 70_000
            }
        );
        assert!(out.is_empty());
    }

    #[test]
    fn non_utf8_strings_in_an_open_are_rejected() {
        let mut out = vec![kind::OPEN];
        out.extend_from_slice(&1u64.to_be_bytes());
        out.extend_from_slice(&[0, 1, 0xff, 0, 0, 0, 0]);
        assert_eq!(
            ToBackend::decode(&out),
            Err(LinkError::NotUtf8 {
                kind: kind::OPEN,
                field: "session id"
            })
        );
    }

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
    const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

    #[test]
    fn the_upgrade_request_offers_the_link_subprotocol_and_names_the_shard() {
        let r = upgrade_request("127.0.0.1:5002", "/link", KEY, 3);
        assert!(r.starts_with("GET /link HTTP/1.1\r\nHost: 127.0.0.1:5002\r\n"));
        assert!(r.contains("\r\nSec-WebSocket-Protocol: ringgate-link.v1\r\n"));
        assert!(r.contains("\r\nX-Ringgate-Shard: 3\r\n"));
        assert!(r.ends_with("\r\n\r\n"));
    }

    #[test]
    fn a_101_with_accept_and_subprotocol_is_taken_and_frames_behind_it_are_left() {
        let head = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {ACCEPT}\r\nSec-WebSocket-Protocol: ringgate-link.v1\r\n\r\n"
        );
        let mut buf = head.clone().into_bytes();
        buf.extend_from_slice(&[0x82, 0]);
        assert_eq!(check_upgrade_response(&buf, KEY), Ok(Some(head.len())));
        assert_eq!(check_upgrade_response(&buf[..20], KEY), Ok(None));
    }

    #[test]
    fn an_upgrade_without_the_subprotocol_or_with_a_wrong_accept_is_refused() {
        let no_proto =
            format!("HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: {ACCEPT}\r\n\r\n");
        assert_eq!(
            check_upgrade_response(no_proto.as_bytes(), KEY),
            Err(UpgradeError::NoSubprotocol(None))
        );
        let bad = "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: x\r\n\
                   Sec-WebSocket-Protocol: ringgate-link.v1\r\n\r\n";
        assert_eq!(
            check_upgrade_response(bad.as_bytes(), KEY),
            Err(UpgradeError::BadAccept)
        );
        assert_eq!(
            check_upgrade_response(b"HTTP/1.1 404 Not Found\r\n\r\n", KEY),
            Err(UpgradeError::Status(404))
        );
        let mut endless = b"HTTP/1.1 101 Switching Protocols\r\nX-Pad: ".to_vec();
        endless.resize(MAX_UPGRADE_RESPONSE + 1, b'a');
        assert_eq!(
            check_upgrade_response(&endless, KEY),
            Err(UpgradeError::TooLarge(MAX_UPGRADE_RESPONSE))
        );
        assert!(matches!(
            check_upgrade_response(b"\x00\x01garbage\r\n\r\n", KEY),
            Err(UpgradeError::Malformed(_))
        ));
    }
}
