//! Where a client request's answer goes: the answer is turned into a response frame
//! (HTTP status → code, errors with an empty payload) in the client's outbox, and
//! counted in the service's metrics.
//!
//! Why here, below the edge: a backend keeps a started call's [`Reply`] with the call
//! and runs it from its own reader task when the answer arrives, so the reply must be
//! a type the backends know; it needs only the session's handle (`session`), not the
//! connection task that owns the socket.

use std::rc::Rc;

use bytes::Bytes;

use crate::proto::bannou::{flags, RequestHeader, ResponseCode, ResponseHeader};
use crate::proto::http1::Response;
use crate::rt::clock;
use crate::session::ConnShared;

use super::error::BackendError;
use super::meter::ServiceMeter;

/// Where a started request's answer goes: its client connection, with what the answer
/// and the service's metrics need. A plain value (`upstream::Done::Reply`), so a backend
/// keeps it with the call (the pool inside its `Call`, the link in its call table)
/// without a boxed closure, which was an allocation per request.
pub struct Reply {
    pub shard: usize,
    pub conn: Rc<ConnShared>,
    pub meter: Rc<ServiceMeter>,
    pub header: RequestHeader,
    /// `rt::clock::recent_us` when the request was started.
    pub started: u64,
    /// The endpoint's path (the shard's `Rc`: named in `service_error` events).
    pub path: Rc<str>,
}

impl Reply {
    /// Answers the client from `result` and ends the request.
    pub fn send(self, result: Result<Response, BackendError>) {
        answer(
            self.shard,
            &self.conn,
            &self.meter,
            &self.header,
            self.started,
            result,
            Some(&self.path),
        );
        self.conn.request_done();
    }
}

/// Answers the client from the backend's result (status → code; errors carry no
/// payload) and records the service's metrics. A failure that is logged is also told to
/// the shard's admin sessions (`ServiceMeter::alert`; `endpoint` when known).
pub fn answer(
    shard: usize,
    shared: &ConnShared,
    service: &ServiceMeter,
    header: &RequestHeader,
    started: u64,
    result: Result<Response, BackendError>,
    endpoint: Option<&str>,
) {
    // Answers come from a read batch (which refreshed the clock); failures may come
    // from a timer, so they read it afresh.
    let failed_at = result.is_err().then(clock::refresh);
    let now = clock::recent_us();
    service.metrics.latency_us(now.saturating_sub(started));
    let (code, payload) = match result {
        Ok(resp) => {
            let code = ResponseCode::from_http_status(resp.status);
            if code == ResponseCode::Ok {
                (code, resp.body)
            } else {
                tracing::debug!(shard, service = %service.name, status = resp.status, "backend answered an error status");
                (code, Bytes::new())
            }
        }
        Err(e) => {
            if let Some(unlogged) = failed_at.and_then(|at| service.failures.admit(at)) {
                tracing::warn!(shard, service = %service.name, error = %e, side = ?e.side(), retry_safe = e.retry_safe(), unlogged_since_last = unlogged, "backend call failed");
                let correlation =
                    format!("{}:{:016x}", shared.session.session_id, header.message_id);
                service.alert(&e, endpoint, Some(&correlation));
            }
            (ResponseCode::InternalError, Bytes::new())
        }
    };
    service.metrics.response(code);
    if header.flags & flags::EVENT != 0 {
        return;
    }
    let head = ResponseHeader::answering(header, code).encode();
    shared.send_binary(&head, payload);
}
