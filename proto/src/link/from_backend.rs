//! The actions a link backend sends ringgate ([`FromBackend`]): their decoder, which
//! is where ringgate checks everything a backend sends before it acts on it (a
//! malformed action is a protocol error that closes the link), and their encoder,
//! which backends use and which checks nothing. Payloads are slices of the decoded
//! message, so a push reaches the client's outbox without a copy.

use bytes::{BufMut, Bytes};

use super::reader::Reader;
use super::{
    kind, Addr, LinkError, MAX_CLOSE_REASON, MAX_KEY, MAX_SHORTCUT_NAME, MAX_TOPIC,
    REPLY_PREFIX_LEN,
};
use crate::bannou::flags::BINARY;

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
    /// A message to every subscriber of `topic`, on every shard.
    Publish {
        /// 0 (JSON payload) or 0x01 (binary payload), as SEND.
        flags: u8,
        /// 1 to [`MAX_TOPIC`] bytes.
        topic: Box<str>,
        /// The conflation key: in a slow client's outbox, this message replaces an
        /// unsent older one with the same key. `None` on the wire is an empty key; at
        /// most [`MAX_KEY`] bytes.
        key: Option<Box<str>>,
        payload: Bytes,
    },
    /// Subscribe the sessions `addr` names to `topic` (1 to [`MAX_TOPIC`] bytes).
    Subscribe { addr: Addr, topic: Box<str> },
    /// Unsubscribe the sessions `addr` names from `topic`.
    Unsubscribe { addr: Addr, topic: Box<str> },
    /// A server push to the sessions `addr` names.
    Push {
        addr: Addr,
        /// 0 (JSON payload) or 0x01 (binary payload), as SEND.
        flags: u8,
        payload: Bytes,
    },
    /// Grant (`add`) and revoke (`remove`) roles of the sessions `addr` names. On the
    /// wire each list is comma-separated; names are trimmed and empty ones dropped.
    Roles {
        addr: Addr,
        add: Vec<String>,
        remove: Vec<String>,
    },
    /// Close the connections of the sessions `addr` names, with no resume; `code` and
    /// `reason` follow CLOSE's rules.
    Kick {
        addr: Addr,
        code: u16,
        reason: Bytes,
    },
    /// Add a manifest entry `name` (service `shortcut`) whose GUID sends `payload`
    /// to the endpoint `target`.
    Shortcut {
        addr: Addr,
        /// 1 to [`MAX_SHORTCUT_NAME`] bytes.
        name: Box<str>,
        /// An endpoint path (starts with '/').
        target: Box<str>,
        /// When the shortcut stops working, in ms since the Unix epoch; 0 = never.
        expires_unix_ms: u64,
        /// The bound payload the shortcut sends.
        payload: Bytes,
    },
    /// Remove the shortcut `name`.
    ShortcutRevoke { addr: Addr, name: Box<str> },
    /// Push `payload` to every session (flags as PUSH).
    Broadcast { flags: u8, payload: Bytes },
    /// Send one client a request; its answer comes back as
    /// [`ToBackend::ClientAnswer`](super::ToBackend::ClientAnswer) with this `call`.
    CallClient {
        /// [`Addr::Link`] or [`Addr::Session`]: a call has one answer.
        addr: Addr,
        /// Not 0; chosen by the backend, echoed in the answer.
        call: u64,
        timeout_ms: u32,
        /// 0 (JSON payload) or 0x01 (binary payload).
        flags: u8,
        payload: Bytes,
    },
}

/// A REPLY, decoded on its own: the action a link carries most, kept off the general
/// decoder's path (and out of the size of [`FromBackend`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyMsg {
    pub call: u64,
    pub status: u16,
    pub payload: Bytes,
}

impl ReplyMsg {
    /// The REPLY in `msg`, if it is one (`None`: another kind, for [`FromBackend::decode`]).
    pub fn decode(msg: &Bytes) -> Option<Result<ReplyMsg, LinkError>> {
        (msg.first() == Some(&kind::REPLY)).then(|| Self::read(msg))
    }

    fn read(msg: &Bytes) -> Result<ReplyMsg, LinkError> {
        let mut r = Reader::new(msg, 1, kind::REPLY);
        let call = r.u64()?;
        if call == 0 {
            return Err(LinkError::ReplyToEvent);
        }
        let status = r.u16()?;
        Ok(ReplyMsg {
            call,
            status,
            payload: msg.slice(r.at..),
        })
    }
}

impl FromBackend {
    /// Decodes one action; payloads and the reason are slices of `msg`.
    pub fn decode(msg: &Bytes) -> Result<FromBackend, LinkError> {
        let (&k, _) = msg.split_first().ok_or(LinkError::Empty)?;
        let mut r = Reader::new(msg, 1, k);
        let m = match k {
            kind::REPLY => {
                let ReplyMsg {
                    call,
                    status,
                    payload,
                } = ReplyMsg::read(msg)?;
                FromBackend::Reply {
                    call,
                    status,
                    payload,
                }
            }
            kind::SEND => {
                let session = r.u64()?;
                let flags = r.u8()?;
                if flags & !BINARY != 0 {
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
                if !sendable_close_code(code) {
                    return Err(LinkError::BadCloseCode(code));
                }
                FromBackend::Close {
                    session,
                    code,
                    reason: close_reason(&mut r, msg)?,
                }
            }
            kind::PUBLISH => {
                let flags = push_flags(&mut r)?;
                let topic = topic(&mut r)?;
                let key = r.str16("key")?;
                if key.len() > MAX_KEY {
                    return Err(LinkError::TooLong {
                        kind: k,
                        field: "key",
                        len: key.len(),
                    });
                }
                FromBackend::Publish {
                    flags,
                    topic,
                    key: (!key.is_empty()).then(|| key.into()),
                    payload: msg.slice(r.at..),
                }
            }
            kind::SUBSCRIBE | kind::UNSUBSCRIBE => {
                let addr = Addr::read(&mut r)?;
                let topic = topic(&mut r)?;
                r.end()?;
                if k == kind::SUBSCRIBE {
                    FromBackend::Subscribe { addr, topic }
                } else {
                    FromBackend::Unsubscribe { addr, topic }
                }
            }
            kind::PUSH => FromBackend::Push {
                addr: Addr::read(&mut r)?,
                flags: push_flags(&mut r)?,
                payload: msg.slice(r.at..),
            },
            kind::BROADCAST => FromBackend::Broadcast {
                flags: push_flags(&mut r)?,
                payload: msg.slice(r.at..),
            },
            kind::ROLES => {
                let m = FromBackend::Roles {
                    addr: Addr::read(&mut r)?,
                    add: role_list(&mut r, "add")?,
                    remove: role_list(&mut r, "remove")?,
                };
                r.end()?;
                m
            }
            kind::KICK => {
                let addr = Addr::read(&mut r)?;
                let code = r.u16()?;
                if !sendable_close_code(code) {
                    return Err(LinkError::BadKickCode(code));
                }
                FromBackend::Kick {
                    addr,
                    code,
                    reason: close_reason(&mut r, msg)?,
                }
            }
            kind::SHORTCUT => {
                let addr = Addr::read(&mut r)?;
                let name = shortcut_name(&mut r)?;
                let target = r.str16("target")?;
                if !target.starts_with('/') {
                    return Err(LinkError::BadShortcutTarget);
                }
                FromBackend::Shortcut {
                    addr,
                    name,
                    target: target.into(),
                    expires_unix_ms: r.u64()?,
                    payload: msg.slice(r.at..),
                }
            }
            kind::SHORTCUT_REVOKE => {
                let m = FromBackend::ShortcutRevoke {
                    addr: Addr::read(&mut r)?,
                    name: shortcut_name(&mut r)?,
                };
                r.end()?;
                m
            }
            kind::CALL_CLIENT => {
                let addr = Addr::read(&mut r)?;
                if let Addr::Account(_) = addr {
                    return Err(LinkError::CallClientAccount);
                }
                let call = r.u64()?;
                if call == 0 {
                    return Err(LinkError::CallClientZero);
                }
                FromBackend::CallClient {
                    addr,
                    call,
                    timeout_ms: r.u32()?,
                    flags: push_flags(&mut r)?,
                    payload: msg.slice(r.at..),
                }
            }
            other => return Err(LinkError::UnknownKind(other)),
        };
        Ok(m)
    }

    /// The action's kind byte (for logs).
    pub fn kind(&self) -> u8 {
        match self {
            FromBackend::Reply { .. } => kind::REPLY,
            FromBackend::Send { .. } => kind::SEND,
            FromBackend::Close { .. } => kind::CLOSE,
            FromBackend::Publish { .. } => kind::PUBLISH,
            FromBackend::Subscribe { .. } => kind::SUBSCRIBE,
            FromBackend::Unsubscribe { .. } => kind::UNSUBSCRIBE,
            FromBackend::Push { .. } => kind::PUSH,
            FromBackend::Roles { .. } => kind::ROLES,
            FromBackend::Kick { .. } => kind::KICK,
            FromBackend::Shortcut { .. } => kind::SHORTCUT,
            FromBackend::ShortcutRevoke { .. } => kind::SHORTCUT_REVOKE,
            FromBackend::CallClient { .. } => kind::CALL_CLIENT,
            FromBackend::Broadcast { .. } => kind::BROADCAST,
        }
    }

    /// Bytes [`FromBackend::encode`] appends.
    pub fn encoded_len(&self) -> usize {
        match self {
            FromBackend::Reply { payload, .. } => REPLY_PREFIX_LEN + payload.len(),
            FromBackend::Send { payload, .. } => 1 + 8 + 1 + payload.len(),
            FromBackend::Close { reason, .. } => 1 + 8 + 2 + reason.len(),
            FromBackend::Publish {
                topic,
                key,
                payload,
                ..
            } => 1 + 1 + 2 + topic.len() + 2 + key.as_deref().map_or(0, str::len) + payload.len(),
            FromBackend::Subscribe { addr, topic } | FromBackend::Unsubscribe { addr, topic } => {
                1 + addr.encoded_len() + 2 + topic.len()
            }
            FromBackend::Push { addr, payload, .. } => 1 + addr.encoded_len() + 1 + payload.len(),
            FromBackend::Broadcast { payload, .. } => 1 + 1 + payload.len(),
            FromBackend::Roles { addr, add, remove } => {
                1 + addr.encoded_len() + 2 + joined_len(add) + 2 + joined_len(remove)
            }
            FromBackend::Kick { addr, reason, .. } => 1 + addr.encoded_len() + 2 + reason.len(),
            FromBackend::Shortcut {
                addr,
                name,
                target,
                payload,
                ..
            } => 1 + addr.encoded_len() + 2 + name.len() + 2 + target.len() + 8 + payload.len(),
            FromBackend::ShortcutRevoke { addr, name } => 1 + addr.encoded_len() + 2 + name.len(),
            FromBackend::CallClient { addr, payload, .. } => {
                1 + addr.encoded_len() + 8 + 4 + 1 + payload.len()
            }
        }
    }

    /// Appends the action to `out` (what a link backend sends). Not validated: a
    /// backend may send anything, and ringgate's decoder is what checks. A string
    /// longer than 65535 bytes gets a truncated length prefix.
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
            FromBackend::Publish {
                flags,
                topic,
                key,
                payload,
            } => {
                out.put_u8(kind::PUBLISH);
                out.put_u8(*flags);
                put_str16(out, topic);
                put_str16(out, key.as_deref().unwrap_or(""));
                out.put_slice(payload);
            }
            FromBackend::Subscribe { addr, topic } | FromBackend::Unsubscribe { addr, topic } => {
                out.put_u8(self.kind());
                addr.encode(out);
                put_str16(out, topic);
            }
            FromBackend::Push {
                addr,
                flags,
                payload,
            } => {
                out.put_u8(kind::PUSH);
                addr.encode(out);
                out.put_u8(*flags);
                out.put_slice(payload);
            }
            FromBackend::Broadcast { flags, payload } => {
                out.put_u8(kind::BROADCAST);
                out.put_u8(*flags);
                out.put_slice(payload);
            }
            FromBackend::Roles { addr, add, remove } => {
                out.put_u8(kind::ROLES);
                addr.encode(out);
                put_joined(out, add);
                put_joined(out, remove);
            }
            FromBackend::Kick { addr, code, reason } => {
                out.put_u8(kind::KICK);
                addr.encode(out);
                out.put_u16(*code);
                out.put_slice(reason);
            }
            FromBackend::Shortcut {
                addr,
                name,
                target,
                expires_unix_ms,
                payload,
            } => {
                out.put_u8(kind::SHORTCUT);
                addr.encode(out);
                put_str16(out, name);
                put_str16(out, target);
                out.put_u64(*expires_unix_ms);
                out.put_slice(payload);
            }
            FromBackend::ShortcutRevoke { addr, name } => {
                out.put_u8(kind::SHORTCUT_REVOKE);
                addr.encode(out);
                put_str16(out, name);
            }
            FromBackend::CallClient {
                addr,
                call,
                timeout_ms,
                flags,
                payload,
            } => {
                out.put_u8(kind::CALL_CLIENT);
                addr.encode(out);
                out.put_u64(*call);
                out.put_u32(*timeout_ms);
                out.put_u8(*flags);
                out.put_slice(payload);
            }
        }
    }
}

/// A close code a backend may have a session closed with (CLOSE, KICK).
fn sendable_close_code(code: u16) -> bool {
    code == 1000 || (3000..=4999).contains(&code)
}

/// The rest of a CLOSE or KICK: a UTF-8 reason of at most [`MAX_CLOSE_REASON`] bytes.
fn close_reason(r: &mut Reader<'_>, msg: &Bytes) -> Result<Bytes, LinkError> {
    let start = r.at;
    let reason = r.rest();
    if reason.len() > MAX_CLOSE_REASON {
        return Err(LinkError::TooLong {
            kind: r.kind,
            field: "reason",
            len: reason.len(),
        });
    }
    if simdutf8::basic::from_utf8(reason).is_err() {
        return Err(LinkError::NotUtf8 {
            kind: r.kind,
            field: "reason",
        });
    }
    Ok(msg.slice(start..))
}

/// A push's flags (PUBLISH, PUSH, CALL_CLIENT): 0 or 0x01 (binary).
fn push_flags(r: &mut Reader<'_>) -> Result<u8, LinkError> {
    let flags = r.u8()?;
    if flags & !BINARY != 0 {
        return Err(LinkError::BadFlags {
            kind: r.kind,
            flags,
        });
    }
    Ok(flags)
}

/// A `topic_len u16 · topic` of 1 to [`MAX_TOPIC`] bytes.
fn topic(r: &mut Reader<'_>) -> Result<Box<str>, LinkError> {
    let topic = r.str16("topic")?;
    if topic.is_empty() || topic.len() > MAX_TOPIC {
        return Err(LinkError::BadTopic {
            kind: r.kind,
            len: topic.len(),
        });
    }
    Ok(topic.into())
}

/// A `name_len u16 · name` of 1 to [`MAX_SHORTCUT_NAME`] bytes.
fn shortcut_name(r: &mut Reader<'_>) -> Result<Box<str>, LinkError> {
    let name = r.str16("name")?;
    if name.is_empty() {
        return Err(LinkError::EmptyField {
            kind: r.kind,
            field: "name",
        });
    }
    if name.len() > MAX_SHORTCUT_NAME {
        return Err(LinkError::TooLong {
            kind: r.kind,
            field: "name",
            len: name.len(),
        });
    }
    Ok(name.into())
}

/// A `len u16 · comma-separated names`: each trimmed, empty ones dropped.
fn role_list(r: &mut Reader<'_>, field: &'static str) -> Result<Vec<String>, LinkError> {
    Ok(r.str16(field)?
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(String::from)
        .collect())
}

fn put_str16<B: BufMut>(out: &mut B, s: &str) {
    out.put_u16(s.len() as u16);
    out.put_slice(s.as_bytes());
}

/// Bytes of `names` joined with ','.
fn joined_len(names: &[String]) -> usize {
    names.iter().map(String::len).sum::<usize>() + names.len().saturating_sub(1)
}

/// `len u16 · names joined with ','`.
fn put_joined<B: BufMut>(out: &mut B, names: &[String]) {
    out.put_u16(joined_len(names) as u16);
    for (i, n) in names.iter().enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        out.put_slice(n.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_decodes_alone_as_it_does_among_all_actions() {
        let reply = FromBackend::Reply {
            call: 7,
            status: 200,
            payload: Bytes::from_static(b"ok"),
        };
        let got = ReplyMsg::decode(&enc(&reply)).unwrap().unwrap();
        assert_eq!(
            (got.call, got.status, &got.payload[..]),
            (7, 200, &b"ok"[..])
        );
        let zero = FromBackend::Reply {
            call: 0,
            status: 200,
            payload: Bytes::new(),
        };
        assert_eq!(
            ReplyMsg::decode(&enc(&zero)),
            Some(Err(LinkError::ReplyToEvent))
        );
        let truncated = Bytes::from_static(&[kind::REPLY, 0, 0]);
        assert!(matches!(
            ReplyMsg::decode(&truncated),
            Some(Err(LinkError::Truncated { .. }))
        ));
        let push = FromBackend::Broadcast {
            flags: 0,
            payload: Bytes::new(),
        };
        assert_eq!(ReplyMsg::decode(&enc(&push)), None, "not a REPLY");
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

    fn enc(a: &FromBackend) -> Bytes {
        let mut out = Vec::new();
        a.encode(&mut out);
        assert_eq!(out.len(), a.encoded_len(), "{a:?}");
        Bytes::from(out)
    }

    fn dec(a: &FromBackend) -> Result<FromBackend, LinkError> {
        FromBackend::decode(&enc(a))
    }

    fn session(id: &str) -> Addr {
        Addr::Session(id.into())
    }

    /// One of every push-plane action, across the address kinds, each with the length
    /// of its variable tail (payload or reason; 0 for the fixed layouts).
    fn push_plane_samples() -> Vec<(FromBackend, usize)> {
        vec![
            (
                FromBackend::Publish {
                    flags: 0,
                    topic: "room.7".into(),
                    key: Some("pos:42".into()),
                    payload: Bytes::from_static(b"{\"x\":1}"),
                },
                7,
            ),
            (
                FromBackend::Publish {
                    flags: 1,
                    topic: "t".into(),
                    key: None,
                    payload: Bytes::from_static(b"\x00"),
                },
                1,
            ),
            (
                FromBackend::Subscribe {
                    addr: Addr::Link(3),
                    topic: "room.7".into(),
                },
                0,
            ),
            (
                FromBackend::Unsubscribe {
                    addr: Addr::Account("acct-1".into()),
                    topic: "room.7".into(),
                },
                0,
            ),
            (
                FromBackend::Push {
                    addr: session("sess-9"),
                    flags: 1,
                    payload: Bytes::from_static(b"\x01\x02"),
                },
                2,
            ),
            (
                FromBackend::Broadcast {
                    flags: 0,
                    payload: Bytes::from_static(b"{\"all\":1}"),
                },
                9,
            ),
            (
                FromBackend::Roles {
                    addr: Addr::Account("acct-1".into()),
                    add: vec!["mod".into(), "vip".into()],
                    remove: vec!["guest".into()],
                },
                0,
            ),
            (
                FromBackend::Roles {
                    addr: Addr::Link(1),
                    add: vec![],
                    remove: vec![],
                },
                0,
            ),
            (
                FromBackend::Kick {
                    addr: session("sess-9"),
                    code: 4002,
                    reason: Bytes::from_static(b"kicked"),
                },
                6,
            ),
            (
                FromBackend::Shortcut {
                    addr: Addr::Link(5),
                    name: "join-match".into(),
                    target: "/match/join".into(),
                    expires_unix_ms: 1_700_000_000_000,
                    payload: Bytes::from_static(b"{\"match\":\"m1\"}"),
                },
                14,
            ),
            (
                FromBackend::ShortcutRevoke {
                    addr: Addr::Account("acct-1".into()),
                    name: "join-match".into(),
                },
                0,
            ),
            (
                FromBackend::CallClient {
                    addr: session("sess-9"),
                    call: 77,
                    timeout_ms: 5_000,
                    flags: 0,
                    payload: Bytes::from_static(b"{\"q\":1}"),
                },
                7,
            ),
            (
                FromBackend::CallClient {
                    addr: Addr::Link(2),
                    call: u64::MAX,
                    timeout_ms: 0,
                    flags: 1,
                    payload: Bytes::new(),
                },
                0,
            ),
        ]
    }

    #[test]
    fn every_push_plane_action_round_trips_with_its_tail_a_slice_of_the_input() {
        for (a, tail_len) in push_plane_samples() {
            let buf = enc(&a);
            assert_eq!(buf[0], a.kind());
            let back = FromBackend::decode(&buf).unwrap();
            assert_eq!(back, a);
            let tail = match &back {
                FromBackend::Publish { payload, .. }
                | FromBackend::Push { payload, .. }
                | FromBackend::Shortcut { payload, .. }
                | FromBackend::CallClient { payload, .. } => payload,
                FromBackend::Kick { reason, .. } => reason,
                _ => continue,
            };
            assert_eq!(tail.len(), tail_len, "{a:?}");
            if tail_len > 0 {
                assert_eq!(
                    tail.as_ptr(),
                    buf[buf.len() - tail_len..].as_ptr(),
                    "no copy: {a:?}"
                );
            }
        }
    }

    #[test]
    fn push_plane_actions_have_the_documented_byte_layout() {
        let publish = FromBackend::Publish {
            flags: 1,
            topic: "t".into(),
            key: Some("k".into()),
            payload: Bytes::from_static(b"p"),
        };
        assert_eq!(enc(&publish)[..], [0x84, 1, 0, 1, b't', 0, 1, b'k', b'p']);
        let unkeyed = FromBackend::Publish {
            flags: 0,
            topic: "t".into(),
            key: None,
            payload: Bytes::new(),
        };
        assert_eq!(enc(&unkeyed)[..], [0x84, 0, 0, 1, b't', 0, 0]);
        let roles = FromBackend::Roles {
            addr: Addr::Link(1),
            add: vec!["a".into(), "b".into()],
            remove: vec![],
        };
        assert_eq!(
            enc(&roles)[..],
            [0x88, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 3, b'a', b',', b'b', 0, 0]
        );
        let call = FromBackend::CallClient {
            addr: session("s"),
            call: 2,
            timeout_ms: 0x0102_0304,
            flags: 1,
            payload: Bytes::from_static(b"p"),
        };
        assert_eq!(
            enc(&call)[..],
            [0x8c, 2, 0, 1, b's', 0, 0, 0, 0, 0, 0, 0, 2, 1, 2, 3, 4, 1, b'p']
        );
        let shortcut = FromBackend::Shortcut {
            addr: Addr::Account("a".into()),
            name: "n".into(),
            target: "/t".into(),
            expires_unix_ms: 9,
            payload: Bytes::from_static(b"p"),
        };
        assert_eq!(
            enc(&shortcut)[..],
            [0x8a, 3, 0, 1, b'a', 0, 1, b'n', 0, 2, b'/', b't', 0, 0, 0, 0, 0, 0, 0, 9, b'p']
        );
    }

    #[test]
    fn a_push_plane_action_cut_before_its_tail_is_truncated_and_never_panics() {
        for (a, tail_len) in push_plane_samples() {
            let buf = enc(&a);
            let k = buf[0];
            let head = buf.len() - tail_len;
            for n in 1..head {
                assert_eq!(
                    FromBackend::decode(&buf.slice(..n)),
                    Err(LinkError::Truncated { kind: k, len: n }),
                    "{a:?} cut at {n}"
                );
            }
            // Cut inside the tail, it is the same action with a shorter tail.
            for n in head..buf.len() {
                assert!(
                    FromBackend::decode(&buf.slice(..n)).is_ok(),
                    "{a:?} cut at {n}"
                );
            }
        }
    }

    #[test]
    fn push_flags_other_than_binary_are_rejected_naming_the_kind() {
        let publish = FromBackend::Publish {
            flags: 0x10,
            topic: "t".into(),
            key: None,
            payload: Bytes::new(),
        };
        assert_eq!(
            dec(&publish),
            Err(LinkError::BadFlags {
                kind: kind::PUBLISH,
                flags: 0x10
            })
        );
        let push = FromBackend::Push {
            addr: Addr::Link(1),
            flags: 0x02,
            payload: Bytes::new(),
        };
        assert_eq!(
            dec(&push),
            Err(LinkError::BadFlags {
                kind: kind::PUSH,
                flags: 0x02
            })
        );
        let call = FromBackend::CallClient {
            addr: Addr::Link(1),
            call: 1,
            timeout_ms: 1000,
            flags: 0x81,
            payload: Bytes::new(),
        };
        assert_eq!(
            dec(&call),
            Err(LinkError::BadFlags {
                kind: kind::CALL_CLIENT,
                flags: 0x81
            })
        );
    }

    #[test]
    fn a_topic_must_be_1_to_255_bytes_of_utf8_in_publish_subscribe_and_unsubscribe() {
        let with_topic = |k: u8, topic: &str| match k {
            kind::PUBLISH => FromBackend::Publish {
                flags: 0,
                topic: topic.into(),
                key: None,
                payload: Bytes::new(),
            },
            kind::SUBSCRIBE => FromBackend::Subscribe {
                addr: Addr::Link(1),
                topic: topic.into(),
            },
            _ => FromBackend::Unsubscribe {
                addr: Addr::Link(1),
                topic: topic.into(),
            },
        };
        for k in [kind::PUBLISH, kind::SUBSCRIBE, kind::UNSUBSCRIBE] {
            assert_eq!(
                dec(&with_topic(k, "")),
                Err(LinkError::BadTopic { kind: k, len: 0 })
            );
            let long = "x".repeat(MAX_TOPIC + 1);
            assert_eq!(
                dec(&with_topic(k, &long)),
                Err(LinkError::BadTopic { kind: k, len: 256 })
            );
            let longest = with_topic(k, &"x".repeat(MAX_TOPIC));
            assert_eq!(dec(&longest), Ok(longest));
        }
        let raw = [kind::SUBSCRIBE, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0xff];
        assert_eq!(
            FromBackend::decode(&Bytes::copy_from_slice(&raw)),
            Err(LinkError::NotUtf8 {
                kind: kind::SUBSCRIBE,
                field: "topic"
            })
        );
    }

    #[test]
    fn a_publish_key_is_none_when_empty_and_at_most_255_bytes_of_utf8() {
        let publish = |key: Option<Box<str>>| FromBackend::Publish {
            flags: 0,
            topic: "t".into(),
            key,
            payload: Bytes::from_static(b"p"),
        };
        let longest = publish(Some("k".repeat(MAX_KEY).into()));
        assert_eq!(dec(&longest), Ok(longest));
        assert_eq!(
            dec(&publish(Some("k".repeat(MAX_KEY + 1).into()))),
            Err(LinkError::TooLong {
                kind: kind::PUBLISH,
                field: "key",
                len: 256
            })
        );
        assert_eq!(
            dec(&publish(Some("".into()))),
            Ok(publish(None)),
            "an empty key is no key"
        );
        let raw = [kind::PUBLISH, 0, 0, 1, b't', 0, 1, 0xc3];
        assert_eq!(
            FromBackend::decode(&Bytes::copy_from_slice(&raw)),
            Err(LinkError::NotUtf8 {
                kind: kind::PUBLISH,
                field: "key"
            })
        );
    }

    #[test]
    fn role_lists_are_split_on_commas_trimmed_and_empty_names_dropped() {
        let mut raw = vec![kind::ROLES, Addr::LINK, 0, 0, 0, 0, 0, 0, 0, 4];
        let add = b" mod , ,vip,,";
        raw.extend_from_slice(&(add.len() as u16).to_be_bytes());
        raw.extend_from_slice(add);
        raw.extend_from_slice(&[0, 3, b',', b' ', b',']);
        assert_eq!(
            FromBackend::decode(&Bytes::from(raw)),
            Ok(FromBackend::Roles {
                addr: Addr::Link(4),
                add: vec!["mod".into(), "vip".into()],
                remove: vec![],
            })
        );
        let bad = [
            kind::ROLES,
            Addr::LINK,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            4,
            0,
            0,
            0,
            1,
            0xff,
        ];
        assert_eq!(
            FromBackend::decode(&Bytes::copy_from_slice(&bad)),
            Err(LinkError::NotUtf8 {
                kind: kind::ROLES,
                field: "remove"
            })
        );
    }

    #[test]
    fn a_kick_follows_the_close_rules_for_code_and_reason() {
        let kick = |code, reason: &'static [u8]| FromBackend::Kick {
            addr: Addr::Link(1),
            code,
            reason: Bytes::from_static(reason),
        };
        for code in [1000, 3000, 4002, 4999] {
            assert_eq!(dec(&kick(code, b"bye")), Ok(kick(code, b"bye")));
        }
        for code in [0, 999, 1001, 1005, 1006, 2999, 5000] {
            assert_eq!(dec(&kick(code, b"")), Err(LinkError::BadKickCode(code)));
        }
        assert_eq!(
            dec(&kick(4002, b"\xff")),
            Err(LinkError::NotUtf8 {
                kind: kind::KICK,
                field: "reason"
            })
        );
        let long = FromBackend::Kick {
            addr: Addr::Link(1),
            code: 4002,
            reason: Bytes::from(vec![b'x'; MAX_CLOSE_REASON + 1]),
        };
        assert_eq!(
            dec(&long),
            Err(LinkError::TooLong {
                kind: kind::KICK,
                field: "reason",
                len: 124
            })
        );
    }

    #[test]
    fn a_shortcut_needs_a_name_of_1_to_255_bytes_and_a_target_path() {
        let shortcut = |name: &str, target: &str| FromBackend::Shortcut {
            addr: Addr::Link(1),
            name: name.into(),
            target: target.into(),
            expires_unix_ms: 0,
            payload: Bytes::new(),
        };
        let longest = shortcut(&"n".repeat(MAX_SHORTCUT_NAME), "/t");
        assert_eq!(dec(&longest), Ok(longest));
        assert_eq!(
            dec(&shortcut("", "/t")),
            Err(LinkError::EmptyField {
                kind: kind::SHORTCUT,
                field: "name"
            })
        );
        assert_eq!(
            dec(&shortcut(&"n".repeat(MAX_SHORTCUT_NAME + 1), "/t")),
            Err(LinkError::TooLong {
                kind: kind::SHORTCUT,
                field: "name",
                len: 256
            })
        );
        for target in ["", "t", "t/u", " /t"] {
            assert_eq!(
                dec(&shortcut("n", target)),
                Err(LinkError::BadShortcutTarget),
                "{target:?}"
            );
        }
        let revoke = |name: &str| FromBackend::ShortcutRevoke {
            addr: Addr::Link(1),
            name: name.into(),
        };
        assert_eq!(
            dec(&revoke("")),
            Err(LinkError::EmptyField {
                kind: kind::SHORTCUT_REVOKE,
                field: "name"
            })
        );
        assert_eq!(
            dec(&revoke(&"n".repeat(MAX_SHORTCUT_NAME + 1))),
            Err(LinkError::TooLong {
                kind: kind::SHORTCUT_REVOKE,
                field: "name",
                len: 256
            })
        );
    }

    #[test]
    fn a_client_call_needs_a_call_id_and_one_session() {
        let call = |addr, call| FromBackend::CallClient {
            addr,
            call,
            timeout_ms: 1000,
            flags: 1,
            payload: Bytes::new(),
        };
        assert_eq!(dec(&call(Addr::Link(1), 0)), Err(LinkError::CallClientZero));
        assert_eq!(
            dec(&call(Addr::Account("acct".into()), 1)),
            Err(LinkError::CallClientAccount)
        );
        for addr in [Addr::Link(1), session("s")] {
            assert_eq!(dec(&call(addr.clone(), 1)), Ok(call(addr, 1)));
        }
    }

    #[test]
    fn fixed_layout_push_plane_actions_reject_trailing_bytes() {
        for (a, tail_len) in push_plane_samples() {
            if tail_len > 0 || matches!(a, FromBackend::CallClient { .. }) {
                continue;
            }
            let mut buf = enc(&a).to_vec();
            buf.push(0);
            assert_eq!(
                FromBackend::decode(&Bytes::from(buf)),
                Err(LinkError::TooLong {
                    kind: enc(&a)[0],
                    field: "message",
                    len: a.encoded_len() + 1
                }),
                "{a:?}"
            );
        }
    }

    #[test]
    fn a_bad_address_in_an_action_is_an_error() {
        let raw = [kind::PUSH, 0x04, 0, 0, 0, 0, 0, 0, 0, 1, 0];
        assert_eq!(
            FromBackend::decode(&Bytes::copy_from_slice(&raw)),
            Err(LinkError::BadAddr(0x04))
        );
        let kick = FromBackend::Kick {
            addr: session(""),
            code: 4002,
            reason: Bytes::new(),
        };
        assert_eq!(
            dec(&kick),
            Err(LinkError::EmptyField {
                kind: kind::KICK,
                field: "session id"
            })
        );
    }

    #[test]
    fn mutated_actions_never_panic_and_what_decodes_re_encodes_to_an_equal_action() {
        for (a, _) in push_plane_samples() {
            let buf = enc(&a).to_vec();
            for i in 0..buf.len() {
                for v in [0x00, 0x01, 0x02, 0x03, 0x7f, 0x80, 0xff] {
                    let mut m = buf.clone();
                    m[i] = v;
                    if let Ok(d) = FromBackend::decode(&Bytes::from(m)) {
                        assert_eq!(FromBackend::decode(&enc(&d)), Ok(d));
                    }
                }
            }
        }
    }
}
