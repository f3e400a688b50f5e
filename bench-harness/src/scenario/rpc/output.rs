//! What an `rpc` run leaves behind: the table on stdout, the JSON report, the
//! HdrHistogram interval log and the SVG chart; and the `chart` subcommand, which draws
//! the charts of saved reports.
//!
//! Why it exists: the formats are for people, machines and plotters, and none of them is
//! the coordinator's business; keeping them apart keeps the coordinator to running the
//! workers and merging their results.

use std::process::ExitCode;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::chart;
use crate::cli::{ChartArgs, RpcArgs};
use serde::Serialize;

use super::protocol::Live;
use crate::report::{self, fmt_counts, write_file, HistData, Percentiles, RpcReport};

/// One line of `--progress-json`, written once a second as the run goes: seconds from
/// the schedule's start, the wall clock, the phase (`warmup`, `measured`, `after`), the
/// live counters since the start (warm-up included) and the latency histogram of the
/// responses that arrived in that second (µs from the intended send time).
#[derive(Debug, Serialize)]
pub(super) struct ProgressLine<'a> {
    pub(super) t_secs: f64,
    pub(super) unix_ms: u64,
    pub(super) phase: &'static str,
    pub(super) live: &'a Live,
    pub(super) latency: HistData,
}

/// Writes what the run's flags ask for, in this order: the table (always), the JSON
/// report (`--json`), the interval log (`--hist-log`) and the chart of `lat`, the merged
/// latency histogram (`--chart`).
pub(super) fn write_reports(
    args: &RpcArgs,
    report: &RpcReport,
    start_unix: u64,
    intervals: &[(f64, f64, Histogram<u64>)],
    lat: &Histogram<u64>,
) -> anyhow::Result<()> {
    print_table(report);
    if let Some(path) = &args.json {
        report::write_json(path, report)?;
        eprintln!("report written to {}", path.display());
    }
    if let Some(path) = &args.hist_log {
        write_hist_log(path, start_unix, intervals, args.warmup, report)?;
        eprintln!("interval log written to {}", path.display());
    }
    if let Some(path) = &args.chart {
        let doc = chart::svg(
            &format!("rpc latency: {}", report.label),
            &[chart::Run {
                label: report.label.clone(),
                hist: lat,
            }],
        );
        write_file(path, doc.as_bytes())?;
        eprintln!("chart written to {}", path.display());
    }
    Ok(())
}

/// The HdrHistogram interval log (V2 compressed histograms, µs): one interval a second,
/// timestamps from the start of the schedule; warm-up intervals are tagged `warmup`.
fn write_hist_log(
    path: &std::path::Path,
    start_unix_ns: u64,
    intervals: &[(f64, f64, Histogram<u64>)],
    warmup_secs: f64,
    r: &RpcReport,
) -> anyhow::Result<()> {
    use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
    use hdrhistogram::serialization::V2DeflateSerializer;
    let mut buf = Vec::new();
    let mut ser = V2DeflateSerializer::new();
    let base = std::time::UNIX_EPOCH + Duration::from_nanos(start_unix_ns);
    {
        let mut w = IntervalLogWriterBuilder::new()
            .add_comment(&format!(
                "ringgate-bench rpc: {} ({} conns, rate {}, values in microseconds, latency \
                 from the intended send time)",
                r.label,
                r.conns,
                r.rate_target_per_sec
                    .map_or("max".to_string(), |x| format!("{x}/s"))
            ))
            .with_start_time(base)
            .with_base_time(base)
            .with_max_value_divisor(1000.0)
            .begin_log_with(&mut buf, &mut ser)?;
        let warm = Tag::new("warmup");
        for (t0, dt, h) in intervals {
            let tag = if *t0 + 1e-6 < warmup_secs { warm } else { None };
            w.write_histogram(
                h,
                Duration::from_secs_f64(t0.max(0.0)),
                Duration::from_secs_f64(dt.max(0.0)),
                tag,
            )
            .map_err(|e| anyhow::anyhow!("interval log: {e:?}"))?;
        }
    }
    write_file(path, &buf)
}

fn print_table(r: &RpcReport) {
    let c = &r.connect;
    let q = &r.requests;
    let rate = r.rate_target_per_sec.map_or_else(
        || format!("max (window {})", r.window.unwrap_or(0)),
        |x| format!("{x:.0}/s"),
    );
    println!();
    println!("rpc  {}", r.label);
    println!(
        "  {} conns ({} procs x {} threads), rate {rate}, payload {} B, {} s measured (+{} s warm-up)",
        r.conns, r.procs, r.threads_per_proc, r.payload_bytes, r.duration_secs, r.warmup_secs
    );
    println!(
        "  connections   {} / {} established; failures {}; connect {}",
        c.established,
        r.conns,
        fmt_counts(&c.failures),
        r.connect_us.row_us()
    );
    println!(
        "  requests      sent {}  ok {}  errors {}  timeouts {}  lost {}  late {}",
        q.sent,
        q.ok,
        fmt_counts(&q.errors),
        q.timeouts,
        q.lost,
        q.late
    );
    if !q.conn_drops.is_empty() {
        println!("  dropped conns {}", fmt_counts(&q.conn_drops));
    }
    println!(
        "  throughput    {:.0}/s ok  (sent {:.0}/s)",
        r.throughput_per_sec, r.send_rate_per_sec
    );
    let l = &r.latency_us;
    println!();
    println!("{}", report::latency_header("latency"));
    let row = |name: &str, p: &Percentiles| println!("{}", report::latency_row(name, p));
    row(
        if r.rate_target_per_sec.is_some() {
            "corrected"
        } else {
            "round trip"
        },
        l,
    );
    if r.rate_target_per_sec.is_some() {
        row("from send", &r.service_time_us);
        row("send lag", &r.send_lag_us);
    }
    if let Some(g) = &r.gateway {
        println!();
        println!("{}", report::gateway_line(g));
    }
    for e in &r.worker_errors {
        println!("  ERROR: {e}");
    }
    println!("  result: {}", if r.ok { "ok" } else { "FAILED" });
}

/// `ringgate-bench chart A.json B.json ... --out F.svg`.
pub fn chart_reports(args: &ChartArgs) -> anyhow::Result<ExitCode> {
    let reports = args
        .reports
        .iter()
        .map(|p| RpcReport::load(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let hists: Vec<Histogram<u64>> = reports
        .iter()
        .map(|r| r.latency_hist.to_histogram())
        .collect();
    let runs: Vec<chart::Run<'_>> = reports
        .iter()
        .zip(&hists)
        .map(|(r, h)| chart::Run {
            label: r.label.clone(),
            hist: h,
        })
        .collect();
    write_file(&args.out, chart::svg(&args.title, &runs).as_bytes())?;
    eprintln!("chart written to {}", args.out.display());
    Ok(ExitCode::SUCCESS)
}
