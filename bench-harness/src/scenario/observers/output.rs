//! What an `observers` run leaves behind: the report (its JSON shape, `schema_version`
//! 1), the table on stdout, the JSON file (`--json`) and the latency chart (`--chart`,
//! one curve for fast observers and one for slow ones), through the same table rows,
//! JSON writer and SVG chart as `rpc`'s.
//!
//! Why it exists: the formats are for people, machines and plotters, and none of them is
//! the coordinator's business.
//!
//! The JSON report (times in µs unless the key says otherwise): `scenario`
//! (`"observers"`), `schema_version`, `label`, `started_unix_ms`, `gateway_url`,
//! `world` (the npc-world's address), `npcs`, `observers`, `watch_per_observer`,
//! `slow_share`, `slow_pause_ms`, `procs`, `per_proc`, `warmup_secs`, `duration_secs`;
//! `connect` (`ConnectStats`) and `connect_us`; `watch` (`{"ok", "errors": {key: n}}`);
//! `deliveries` and `deliveries_per_sec` (state pushes read in the measured window);
//! `fast` and `slow` (`{"observers", "deliveries", "deliveries_per_sec", "gaps", "stale",
//! "foreign", "manifests", "expected_per_sec", "latency_us": Percentiles,
//! "latency_hist": HistData}`: `gaps` = states skipped (conflations), `stale` = repeats
//! or reordering, `foreign` = pushes for NPCs not watched (or not NPC states),
//! `manifests` = new capability manifests (a config reload changed what the session may
//! call), `expected_per_sec` = what the world's decisions in the
//! window would deliver to that class's observers, null when the world is not in this
//! process); `disconnects` (`{"class:cause": n}`); `npcs_seen`; `world_counts` (null, or
//! the in-process world's `decisions`, `published`, `unlinked`, `dropped` in the window
//! and `subscribes` in all); `gateway` (as `rpc`'s); `worker_errors`; `ok` (every
//! observer connected and watching, fast observers got pushes and none was
//! disconnected, no worker error).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::protocol::{Live, WatchStats};
use crate::chart;
use crate::cli::ObserversArgs;
use crate::report::{self, fmt_counts, ConnectStats, GatewayUsage, HistData, Percentiles};

/// One class of observers (fast or slow) in the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassReport {
    pub observers: u64,
    pub deliveries: u64,
    pub deliveries_per_sec: f64,
    pub gaps: u64,
    pub stale: u64,
    pub foreign: u64,
    #[serde(default)]
    pub manifests: u64,
    pub expected_per_sec: Option<f64>,
    pub latency_us: Percentiles,
    pub latency_hist: HistData,
}

/// One line of `--progress-json`, written once a second as the run goes: seconds from
/// the start, the wall clock, the phase (`warmup`, `measured`, `after`), the live
/// counters since the start (warm-up included) and the latency histograms (µs, decision
/// to receipt) of the fast and slow observers' state pushes read in that second.
#[derive(Debug, Serialize)]
pub(super) struct ProgressLine<'a> {
    pub(super) t_secs: f64,
    pub(super) unix_ms: u64,
    pub(super) phase: &'static str,
    pub(super) live: &'a Live,
    pub(super) fast: HistData,
    pub(super) slow: HistData,
}

/// The in-process world's counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorldCounts {
    pub decisions: u64,
    pub published: u64,
    pub unlinked: u64,
    pub dropped: u64,
    pub subscribes: u64,
}

/// The `observers` report (see the file's doc).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObserversReport {
    pub scenario: String,
    pub schema_version: u32,
    pub label: String,
    pub started_unix_ms: u64,
    pub gateway_url: String,
    pub world: String,
    pub npcs: u32,
    pub observers: usize,
    pub watch_per_observer: usize,
    pub slow_share: f64,
    pub slow_pause_ms: f64,
    pub procs: usize,
    pub per_proc: Vec<usize>,
    pub warmup_secs: f64,
    pub duration_secs: f64,
    pub connect: ConnectStats,
    pub connect_us: Percentiles,
    pub watch: WatchStats,
    pub deliveries: u64,
    pub deliveries_per_sec: f64,
    pub fast: ClassReport,
    pub slow: ClassReport,
    pub disconnects: BTreeMap<String, u64>,
    pub npcs_seen: u64,
    pub world_counts: Option<WorldCounts>,
    pub gateway: Option<GatewayUsage>,
    pub worker_errors: Vec<String>,
    pub ok: bool,
}

/// Writes the table (always), the JSON report (`--json`) and the chart (`--chart`).
pub(super) fn write_reports(args: &ObserversArgs, r: &ObserversReport) -> anyhow::Result<()> {
    print_table(r);
    if let Some(path) = &args.json {
        report::write_json(path, r)?;
        eprintln!("report written to {}", path.display());
    }
    if let Some(path) = &args.chart {
        let fast = r.fast.latency_hist.to_histogram();
        let slow = r.slow.latency_hist.to_histogram();
        let mut runs = vec![chart::Run {
            label: format!("fast observers ({})", r.fast.observers),
            hist: &fast,
        }];
        if !slow.is_empty() {
            runs.push(chart::Run {
                label: format!("slow observers ({})", r.slow.observers),
                hist: &slow,
            });
        }
        let doc = chart::svg(&format!("NPC decision to receipt: {}", r.label), &runs);
        report::write_file(path, doc.as_bytes())?;
        eprintln!("chart written to {}", path.display());
    }
    Ok(())
}

/// `x` as a share of `of`, for the table.
fn pct(x: f64, of: Option<f64>) -> String {
    match of {
        Some(e) if e > 0.0 => format!(" = {:.1} % of expected", 100.0 * x / e),
        _ => String::new(),
    }
}

fn print_table(r: &ObserversReport) {
    let c = &r.connect;
    println!();
    println!("observers  {}", r.label);
    println!(
        "  {} observers ({} procs) x {} NPCs of {}, slow share {} (a message per {} ms), \
         {} s measured (+{} s warm-up)",
        r.observers,
        r.procs,
        r.watch_per_observer,
        r.npcs,
        r.slow_share,
        r.slow_pause_ms,
        r.duration_secs,
        r.warmup_secs
    );
    println!(
        "  connections   {} / {} established; failures {}; connect {}",
        c.established,
        r.observers,
        fmt_counts(&c.failures),
        r.connect_us.row_us()
    );
    println!(
        "  watches       ok {}  errors {}",
        r.watch.ok,
        fmt_counts(&r.watch.errors)
    );
    if let Some(w) = &r.world_counts {
        println!(
            "  world         decisions {} ({:.0}/s)  published {}  unlinked {}  dropped {}  subscribes {}",
            w.decisions,
            w.decisions as f64 / r.duration_secs,
            w.published,
            w.unlinked,
            w.dropped,
            w.subscribes
        );
    }
    println!(
        "  deliveries    {} ({:.0}/s)",
        r.deliveries, r.deliveries_per_sec
    );
    for (name, k) in [("fast", &r.fast), ("slow", &r.slow)] {
        if k.observers == 0 && k.deliveries == 0 {
            continue;
        }
        println!(
            "    {name} ({:>5})  {:.0}/s{}; gaps (conflated states) {}, stale {}, foreign {}, manifests {}",
            k.observers,
            k.deliveries_per_sec,
            pct(k.deliveries_per_sec, k.expected_per_sec),
            k.gaps,
            k.stale,
            k.foreign,
            k.manifests
        );
    }
    println!(
        "  disconnects   {}",
        if r.disconnects.is_empty() {
            "none".to_string()
        } else {
            fmt_counts(&r.disconnects)
        }
    );
    println!();
    println!("{}", report::latency_header("decision→read"));
    println!(
        "{}",
        report::latency_row("fast observers", &r.fast.latency_us)
    );
    if r.slow.observers > 0 {
        println!(
            "{}",
            report::latency_row("slow observers", &r.slow.latency_us)
        );
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
