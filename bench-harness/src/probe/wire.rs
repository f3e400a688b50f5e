//! The probe's wire format, and the one way every probe loop reads.
//!
//! Why it exists: the server and the client must agree on it byte for byte, and it must
//! stay as long as the WebSocket frames it stands for; as pure functions it is tested
//! without sockets.
//!
//! Raw (`probe_wire_bytes(payload)` bytes per message, both ways):
//! `u32 BE body length | u64 BE message id | zero filler`. A message is as long as the
//! WebSocket frame a client sends for a Bannou request of `payload` bytes: 31-byte
//! header + payload + the frame header (2, 4 or 10 bytes) and the 4-byte mask.
//!
//! WebSocket (`probe --ws`): exactly the frames `rpc --mode echo` sends (masked, 31-byte
//! request header carrying the message id), matched from the echoes by that id.

use std::io;
use std::rc::Rc;

use monoio::buf::IoBufMut;
use monoio::io::AsyncReadRent;
use ringgate::proto::bannou::REQUEST_HEADER_LEN;
use ringgate::proto::frame::{apply_mask, encode_header, parse_header, OpCode, MAX_HEADER_LEN};

/// Bytes of the length prefix.
pub const LEN_PREFIX: usize = 4;
/// Bytes of the message id at the start of the body.
pub const ID_LEN: usize = 8;
/// Largest body accepted (the server closes beyond).
pub const MAX_BODY: usize = 16 << 20;
/// Read buffer of a probe connection.
pub(super) const READ_BUF: usize = 64 * 1024;

/// Bytes a WebSocket client frame adds to a message of `n` bytes: the 2-byte header,
/// the extended length (0, 2 or 8 bytes) and the 4-byte mask.
pub fn ws_client_framing(n: usize) -> usize {
    let ext = match n {
        0..=125 => 0,
        126..=65535 => 2,
        _ => 8,
    };
    2 + ext + 4
}

/// Bytes on the wire of one probe message standing for a Bannou request of `payload`
/// bytes (never less than the prefix and the id).
pub fn probe_wire_bytes(payload: usize) -> usize {
    let msg = payload + REQUEST_HEADER_LEN;
    (msg + ws_client_framing(msg)).max(LEN_PREFIX + ID_LEN)
}

/// Appends one message of `wire` bytes (as `probe_wire_bytes` gives) carrying `id`.
pub fn encode_message(out: &mut Vec<u8>, id: u64, wire: usize) {
    let body = wire - LEN_PREFIX;
    out.extend_from_slice(&(body as u32).to_be_bytes());
    out.extend_from_slice(&id.to_be_bytes());
    out.resize(out.len() + body - ID_LEN, 0);
}

/// A body length the server will not accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadLength(pub usize);

/// Length of the complete messages at the start of `buf` (a partial one may follow).
pub fn complete_prefix(buf: &[u8]) -> Result<usize, BadLength> {
    let mut at = 0;
    while buf.len() - at >= LEN_PREFIX {
        let body =
            u32::from_be_bytes(buf[at..at + LEN_PREFIX].try_into().expect("4 bytes")) as usize;
        if !(ID_LEN..=MAX_BODY).contains(&body) {
            return Err(BadLength(body));
        }
        if buf.len() - at < LEN_PREFIX + body {
            break;
        }
        at += LEN_PREFIX + body;
    }
    Ok(at)
}

/// Calls `f(id)` for every complete message at the start of `buf`; returns the bytes
/// they took.
pub fn each_message(buf: &[u8], mut f: impl FnMut(u64)) -> Result<usize, BadLength> {
    let end = complete_prefix(buf)?;
    let mut at = 0;
    while at < end {
        let body =
            u32::from_be_bytes(buf[at..at + LEN_PREFIX].try_into().expect("4 bytes")) as usize;
        let id = u64::from_be_bytes(
            buf[at + LEN_PREFIX..at + LEN_PREFIX + ID_LEN]
                .try_into()
                .expect("8 bytes"),
        );
        f(id);
        at += LEN_PREFIX + body;
    }
    Ok(end)
}

/// Bytes before the message id in a Bannou request header (flags, channel, sequence,
/// GUID): where `--ws` finds the id in an echoed frame.
const WS_ID_AT: usize = REQUEST_HEADER_LEN - ID_LEN;

/// Appends one masked client frame (binary, FIN) carrying a Bannou request header with
/// message id `id` and `payload`: what `rpc --mode echo` sends.
pub fn encode_ws_message(out: &mut Vec<u8>, id: u64, payload: &[u8], mask: [u8; 4]) {
    let mut head = [0u8; MAX_HEADER_LEN];
    let len = REQUEST_HEADER_LEN + payload.len();
    let n = encode_header(&mut head, true, OpCode::Binary, Some(mask), len);
    out.extend_from_slice(&head[..n]);
    let start = out.len();
    out.resize(start + WS_ID_AT, 0);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask, 0);
}

/// Calls `f(id)` for every complete server frame (unmasked, binary, FIN, at least a
/// request header long) at the start of `buf`; returns the bytes they took.
pub fn each_ws_message(buf: &[u8], mut f: impl FnMut(u64)) -> Result<usize, BadLength> {
    let mut at = 0;
    loop {
        let (h, hlen) = match parse_header(&buf[at..]) {
            Ok(Some(v)) => v,
            Ok(None) => return Ok(at),
            Err(_) => return Err(BadLength(0)),
        };
        let len = h.payload_len as usize;
        if h.opcode != OpCode::Binary || !h.fin || h.mask.is_some() || len < REQUEST_HEADER_LEN {
            return Err(BadLength(len));
        }
        if len > MAX_BODY {
            return Err(BadLength(len));
        }
        if buf.len() - at < hlen + len {
            return Ok(at);
        }
        let id_at = at + hlen + WS_ID_AT;
        f(u64::from_be_bytes(
            buf[id_at..id_at + ID_LEN].try_into().expect("8 bytes"),
        ));
        at += hlen + len;
    }
}

/// What a probe connection speaks: the raw length-prefixed probe messages, or (`--ws`)
/// WebSocket frames as `rpc --mode echo` sends them, to a plain WebSocket echo server.
#[derive(Debug, Clone)]
pub struct Codec {
    /// Raw: bytes per message on the wire.
    pub(super) wire: usize,
    /// WebSocket: the request payload (None: raw).
    ws: Option<Rc<[u8]>>,
}

impl Codec {
    pub fn raw(payload: usize) -> Codec {
        Codec {
            wire: probe_wire_bytes(payload),
            ws: None,
        }
    }

    pub fn ws(payload: usize) -> Codec {
        Codec {
            wire: probe_wire_bytes(payload),
            ws: Some(crate::scenario::rpc::payload(payload).into()),
        }
    }

    /// Appends message `id`; `mask_seed` advances per WebSocket frame.
    pub(super) fn encode(&self, out: &mut Vec<u8>, id: u64, mask_seed: &mut u32) {
        match &self.ws {
            None => encode_message(out, id, self.wire),
            Some(p) => {
                // xorshift32: a fresh mask per frame, as a client must use.
                let mut x = *mask_seed;
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                *mask_seed = x;
                encode_ws_message(out, id, p, x.to_le_bytes());
            }
        }
    }

    pub(super) fn each(&self, buf: &[u8], f: impl FnMut(u64)) -> Result<usize, BadLength> {
        match self.ws {
            None => each_message(buf, f),
            Some(_) => each_ws_message(buf, f),
        }
    }
}

/// Reads once into `buf`'s spare room (grown when short), after the bytes it already
/// holds; returns how many arrived (0 at EOF). Every probe loop reads this way.
pub(super) async fn read_more<R: AsyncReadRent>(
    rd: &mut R,
    buf: &mut Vec<u8>,
) -> io::Result<usize> {
    let len = buf.len();
    if buf.capacity() - len < READ_BUF / 4 {
        buf.reserve(READ_BUF);
    }
    let (res, slice) = rd.read(std::mem::take(buf).slice_mut(len..)).await;
    *buf = slice.into_inner();
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_size_matches_websocket_frames() {
        // 64-byte payload: 95-byte message, 2-byte header + 4-byte mask.
        assert_eq!(probe_wire_bytes(64), 64 + 31 + 6);
        // 94 + 31 = 125: still the short form.
        assert_eq!(probe_wire_bytes(94), 125 + 6);
        assert_eq!(probe_wire_bytes(95), 126 + 8);
        assert_eq!(probe_wire_bytes(65_535 - 31), 65_535 + 8);
        assert_eq!(probe_wire_bytes(65_536 - 31), 65_536 + 14);
        assert_eq!(probe_wire_bytes(0), 31 + 6);
    }

    #[test]
    fn messages_round_trip_in_pieces() {
        let wire = probe_wire_bytes(200);
        let mut out = Vec::new();
        for id in [7u64, 8, u64::MAX] {
            encode_message(&mut out, id, wire);
        }
        assert_eq!(out.len(), 3 * wire);
        let mut ids = Vec::new();
        assert_eq!(each_message(&out, |id| ids.push(id)), Ok(3 * wire));
        assert_eq!(ids, vec![7, 8, u64::MAX]);
        // A partial message is left for later, whatever the split point.
        for cut in [1, 3, 4, 11, 12, wire - 1, wire + 2] {
            let mut ids = Vec::new();
            let n = each_message(&out[..cut], |id| ids.push(id)).unwrap();
            assert_eq!(n, if cut >= wire { wire } else { 0 }, "cut {cut}");
            assert_eq!(ids.len(), n / wire);
        }
    }

    #[test]
    fn bad_lengths_are_refused() {
        assert_eq!(complete_prefix(&[0, 0, 0, 3, 1, 2, 3]), Err(BadLength(3)));
        let huge = ((MAX_BODY + 1) as u32).to_be_bytes();
        assert_eq!(complete_prefix(&huge), Err(BadLength(MAX_BODY + 1)));
        assert_eq!(complete_prefix(&[]), Ok(0));
    }

    #[test]
    fn ws_messages_are_the_frames_rpc_sends_and_echoes_are_matched_in_pieces() {
        use bytes::BytesMut;
        use ringgate::proto::bannou::RequestHeader;
        use ringgate::proto::ws::{encode_message_into, Decoder, Limits, Message, Role};
        let payload = crate::scenario::rpc::payload(64);
        let mut out = Vec::new();
        for (id, mask) in [(7u64, [1, 2, 3, 4]), (u64::MAX, [9, 8, 7, 6])] {
            encode_ws_message(&mut out, id, &payload, mask);
        }
        assert_eq!(out.len(), 2 * probe_wire_bytes(64));
        // A server reads them as two masked Bannou requests carrying the ids.
        let mut buf = BytesMut::from(&out[..]);
        let mut dec = Decoder::new(Role::Server, Limits::default());
        let mut got = Vec::new();
        while let Some(m) = dec.decode(&mut buf).unwrap() {
            let Message::Binary(b) = m else {
                panic!("{m:?}")
            };
            assert_eq!(&b[REQUEST_HEADER_LEN..], &payload[..]);
            got.push(RequestHeader::decode(&b).unwrap().message_id);
        }
        assert_eq!(got, vec![7, u64::MAX]);
        // Echoes (unmasked, as ws-echo sends them) are matched whatever the split point.
        let mut echo = BytesMut::new();
        for id in [7u64, 8] {
            let mut msg = RequestHeader {
                flags: 0,
                channel: 0,
                sequence: 0,
                guid: [0; 16],
                message_id: id,
            }
            .encode()
            .to_vec();
            msg.extend_from_slice(&payload);
            encode_message_into(&mut echo, OpCode::Binary, &msg, None);
        }
        let one = echo.len() / 2;
        let mut ids = Vec::new();
        assert_eq!(each_ws_message(&echo, |id| ids.push(id)), Ok(echo.len()));
        assert_eq!(ids, vec![7, 8]);
        for cut in [1, 2, 20, one - 1, one, one + 3] {
            let mut ids = Vec::new();
            let n = each_ws_message(&echo[..cut], |id| ids.push(id)).unwrap();
            assert_eq!(n, if cut >= one { one } else { 0 }, "cut {cut}");
            assert_eq!(ids.len(), n / one);
        }
        // A masked or text frame is not an echo of ours.
        assert!(each_ws_message(&out, |_| {}).is_err());
        let mut text = BytesMut::new();
        encode_message_into(&mut text, OpCode::Text, &[b'x'; 40], None);
        assert!(each_ws_message(&text, |_| {}).is_err());
    }
}
