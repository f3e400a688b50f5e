//! The fuzz check of the Bannou Connect v1 header codec (`ringgate_proto::bannou`):
//! arbitrary bytes must never panic the request, response or server-message decoders;
//! a message is refused exactly when it is shorter than its header (naming its length);
//! whatever decodes re-encodes to the same header bytes, with the payload the rest of
//! the input; and the flag and code helpers keep their promises (a client may not send
//! 0x40, 0x04, 0x02 or 0x08; a push is 0x10 without 0x40; a response echoes its
//! request with 0x40 set; codes round-trip through their wire values).
use crate::bannou::{
    flags, HeaderError, MetaKind, RequestHeader, ResponseCode, ResponseHeader, ServerMessage,
    REQUEST_HEADER_LEN, RESPONSE_HEADER_LEN,
};

/// The flag bits a client request must not carry.
const NOT_FROM_CLIENT: u8 =
    flags::RESPONSE | flags::COMPRESSED | flags::RESERVED_02 | flags::RESERVED_08;

fn check_request(data: &[u8]) -> Option<RequestHeader> {
    match RequestHeader::decode(data) {
        Ok(h) => {
            assert!(data.len() >= REQUEST_HEADER_LEN);
            assert_eq!(&h.encode()[..], &data[..REQUEST_HEADER_LEN]);
            assert_eq!(h.flags, data[0]);
            match h.check_client_flags() {
                Ok(()) => assert_eq!(h.flags & NOT_FROM_CLIENT, 0),
                Err(e) => {
                    assert_ne!(h.flags & NOT_FROM_CLIENT, 0);
                    assert_eq!(e, HeaderError::BadFlags(h.flags));
                    drop(e.to_string());
                }
            }
            assert_eq!(
                h.is_push(),
                h.flags & flags::EVENT != 0 && h.flags & flags::RESPONSE == 0
            );
            // A meta request's channel names its kind only for 0 to 3.
            match MetaKind::from_channel(h.channel) {
                Some(k) => {
                    assert!(h.channel < 4);
                    assert!(!k.path_suffix().is_empty());
                }
                None => assert!(h.channel >= 4),
            }
            Some(h)
        }
        Err(e) => {
            assert!(data.len() < REQUEST_HEADER_LEN);
            assert_eq!(e, HeaderError::TooShort(data.len()));
            drop(e.to_string());
            None
        }
    }
}

fn check_response(data: &[u8]) -> Option<ResponseHeader> {
    match ResponseHeader::decode(data) {
        Ok(h) => {
            assert!(data.len() >= RESPONSE_HEADER_LEN);
            assert_eq!(&h.encode()[..], &data[..RESPONSE_HEADER_LEN]);
            assert_eq!(h.code, data[RESPONSE_HEADER_LEN - 1]);
            if let Some(c) = ResponseCode::from_u8(h.code) {
                assert_eq!(c.as_u8(), h.code);
                assert_eq!(ResponseCode::ALL[c.index()], c);
            } else {
                assert!(ResponseCode::ALL.iter().all(|c| c.as_u8() != h.code));
            }
            Some(h)
        }
        Err(e) => {
            assert!(data.len() < RESPONSE_HEADER_LEN);
            assert_eq!(e, HeaderError::TooShort(data.len()));
            None
        }
    }
}

/// The check the fuzzer runs on every input (and `cargo test` on the committed corpus).
pub fn check(data: &[u8]) {
    let req = check_request(data);
    let resp = check_response(data);

    // A server → client message: 0x40 in the first byte means a 16-byte response
    // header, anything else a 31-byte push header; the payload is the input's tail.
    match ServerMessage::decode(data) {
        Ok(ServerMessage::Response(h, payload)) => {
            assert_ne!(data[0] & flags::RESPONSE, 0);
            assert_eq!(Some(h), resp);
            assert_eq!(payload.as_ptr(), data[RESPONSE_HEADER_LEN..].as_ptr());
            assert_eq!(payload.len(), data.len() - RESPONSE_HEADER_LEN);
        }
        Ok(ServerMessage::Push(h, payload)) => {
            assert_eq!(data[0] & flags::RESPONSE, 0);
            assert_eq!(Some(h), req);
            assert_eq!(payload.as_ptr(), data[REQUEST_HEADER_LEN..].as_ptr());
            assert_eq!(payload.len(), data.len() - REQUEST_HEADER_LEN);
        }
        Err(e) => {
            let response = data.first().is_some_and(|f| f & flags::RESPONSE != 0);
            let need = if response {
                RESPONSE_HEADER_LEN
            } else {
                REQUEST_HEADER_LEN
            };
            assert!(data.len() < need);
            assert_eq!(e, HeaderError::TooShort(data.len()));
        }
    }

    // The answer to a decoded request: its flags with 0x40, its channel, sequence and
    // id; a client reads it back as that response.
    if let Some(req) = req {
        let code = ResponseCode::ALL[usize::from(data[data.len() - 1]) % ResponseCode::ALL.len()];
        let answer = ResponseHeader::answering(&req, code);
        assert_eq!(answer.flags, req.flags | flags::RESPONSE);
        assert_eq!(
            (answer.channel, answer.sequence, answer.message_id),
            (req.channel, req.sequence, req.message_id)
        );
        assert_eq!(ResponseCode::from_u8(answer.code), Some(code));
        let mut bytes = answer.encode().to_vec();
        bytes.extend_from_slice(&data[REQUEST_HEADER_LEN..]);
        match ServerMessage::decode(&bytes) {
            Ok(ServerMessage::Response(h, payload)) => {
                assert_eq!(h, answer);
                assert_eq!(payload, &data[REQUEST_HEADER_LEN..]);
            }
            other => panic!("an answer read back as {other:?}"),
        }

        // A push with the request's id: flags 0x10 only, zero channel, sequence and
        // GUID; a client may send those flags, and reads it back as a push.
        let push = RequestHeader::push(req.message_id);
        assert!(push.is_push());
        assert_eq!(push.check_client_flags(), Ok(()));
        let bytes = push.encode();
        assert_eq!(bytes[0], flags::EVENT);
        assert!(bytes[1..23].iter().all(|&b| b == 0));
        match ServerMessage::decode(&bytes) {
            Ok(ServerMessage::Push(h, payload)) => {
                assert_eq!(h, push);
                assert!(payload.is_empty());
            }
            other => panic!("a push read back as {other:?}"),
        }
    }

    // Any HTTP status maps to a known code, 2xx (and only 2xx) to 0.
    if data.len() >= 2 {
        let status = u16::from_be_bytes([data[0], data[1]]);
        let code = ResponseCode::from_http_status(status);
        assert!(ResponseCode::ALL.contains(&code));
        assert_eq!(code == ResponseCode::Ok, (200..=299).contains(&status));
    }
}
