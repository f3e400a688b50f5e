//! Who a push-plane action is for ([`Addr`]): one session announced on this link (by
//! ringgate's number), one session by its id, or every session of an account. Its own
//! file because every push-plane action but PUBLISH starts with one, with the same
//! encoding and the same checks.
//!
//! ```text
//! addr = kind u8 | value
//!   0x01 link session  session u64     (announced by OPEN on this link)
//!   0x02 session id    len u16 | UTF-8 (not empty)
//!   0x03 account id    len u16 | UTF-8 (not empty)
//! ```

use bytes::BufMut;

use super::reader::Reader;
use super::LinkError;

/// The target of an action: one session or every session of an account.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Addr {
    /// ringgate's number of a session announced by OPEN on this link (the `session`
    /// of OPEN, REQUEST and CLOSED).
    Link(u64),
    /// A session by its session id (the `sid` of its token), on any shard.
    Session(Box<str>),
    /// Every session of an account (the `sub` of their tokens), on any shard.
    Account(Box<str>),
}

impl Addr {
    /// Kind byte of [`Addr::Link`].
    pub const LINK: u8 = 0x01;
    /// Kind byte of [`Addr::Session`].
    pub const SESSION: u8 = 0x02;
    /// Kind byte of [`Addr::Account`].
    pub const ACCOUNT: u8 = 0x03;

    /// The address's kind byte.
    pub fn kind(&self) -> u8 {
        match self {
            Addr::Link(_) => Addr::LINK,
            Addr::Session(_) => Addr::SESSION,
            Addr::Account(_) => Addr::ACCOUNT,
        }
    }

    /// Bytes [`Addr::encode`] appends.
    pub fn encoded_len(&self) -> usize {
        match self {
            Addr::Link(_) => 1 + 8,
            Addr::Session(id) | Addr::Account(id) => 1 + 2 + id.len(),
        }
    }

    /// Appends the address to `out` (`encoded_len()` bytes). Not validated, like the
    /// actions' encoders: an id longer than 65535 bytes gets a truncated length prefix.
    pub fn encode<B: BufMut>(&self, out: &mut B) {
        out.put_u8(self.kind());
        match self {
            Addr::Link(session) => out.put_u64(*session),
            Addr::Session(id) | Addr::Account(id) => {
                out.put_u16(id.len() as u16);
                out.put_slice(id.as_bytes());
            }
        }
    }

    /// Decodes the address at the start of `buf`, a part of a message of kind `kind`
    /// (which errors name); returns it and the bytes it took. Unknown address kinds
    /// and empty ids are errors.
    pub fn decode(kind: u8, buf: &[u8]) -> Result<(Addr, usize), LinkError> {
        let mut r = Reader::new(buf, 0, kind);
        let a = Addr::read(&mut r)?;
        Ok((a, r.at))
    }

    /// Reads an address at the reader's position.
    pub(super) fn read(r: &mut Reader<'_>) -> Result<Addr, LinkError> {
        let id = |r: &mut Reader<'_>, field| {
            let s = r.str16(field)?;
            if s.is_empty() {
                return Err(LinkError::EmptyField {
                    kind: r.kind,
                    field,
                });
            }
            Ok(Box::<str>::from(s))
        };
        match r.u8()? {
            Addr::LINK => Ok(Addr::Link(r.u64()?)),
            Addr::SESSION => Ok(Addr::Session(id(r, "session id")?)),
            Addr::ACCOUNT => Ok(Addr::Account(id(r, "account id")?)),
            other => Err(LinkError::BadAddr(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::kind;

    fn encode(a: &Addr) -> Vec<u8> {
        let mut out = Vec::new();
        a.encode(&mut out);
        assert_eq!(out.len(), a.encoded_len(), "{a:?}");
        out
    }

    #[test]
    fn every_address_kind_round_trips_and_reports_its_length() {
        for a in [
            Addr::Link(0),
            Addr::Link(u64::MAX),
            Addr::Session("3f2a-b".into()),
            Addr::Account("acct-é".into()),
        ] {
            let mut buf = encode(&a);
            let n = buf.len();
            buf.extend_from_slice(b"rest");
            assert_eq!(Addr::decode(kind::PUSH, &buf), Ok((a, n)));
        }
    }

    #[test]
    fn addresses_have_the_documented_byte_layout() {
        assert_eq!(encode(&Addr::Link(0x0102)), [1, 0, 0, 0, 0, 0, 0, 1, 2]);
        assert_eq!(encode(&Addr::Session("ab".into())), [2, 0, 2, b'a', b'b']);
        assert_eq!(encode(&Addr::Account("c".into())), [3, 0, 1, b'c']);
    }

    #[test]
    fn an_unknown_address_kind_is_an_error() {
        for k in [0x00, 0x04, 0xff] {
            assert_eq!(
                Addr::decode(kind::KICK, &[k, 0, 0, 0, 0, 0, 0, 0, 0]),
                Err(LinkError::BadAddr(k))
            );
        }
    }

    #[test]
    fn an_empty_session_or_account_id_is_an_error_naming_the_field() {
        assert_eq!(
            Addr::decode(kind::PUSH, &[Addr::SESSION, 0, 0]),
            Err(LinkError::EmptyField {
                kind: kind::PUSH,
                field: "session id"
            })
        );
        assert_eq!(
            Addr::decode(kind::ROLES, &[Addr::ACCOUNT, 0, 0]),
            Err(LinkError::EmptyField {
                kind: kind::ROLES,
                field: "account id"
            })
        );
    }

    #[test]
    fn a_non_utf8_id_is_an_error() {
        assert_eq!(
            Addr::decode(kind::PUSH, &[Addr::ACCOUNT, 0, 1, 0xff]),
            Err(LinkError::NotUtf8 {
                kind: kind::PUSH,
                field: "account id"
            })
        );
    }

    #[test]
    fn a_truncated_address_is_an_error_at_every_length() {
        for a in [Addr::Link(7), Addr::Session("abc".into())] {
            let buf = encode(&a);
            for n in 0..buf.len() {
                assert_eq!(
                    Addr::decode(kind::PUSH, &buf[..n]),
                    Err(LinkError::Truncated {
                        kind: kind::PUSH,
                        len: n
                    }),
                    "{a:?} cut at {n}"
                );
            }
        }
    }
}
