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
//!
//! # The `rpc` report (`ringgate-bench rpc --json FILE`), `schema_version` 1
//!
//! [`RpcReport`], one JSON object. Times are microseconds unless the name says otherwise.
//! * `scenario`: `"rpc"`; `schema_version`: 1; `label`: free text naming the run (charts
//!   and `compare` show it); `started_unix_ms`: wall clock at the start of the schedule.
//! * Setup: `mode` (`"bannou"`: the endpoint's GUID from the manifest, responses matched
//!   by message id; `"echo"`: a plain WebSocket echo server, the echoed 31-byte header's
//!   message id), `gateway_url`, `endpoint` (null in echo mode), `conns`, `procs`,
//!   `per_proc` (connections per worker process), `threads_per_proc`,
//!   `rate_target_per_sec` (null for `--rate max`), `window` (requests in flight per
//!   connection with `--rate max`, else null), `payload_bytes`, `warmup_secs`,
//!   `duration_secs` (the measured window), `timeout_ms`.
//! * `connect`: `ConnectStats` of opening the connections; `connect_us`: its
//!   `Percentiles`.
//! * `requests`: [`RequestStats`] over the measured window (requests whose intended send
//!   time falls in it): `sent`, `ok` (code 0), `errors` (`{"code:Name": n}` by response
//!   code, e.g. `"12:TooManyRequests"`), `timeouts` (no response within `timeout_ms`),
//!   `lost` (in flight on a connection that ended), `late` (answered after their
//!   timeout), `conn_drops` (`{cause: n}`, connections that ended during the run).
//! * `throughput_per_sec`: `requests.ok / duration_secs`; `send_rate_per_sec`:
//!   `requests.sent / duration_secs`.
//! * `latency_us`: `Percentiles` of the ok responses' latency measured from the request's
//!   INTENDED send time (coordinated-omission corrected; with `--rate max`, from the
//!   actual send); `latency_hist`: its `HistData` (for charts and re-analysis).
//! * `service_time_us`: the same responses measured from the ACTUAL send (uncorrected).
//! * `send_lag_us`: how late requests left the harness (actual − intended send time);
//!   a large p99 here means the load generator itself fell behind.
//! * `gateway`: [`GatewayUsage`] (null unless `--spawn-gateway` or `--gateway-pid`):
//!   `pid`, `spawned`, `cpu_secs` and `cpu_percent_of_core` over the measured window,
//!   `rss_start_bytes`, `rss_end_bytes`, `rss_peak_bytes` (largest sample), `hwm_bytes`
//!   (VmHWM), `samples` (`[{"t_secs", "rss_bytes", "cpu_percent_of_core"}]`, one a second,
//!   `t_secs` from the start of the schedule, negative during the ramp).
//! * `worker_errors`: problems of the harness itself; `ok`: every connection opened, no
//!   error, timeout or lost request, no worker error.

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

/// What happened to the requests of an `rpc` run (see the module doc for the schema).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestStats {
    pub sent: u64,
    pub ok: u64,
    /// Error responses by code, `"code:Name"`.
    pub errors: BTreeMap<String, u64>,
    pub timeouts: u64,
    pub lost: u64,
    pub late: u64,
    pub conn_drops: BTreeMap<String, u64>,
}

impl RequestStats {
    pub fn error_total(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Requests that did not end in an ok response, whatever the reason.
    pub fn failed(&self) -> u64 {
        self.error_total() + self.timeouts + self.lost
    }

    pub fn merge(&mut self, o: &RequestStats) {
        self.sent += o.sent;
        self.ok += o.ok;
        add_counts(&mut self.errors, &o.errors);
        self.timeouts += o.timeouts;
        self.lost += o.lost;
        self.late += o.late;
        add_counts(&mut self.conn_drops, &o.conn_drops);
    }
}

/// One reading of the gateway during a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GatewaySample {
    /// Seconds from the start of the schedule (negative during the ramp).
    pub t_secs: f64,
    pub rss_bytes: u64,
    /// CPU since the previous sample, percent of one core.
    pub cpu_percent_of_core: f64,
}

/// The gateway's CPU and memory over an `rpc` run, from /proc.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GatewayUsage {
    pub pid: u32,
    /// Started by the harness (`--spawn-gateway`).
    pub spawned: bool,
    /// User + system CPU over the measured window.
    pub cpu_secs: Option<f64>,
    pub cpu_percent_of_core: Option<f64>,
    pub rss_start_bytes: Option<u64>,
    pub rss_end_bytes: Option<u64>,
    pub rss_peak_bytes: Option<u64>,
    pub hwm_bytes: Option<u64>,
    pub samples: Vec<GatewaySample>,
}

/// The `rpc` report; the schema is in the module doc (`schema_version` 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RpcReport {
    pub scenario: String,
    pub schema_version: u32,
    pub label: String,
    pub started_unix_ms: u64,
    pub mode: String,
    pub gateway_url: String,
    pub endpoint: Option<String>,
    pub conns: usize,
    pub procs: usize,
    pub per_proc: Vec<usize>,
    pub threads_per_proc: usize,
    pub rate_target_per_sec: Option<f64>,
    pub window: Option<usize>,
    pub payload_bytes: usize,
    pub warmup_secs: f64,
    pub duration_secs: f64,
    pub timeout_ms: u64,
    pub connect: ConnectStats,
    pub connect_us: Percentiles,
    pub requests: RequestStats,
    pub throughput_per_sec: f64,
    pub send_rate_per_sec: f64,
    pub latency_us: Percentiles,
    pub latency_hist: HistData,
    pub service_time_us: Percentiles,
    pub send_lag_us: Percentiles,
    pub gateway: Option<GatewayUsage>,
    pub worker_errors: Vec<String>,
    pub ok: bool,
}

impl RpcReport {
    /// Reads a report written with `--json`.
    pub fn load(path: &std::path::Path) -> anyhow::Result<RpcReport> {
        use anyhow::Context;
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not an rpc report (schema 1)", path.display()))
    }
}

/// Writes `value` as pretty JSON to `path` (creating parent directories).
pub fn write_json<T: Serialize>(path: &std::path::Path, value: &T) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    write_file(path, text.as_bytes())
}

/// A file of JSON lines written as a run goes (`--progress-json`): each line is
/// flushed at once, so a long run that dies still leaves what it measured.
pub struct JsonLines {
    out: std::io::BufWriter<std::fs::File>,
}

impl JsonLines {
    /// Creates (truncates) `path`, creating parent directories.
    pub fn create(path: &std::path::Path) -> anyhow::Result<JsonLines> {
        use anyhow::Context;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let f =
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        Ok(JsonLines {
            out: std::io::BufWriter::new(f),
        })
    }

    /// Appends `value` as one line and flushes it.
    pub fn write<T: Serialize>(&mut self, value: &T) -> anyhow::Result<()> {
        use std::io::Write;
        serde_json::to_writer(&mut self.out, value)?;
        self.out.write_all(b"\n")?;
        self.out.flush()?;
        Ok(())
    }
}

/// Writes `data` to `path` (creating parent directories).
pub fn write_file(path: &std::path::Path, data: &[u8]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, data)?;
    Ok(())
}

/// The header of a table of latency percentiles whose first column is `what`.
pub fn latency_header(what: &str) -> String {
    format!(
        "  {what:<14} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "p50", "p90", "p99", "p99.9", "p99.99", "max"
    )
}

/// One row of that table.
pub fn latency_row(name: &str, p: &Percentiles) -> String {
    if p.count == 0 {
        return format!("  {name:<14} (no samples)");
    }
    format!(
        "  {:<14} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        name,
        fmt_us(p.p50),
        fmt_us(p.p90),
        fmt_us(p.p99),
        fmt_us(p.p999),
        fmt_us(p.p9999),
        fmt_us(p.max)
    )
}

/// The table's line about the gateway's CPU and memory.
pub fn gateway_line(g: &GatewayUsage) -> String {
    let opt = |b: Option<u64>| b.map_or("-".to_string(), |b| fmt_bytes(b as f64));
    format!(
        "  gateway pid {}{}: CPU {} over the measured window; RSS start {}, end {}, peak {}",
        g.pid,
        if g.spawned { " (spawned)" } else { "" },
        match (g.cpu_secs, g.cpu_percent_of_core) {
            (Some(s), Some(p)) => format!("{s:.2} s ({p:.0}% of one core)"),
            _ => "-".into(),
        },
        opt(g.rss_start_bytes),
        opt(g.rss_end_bytes),
        opt(g.rss_peak_bytes)
    )
}

#[cfg(test)]
pub(crate) mod tests {
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

    /// Values spread over many buckets (1 µs .. ~1 s), deterministic.
    fn spread(seed: u64, n: usize) -> Vec<u64> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                1 + (x % 1_000) * (1 + (x >> 20) % 1_000)
            })
            .collect()
    }

    #[test]
    fn histogram_merge_across_threads_and_processes_equals_direct_recording() {
        let parts: Vec<Vec<u64>> = (1..=6).map(|s| spread(s * 7919, 5_000)).collect();
        // Direct: everything recorded into one histogram.
        let mut direct = new_histogram();
        parts.iter().flatten().for_each(|&v| record(&mut direct, v));
        // Threads: one histogram per thread, merged in the worker with `add`.
        let per_thread: Vec<Histogram<u64>> = parts
            .iter()
            .map(|p| {
                let mut h = new_histogram();
                p.iter().for_each(|&v| record(&mut h, v));
                h
            })
            .collect();
        // Processes: workers 0 (threads 0-2) and 1 (threads 3-5) serialize to JSON...
        let wire: Vec<String> = per_thread
            .chunks(3)
            .map(|threads| {
                let mut w = new_histogram();
                threads.iter().for_each(|h| w.add(h).unwrap());
                serde_json::to_string(&HistData::from_histogram(&w)).unwrap()
            })
            .collect();
        // ... and the coordinator deserializes and merges.
        let mut merged = new_histogram();
        for line in &wire {
            serde_json::from_str::<HistData>(line)
                .unwrap()
                .add_to(&mut merged);
        }
        assert_eq!(merged.len(), direct.len());
        assert_eq!(merged, direct, "bucket-for-bucket equal");
        assert_eq!(Percentiles::of(&merged), Percentiles::of(&direct));
        for q in [0.0, 0.5, 0.9, 0.99, 0.999, 0.9999, 1.0] {
            assert_eq!(merged.value_at_quantile(q), direct.value_at_quantile(q));
        }
    }

    #[test]
    fn request_stats_merge() {
        let mut a = RequestStats {
            sent: 10,
            ok: 7,
            errors: [("12:TooManyRequests".to_string(), 2)].into(),
            timeouts: 1,
            ..Default::default()
        };
        let b = RequestStats {
            sent: 5,
            ok: 4,
            errors: [("12:TooManyRequests".to_string(), 1)].into(),
            lost: 0,
            late: 1,
            conn_drops: [("run:closed_1013".to_string(), 1)].into(),
            ..Default::default()
        };
        a.merge(&b);
        assert_eq!((a.sent, a.ok, a.timeouts, a.late), (15, 11, 1, 1));
        assert_eq!(a.errors["12:TooManyRequests"], 3);
        assert_eq!(a.failed(), 4);
        assert_eq!(a.conn_drops["run:closed_1013"], 1);
    }

    pub(crate) fn sample_rpc_report() -> RpcReport {
        let mut h = new_histogram();
        spread(42, 1_000)
            .into_iter()
            .for_each(|v| record(&mut h, v));
        RpcReport {
            scenario: "rpc".into(),
            schema_version: 1,
            label: "ringgate /echo".into(),
            started_unix_ms: 1_700_000_000_000,
            mode: "bannou".into(),
            gateway_url: "ws://127.0.0.1:8080/connect".into(),
            endpoint: Some("/echo".into()),
            conns: 100,
            procs: 1,
            per_proc: vec![100],
            threads_per_proc: 2,
            rate_target_per_sec: Some(20_000.0),
            window: None,
            payload_bytes: 64,
            warmup_secs: 1.0,
            duration_secs: 10.0,
            timeout_ms: 10_000,
            connect: stats(&[100, 200], &[]),
            connect_us: Percentiles::of(&stats(&[100, 200], &[]).connect_us.to_histogram()),
            requests: RequestStats {
                sent: 1_000,
                ok: 998,
                errors: [("60:InternalError".to_string(), 2)].into(),
                ..Default::default()
            },
            throughput_per_sec: 99.8,
            send_rate_per_sec: 100.0,
            latency_us: Percentiles::of(&h),
            latency_hist: HistData::from_histogram(&h),
            service_time_us: Percentiles::of(&h),
            send_lag_us: Percentiles::default(),
            gateway: Some(GatewayUsage {
                pid: 4242,
                spawned: true,
                cpu_secs: Some(3.5),
                cpu_percent_of_core: Some(35.0),
                rss_start_bytes: Some(10 << 20),
                rss_end_bytes: Some(11 << 20),
                rss_peak_bytes: Some(12 << 20),
                hwm_bytes: Some(12 << 20),
                samples: vec![GatewaySample {
                    t_secs: -0.5,
                    rss_bytes: 10 << 20,
                    cpu_percent_of_core: 1.5,
                }],
            }),
            worker_errors: vec![],
            ok: false,
        }
    }

    #[test]
    fn rpc_report_json_round_trip() {
        let r = sample_rpc_report();
        let dir = std::env::temp_dir().join(format!("rg-bench-report-{}", std::process::id()));
        let path = dir.join("r.json");
        write_json(&path, &r).unwrap();
        let back = RpcReport::load(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(back, r);
        // The documented top-level keys are there.
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        for k in [
            "scenario",
            "schema_version",
            "requests",
            "throughput_per_sec",
            "latency_us",
            "latency_hist",
            "service_time_us",
            "send_lag_us",
            "gateway",
        ] {
            assert!(v.get(k).is_some(), "missing {k}");
        }
        assert_eq!(v["latency_us"]["p99"], r.latency_us.p99);
        assert!(v["rate_target_per_sec"].is_number());
    }

    #[test]
    fn json_lines_are_one_object_a_line_and_readable_while_open() {
        let dir = std::env::temp_dir().join(format!("rg-bench-lines-{}", std::process::id()));
        let path = dir.join("p.jsonl");
        let mut out = JsonLines::create(&path).unwrap();
        let mut h = new_histogram();
        record(&mut h, 42);
        out.write(&serde_json::json!({"t_secs": 1.0, "latency": HistData::from_histogram(&h)}))
            .unwrap();
        out.write(&serde_json::json!({"t_secs": 2.0})).unwrap();
        // Flushed as written: a reader sees both lines before the writer is dropped.
        let text = std::fs::read_to_string(&path).unwrap();
        drop(out);
        std::fs::remove_dir_all(&dir).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["latency"]["counts"][0][1], 1);
        assert_eq!(lines[1]["t_secs"], 2.0);
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
