//! The worker → parent protocol of `observers`, and the counts it carries.
//!
//! Why it exists: the coordinator and its workers are separate processes; both take the
//! messages from this one file, so they cannot disagree on them. Worker → parent (stdout,
//! one JSON object a line, `phase` tagged): `progress` (every second: `live` counters
//! since the start, the last second's latency histograms of fast and slow observers),
//! `ready` (every observer has connected and asked to watch, or failed: `connect`
//! stats), `done` (`report`: the worker's final counts), `fatal`. Parent → worker
//! (stdin): `go <unix_ns>` (the run's start: the measured window is
//! `[start + warmup, start + warmup + duration)`), then EOF = stop.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::tally::ClassStats;
use crate::report::{ConnectStats, HistData};

/// Live counters of a worker or of the run (everything since the start, warm-up
/// included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Live {
    pub established: u64,
    pub connect_failed: u64,
    /// Observers whose watch was answered ok and whose connection is still open.
    pub watching: u64,
    pub deliveries: u64,
    pub gaps: u64,
    pub disconnects: u64,
}

impl Live {
    pub(super) fn add(&mut self, o: &Live) {
        self.established += o.established;
        self.connect_failed += o.connect_failed;
        self.watching += o.watching;
        self.deliveries += o.deliveries;
        self.gaps += o.gaps;
        self.disconnects += o.disconnects;
    }
}

/// What a worker tells its parent, one JSON object per stdout line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub(super) enum Msg {
    Progress {
        live: Live,
        fast: HistData,
        slow: HistData,
    },
    Ready {
        connect: ConnectStats,
    },
    Done {
        report: Box<WorkerReport>,
    },
    Fatal {
        error: String,
    },
}

/// The answers to the observers' `/npc/watch` calls.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WatchStats {
    pub ok: u64,
    /// Error answers by response code (`"51:NotFound"`, ...), `"timeout"`, or the
    /// connection's end before the answer (`"closed:…"`).
    pub errors: BTreeMap<String, u64>,
}

impl WatchStats {
    pub fn merge(&mut self, o: &WatchStats) {
        self.ok += o.ok;
        crate::report::add_counts(&mut self.errors, &o.errors);
    }
}

/// One worker's final counts (measured window; histograms in µs).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerReport {
    pub worker: usize,
    pub source: String,
    pub connect: ConnectStats,
    pub watch: WatchStats,
    pub fast: ClassStats,
    pub slow: ClassStats,
    /// Connections that ended while watching, by class and cause
    /// (`"fast:closed_1013"`, `"slow:closed_eof"`, ...), at any time of the run.
    pub disconnects: BTreeMap<String, u64>,
    /// NPCs (per observer) of which at least one state was read, summed.
    pub npcs_seen: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report;

    #[test]
    fn worker_messages_round_trip() {
        let mut h = report::new_histogram();
        report::record(&mut h, 250);
        let msg = Msg::Progress {
            live: Live {
                deliveries: 9,
                gaps: 2,
                ..Default::default()
            },
            fast: HistData::from_histogram(&h),
            slow: HistData::default(),
        };
        let line = serde_json::to_string(&msg).unwrap();
        assert!(line.starts_with(r#"{"phase":"progress""#), "{line}");
        match serde_json::from_str::<Msg>(&line).unwrap() {
            Msg::Progress { live, fast, slow } => {
                assert_eq!((live.deliveries, live.gaps), (9, 2));
                assert_eq!(fast.to_histogram().len(), 1);
                assert!(slow.to_histogram().is_empty());
            }
            other => panic!("{other:?}"),
        }
    }
}
