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
//!
//! # Layout
//!
//! One file per concern; everything public is re-exported here, so each item's
//! path is `http1::Item` whichever file holds it.
//!
//! - `request.rs`: the request head: [`RequestLine`], [`HostLine`], [`HeaderBlock`]
//!   and [`encode_request_head`], with the RFC 9110 token and field-value checks.
//! - `response.rs`: the incremental [`ResponseParser`]: response heads, interim 1xx
//!   responses, no-body statuses, keep-alive, and which body framing applies.
//! - `body.rs`: body framing: the Content-Length value and the chunked decoder
//!   (chunk extensions, trailers, the body limit).
//! - `error.rs`: [`Http1Error`], the one error type of both directions.

mod body;
mod error;
mod request;
mod response;

pub use error::Http1Error;
pub(crate) use request::is_token;
pub use request::{
    encode_request_head, HeaderBlock, HostLine, RequestHead, RequestLine, ACCEPT_JSON,
    CONTENT_BINARY, CONTENT_JSON,
};
pub use response::{Response, ResponseParser, MAX_HEADERS, MAX_HEAD_BYTES};
