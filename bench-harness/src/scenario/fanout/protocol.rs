//! The `fanout` worker → coordinator messages, one JSON object per stdout line, and the
//! coordinator → worker control lines on stdin (`report <step>`).
//!
//! Why it exists: the two processes agree on these and nothing else; keeping them in
//! one file keeps both sides honest.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::report::{ConnectStats, HistData};

/// What a worker tells its coordinator.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Msg {
    /// Twice a second while subscribing.
    Progress { established: u64, failed: u64 },
    /// Every subscribe attempt is over.
    Ready { connect: ConnectStats },
    /// The answer to `report <step>`: that step's deliveries so far, and the totals of
    /// what did not fit a step.
    Step {
        step: u32,
        delivered: u64,
        latency: HistData,
        /// Subscribers that ended so far, by cause.
        dropped: BTreeMap<String, u64>,
        /// Deliveries of steps already reported, and deliveries without a stamp.
        late: u64,
        unparsable: u64,
    },
    /// The worker cannot run.
    Fatal { error: String },
}

/// The control line asking for step `step`'s deliveries.
pub fn report_line(step: u32) -> String {
    format!("report {step}")
}

/// The step a control line asks for.
pub fn parse_report_line(line: &str) -> Option<u32> {
    line.strip_prefix("report ")?.trim().parse().ok()
}
