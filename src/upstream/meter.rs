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

/// A service's name, metrics and failure log, shared by its runtime and the replies
/// in flight to it.
#[derive(Debug)]
pub struct ServiceMeter {
    pub name: Arc<str>,
    pub metrics: Arc<ServiceMetrics>,
    /// Throttles the warning logged per failed backend call.
    pub failures: FailureLog,
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
