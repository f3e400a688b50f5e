//! cargo-fuzz target for the backend link codec (`ringgate_proto::link`): arbitrary bytes
//! must never panic `ToBackend::decode` or `FromBackend::decode`; whatever either accepts
//! re-encodes to exactly the bytes it came from (`encoded_len` included), and an accepted
//! action keeps the promises the gateway relies on (no reply to call 0, SEND flags 0 or
//! 0x01, a sendable close code, a short UTF-8 reason, payloads sliced from the input).
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use ringgate_proto::frame::is_valid_close_code;
use ringgate_proto::link::{FromBackend, ToBackend, MAX_CLOSE_REASON};

fuzz_target!(|data: &[u8]| {
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
            assert_eq!(a.encoded_len(), data.len(), "{a:?}");
            let mut out = Vec::with_capacity(data.len());
            a.encode(&mut out);
            assert_eq!(out, data, "{a:?}");
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
                    assert!(*code == 1000 || (3000..=4999).contains(code));
                    assert!(is_valid_close_code(*code));
                    assert!(reason.len() <= MAX_CLOSE_REASON);
                    assert!(std::str::from_utf8(reason).is_ok());
                    reason
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
});
