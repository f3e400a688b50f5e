//! How a backend call fails, for both backends: typed, tagged with the side that
//! failed and whether a retry is safe.
//!
//! Why apart: the HTTP pool and the link answer the same callers through the same
//! contract (`upstream::call`), and the answer to a client (code 60, a log line, a
//! metric) depends only on these types, not on which backend failed.

use std::io;

use crate::proto::http1::Http1Error;
use crate::proto::link::LinkError;

/// Who is to blame for a failed call (for choosing a status / metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorSide {
    /// The backend failed: refused/unreachable, timed out, reset, or sent
    /// an invalid or oversized response (502/504-like).
    Backend,
    /// The gateway itself: pool saturated, bad configuration (503/500-like).
    Gateway,
    /// The request could not be encoded, e.g. a header value taken from a
    /// client's claims contains CR/LF (400-like).
    Request,
}

/// Why a backend call failed.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// Could not connect (refused, unreachable, connect timeout). The
    /// request was not sent.
    #[error("backend connect failed: {0}")]
    Connect(#[source] io::Error),
    /// The request deadline expired after the request may have been sent.
    #[error("backend request timed out")]
    Timeout,
    /// I/O error on an established connection.
    #[error("backend I/O error: {0}")]
    Io(#[source] io::Error),
    /// The backend's response violated HTTP/1.1 or our limits.
    #[error("backend protocol error: {0}")]
    Protocol(#[source] Http1Error),
    /// No connection slot became free before the deadline. The request was
    /// not sent.
    #[error("backend connection pool saturated")]
    Saturated,
    /// The pool's URL is unusable (the message says why).
    #[error("invalid backend URL: {0}")]
    InvalidUrl(String),
    /// Settings are unusable (the message says why).
    #[error("invalid backend settings: {0}")]
    InvalidSettings(&'static str),
    /// The request could not be encoded (bad header value, path, ...).
    /// Nothing was sent.
    #[error("invalid backend request: {0}")]
    InvalidRequest(#[source] Http1Error),
    /// A call over the backend link failed (`upstream::link`).
    #[error(transparent)]
    Link(#[from] LinkFailure),
}

impl BackendError {
    /// A short name for the kind of failure (`service_error` events' `errorType`).
    pub fn kind(&self) -> &'static str {
        match self {
            BackendError::Connect(_) => "unreachable",
            BackendError::Timeout => "timeout",
            BackendError::Io(_) => "io",
            BackendError::Protocol(_) => "protocol",
            BackendError::Saturated => "saturated",
            BackendError::InvalidUrl(_) | BackendError::InvalidSettings(_) => "misconfigured",
            BackendError::InvalidRequest(_) => "invalid_request",
            BackendError::Link(_) => "link",
        }
    }

    /// True only when the request certainly never reached the backend and
    /// retrying (e.g. another instance) is safe: connect failures and
    /// saturation. (`InvalidRequest` was not sent either, but retrying it
    /// cannot succeed, so it is `false`.)
    pub fn retry_safe(&self) -> bool {
        matches!(self, BackendError::Connect(_) | BackendError::Saturated)
    }

    /// Which side failed.
    pub fn side(&self) -> ErrorSide {
        match self {
            BackendError::Connect(_)
            | BackendError::Timeout
            | BackendError::Io(_)
            | BackendError::Protocol(_) => ErrorSide::Backend,
            BackendError::Saturated
            | BackendError::InvalidUrl(_)
            | BackendError::InvalidSettings(_) => ErrorSide::Gateway,
            BackendError::InvalidRequest(_) => ErrorSide::Request,
            BackendError::Link(l) => match l {
                LinkFailure::Down | LinkFailure::Lost => ErrorSide::Backend,
                LinkFailure::Overloaded(_) | LinkFailure::Retired => ErrorSide::Gateway,
                LinkFailure::Encode(_) => ErrorSide::Request,
            },
        }
    }
}

/// How a call over the link failed (other than by timing out:
/// [`BackendError::Timeout`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkFailure {
    /// The link is down (redialing); the request was not sent.
    #[error("backend link is down")]
    Down,
    /// The link failed after the request was queued; it may or may not have been
    /// processed.
    #[error("backend link lost before the reply")]
    Lost,
    /// Too many calls waiting or too many bytes unsent; the request was not sent.
    #[error("backend link overloaded ({0})")]
    Overloaded(&'static str),
    /// The request could not be encoded (a field too long); nothing was sent.
    #[error("request cannot be encoded for the link: {0}")]
    Encode(LinkError),
    /// The service's link was replaced by a registry update before the request.
    #[error("backend link retired")]
    Retired,
}
