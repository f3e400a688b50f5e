//! Error answers to a client request: the 16-byte response header with a code and an
//! empty payload — or nothing, for an event (0x10), except the rate limit's 12.
//!
//! Why apart: the dispatch, the peer router and topic endpoints all answer this way,
//! and must agree on when an event hears back.

use bytes::Bytes;

use crate::proto::bannou::{flags, RequestHeader, ResponseCode, ResponseHeader};
use crate::session::ConnShared;

/// Answers `req` with `code` and an empty payload (every error response is empty).
pub fn answer_error(shared: &ConnShared, req: &RequestHeader, code: ResponseCode) {
    if req.flags & flags::EVENT != 0 && code != ResponseCode::TooManyRequests {
        // Events expect no response, except for the rate limit (the client must know it
        // is being throttled).
        return;
    }
    shared.send_binary(&ResponseHeader::answering(req, code).encode(), Bytes::new());
}
