//! The worker → parent protocol of `rpc`, and the counters and results it carries.
//!
//! Why it exists: the coordinator and its workers are separate processes; this is the one
//! place both sides take the messages from, so they cannot disagree on them. Worker →
//! parent (stdout, one JSON object a line, `phase` tagged): `progress` (`live` counters
//! since the start, `interval` histogram of the last second), `ready` (the ramp is over:
//! `connect` stats), `done` (`report`: the worker's final results), `fatal`. Parent →
//! worker (stdin): `go <unix_ns>`, then EOF = stop.

use serde::{Deserialize, Serialize};

use crate::report::{ConnectStats, HistData, RequestStats};

/// Live counters of a thread, a worker or the run (everything since the start, warm-up
/// included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Live {
    pub established: u64,
    pub connect_failed: u64,
    pub alive: u64,
    pub sent: u64,
    pub ok: u64,
    /// Error responses, timeouts and requests lost with their connection.
    pub errors: u64,
}

impl Live {
    pub(super) fn add(&mut self, o: &Live) {
        self.established += o.established;
        self.connect_failed += o.connect_failed;
        self.alive += o.alive;
        self.sent += o.sent;
        self.ok += o.ok;
        self.errors += o.errors;
    }
}

/// What a worker tells its parent, one JSON object per stdout line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub(super) enum Msg {
    Progress { live: Live, interval: HistData },
    Ready { connect: ConnectStats },
    Done { report: Box<WorkerReport> },
    Fatal { error: String },
}

/// One worker's final results (histograms in µs).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerReport {
    pub worker: usize,
    pub source: String,
    pub connect: ConnectStats,
    pub requests: RequestStats,
    /// From the intended send time (ok responses, measured window).
    pub latency: HistData,
    /// From the actual send time.
    pub service: HistData,
    /// Actual − intended send time (open loop).
    pub send_lag: HistData,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report;

    #[test]
    fn worker_messages_round_trip() {
        let mut h = report::new_histogram();
        report::record(&mut h, 123);
        let msg = Msg::Progress {
            live: Live {
                sent: 5,
                ok: 4,
                ..Default::default()
            },
            interval: HistData::from_histogram(&h),
        };
        let line = serde_json::to_string(&msg).unwrap();
        assert!(line.starts_with(r#"{"phase":"progress""#), "{line}");
        match serde_json::from_str::<Msg>(&line).unwrap() {
            Msg::Progress { live, interval } => {
                assert_eq!((live.sent, live.ok), (5, 4));
                assert_eq!(interval.to_histogram().len(), 1);
            }
            other => panic!("{other:?}"),
        }
    }
}
