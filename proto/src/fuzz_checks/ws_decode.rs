//! The fuzz check of the WebSocket decoder: arbitrary bytes must never
//! panic `Decoder::decode`, and every error must map to 1002/1007/1009.
use crate::ws::{Decoder, Limits, Message, Role};
use bytes::BytesMut;

/// The check the fuzzer runs on every input (and `cargo test` on the committed corpus).
pub fn check(data: &[u8]) {
    // First byte picks role, limit and chunk size so the fuzzer can steer them.
    let Some((&ctl, input)) = data.split_first() else {
        return;
    };
    let role = if ctl & 1 == 0 {
        Role::Server
    } else {
        Role::Client
    };
    let max = [0usize, 125, 4096, 1 << 20][usize::from((ctl >> 1) & 3)];
    let chunk = 1 + usize::from(ctl >> 3) * 8; // 1..=249 bytes per read
    let mut dec = Decoder::new(
        role,
        Limits {
            max_message_bytes: max,
        },
    );
    let mut buf = BytesMut::new();
    for piece in input.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(Message::Text(t))) => {
                    assert!(t.len() <= max);
                    assert!(std::str::from_utf8(&t).is_ok());
                }
                Ok(Some(Message::Binary(b))) => assert!(b.len() <= max),
                Ok(Some(Message::Ping(p) | Message::Pong(p))) => assert!(p.len() <= 125),
                Ok(Some(Message::Close(c))) => {
                    if let Some(c) = c {
                        assert!(crate::frame::is_valid_close_code(c.code));
                        assert!(std::str::from_utf8(&c.reason).is_ok());
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    assert!(matches!(e.close_code(), 1002 | 1007 | 1009));
                    return; // connection would be failed here
                }
            }
        }
    }
}
