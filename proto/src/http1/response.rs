//! The response side: [`ResponseParser`], the incremental HTTP/1.x response parser a
//! backend connection feeds its read buffer to after every read.
//!
//! It finds and parses the head (httparse; one pass for a head that arrived whole, a
//! resumable scan for its end otherwise), skips interim 1xx responses, refuses an
//! unrequested `101`, decides keep-alive (RFC 9112 §9.3) and which body framing applies
//! (no body, Content-Length, chunked, until close), then delimits the body; decoding a
//! chunked body is `body.rs`'s. A Content-Length body is split off the caller's buffer
//! without a copy, and bytes after the response stay in it.

use bytes::{Buf, Bytes, BytesMut};

use super::body::{parse_chunked, parse_content_length, ChunkPhase, Framing};
use super::Http1Error;

/// Largest accepted response head (status line + headers), and also the cap
/// on the total size of chunked trailers.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Largest number of header fields accepted in one response head.
pub const MAX_HEADERS: usize = 64;

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

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use bytes::BufMut;

    // parse_all and parse_bytewise are shared with body.rs's tests.

    /// Parse everything in one go; returns the response and the leftover.
    pub(in crate::http1) fn parse_all(
        input: &[u8],
        max_body: usize,
    ) -> Result<Option<(Response, Vec<u8>)>, Http1Error> {
        let mut p = ResponseParser::new(max_body);
        let mut buf = BytesMut::from(input);
        Ok(p.parse(&mut buf)?.map(|r| (r, buf.to_vec())))
    }

    /// Feed one byte at a time; every prefix must yield `None` until the
    /// response is complete, then the rest must stay in the buffer.
    pub(in crate::http1) fn parse_bytewise(input: &[u8], max_body: usize) -> (Response, Vec<u8>) {
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
}
