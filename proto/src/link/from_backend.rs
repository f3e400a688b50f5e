//! The actions a link backend sends ringgate ([`FromBackend`]): their decoder, which
//! is where ringgate checks everything a backend sends before it acts on it (a
//! malformed action is a protocol error that closes the link), and their encoder,
//! which backends use and which checks nothing. Payloads are slices of the decoded
//! message, so a push reaches the client's outbox without a copy.

use bytes::{BufMut, Bytes};

use super::reader::Reader;
use super::{kind, LinkError, MAX_CLOSE_REASON, REPLY_PREFIX_LEN};

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

impl FromBackend {
    /// Decodes one action; payloads and the reason are slices of `msg`.
    pub fn decode(msg: &Bytes) -> Result<FromBackend, LinkError> {
        let (&k, _) = msg.split_first().ok_or(LinkError::Empty)?;
        let mut r = Reader::new(msg, 1, k);
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

#[cfg(test)]
mod tests {
    use super::*;

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
        for k in [kind::REPLY, kind::SEND, kind::CLOSE] {
            let e = FromBackend::decode(&Bytes::from(vec![k, 0, 0])).unwrap_err();
            assert_eq!(e, LinkError::Truncated { kind: k, len: 3 });
        }
        assert_eq!(FromBackend::decode(&Bytes::new()), Err(LinkError::Empty));
    }

    #[test]
    fn unknown_kinds_and_trailing_bytes_are_errors() {
        assert_eq!(
            FromBackend::decode(&Bytes::from_static(&[0x02, 0])),
            Err(LinkError::UnknownKind(0x02)),
            "an event kind from the backend is not an action"
        );
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
}
