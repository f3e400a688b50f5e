//! The request side: a backend request head, checked and encoded.
//!
//! What is the same for every request is checked once and kept encoded: the request
//! line with `Host` ([`RequestLine`], from a [`HostLine`] per backend), a client's own
//! headers ([`HeaderBlock`]) and the constant blocks ([`CONTENT_JSON`] and its
//! siblings). [`encode_request_head`] then checks only the per-request headers and
//! writes the head into its own buffer; the body never passes through here, so the
//! caller can write `[head, body]` in one `writev`. The RFC 9110 `token` and
//! field-value checks live here too (the upgrade parser uses [`is_token`]).

use bytes::{Bytes, BytesMut};

use super::Http1Error;

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
        pair.copy_from_slice(&crate::hex_pair(byte));
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

#[cfg(test)]
mod tests {
    use super::*;

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
