//! Minimal sans-IO HTTP/1.1 client codec for the backend side of the gateway.
//!
//! Why this exists: client binary requests are forwarded to backend services
//! as HTTP/1.1 POSTs, and the gateway's backend pool (`ringgate::backend`)
//! needs a request-head encoder and an incremental response parser that it
//! can drive from its own owned-buffer (io_uring style) reads.
//!
//! Why it is hand-written instead of using `monoio-http`: that crate pulls in
//! a second rustls stack, and its client cannot write a borrowed
//! `bytes::Bytes` body (a slice of the client's read buffer) as one vectored
//! write together with the head without copying it. Here the head is encoded
//! into its own small buffer and the body never passes through the codec, so
//! the caller can submit `[head, body]` as a single `writev`.
//!
//! This module is pure: no runtime, no sockets, no clock. Line parsing of the
//! status line and header block is delegated to `httparse`; body framing
//! (Content-Length, chunked with extensions and trailers, close-delimited),
//! interim 1xx responses, no-body statuses and keep-alive semantics follow
//! RFC 9112 and are implemented here.
//!
//! Security notes: header values typically come from JWT claims, so every
//! byte of the request head is validated before anything is written (CR, LF
//! and other control characters in a value yield
//! [`Http1Error::InvalidHeaderValue`]), and callers cannot override the
//! framing headers (`Host`, `Content-Length`, `Transfer-Encoding`,
//! `Connection`). What is the same for every request is checked once and kept
//! encoded: the `Host` line per backend ([`HostLine`]), a client's own headers
//! ([`HeaderBlock`]); only the per-request parts are checked per request.

use bytes::{Buf, Bytes, BytesMut};

/// Largest accepted response head (status line + headers), and also the cap
/// on the total size of chunked trailers.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Largest number of header fields accepted in one response head.
pub const MAX_HEADERS: usize = 64;
/// Largest accepted chunk-size line, including chunk extensions.
const MAX_CHUNK_LINE: usize = 4 * 1024;

/// Errors produced while encoding a request or parsing a response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Http1Error {
    /// The request method is empty or not an RFC 9110 token.
    #[error("invalid request method")]
    InvalidMethod,
    /// The request target is empty, does not start with `/`, or contains
    /// whitespace, control or non-ASCII bytes.
    #[error("invalid request target")]
    InvalidRequestTarget,
    /// The Host value is empty or contains forbidden bytes.
    #[error("invalid host")]
    InvalidHost,
    /// A header name is empty or not an RFC 9110 token.
    #[error("invalid header name {0:?}")]
    InvalidHeaderName(String),
    /// A header value contains CR, LF, NUL or another control character.
    /// The value itself is deliberately not included (it may be a secret).
    #[error("invalid value for header {name:?}")]
    InvalidHeaderValue { name: String },
    /// The caller tried to set a header that the codec owns.
    #[error("header {0:?} is set by the codec and may not be supplied")]
    ReservedHeader(String),
    /// The response head (or the chunked trailer section) exceeds
    /// [`MAX_HEAD_BYTES`].
    #[error("response head exceeds {MAX_HEAD_BYTES} bytes")]
    HeadTooLarge,
    /// The response body exceeds the parser's configured limit.
    #[error("response body exceeds {limit} bytes")]
    BodyTooLarge { limit: usize },
    /// The status line or header block is malformed.
    #[error("malformed response head: {0}")]
    Parse(httparse::Error),
    /// Missing, malformed or conflicting Content-Length values.
    #[error("invalid Content-Length")]
    InvalidContentLength,
    /// A Transfer-Encoding other than `chunked` (e.g. `gzip, chunked`).
    #[error("unsupported Transfer-Encoding")]
    UnsupportedTransferEncoding,
    /// Malformed chunked body.
    #[error("invalid chunked encoding: {0}")]
    InvalidChunk(&'static str),
    /// `101 Switching Protocols` although no upgrade was requested.
    #[error("unexpected 101 Switching Protocols")]
    UnexpectedUpgrade,
    /// EOF before any byte of a response arrived.
    #[error("connection closed before a response was received")]
    ConnectionClosed,
    /// EOF in the middle of a response.
    #[error("connection closed in the middle of a response")]
    IncompleteResponse,
    /// Bytes arrived while no request was outstanding on the connection.
    #[error("response bytes arrived with no request outstanding")]
    Unsolicited,
}

/// What [`encode_request_head`] needs to write a request head.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    /// The request line and `Host`, checked and encoded by [`RequestLine::new`].
    pub line: &'a RequestLine,
    /// Extra header fields, written in order after the codec's own.
    pub headers: &'a [(&'a str, &'a str)],
    /// Constant header lines ([`CONTENT_JSON`] and its siblings), written
    /// after `headers`.
    pub fixed: &'a HeaderBlock,
    /// Header lines already checked by [`HeaderBlock::new`] (written after `fixed`):
    /// the ones that are the same for every request of a client, checked once.
    pub block: &'a HeaderBlock,
    /// Finishes `block`'s open last line, if it has one, as 16 lowercase hex digits
    /// (see [`HeaderBlock::with_open_tail`]); unused otherwise.
    pub tail_id: u64,
    /// Exact body length; `Content-Length` is always written (also for 0).
    pub content_length: usize,
}

/// `{method} {base}{path} HTTP/1.1\r\nHost: {host}\r\n`, checked and encoded once.
///
/// Why: a backend pool's requests mostly go to one endpoint, so a pool keeps the last
/// line it encoded and, while requests keep to it, writes it with one copy instead of
/// checking the method and the target and writing five pieces per request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLine {
    method: Box<str>,
    base: Box<str>,
    path: Box<str>,
    bytes: Bytes,
}

impl RequestLine {
    /// Checks `method` (a token), `base` (empty or from `/`: a backend's base path such
    /// as `/api`, written before `path` so that the two are never joined per request)
    /// and `path` (origin form, e.g. `/v1/x?y=1`), and encodes them with `host`.
    pub fn new(method: &str, base: &str, path: &str, host: &HostLine) -> Result<Self, Http1Error> {
        if !is_token(method) {
            return Err(Http1Error::InvalidMethod);
        }
        if !path.starts_with('/')
            || !(base.is_empty() || base.starts_with('/'))
            || !is_target(base.as_bytes())
            || !is_target(path.as_bytes())
        {
            return Err(Http1Error::InvalidRequestTarget);
        }
        let mut out =
            BytesMut::with_capacity(method.len() + 1 + base.len() + path.len() + host.0.len());
        out.extend_from_slice(method.as_bytes());
        out.extend_from_slice(b" ");
        out.extend_from_slice(base.as_bytes());
        out.extend_from_slice(path.as_bytes());
        out.extend_from_slice(&host.0);
        Ok(RequestLine {
            method: method.into(),
            base: base.into(),
            path: path.into(),
            bytes: out.freeze(),
        })
    }

    /// Whether this is the line of `method`, `base` and `path` (the host is the
    /// pool's own).
    pub fn is_for(&self, method: &str, base: &str, path: &str) -> bool {
        same(&self.path, path) && same(&self.method, method) && same(&self.base, base)
    }
}

/// `a == b` for the short strings of a request line, byte by byte in line: a call to
/// the C library's `memcmp` per string cost more natively than the whole line's copy.
#[inline]
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(true, |eq, (x, y)| eq & (x == y))
}

/// Append a complete HTTP/1.1 request head to `out`.
///
/// Writes the request line, `Host`, the extra headers, `fixed`, `block` (its open
/// line finished with `tail_id`), `Content-Length` and the terminating blank line.
/// No `Connection` header: HTTP/1.1 connections are persistent unless a side says
/// `close`. Everything is validated first (the request line and host when its
/// [`RequestLine`] was made), so on error nothing has been appended to `out`.
pub fn encode_request_head(head: &RequestHead<'_>, out: &mut BytesMut) -> Result<(), Http1Error> {
    let mut size = head.line.bytes.len();
    let mut len_digits = [0u8; 20];
    let len_digits = format_decimal(head.content_length as u64, &mut len_digits);

    // Request line and Host, the headers, the blocks, Content-Length, blank line.
    for (name, value) in head.headers {
        check_header(name, value)?;
        size += name.len() + value.len() + 4;
    }
    size += head.fixed.lines.len() + head.block.lines.len() + 16 + len_digits.len() + 4;
    if head.block.open {
        size += 16 + 2;
    }

    out.reserve(size);
    out.extend_from_slice(&head.line.bytes);
    for (name, value) in head.headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(&head.fixed.lines);
    out.extend_from_slice(&head.block.lines);
    if head.block.open {
        out.extend_from_slice(&hex16(head.tail_id));
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Content-Length: ");
    out.extend_from_slice(len_digits);
    out.extend_from_slice(b"\r\n\r\n");
    Ok(())
}

/// ` HTTP/1.1\r\nHost: {host}\r\n`: the end of the request line and the `Host`
/// line, the same for every request to one backend, so checked and encoded once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostLine(Bytes);

impl HostLine {
    /// Checks `host` (`host[:port]`: visible ASCII, no `/ ? # @ \\`) and encodes it.
    pub fn new(host: &str) -> Result<HostLine, Http1Error> {
        if host.is_empty()
            || !is_target(host.as_bytes())
            || host
                .bytes()
                .any(|b| matches!(b, b'/' | b'?' | b'#' | b'@' | b'\\'))
        {
            return Err(Http1Error::InvalidHost);
        }
        let mut line = Vec::with_capacity(host.len() + 19);
        line.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        line.extend_from_slice(host.as_bytes());
        line.extend_from_slice(b"\r\n");
        Ok(HostLine(Bytes::from(line)))
    }
}

/// Visible ASCII only (the bytes a request target may hold).
fn is_target(s: &[u8]) -> bool {
    s.iter().all(|&b| (0x21..=0x7e).contains(&b))
}

/// Header lines checked once and kept encoded (`Name: value\r\n` each), for headers
/// that every request of one client carries.
///
/// A block may end in an *open* line: a header whose value starts the same for every
/// request and ends in a per-request number (`X-Correlation-Id: {session}:{id}`).
/// The constant part is checked here, once; [`encode_request_head`] finishes the
/// line with [`RequestHead::tail_id`] as 16 hex digits, which need no check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderBlock {
    lines: Bytes,
    open: bool,
}

impl HeaderBlock {
    /// Checks and encodes `headers` (the same rules as [`RequestHead::headers`]).
    pub fn new(headers: &[(&str, &str)]) -> Result<HeaderBlock, Http1Error> {
        Ok(HeaderBlock {
            lines: Bytes::from(encode_lines(headers)?),
            open: false,
        })
    }

    /// Like [`HeaderBlock::new`], then an open last line `{name}: {prefix}` that each
    /// request finishes with its [`RequestHead::tail_id`] (16 lowercase hex digits).
    pub fn with_open_tail(
        headers: &[(&str, &str)],
        name: &str,
        prefix: &str,
    ) -> Result<HeaderBlock, Http1Error> {
        // The value is checked as the prefix plus a stand-in for the digits (a name
        // check needs a value, and an empty prefix is fine once digits follow).
        check_header(name, &format!("{prefix}0"))?;
        let mut lines = encode_lines(headers)?;
        lines.extend_from_slice(name.as_bytes());
        lines.extend_from_slice(b": ");
        lines.extend_from_slice(prefix.as_bytes());
        Ok(HeaderBlock {
            lines: Bytes::from(lines),
            open: true,
        })
    }

    /// No headers.
    pub fn empty() -> &'static HeaderBlock {
        static EMPTY: HeaderBlock = HeaderBlock::constant(b"");
        &EMPTY
    }

    /// A block written as it is (the statics below; a test checks them).
    const fn constant(lines: &'static [u8]) -> HeaderBlock {
        HeaderBlock {
            lines: Bytes::from_static(lines),
            open: false,
        }
    }
}

/// `headers`, checked, as `Name: value\r\n` lines.
fn encode_lines(headers: &[(&str, &str)]) -> Result<Vec<u8>, Http1Error> {
    let mut out = Vec::new();
    for (name, value) in headers {
        check_header(name, value)?;
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    Ok(out)
}

/// `Accept: application/json` (a request without a body). The constant blocks are
/// written as they are, unchecked: a test checks them.
pub static ACCEPT_JSON: HeaderBlock = HeaderBlock::constant(b"Accept: application/json\r\n");
/// A JSON body, answered in JSON.
pub static CONTENT_JSON: HeaderBlock = HeaderBlock::constant(
    b"Content-Type: application/json; charset=utf-8\r\nAccept: application/json\r\n",
);
/// A binary body, answered in JSON.
pub static CONTENT_BINARY: HeaderBlock = HeaderBlock::constant(
    b"Content-Type: application/octet-stream\r\nAccept: application/json\r\n",
);

/// A header field the caller may send: a token name the codec does not own, and a
/// value without control characters.
fn check_header(name: &str, value: &str) -> Result<(), Http1Error> {
    if !is_token(name) {
        return Err(Http1Error::InvalidHeaderName(name.to_owned()));
    }
    if is_reserved(name) {
        return Err(Http1Error::ReservedHeader(name.to_owned()));
    }
    if !is_field_value(value.as_bytes()) {
        return Err(Http1Error::InvalidHeaderValue {
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// field-value: no CTLs except HTAB (this rejects CR, LF and NUL), no DEL.
///
/// Eight bytes at a time: a per-request header value (the correlation id) is
/// checked on every forwarded request. A word with a byte below 0x20 or a DEL
/// is looked at byte by byte, where HTAB passes.
fn is_field_value(v: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let bytewise = |c: &[u8]| c.iter().all(|&b| FIELD_VALUE[usize::from(b)]);
    let mut words = v.chunks_exact(8);
    for c in &mut words {
        let w = u64::from_ne_bytes(c.try_into().unwrap_or([0; 8]));
        // A byte below 0x20 (high bit clear before, set after subtracting), or a
        // byte equal to 0x7f (zero after the xor).
        let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
        let x = w ^ (ONES * 0x7f);
        let del = x.wrapping_sub(ONES) & !x & HIGH;
        if (below_space | del) != 0 && !bytewise(c) {
            return false;
        }
    }
    bytewise(words.remainder())
}

/// `n` as 16 lowercase hex digits, most significant first.
fn hex16(n: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (pair, byte) in out.chunks_exact_mut(2).zip(n.to_be_bytes()) {
        pair.copy_from_slice(&super::hex_pair(byte));
    }
    out
}

fn format_decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// RFC 9110 `tchar`s, as a table: every request head checks a few dozen header-name
/// bytes, so one load per byte instead of a chain of comparisons.
static TCHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        b += 1;
    }
    t
};

/// Bytes allowed in a header value: no controls but HTAB (so no CR, LF, NUL), no DEL.
static FIELD_VALUE: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = (b >= 0x20 && b != 0x7f) || b == 0x09;
        b += 1;
    }
    t
};

/// RFC 9110 `token`: one or more tchars.
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| TCHAR[usize::from(b)])
}

fn is_reserved(name: &str) -> bool {
    // Compared only when the length matches (most names match none).
    matches!(name.len(), 4 | 10 | 14 | 17)
        && ["host", "content-length", "transfer-encoding", "connection"]
            .iter()
            .any(|r| name.eq_ignore_ascii_case(r))
}

/// A complete final (non-1xx) response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Bytes,
    /// Whether the connection may be reused for another request.
    pub keep_alive: bool,
}

#[derive(Debug)]
enum State {
    /// Waiting for a complete response head.
    Head,
    /// Content-Length framed body; the body stays in the caller's buffer
    /// until it is complete and is then split off without copying.
    Fixed {
        status: u16,
        keep_alive: bool,
        len: usize,
    },
    /// Chunked body, decoded into `body`.
    Chunked {
        status: u16,
        keep_alive: bool,
        body: BytesMut,
        phase: ChunkPhase,
        trailer_bytes: usize,
    },
    /// Body delimited by connection close; stays in the caller's buffer.
    UntilClose { status: u16 },
}

#[derive(Debug, Clone, Copy)]
enum ChunkPhase {
    Size,
    Data(usize),
    DataEnd,
    Trailers,
}

/// Incremental HTTP/1.x response parser.
///
/// Feed it the connection's read buffer after every read; it consumes bytes
/// from the front of the buffer and leaves anything after the end of the
/// response in place (pipelined leftovers). After an error the parser and the
/// connection must be discarded.
#[derive(Debug)]
pub struct ResponseParser {
    max_body: usize,
    head_request: bool,
    state: State,
    /// Bytes at the front of the buffer already scanned for the end of the
    /// head (avoids quadratic rescans when fed in small pieces).
    scanned: usize,
    /// Whether any byte of the current response (incl. skipped 1xx heads)
    /// was consumed; distinguishes ConnectionClosed from IncompleteResponse.
    started: bool,
}

/// Facts extracted from a parsed head before the buffer is modified.
struct HeadInfo {
    status: u16,
    keep_alive: bool,
    framing: Framing,
}

enum Framing {
    None,
    Length(usize),
    Chunked,
    UntilClose,
}

impl ResponseParser {
    /// New parser; responses with a body larger than `max_body` bytes fail
    /// with [`Http1Error::BodyTooLarge`].
    pub fn new(max_body: usize) -> Self {
        ResponseParser {
            max_body,
            head_request: false,
            state: State::Head,
            scanned: 0,
            started: false,
        }
    }

    /// Mark the outstanding request as HEAD: the response has no body
    /// whatever its headers say.
    pub fn head_request(mut self, yes: bool) -> Self {
        self.head_request = yes;
        self
    }

    /// Try to parse one complete response from the front of `buf`.
    ///
    /// Returns `Ok(None)` when more bytes are needed. Consumed bytes are
    /// removed from `buf`; bytes after the response are left in it.
    pub fn parse(&mut self, buf: &mut BytesMut) -> Result<Option<Response>, Http1Error> {
        loop {
            match &mut self.state {
                State::Head => {
                    let Some(info) = self.parse_head(buf)? else {
                        return Ok(None);
                    };
                    match info.framing {
                        Framing::None => {
                            return Ok(Some(self.finish(
                                info.status,
                                Bytes::new(),
                                info.keep_alive,
                            )))
                        }
                        Framing::Length(len) => {
                            self.state = State::Fixed {
                                status: info.status,
                                keep_alive: info.keep_alive,
                                len,
                            }
                        }
                        Framing::Chunked => {
                            self.state = State::Chunked {
                                status: info.status,
                                keep_alive: info.keep_alive,
                                body: BytesMut::new(),
                                phase: ChunkPhase::Size,
                                trailer_bytes: 0,
                            }
                        }
                        Framing::UntilClose => {
                            self.state = State::UntilClose {
                                status: info.status,
                            }
                        }
                    }
                }
                State::Fixed {
                    status,
                    keep_alive,
                    len,
                } => {
                    if buf.len() < *len {
                        return Ok(None);
                    }
                    let (status, keep_alive) = (*status, *keep_alive);
                    let body = buf.split_to(*len).freeze();
                    return Ok(Some(self.finish(status, body, keep_alive)));
                }
                State::UntilClose { .. } => {
                    if buf.len() > self.max_body {
                        return Err(Http1Error::BodyTooLarge {
                            limit: self.max_body,
                        });
                    }
                    return Ok(None);
                }
                State::Chunked {
                    status,
                    keep_alive,
                    body,
                    phase,
                    trailer_bytes,
                } => {
                    if !parse_chunked(buf, body, phase, trailer_bytes, self.max_body)? {
                        return Ok(None);
                    }
                    let (status, keep_alive) = (*status, *keep_alive);
                    let body = std::mem::take(body).freeze();
                    return Ok(Some(self.finish(status, body, keep_alive)));
                }
            }
        }
    }

    /// The connection reached EOF: finish a close-delimited response or
    /// report why the response is incomplete.
    pub fn parse_eof(&mut self, buf: &mut BytesMut) -> Result<Response, Http1Error> {
        if let Some(resp) = self.parse(buf)? {
            return Ok(resp);
        }
        match self.state {
            State::UntilClose { status } => {
                let body = buf.split().freeze();
                Ok(self.finish(status, body, false))
            }
            State::Head if !self.started && buf.is_empty() => Err(Http1Error::ConnectionClosed),
            _ => Err(Http1Error::IncompleteResponse),
        }
    }

    fn finish(&mut self, status: u16, body: Bytes, keep_alive: bool) -> Response {
        self.state = State::Head;
        self.scanned = 0;
        self.started = false;
        Response {
            status,
            body,
            keep_alive,
        }
    }

    /// Parse (and consume) one final response head, skipping 1xx heads.
    ///
    /// A head's first look hands the buffer to httparse directly: heads nearly
    /// always arrive whole, and finding the blank line first would scan them twice.
    /// Once a head was found incomplete, its end is looked for first (resumably,
    /// from where the last look stopped), so a head arriving in many small reads
    /// is parsed once, not once per read.
    fn parse_head(&mut self, buf: &mut BytesMut) -> Result<Option<HeadInfo>, Http1Error> {
        loop {
            // (A malformed head takes the second way too, which tells a head too
            // large from a malformed one.)
            let parsed = if self.scanned == 0 {
                self.interpret_head(&buf[..buf.len().min(MAX_HEAD_BYTES)])
                    .ok()
                    .flatten()
            } else {
                None
            };
            let (end, info) = match parsed {
                Some(done) => done,
                None => {
                    let Some(end) = self.find_head_end(buf)? else {
                        return Ok(None);
                    };
                    // The blank line may end just past the limit.
                    if end > MAX_HEAD_BYTES {
                        return Err(Http1Error::HeadTooLarge);
                    }
                    // The whole head is there, so httparse must find it complete.
                    match self.interpret_head(&buf[..end])? {
                        Some((n, info)) if n == end => (n, info),
                        _ => return Err(Http1Error::Parse(httparse::Error::NewLine)),
                    }
                }
            };
            buf.advance(end);
            self.scanned = 0;
            self.started = true;
            if let Some(info) = info {
                return Ok(Some(info));
            }
            // 1xx interim response: skipped, parse the next head.
        }
    }

    /// Locate the end of the head (after the blank line), accepting both
    /// CRLF and bare LF line endings as httparse does.
    fn find_head_end(&mut self, buf: &[u8]) -> Result<Option<usize>, Http1Error> {
        let limit = buf.len().min(MAX_HEAD_BYTES);
        let mut i = self.scanned;
        // Line ends found with memchr (SIMD), not byte by byte.
        loop {
            let Some(at) = memchr::memchr(b'\n', &buf[i.min(limit)..limit]) else {
                // Scanned to the end: start from there when more bytes arrive.
                i = limit;
                break;
            };
            i += at;
            match (buf.get(i + 1), buf.get(i + 2)) {
                (Some(b'\n'), _) => return Ok(Some(i + 2)),
                (Some(b'\r'), Some(b'\n')) => return Ok(Some(i + 3)),
                // The end may be here once more bytes arrive: look again from it.
                (None, _) | (Some(b'\r'), None) => break,
                _ => {}
            }
            i += 1;
        }
        self.scanned = i;
        if buf.len() >= MAX_HEAD_BYTES {
            return Err(Http1Error::HeadTooLarge);
        }
        Ok(None)
    }

    /// Parse and interpret the head at the front of `head`: `None` while it is
    /// incomplete, else its length and what it says (`None` for a skippable 1xx
    /// response).
    fn interpret_head(&self, head: &[u8]) -> Result<Option<(usize, Option<HeadInfo>)>, Http1Error> {
        // Left uninitialised for httparse to fill: zeroing 64 headers per response
        // cost more than parsing a small head.
        let mut headers =
            [const { std::mem::MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut []);
        let len = match httparse::ParserConfig::default()
            .parse_response_with_uninit_headers(&mut resp, head, &mut headers)
            .map_err(Http1Error::Parse)?
        {
            httparse::Status::Complete(n) => n,
            httparse::Status::Partial => return Ok(None),
        };
        let status = resp.code.unwrap_or(0);
        let http10 = resp.version == Some(0);
        if status == 101 {
            return Err(Http1Error::UnexpectedUpgrade);
        }
        if (100..200).contains(&status) {
            return Ok(Some((len, None)));
        }

        let mut conn_close = false;
        let mut conn_keep_alive = false;
        let mut content_length: Option<usize> = None;
        let mut chunked = false;
        let mut has_te = false;
        for h in resp.headers.iter() {
            if h.name.eq_ignore_ascii_case("connection") {
                for token in h.value.split(|&b| b == b',') {
                    let token = token.trim_ascii();
                    if token.eq_ignore_ascii_case(b"close") {
                        conn_close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        conn_keep_alive = true;
                    }
                }
            } else if h.name.eq_ignore_ascii_case("content-length") {
                // A list of identical values ("5, 5") is allowed; anything
                // else is a framing conflict.
                for v in h.value.split(|&b| b == b',') {
                    let n = parse_content_length(v.trim_ascii())?;
                    if content_length.is_some_and(|prev| prev != n) {
                        return Err(Http1Error::InvalidContentLength);
                    }
                    content_length = Some(n);
                }
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                for coding in h.value.split(|&b| b == b',') {
                    let coding = coding.trim_ascii();
                    if coding.is_empty() {
                        continue;
                    }
                    // `chunked` must be the final coding and appear once; we
                    // do not decode any other coding.
                    if chunked || !coding.eq_ignore_ascii_case(b"chunked") {
                        return Err(Http1Error::UnsupportedTransferEncoding);
                    }
                    chunked = true;
                }
                has_te = true;
            }
        }
        if has_te && !chunked {
            return Err(Http1Error::UnsupportedTransferEncoding);
        }

        let mut keep_alive = if http10 {
            conn_keep_alive && !conn_close
        } else {
            !conn_close
        };
        let framing = if self.head_request || status == 204 || status == 304 {
            Framing::None
        } else if chunked {
            // TE overrides CL; both present, or TE on HTTP/1.0, means the
            // framing is suspect: finish this response, then close.
            if content_length.is_some() || http10 {
                keep_alive = false;
            }
            Framing::Chunked
        } else if let Some(len) = content_length {
            if len > self.max_body {
                return Err(Http1Error::BodyTooLarge {
                    limit: self.max_body,
                });
            }
            if len == 0 {
                Framing::None
            } else {
                Framing::Length(len)
            }
        } else {
            keep_alive = false;
            Framing::UntilClose
        };
        Ok(Some((
            len,
            Some(HeadInfo {
                status,
                keep_alive,
                framing,
            }),
        )))
    }
}

fn parse_content_length(v: &[u8]) -> Result<usize, Http1Error> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return Err(Http1Error::InvalidContentLength);
    }
    let n = v
        .iter()
        .fold(0u64, |acc, &d| acc * 10 + u64::from(d - b'0'));
    usize::try_from(n).map_err(|_| Http1Error::InvalidContentLength)
}

/// Advance the chunked decoder; `Ok(true)` once the last chunk and the
/// trailer section have been consumed.
fn parse_chunked(
    buf: &mut BytesMut,
    body: &mut BytesMut,
    phase: &mut ChunkPhase,
    trailer_bytes: &mut usize,
    max_body: usize,
) -> Result<bool, Http1Error> {
    loop {
        match *phase {
            ChunkPhase::Size => {
                let Some(nl) = buf.iter().take(MAX_CHUNK_LINE).position(|&b| b == b'\n') else {
                    if buf.len() >= MAX_CHUNK_LINE {
                        return Err(Http1Error::InvalidChunk("chunk size line too long"));
                    }
                    return Ok(false);
                };
                let size = parse_chunk_size(&buf[..nl])?;
                buf.advance(nl + 1);
                if size == 0 {
                    *phase = ChunkPhase::Trailers;
                } else {
                    if size > max_body.saturating_sub(body.len()) {
                        return Err(Http1Error::BodyTooLarge { limit: max_body });
                    }
                    body.reserve(size);
                    *phase = ChunkPhase::Data(size);
                }
            }
            ChunkPhase::Data(remaining) => {
                let n = remaining.min(buf.len());
                if n == 0 {
                    return Ok(false);
                }
                body.extend_from_slice(&buf[..n]);
                buf.advance(n);
                *phase = if n == remaining {
                    ChunkPhase::DataEnd
                } else {
                    ChunkPhase::Data(remaining - n)
                };
            }
            ChunkPhase::DataEnd => match buf.first().copied() {
                None => return Ok(false),
                Some(b'\r') => match buf.get(1).copied() {
                    None => return Ok(false),
                    Some(b'\n') => {
                        buf.advance(2);
                        *phase = ChunkPhase::Size;
                    }
                    Some(_) => {
                        return Err(Http1Error::InvalidChunk("missing CRLF after chunk data"))
                    }
                },
                Some(_) => return Err(Http1Error::InvalidChunk("missing CRLF after chunk data")),
            },
            ChunkPhase::Trailers => {
                let room = MAX_HEAD_BYTES - *trailer_bytes;
                let Some(nl) = buf.iter().take(room).position(|&b| b == b'\n') else {
                    if buf.len() >= room {
                        return Err(Http1Error::HeadTooLarge);
                    }
                    return Ok(false);
                };
                let line = &buf[..nl];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.is_empty() {
                    buf.advance(nl + 1);
                    return Ok(true);
                }
                // Trailer fields are not surfaced; they only must be sane.
                if !line.contains(&b':') || line.iter().any(|&b| b == b'\r' || b == 0) {
                    return Err(Http1Error::InvalidChunk("malformed trailer field"));
                }
                buf.advance(nl + 1);
                *trailer_bytes += nl + 1;
            }
        }
    }
}

/// Parse `chunk-size [ BWS ; chunk-ext ] CRLF` (without the LF).
fn parse_chunk_size(line: &[u8]) -> Result<usize, Http1Error> {
    let line = line.strip_suffix(b"\r").ok_or(Http1Error::InvalidChunk(
        "chunk size line not terminated by CRLF",
    ))?;
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(Http1Error::InvalidChunk("missing chunk size"));
    }
    let mut size: usize = 0;
    for &b in &line[..digits] {
        let d = (b as char).to_digit(16).unwrap_or(0) as usize;
        size = size
            .checked_mul(16)
            .and_then(|s| s.checked_add(d))
            .ok_or(Http1Error::InvalidChunk("chunk size overflows"))?;
    }
    let rest = line[digits..].trim_ascii_start();
    if !rest.is_empty() && rest[0] != b';' {
        return Err(Http1Error::InvalidChunk("garbage after chunk size"));
    }
    // Chunk extensions are ignored, but must not smuggle control bytes.
    if rest.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(Http1Error::InvalidChunk(
            "control character in chunk extension",
        ));
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    fn encode(head: &RequestHead<'_>) -> Result<String, Http1Error> {
        let mut out = BytesMut::new();
        encode_request_head(head, &mut out)?;
        Ok(String::from_utf8(out.to_vec()).unwrap())
    }

    fn test_host() -> &'static HostLine {
        static HOST: std::sync::OnceLock<HostLine> = std::sync::OnceLock::new();
        HOST.get_or_init(|| HostLine::new("backend.local:8080").unwrap())
    }

    fn test_line() -> &'static RequestLine {
        static LINE: std::sync::OnceLock<RequestLine> = std::sync::OnceLock::new();
        LINE.get_or_init(|| RequestLine::new("POST", "/svc", "/v1/do?x=1", test_host()).unwrap())
    }

    fn head<'a>(headers: &'a [(&'a str, &'a str)], len: usize) -> RequestHead<'a> {
        RequestHead {
            line: test_line(),
            headers,
            fixed: HeaderBlock::empty(),
            block: HeaderBlock::empty(),
            tail_id: 0,
            content_length: len,
        }
    }

    /// Parse everything in one go; returns the response and the leftover.
    fn parse_all(input: &[u8], max_body: usize) -> Result<Option<(Response, Vec<u8>)>, Http1Error> {
        let mut p = ResponseParser::new(max_body);
        let mut buf = BytesMut::from(input);
        Ok(p.parse(&mut buf)?.map(|r| (r, buf.to_vec())))
    }

    /// Feed one byte at a time; every prefix must yield `None` until the
    /// response is complete, then the rest must stay in the buffer.
    fn parse_bytewise(input: &[u8], max_body: usize) -> (Response, Vec<u8>) {
        let mut p = ResponseParser::new(max_body);
        let mut buf = BytesMut::new();
        for (i, &b) in input.iter().enumerate() {
            buf.put_u8(b);
            if let Some(r) = p.parse(&mut buf).unwrap() {
                let mut rest = buf.to_vec();
                rest.extend_from_slice(&input[i + 1..]);
                return (r, rest);
            }
        }
        panic!("incomplete response");
    }

    #[test]
    fn encodes_head_in_order() {
        let s = encode(&head(
            &[
                ("X-User", "42"),
                ("Content-Type", "application/octet-stream"),
            ],
            5,
        ))
        .unwrap();
        assert_eq!(
            s,
            "POST /svc/v1/do?x=1 HTTP/1.1\r\nHost: backend.local:8080\r\n\
             X-User: 42\r\nContent-Type: application/octet-stream\r\nContent-Length: 5\r\n\r\n"
        );
    }

    #[test]
    fn encodes_zero_and_large_content_length() {
        assert!(encode(&head(&[], 0))
            .unwrap()
            .contains("\r\nContent-Length: 0\r\n"));
        assert!(encode(&head(&[], 1_234_567_890))
            .unwrap()
            .contains("\r\nContent-Length: 1234567890\r\n"));
        assert!(encode(&head(&[("X-Tab", "a\tb")], 0)).is_ok());
    }

    #[test]
    fn rejects_header_injection() {
        for evil in ["a\r\nX-Admin: 1", "a\nb", "a\rb", "nul\0", "del\x7f"] {
            let mut out = BytesMut::from(&b"keep"[..]);
            let err = encode_request_head(&head(&[("X-Claim", evil)], 0), &mut out).unwrap_err();
            assert_eq!(
                err,
                Http1Error::InvalidHeaderValue {
                    name: "X-Claim".into()
                }
            );
            assert_eq!(&out[..], b"keep", "nothing appended on error");
        }
    }

    #[test]
    fn rejects_bad_names_targets_methods_and_reserved_headers() {
        assert_eq!(
            encode(&head(&[("Bad Name", "v")], 0)),
            Err(Http1Error::InvalidHeaderName("Bad Name".into()))
        );
        assert_eq!(
            encode(&head(&[("X:y", "v")], 0)),
            Err(Http1Error::InvalidHeaderName("X:y".into()))
        );
        for reserved in ["content-length", "Transfer-Encoding", "HOST", "Connection"] {
            assert_eq!(
                encode(&head(&[(reserved, "1")], 0)),
                Err(Http1Error::ReservedHeader(reserved.into()))
            );
        }
        for path in ["", "x", "/a b", "/a\r\nX: y", "/\u{e9}"] {
            assert_eq!(
                RequestLine::new("POST", "/svc", path, test_host()),
                Err(Http1Error::InvalidRequestTarget),
                "{path:?}"
            );
        }
        for base in ["svc", "/s c", "/s\r\n"] {
            assert_eq!(
                RequestLine::new("POST", base, "/v1/do?x=1", test_host()),
                Err(Http1Error::InvalidRequestTarget),
                "{base:?}"
            );
        }
        for method in ["", "PO ST", "GET\r\n"] {
            assert_eq!(
                RequestLine::new(method, "/svc", "/v1/do?x=1", test_host()),
                Err(Http1Error::InvalidMethod)
            );
        }
        for host in ["", "a b", "h\r\nX: y", "user@h", "h/x"] {
            assert_eq!(
                HostLine::new(host),
                Err(Http1Error::InvalidHost),
                "{host:?}"
            );
        }
        for value in [
            "a\rb",
            "0123456789abcdef\n",
            "\x7f",
            "01234567\x00",
            "tab\tok\u{e9}x\x01",
        ] {
            assert_eq!(
                encode(&head(&[("X-V", value)], 0)),
                Err(Http1Error::InvalidHeaderValue { name: "X-V".into() }),
                "{value:?}"
            );
        }
        for value in [
            "",
            "tab\tinside and more than eight",
            "\u{e9}t\u{e9} \u{1f600}",
            "~~~~~~~~~~",
        ] {
            assert!(encode(&head(&[("X-V", value)], 0)).is_ok(), "{value:?}");
        }
    }

    #[test]
    fn header_block_is_checked_once_and_written_after_the_extra_headers() {
        let block = HeaderBlock::new(&[("X-Session", "s-1"), ("X-Roles", "a,b")]).unwrap();
        let h = RequestHead {
            fixed: HeaderBlock::empty(),
            block: &block,
            ..head(&[("X-Correlation-Id", "s-1:01")], 0)
        };
        let text = encode(&h).unwrap();
        assert!(
            text.ends_with(
                "X-Correlation-Id: s-1:01\r\nX-Session: s-1\r\nX-Roles: a,b\r\nContent-Length: 0\r\n\r\n"
            ),
            "{text:?}"
        );
        assert_eq!(
            HeaderBlock::new(&[("X-Roles", "a\r\nX-Admin: yes")]),
            Err(Http1Error::InvalidHeaderValue {
                name: "X-Roles".into()
            })
        );
        assert_eq!(
            HeaderBlock::new(&[("Host", "h")]),
            Err(Http1Error::ReservedHeader("Host".into()))
        );
    }

    #[test]
    fn content_length_response() {
        let input = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello";
        let (r, rest) = parse_all(input, 1024).unwrap().unwrap();
        assert_eq!(
            (r.status, &r.body[..], r.keep_alive),
            (200, &b"hello"[..], true)
        );
        assert!(rest.is_empty());
        assert_eq!(parse_bytewise(input, 1024), (r, vec![]));
    }

    #[test]
    fn partial_returns_none_and_keeps_bytes() {
        let mut p = ResponseParser::new(1024);
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel"[..]);
        assert_eq!(p.parse(&mut buf).unwrap(), None);
        assert_eq!(&buf[..], b"hel", "head consumed, partial body kept");
        buf.put_slice(b"lo");
        assert_eq!(&p.parse(&mut buf).unwrap().unwrap().body[..], b"hello");
    }

    #[test]
    fn pipelined_leftovers_stay_in_buffer() {
        let first = &b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none"[..];
        let second =
            &b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\ntwo\r\n0\r\n\r\n"[..];
        let third = &b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 2"[..];
        let input = [first, second, third].concat();
        let mut p = ResponseParser::new(1024);
        let mut buf = BytesMut::from(&input[..]);
        let r1 = p.parse(&mut buf).unwrap().unwrap();
        assert_eq!(&buf[..], &input[first.len()..]);
        let r2 = p.parse(&mut buf).unwrap().unwrap();
        let r3 = p.parse(&mut buf).unwrap().unwrap();
        assert_eq!((r1.status, &r1.body[..]), (200, &b"one"[..]));
        assert_eq!((r2.status, &r2.body[..]), (201, &b"two"[..]));
        assert_eq!((r3.status, r3.body.len(), r3.keep_alive), (204, 0, true));
        assert_eq!(&buf[..], b"HTTP/1.1 2");
        assert_eq!(p.parse(&mut buf).unwrap(), None);

        let (r, rest) = parse_bytewise(&input, 1024);
        assert_eq!(r, r1);
        assert_eq!(rest, &input[first.len()..]);
    }

    #[test]
    fn chunked_with_extensions_and_trailers() {
        let input = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
            5;name=value;q=\"x\"\r\nhello\r\n1 ; ext\r\n,\r\nB\r\n 0123456789\r\n0;last\r\n\
            X-Checksum: abc\r\nX-Other: 1\r\n\r\nNEXT";
        let (r, rest) = parse_all(input, 1024).unwrap().unwrap();
        assert_eq!(
            (r.status, &r.body[..], r.keep_alive),
            (200, &b"hello, 0123456789"[..], true)
        );
        assert_eq!(rest, b"NEXT");
        assert_eq!(parse_bytewise(input, 1024), (r, b"NEXT".to_vec()));
    }

    #[test]
    fn chunked_rejects_malformed() {
        let pre = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        for (body, why) in [
            ("zz\r\n", "missing chunk size"),
            ("5x\r\n", "garbage after chunk size"),
            ("3\r\nabcX", "missing CRLF after chunk data"),
            ("3\nabc", "chunk size line not terminated by CRLF"),
            ("fffffffffffffffffffff\r\n", "chunk size overflows"),
        ] {
            let input = format!("{pre}{body}");
            assert_eq!(
                parse_all(input.as_bytes(), usize::MAX),
                Err(Http1Error::InvalidChunk(why)),
                "{body:?}"
            );
        }
        let long = format!("{pre}1;{}", "e".repeat(MAX_CHUNK_LINE));
        assert!(matches!(
            parse_all(long.as_bytes(), 1024),
            Err(Http1Error::InvalidChunk(_))
        ));
        let bad_te = "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
        assert_eq!(
            parse_all(bad_te.as_bytes(), 1024),
            Err(Http1Error::UnsupportedTransferEncoding)
        );
        let bad_te = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n";
        assert_eq!(
            parse_all(bad_te.as_bytes(), 1024),
            Err(Http1Error::UnsupportedTransferEncoding)
        );
    }

    #[test]
    fn chunked_with_content_length_is_not_reused() {
        let input = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n";
        let (r, _) = parse_all(input, 1024).unwrap().unwrap();
        assert_eq!((&r.body[..], r.keep_alive), (&b"ok"[..], false));
    }

    #[test]
    fn close_delimited_body() {
        let input = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it";
        let mut p = ResponseParser::new(1024);
        let mut buf = BytesMut::new();
        for &b in input.iter() {
            buf.put_u8(b);
            assert_eq!(p.parse(&mut buf).unwrap(), None);
        }
        let r = p.parse_eof(&mut buf).unwrap();
        assert_eq!(
            (r.status, &r.body[..], r.keep_alive),
            (200, &b"all of it"[..], false)
        );
        assert!(buf.is_empty());
        // Empty close-delimited body.
        let mut buf = BytesMut::from(&b"HTTP/1.0 200 OK\r\n\r\n"[..]);
        let r = ResponseParser::new(10).parse_eof(&mut buf).unwrap();
        assert_eq!((r.body.len(), r.keep_alive), (0, false));
    }

    #[test]
    fn eof_errors() {
        let mut p = ResponseParser::new(1024);
        assert_eq!(
            p.parse_eof(&mut BytesMut::new()),
            Err(Http1Error::ConnectionClosed)
        );
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Le"[..]);
        assert_eq!(
            ResponseParser::new(1024).parse_eof(&mut buf),
            Err(Http1Error::IncompleteResponse)
        );
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort"[..]);
        assert_eq!(
            ResponseParser::new(1024).parse_eof(&mut buf),
            Err(Http1Error::IncompleteResponse)
        );
        let mut buf = BytesMut::from(&b"HTTP/1.1 100 Continue\r\n\r\n"[..]);
        assert_eq!(
            ResponseParser::new(1024).parse_eof(&mut buf),
            Err(Http1Error::IncompleteResponse)
        );
        // A complete response at EOF is still returned.
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"[..]);
        assert_eq!(
            &ResponseParser::new(1024).parse_eof(&mut buf).unwrap().body[..],
            b"ok"
        );
    }

    #[test]
    fn skips_interim_responses() {
        let input = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n\
            HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        let (r, rest) = parse_all(input, 1024).unwrap().unwrap();
        assert_eq!((r.status, &r.body[..]), (200, &b"ok"[..]));
        assert!(rest.is_empty());
        assert_eq!(parse_bytewise(input, 1024).0, r);
        assert_eq!(
            parse_all(b"HTTP/1.1 101 Switching Protocols\r\n\r\n", 1024),
            Err(Http1Error::UnexpectedUpgrade)
        );
    }

    #[test]
    fn no_body_statuses_and_head_requests() {
        for status in [204, 304] {
            let input = format!("HTTP/1.1 {status} X\r\nContent-Length: 10\r\n\r\nHTTP/1.1 200");
            let (r, rest) = parse_all(input.as_bytes(), 1024).unwrap().unwrap();
            assert_eq!((r.status, r.body.len(), r.keep_alive), (status, 0, true));
            assert_eq!(rest, b"HTTP/1.1 200");
        }
        let mut p = ResponseParser::new(1024).head_request(true);
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"[..]);
        let r = p.parse(&mut buf).unwrap().unwrap();
        assert_eq!((r.body.len(), r.keep_alive), (0, true));
        let (r, _) = parse_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 0)
            .unwrap()
            .unwrap();
        assert_eq!((r.body.len(), r.keep_alive), (0, true));
    }

    #[test]
    fn keep_alive_rules() {
        let ka = |input: &str| {
            parse_all(input.as_bytes(), 1024)
                .unwrap()
                .unwrap()
                .0
                .keep_alive
        };
        assert!(ka("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(!ka(
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        ));
        assert!(!ka(
            "HTTP/1.1 200 OK\r\nconnection: Upgrade, CLOSE\r\nContent-Length: 0\r\n\r\n"
        ));
        assert!(!ka("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(ka(
            "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n"
        ));
        assert!(!ka("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n0\r\n\r\n"));
    }

    #[test]
    fn content_length_validation() {
        let r = parse_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok", 1024)
            .unwrap()
            .unwrap();
        assert_eq!(&r.0.body[..], b"ok");
        for bad in ["2, 3", "-1", "+2", "0x2", "", "99999999999999999999999"] {
            let input = format!("HTTP/1.1 200 OK\r\nContent-Length: {bad}\r\n\r\n");
            assert_eq!(
                parse_all(input.as_bytes(), 1024),
                Err(Http1Error::InvalidContentLength),
                "{bad:?}"
            );
        }
        let dup = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok";
        assert_eq!(parse_all(dup, 1024), Err(Http1Error::InvalidContentLength));
    }

    #[test]
    fn body_limits() {
        let too_big = Http1Error::BodyTooLarge { limit: 4 };
        assert_eq!(
            parse_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", 4),
            Err(too_big.clone())
        );
        assert!(
            parse_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nabcd", 4)
                .unwrap()
                .is_some()
        );
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n";
        assert_eq!(parse_all(chunked, 4), Err(too_big.clone()));
        let close = b"HTTP/1.1 200 OK\r\n\r\nabcde";
        assert_eq!(parse_all(close, 4), Err(too_big));
    }

    #[test]
    fn head_limits() {
        let mut big = b"HTTP/1.1 200 OK\r\n".to_vec();
        while big.len() <= MAX_HEAD_BYTES {
            big.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        assert_eq!(parse_all(&big, 1024), Err(Http1Error::HeadTooLarge));
        // Also without ever seeing a terminator, fed incrementally.
        let mut p = ResponseParser::new(1024);
        let mut buf = BytesMut::new();
        let mut err = None;
        for chunk in big.chunks(100) {
            buf.put_slice(chunk);
            if let Err(e) = p.parse(&mut buf) {
                err = Some(e);
                break;
            }
        }
        assert_eq!(err, Some(Http1Error::HeadTooLarge));
        // A blank line that starts inside the limit and ends just past it.
        let mut edge = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Filler: ".to_vec();
        edge.resize(MAX_HEAD_BYTES - 2, b'a');
        edge.extend_from_slice(b"\r\n\r\n");
        assert_eq!(edge.len(), MAX_HEAD_BYTES + 2);
        let mut buf = BytesMut::from(&edge[..]);
        assert_eq!(
            ResponseParser::new(1024).parse(&mut buf),
            Err(Http1Error::HeadTooLarge)
        );

        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(
            parse_all(&many, 1024),
            Err(Http1Error::Parse(httparse::Error::TooManyHeaders))
        );

        let mut trailers = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n".to_vec();
        while trailers.len() <= 2 * MAX_HEAD_BYTES {
            trailers.extend_from_slice(b"X-T: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        assert_eq!(parse_all(&trailers, 1024), Err(Http1Error::HeadTooLarge));
    }

    #[test]
    fn malformed_heads() {
        assert!(matches!(
            parse_all(b"HTTP/2 200 OK\r\n\r\n", 1024),
            Err(Http1Error::Parse(_))
        ));
        assert!(matches!(
            parse_all(b"garbage\r\n\r\n", 1024),
            Err(Http1Error::Parse(_))
        ));
        let bare_lf = b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok";
        assert_eq!(
            &parse_all(bare_lf, 1024).unwrap().unwrap().0.body[..],
            b"ok"
        );
    }

    #[test]
    fn content_length_body_is_not_copied() {
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"[..]);
        let body_ptr = buf[buf.len() - 5..].as_ptr();
        let r = ResponseParser::new(1024).parse(&mut buf).unwrap().unwrap();
        assert_eq!(r.body.as_ptr(), body_ptr);
    }

    #[test]
    fn a_request_line_is_written_as_made_and_knows_what_it_is_for() {
        let h = head(&[("X-A", "1")], 3);
        assert!(encode(&h)
            .unwrap()
            .starts_with("POST /svc/v1/do?x=1 HTTP/1.1\r\nHost: backend.local:8080\r\nX-A: 1\r\n"));
        let line = test_line();
        assert!(line.is_for("POST", "/svc", "/v1/do?x=1"));
        assert!(!line.is_for("GET", "/svc", "/v1/do?x=1"));
        assert!(!line.is_for("POST", "", "/v1/do?x=1"));
        assert!(!line.is_for("POST", "/svc", "/v1/do?x=2"));
        assert_eq!(
            RequestLine::new("PO ST", "", "/x", test_host()),
            Err(Http1Error::InvalidMethod)
        );
        for (base, path) in [("", "x"), ("", "/a b"), ("svc", "/x"), ("/s\r\n", "/x")] {
            assert_eq!(
                RequestLine::new("GET", base, path, test_host()),
                Err(Http1Error::InvalidRequestTarget),
                "{base:?} {path:?}"
            );
        }
    }

    #[test]
    fn an_open_tail_line_is_finished_with_the_request_number_in_sixteen_hex_digits() {
        let block =
            HeaderBlock::with_open_tail(&[("X-Roles", "a,b")], "X-Correlation-Id", "3f2a-b:")
                .unwrap();
        for (id, digits) in [
            (0x1234_abcd, "000000001234abcd"),
            (u64::MAX, "ffffffffffffffff"),
        ] {
            let h = RequestHead {
                block: &block,
                tail_id: id,
                ..head(&[], 2)
            };
            let text = encode(&h).unwrap();
            assert!(
                text.ends_with(&format!(
                    "X-Roles: a,b\r\nX-Correlation-Id: 3f2a-b:{digits}\r\nContent-Length: 2\r\n\r\n"
                )),
                "{text:?}"
            );
        }
        // A closed block ignores the number.
        let closed = HeaderBlock::new(&[("X-Roles", "a,b")]).unwrap();
        let h = RequestHead {
            block: &closed,
            tail_id: 7,
            ..head(&[], 0)
        };
        assert!(encode(&h)
            .unwrap()
            .ends_with("X-Roles: a,b\r\nContent-Length: 0\r\n\r\n"));
        // The open line's constant part is checked once, like the rest.
        assert_eq!(
            HeaderBlock::with_open_tail(&[], "X-Correlation-Id", "s\r\nX-Admin: 1:"),
            Err(Http1Error::InvalidHeaderValue {
                name: "X-Correlation-Id".into()
            })
        );
        assert_eq!(
            HeaderBlock::with_open_tail(&[], "Content-Length", "1"),
            Err(Http1Error::ReservedHeader("Content-Length".into()))
        );
    }

    #[test]
    fn the_constant_header_blocks_are_what_checking_them_would_give() {
        let accept = ("Accept", "application/json");
        assert_eq!(HeaderBlock::new(&[accept]).unwrap(), ACCEPT_JSON);
        assert_eq!(
            HeaderBlock::new(&[("Content-Type", "application/json; charset=utf-8"), accept])
                .unwrap(),
            CONTENT_JSON
        );
        assert_eq!(
            HeaderBlock::new(&[("Content-Type", "application/octet-stream"), accept]).unwrap(),
            CONTENT_BINARY
        );
    }
}
