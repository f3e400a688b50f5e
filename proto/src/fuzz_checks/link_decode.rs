//! The fuzz check of the backend link codec (`ringgate_proto::link`): arbitrary bytes
//! must never panic `ToBackend::decode` or `FromBackend::decode`; whatever either accepts
//! re-encodes to exactly the bytes it came from (`encoded_len` included), and an accepted
//! action keeps the promises the gateway relies on (no reply to call 0, SEND flags 0 or
//! 0x01, a sendable close code, a short UTF-8 reason, payloads sliced from the input;
//! for the push plane: known address kinds with non-empty ids, topics of 1 to 255
//! bytes, short keys and shortcut names, target paths, trimmed non-empty role names,
//! client calls with a call id to one session). ROLES is the one action whose bytes
//! are not canonical (names are trimmed, empty ones dropped): it re-encodes to bytes
//! that decode to the same action.
use crate::frame::is_valid_close_code;
use crate::link::{
    Addr, FromBackend, ToBackend, MAX_CLOSE_REASON, MAX_KEY, MAX_SHORTCUT_NAME, MAX_TOPIC,
};
use bytes::Bytes;

/// What the decoder promises of an address.
fn check_addr(a: &Addr) {
    match a {
        Addr::Link(_) => {}
        Addr::Session(id) | Addr::Account(id) => assert!(!id.is_empty()),
    }
}

fn check_topic(t: &str) {
    assert!((1..=MAX_TOPIC).contains(&t.len()));
}

fn check_kick_or_close(code: u16, reason: &[u8]) {
    assert!(code == 1000 || (3000..=4999).contains(&code));
    assert!(is_valid_close_code(code));
    assert!(reason.len() <= MAX_CLOSE_REASON);
    assert!(std::str::from_utf8(reason).is_ok());
}

/// The check the fuzzer runs on every input (and `cargo test` on the committed corpus).
pub fn check(data: &[u8]) {
    match ToBackend::decode(data) {
        Ok(m) => {
            assert_eq!(m.encoded_len(), data.len(), "{m:?}");
            assert_eq!(m.check(), Ok(()));
            let mut out = Vec::with_capacity(data.len());
            m.encode(&mut out).expect("a decoded event encodes");
            assert_eq!(out, data, "{m:?}");
        }
        Err(e) => drop(e.to_string()),
    }

    let msg = Bytes::copy_from_slice(data);
    match FromBackend::decode(&msg) {
        Ok(a) => {
            let mut out = Vec::with_capacity(data.len());
            a.encode(&mut out);
            assert_eq!(out.len(), a.encoded_len(), "{a:?}");
            if let FromBackend::Roles { .. } = a {
                let again = FromBackend::decode(&Bytes::from(out)).expect("re-encoded ROLES");
                assert_eq!(again, a);
            } else {
                assert_eq!(a.encoded_len(), data.len(), "{a:?}");
                assert_eq!(out, data, "{a:?}");
            }
            let empty = Bytes::new();
            let tail = match &a {
                FromBackend::Reply { call, payload, .. } => {
                    assert_ne!(*call, 0);
                    payload
                }
                FromBackend::Send { flags, payload, .. } => {
                    assert!(*flags <= 1);
                    payload
                }
                FromBackend::Close { code, reason, .. } => {
                    check_kick_or_close(*code, reason);
                    reason
                }
                FromBackend::Publish {
                    flags,
                    topic,
                    key,
                    payload,
                } => {
                    assert!(*flags <= 1);
                    check_topic(topic);
                    if let Some(k) = key {
                        assert!((1..=MAX_KEY).contains(&k.len()));
                    }
                    payload
                }
                FromBackend::Subscribe { addr, topic }
                | FromBackend::Unsubscribe { addr, topic } => {
                    check_addr(addr);
                    check_topic(topic);
                    &empty
                }
                FromBackend::Push {
                    addr,
                    flags,
                    payload,
                } => {
                    check_addr(addr);
                    assert!(*flags <= 1);
                    payload
                }
                FromBackend::Broadcast { flags, payload } => {
                    assert!(*flags <= 1);
                    payload
                }
                FromBackend::Roles { addr, add, remove } => {
                    check_addr(addr);
                    for n in add.iter().chain(remove) {
                        assert!(!n.is_empty() && !n.contains(',') && n.trim() == n);
                    }
                    &empty
                }
                FromBackend::Kick {
                    addr, code, reason, ..
                } => {
                    check_addr(addr);
                    check_kick_or_close(*code, reason);
                    reason
                }
                FromBackend::Shortcut {
                    addr,
                    name,
                    target,
                    payload,
                    ..
                } => {
                    check_addr(addr);
                    assert!((1..=MAX_SHORTCUT_NAME).contains(&name.len()));
                    assert!(target.starts_with('/'));
                    payload
                }
                FromBackend::ShortcutRevoke { addr, name } => {
                    check_addr(addr);
                    assert!((1..=MAX_SHORTCUT_NAME).contains(&name.len()));
                    &empty
                }
                FromBackend::CallClient {
                    addr,
                    call,
                    flags,
                    payload,
                    ..
                } => {
                    check_addr(addr);
                    assert!(!matches!(addr, Addr::Account(_)));
                    assert_ne!(*call, 0);
                    assert!(*flags <= 1);
                    payload
                }
            };
            // No copy: the variable part is the input's own tail (an empty one is
            // `Bytes::new()`, which points nowhere in particular).
            if !tail.is_empty() {
                assert_eq!(tail.as_ptr(), msg[msg.len() - tail.len()..].as_ptr());
            }
        }
        Err(e) => drop(e.to_string()),
    }
}
