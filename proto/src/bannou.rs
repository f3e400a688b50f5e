//! The Bannou Connect v1 binary header codec (big-endian), byte for byte as Bannou's
//! client SDKs write and read it.
//!
//! Why hand-written: the headers are fixed 31- and 16-byte layouts; a parser crate would
//! add nothing but a copy. Decoding only reads the header; the payload behind it is never
//! parsed, so it can travel to the backend as a slice of the client's frame.
//!
//! ```text
//! request / push (31): flags u8 | channel u16 | sequence u32 | guid [16] | message_id u64 | payload
//! response      (16): flags u8 | channel u16 | sequence u32 | message_id u64 | code u8 | payload
//! ```

/// Length of a request / push header.
pub const REQUEST_HEADER_LEN: usize = 31;
/// Length of a response header.
pub const RESPONSE_HEADER_LEN: usize = 16;

/// Header flag bits.
pub mod flags {
    /// The payload is binary rather than JSON.
    pub const BINARY: u8 = 0x01;
    /// Reserved.
    pub const RESERVED_02: u8 = 0x02;
    /// The payload is compressed (server → client only).
    pub const COMPRESSED: u8 = 0x04;
    /// Reserved.
    pub const RESERVED_08: u8 = 0x08;
    /// An event: no response is expected.
    pub const EVENT: u8 = 0x10;
    /// Addressed to a peer client rather than a service.
    pub const CLIENT: u8 = 0x20;
    /// A response.
    pub const RESPONSE: u8 = 0x40;
    /// A meta request; the channel carries the meta kind.
    pub const META: u8 = 0x80;
}

/// Response codes (the `code` byte of a response).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ResponseCode {
    Ok = 0,
    RequestError = 10,
    RequestTooLarge = 11,
    TooManyRequests = 12,
    InvalidChannel = 13,
    TextProtocolNotSupported = 14,
    Unauthorized = 20,
    ServiceNotFound = 30,
    ClientNotFound = 31,
    MessageNotFound = 32,
    BroadcastNotAllowed = 40,
    BadRequest = 50,
    NotFound = 51,
    BackendUnauthorized = 52,
    Conflict = 53,
    InternalError = 60,
    ShortcutExpired = 70,
    ShortcutTargetNotFound = 71,
    ShortcutRevoked = 72,
}

impl ResponseCode {
    /// Every code, in numeric order (for metrics tables).
    pub const ALL: [ResponseCode; 19] = [
        ResponseCode::Ok,
        ResponseCode::RequestError,
        ResponseCode::RequestTooLarge,
        ResponseCode::TooManyRequests,
        ResponseCode::InvalidChannel,
        ResponseCode::TextProtocolNotSupported,
        ResponseCode::Unauthorized,
        ResponseCode::ServiceNotFound,
        ResponseCode::ClientNotFound,
        ResponseCode::MessageNotFound,
        ResponseCode::BroadcastNotAllowed,
        ResponseCode::BadRequest,
        ResponseCode::NotFound,
        ResponseCode::BackendUnauthorized,
        ResponseCode::Conflict,
        ResponseCode::InternalError,
        ResponseCode::ShortcutExpired,
        ResponseCode::ShortcutTargetNotFound,
        ResponseCode::ShortcutRevoked,
    ];

    /// The wire value.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// The code for a wire value, if it is one.
    pub fn from_u8(v: u8) -> Option<ResponseCode> {
        Self::ALL.iter().copied().find(|c| c.as_u8() == v)
    }

    /// Position in [`ResponseCode::ALL`] (a dense index for counters).
    pub fn index(self) -> usize {
        Self::ALL
            .iter()
            .position(|c| *c == self)
            .expect("every code is in ALL")
    }

    /// Backend HTTP status → code: 2xx→0, 400→50, 401/403→52, 404→51, 409→53, else→60.
    pub fn from_http_status(status: u16) -> ResponseCode {
        match status {
            200..=299 => ResponseCode::Ok,
            400 => ResponseCode::BadRequest,
            401 | 403 => ResponseCode::BackendUnauthorized,
            404 => ResponseCode::NotFound,
            409 => ResponseCode::Conflict,
            _ => ResponseCode::InternalError,
        }
    }
}

/// Why a client message is not a well-formed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("message of {0} bytes is shorter than the 31-byte request header")]
    TooShort(usize),
    #[error("flags {0:#04x} are not valid on a client request")]
    BadFlags(u8),
}

/// A request (client → server) or push (server → client) header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeader {
    pub flags: u8,
    pub channel: u16,
    pub sequence: u32,
    /// In RFC 4122 order: the canonical string's hex digits, in order.
    pub guid: [u8; 16],
    pub message_id: u64,
}

impl RequestHeader {
    /// Reads the header of a message; the payload is `&msg[REQUEST_HEADER_LEN..]`.
    pub fn decode(msg: &[u8]) -> Result<RequestHeader, HeaderError> {
        if msg.len() < REQUEST_HEADER_LEN {
            return Err(HeaderError::TooShort(msg.len()));
        }
        let mut guid = [0u8; 16];
        guid.copy_from_slice(&msg[7..23]);
        Ok(RequestHeader {
            flags: msg[0],
            channel: u16::from_be_bytes([msg[1], msg[2]]),
            sequence: u32::from_be_bytes([msg[3], msg[4], msg[5], msg[6]]),
            guid,
            message_id: u64::from_be_bytes(msg[23..31].try_into().expect("8 bytes")),
        })
    }

    /// Whether a client may send these flags: no response bit, no compression, no
    /// reserved bits.
    pub fn check_client_flags(&self) -> Result<(), HeaderError> {
        const NOT_FROM_CLIENT: u8 =
            flags::RESPONSE | flags::COMPRESSED | flags::RESERVED_02 | flags::RESERVED_08;
        if self.flags & NOT_FROM_CLIENT != 0 {
            return Err(HeaderError::BadFlags(self.flags));
        }
        Ok(())
    }

    /// The header's 31 bytes.
    pub fn encode(&self) -> [u8; REQUEST_HEADER_LEN] {
        let mut out = [0u8; REQUEST_HEADER_LEN];
        out[0] = self.flags;
        out[1..3].copy_from_slice(&self.channel.to_be_bytes());
        out[3..7].copy_from_slice(&self.sequence.to_be_bytes());
        out[7..23].copy_from_slice(&self.guid);
        out[23..31].copy_from_slice(&self.message_id.to_be_bytes());
        out
    }

    /// A server push: flags 0x10, channel 0, sequence 0, all-zero GUID.
    pub fn push(message_id: u64) -> RequestHeader {
        RequestHeader {
            flags: flags::EVENT,
            channel: 0,
            sequence: 0,
            guid: [0; 16],
            message_id,
        }
    }

    /// Whether this header is a server push (as a client sees it).
    pub fn is_push(&self) -> bool {
        self.flags & flags::EVENT != 0 && self.flags & flags::RESPONSE == 0
    }
}

/// A response header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHeader {
    pub flags: u8,
    pub channel: u16,
    pub sequence: u32,
    pub message_id: u64,
    pub code: u8,
}

impl ResponseHeader {
    /// The response to `req`: its flags with 0x40 set, its channel, sequence and id.
    pub fn answering(req: &RequestHeader, code: ResponseCode) -> ResponseHeader {
        ResponseHeader {
            flags: req.flags | flags::RESPONSE,
            channel: req.channel,
            sequence: req.sequence,
            message_id: req.message_id,
            code: code.as_u8(),
        }
    }

    /// The header's 16 bytes.
    pub fn encode(&self) -> [u8; RESPONSE_HEADER_LEN] {
        let mut out = [0u8; RESPONSE_HEADER_LEN];
        out[0] = self.flags;
        out[1..3].copy_from_slice(&self.channel.to_be_bytes());
        out[3..7].copy_from_slice(&self.sequence.to_be_bytes());
        out[7..15].copy_from_slice(&self.message_id.to_be_bytes());
        out[15] = self.code;
        out
    }

    /// Reads a response header; the payload is `&msg[RESPONSE_HEADER_LEN..]`.
    pub fn decode(msg: &[u8]) -> Result<ResponseHeader, HeaderError> {
        if msg.len() < RESPONSE_HEADER_LEN {
            return Err(HeaderError::TooShort(msg.len()));
        }
        Ok(ResponseHeader {
            flags: msg[0],
            channel: u16::from_be_bytes([msg[1], msg[2]]),
            sequence: u32::from_be_bytes([msg[3], msg[4], msg[5], msg[6]]),
            message_id: u64::from_be_bytes(msg[7..15].try_into().expect("8 bytes")),
            code: msg[15],
        })
    }
}

/// A message as a client receives it: responses have the 0x40 flag, everything else is
/// a 31-byte push/request header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerMessage<'a> {
    Response(ResponseHeader, &'a [u8]),
    Push(RequestHeader, &'a [u8]),
}

impl<'a> ServerMessage<'a> {
    /// Splits a server → client binary message into header and payload.
    pub fn decode(msg: &'a [u8]) -> Result<ServerMessage<'a>, HeaderError> {
        match msg.first() {
            Some(f) if f & flags::RESPONSE != 0 => Ok(ServerMessage::Response(
                ResponseHeader::decode(msg)?,
                &msg[RESPONSE_HEADER_LEN..],
            )),
            _ => Ok(ServerMessage::Push(
                RequestHeader::decode(msg)?,
                &msg[REQUEST_HEADER_LEN..],
            )),
        }
    }
}

/// Meta request kinds (flag 0x80; the channel carries the kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaKind {
    Info,
    RequestSchema,
    ResponseSchema,
    Schema,
}

impl MetaKind {
    /// The kind a channel value carries, if it is one (0–3).
    pub fn from_channel(channel: u16) -> Option<MetaKind> {
        match channel {
            0 => Some(MetaKind::Info),
            1 => Some(MetaKind::RequestSchema),
            2 => Some(MetaKind::ResponseSchema),
            3 => Some(MetaKind::Schema),
            _ => None,
        }
    }

    /// The path suffix the backend serves it on: `GET {path}/meta/{suffix}`.
    pub fn path_suffix(self) -> &'static str {
        match self {
            MetaKind::Info => "info",
            MetaKind::RequestSchema => "request-schema",
            MetaKind::ResponseSchema => "response-schema",
            MetaKind::Schema => "schema",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_request() -> RequestHeader {
        RequestHeader {
            flags: flags::BINARY | flags::EVENT,
            channel: 0x0102,
            sequence: 0x0304_0506,
            guid: *b"0123456789abcdef",
            message_id: 0x1122_3344_5566_7788,
        }
    }

    #[test]
    fn request_header_is_big_endian_in_field_order() {
        let bytes = sample_request().encode();
        assert_eq!(bytes[0], 0x11);
        assert_eq!(&bytes[1..3], &[0x01, 0x02]);
        assert_eq!(&bytes[3..7], &[0x03, 0x04, 0x05, 0x06]);
        assert_eq!(&bytes[7..23], b"0123456789abcdef");
        assert_eq!(
            &bytes[23..31],
            &[0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]
        );
    }

    #[test]
    fn request_header_round_trips() {
        let h = sample_request();
        let mut msg = h.encode().to_vec();
        msg.extend_from_slice(b"{\"x\":1}");
        assert_eq!(RequestHeader::decode(&msg).unwrap(), h);
    }

    #[test]
    fn short_message_is_rejected_with_its_length() {
        assert_eq!(
            RequestHeader::decode(&[0u8; 30]),
            Err(HeaderError::TooShort(30))
        );
    }

    #[test]
    fn response_header_echoes_request_and_sets_response_flag() {
        let req = sample_request();
        let r = ResponseHeader::answering(&req, ResponseCode::NotFound);
        let bytes = r.encode();
        assert_eq!(bytes[0], req.flags | 0x40);
        assert_eq!(&bytes[1..3], &[0x01, 0x02]);
        assert_eq!(&bytes[3..7], &[0x03, 0x04, 0x05, 0x06]);
        assert_eq!(
            &bytes[7..15],
            &[0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]
        );
        assert_eq!(bytes[15], 51);
        assert_eq!(ResponseHeader::decode(&bytes).unwrap(), r);
    }

    #[test]
    fn client_may_not_send_response_compressed_or_reserved_flags() {
        for bad in [0x40u8, 0x04, 0x02, 0x08] {
            let h = RequestHeader {
                flags: bad,
                ..sample_request()
            };
            assert!(h.check_client_flags().is_err(), "{bad:#x}");
        }
        for ok in [0x00u8, 0x01, 0x10, 0x20, 0x80, 0x91] {
            let h = RequestHeader {
                flags: ok,
                ..sample_request()
            };
            assert!(h.check_client_flags().is_ok(), "{ok:#x}");
        }
    }

    #[test]
    fn http_status_maps_to_codes() {
        let cases = [
            (200, 0),
            (204, 0),
            (299, 0),
            (400, 50),
            (401, 52),
            (403, 52),
            (404, 51),
            (409, 53),
            (500, 60),
            (503, 60),
            (302, 60),
            (418, 60),
        ];
        for (status, code) in cases {
            assert_eq!(
                ResponseCode::from_http_status(status).as_u8(),
                code,
                "{status}"
            );
        }
    }

    #[test]
    fn every_code_round_trips_through_its_wire_value() {
        for c in ResponseCode::ALL {
            assert_eq!(ResponseCode::from_u8(c.as_u8()), Some(c));
            assert_eq!(ResponseCode::ALL[c.index()], c);
        }
        assert_eq!(ResponseCode::from_u8(1), None);
    }

    #[test]
    fn push_header_has_event_flag_zero_channel_and_zero_guid() {
        let p = RequestHeader::push(42).encode();
        assert_eq!(p[0], 0x10);
        assert_eq!(&p[1..23], &[0u8; 22]);
        assert_eq!(u64::from_be_bytes(p[23..31].try_into().unwrap()), 42);
    }

    #[test]
    fn server_message_splits_responses_from_pushes() {
        let req = sample_request();
        let mut resp = ResponseHeader::answering(&req, ResponseCode::Ok)
            .encode()
            .to_vec();
        resp.extend_from_slice(b"ok");
        match ServerMessage::decode(&resp).unwrap() {
            ServerMessage::Response(h, p) => {
                assert_eq!(h.message_id, req.message_id);
                assert_eq!(p, b"ok");
            }
            other => panic!("{other:?}"),
        }
        let mut push = RequestHeader::push(7).encode().to_vec();
        push.extend_from_slice(b"{}");
        match ServerMessage::decode(&push).unwrap() {
            ServerMessage::Push(h, p) => {
                assert!(h.is_push());
                assert_eq!(p, b"{}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn meta_kinds_map_channels_zero_to_three() {
        assert_eq!(MetaKind::from_channel(0).unwrap().path_suffix(), "info");
        assert_eq!(
            MetaKind::from_channel(1).unwrap().path_suffix(),
            "request-schema"
        );
        assert_eq!(
            MetaKind::from_channel(2).unwrap().path_suffix(),
            "response-schema"
        );
        assert_eq!(MetaKind::from_channel(3).unwrap().path_suffix(), "schema");
        assert_eq!(MetaKind::from_channel(4), None);
    }
}
