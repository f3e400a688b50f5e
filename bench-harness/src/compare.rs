//! `ringgate-bench compare A.json B.json`: two `rpc` runs side by side, with B/A ratios
//! for throughput and each percentile.
//!
//! Why it exists: the question users ask is "how does this run differ from that one"
//! (a gateway against nginx, a change against the last release); a ratio column answers
//! it without arithmetic, and it works on the saved JSON of any earlier run.

use std::process::ExitCode;

use crate::cli::CompareArgs;
use crate::report::{fmt_bytes, fmt_us, RpcReport};

/// One row: name, A, B, and whether the ratio is meaningful.
pub struct Row {
    pub name: &'static str,
    pub a: Option<f64>,
    pub b: Option<f64>,
    /// How to print a value.
    pub unit: Unit,
}

#[derive(Clone, Copy)]
pub enum Unit {
    Count,
    PerSec,
    Us,
    Percent,
    Bytes,
}

impl Row {
    /// B / A, when both are there and A is not zero.
    pub fn ratio(&self) -> Option<f64> {
        match (self.a, self.b) {
            (Some(a), Some(b)) if a != 0.0 => Some(b / a),
            _ => None,
        }
    }
}

fn fmt(v: Option<f64>, unit: Unit) -> String {
    let Some(v) = v else { return "-".into() };
    match unit {
        Unit::Count => format!("{v:.0}"),
        Unit::PerSec => format!("{v:.0}/s"),
        Unit::Us => fmt_us(v as u64),
        Unit::Percent => format!("{v:.1}%"),
        Unit::Bytes => fmt_bytes(v),
    }
}

/// The rows compared, in order.
pub fn rows(a: &RpcReport, b: &RpcReport) -> Vec<Row> {
    let both = |f: &dyn Fn(&RpcReport) -> Option<f64>| (f(a), f(b));
    let mut out = Vec::new();
    let mut push = |name, unit, f: &dyn Fn(&RpcReport) -> Option<f64>| {
        let (a, b) = both(f);
        out.push(Row { name, a, b, unit });
    };
    push("throughput", Unit::PerSec, &|r| Some(r.throughput_per_sec));
    push("sent", Unit::Count, &|r| Some(r.requests.sent as f64));
    push("ok", Unit::Count, &|r| Some(r.requests.ok as f64));
    push("errors+timeouts", Unit::Count, &|r| {
        Some(r.requests.failed() as f64)
    });
    push("p50", Unit::Us, &|r| Some(r.latency_us.p50 as f64));
    push("p90", Unit::Us, &|r| Some(r.latency_us.p90 as f64));
    push("p99", Unit::Us, &|r| Some(r.latency_us.p99 as f64));
    push("p99.9", Unit::Us, &|r| Some(r.latency_us.p999 as f64));
    push("p99.99", Unit::Us, &|r| Some(r.latency_us.p9999 as f64));
    push("max", Unit::Us, &|r| Some(r.latency_us.max as f64));
    push("gateway CPU", Unit::Percent, &|r| {
        r.gateway.as_ref().and_then(|g| g.cpu_percent_of_core)
    });
    push("gateway RSS peak", Unit::Bytes, &|r| {
        r.gateway
            .as_ref()
            .and_then(|g| g.rss_peak_bytes)
            .map(|b| b as f64)
    });
    out
}

/// The side-by-side table as text.
pub fn table(a: &RpcReport, b: &RpcReport) -> String {
    let mut s = String::new();
    let describe = |r: &RpcReport| {
        let rate = r
            .rate_target_per_sec
            .map_or_else(|| "max".to_string(), |x| format!("{x:.0}/s"));
        format!(
            "{} ({} conns, rate {rate}, {} s, {})",
            r.label, r.conns, r.duration_secs, r.mode
        )
    };
    s.push_str(&format!("A: {}\nB: {}\n\n", describe(a), describe(b)));
    s.push_str(&format!(
        "{:<18} {:>14} {:>14} {:>9}\n",
        "", "A", "B", "B/A"
    ));
    for r in rows(a, b) {
        s.push_str(&format!(
            "{:<18} {:>14} {:>14} {:>9}\n",
            r.name,
            fmt(r.a, r.unit),
            fmt(r.b, r.unit),
            r.ratio().map_or("-".into(), |x| format!("{x:.3}"))
        ));
    }
    s
}

pub fn run(args: &CompareArgs) -> anyhow::Result<ExitCode> {
    let a = RpcReport::load(&args.a)?;
    let b = RpcReport::load(&args.b)?;
    print!("{}", table(&a, &b));
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_are_b_over_a() {
        let a = crate::report::tests::sample_rpc_report();
        let mut b = a.clone();
        b.label = "nginx".into();
        b.throughput_per_sec = a.throughput_per_sec * 2.0;
        b.latency_us.p99 = a.latency_us.p99 * 3;
        b.gateway = None;
        let rows = rows(&a, &b);
        let get = |n: &str| rows.iter().find(|r| r.name == n).unwrap();
        assert!((get("throughput").ratio().unwrap() - 2.0).abs() < 1e-9);
        assert!((get("p99").ratio().unwrap() - 3.0).abs() < 1e-9);
        assert_eq!(get("gateway CPU").ratio(), None);
        let t = table(&a, &b);
        assert!(t.contains("nginx"), "{t}");
        assert!(t.contains("2.000"), "{t}");
        assert!(t.contains("3.000"), "{t}");
    }
}
