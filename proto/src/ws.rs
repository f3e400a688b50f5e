//! RFC 6455 connection-level codec: turns a stream of frames in a `BytesMut`
//! read buffer into whole messages, enforcing the protocol rules, and builds
//! outgoing frames.
//!
//! Why this exists: the gateway is thread-per-core on io_uring and owns its
//! read buffers; the codec therefore has to be sans-IO (no runtime, socket or
//! clock) and must not copy payloads on the hot path. An unfragmented data
//! frame is `split_to` off the read buffer, unmasked in place and returned as
//! a `Bytes` slice of the same allocation. Only fragmented messages are copied
//! (into the decoder's reassembly buffer).
//!
//! Why it is hand-written: no crate does in-place zero-copy unmasking over a
//! shared `BytesMut` read buffer; `tungstenite` works over blocking
//! `Read`/`Write` and owns (and copies into) its buffers.
//!
//! Decoding, in the caller's read loop:
//!
//! ```rust,ignore
//! loop {
//!     match decoder.decode(&mut read_buf) {
//!         Ok(Some(msg)) => handle(msg),
//!         Ok(None) => break, // read more bytes into read_buf, then call again
//!         Err(e) => { send(close_frame(Some((e.close_code(), "")), None)); fail(); break }
//!     }
//! }
//! ```
//!
//! Encoding lives here too, as free functions: [`message_header`] (server,
//! header only, for a vectored `[header, payload]` write), [`encode_message_into`]
//! (header + payload, optional client mask), and the control builders
//! [`ping_frame`], [`pong_frame`], [`close_frame`]. Frame-level primitives are
//! in `super::frame`.

use bytes::{Buf, Bytes, BytesMut};

use super::frame::{
    apply_mask, close_payload, encode_frame_into, frame_header_bytes, is_valid_close_code,
    parse_header, FrameError, FrameHeader, OpCode, CLOSE_INVALID_PAYLOAD, CLOSE_PROTOCOL_ERROR,
    CLOSE_TOO_BIG, MAX_CONTROL_PAYLOAD,
};

/// Which end of the connection the decoder sits on. A `Server` decodes frames
/// sent by a client (which must be masked); a `Client` decodes frames sent by
/// a server (which must not be).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Server,
    Client,
}

/// Decoder limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Maximum payload bytes of one whole data message (after reassembly of
    /// fragments). Control frames are bounded by RFC 6455 to 125 bytes.
    pub max_message_bytes: usize,
}

impl Default for Limits {
    /// 1 MiB per message.
    fn default() -> Self {
        Limits {
            max_message_bytes: 1 << 20,
        }
    }
}

/// Body of a Close frame that carried a status code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    /// Always satisfies `is_valid_close_code`.
    pub code: u16,
    /// Validated UTF-8, at most 123 bytes.
    pub reason: Bytes,
}

/// One decoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Complete text message; the bytes are validated UTF-8.
    Text(Bytes),
    Binary(Bytes),
    /// Payload (<= 125 bytes); answer with [`pong_frame`] carrying it.
    Ping(Bytes),
    Pong(Bytes),
    /// `None` when the Close frame had an empty body (no status code).
    Close(Option<CloseFrame>),
}

/// Why the peer's byte stream was rejected. Every variant maps to the close
/// code to send (see [`ProtocolError::close_code`]); after any error the
/// connection must be failed: the decoder and the read buffer are left in an
/// unspecified (memory-safe) state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// 1002: unknown opcode or 64-bit length with MSB set.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// 1002: a client sent an unmasked frame (RFC 6455 §5.1).
    #[error("client frame is not masked")]
    UnmaskedClientFrame,
    /// 1002: a server sent a masked frame (RFC 6455 §5.1).
    #[error("server frame is masked")]
    MaskedServerFrame,
    /// 1002: RSV1-3 set without a negotiated extension. Holds the 3 bits.
    #[error("reserved bits {0:#05b} set without a negotiated extension")]
    ReservedBitsSet(u8),
    /// 1002: Close/Ping/Pong with FIN clear.
    #[error("fragmented control frame")]
    FragmentedControlFrame,
    /// 1002: Close/Ping/Pong payload over 125 bytes. Holds the length.
    #[error("control frame payload of {0} bytes exceeds 125")]
    ControlFrameTooLong(u64),
    /// 1002: Close body of exactly one byte (a code needs two).
    #[error("close frame body of 1 byte")]
    CloseBodyTooShort,
    /// 1002: Close code not allowed on the wire. Holds the code.
    #[error("invalid close code {0}")]
    InvalidCloseCode(u16),
    /// 1002: Continuation frame with no fragmented message in progress.
    #[error("continuation frame without a message in progress")]
    UnexpectedContinuation,
    /// 1002: Text/Binary frame while a fragmented message is in progress.
    #[error("new data frame while a fragmented message is in progress")]
    DataFrameInsideMessage,
    /// 1007: text message is not valid UTF-8.
    #[error("text message is not valid UTF-8")]
    InvalidUtf8Text,
    /// 1007: close reason is not valid UTF-8.
    #[error("close reason is not valid UTF-8")]
    InvalidUtf8CloseReason,
    /// 1009: message (single frame, or running total of fragments) exceeds
    /// `Limits::max_message_bytes`. Detected from the frame header.
    #[error("message of at least {size} bytes exceeds limit of {max}")]
    MessageTooBig { size: u64, max: usize },
}

impl ProtocolError {
    /// Close code to send to the peer: 1002, 1007 or 1009.
    pub fn close_code(&self) -> u16 {
        match self {
            ProtocolError::InvalidUtf8Text | ProtocolError::InvalidUtf8CloseReason => {
                CLOSE_INVALID_PAYLOAD
            }
            ProtocolError::MessageTooBig { .. } => CLOSE_TOO_BIG,
            _ => CLOSE_PROTOCOL_ERROR,
        }
    }
}

/// Incremental, sans-IO message decoder for one connection.
#[derive(Debug)]
pub struct Decoder {
    role: Role,
    limits: Limits,
    /// Text/Binary of the fragmented message in progress, if any.
    fragmented: Option<OpCode>,
    /// Reassembly buffer for the fragmented message in progress.
    partial: BytesMut,
    /// For fragmented text: `partial[..utf8_checked]` is known-valid UTF-8
    /// ending on a char boundary (fail-fast validation across fragments).
    utf8_checked: usize,
    /// Header + payload size of the incomplete frame at the front of the
    /// buffer, as of the last `Ok(None)`.
    pending: Option<usize>,
}

impl Decoder {
    pub fn new(role: Role, limits: Limits) -> Self {
        Decoder {
            role,
            limits,
            fragmented: None,
            partial: BytesMut::new(),
            utf8_checked: 0,
            pending: None,
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// True while a fragmented message is being reassembled (the decoder then
    /// holds state, and a Text/Binary frame from the peer would be an error).
    pub fn in_message(&self) -> bool {
        self.fragmented.is_some()
    }

    /// After `decode` returned `Ok(None)`: total bytes (header + payload) of
    /// the incomplete frame at the front of the buffer, if its header was
    /// complete, so the caller can `reserve` for it. `None` if the header
    /// itself is incomplete or the last call returned a message/error.
    pub fn pending_frame_len(&self) -> Option<usize> {
        self.pending
    }

    /// Consume complete frames from the front of `buf` and return the next
    /// complete message, or `Ok(None)` if `buf` holds only a partial frame.
    ///
    /// Buffer contract:
    /// * On `Ok(None)`, the incomplete frame at the front of `buf` is left
    ///   byte-for-byte untouched (it is unmasked only once it is complete);
    ///   append more bytes and call again. Complete fragments preceding it
    ///   have been consumed into the decoder's reassembly state.
    /// * On `Ok(Some(_))`, exactly the frames up to and including the one
    ///   that completed the message were removed; later bytes remain, so
    ///   call again until `Ok(None)`.
    /// * An unfragmented Text/Binary payload is a slice of `buf`'s
    ///   allocation (zero-copy): holding it keeps that allocation alive, so
    ///   `buf.reserve` will allocate afresh instead of reclaiming it. Control
    ///   payloads (<= 125 bytes) are copied and do not pin the buffer.
    /// * Limits and header rules are checked as soon as a frame header is
    ///   complete, before its payload has arrived.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, ProtocolError> {
        self.pending = None;
        loop {
            let Some((hdr, hlen)) = parse_header(buf)? else {
                return Ok(None);
            };
            self.check_header(&hdr)?;
            // check_header bounded payload_len by max_message_bytes (a usize)
            // or by 125, so the conversion and sum cannot fail in practice;
            // stay panic-free regardless.
            let total = usize::try_from(hdr.payload_len)
                .ok()
                .and_then(|p| p.checked_add(hlen))
                .ok_or(ProtocolError::MessageTooBig {
                    size: hdr.payload_len,
                    max: self.limits.max_message_bytes,
                })?;
            if buf.len() < total {
                self.pending = Some(total);
                return Ok(None);
            }
            if let Some(mask) = hdr.mask {
                apply_mask(&mut buf[hlen..total], mask, 0);
            }

            match hdr.opcode {
                OpCode::Close | OpCode::Ping | OpCode::Pong => {
                    let payload = Bytes::copy_from_slice(&buf[hlen..total]);
                    buf.advance(total);
                    return control_message(hdr.opcode, payload).map(Some);
                }
                OpCode::Text | OpCode::Binary if hdr.fin => {
                    let payload = if total == hlen {
                        buf.advance(total);
                        Bytes::new()
                    } else {
                        let mut frame = buf.split_to(total);
                        frame.advance(hlen);
                        frame.freeze()
                    };
                    if hdr.opcode == OpCode::Binary {
                        return Ok(Some(Message::Binary(payload)));
                    }
                    if simdutf8::basic::from_utf8(&payload).is_err() {
                        return Err(ProtocolError::InvalidUtf8Text);
                    }
                    return Ok(Some(Message::Text(payload)));
                }
                OpCode::Text | OpCode::Binary => {
                    // First fragment. Any leftover state was consumed by the
                    // previous message; check_header rejected overlaps.
                    self.partial.clear();
                    self.partial.reserve(total - hlen);
                    self.partial.extend_from_slice(&buf[hlen..total]);
                    buf.advance(total);
                    self.fragmented = Some(hdr.opcode);
                    self.utf8_checked = 0;
                    self.check_partial_utf8(false)?;
                }
                OpCode::Continuation => {
                    self.partial.extend_from_slice(&buf[hlen..total]);
                    buf.advance(total);
                    self.check_partial_utf8(hdr.fin)?;
                    if hdr.fin {
                        let opcode = self.fragmented.take();
                        let data = self.partial.split().freeze();
                        return Ok(Some(match opcode {
                            Some(OpCode::Text) => Message::Text(data),
                            _ => Message::Binary(data),
                        }));
                    }
                }
            }
        }
    }

    /// All rules decidable from the header alone.
    fn check_header(&self, h: &FrameHeader) -> Result<(), ProtocolError> {
        match (self.role, h.mask.is_some()) {
            (Role::Server, false) => return Err(ProtocolError::UnmaskedClientFrame),
            (Role::Client, true) => return Err(ProtocolError::MaskedServerFrame),
            _ => {}
        }
        if h.rsv != 0 {
            return Err(ProtocolError::ReservedBitsSet(h.rsv));
        }
        if h.opcode.is_control() {
            if !h.fin {
                return Err(ProtocolError::FragmentedControlFrame);
            }
            if h.payload_len > MAX_CONTROL_PAYLOAD as u64 {
                return Err(ProtocolError::ControlFrameTooLong(h.payload_len));
            }
            if h.opcode == OpCode::Close && h.payload_len == 1 {
                return Err(ProtocolError::CloseBodyTooShort);
            }
            return Ok(());
        }
        let so_far = match (h.opcode, self.fragmented.is_some()) {
            (OpCode::Continuation, false) => return Err(ProtocolError::UnexpectedContinuation),
            (OpCode::Continuation, true) => self.partial.len() as u64,
            (_, true) => return Err(ProtocolError::DataFrameInsideMessage),
            (_, false) => 0,
        };
        let size = so_far.saturating_add(h.payload_len);
        if size > self.limits.max_message_bytes as u64 {
            return Err(ProtocolError::MessageTooBig {
                size,
                max: self.limits.max_message_bytes,
            });
        }
        Ok(())
    }

    /// Validate the not-yet-checked tail of a fragmented text message. An
    /// incomplete char at the end is tolerated unless `last` is set.
    fn check_partial_utf8(&mut self, last: bool) -> Result<(), ProtocolError> {
        if self.fragmented != Some(OpCode::Text) {
            return Ok(());
        }
        let tail = &self.partial[self.utf8_checked..];
        match simdutf8::compat::from_utf8(tail) {
            Ok(_) => self.utf8_checked = self.partial.len(),
            Err(e) if e.error_len().is_none() && !last => self.utf8_checked += e.valid_up_to(),
            Err(_) => return Err(ProtocolError::InvalidUtf8Text),
        }
        Ok(())
    }
}

fn control_message(opcode: OpCode, payload: Bytes) -> Result<Message, ProtocolError> {
    Ok(match opcode {
        OpCode::Ping => Message::Ping(payload),
        OpCode::Pong => Message::Pong(payload),
        _ => {
            if payload.is_empty() {
                return Ok(Message::Close(None));
            }
            if payload.len() < 2 {
                return Err(ProtocolError::CloseBodyTooShort);
            }
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            if !is_valid_close_code(code) {
                return Err(ProtocolError::InvalidCloseCode(code));
            }
            let reason = payload.slice(2..);
            if simdutf8::basic::from_utf8(&reason).is_err() {
                return Err(ProtocolError::InvalidUtf8CloseReason);
            }
            Message::Close(Some(CloseFrame { code, reason }))
        }
    })
}

/// Server side: header of one unmasked FIN frame for a whole `opcode`
/// (Text/Binary) message of `payload_len` bytes. Send it and the payload as a
/// vectored write; the payload is never copied.
pub fn message_header(opcode: OpCode, payload_len: usize) -> Bytes {
    frame_header_bytes(true, opcode, None, payload_len)
}

/// Append one FIN frame (header + payload) to `buf`. With `mask` set (client
/// side) the copied payload is masked; `payload` itself is not modified.
pub fn encode_message_into(
    buf: &mut BytesMut,
    opcode: OpCode,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) {
    encode_frame_into(buf, true, opcode, payload, mask);
}

fn control_frame(opcode: OpCode, payload: &[u8], mask: Option<[u8; 4]>) -> Bytes {
    let payload = &payload[..payload.len().min(MAX_CONTROL_PAYLOAD)];
    let mut out = BytesMut::new();
    encode_frame_into(&mut out, true, opcode, payload, mask);
    out.freeze()
}

/// Ping frame. `payload` beyond 125 bytes is dropped (RFC 6455 §5.5).
pub fn ping_frame(payload: &[u8], mask: Option<[u8; 4]>) -> Bytes {
    control_frame(OpCode::Ping, payload, mask)
}

/// Pong frame. `payload` beyond 125 bytes is dropped; a decoded
/// `Message::Ping` payload always fits, so echoing it is lossless.
pub fn pong_frame(payload: &[u8], mask: Option<[u8; 4]>) -> Bytes {
    control_frame(OpCode::Pong, payload, mask)
}

/// Close frame: `None` for an empty body, else code + reason (reason cut on a
/// char boundary to fit 125 bytes; see `super::frame::close_payload`).
pub fn close_frame(close: Option<(u16, &str)>, mask: Option<[u8; 4]>) -> Bytes {
    match close {
        None => control_frame(OpCode::Close, &[], mask),
        Some((code, reason)) => control_frame(OpCode::Close, &close_payload(code, reason), mask),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASK: [u8; 4] = [0x37, 0xFA, 0x21, 0x3D];
    const BIG: Limits = Limits {
        max_message_bytes: 1 << 20,
    };

    /// xorshift64: deterministic, dependency-free test randomness.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn mask(&mut self) -> [u8; 4] {
            (self.next() as u32).to_ne_bytes()
        }
    }

    fn server() -> Decoder {
        Decoder::new(Role::Server, BIG)
    }

    fn client_frame(fin: bool, op: OpCode, payload: &[u8]) -> Vec<u8> {
        let mut b = BytesMut::new();
        encode_frame_into(&mut b, fin, op, payload, Some(MASK));
        b.to_vec()
    }

    /// Decode everything in `bytes`, fed at once.
    fn decode_all(dec: &mut Decoder, bytes: &[u8]) -> Result<Vec<Message>, ProtocolError> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(m) = dec.decode(&mut buf)? {
            out.push(m);
        }
        Ok(out)
    }

    fn err_of(bytes: &[u8]) -> ProtocolError {
        decode_all(&mut server(), bytes).expect_err("expected a protocol error")
    }

    /// Feed `bytes` in random chunks of 1..=max_chunk bytes, collecting messages.
    fn feed_chunked(
        dec: &mut Decoder,
        bytes: &[u8],
        rng: &mut Rng,
        max_chunk: usize,
    ) -> Vec<Message> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < bytes.len() {
            let n = (1 + rng.below(max_chunk)).min(bytes.len() - pos);
            buf.extend_from_slice(&bytes[pos..pos + n]);
            pos += n;
            while let Some(m) = dec.decode(&mut buf).expect("valid stream") {
                out.push(m);
            }
        }
        assert!(buf.is_empty());
        out
    }

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 + i / 251) as u8).collect()
    }

    #[test]
    fn masked_client_messages_round_trip_for_boundary_sizes_in_random_chunks() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for size in [0usize, 1, 125, 126, 65535, 65536, 100_000] {
            let payload = pattern(size);
            let text = "€".repeat(size / 3) + &"a".repeat(size % 3);
            assert_eq!(text.len(), size);
            let mut wire = BytesMut::new();
            encode_message_into(&mut wire, OpCode::Binary, &payload, Some(rng.mask()));
            encode_message_into(&mut wire, OpCode::Text, text.as_bytes(), Some(rng.mask()));
            for max_chunk in [7, 1000, 70_000] {
                let msgs = feed_chunked(&mut server(), &wire, &mut rng, max_chunk);
                assert_eq!(
                    msgs,
                    vec![
                        Message::Binary(payload.clone().into()),
                        Message::Text(text.clone().into())
                    ],
                    "size {size} max_chunk {max_chunk}"
                );
            }
        }
    }

    #[test]
    fn small_message_fed_one_byte_at_a_time_round_trips() {
        let wire = client_frame(true, OpCode::Text, b"hello, world");
        let mut dec = server();
        let mut buf = BytesMut::new();
        for (i, &b) in wire.iter().enumerate() {
            assert_eq!(dec.decode(&mut buf), Ok(None), "byte {i}");
            buf.extend_from_slice(&[b]);
        }
        assert_eq!(
            dec.decode(&mut buf),
            Ok(Some(Message::Text("hello, world".into())))
        );
        assert!(buf.is_empty());
        assert_eq!(dec.decode(&mut buf), Ok(None));
    }

    #[test]
    fn unmasked_server_messages_round_trip_in_client_role() {
        let mut wire = BytesMut::new();
        wire.extend_from_slice(&message_header(OpCode::Binary, 70_000));
        wire.extend_from_slice(&pattern(70_000));
        wire.extend_from_slice(&ping_frame(b"p", None));
        let mut dec = Decoder::new(Role::Client, BIG);
        let msgs = feed_chunked(&mut dec, &wire, &mut Rng(7), 4096);
        assert_eq!(
            msgs,
            vec![
                Message::Binary(pattern(70_000).into()),
                Message::Ping("p".into())
            ]
        );
    }

    #[test]
    fn message_header_plus_payload_equals_encode_message_into() {
        for size in [0, 125, 126, 65536] {
            let p = pattern(size);
            let mut a = BytesMut::new();
            encode_message_into(&mut a, OpCode::Binary, &p, None);
            let mut b = message_header(OpCode::Binary, size).to_vec();
            b.extend_from_slice(&p);
            assert_eq!(&a[..], &b[..]);
        }
    }

    #[test]
    fn several_messages_in_one_buffer_come_out_one_per_call() {
        let mut wire = client_frame(true, OpCode::Text, b"one");
        wire.extend(client_frame(true, OpCode::Binary, b"two"));
        wire.extend(client_frame(true, OpCode::Pong, b"three"));
        wire.extend(&client_frame(true, OpCode::Text, b"partial")[..5]);
        let mut dec = server();
        let mut buf = BytesMut::from(&wire[..]);
        assert_eq!(dec.decode(&mut buf), Ok(Some(Message::Text("one".into()))));
        assert_eq!(
            dec.decode(&mut buf),
            Ok(Some(Message::Binary("two".into())))
        );
        assert_eq!(
            dec.decode(&mut buf),
            Ok(Some(Message::Pong("three".into())))
        );
        assert_eq!(dec.decode(&mut buf), Ok(None));
        assert_eq!(buf.len(), 5);
    }

    #[test]
    fn partial_frame_is_left_untouched_in_buf_and_pending_len_reported() {
        let wire = client_frame(true, OpCode::Binary, &pattern(300));
        let mut dec = server();
        let mut buf = BytesMut::from(&wire[..3]);
        assert_eq!(dec.decode(&mut buf), Ok(None));
        assert_eq!(
            dec.pending_frame_len(),
            None,
            "16-bit length not complete yet"
        );
        let mut buf = BytesMut::from(&wire[..200]);
        assert_eq!(dec.decode(&mut buf), Ok(None));
        assert_eq!(&buf[..], &wire[..200], "still masked, unmodified");
        assert_eq!(dec.pending_frame_len(), Some(wire.len()));
        buf.extend_from_slice(&wire[200..]);
        assert_eq!(
            dec.decode(&mut buf),
            Ok(Some(Message::Binary(pattern(300).into())))
        );
        assert_eq!(dec.pending_frame_len(), None);
    }

    #[test]
    fn unfragmented_binary_payload_is_zero_copy_slice_of_read_buffer() {
        let mut wire = client_frame(true, OpCode::Binary, &pattern(1000));
        wire.extend(client_frame(true, OpCode::Text, b"second"));
        let mut buf = BytesMut::from(&wire[..]);
        let range = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
        let mut dec = server();
        let (Some(Message::Binary(p)), Some(Message::Text(t))) =
            (dec.decode(&mut buf).unwrap(), dec.decode(&mut buf).unwrap())
        else {
            panic!("expected Binary then Text");
        };
        assert_eq!(&p[..], &pattern(1000)[..]);
        assert_eq!(
            p.as_ptr() as usize,
            range.start + 4 + 4,
            "header 4 + mask 4"
        );
        assert!(range.contains(&(p.as_ptr() as usize + p.len() - 1)));
        assert!(range.contains(&(t.as_ptr() as usize)));
        assert_eq!(&t[..], b"second");
    }

    #[test]
    fn fragmented_text_with_interleaved_ping_returns_ping_first_then_whole_text() {
        let mut wire = client_frame(false, OpCode::Text, b"Hel");
        wire.extend(client_frame(false, OpCode::Continuation, b"lo, "));
        wire.extend(client_frame(true, OpCode::Ping, b"are you there"));
        wire.extend(client_frame(true, OpCode::Continuation, b"world"));
        let mut dec = server();
        let mut buf = BytesMut::from(&wire[..]);
        assert_eq!(
            dec.decode(&mut buf),
            Ok(Some(Message::Ping("are you there".into())))
        );
        assert!(dec.in_message());
        assert_eq!(
            dec.decode(&mut buf),
            Ok(Some(Message::Text("Hello, world".into())))
        );
        assert!(!dec.in_message());
        assert!(buf.is_empty());
        // The same stream in random chunks.
        let msgs = feed_chunked(&mut server(), &wire, &mut Rng(42), 5);
        assert_eq!(
            msgs,
            vec![
                Message::Ping("are you there".into()),
                Message::Text("Hello, world".into())
            ]
        );
    }

    #[test]
    fn fragmented_binary_with_empty_fragments_reassembles_and_decoder_is_reusable() {
        let mut wire = client_frame(false, OpCode::Binary, b"");
        wire.extend(client_frame(false, OpCode::Continuation, b"ab"));
        wire.extend(client_frame(true, OpCode::Continuation, b""));
        wire.extend(client_frame(false, OpCode::Text, b"x"));
        wire.extend(client_frame(true, OpCode::Continuation, b"y"));
        let msgs = decode_all(&mut server(), &wire).unwrap();
        assert_eq!(
            msgs,
            vec![Message::Binary("ab".into()), Message::Text("xy".into())]
        );
    }

    #[test]
    fn utf8_char_split_across_fragments_is_accepted() {
        let s = "€uro"; // '€' = E2 82 AC
        let b = s.as_bytes();
        let mut wire = client_frame(false, OpCode::Text, &b[..1]);
        wire.extend(client_frame(false, OpCode::Continuation, &b[1..2]));
        wire.extend(client_frame(true, OpCode::Continuation, &b[2..]));
        assert_eq!(
            decode_all(&mut server(), &wire),
            Ok(vec![Message::Text(s.into())])
        );
    }

    #[test]
    fn close_frames_decode_with_and_without_status() {
        let mut wire = client_frame(true, OpCode::Close, b"");
        wire.extend(client_frame(
            true,
            OpCode::Close,
            &close_payload(4000, "bye ✓"),
        ));
        let msgs = decode_all(&mut server(), &wire).unwrap();
        assert_eq!(
            msgs,
            vec![
                Message::Close(None),
                Message::Close(Some(CloseFrame {
                    code: 4000,
                    reason: "bye ✓".into()
                }))
            ]
        );
    }

    #[test]
    fn control_frame_builders_decode_back() {
        let mut dec = Decoder::new(Role::Client, BIG);
        let mut wire = ping_frame(b"hi", None).to_vec();
        wire.extend_from_slice(&pong_frame(&[7u8; 300], None));
        wire.extend_from_slice(&close_frame(Some((1001, &"z".repeat(200))), None));
        wire.extend_from_slice(&close_frame(None, None));
        let msgs = decode_all(&mut dec, &wire).unwrap();
        assert_eq!(msgs[0], Message::Ping("hi".into()));
        assert_eq!(
            msgs[1],
            Message::Pong(vec![7u8; 125].into()),
            "truncated to 125"
        );
        assert_eq!(
            msgs[2],
            Message::Close(Some(CloseFrame {
                code: 1001,
                reason: "z".repeat(123).into()
            }))
        );
        assert_eq!(msgs[3], Message::Close(None));
        // Masked builders decode in server role.
        let mut wire = ping_frame(b"m", Some(MASK)).to_vec();
        wire.extend_from_slice(&close_frame(Some((1000, "")), Some(MASK)));
        let msgs = decode_all(&mut server(), &wire).unwrap();
        assert_eq!(
            msgs,
            vec![
                Message::Ping("m".into()),
                Message::Close(Some(CloseFrame {
                    code: 1000,
                    reason: Bytes::new()
                }))
            ]
        );
    }

    // ---- 1002 paths ----

    #[test]
    fn unmasked_client_frame_is_protocol_error_1002() {
        let mut wire = BytesMut::new();
        encode_message_into(&mut wire, OpCode::Binary, b"x", None);
        let e = err_of(&wire);
        assert_eq!(e, ProtocolError::UnmaskedClientFrame);
        assert_eq!(e.close_code(), 1002);
    }

    #[test]
    fn masked_server_frame_is_protocol_error_1002_in_client_role() {
        let mut dec = Decoder::new(Role::Client, BIG);
        let e = decode_all(&mut dec, &client_frame(true, OpCode::Text, b"x")).unwrap_err();
        assert_eq!(e, ProtocolError::MaskedServerFrame);
        assert_eq!(e.close_code(), 1002);
    }

    #[test]
    fn rsv_bits_set_is_protocol_error_1002() {
        for (bit, rsv) in [(0x40u8, 0b100u8), (0x20, 0b010), (0x10, 0b001)] {
            for op in [OpCode::Text, OpCode::Ping] {
                let mut wire = client_frame(true, op, b"x");
                wire[0] |= bit;
                let e = err_of(&wire);
                assert_eq!(e, ProtocolError::ReservedBitsSet(rsv));
                assert_eq!(e.close_code(), 1002);
            }
        }
    }

    #[test]
    fn unknown_opcode_is_protocol_error_1002() {
        for op in [3u8, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
            let e = err_of(&[0x80 | op, 0x80, 1, 2, 3, 4]);
            assert_eq!(e, ProtocolError::Frame(FrameError::BadOpcode(op)));
            assert_eq!(e.close_code(), 1002);
        }
    }

    #[test]
    fn length_with_msb_set_is_protocol_error_1002() {
        let e = err_of(&[0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]);
        assert_eq!(e, ProtocolError::Frame(FrameError::LengthMsbSet));
        assert_eq!(e.close_code(), 1002);
    }

    #[test]
    fn fragmented_control_frame_is_protocol_error_1002() {
        for op in [OpCode::Ping, OpCode::Pong, OpCode::Close] {
            let e = err_of(&client_frame(false, op, b""));
            assert_eq!(e, ProtocolError::FragmentedControlFrame);
            assert_eq!(e.close_code(), 1002);
        }
    }

    #[test]
    fn control_frame_over_125_bytes_is_protocol_error_1002_from_header_alone() {
        for op in [OpCode::Ping, OpCode::Pong, OpCode::Close] {
            let wire = client_frame(true, op, &[0u8; 126]);
            let e = err_of(&wire[..8]); // header only
            assert_eq!(e, ProtocolError::ControlFrameTooLong(126));
            assert_eq!(e.close_code(), 1002);
        }
    }

    #[test]
    fn close_with_one_byte_body_is_protocol_error_1002() {
        let e = err_of(&client_frame(true, OpCode::Close, &[3]));
        assert_eq!(e, ProtocolError::CloseBodyTooShort);
        assert_eq!(e.close_code(), 1002);
    }

    #[test]
    fn invalid_close_code_is_protocol_error_1002() {
        for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
            let e = err_of(&client_frame(true, OpCode::Close, &code.to_be_bytes()));
            assert_eq!(e, ProtocolError::InvalidCloseCode(code));
            assert_eq!(e.close_code(), 1002);
        }
    }

    #[test]
    fn continuation_without_message_in_progress_is_protocol_error_1002() {
        let e = err_of(&client_frame(true, OpCode::Continuation, b"x"));
        assert_eq!(e, ProtocolError::UnexpectedContinuation);
        assert_eq!(e.close_code(), 1002);
        // Also after a fragmented message has completed.
        let mut wire = client_frame(false, OpCode::Binary, b"a");
        wire.extend(client_frame(true, OpCode::Continuation, b"b"));
        wire.extend(client_frame(false, OpCode::Continuation, b"c"));
        assert_eq!(err_of(&wire), ProtocolError::UnexpectedContinuation);
    }

    #[test]
    fn new_data_frame_mid_message_is_protocol_error_1002() {
        for op in [OpCode::Text, OpCode::Binary] {
            for fin in [true, false] {
                let mut wire = client_frame(false, OpCode::Binary, b"a");
                wire.extend(client_frame(fin, op, b"b"));
                let e = err_of(&wire);
                assert_eq!(e, ProtocolError::DataFrameInsideMessage);
                assert_eq!(e.close_code(), 1002);
            }
        }
    }

    // ---- 1007 paths ----

    #[test]
    fn invalid_utf8_text_is_1007() {
        for bad in [
            &b"\xFF"[..],
            b"ok\xC3\x28",
            b"\xED\xA0\x80",
            b"trunc\xE2\x82",
        ] {
            let e = err_of(&client_frame(true, OpCode::Text, bad));
            assert_eq!(e, ProtocolError::InvalidUtf8Text, "{bad:?}");
            assert_eq!(e.close_code(), 1007);
        }
    }

    #[test]
    fn invalid_utf8_in_first_fragment_fails_fast_with_1007() {
        // No final fragment is ever sent: the error must come from the first.
        let e = err_of(&client_frame(false, OpCode::Text, b"abc\xFFdef"));
        assert_eq!(e, ProtocolError::InvalidUtf8Text);
        assert_eq!(e.close_code(), 1007);
    }

    #[test]
    fn fragmented_text_ending_in_truncated_char_is_1007() {
        let mut wire = client_frame(false, OpCode::Text, b"ab");
        wire.extend(client_frame(true, OpCode::Continuation, b"\xE2\x82"));
        assert_eq!(err_of(&wire), ProtocolError::InvalidUtf8Text);
    }

    #[test]
    fn invalid_utf8_binary_is_fine() {
        let msgs = decode_all(&mut server(), &client_frame(true, OpCode::Binary, b"\xFF")).unwrap();
        assert_eq!(msgs, vec![Message::Binary(Bytes::from_static(b"\xFF"))]);
    }

    #[test]
    fn invalid_utf8_close_reason_is_1007() {
        let e = err_of(&client_frame(true, OpCode::Close, b"\x03\xE8bad\xFF"));
        assert_eq!(e, ProtocolError::InvalidUtf8CloseReason);
        assert_eq!(e.close_code(), 1007);
    }

    // ---- 1009 paths ----

    #[test]
    fn oversized_single_frame_is_1009_from_header_before_payload_arrives() {
        let mut dec = Decoder::new(
            Role::Server,
            Limits {
                max_message_bytes: 1000,
            },
        );
        let mut buf = BytesMut::from(&client_frame(true, OpCode::Binary, &pattern(1001))[..8]);
        let e = dec.decode(&mut buf).unwrap_err();
        assert_eq!(
            e,
            ProtocolError::MessageTooBig {
                size: 1001,
                max: 1000
            }
        );
        assert_eq!(e.close_code(), 1009);
        // A huge 64-bit length is rejected the same way.
        let mut buf = BytesMut::from(&[0x82, 0xFF, 0x7F, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4][..]);
        let e = Decoder::new(Role::Server, BIG)
            .decode(&mut buf)
            .unwrap_err();
        assert_eq!(e.close_code(), 1009);
    }

    #[test]
    fn message_of_exactly_max_bytes_is_accepted() {
        let mut dec = Decoder::new(
            Role::Server,
            Limits {
                max_message_bytes: 1000,
            },
        );
        let mut wire = client_frame(true, OpCode::Binary, &pattern(1000));
        wire.extend(client_frame(false, OpCode::Binary, &pattern(500)));
        wire.extend(client_frame(true, OpCode::Continuation, &pattern(500)));
        assert_eq!(decode_all(&mut dec, &wire).unwrap().len(), 2);
    }

    #[test]
    fn oversized_sum_of_fragments_is_1009_from_header_of_offending_fragment() {
        let mut dec = Decoder::new(
            Role::Server,
            Limits {
                max_message_bytes: 1000,
            },
        );
        let mut wire = client_frame(false, OpCode::Text, &[b'a'; 600]);
        wire.extend(client_frame(false, OpCode::Continuation, &[b'b'; 300]));
        let third = client_frame(true, OpCode::Continuation, &[b'c'; 101]);
        wire.extend(&third[..8]); // header only
        let mut buf = BytesMut::from(&wire[..]);
        let e = dec.decode(&mut buf).unwrap_err();
        assert_eq!(
            e,
            ProtocolError::MessageTooBig {
                size: 1001,
                max: 1000
            }
        );
        assert_eq!(e.close_code(), 1009);
    }

    // ---- robustness ----

    fn valid_stream(rng: &mut Rng, masked: bool) -> Vec<u8> {
        let mut out = BytesMut::new();
        let mut in_msg = false;
        for _ in 0..1 + rng.below(6) {
            let len = [0, 1, 5, 125, 126, 300][rng.below(6)];
            let payload = pattern(len);
            let (fin, op) = match rng.below(6) {
                0 => (true, OpCode::Ping),
                1 => (true, OpCode::Close),
                2 if in_msg => (rng.below(2) == 0, OpCode::Continuation),
                _ if in_msg => (true, OpCode::Continuation),
                3 => (rng.below(2) == 0, OpCode::Text),
                _ => (rng.below(2) == 0, OpCode::Binary),
            };
            let payload = match op {
                OpCode::Text | OpCode::Continuation => b"h\xC3\xA9llo".repeat(len / 6),
                OpCode::Close => close_payload(1000, "x").to_vec(),
                OpCode::Ping => payload[..len.min(125)].to_vec(),
                _ => payload,
            };
            if op.is_data() {
                in_msg = !fin;
            }
            let mask = if masked { Some(rng.mask()) } else { None };
            encode_frame_into(&mut out, fin, op, &payload, mask);
        }
        out.to_vec()
    }

    /// Returns (messages decoded, close code of the error if any).
    fn run_fuzz_case(role: Role, limits: Limits, input: &[u8], rng: &mut Rng) -> (usize, u16) {
        let mut msgs = 0;
        let mut dec = Decoder::new(role, limits);
        let mut buf = BytesMut::new();
        let mut pos = 0;
        while pos < input.len() {
            let n = (1 + rng.below(64)).min(input.len() - pos);
            buf.extend_from_slice(&input[pos..pos + n]);
            pos += n;
            loop {
                match dec.decode(&mut buf) {
                    Ok(Some(Message::Text(t))) => assert!(std::str::from_utf8(&t).is_ok()),
                    Ok(Some(Message::Binary(b))) => assert!(b.len() <= limits.max_message_bytes),
                    Ok(Some(Message::Ping(p) | Message::Pong(p))) => assert!(p.len() <= 125),
                    Ok(Some(Message::Close(c))) => {
                        assert!(c.is_none_or(|c| is_valid_close_code(c.code)))
                    }
                    Ok(None) => break,
                    Err(e) => {
                        assert!(matches!(e.close_code(), 1002 | 1007 | 1009), "{e:?}");
                        return (msgs, e.close_code());
                    }
                }
                msgs += 1;
            }
        }
        (msgs, 0)
    }

    #[test]
    fn decoder_never_panics_on_arbitrary_bytes() {
        let mut rng = Rng(0xDEAD_BEEF_CAFE_F00D);
        let (mut msgs, mut errs) = (0usize, [0usize; 3]);
        for i in 0..6000 {
            let role = if i % 5 == 0 {
                Role::Client
            } else {
                Role::Server
            };
            let input: Vec<u8> = if i % 3 == 0 {
                (0..rng.below(200)).map(|_| rng.next() as u8).collect()
            } else {
                let mut v = valid_stream(&mut rng, role == Role::Server);
                for _ in 0..rng.below(4) {
                    if v.is_empty() {
                        break;
                    }
                    let at = rng.below(v.len());
                    match rng.below(4) {
                        0 => v[at] ^= 1 << rng.below(8),
                        1 => v[at] = rng.next() as u8,
                        2 => v.truncate(at),
                        _ => v.insert(at, rng.next() as u8),
                    }
                }
                v
            };
            let limits = Limits {
                max_message_bytes: [0, 100, 1 << 20, usize::MAX][i % 4],
            };
            let (n, code) = run_fuzz_case(role, limits, &input, &mut rng);
            msgs += n;
            match code {
                1002 => errs[0] += 1,
                1007 => errs[1] += 1,
                1009 => errs[2] += 1,
                _ => {}
            }
        }
        // The corpus must reach deep paths, not just die on the first header.
        assert!(msgs > 3000, "only {msgs} messages decoded");
        assert!(errs.iter().all(|&e| e > 20), "error paths hit: {errs:?}");
    }
}
