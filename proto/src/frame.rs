//! RFC 6455 frame layer: opcodes, header parsing/encoding, payload masking and
//! close-code helpers.
//!
//! Why this exists: the gateway's read path keeps every connection's bytes in
//! one `BytesMut` read buffer and wants to hand payloads to the application as
//! `Bytes` slices of that very allocation. That needs (a) a header parser that
//! works on a borrowed `&[u8]` and says "need more bytes" instead of blocking,
//! and (b) an unmask routine that XORs the payload in place, word at a time.
//!
//! Why it is hand-written: no crate we looked at does in-place, zero-copy
//! unmasking over a shared `BytesMut` read buffer. `tungstenite` is built
//! around blocking `Read`/`Write` and copies payloads into its own buffers;
//! the async wrappers inherit that. The frame format is small and fully
//! specified, so owning ~300 lines is cheaper than fighting an abstraction.
//!
//! Everything here is sans-IO and allocation-free except the explicit
//! `Bytes`/`BytesMut` builders. Message-level rules (masking direction,
//! fragmentation, limits, UTF-8) live in `super::ws`.

use bytes::{BufMut, Bytes, BytesMut};

/// Largest possible frame header: 2 fixed bytes + 8 extended length + 4 mask.
pub const MAX_HEADER_LEN: usize = 14;
/// RFC 6455 §5.5: control frame payloads are at most 125 bytes.
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// 1000: normal closure.
pub const CLOSE_NORMAL: u16 = 1000;
/// 1001: endpoint going away (server shutdown, page navigated away).
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// 1002: protocol error.
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;
/// 1003: unsupported data type.
pub const CLOSE_UNSUPPORTED: u16 = 1003;
/// 1007: invalid frame payload data (e.g. non-UTF-8 text).
pub const CLOSE_INVALID_PAYLOAD: u16 = 1007;
/// 1008: policy violation.
pub const CLOSE_POLICY: u16 = 1008;
/// 1009: message too big.
pub const CLOSE_TOO_BIG: u16 = 1009;
/// 1011: internal server error.
pub const CLOSE_INTERNAL: u16 = 1011;

/// Errors detectable from the frame header bytes alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Opcode 0x3-0x7 or 0xB-0xF (reserved, no extension negotiated).
    #[error("unknown opcode {0:#x}")]
    BadOpcode(u8),
    /// RFC 6455 §5.2: the most significant bit of a 64-bit length must be 0.
    #[error("64-bit payload length has its most significant bit set")]
    LengthMsbSet,
}

/// Frame opcode (RFC 6455 §5.2). Reserved values are not representable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum OpCode {
    Continuation = 0x0,
    Text = 0x1,
    Binary = 0x2,
    Close = 0x8,
    Ping = 0x9,
    Pong = 0xA,
}

impl OpCode {
    /// Decode the low nibble of the first header byte; `None` for reserved opcodes.
    pub const fn from_u8(v: u8) -> Option<OpCode> {
        match v {
            0x0 => Some(OpCode::Continuation),
            0x1 => Some(OpCode::Text),
            0x2 => Some(OpCode::Binary),
            0x8 => Some(OpCode::Close),
            0x9 => Some(OpCode::Ping),
            0xA => Some(OpCode::Pong),
            _ => None,
        }
    }

    /// Wire value (0x0..=0xA).
    pub const fn as_u8(self) -> u8 {
        self as u8
    }

    /// Close, Ping, Pong (opcode bit 3 set).
    pub const fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }

    /// Continuation, Text, Binary.
    pub const fn is_data(self) -> bool {
        !self.is_control()
    }
}

impl TryFrom<u8> for OpCode {
    type Error = FrameError;
    fn try_from(v: u8) -> Result<Self, FrameError> {
        OpCode::from_u8(v).ok_or(FrameError::BadOpcode(v))
    }
}

impl From<OpCode> for u8 {
    fn from(op: OpCode) -> u8 {
        op.as_u8()
    }
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub fin: bool,
    /// RSV1..RSV3 as the low 3 bits (RSV1 = 0b100).
    pub rsv: u8,
    pub opcode: OpCode,
    pub mask: Option<[u8; 4]>,
    pub payload_len: u64,
}

impl FrameHeader {
    /// Size of this header in its *minimal* encoding (what [`encode_header`]
    /// writes). A peer may legally-in-practice send a non-minimal length, so
    /// for a header that came from [`parse_header`] use the byte count it
    /// returned, not this.
    pub fn header_len(&self) -> usize {
        let ext = if self.payload_len < 126 {
            0
        } else if self.payload_len <= u16::MAX as u64 {
            2
        } else {
            8
        };
        2 + ext + if self.mask.is_some() { 4 } else { 0 }
    }
}

/// Parse a frame header from the front of `buf`.
///
/// Returns `Ok(None)` if `buf` does not yet hold the whole header, otherwise
/// the header and the number of header bytes it occupied. Non-minimal length
/// encodings (e.g. 5 encoded in 16 bits) are accepted. An unknown opcode is
/// reported as soon as the first byte is present.
pub fn parse_header(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, FrameError> {
    let Some(&b0) = buf.first() else {
        return Ok(None);
    };
    let opcode = OpCode::try_from(b0 & 0x0F)?;
    let Some(&b1) = buf.get(1) else {
        return Ok(None);
    };
    let (payload_len, mut pos) = match b1 & 0x7F {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                let len = u64::from_be_bytes(a);
                if len >> 63 != 0 {
                    return Err(FrameError::LengthMsbSet);
                }
                (len, 10)
            }
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    let mask = if b1 & 0x80 != 0 {
        match buf.get(pos..pos + 4) {
            Some(m) => {
                pos += 4;
                Some([m[0], m[1], m[2], m[3]])
            }
            None => return Ok(None),
        }
    } else {
        None
    };
    Ok(Some((
        FrameHeader {
            fin: b0 & 0x80 != 0,
            rsv: (b0 >> 4) & 0x7,
            opcode,
            mask,
            payload_len,
        },
        pos,
    )))
}

/// XOR `buf` in place with `mask`, where `buf[0]` is byte number `offset` of
/// the frame payload (so a payload can be unmasked in several calls).
///
/// Works 8 bytes at a time via `chunks_exact_mut` + `u64::from_ne_bytes`,
/// which compiles to unaligned loads/stores (and usually SIMD after
/// auto-vectorisation), so any start alignment is fine and no `unsafe` is
/// needed. The tail is done byte-wise.
pub fn apply_mask(buf: &mut [u8], mask: [u8; 4], offset: usize) {
    let mut m = mask;
    m.rotate_left(offset & 3);
    let m64 = u64::from_ne_bytes([m[0], m[1], m[2], m[3], m[0], m[1], m[2], m[3]]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(w) ^ m64).to_ne_bytes());
    }
    // The remainder starts at a multiple of 8, i.e. at mask phase 0 of `m`.
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= m[i & 3];
    }
}

/// Write a minimal header into `out`, returning the number of bytes used
/// (2..=14). RSV bits are always 0.
pub fn encode_header(
    out: &mut [u8; MAX_HEADER_LEN],
    fin: bool,
    opcode: OpCode,
    mask: Option<[u8; 4]>,
    len: usize,
) -> usize {
    out[0] = if fin { 0x80 } else { 0 } | opcode.as_u8();
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let mut pos = if len < 126 {
        out[1] = mask_bit | len as u8;
        2
    } else if len <= u16::MAX as usize {
        out[1] = mask_bit | 126;
        out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        out[1] = mask_bit | 127;
        out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    if let Some(m) = mask {
        out[pos..pos + 4].copy_from_slice(&m);
        pos += 4;
    }
    pos
}

/// [`encode_header`] as an owned `Bytes` (one small allocation), for a
/// vectored `[header, payload]` write that does not copy the payload.
pub fn frame_header_bytes(fin: bool, opcode: OpCode, mask: Option<[u8; 4]>, len: usize) -> Bytes {
    let mut h = [0u8; MAX_HEADER_LEN];
    let n = encode_header(&mut h, fin, opcode, mask, len);
    Bytes::copy_from_slice(&h[..n])
}

/// Append one complete frame (header + payload, masked if `mask` is set) to `out`.
pub fn encode_frame_into(
    out: &mut BytesMut,
    fin: bool,
    opcode: OpCode,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) {
    let mut h = [0u8; MAX_HEADER_LEN];
    let n = encode_header(&mut h, fin, opcode, mask, payload.len());
    out.reserve(n + payload.len());
    out.put_slice(&h[..n]);
    let start = out.len();
    out.put_slice(payload);
    if let Some(m) = mask {
        apply_mask(&mut out[start..], m, 0);
    }
}

/// The masks of a client's frames: xorshift64 from a seed the caller draws from the OS.
/// RFC 6455 §5.3 wants masks the network cannot predict, not cryptographic strength.
#[derive(Debug, Clone)]
pub struct MaskSeq(u64);

impl MaskSeq {
    pub fn new(seed: u64) -> MaskSeq {
        MaskSeq(seed | 1) // xorshift never leaves 0; never start there
    }

    pub fn next_mask(&mut self) -> [u8; 4] {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x as u32).to_le_bytes()
    }
}

/// Appends one masked frame of `len` payload bytes to `out`: the header, then what
/// `write` appends (exactly `len` bytes), masked there in place — a client's one copy
/// of a payload, with no intermediate buffer.
pub fn append_masked(
    out: &mut Vec<u8>,
    fin: bool,
    opcode: OpCode,
    mask: [u8; 4],
    len: usize,
    write: impl FnOnce(&mut Vec<u8>),
) {
    let mut h = [0u8; MAX_HEADER_LEN];
    let n = encode_header(&mut h, fin, opcode, Some(mask), len);
    out.reserve(n + len);
    out.extend_from_slice(&h[..n]);
    let start = out.len();
    write(out);
    debug_assert_eq!(
        out.len() - start,
        len,
        "write appended the announced length"
    );
    apply_mask(&mut out[start..], mask, 0);
}

/// One FIN frame as a fresh `BytesMut` (small control frames, client side).
pub fn encode_frame(opcode: OpCode, payload: &[u8], mask: Option<[u8; 4]>) -> BytesMut {
    let mut out = BytesMut::with_capacity(MAX_HEADER_LEN + payload.len());
    encode_frame_into(&mut out, true, opcode, payload, mask);
    out
}

/// May `code` appear in a Close frame on the wire (RFC 6455 §7.4)?
///
/// Valid: 1000-1003, 1007-1011, the later-registered 1012-1014, and
/// 3000-4999 (registered / private use). Invalid: < 1000, 1004 (reserved),
/// 1005/1006/1015 (local-only pseudo codes), 1016-2999 (reserved), >= 5000.
pub const fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Close frame body: big-endian `code` followed by `reason`, the reason cut
/// at a char boundary so the body fits in 125 bytes. The code is not
/// checked; pass one for which [`is_valid_close_code`] holds.
pub fn close_payload(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = BytesMut::with_capacity(2 + end);
    out.put_u16(code);
    out.put_slice(&reason.as_bytes()[..end]);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opcode_round_trips_through_u8_and_classifies_control_vs_data() {
        for v in 0u8..=0xFF {
            match OpCode::from_u8(v) {
                Some(op) => {
                    assert_eq!(op.as_u8(), v);
                    assert_eq!(u8::from(op), v);
                    assert_eq!(OpCode::try_from(v), Ok(op));
                    assert_eq!(op.is_control(), v >= 8);
                    assert_eq!(op.is_data(), v < 8);
                }
                None => {
                    assert!(matches!(v, 3..=7 | 0xB..));
                    assert_eq!(OpCode::try_from(v), Err(FrameError::BadOpcode(v)));
                }
            }
        }
    }

    #[test]
    fn parses_7bit_length_unmasked() {
        let (h, n) = parse_header(&[0x82, 0x7D]).unwrap().unwrap();
        assert_eq!(n, 2);
        assert_eq!(
            h,
            FrameHeader {
                fin: true,
                rsv: 0,
                opcode: OpCode::Binary,
                mask: None,
                payload_len: 125
            }
        );
        assert_eq!(h.header_len(), 2);
    }

    #[test]
    fn parses_16bit_length_masked() {
        let (h, n) = parse_header(&[0x01, 0xFE, 0xFF, 0xFF, 1, 2, 3, 4, 0xAA])
            .unwrap()
            .unwrap();
        assert_eq!(n, 8);
        assert!(!h.fin);
        assert_eq!(h.opcode, OpCode::Text);
        assert_eq!(h.payload_len, 65535);
        assert_eq!(h.mask, Some([1, 2, 3, 4]));
        assert_eq!(h.header_len(), 8);
    }

    #[test]
    fn parses_64bit_length_masked_and_unmasked() {
        let mut b = vec![0x82, 0xFF, 0, 0, 0, 0, 0, 1, 0, 0, 9, 8, 7, 6];
        let (h, n) = parse_header(&b).unwrap().unwrap();
        assert_eq!((n, h.payload_len, h.mask), (14, 65536, Some([9, 8, 7, 6])));
        assert_eq!(h.header_len(), 14);
        b[1] = 0x7F;
        b[2] = 0x7F; // MSB clear: legal even though absurdly large
        let (h, n) = parse_header(&b).unwrap().unwrap();
        assert_eq!((n, h.mask), (10, None));
        assert_eq!(h.payload_len, 0x7F00_0000_0001_0000);
    }

    #[test]
    fn rsv_bits_are_reported_not_rejected_by_parser() {
        let (h, _) = parse_header(&[0xF2, 0x00]).unwrap().unwrap();
        assert_eq!(h.rsv, 0b111);
        let (h, _) = parse_header(&[0xC2, 0x00]).unwrap().unwrap();
        assert_eq!(h.rsv, 0b100);
    }

    #[test]
    fn non_minimal_length_encodings_are_accepted() {
        let (h, n) = parse_header(&[0x82, 126, 0, 5]).unwrap().unwrap();
        assert_eq!((h.payload_len, n), (5, 4));
        let (h, n) = parse_header(&[0x82, 127, 0, 0, 0, 0, 0, 0, 0, 5])
            .unwrap()
            .unwrap();
        assert_eq!((h.payload_len, n), (5, 10));
        assert_eq!(h.header_len(), 2, "header_len() is the minimal encoding");
    }

    #[test]
    fn length_with_msb_set_is_rejected() {
        let b = [0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(parse_header(&b), Err(FrameError::LengthMsbSet));
    }

    #[test]
    fn unknown_opcode_is_rejected_from_first_byte() {
        for op in [3u8, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
            assert_eq!(parse_header(&[0x80 | op]), Err(FrameError::BadOpcode(op)));
            assert_eq!(
                parse_header(&[0x80 | op, 0]),
                Err(FrameError::BadOpcode(op))
            );
        }
    }

    #[test]
    fn partial_header_returns_none_at_every_split_point() {
        let headers: [&[u8]; 6] = [
            &[0x81, 0x05],
            &[0x81, 0x85, 1, 2, 3, 4],
            &[0x82, 126, 1, 0],
            &[0x82, 0xFE, 1, 0, 1, 2, 3, 4],
            &[0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0],
            &[0x82, 0xFF, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4],
        ];
        for h in headers {
            for cut in 0..h.len() {
                assert_eq!(
                    parse_header(&h[..cut]),
                    Ok(None),
                    "header {h:?} cut at {cut}"
                );
            }
            let (_, n) = parse_header(h).unwrap().unwrap();
            assert_eq!(n, h.len());
        }
    }

    #[test]
    fn encode_header_round_trips_through_parse_header() {
        let lens = [
            0usize,
            1,
            125,
            126,
            127,
            65535,
            65536,
            1 << 20,
            usize::MAX >> 1,
        ];
        for &len in &lens {
            for mask in [None, Some([0xDE, 0xAD, 0xBE, 0xEF])] {
                for (fin, op) in [
                    (true, OpCode::Binary),
                    (false, OpCode::Text),
                    (true, OpCode::Ping),
                ] {
                    let mut out = [0u8; MAX_HEADER_LEN];
                    let n = encode_header(&mut out, fin, op, mask, len);
                    let (h, m) = parse_header(&out[..n]).unwrap().unwrap();
                    assert_eq!(m, n);
                    assert_eq!(h.header_len(), n);
                    assert_eq!(
                        h,
                        FrameHeader {
                            fin,
                            rsv: 0,
                            opcode: op,
                            mask,
                            payload_len: len as u64
                        }
                    );
                    assert_eq!(&frame_header_bytes(fin, op, mask, len)[..], &out[..n]);
                }
            }
        }
    }

    fn naive_mask(buf: &mut [u8], mask: [u8; 4], offset: usize) {
        for (i, b) in buf.iter_mut().enumerate() {
            *b ^= mask[(i + offset) % 4];
        }
    }

    #[test]
    fn apply_mask_equals_naive_xor_for_all_lengths_offsets_and_alignments() {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let src: Vec<u8> = (0..100u32).map(|i| (i * 37 + 11) as u8).collect();
        for len in 0..=70 {
            for offset in 0..4 {
                for start in 0..8 {
                    let mut fast = src.clone();
                    let mut slow = src.clone();
                    apply_mask(&mut fast[start..start + len], mask, offset);
                    naive_mask(&mut slow[start..start + len], mask, offset);
                    assert_eq!(fast, slow, "len {len} offset {offset} start {start}");
                }
            }
        }
        // offsets beyond 3 wrap
        let mut a = src.clone();
        let mut b = src.clone();
        apply_mask(&mut a, mask, 4001);
        naive_mask(&mut b, mask, 1);
        assert_eq!(a, b);
    }

    #[test]
    fn apply_mask_continues_across_calls_with_offset() {
        let mask = [0xA1, 0xB2, 0xC3, 0xD4];
        let src: Vec<u8> = (0..257u32).map(|i| i as u8).collect();
        let mut whole = src.clone();
        apply_mask(&mut whole, mask, 0);
        for cut in 0..src.len() {
            let mut parts = src.clone();
            let (a, b) = parts.split_at_mut(cut);
            apply_mask(a, mask, 0);
            apply_mask(b, mask, cut);
            assert_eq!(parts, whole, "cut {cut}");
        }
    }

    #[test]
    fn encode_frame_masks_payload_and_unmasks_back() {
        let mask = [1, 2, 3, 4];
        let f = encode_frame(OpCode::Text, b"hello", Some(mask));
        let (h, n) = parse_header(&f).unwrap().unwrap();
        assert_eq!((n, h.payload_len, h.mask), (6, 5, Some(mask)));
        let mut p = f[n..].to_vec();
        assert_ne!(&p[..], b"hello");
        apply_mask(&mut p, mask, 0);
        assert_eq!(&p[..], b"hello");
        let f = encode_frame(OpCode::Pong, b"x", None);
        assert_eq!(&f[..], &[0x8A, 0x01, b'x']);
    }

    #[test]
    fn close_code_validity_follows_rfc6455_section_7_4() {
        for c in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4999,
        ] {
            assert!(is_valid_close_code(c), "{c} should be valid");
        }
        for c in [
            0,
            999,
            1004,
            1005,
            1006,
            1015,
            1016,
            2000,
            2999,
            5000,
            u16::MAX,
        ] {
            assert!(!is_valid_close_code(c), "{c} should be invalid");
        }
    }

    #[test]
    fn close_payload_truncates_reason_on_char_boundary() {
        let p = close_payload(1001, "bye");
        assert_eq!(&p[..], b"\x03\xE9bye");
        // 'é' is 2 bytes: 61 of them = 122 bytes, then a 3-byte '€' would cross 123.
        let reason = format!("{}€tail", "é".repeat(61));
        let p = close_payload(1000, &reason);
        assert!(p.len() <= MAX_CONTROL_PAYLOAD);
        assert_eq!(p.len(), 2 + 122);
        assert!(std::str::from_utf8(&p[2..]).is_ok());
        let p = close_payload(1000, &"a".repeat(500));
        assert_eq!(p.len(), MAX_CONTROL_PAYLOAD);
    }
}
