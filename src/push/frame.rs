//! Push frames, encoded once per push and shared by every outbox they enter.
//!
//! Why: a topic message reaches thousands of clients. Encoding its WebSocket frame
//! header, its 31-byte Bannou push header and its payload into one `Bytes` once means
//! each subscriber costs a reference count, not a serialization or a copy (the outbox
//! queues such a frame as an entry of its own).

use bytes::{BufMut, Bytes, BytesMut};

use crate::proto::bannou::{flags, RequestHeader, ResponseHeader};
use crate::proto::frame::{encode_header, OpCode};

/// A server push (flags 0x10, plus 0x01 when `binary`), channel 0, sequence 0, zero
/// GUID, carrying `payload` verbatim, as one complete WebSocket binary frame.
pub fn push_frame(message_id: u64, binary: bool, payload: &[u8]) -> Bytes {
    let mut head = RequestHeader::push(message_id);
    if binary {
        head.flags |= flags::BINARY;
    }
    message_frame(&head.encode(), payload)
}

/// One binary WebSocket frame carrying `head ++ payload`.
pub fn message_frame(head: &[u8], payload: &[u8]) -> Bytes {
    let len = head.len() + payload.len();
    let mut ws = [0u8; 14];
    let n = encode_header(&mut ws, true, OpCode::Binary, None, len);
    let mut out = BytesMut::with_capacity(n + len);
    out.put_slice(&ws[..n]);
    out.put_slice(head);
    out.put_slice(payload);
    out.freeze()
}

/// A response frame (16-byte header, then `payload`).
pub fn response_frame(head: &ResponseHeader, payload: &[u8]) -> Bytes {
    message_frame(&head.encode(), payload)
}

/// The conflation key of `key` within `topic`: the same key in two topics are two
/// keys (the topic's length comes first, so no pair of strings runs into another).
pub fn conflation_key(topic: &str, key: &str) -> Bytes {
    let mut k = BytesMut::with_capacity(2 + topic.len() + key.len());
    k.put_u16(topic.len() as u16);
    k.put_slice(topic.as_bytes());
    k.put_slice(key.as_bytes());
    k.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::bannou::REQUEST_HEADER_LEN;

    #[test]
    fn a_push_frame_is_one_websocket_frame_with_the_push_header_and_the_payload() {
        let f = push_frame(7, true, b"abc");
        assert_eq!(f[0], 0x82, "FIN + binary");
        assert_eq!(
            f[1] as usize,
            REQUEST_HEADER_LEN + 3,
            "unmasked, short length"
        );
        let h = RequestHeader::decode(&f[2..]).unwrap();
        assert_eq!(h.flags, flags::EVENT | flags::BINARY);
        assert_eq!(h.message_id, 7);
        assert_eq!(h.guid, [0; 16]);
        assert_eq!(&f[2 + REQUEST_HEADER_LEN..], b"abc");
    }

    #[test]
    fn the_same_key_in_two_topics_is_two_conflation_keys() {
        assert_ne!(conflation_key("a", "b\0c"), conflation_key("a\0b", "c"));
        assert_ne!(conflation_key("npc.1", "k"), conflation_key("npc.2", "k"));
    }
}
