//! The steps of a run and the rule that ends it: each step publishes at one rate for a
//! few seconds; a step whose deliveries fall below 95 % of what was published times the
//! subscribers, or whose p99 exceeds one second, "falls behind", and no higher step is
//! run after it. `StepResult` is one step's row of the table and of the JSON.
//!
//! Why it exists: the rule decides every number the peers are compared by (the highest
//! sustained step), so it is a pure function with its own tests, apart from the I/O.

use serde::{Deserialize, Serialize};

use crate::report::{HistData, Percentiles};

/// Deliveries below this share of published × subscribers fall behind.
pub const MIN_DELIVERED_SHARE: f64 = 0.95;
/// A p99 above this (µs) falls behind.
pub const MAX_P99_US: u64 = 1_000_000;

/// The publish rates stepped through when none are given (messages/s to the one topic).
pub const DEFAULT_RATES: &[f64] = &[
    1.0, 10.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0,
];

/// The server's /proc numbers over one step's publishing window.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ServerUsage {
    /// CPU of all the server's processes, percent of one core.
    pub cpu_percent_of_core: f64,
    /// VmRSS summed over the server's processes at the step's end, bytes.
    pub rss_bytes: u64,
}

/// One step, measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StepResult {
    pub step: u32,
    /// Messages per second asked for.
    pub rate_per_sec: f64,
    /// Messages actually published (accepted by the server's publish API).
    pub published: u64,
    pub publish_secs: f64,
    /// Subscribers the deliveries are expected on.
    pub subscribers: u64,
    /// Deliveries of this step's messages received (by the end of the drain).
    pub delivered: u64,
    /// delivered / publish_secs.
    pub deliveries_per_sec: f64,
    /// published × subscribers − delivered (never negative).
    pub lost: u64,
    /// Publish (the time written into the payload) to receipt, µs.
    pub latency_us: Percentiles,
    pub latency_hist: HistData,
    pub server: Option<ServerUsage>,
    /// The raw probe only: how long its server took to write one tick's messages to every
    /// subscriber socket, µs (at 1 message/s: one message to all N).
    pub fanout_write_us: Option<Percentiles>,
    /// Publish requests the server refused or failed (HTTP status other than 2xx, ...).
    pub publish_errors: u64,
    pub fell_behind: bool,
    /// Why it fell behind (empty when it did not).
    pub why: String,
}

/// Whether a step falls behind, and why (`None` when it kept up).
pub fn falls_behind(
    published: u64,
    subscribers: u64,
    delivered: u64,
    p99_us: u64,
) -> Option<String> {
    let expected = published as f64 * subscribers as f64;
    let mut why = Vec::new();
    if expected > 0.0 && (delivered as f64) < MIN_DELIVERED_SHARE * expected {
        why.push(format!(
            "delivered {:.1} % of published x subscribers (< {:.0} %)",
            100.0 * delivered as f64 / expected,
            100.0 * MIN_DELIVERED_SHARE
        ));
    }
    if expected > 0.0 && delivered == 0 {
        why.push("nothing delivered".to_string());
    } else if p99_us > MAX_P99_US {
        why.push(format!("p99 {} ms > 1 s", p99_us / 1000));
    }
    (!why.is_empty()).then(|| why.join("; "))
}

/// The step results up to and including the first one that fell behind.
pub fn highest_sustained(steps: &[StepResult]) -> Option<&StepResult> {
    steps.iter().take_while(|s| !s.fell_behind).last()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_falls_behind_below_95_percent_of_deliveries_or_above_one_second_of_p99() {
        // 100 messages to 1000 subscribers: 95,000 deliveries is the line.
        assert_eq!(falls_behind(100, 1000, 95_000, 5_000), None);
        assert!(falls_behind(100, 1000, 94_999, 5_000).is_some());
        assert!(falls_behind(100, 1000, 100_000, 1_000_001)
            .unwrap()
            .contains("p99"));
        assert_eq!(falls_behind(100, 1000, 100_000, 1_000_000), None);
        assert!(falls_behind(10, 10, 0, 0)
            .unwrap()
            .contains("nothing delivered"));
    }

    #[test]
    fn the_highest_sustained_step_is_the_last_before_the_first_that_fell_behind() {
        let step = |rate: f64, fell_behind: bool| StepResult {
            rate_per_sec: rate,
            fell_behind,
            ..Default::default()
        };
        let steps = [step(1.0, false), step(10.0, false), step(100.0, true)];
        assert_eq!(highest_sustained(&steps).unwrap().rate_per_sec, 10.0);
        assert!(highest_sustained(&[step(1.0, true)]).is_none());
    }
}
