//! What a service's answers are recorded into: its name, its metrics, and the throttle
//! on its failure log lines.
//!
//! Why apart from the service (`upstream::service`): a client request's [`Reply`]
//! (`upstream::reply`) is kept by the backend until the answer comes, so it may hold
//! only what sits below the backends; holding the whole service would put the pool and
//! the link in a circle with their own replies.
//!
//! [`Reply`]: super::Reply

use std::cell::Cell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::metrics::ServiceMetrics;
use crate::proto::event::{event_message, iso8601_utc, ServiceError, SERVICE_ERROR_EVENT};
use crate::proto::guid::format_guid;
use crate::push::frame::message_frame;
use crate::push::ShardPlane;
use crate::rt::sys;
use crate::rt::task::unix_now;

use super::error::BackendError;

/// A service's name, metrics and failure log, shared by its runtime and the replies
/// in flight to it.
#[derive(Debug)]
pub struct ServiceMeter {
    pub name: Arc<str>,
    pub metrics: Arc<ServiceMetrics>,
    /// Throttles the warning logged per failed backend call.
    pub failures: FailureLog,
    /// Who is told of failures: sessions of the shard with one of these roles get a
    /// `service_error` event when a failure is logged (so at most once a second).
    pub alerts: Option<Alerts>,
}

/// Where a service's `service_error` events go.
#[derive(Debug)]
pub struct Alerts {
    pub plane: std::rc::Rc<ShardPlane>,
    pub roles: Arc<[String]>,
}

impl ServiceMeter {
    /// Tells the shard's sessions with an alert role that a call to `endpoint` failed
    /// (called when the failure is logged: at most once a second per service and
    /// shard). Returns how many were told.
    pub fn alert(
        &self,
        error: &BackendError,
        endpoint: Option<&str>,
        correlation: Option<&str>,
    ) -> usize {
        let Some(a) = &self.alerts else {
            return 0;
        };
        let admins: Vec<_> = a
            .plane
            .sessions
            .all()
            .into_iter()
            .filter(|c| !c.is_gone() && c.session.roles().iter().any(|r| a.roles.contains(r)))
            .collect();
        if admins.is_empty() {
            return 0;
        }
        let now = unix_now();
        let message = error.to_string();
        let event = ServiceError {
            event_name: SERVICE_ERROR_EVENT,
            event_id: format_guid(&sys::random_bytes()),
            timestamp: iso8601_utc(now.as_nanos()),
            service_id: format_guid(&service_uuid(&self.name)),
            app_id: "ringgate",
            operation: endpoint.unwrap_or("call"),
            error_type: error.kind(),
            message: &message,
            severity: "error",
            dependency: Some(&self.name),
            endpoint,
            correlation_id: correlation,
        };
        // Bannou's message id for these: the time in milliseconds.
        let frame = message_frame(&event_message(now.as_millis() as u64, &event), &[]);
        for c in &admins {
            c.send_frame(frame.clone());
        }
        admins.len()
    }
}

/// A stable UUID (version 8 layout) for a service name.
fn service_uuid(name: &str) -> [u8; 16] {
    use sha2::Digest;
    let d = sha2::Sha256::digest(name.as_bytes());
    let mut u = [0u8; 16];
    u.copy_from_slice(&d[..16]);
    u[6] = (u[6] & 0x0f) | 0x80;
    u[8] = (u[8] & 0x3f) | 0x80;
    u
}

/// Backend failures are logged at most once a second per service and shard, with the
/// number left unlogged since the previous line: during an outage every failed request
/// is still counted in the metrics and answered, but does not become a log line of its
/// own (measured: a 1.5 s backend restart under 20k requests/s logged 30,143 lines).
#[derive(Debug, Default)]
pub struct FailureLog {
    since: Cell<Option<Instant>>,
    unlogged: Cell<u64>,
}

impl FailureLog {
    /// Records a failure at `now`: `Some(n)` if it should be logged now (`n` failures
    /// went unlogged since the previous line), `None` if it only counts.
    pub fn admit(&self, now: Instant) -> Option<u64> {
        match self.since.get() {
            Some(t) if now.saturating_duration_since(t) < Duration::from_secs(1) => {
                self.unlogged.set(self.unlogged.get() + 1);
                None
            }
            _ => {
                self.since.set(Some(now));
                Some(self.unlogged.replace(0))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_failures_are_logged_once_a_second_with_the_count_left_unlogged() {
        let log = FailureLog::default();
        let t0 = Instant::now();
        assert_eq!(log.admit(t0), Some(0), "the first failure is logged");
        for ms in [1, 200, 999] {
            assert_eq!(log.admit(t0 + Duration::from_millis(ms)), None);
        }
        assert_eq!(log.admit(t0 + Duration::from_millis(1000)), Some(3));
        assert_eq!(log.admit(t0 + Duration::from_millis(1500)), None);
        assert_eq!(log.admit(t0 + Duration::from_secs(5)), Some(1));
    }
}
