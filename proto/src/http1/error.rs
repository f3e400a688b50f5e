//! The codec's one error type, [`Http1Error`]: what the request encoder refuses to
//! write and what the response parser refuses to read. Either way the request is not
//! sent or the connection is not reused; the variants say why without echoing a
//! header value (it may hold a secret).

use super::MAX_HEAD_BYTES;

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
