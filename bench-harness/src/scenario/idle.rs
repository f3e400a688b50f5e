//! `idle`: hold N authenticated connections doing nothing, and measure what they cost
//! the gateway in memory (RSS per connection) and CPU.
//!
//! Why it exists: a game backend's clients are idle most of the time, so bytes per idle
//! connection decide how many players one gateway holds (target: at most 2 KiB). The
//! coordinator samples the gateway's RSS before any connection, spawns workers that
//! connect (token, upgrade, manifest) and park every connection on readiness, samples
//! again once all are connected and have settled, and samples CPU over the hold.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::fleet::{self, Collect, Coordinator, WorkerParams, WorkerReport};
use crate::cli::IdleArgs;
use crate::procstat::{self, Sample};
use crate::report::{self, fmt_bytes, fmt_counts, ConnectStats, Percentiles};
use crate::spawn::{self, Workers};
use crate::target::Target;

/// Per-idle-connection RSS target of the issue, bytes.
pub const TARGET_BYTES_PER_CONN: f64 = 2048.0;

/// The gateway's cost as measured from /proc.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GatewayCost {
    pub pid: u32,
    pub rss_before_bytes: u64,
    pub rss_connected_bytes: Option<u64>,
    pub rss_end_of_hold_bytes: Option<u64>,
    pub rss_after_close_bytes: Option<u64>,
    pub rss_anon_before_bytes: u64,
    pub rss_anon_connected_bytes: Option<u64>,
    /// Peak RSS (VmHWM) at the end of the hold.
    pub hwm_bytes: Option<u64>,
    /// (RSS connected - RSS before) / established connections.
    pub rss_bytes_per_conn: Option<f64>,
    /// Same for the anonymous part of the RSS.
    pub rss_anon_bytes_per_conn: Option<f64>,
    /// CPU (user + system) from the first connection until all were connected and settled.
    pub cpu_ramp_secs: Option<f64>,
    /// CPU (user + system) over the hold.
    pub cpu_hold_secs: Option<f64>,
    /// `cpu_hold_secs / hold_secs`, percent of one core.
    pub cpu_hold_percent_of_core: Option<f64>,
}

/// The `idle` report (JSON; `schema_version` 1).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdleReport {
    pub scenario: String,
    pub schema_version: u32,
    pub gateway_url: String,
    pub conns_requested: usize,
    pub procs: usize,
    pub per_proc: Vec<usize>,
    pub nofile_soft: u64,
    pub nofile_hard: u64,
    /// Attempts, outcomes by cause, and the connect (+upgrade +manifest) histogram.
    pub connect: ConnectStats,
    pub connect_us: Percentiles,
    /// Wall time from spawning the workers to the last one ready.
    pub ramp_secs: f64,
    pub connect_rate_per_sec: f64,
    pub hold_secs: f64,
    pub dropped_during_hold: BTreeMap<String, u64>,
    pub pings_answered: u64,
    pub worker_errors: Vec<String>,
    pub gateway: Option<GatewayCost>,
    /// Every connection established and held, no worker error, gateway alive.
    pub ok: bool,
}

pub fn run(args: &IdleArgs) -> anyhow::Result<ExitCode> {
    match args.worker.worker_index {
        Some(index) => worker(args, index),
        None => coordinate(args),
    }
}

// ---------------------------------------------------------------------------------
// Coordinator (parent process)

fn coordinate(args: &IdleArgs) -> anyhow::Result<ExitCode> {
    let (plan, soft, hard) = match spawn::plan_for("idle", args.conns, args.procs) {
        Ok(v) => v,
        Err(code) => return Ok(code),
    };
    let target = Target::resolve(&args.gateway)?;
    let p = plan.procs();
    eprintln!(
        "idle: {} connections to {} over {p} worker process(es) of {:?} (sources 127.0.0.2-{}; \
         RLIMIT_NOFILE {soft}/{hard}), hold {} s",
        args.conns,
        target.url(),
        plan.per_worker,
        spawn::source_ip(p - 1),
        args.hold
    );
    let pid = args.gateway_pid;
    let sample = |what: &str| -> Option<Sample> {
        let pid = pid?;
        match procstat::sample(pid) {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("cannot sample gateway pid {pid} ({what}): {e}");
                None
            }
        }
    };
    let before =
        match pid {
            Some(pid) => Some(procstat::sample(pid).map_err(|e| {
                anyhow::anyhow!("--gateway-pid {pid}: cannot read /proc/{pid}: {e}")
            })?),
            None => None,
        };

    let run_id = format!(
        "{:x}",
        std::process::id() as u64 ^ crate::jwt::unix_now() << 20
    );
    let worker_args = (0..p)
        .map(|i| {
            [
                "idle".to_string(),
                format!("--conns={}", plan.per_worker[i]),
                format!("--hold={}", args.hold),
                format!("--gateway={}", target.url()),
                format!("--concurrency={}", args.concurrency),
                format!("--connect-timeout-ms={}", args.connect_timeout_ms),
                format!("--worker-index={i}"),
                format!("--worker-first={}", plan.first(i)),
                format!("--run-id={run_id}"),
            ]
            .to_vec()
        })
        .collect();
    let started = Instant::now();
    let env = target.worker_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut workers = Workers::spawn(worker_args, &env)?;
    let mut st = Collect::new(p);

    // Ramp: until every worker is ready (or gone).
    let ramp_limit =
        plan.ramp_time(args.connect_timeout_ms, args.concurrency) + Duration::from_secs(60);
    let mut last_print = Instant::now();
    while !st.all_ready() {
        st.poll(&workers, Duration::from_millis(100));
        if last_print.elapsed() >= Duration::from_secs(1) {
            last_print = Instant::now();
            let (est, failed) = st.progress();
            let rss = sample("ramp").map_or(String::new(), |s| {
                format!(", gateway RSS {}", fmt_bytes(s.rss_bytes as f64))
            });
            eprintln!(
                "  [{:>6.1}s] established {est}, failed {failed}{rss}",
                started.elapsed().as_secs_f64()
            );
        }
        if started.elapsed() > ramp_limit {
            st.errors
                .push(format!("ramp not over after {ramp_limit:?}"));
            break;
        }
    }
    let ramp_secs = started.elapsed().as_secs_f64();
    let (est, failed) = st.progress();
    eprintln!("  ramp over in {ramp_secs:.2} s: established {est}, failed {failed}");

    // Settle, sample, hold, sample.
    st.wait(&workers, Duration::from_secs(args.settle));
    let connected = sample("connected");
    eprintln!("  holding {} connections for {} s", est, args.hold);
    st.wait(&workers, Duration::from_secs(args.hold));
    let end = sample("end of hold");
    let hold_secs = connected.map_or(args.hold as f64, |c| c.at.elapsed().as_secs_f64());

    // Stop: collect the final reports, let the gateway see the closes, sample.
    let gateway_alive = fleet::stop_workers(&mut workers, &mut st, Duration::from_secs(30), pid);
    let after_close = if gateway_alive {
        std::thread::sleep(Duration::from_secs(1));
        sample("after close")
    } else {
        None
    };

    let reports: Vec<WorkerReport> = st.reports();
    let m = fleet::merge(&reports);
    // Workers that never reported: their connections count as failed.
    let mut connect = m.connect.clone();
    st.charge_silent_workers(&mut connect, &plan.per_worker);
    let established = connect.established;
    let gateway = before.map(|b| {
        let per = |after: Option<u64>, before: u64| {
            after
                .filter(|_| established > 0)
                .map(|a| (a as f64 - before as f64) / established as f64)
        };
        GatewayCost {
            pid: pid.unwrap_or(0),
            rss_before_bytes: b.rss_bytes,
            rss_connected_bytes: connected.map(|s| s.rss_bytes),
            rss_end_of_hold_bytes: end.map(|s| s.rss_bytes),
            rss_after_close_bytes: after_close.map(|s| s.rss_bytes),
            rss_anon_before_bytes: b.rss_anon_bytes,
            rss_anon_connected_bytes: connected.map(|s| s.rss_anon_bytes),
            hwm_bytes: end.map(|s| s.hwm_bytes),
            rss_bytes_per_conn: per(connected.map(|s| s.rss_bytes), b.rss_bytes),
            rss_anon_bytes_per_conn: per(connected.map(|s| s.rss_anon_bytes), b.rss_anon_bytes),
            cpu_ramp_secs: connected.map(|c| c.cpu_secs_since(&b)),
            cpu_hold_secs: connected.zip(end).map(|(c, e)| e.cpu_secs_since(&c)),
            cpu_hold_percent_of_core: connected
                .zip(end)
                .map(|(c, e)| 100.0 * e.cpu_secs_since(&c) / hold_secs.max(1e-9)),
        }
    });
    let dropped: u64 = m.dropped.values().sum();
    let ok = established == args.conns as u64 && dropped == 0 && st.errors.is_empty();
    let report = IdleReport {
        scenario: "idle".into(),
        schema_version: 1,
        gateway_url: target.url(),
        conns_requested: args.conns,
        procs: p,
        per_proc: plan.per_worker.clone(),
        nofile_soft: soft,
        nofile_hard: hard,
        connect_us: Percentiles::of(&connect.connect_us.to_histogram()),
        connect,
        ramp_secs,
        connect_rate_per_sec: established as f64 / m.ramp_secs.max(1e-9),
        hold_secs,
        dropped_during_hold: m.dropped,
        pings_answered: m.pings_answered,
        worker_errors: st.errors.clone(),
        gateway,
        ok,
    };
    print_table(&report);
    if let Some(path) = &args.json {
        report::write_json(path, &report)?;
        eprintln!("report written to {}", path.display());
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_table(r: &IdleReport) {
    let c = &r.connect;
    println!();
    println!(
        "idle  {} -> {}  ({} procs: {:?})",
        r.conns_requested, r.gateway_url, r.procs, r.per_proc
    );
    println!(
        "  established        {} / {}   ramp {:.2} s ({:.0} conn/s), retries {}",
        c.established, r.conns_requested, r.ramp_secs, r.connect_rate_per_sec, c.retries
    );
    println!("  failures           {}", fmt_counts(&c.failures));
    println!("  connect+manifest   {}", r.connect_us.row_us());
    println!(
        "  held {:.1} s          dropped {}, pings answered {}",
        r.hold_secs,
        fmt_counts(&r.dropped_during_hold),
        r.pings_answered
    );
    if let Some(g) = &r.gateway {
        let opt = |b: Option<u64>| b.map_or("-".to_string(), |b| fmt_bytes(b as f64));
        println!("  gateway pid {}", g.pid);
        println!(
            "    RSS before       {}   (anon {})",
            fmt_bytes(g.rss_before_bytes as f64),
            fmt_bytes(g.rss_anon_before_bytes as f64)
        );
        println!(
            "    RSS connected    {}   (anon {})",
            opt(g.rss_connected_bytes),
            opt(g.rss_anon_connected_bytes)
        );
        println!("    RSS end of hold  {}", opt(g.rss_end_of_hold_bytes));
        println!("    RSS after close  {}", opt(g.rss_after_close_bytes));
        if let Some(per) = g.rss_bytes_per_conn {
            println!(
                "    RSS per idle connection  {:.0} bytes ({}; anon {:.0} bytes)  target <= 2 KiB: {}",
                per,
                fmt_bytes(per),
                g.rss_anon_bytes_per_conn.unwrap_or(0.0),
                if per <= TARGET_BYTES_PER_CONN { "met" } else { "NOT met" }
            );
        }
        if let (Some(ramp), Some(hold), Some(pct)) =
            (g.cpu_ramp_secs, g.cpu_hold_secs, g.cpu_hold_percent_of_core)
        {
            println!(
                "    CPU              ramp {ramp:.2} s; hold {hold:.2} s ({pct:.2}% of one core)"
            );
        }
    }
    for e in &r.worker_errors {
        println!("  ERROR: {e}");
    }
    println!("  result: {}", if r.ok { "ok" } else { "FAILED" });
}

// ---------------------------------------------------------------------------------
// Worker (child process): the shared connection worker, as fast as `concurrency` allows

fn worker(args: &IdleArgs, index: usize) -> anyhow::Result<ExitCode> {
    let params = WorkerParams {
        index,
        conns: args.conns,
        first: args.worker.worker_first,
        run_id: args.worker.run_id.clone(),
        concurrency: args.concurrency,
        connect_timeout: Duration::from_millis(args.connect_timeout_ms),
        rate: None,
    };
    fleet::run_worker(params, &args.gateway)
}
