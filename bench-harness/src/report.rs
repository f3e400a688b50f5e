//! Results shared by every scenario: latency histograms that cross process boundaries,
//! connection-attempt counters, percentile summaries, and human-readable formatting.
//!
//! Why it exists: workers run in separate processes (the 20,000-descriptor limit), so
//! what they measure must travel as JSON and merge without loss of accounting: counts
//! add up exactly and histograms merge bucket by bucket. The same types feed the table
//! printed for people and the JSON written for machines.
//!
//! JSON schema of the pieces defined here (all scenarios embed them):
//! * `HistData`: `{"unit": "us", "counts": [[value, count], ...]}` — the non-empty
//!   buckets of an HdrHistogram (3 significant digits), `value` being the bucket's
//!   highest equivalent value.
//! * `Percentiles`: `{"count", "min", "mean", "p50", "p90", "p99", "p999", "p9999",
//!   "max"}`, all in the unit of the histogram they summarise (microseconds here).
//! * `ConnectStats`: `{"attempted", "established", "retries", "failures": {cause: n},
//!   "connect_us": HistData}`; a cause is `stage:reason`, e.g. `tcp:refused`,
//!   `upgrade:http_401`, `manifest:timeout`.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest value a latency histogram tracks: 10 minutes in microseconds.
pub const MAX_TRACKED_US: u64 = 600_000_000;

/// A fresh latency histogram in microseconds (1 µs .. 10 min, 3 significant digits).
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_TRACKED_US, 3).expect("valid histogram bounds")
}

/// Records `us` (clamped into the tracked range).
pub fn record(h: &mut Histogram<u64>, us: u64) {
    let _ = h.record(us.clamp(1, MAX_TRACKED_US));
}

/// A histogram as it travels between processes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistData {
    pub unit: String,
    pub counts: Vec<(u64, u64)>,
}

impl HistData {
    pub fn from_histogram(h: &Histogram<u64>) -> HistData {
        HistData {
            unit: "us".into(),
            counts: h
                .iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect(),
        }
    }

    /// Adds these counts into `h`.
    pub fn add_to(&self, h: &mut Histogram<u64>) {
        for &(value, count) in &self.counts {
            let _ = h.record_n(value.clamp(1, MAX_TRACKED_US), count);
        }
    }

    pub fn to_histogram(&self) -> Histogram<u64> {
        let mut h = new_histogram();
        self.add_to(&mut h);
        h
    }
}

/// The usual percentiles of a histogram.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub min: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub p9999: u64,
    pub max: u64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: h.len(),
            min: h.min(),
            mean: h.mean(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            p9999: h.value_at_quantile(0.9999),
            max: h.max(),
        }
    }

    /// One table row: `p50 .. max` with units.
    pub fn row_us(&self) -> String {
        if self.count == 0 {
            return "(no samples)".into();
        }
        format!(
            "p50 {}  p90 {}  p99 {}  p99.9 {}  p99.99 {}  max {}",
            fmt_us(self.p50),
            fmt_us(self.p90),
            fmt_us(self.p99),
            fmt_us(self.p999),
            fmt_us(self.p9999),
            fmt_us(self.max)
        )
    }
}

/// Counters of connection attempts (what `idle` and `connect` both report).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectStats {
    pub attempted: u64,
    pub established: u64,
    /// Attempts retried once after ECONNREFUSED/EAGAIN.
    pub retries: u64,
    /// Failed attempts by cause (`stage:reason`).
    pub failures: BTreeMap<String, u64>,
    /// TCP connect + upgrade + manifest, per established connection.
    pub connect_us: HistData,
}

impl ConnectStats {
    pub fn failed(&self) -> u64 {
        self.failures.values().sum()
    }

    /// Adds `other` into `self`: counts add, failure causes add, histograms merge.
    pub fn merge(&mut self, other: &ConnectStats) {
        self.attempted += other.attempted;
        self.established += other.established;
        self.retries += other.retries;
        add_counts(&mut self.failures, &other.failures);
        let mut h = self.connect_us.to_histogram();
        other.connect_us.add_to(&mut h);
        self.connect_us = HistData::from_histogram(&h);
    }
}

/// Adds every `(key, n)` of `from` into `into`.
pub fn add_counts(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (k, n) in from {
        *into.entry(k.clone()).or_default() += n;
    }
}

/// `{cause: n}` as `cause n, cause n` (or `none`).
pub fn fmt_counts(c: &BTreeMap<String, u64>) -> String {
    if c.is_empty() {
        return "none".into();
    }
    c.iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Microseconds, scaled to µs/ms/s.
pub fn fmt_us(us: u64) -> String {
    if us < 1_000 {
        format!("{us}µs")
    } else if us < 1_000_000 {
        format!("{:.2}ms", us as f64 / 1e3)
    } else {
        format!("{:.2}s", us as f64 / 1e6)
    }
}

/// Bytes, scaled to B/KiB/MiB/GiB.
pub fn fmt_bytes(b: f64) -> String {
    let a = b.abs();
    if a < 1024.0 {
        format!("{b:.0} B")
    } else if a < 1024.0 * 1024.0 {
        format!("{:.2} KiB", b / 1024.0)
    } else if a < 1024.0 * 1024.0 * 1024.0 {
        format!("{:.1} MiB", b / (1024.0 * 1024.0))
    } else {
        format!("{:.2} GiB", b / (1024.0 * 1024.0 * 1024.0))
    }
}

/// Writes `value` as pretty JSON to `path` (creating parent directories).
pub fn write_json<T: Serialize>(path: &std::path::Path, value: &T) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    std::fs::write(path, text)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(values: &[u64], failures: &[(&str, u64)]) -> ConnectStats {
        let mut h = new_histogram();
        for &v in values {
            record(&mut h, v);
        }
        let failures: BTreeMap<String, u64> =
            failures.iter().map(|(k, n)| (k.to_string(), *n)).collect();
        ConnectStats {
            attempted: values.len() as u64 + failures.values().sum::<u64>(),
            established: values.len() as u64,
            retries: 1,
            failures,
            connect_us: HistData::from_histogram(&h),
        }
    }

    #[test]
    fn histogram_round_trips_through_json() {
        let mut h = new_histogram();
        for v in [1, 5, 100, 1_000, 12_345, 999_999, 5_000_000] {
            record(&mut h, v);
        }
        record(&mut h, 0); // clamped to 1
        let json = serde_json::to_string(&HistData::from_histogram(&h)).unwrap();
        let back: HistData = serde_json::from_str(&json).unwrap();
        let h2 = back.to_histogram();
        assert_eq!(h2.len(), h.len());
        assert_eq!(Percentiles::of(&h2), Percentiles::of(&h));
    }

    #[test]
    fn connect_stats_merge_adds_counts_and_histograms() {
        let mut a = stats(&[100, 200, 300], &[("tcp:refused", 2)]);
        let b = stats(
            &[1_000, 2_000],
            &[("tcp:refused", 1), ("upgrade:http_401", 4)],
        );
        a.merge(&b);
        assert_eq!(a.attempted, 3 + 2 + 2 + 5);
        assert_eq!(a.established, 5);
        assert_eq!(a.retries, 2);
        assert_eq!(a.failed(), 7);
        assert_eq!(a.failures["tcp:refused"], 3);
        assert_eq!(a.failures["upgrade:http_401"], 4);
        let p = Percentiles::of(&a.connect_us.to_histogram());
        assert_eq!(p.count, 5);
        assert_eq!(p.min, 100);
        assert!((1_999..=2_001).contains(&p.max), "{}", p.max);
        // Merging into an empty default is the identity.
        let mut e = ConnectStats::default();
        e.merge(&a);
        assert_eq!(e, a);
    }

    #[test]
    fn formatting() {
        assert_eq!(fmt_us(999), "999µs");
        assert_eq!(fmt_us(1_500), "1.50ms");
        assert_eq!(fmt_us(2_500_000), "2.50s");
        assert_eq!(fmt_bytes(2048.0), "2.00 KiB");
        assert_eq!(fmt_bytes(-512.0), "-512 B");
    }
}
