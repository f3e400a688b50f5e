//! Sans-IO parser and responder for the HTTP/1.1 WebSocket opening handshake
//! (RFC 6455 §4).
//!
//! Why this exists: every ringgate connection starts with exactly one HTTP
//! request, and that request is the only HTTP the gateway ever speaks. Rather
//! than pull in an HTTP server, the connection task feeds whatever bytes it
//! has read so far into [`parse_upgrade`] and writes back either
//! [`switching_protocols`] or the bytes of [`error_response`]. Keeping this
//! free of sockets, runtimes and clocks lets it be tested (and fuzzed) byte by
//! byte, and keeps the io_uring read loop trivial. It is also the single place
//! where client credentials are pulled out of the request, so it owns the rule
//! that tokens never reach a log line or a response.
//!
//! Decisions worth knowing (each is also tested):
//! * Checks run in this order and the first failure wins: head size / header
//!   count (431) → HTTP syntax (400) → HTTP version (400, not 505: we do speak
//!   HTTP/1.x, the request just cannot be an RFC 6455 handshake) → path (404)
//!   → method (405) → body framing (400) → `Host` (400) → `Upgrade` (400,
//!   also when missing entirely; 426 is reserved for the version mismatch) →
//!   `Connection` (400) → `Sec-WebSocket-Version` (426, also when missing) →
//!   `Sec-WebSocket-Key` (400) → `Sec-WebSocket-Protocol` syntax (400) →
//!   credentials (401 / 400).
//! * The path is compared byte for byte with `expected_path` (no
//!   normalisation, no trailing-slash folding); only origin-form targets
//!   (`/...`) are accepted.
//! * The query `token` parameter is percent-decoded per RFC 3986 (`+` stays a
//!   literal `+`; JWTs never contain `+` or spaces).
//! * `Sec-WebSocket-Extensions` is ignored: no extension is ever negotiated.
//! * `Origin` is returned verbatim; checking it is the caller's policy.

use super::http1::is_token; // RFC 7230 `token` (the tchar table lives with the HTTP/1.1 codec)
use std::fmt::{self, Write as _};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};
use sha1::{Digest, Sha1};

/// Largest request head [`parse_upgrade`] accepts (the gateway's default for
/// `server.max_handshake_bytes`; [`parse_upgrade_for`] takes another). A buffer
/// that reaches this size without containing a complete head is rejected with 431.
pub const MAX_HANDSHAKE_BYTES: usize = 8192;

/// Most header fields we accept in the request head (more → 431).
pub const MAX_HEADERS: usize = 64;

/// Prefix of a `Sec-WebSocket-Protocol` entry that carries a bearer JWT
/// (matched ASCII case-insensitively).
pub const BEARER_PROTOCOL_PREFIX: &str = "bearer.";
/// The `Sec-WebSocket-Protocol` entry prefix that carries a reconnection token
/// (browsers: `["bannou.v1", "reconnect.<token>"]`).
pub const RECONNECT_PROTOCOL_PREFIX: &str = "reconnect.";

/// RFC 6455 §1.3 magic GUID appended to the client key.
const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// A complete, valid WebSocket upgrade request.
///
/// `Debug` is hand-written: the query string and any `bearer.` protocol entry
/// are redacted, because either may hold a token.
#[derive(Clone, PartialEq, Eq)]
pub struct UpgradeRequest {
    /// Request path without the query (one the server serves).
    pub path: String,
    /// Raw query string after `?` (not decoded), if any.
    pub query: Option<String>,
    /// `Sec-WebSocket-Key` as sent (trimmed); decodes to 16 bytes.
    pub key: String,
    /// `Origin` as sent, if any. Not validated here.
    pub origin: Option<String>,
    /// The credential the client presented, if any.
    pub credential: Option<Credential>,
    /// Where `credential` came from (for metrics); `None` iff `credential` is.
    pub credential_source: Option<CredentialSource>,
    /// Offered `Sec-WebSocket-Protocol` entries, in order, from all such
    /// headers (comma lists split, whitespace trimmed, empty entries dropped).
    pub protocols: Vec<String>,
    /// Index in `protocols` of the entry the credential was taken from, when
    /// `credential_source == Some(CredentialSource::Protocol)`.
    pub token_protocol: Option<usize>,
}

impl UpgradeRequest {
    /// The subprotocol [`switching_protocols`] will echo, if any: the first
    /// offered entry that is not the token entry and does not look like a
    /// token (`bearer.` prefix). Browsers cannot set an `Authorization`
    /// header, so the convention is to offer
    /// `new WebSocket(url, ["bannou.v1", "bearer.<jwt>"])`: the token rides in
    /// the second entry and the server echoes `bannou.v1`. Browsers fail the
    /// connection if the server echoes nothing while protocols were offered,
    /// so such clients must always offer a real protocol alongside the token.
    pub fn selected_protocol(&self) -> Option<&str> {
        self.protocols
            .iter()
            .enumerate()
            .find(|(i, p)| {
                Some(*i) != self.token_protocol && !is_credential_protocol(p) && is_token(p)
            })
            .map(|(_, p)| p.as_str())
    }
}

impl fmt::Debug for UpgradeRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Protocols<'a>(&'a [String]);
        impl fmt::Debug for Protocols<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_list()
                    .entries(self.0.iter().map(|p| {
                        if is_bearer_protocol(p) {
                            "bearer.<redacted>"
                        } else if is_credential_protocol(p) {
                            "reconnect.<redacted>"
                        } else {
                            p.as_str()
                        }
                    }))
                    .finish()
            }
        }
        f.debug_struct("UpgradeRequest")
            .field("path", &self.path)
            .field("query", &self.query.as_ref().map(|_| "<redacted>"))
            .field("key", &self.key)
            .field("origin", &self.origin)
            .field("credential", &self.credential)
            .field("credential_source", &self.credential_source)
            .field("protocols", &Protocols(&self.protocols))
            .field("token_protocol", &self.token_protocol)
            .finish()
    }
}

/// A credential presented by the client. `Debug` never prints the token.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// A JWT, to be checked by the gateway's `ringgate::auth::Authenticator::verify`.
    Bearer(String),
    /// An opaque session-resume token (`Authorization: Reconnect <token>`).
    Reconnect(String),
}

impl Credential {
    /// The raw token. Never log it.
    pub fn token(&self) -> &str {
        match self {
            Credential::Bearer(t) | Credential::Reconnect(t) => t,
        }
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Bearer(_) => f.write_str("Bearer(<redacted>)"),
            Credential::Reconnect(_) => f.write_str("Reconnect(<redacted>)"),
        }
    }
}

/// Where a credential was found (for metrics only; the precedence is fixed:
/// `Authorization` header, then `?token=`, `?reconnect=`, then a `bearer.` or
/// `reconnect.` subprotocol).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CredentialSource {
    /// `Authorization: Bearer …` or `Authorization: Reconnect …`.
    Header,
    /// `?token=…` (or `?reconnect=…`) query parameter.
    Query,
    /// A `Sec-WebSocket-Protocol: bearer.…` (or `reconnect.…`) entry.
    Protocol,
}

impl CredentialSource {
    /// Stable lowercase label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialSource::Header => "header",
            CredentialSource::Query => "query",
            CredentialSource::Protocol => "protocol",
        }
    }
}

/// Why a handshake was refused. [`HandshakeError::status`] is the HTTP status
/// to answer with; [`HandshakeError::response`] builds the whole response.
/// Display strings contain no request data, so they are safe to log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The head did not fit in the limit ([`MAX_HANDSHAKE_BYTES`] by default). 431.
    #[error("request head too large")]
    TooLarge,
    /// More than [`MAX_HEADERS`] header fields. 431.
    #[error("more than {MAX_HEADERS} header fields")]
    TooManyHeaders,
    /// Not a well-formed HTTP/1.x request head. 400.
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    /// HTTP/1.0 (RFC 6455 requires 1.1). 400.
    #[error("WebSocket upgrade requires HTTP/1.1")]
    UnsupportedHttpVersion,
    /// Path differs from the expected one. 404.
    #[error("not found")]
    NotFound,
    /// Method other than GET. 405, with `Allow: GET`.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// `Content-Length` > 0 or `Transfer-Encoding` present: an upgrade request
    /// has no body, and bytes after the head are WebSocket frames. 400.
    #[error("upgrade request must not carry a body")]
    UnexpectedBody,
    /// `Host` missing or empty. 400.
    #[error("missing Host header")]
    MissingHost,
    /// `Upgrade` missing or without the `websocket` token. 400.
    #[error("Upgrade header must contain websocket")]
    NotWebSocketUpgrade,
    /// `Connection` missing or without the `upgrade` token. 400.
    #[error("Connection header must contain upgrade")]
    MissingConnectionUpgrade,
    /// `Sec-WebSocket-Version` missing or not exactly 13. 426, with
    /// `Sec-WebSocket-Version: 13`.
    #[error("unsupported Sec-WebSocket-Version (need 13)")]
    UnsupportedWebSocketVersion,
    /// `Sec-WebSocket-Key` missing, duplicated, or not base64 of 16 bytes. 400.
    #[error("invalid Sec-WebSocket-Key")]
    BadKey,
    /// A `Sec-WebSocket-Protocol` entry is not an HTTP token. 400.
    #[error("invalid Sec-WebSocket-Protocol header")]
    BadProtocolHeader,
    /// `Authorization` scheme other than Bearer / Reconnect. 401, with
    /// `WWW-Authenticate: Bearer`.
    #[error("unsupported Authorization scheme")]
    BadAuthorizationScheme,
    /// A credential was present but unusable: empty, containing whitespace,
    /// bad percent-encoding, not UTF-8, or `token` given twice. 400
    /// (RFC 6750 `invalid_request`).
    #[error("malformed credential")]
    MalformedCredential,
}

impl HandshakeError {
    /// HTTP status code to answer with.
    pub fn status(&self) -> u16 {
        match self {
            HandshakeError::TooLarge | HandshakeError::TooManyHeaders => 431,
            HandshakeError::NotFound => 404,
            HandshakeError::MethodNotAllowed => 405,
            HandshakeError::UnsupportedWebSocketVersion => 426,
            HandshakeError::BadAuthorizationScheme => 401,
            HandshakeError::Malformed(_)
            | HandshakeError::UnsupportedHttpVersion
            | HandshakeError::UnexpectedBody
            | HandshakeError::MissingHost
            | HandshakeError::NotWebSocketUpgrade
            | HandshakeError::MissingConnectionUpgrade
            | HandshakeError::BadKey
            | HandshakeError::BadProtocolHeader
            | HandshakeError::MalformedCredential => 400,
        }
    }

    /// Complete error response for this error (see [`error_response`]).
    pub fn response(&self) -> Bytes {
        error_response(self.status(), &self.to_string())
    }
}

/// Parses a WebSocket upgrade request from the start of `buf`.
///
/// * `Ok(None)`: the head is incomplete; read more and call again with the
///   grown buffer (only the first [`MAX_HANDSHAKE_BYTES`] are ever looked at).
/// * `Ok(Some((req, n)))`: the head is `buf[..n]`; anything after it is
///   already WebSocket data and belongs to the frame decoder.
/// * `Err(e)`: answer with `e.response()` and close.
pub fn parse_upgrade(
    buf: &[u8],
    expected_path: &str,
) -> Result<Option<(UpgradeRequest, usize)>, HandshakeError> {
    parse_upgrade_for(buf, |p| p == expected_path, MAX_HANDSHAKE_BYTES)
}

/// [`parse_upgrade`] for a server with several upgrade paths and a head limit of its
/// own: `serves(path)` says whether `path` (without the query) is one of them (else
/// 404); a head larger than `max_head` bytes is 431 (the gateway's
/// `server.max_handshake_bytes`; [`MAX_HANDSHAKE_BYTES`] for [`parse_upgrade`]).
pub fn parse_upgrade_for(
    buf: &[u8],
    serves: impl Fn(&str) -> bool,
    max_head: usize,
) -> Result<Option<(UpgradeRequest, usize)>, HandshakeError> {
    let window = &buf[..buf.len().min(max_head)];
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let consumed = match req.parse(window) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if window.len() >= max_head => {
            return Err(HandshakeError::TooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HandshakeError::TooManyHeaders),
        Err(_) => return Err(HandshakeError::Malformed("invalid HTTP/1.x request head")),
    };

    // httparse fills method/path/version on Complete; stay defensive anyway.
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(HandshakeError::Malformed("incomplete request line"));
    };
    if version != 1 {
        return Err(HandshakeError::UnsupportedHttpVersion);
    }
    if !target.starts_with('/') {
        return Err(HandshakeError::Malformed(
            "request-target must be origin-form",
        ));
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    if !serves(path) {
        return Err(HandshakeError::NotFound);
    }
    if method != "GET" {
        return Err(HandshakeError::MethodNotAllowed);
    }

    let h = ScannedHeaders::scan(req.headers)?;
    if h.has_body {
        return Err(HandshakeError::UnexpectedBody);
    }
    if !h.host_ok {
        return Err(HandshakeError::MissingHost);
    }
    if !h.upgrade_websocket {
        return Err(HandshakeError::NotWebSocketUpgrade);
    }
    if !h.connection_upgrade {
        return Err(HandshakeError::MissingConnectionUpgrade);
    }
    if h.version_13 != Some(true) {
        return Err(HandshakeError::UnsupportedWebSocketVersion);
    }
    let key = match h.key {
        Some(Ok(k)) if is_valid_key(k) => k,
        _ => return Err(HandshakeError::BadKey),
    };

    let (credential, credential_source, token_protocol) = if let Some(auth) = h.authorization {
        (
            Some(parse_authorization(auth)?),
            Some(CredentialSource::Header),
            None,
        )
    } else if let Some(token) = query
        .map(|q| query_param(q, "token"))
        .transpose()?
        .flatten()
    {
        (
            Some(Credential::Bearer(token)),
            Some(CredentialSource::Query),
            None,
        )
    } else if let Some(token) = query
        .map(|q| query_param(q, "reconnect"))
        .transpose()?
        .flatten()
    {
        (
            Some(Credential::Reconnect(token)),
            Some(CredentialSource::Query),
            None,
        )
    } else if let Some((i, p)) = h
        .protocols
        .iter()
        .enumerate()
        .find(|(_, p)| is_credential_protocol(p))
    {
        let (prefix, make): (&str, fn(String) -> Credential) = if is_bearer_protocol(p) {
            (BEARER_PROTOCOL_PREFIX, Credential::Bearer)
        } else {
            (RECONNECT_PROTOCOL_PREFIX, Credential::Reconnect)
        };
        let token = &p[prefix.len()..];
        if token.is_empty() {
            return Err(HandshakeError::MalformedCredential);
        }
        (
            Some(make(token.to_owned())),
            Some(CredentialSource::Protocol),
            Some(i),
        )
    } else {
        (None, None, None)
    };

    let request = UpgradeRequest {
        path: path.to_owned(),
        query: query.map(str::to_owned),
        key: key.to_owned(),
        origin: h.origin.map(str::to_owned),
        credential,
        credential_source,
        protocols: h.protocols,
        token_protocol,
    };
    Ok(Some((request, consumed)))
}

/// What the single pass over the header fields found.
struct ScannedHeaders<'a> {
    host_ok: bool,
    upgrade_websocket: bool,
    connection_upgrade: bool,
    /// `None` = absent; `Some(false)` = present but not exactly one `13`.
    version_13: Option<bool>,
    /// `None` = absent; `Some(Err(()))` = duplicated or not UTF-8.
    key: Option<Result<&'a str, ()>>,
    origin: Option<&'a str>,
    authorization: Option<&'a str>,
    protocols: Vec<String>,
    has_body: bool,
}

impl<'a> ScannedHeaders<'a> {
    fn scan(headers: &[httparse::Header<'a>]) -> Result<Self, HandshakeError> {
        let mut s = ScannedHeaders {
            host_ok: false,
            upgrade_websocket: false,
            connection_upgrade: false,
            version_13: None,
            key: None,
            origin: None,
            authorization: None,
            protocols: Vec::new(),
            has_body: false,
        };
        let mut host_seen = false;
        for header in headers {
            let name = header.name;
            let is = |n: &str| name.eq_ignore_ascii_case(n);
            if is("host") {
                if host_seen {
                    return Err(HandshakeError::Malformed("duplicate Host header"));
                }
                host_seen = true;
                s.host_ok = !trim(header.value).is_empty();
            } else if is("upgrade") {
                s.upgrade_websocket |= list_has_token(text(header.value)?, "websocket");
            } else if is("connection") {
                s.connection_upgrade |= list_has_token(text(header.value)?, "upgrade");
            } else if is("sec-websocket-version") {
                let ok = trim(header.value) == b"13";
                // A second Sec-WebSocket-Version header is never "exactly 13".
                s.version_13 = Some(s.version_13.is_none() && ok);
            } else if is("sec-websocket-key") {
                s.key = Some(match (s.key, text(header.value)) {
                    (None, Ok(k)) => Ok(k),
                    _ => Err(()),
                });
            } else if is("origin") {
                if s.origin.is_none() {
                    s.origin = Some(text(header.value)?);
                }
            } else if is("authorization") {
                if s.authorization.is_some() {
                    return Err(HandshakeError::Malformed("duplicate Authorization header"));
                }
                s.authorization =
                    Some(text(header.value).map_err(|_| HandshakeError::MalformedCredential)?);
            } else if is("sec-websocket-protocol") {
                let value = text(header.value).map_err(|_| HandshakeError::BadProtocolHeader)?;
                for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
                    if !is_token(entry) {
                        return Err(HandshakeError::BadProtocolHeader);
                    }
                    s.protocols.push(entry.to_owned());
                }
            } else if is("transfer-encoding") {
                s.has_body = true;
            } else if is("content-length") {
                // Anything but an all-zero length announces a body.
                s.has_body |= trim(header.value).iter().any(|b| *b != b'0');
            }
        }
        Ok(s)
    }
}

/// Header value as trimmed UTF-8.
fn text(value: &[u8]) -> Result<&str, HandshakeError> {
    std::str::from_utf8(trim(value))
        .map_err(|_| HandshakeError::Malformed("header value is not UTF-8"))
}

fn trim(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// Whether a comma-separated header list contains `token` (case-insensitive).
fn list_has_token(list: &str, token: &str) -> bool {
    list.split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

fn is_bearer_protocol(p: &str) -> bool {
    has_prefix_ignore_case(p, BEARER_PROTOCOL_PREFIX)
}

/// A subprotocol entry carrying a credential (`bearer.<jwt>`, `reconnect.<token>`):
/// never echoed, redacted in `Debug`.
fn is_credential_protocol(p: &str) -> bool {
    is_bearer_protocol(p) || has_prefix_ignore_case(p, RECONNECT_PROTOCOL_PREFIX)
}

fn has_prefix_ignore_case(p: &str, prefix: &str) -> bool {
    p.len() >= prefix.len() && p.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

fn is_valid_key(key: &str) -> bool {
    // 16 bytes encode to exactly 24 base64 characters.
    key.len() == 24 && STANDARD.decode(key).is_ok_and(|k| k.len() == 16)
}

/// `Authorization: <scheme> <token>`: Bearer → JWT, Reconnect → resume token.
fn parse_authorization(value: &str) -> Result<Credential, HandshakeError> {
    let (scheme, rest) = match value.split_once([' ', '\t']) {
        Some((s, r)) => (s, r.trim()),
        None => (value, ""),
    };
    let make: fn(String) -> Credential = if scheme.eq_ignore_ascii_case("bearer") {
        Credential::Bearer
    } else if scheme.eq_ignore_ascii_case("reconnect") {
        Credential::Reconnect
    } else {
        return Err(HandshakeError::BadAuthorizationScheme);
    };
    if rest.is_empty() || rest.contains([' ', '\t']) {
        return Err(HandshakeError::MalformedCredential);
    }
    Ok(make(rest.to_owned()))
}

/// The percent-decoded value of the single query parameter `param`, if any.
fn query_param(query: &str, param: &str) -> Result<Option<String>, HandshakeError> {
    let mut found = None;
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if name != param {
            continue;
        }
        if found.is_some() {
            // Two tokens: refuse rather than guess which one a proxy checked.
            return Err(HandshakeError::MalformedCredential);
        }
        let decoded = percent_decode(value).ok_or(HandshakeError::MalformedCredential)?;
        if decoded.is_empty() || decoded.contains(|c: char| c.is_ascii_whitespace()) {
            return Err(HandshakeError::MalformedCredential);
        }
        found = Some(decoded);
    }
    Ok(found)
}

/// RFC 3986 percent-decoding to UTF-8. `None` on a bad escape or bad UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    fn hex(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = hex(*bytes.get(i + 1)?)?;
            let lo = hex(*bytes.get(i + 2)?)?;
            out.push((hi << 4) | lo);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `Sec-WebSocket-Accept` for a client key: base64(SHA-1(key ‖ GUID)).
pub fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(WEBSOCKET_GUID.as_bytes());
    STANDARD.encode(sha.finalize())
}

/// The `101 Switching Protocols` response for `req`. Echoes
/// [`UpgradeRequest::selected_protocol`] if there is one; never echoes a
/// token-carrying entry.
pub fn switching_protocols(req: &UpgradeRequest) -> Bytes {
    let mut out = BytesMut::with_capacity(192);
    out.put_slice(
        b"HTTP/1.1 101 Switching Protocols\r\n\
          Upgrade: websocket\r\n\
          Connection: Upgrade\r\n\
          Sec-WebSocket-Accept: ",
    );
    out.put_slice(accept_key(&req.key).as_bytes());
    out.put_slice(b"\r\n");
    if let Some(protocol) = req.selected_protocol() {
        out.put_slice(b"Sec-WebSocket-Protocol: ");
        out.put_slice(protocol.as_bytes());
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"\r\n");
    out.freeze()
}

/// A small `text/plain` error response that closes the connection.
///
/// `reason` becomes the body (plus a newline); it is never placed in a header,
/// so it cannot inject one. Adds what the status needs: 401 →
/// `WWW-Authenticate: Bearer`, 405 → `Allow: GET`, 426 → `Upgrade: websocket`
/// and `Sec-WebSocket-Version: 13`. A status outside 100..=999 is sent as 500.
pub fn error_response(status: u16, reason: &str) -> Bytes {
    let status = if (100..=999).contains(&status) {
        status
    } else {
        500
    };
    let mut out = BytesMut::with_capacity(192 + reason.len());
    // Writing into BytesMut cannot fail.
    let _ = write!(out, "HTTP/1.1 {status} {}\r\n", reason_phrase(status));
    match status {
        401 => out.put_slice(b"WWW-Authenticate: Bearer\r\n"),
        405 => out.put_slice(b"Allow: GET\r\n"),
        426 => out.put_slice(b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"),
        // When to try again (RFC 9110 §10.2.3): a client refused for its rate gets one
        // second; one refused because the gateway is full, draining or busy gets two,
        // so a crowd told at once does not all come back in the same instant.
        429 => out.put_slice(b"Retry-After: 1\r\n"),
        503 => out.put_slice(b"Retry-After: 2\r\n"),
        _ => {}
    }
    let _ = write!(
        out,
        "Content-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\n\
         Connection: close\r\n\r\n",
        reason.len() + 1
    );
    out.put_slice(reason.as_bytes());
    out.put_u8(b'\n');
    out.freeze()
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str = "/ws";
    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    /// The headers of a minimal valid upgrade, as `(name, value)`.
    fn base_headers() -> Vec<(&'static str, String)> {
        vec![
            ("Host", "game.example:443".into()),
            ("Upgrade", "websocket".into()),
            ("Connection", "Upgrade".into()),
            ("Sec-WebSocket-Key", KEY.into()),
            ("Sec-WebSocket-Version", "13".into()),
        ]
    }

    fn raw(request_line: &str, headers: &[(&str, String)]) -> Vec<u8> {
        let mut s = format!("{request_line}\r\n");
        for (n, v) in headers {
            s.push_str(&format!("{n}: {v}\r\n"));
        }
        s.push_str("\r\n");
        s.into_bytes()
    }

    /// A valid request with `extra` headers appended and `without` removed.
    fn request(target: &str, without: &[&str], extra: &[(&str, &str)]) -> Vec<u8> {
        let mut h = base_headers();
        h.retain(|(n, _)| !without.iter().any(|w| w.eq_ignore_ascii_case(n)));
        h.extend(extra.iter().map(|(n, v)| (*n, v.to_string())));
        raw(&format!("GET {target} HTTP/1.1"), &h)
    }

    fn parse_ok(buf: &[u8]) -> (UpgradeRequest, usize) {
        parse_upgrade(buf, PATH)
            .expect("valid request")
            .expect("complete request")
    }

    fn parse_err(buf: &[u8]) -> HandshakeError {
        parse_upgrade(buf, PATH).expect_err("request must be rejected")
    }

    #[test]
    fn valid_request_without_credential_is_parsed() {
        let buf = request("/ws", &[], &[("Origin", "https://game.example")]);
        let (req, n) = parse_ok(&buf);
        assert_eq!(n, buf.len());
        assert_eq!(req.path, "/ws");
        assert_eq!(req.query, None);
        assert_eq!(req.key, KEY);
        assert_eq!(req.origin.as_deref(), Some("https://game.example"));
        assert_eq!(req.credential, None);
        assert_eq!(req.credential_source, None);
        assert!(req.protocols.is_empty());
        assert_eq!(req.token_protocol, None);
    }

    #[test]
    fn bearer_authorization_header_is_parsed_case_insensitively() {
        let buf = request("/ws", &[], &[("Authorization", "bEaReR abc.def.ghi")]);
        let (req, _) = parse_ok(&buf);
        assert_eq!(
            req.credential,
            Some(Credential::Bearer("abc.def.ghi".into()))
        );
        assert_eq!(req.credential_source, Some(CredentialSource::Header));
    }

    #[test]
    fn reconnect_authorization_header_yields_reconnect_credential() {
        let buf = request("/ws", &[], &[("authorization", "Reconnect r3sume-t0ken")]);
        let (req, _) = parse_ok(&buf);
        assert_eq!(
            req.credential,
            Some(Credential::Reconnect("r3sume-t0ken".into()))
        );
        assert_eq!(req.credential_source, Some(CredentialSource::Header));
    }

    #[test]
    fn query_token_is_percent_decoded_and_path_excludes_query() {
        let buf = request("/ws?room=7&token=ab%2Ecd.e%2df+g&x=1", &[], &[]);
        let (req, _) = parse_ok(&buf);
        assert_eq!(req.path, "/ws");
        assert_eq!(
            req.query.as_deref(),
            Some("room=7&token=ab%2Ecd.e%2df+g&x=1")
        );
        assert_eq!(
            req.credential,
            Some(Credential::Bearer("ab.cd.e-f+g".into()))
        );
        assert_eq!(req.credential_source, Some(CredentialSource::Query));
    }

    #[test]
    fn a_reconnect_token_is_read_from_the_query_or_a_subprotocol_and_never_echoed() {
        let buf = request("/ws?reconnect=abc-_1", &[], &[]);
        let (req, _) = parse_upgrade(&buf, "/ws").unwrap().unwrap();
        assert_eq!(req.credential, Some(Credential::Reconnect("abc-_1".into())));
        assert_eq!(req.credential_source, Some(CredentialSource::Query));
        let buf = request(
            "/ws",
            &[],
            &[("Sec-WebSocket-Protocol", "bannou.v1, reconnect.tok-en_1")],
        );
        let (req, _) = parse_upgrade(&buf, "/ws").unwrap().unwrap();
        assert_eq!(
            req.credential,
            Some(Credential::Reconnect("tok-en_1".into()))
        );
        assert_eq!(req.credential_source, Some(CredentialSource::Protocol));
        assert_eq!(req.selected_protocol(), Some("bannou.v1"));
        assert!(!format!("{req:?}").contains("tok-en_1"), "redacted");
        // A Bearer token wins over a reconnect token in the query (fixed precedence).
        let buf = request("/ws?reconnect=r&token=t", &[], &[]);
        let (req, _) = parse_upgrade(&buf, "/ws").unwrap().unwrap();
        assert_eq!(req.credential, Some(Credential::Bearer("t".into())));
    }

    #[test]
    fn bad_query_tokens_are_rejected() {
        for target in [
            "/ws?token=",
            "/ws?token=%zz",
            "/ws?token=abc%2",
            "/ws?token=%ff%fe",
            "/ws?token=a%20b",
            "/ws?token=a&token=b",
        ] {
            let err = parse_err(&request(target, &[], &[]));
            assert_eq!(err, HandshakeError::MalformedCredential, "{target}");
            assert_eq!(err.status(), 400);
        }
    }

    #[test]
    fn protocol_token_is_parsed_and_other_protocol_echoed() {
        let buf = request(
            "/ws",
            &[],
            &[("Sec-WebSocket-Protocol", "bannou.v1, bearer.aaa.bbb.ccc")],
        );
        let (req, _) = parse_ok(&buf);
        assert_eq!(req.protocols, ["bannou.v1", "bearer.aaa.bbb.ccc"]);
        assert_eq!(
            req.credential,
            Some(Credential::Bearer("aaa.bbb.ccc".into()))
        );
        assert_eq!(req.credential_source, Some(CredentialSource::Protocol));
        assert_eq!(req.token_protocol, Some(1));
        assert_eq!(req.selected_protocol(), Some("bannou.v1"));
        let resp = switching_protocols(&req);
        let text = std::str::from_utf8(&resp).unwrap();
        assert!(
            text.contains("\r\nSec-WebSocket-Protocol: bannou.v1\r\n"),
            "{text}"
        );
        assert!(!text.contains("aaa.bbb.ccc"));
    }

    #[test]
    fn credential_precedence_is_header_then_query_then_protocol() {
        let proto = ("Sec-WebSocket-Protocol", "bearer.from-proto");
        let (req, _) = parse_ok(&request(
            "/ws?token=from-query",
            &[],
            &[("Authorization", "Bearer from-header"), proto],
        ));
        assert_eq!(
            req.credential,
            Some(Credential::Bearer("from-header".into()))
        );
        assert_eq!(req.token_protocol, None);

        let (req, _) = parse_ok(&request("/ws?token=from-query", &[], &[proto]));
        assert_eq!(
            req.credential,
            Some(Credential::Bearer("from-query".into()))
        );
        assert_eq!(req.credential_source, Some(CredentialSource::Query));
        assert_eq!(req.token_protocol, None);

        let (req, _) = parse_ok(&request("/ws?other=1", &[], &[proto]));
        assert_eq!(
            req.credential,
            Some(Credential::Bearer("from-proto".into()))
        );
        assert_eq!(req.token_protocol, Some(0));
    }

    #[test]
    fn other_authorization_scheme_is_401_even_with_other_credentials() {
        let buf = request(
            "/ws?token=abc",
            &[],
            &[("Authorization", "Basic dXNlcjpwYXNz")],
        );
        let err = parse_err(&buf);
        assert_eq!(err, HandshakeError::BadAuthorizationScheme);
        assert_eq!(err.status(), 401);
        let resp = err.response();
        let text = std::str::from_utf8(&resp).unwrap();
        assert!(text.starts_with("HTTP/1.1 401 Unauthorized\r\n"));
        assert!(text.contains("\r\nWWW-Authenticate: Bearer\r\n"));
    }

    #[test]
    fn authorization_without_token_is_malformed_credential() {
        for value in ["Bearer", "Bearer   ", "Bearer a b", "Reconnect"] {
            let err = parse_err(&request("/ws", &[], &[("Authorization", value)]));
            assert_eq!(err, HandshakeError::MalformedCredential, "{value:?}");
        }
    }

    #[test]
    fn empty_protocol_token_is_malformed_credential() {
        let buf = request(
            "/ws",
            &[],
            &[("Sec-WebSocket-Protocol", "bannou.v1, bearer.")],
        );
        assert_eq!(parse_err(&buf), HandshakeError::MalformedCredential);
    }

    #[test]
    fn incomplete_request_needs_more_bytes_at_every_split() {
        let buf = request(
            "/ws?token=abc",
            &[],
            &[("Sec-WebSocket-Protocol", "bannou.v1, bearer.x.y.z")],
        );
        for end in 0..buf.len() {
            assert_eq!(parse_upgrade(&buf[..end], PATH), Ok(None), "split at {end}");
        }
        assert_eq!(parse_ok(&buf).1, buf.len());
    }

    #[test]
    fn bytes_after_the_head_are_not_consumed() {
        let mut buf = request("/ws", &[], &[]);
        let head = buf.len();
        buf.extend_from_slice(&[0x81, 0x85, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert_eq!(parse_ok(&buf).1, head);
    }

    #[test]
    fn wrong_path_is_404() {
        for target in ["/", "/ws/", "/WS", "/wss?x=/ws", "/ws%20"] {
            let err = parse_err(&request(target, &[], &[]));
            assert_eq!(err, HandshakeError::NotFound, "{target}");
            assert_eq!(err.status(), 404);
        }
    }

    #[test]
    fn non_get_method_is_405_with_allow_header() {
        let buf = raw("POST /ws HTTP/1.1", &base_headers());
        let err = parse_err(&buf);
        assert_eq!(err, HandshakeError::MethodNotAllowed);
        assert_eq!(err.status(), 405);
        let resp = err.response();
        assert!(std::str::from_utf8(&resp)
            .unwrap()
            .contains("\r\nAllow: GET\r\n"));
        // Lowercase `get` is a different method in HTTP.
        assert_eq!(
            parse_err(&raw("get /ws HTTP/1.1", &base_headers())),
            HandshakeError::MethodNotAllowed
        );
    }

    #[test]
    fn wrong_path_wins_over_wrong_method() {
        let buf = raw("POST /other HTTP/1.1", &base_headers());
        assert_eq!(parse_err(&buf), HandshakeError::NotFound);
    }

    #[test]
    fn http_1_0_is_400() {
        let err = parse_err(&raw("GET /ws HTTP/1.0", &base_headers()));
        assert_eq!(err, HandshakeError::UnsupportedHttpVersion);
        assert_eq!(err.status(), 400);
    }

    #[test]
    fn malformed_http_is_400() {
        for bad in [
            &b"GET /ws HTTP/2.0\r\n\r\n"[..],
            b"GET /ws\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
            b"GET /ws HTTP/1.1\r\nBad Header\r\n\r\n",
            b"GET http://game.example/ws HTTP/1.1\r\nHost: x\r\n\r\n",
        ] {
            let err = parse_err(bad);
            assert!(matches!(err, HandshakeError::Malformed(_)), "{err:?}");
            assert_eq!(err.status(), 400);
        }
    }

    #[test]
    fn missing_or_wrong_upgrade_is_400() {
        let err = parse_err(&request("/ws", &["Upgrade"], &[]));
        assert_eq!(err, HandshakeError::NotWebSocketUpgrade);
        assert_eq!(err.status(), 400);
        let err = parse_err(&request("/ws", &["Upgrade"], &[("Upgrade", "h2c")]));
        assert_eq!(err, HandshakeError::NotWebSocketUpgrade);
        let (req, _) = parse_ok(&request("/ws", &["Upgrade"], &[("Upgrade", "WebSocket")]));
        assert_eq!(req.path, "/ws");
    }

    #[test]
    fn connection_must_list_upgrade_token() {
        let err = parse_err(&request("/ws", &["Connection"], &[]));
        assert_eq!(err, HandshakeError::MissingConnectionUpgrade);
        assert_eq!(err.status(), 400);
        let err = parse_err(&request(
            "/ws",
            &["Connection"],
            &[("Connection", "keep-alive, upgraded")],
        ));
        assert_eq!(err, HandshakeError::MissingConnectionUpgrade);
        parse_ok(&request(
            "/ws",
            &["Connection"],
            &[("Connection", "keep-alive, UPGRADE")],
        ));
    }

    #[test]
    fn missing_host_is_400() {
        let err = parse_err(&request("/ws", &["Host"], &[]));
        assert_eq!(err, HandshakeError::MissingHost);
        assert_eq!(err.status(), 400);
        let err = parse_err(&request("/ws", &[], &[("Host", "evil.example")]));
        assert!(matches!(err, HandshakeError::Malformed(_)));
    }

    #[test]
    fn bad_websocket_key_is_400() {
        for key in [
            "",
            "not base64!!",
            "dGhlIHNhbXBsZSBub25jZQ",   // unpadded
            "dGhlIHNhbXBsZSBub25jZTEy", // 18 bytes
            "dGhlIHNhbXBsZSBub25j",     // 15 bytes
        ] {
            let err = parse_err(&request(
                "/ws",
                &["Sec-WebSocket-Key"],
                &[("Sec-WebSocket-Key", key)],
            ));
            assert_eq!(err, HandshakeError::BadKey, "{key:?}");
            assert_eq!(err.status(), 400);
        }
        assert_eq!(
            parse_err(&request("/ws", &["Sec-WebSocket-Key"], &[])),
            HandshakeError::BadKey
        );
        assert_eq!(
            parse_err(&request("/ws", &[], &[("Sec-WebSocket-Key", KEY)])),
            HandshakeError::BadKey
        );
    }

    #[test]
    fn websocket_version_other_than_13_is_426_with_version_header() {
        for extra in [
            vec![("Sec-WebSocket-Version", "8")],
            vec![("Sec-WebSocket-Version", "13, 8")],
            vec![
                ("Sec-WebSocket-Version", "13"),
                ("Sec-WebSocket-Version", "13"),
            ],
            vec![],
        ] {
            let err = parse_err(&request("/ws", &["Sec-WebSocket-Version"], &extra));
            assert_eq!(
                err,
                HandshakeError::UnsupportedWebSocketVersion,
                "{extra:?}"
            );
            assert_eq!(err.status(), 426);
            let resp = err.response();
            let text = std::str::from_utf8(&resp).unwrap();
            assert!(text.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
            assert!(text.contains("\r\nSec-WebSocket-Version: 13\r\n"));
        }
    }

    #[test]
    fn request_with_body_is_400() {
        let err = parse_err(&request("/ws", &[], &[("Content-Length", "5")]));
        assert_eq!(err, HandshakeError::UnexpectedBody);
        let err = parse_err(&request("/ws", &[], &[("Transfer-Encoding", "chunked")]));
        assert_eq!(err, HandshakeError::UnexpectedBody);
        parse_ok(&request("/ws", &[], &[("Content-Length", "0")]));
    }

    #[test]
    fn invalid_protocol_entry_is_400() {
        let buf = request("/ws", &[], &[("Sec-WebSocket-Protocol", "bannou.v1, a/b")]);
        assert_eq!(parse_err(&buf), HandshakeError::BadProtocolHeader);
    }

    #[test]
    fn oversized_incomplete_head_is_431() {
        let mut buf = b"GET /ws HTTP/1.1\r\nX-Filler: ".to_vec();
        buf.resize(MAX_HANDSHAKE_BYTES - 1, b'a');
        assert_eq!(parse_upgrade(&buf, PATH), Ok(None));
        buf.push(b'a');
        let err = parse_err(&buf);
        assert_eq!(err, HandshakeError::TooLarge);
        assert_eq!(err.status(), 431);
        buf.extend_from_slice(b"\r\n\r\n");
        assert_eq!(parse_err(&buf), HandshakeError::TooLarge);
    }

    #[test]
    fn a_smaller_or_larger_head_limit_moves_the_431_boundary() {
        let base = request("/ws", &[], &[("X-Pad", "")]);
        let padded = |len: usize| request("/ws", &[], &[("X-Pad", &"p".repeat(len - base.len()))]);
        let small = padded(2048);
        assert_eq!(
            parse_upgrade_for(&small, |p| p == PATH, 2048)
                .unwrap()
                .unwrap()
                .1,
            2048
        );
        assert_eq!(
            parse_upgrade_for(&small, |p| p == PATH, 2047),
            Err(HandshakeError::TooLarge)
        );
        let large = padded(MAX_HANDSHAKE_BYTES + 100);
        assert_eq!(parse_upgrade(&large, PATH), Err(HandshakeError::TooLarge));
        assert!(parse_upgrade_for(&large, |p| p == PATH, 16384)
            .unwrap()
            .is_some());
    }

    #[test]
    fn head_that_fits_exactly_is_accepted() {
        let mut buf = request("/ws", &[], &[("X-Pad", "")]);
        let pad = MAX_HANDSHAKE_BYTES - buf.len();
        buf = request("/ws", &[], &[("X-Pad", &"p".repeat(pad))]);
        assert_eq!(buf.len(), MAX_HANDSHAKE_BYTES);
        assert_eq!(parse_ok(&buf).1, MAX_HANDSHAKE_BYTES);
    }

    #[test]
    fn too_many_headers_is_431() {
        let filler: Vec<(String, String)> = (0..MAX_HEADERS)
            .map(|i| (format!("X-H{i}"), "v".to_string()))
            .collect();
        let extra: Vec<(&str, &str)> = filler
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let err = parse_err(&request("/ws", &[], &extra));
        assert_eq!(err, HandshakeError::TooManyHeaders);
        assert_eq!(err.status(), 431);
    }

    #[test]
    fn accept_key_matches_rfc_6455_example() {
        assert_eq!(accept_key(KEY), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn random_keys_round_trip() {
        for _ in 0..8 {
            let mut nonce = [0u8; 16];
            getrandom::getrandom(&mut nonce).unwrap();
            let key = STANDARD.encode(nonce);
            let (req, _) = parse_ok(&request(
                "/ws",
                &["Sec-WebSocket-Key"],
                &[("Sec-WebSocket-Key", &key)],
            ));
            assert_eq!(req.key, key);
            assert_eq!(accept_key(&key).len(), 28);
        }
    }

    #[test]
    fn switching_protocols_has_required_headers_and_no_protocol_when_none_offered() {
        let (req, _) = parse_ok(&request("/ws", &[], &[]));
        let resp = switching_protocols(&req);
        assert_eq!(
            &resp[..],
            b"HTTP/1.1 101 Switching Protocols\r\n\
              Upgrade: websocket\r\n\
              Connection: Upgrade\r\n\
              Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        );
    }

    #[test]
    fn only_token_protocols_offered_echoes_nothing() {
        let (req, _) = parse_ok(&request(
            "/ws",
            &[],
            &[("Sec-WebSocket-Protocol", "bearer.t1, Bearer.t2")],
        ));
        assert_eq!(req.token_protocol, Some(0));
        assert_eq!(req.selected_protocol(), None);
        let resp = switching_protocols(&req);
        let text = std::str::from_utf8(&resp).unwrap();
        assert!(!text.contains("Sec-WebSocket-Protocol"));
        assert!(!text.contains("t1") && !text.contains("t2"));
    }

    #[test]
    fn first_non_token_protocol_is_echoed_across_headers() {
        let (req, _) = parse_ok(&request(
            "/ws",
            &[],
            &[
                ("Sec-WebSocket-Protocol", "bearer.tok"),
                ("Sec-WebSocket-Protocol", " bannou.v2 ,, bannou.v1"),
            ],
        ));
        assert_eq!(req.protocols, ["bearer.tok", "bannou.v2", "bannou.v1"]);
        assert_eq!(req.selected_protocol(), Some("bannou.v2"));
    }

    #[test]
    fn unused_bearer_protocol_is_never_echoed() {
        // Credential came from the header, so token_protocol is None, but the
        // bearer entry must still not be echoed.
        let (req, _) = parse_ok(&request(
            "/ws",
            &[],
            &[
                ("Authorization", "Bearer h"),
                ("Sec-WebSocket-Protocol", "bearer.secret"),
            ],
        ));
        assert_eq!(req.token_protocol, None);
        assert_eq!(req.selected_protocol(), None);
        assert!(!std::str::from_utf8(&switching_protocols(&req))
            .unwrap()
            .contains("secret"));
    }

    #[test]
    fn debug_output_redacts_tokens() {
        assert_eq!(
            format!("{:?}", Credential::Bearer("s3cr3t".into())),
            "Bearer(<redacted>)"
        );
        assert_eq!(
            format!("{:?}", Credential::Reconnect("s3cr3t".into())),
            "Reconnect(<redacted>)"
        );
        let (req, _) = parse_ok(&request(
            "/ws?token=s3cr3t-q",
            &[],
            &[("Sec-WebSocket-Protocol", "bannou.v1, bearer.s3cr3t-p")],
        ));
        let dbg = format!("{req:?} {req:#?}");
        assert!(!dbg.contains("s3cr3t"), "{dbg}");
        assert!(dbg.contains("bannou.v1"));
    }

    #[test]
    fn error_response_has_status_line_length_and_close() {
        let resp = error_response(404, "not found");
        assert_eq!(
            &resp[..],
            b"HTTP/1.1 404 Not Found\r\n\
              Content-Type: text/plain; charset=utf-8\r\n\
              Content-Length: 10\r\n\
              Connection: close\r\n\r\n\
              not found\n"
        );
        let resp = error_response(431, "too big");
        assert!(resp.starts_with(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        let resp = error_response(7, "weird");
        assert!(resp.starts_with(b"HTTP/1.1 500 Internal Server Error\r\n"));
    }

    #[test]
    fn refusals_for_rate_and_capacity_say_when_to_retry_and_others_do_not() {
        let retry_after = |status| {
            let resp = error_response(status, "x");
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut r = httparse::Response::new(&mut headers);
            r.parse(&resp).unwrap();
            r.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("retry-after"))
                .map(|h| String::from_utf8_lossy(h.value).into_owned())
        };
        assert_eq!(retry_after(429).as_deref(), Some("1"));
        assert_eq!(retry_after(503).as_deref(), Some("2"));
        for status in [400, 401, 403, 404, 408, 431] {
            assert_eq!(retry_after(status), None, "{status}");
        }
    }

    #[test]
    fn every_error_response_is_parseable_http() {
        let errors = [
            HandshakeError::TooLarge,
            HandshakeError::TooManyHeaders,
            HandshakeError::Malformed("x"),
            HandshakeError::UnsupportedHttpVersion,
            HandshakeError::NotFound,
            HandshakeError::MethodNotAllowed,
            HandshakeError::UnexpectedBody,
            HandshakeError::MissingHost,
            HandshakeError::NotWebSocketUpgrade,
            HandshakeError::MissingConnectionUpgrade,
            HandshakeError::UnsupportedWebSocketVersion,
            HandshakeError::BadKey,
            HandshakeError::BadProtocolHeader,
            HandshakeError::BadAuthorizationScheme,
            HandshakeError::MalformedCredential,
        ];
        for e in errors {
            let bytes = e.response();
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut resp = httparse::Response::new(&mut headers);
            let httparse::Status::Complete(head) = resp.parse(&bytes).unwrap() else {
                panic!("incomplete response for {e:?}");
            };
            assert_eq!(resp.code, Some(e.status()));
            let len: usize = resp
                .headers
                .iter()
                .find(|h| h.name == "Content-Length")
                .map(|h| std::str::from_utf8(h.value).unwrap().parse().unwrap())
                .unwrap();
            assert_eq!(bytes.len() - head, len, "{e:?}");
        }
    }
}
