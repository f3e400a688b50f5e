//! The `fanout` report: one row per step on stderr as it ends, the table at the end on
//! stdout, and the JSON (`--json`).
//!
//! Why it exists: people read the table; `perf/fanout_peers.sh` reads the JSON to put
//! the targets side by side.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::steps::{highest_sustained, StepResult};
use crate::report::{fmt_bytes, fmt_us, ConnectStats};

/// The whole run (`schema_version` 1).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FanoutReport {
    pub scenario: String,
    pub schema_version: u32,
    pub label: String,
    pub target: String,
    pub started_unix_ms: u64,
    pub subscribers_asked: usize,
    pub procs: usize,
    pub per_proc: Vec<usize>,
    pub payload_bytes: usize,
    pub step_secs: f64,
    pub drain_secs: f64,
    pub tick_ms: u64,
    pub connect: ConnectStats,
    pub steps: Vec<StepResult>,
    /// The highest step that did not fall behind: its rate and deliveries/s.
    pub max_sustained_rate_per_sec: Option<f64>,
    pub max_sustained_deliveries_per_sec: Option<f64>,
    /// p99 of the first step (1 message/s by default), µs.
    pub first_step_p99_us: Option<u64>,
    /// Subscribers that ended during the run, by cause.
    pub dropped: BTreeMap<String, u64>,
    /// Deliveries that came after their step was counted, and ones without a stamp.
    pub late: u64,
    pub unparsable: u64,
    pub errors: Vec<String>,
}

impl FanoutReport {
    pub fn finish(&mut self) {
        let best = highest_sustained(&self.steps);
        self.max_sustained_rate_per_sec = best.map(|s| s.rate_per_sec);
        self.max_sustained_deliveries_per_sec = best.map(|s| s.deliveries_per_sec);
        self.first_step_p99_us = self.steps.first().map(|s| s.latency_us.p99);
    }
}

/// One step as a table row.
pub fn row(s: &StepResult) -> String {
    let (cpu, rss) = s.server.as_ref().map_or(("-".into(), "-".into()), |u| {
        (
            format!("{:.0}%", u.cpu_percent_of_core),
            fmt_bytes(u.rss_bytes as f64),
        )
    });
    let l = &s.latency_us;
    format!(
        "{:>8} {:>9} {:>12.0} {:>10} {:>9} {:>9} {:>9} {:>9} {:>6} {:>9}  {}",
        s.rate_per_sec,
        s.published,
        s.deliveries_per_sec,
        s.lost,
        fmt_us(l.p50),
        fmt_us(l.p99),
        fmt_us(l.p999),
        fmt_us(l.max),
        cpu,
        rss,
        if s.fell_behind {
            format!("FELL BEHIND: {}", s.why)
        } else {
            "ok".into()
        }
    )
}

pub fn header() -> String {
    format!(
        "{:>8} {:>9} {:>12} {:>10} {:>9} {:>9} {:>9} {:>9} {:>6} {:>9}  {}",
        "msg/s",
        "published",
        "deliveries/s",
        "lost",
        "p50",
        "p99",
        "p99.9",
        "max",
        "cpu",
        "rss",
        "step"
    )
}

pub fn print_table(r: &FanoutReport) {
    println!(
        "fanout {}: {} subscribers ({} established), {} B payloads, {} s steps",
        r.label, r.subscribers_asked, r.connect.established, r.payload_bytes, r.step_secs
    );
    println!("{}", header());
    for s in &r.steps {
        println!("{}", row(s));
    }
    match (
        r.max_sustained_rate_per_sec,
        r.max_sustained_deliveries_per_sec,
    ) {
        (Some(rate), Some(d)) => println!(
            "max sustained: {rate} msg/s = {d:.0} deliveries/s; p99 at the first step {}",
            r.first_step_p99_us.map_or("-".into(), fmt_us)
        ),
        _ => println!("no step was sustained"),
    }
    if let Some(w) = r.steps.first().and_then(|s| s.fanout_write_us.as_ref()) {
        println!(
            "raw probe: writing one tick's messages to all subscribers took p50 {} p99 {} max {} (first step)",
            fmt_us(w.p50),
            fmt_us(w.p99),
            fmt_us(w.max)
        );
    }
    if !r.dropped.is_empty() {
        println!("subscribers dropped: {:?}", r.dropped);
    }
    for e in &r.errors {
        println!("error: {e}");
    }
}
