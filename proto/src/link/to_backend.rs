//! The events ringgate sends a link backend ([`ToBackend`]): their encoder, which the
//! gateway uses for every request it forwards, and their decoder, which is what a link
//! backend written in Rust (the bench harness's echo backend, the tests) reads with.
//! Decoding borrows from the message, so nothing is copied.

use bytes::BufMut;

use super::reader::Reader;
use super::{kind, LinkError, REQUEST_PREFIX_LEN};

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
    /// The client's answer to CALL_CLIENT `call`.
    ClientAnswer {
        call: u64,
        /// The Bannou response code the client set; ringgate's own 60 when the client
        /// did not answer within the call's timeout, 31 when the session is gone.
        code: u8,
        /// The client's response payload.
        payload: &'a [u8],
    },
    /// The session's client dropped; it is kept for its reconnection window (pushes
    /// to it are buffered). Sent to `announce_all` services only.
    Away {
        session: u64,
    },
    /// The session's client resumed it on a new connection. Sent to `announce_all`
    /// services only.
    Resumed {
        session: u64,
    },
    /// A client connected to the raw route `path` of the service (plain WebSocket
    /// messages, no Bannou header).
    RawOpen {
        session: u64,
        path: &'a str,
        session_id: &'a str,
        /// Empty when the token carried no account.
        account_id: &'a str,
        /// Comma-separated.
        roles: &'a str,
    },
    /// A raw route's client sent a message.
    Message {
        session: u64,
        /// 0x01: a binary message; 0: text (valid UTF-8).
        flags: u8,
        payload: &'a [u8],
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
            ToBackend::Closed { .. } | ToBackend::Away { .. } | ToBackend::Resumed { .. } => 1 + 8,
            ToBackend::ClientAnswer { payload, .. } => 1 + 8 + 1 + payload.len(),
            ToBackend::RawOpen {
                path,
                session_id,
                account_id,
                roles,
                ..
            } => 1 + 8 + 8 + path.len() + session_id.len() + account_id.len() + roles.len(),
            ToBackend::Message { payload, .. } => 1 + 8 + 1 + payload.len(),
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
            ToBackend::RawOpen {
                path,
                session_id,
                account_id,
                roles,
                ..
            } => {
                check_len(kind::RAW_OPEN, "path", path.as_bytes())?;
                check_len(kind::RAW_OPEN, "session id", session_id.as_bytes())?;
                check_len(kind::RAW_OPEN, "account id", account_id.as_bytes())?;
                check_len(kind::RAW_OPEN, "roles", roles.as_bytes())?;
            }
            ToBackend::Closed { .. }
            | ToBackend::ClientAnswer { .. }
            | ToBackend::Away { .. }
            | ToBackend::Resumed { .. }
            | ToBackend::Message { .. } => {}
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
            ToBackend::Away { session } => {
                out.put_u8(kind::AWAY);
                out.put_u64(session);
            }
            ToBackend::Resumed { session } => {
                out.put_u8(kind::RESUMED);
                out.put_u64(session);
            }
            ToBackend::RawOpen {
                session,
                path,
                session_id,
                account_id,
                roles,
            } => {
                out.put_u8(kind::RAW_OPEN);
                out.put_u64(session);
                for s in [path, session_id, account_id, roles] {
                    out.put_u16(s.len() as u16);
                    out.put_slice(s.as_bytes());
                }
            }
            ToBackend::Message {
                session,
                flags,
                payload,
            } => {
                out.put_u8(kind::MESSAGE);
                out.put_u64(session);
                out.put_u8(flags);
                out.put_slice(payload);
            }
            ToBackend::ClientAnswer {
                call,
                code,
                payload,
            } => {
                out.put_u8(kind::CLIENT_ANSWER);
                out.put_u64(call);
                out.put_u8(code);
                out.put_slice(payload);
            }
        }
        Ok(())
    }
}

impl<'a> ToBackend<'a> {
    /// Decodes one message (what a link backend does with each binary message).
    pub fn decode(msg: &'a [u8]) -> Result<ToBackend<'a>, LinkError> {
        let (&k, _) = msg.split_first().ok_or(LinkError::Empty)?;
        let mut r = Reader::new(msg, 1, k);
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
            kind::AWAY => ToBackend::Away { session: r.u64()? },
            kind::RESUMED => ToBackend::Resumed { session: r.u64()? },
            kind::RAW_OPEN => ToBackend::RawOpen {
                session: r.u64()?,
                path: r.str16("path")?,
                session_id: r.str16("session id")?,
                account_id: r.str16("account id")?,
                roles: r.str16("roles")?,
            },
            kind::MESSAGE => ToBackend::Message {
                session: r.u64()?,
                flags: r.u8()?,
                payload: r.rest(),
            },
            kind::CLIENT_ANSWER => ToBackend::ClientAnswer {
                call: r.u64()?,
                code: r.u8()?,
                payload: r.rest(),
            },
            other => return Err(LinkError::UnknownKind(other)),
        };
        r.end()?;
        Ok(m)
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
        round_trip(ToBackend::Away { session: 3 });
        round_trip(ToBackend::Resumed { session: u64::MAX });
        round_trip(ToBackend::RawOpen {
            session: 9,
            path: "/lobby",
            session_id: "s-1",
            account_id: "",
            roles: "user",
        });
        round_trip(ToBackend::Message {
            session: 9,
            flags: 0x01,
            payload: b"\x00\xff",
        });
        round_trip(ToBackend::Message {
            session: 9,
            flags: 0,
            payload: b"",
        });
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
        round_trip(ToBackend::ClientAnswer {
            call: 12,
            code: 0,
            payload: b"{\"ok\":true}",
        });
        round_trip(ToBackend::ClientAnswer {
            call: u64::MAX,
            code: 60,
            payload: b"",
        });
    }

    #[test]
    fn a_client_answer_has_the_documented_byte_layout_and_a_borrowed_payload() {
        let mut out = Vec::new();
        ToBackend::ClientAnswer {
            call: 0x0102,
            code: 31,
            payload: b"p",
        }
        .encode(&mut out)
        .unwrap();
        assert_eq!(out, [0x04, 0, 0, 0, 0, 0, 0, 1, 2, 31, b'p']);
        let Ok(ToBackend::ClientAnswer { payload, .. }) = ToBackend::decode(&out) else {
            panic!("not a client answer");
        };
        assert_eq!(payload.as_ptr(), out[10..].as_ptr(), "no copy");
    }

    #[test]
    fn a_client_answer_cut_anywhere_before_its_payload_is_truncated() {
        let out = [0x04, 0, 0, 0, 0, 0, 0, 0, 9, 0];
        for n in 1..out.len() {
            assert_eq!(
                ToBackend::decode(&out[..n]),
                Err(LinkError::Truncated {
                    kind: kind::CLIENT_ANSWER,
                    len: n
                }),
                "{n}"
            );
        }
        assert!(ToBackend::decode(&out).is_ok());
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
        assert_eq!(ToBackend::decode(&[]), Err(LinkError::Empty));
    }

    #[test]
    fn unknown_kinds_and_trailing_bytes_are_errors() {
        assert_eq!(
            ToBackend::decode(&[0x7f]),
            Err(LinkError::UnknownKind(0x7f))
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
}
