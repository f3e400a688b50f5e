//! `connect`: open N connections (token, TCP connect, upgrade, manifest) as fast as
//! possible or at a set rate, and report how long each took and why any failed.
//!
//! Why it exists: a game's players arrive in storms (a server restart, a match ending,
//! a region failing over), and how fast a gateway admits them — the handshake, the JWT
//! check and the first manifest — decides how long they stare at a loading screen. The
//! coordinator splits the connections over worker processes (descriptor limit, source
//! addresses 127.0.0.x) running the shared connection worker (`fleet`), waits until every
//! attempt is over, then stops them; connections stay open until then, so the gateway
//! holds all N at the end of the storm.
//!
//! With `--rate R`, attempt k of a worker starts at `t0 + k / R_worker` whether or not
//! earlier ones are done, and its latency runs from that intended start (no coordinated
//! omission); without it, `--concurrency` attempts per worker are in flight at a time and
//! latency runs from each attempt's start.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::fleet::{self, Collect, Coordinator, WorkerParams};
use crate::cli::ConnectArgs;
use crate::report::{self, fmt_counts, ConnectStats, Percentiles};
use crate::spawn::{self, Workers};
use crate::target::Target;

/// The `connect` report (JSON; `schema_version` 1).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConnectReport {
    pub scenario: String,
    pub schema_version: u32,
    pub gateway_url: String,
    pub conns_requested: usize,
    /// Attempts per second asked for (`null`: as fast as possible).
    pub rate_requested: Option<f64>,
    /// Attempts in flight per worker (when no rate is set).
    pub concurrency: usize,
    pub procs: usize,
    pub per_proc: Vec<usize>,
    pub nofile_soft: u64,
    pub nofile_hard: u64,
    /// Attempts, outcomes by cause (`stage:reason`), and the latency histogram of
    /// TCP connect + upgrade + manifest.
    pub connect: ConnectStats,
    pub connect_us: Percentiles,
    /// Wall time from spawning the workers to the last attempt's outcome.
    pub ramp_secs: f64,
    /// Established connections per second of the slowest worker's ramp.
    pub connect_rate_per_sec: f64,
    /// Established connections that ended before the run did, by cause.
    pub dropped: BTreeMap<String, u64>,
    pub worker_errors: Vec<String>,
    /// Every connection established and still up at the end, no worker error.
    pub ok: bool,
}

pub fn run(args: &ConnectArgs) -> anyhow::Result<ExitCode> {
    match args.worker.worker_index {
        Some(index) => fleet::run_worker(
            WorkerParams {
                index,
                conns: args.conns,
                first: args.worker.worker_first,
                run_id: args.worker.run_id.clone(),
                concurrency: args.concurrency,
                connect_timeout: Duration::from_millis(args.connect_timeout_ms),
                rate: args.rate,
            },
            &args.gateway,
        ),
        None => coordinate(args),
    }
}

/// Worker `i`'s share of a total rate (in proportion to its connections).
pub fn worker_rate(total: f64, per_worker: &[usize], i: usize) -> f64 {
    let all: usize = per_worker.iter().sum();
    total * per_worker[i] as f64 / all.max(1) as f64
}

fn coordinate(args: &ConnectArgs) -> anyhow::Result<ExitCode> {
    if matches!(args.rate, Some(r) if !(r > 0.0 && r.is_finite())) {
        anyhow::bail!("--rate must be a positive number of attempts per second");
    }
    let (plan, soft, hard) = match spawn::plan_for("connect", args.conns, args.procs) {
        Ok(v) => v,
        Err(code) => return Ok(code),
    };
    let target = Target::resolve(&args.gateway)?;
    let p = plan.procs();
    eprintln!(
        "connect: {} connections to {} {} over {p} worker process(es) of {:?} \
         (sources 127.0.0.2-{}; RLIMIT_NOFILE {soft}/{hard})",
        args.conns,
        target.url(),
        args.rate.map_or_else(
            || format!(
                "as fast as possible ({} in flight per worker)",
                args.concurrency
            ),
            |r| format!("at {r} per second")
        ),
        plan.per_worker,
        spawn::source_ip(p - 1),
    );
    let run_id = format!(
        "{:x}",
        std::process::id() as u64 ^ crate::jwt::unix_now() << 20
    );
    let worker_args = (0..p)
        .map(|i| {
            let mut a = vec![
                "connect".to_string(),
                format!("--conns={}", plan.per_worker[i]),
                format!("--gateway={}", target.url()),
                format!("--concurrency={}", args.concurrency),
                format!("--connect-timeout-ms={}", args.connect_timeout_ms),
                format!("--worker-index={i}"),
                format!("--worker-first={}", plan.first(i)),
                format!("--run-id={run_id}"),
            ];
            if let Some(r) = args.rate {
                a.push(format!("--rate={}", worker_rate(r, &plan.per_worker, i)));
            }
            a
        })
        .collect();
    let started = Instant::now();
    let env = target.worker_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut workers = Workers::spawn(worker_args, &env)?;
    let mut st = Collect::new(p);

    // Until every worker's attempts are over (or it is gone).
    let ramp_limit = match args.rate {
        Some(r) => Duration::from_secs_f64(args.conns as f64 / r),
        None => plan.ramp_time(args.connect_timeout_ms, args.concurrency),
    } + Duration::from_millis(2 * args.connect_timeout_ms)
        + Duration::from_secs(60);
    let mut last_print = Instant::now();
    while !st.all_ready() {
        st.poll(&workers, Duration::from_millis(100));
        if last_print.elapsed() >= Duration::from_secs(1) {
            last_print = Instant::now();
            let (est, failed) = st.progress();
            eprintln!(
                "  [{:>6.1}s] established {est}, failed {failed}",
                started.elapsed().as_secs_f64()
            );
        }
        if started.elapsed() > ramp_limit {
            st.errors
                .push(format!("attempts not over after {ramp_limit:?}"));
            break;
        }
    }
    let ramp_secs = started.elapsed().as_secs_f64();

    fleet::stop_workers(&mut workers, &mut st, Duration::from_secs(30), None);

    let m = fleet::merge(&st.reports());
    let mut connect = m.connect.clone();
    st.charge_silent_workers(&mut connect, &plan.per_worker);
    let established = connect.established;
    let dropped: u64 = m.dropped.values().sum();
    let report = ConnectReport {
        scenario: "connect".into(),
        schema_version: 1,
        gateway_url: target.url(),
        conns_requested: args.conns,
        rate_requested: args.rate,
        concurrency: args.concurrency,
        procs: p,
        per_proc: plan.per_worker.clone(),
        nofile_soft: soft,
        nofile_hard: hard,
        connect_us: Percentiles::of(&connect.connect_us.to_histogram()),
        connect,
        ramp_secs,
        connect_rate_per_sec: established as f64 / m.ramp_secs.max(1e-9),
        dropped: m.dropped,
        worker_errors: st.errors.clone(),
        ok: established == args.conns as u64 && dropped == 0 && st.errors.is_empty(),
    };
    print_table(&report);
    if let Some(path) = &args.json {
        report::write_json(path, &report)?;
        eprintln!("report written to {}", path.display());
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_table(r: &ConnectReport) {
    let c = &r.connect;
    println!();
    println!(
        "connect  {} -> {}  ({}; {} procs: {:?})",
        r.conns_requested,
        r.gateway_url,
        r.rate_requested.map_or_else(
            || format!("as fast as possible, {} in flight per proc", r.concurrency),
            |x| format!("{x}/s")
        ),
        r.procs,
        r.per_proc
    );
    println!(
        "  established        {} / {} in {:.2} s ({:.0} conn/s), retries {}",
        c.established, r.conns_requested, r.ramp_secs, r.connect_rate_per_sec, c.retries
    );
    println!("  failures           {}", fmt_counts(&c.failures));
    println!("  connect+manifest   {}", r.connect_us.row_us());
    println!("  dropped            {}", fmt_counts(&r.dropped));
    for e in &r.worker_errors {
        println!("  ERROR: {e}");
    }
    println!("  result: {}", if r.ok { "ok" } else { "FAILED" });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_is_split_by_share() {
        let per = [4, 3, 3];
        let rates: Vec<f64> = (0..3).map(|i| worker_rate(1000.0, &per, i)).collect();
        assert_eq!(rates, vec![400.0, 300.0, 300.0]);
        assert!((rates.iter().sum::<f64>() - 1000.0).abs() < 1e-9);
    }

    #[test]
    fn report_round_trips_through_json() {
        let r = ConnectReport {
            scenario: "connect".into(),
            schema_version: 1,
            gateway_url: "ws://127.0.0.1:8080/connect".into(),
            conns_requested: 3,
            rate_requested: Some(10.0),
            concurrency: 256,
            procs: 1,
            per_proc: vec![3],
            nofile_soft: 20_000,
            nofile_hard: 20_000,
            connect: ConnectStats {
                attempted: 3,
                established: 2,
                failures: [("upgrade:http_401".to_string(), 1)].into(),
                ..Default::default()
            },
            connect_us: Percentiles::default(),
            ramp_secs: 0.3,
            connect_rate_per_sec: 6.6,
            dropped: BTreeMap::new(),
            worker_errors: vec![],
            ok: false,
        };
        let back: ConnectReport =
            serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back.connect, r.connect);
        assert_eq!(back.rate_requested, Some(10.0));
    }
}
