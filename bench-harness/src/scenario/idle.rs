//! `idle`: hold N authenticated connections doing nothing, and measure what they cost
//! the gateway in memory (RSS per connection) and CPU.
//!
//! Why it exists: a game backend's clients are idle most of the time, so bytes per idle
//! connection decide how many players one gateway holds (target: at most 2 KiB). The
//! coordinator samples the gateway's RSS before any connection, spawns workers that
//! connect (token, upgrade, manifest) and park every connection on readiness, samples
//! again once all are connected and have settled, and samples CPU over the hold.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use ringgate::client::{Client, ConnectOptions, Incoming, TokenVia};
use serde::{Deserialize, Serialize};

use crate::cli::IdleArgs;
use crate::conn;
use crate::jwt::Minter;
use crate::procstat::{self, Sample};
use crate::report::{self, fmt_bytes, fmt_counts, ConnectStats, HistData, Percentiles};
use crate::spawn::{self, Event, Workers};
use crate::target::Target;

/// Per-idle-connection RSS target of the issue, bytes.
pub const TARGET_BYTES_PER_CONN: f64 = 2048.0;

/// What a worker tells its parent, one JSON object per stdout line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
enum Msg {
    /// Once a second during the ramp.
    Progress { established: u64, failed: u64 },
    /// Every attempt is over; the connections are now held.
    Ready { report: WorkerReport },
    /// After the stop signal: the final counts (including connections lost in the hold).
    Done { report: WorkerReport },
    /// The worker cannot run.
    Fatal { error: String },
}

/// One worker's results.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerReport {
    pub worker: usize,
    pub source: String,
    pub connect: ConnectStats,
    /// First attempt to last outcome, seconds.
    pub ramp_secs: f64,
    /// Established connections that ended before the stop signal, by cause.
    pub dropped: BTreeMap<String, u64>,
    /// Server pings answered while holding.
    pub pings_answered: u64,
}

/// All workers' results added up.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Merged {
    pub connect: ConnectStats,
    /// The slowest worker's ramp.
    pub ramp_secs: f64,
    pub dropped: BTreeMap<String, u64>,
    pub pings_answered: u64,
}

/// Adds the workers' reports up (counts add, histograms merge, the ramp is the longest).
pub fn merge(reports: &[WorkerReport]) -> Merged {
    let mut m = Merged::default();
    for r in reports {
        m.connect.merge(&r.connect);
        m.ramp_secs = m.ramp_secs.max(r.ramp_secs);
        report::add_counts(&mut m.dropped, &r.dropped);
        m.pings_answered += r.pings_answered;
    }
    m
}

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
    let (soft, hard) = spawn::raise_nofile();
    let plan = match spawn::plan(args.conns, args.procs, soft, spawn::ephemeral_ports()) {
        Ok(p) => p,
        Err(msg) => {
            eprintln!("ringgate-bench idle: {msg}");
            return Ok(ExitCode::from(2));
        }
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
    let mut workers = Workers::spawn(worker_args, &[("RG_BENCH_SECRET", &target.secret)])?;
    let mut st = Collect::new(p);

    // Ramp: until every worker is ready (or gone).
    let per_max = plan.per_worker.iter().copied().max().unwrap_or(0);
    let ramp_limit = Duration::from_millis(
        (2 * args.connect_timeout_ms + 200) * per_max.div_ceil(args.concurrency.max(1)) as u64,
    ) + Duration::from_secs(60);
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
    workers.stop_all();
    let stop_deadline = Instant::now() + Duration::from_secs(30);
    while !st.all_done() && Instant::now() < stop_deadline {
        st.poll(&workers, Duration::from_millis(100));
    }
    for (i, status) in workers.wait_all(Duration::from_secs(5)) {
        st.errors.push(format!("worker {i} exited with {status}"));
    }
    let gateway_alive = pid.is_none_or(procstat::alive);
    if !gateway_alive {
        st.errors.push(format!(
            "gateway pid {} is gone (crashed or stopped during the run)",
            pid.unwrap_or(0)
        ));
    }
    let after_close = if gateway_alive {
        std::thread::sleep(Duration::from_secs(1));
        sample("after close")
    } else {
        None
    };

    let reports: Vec<WorkerReport> = st
        .done
        .iter()
        .zip(&st.ready)
        .filter_map(|(d, r)| d.clone().or_else(|| r.clone()))
        .collect();
    let m = merge(&reports);
    // Workers that never reported: their connections count as failed.
    let mut connect = m.connect.clone();
    for (i, r) in st.ready.iter().enumerate() {
        if r.is_none() && st.done[i].is_none() {
            let n = plan.per_worker[i] as u64;
            connect.attempted += n;
            *connect
                .failures
                .entry("worker:no_report".into())
                .or_default() += n;
        }
    }
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

/// What the coordinator has heard from its workers.
struct Collect {
    ready: Vec<Option<WorkerReport>>,
    done: Vec<Option<WorkerReport>>,
    progress: Vec<(u64, u64)>,
    exited: Vec<bool>,
    errors: Vec<String>,
}

impl Collect {
    fn new(p: usize) -> Collect {
        Collect {
            ready: vec![None; p],
            done: vec![None; p],
            progress: vec![(0, 0); p],
            exited: vec![false; p],
            errors: Vec::new(),
        }
    }

    fn all_ready(&self) -> bool {
        (0..self.ready.len()).all(|i| self.ready[i].is_some() || self.exited[i])
    }

    fn all_done(&self) -> bool {
        (0..self.done.len()).all(|i| self.done[i].is_some() || self.exited[i])
    }

    fn progress(&self) -> (u64, u64) {
        self.progress
            .iter()
            .fold((0, 0), |(e, f), &(e2, f2)| (e + e2, f + f2))
    }

    /// Handles the worker events arriving within `timeout`.
    fn poll(&mut self, workers: &Workers, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match workers.events.recv_timeout(left) {
                Ok(Event::Line { worker, line }) => self.line(worker, &line),
                Ok(Event::Exited { worker }) => {
                    self.exited[worker] = true;
                    if self.ready[worker].is_none() {
                        self.errors
                            .push(format!("worker {worker} exited before it was ready"));
                    } else if self.done[worker].is_none() && workers.len() > worker {
                        // Stopped before reporting its end: its ready report stands.
                    }
                }
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn line(&mut self, worker: usize, line: &str) {
        match serde_json::from_str::<Msg>(line) {
            Ok(Msg::Progress {
                established,
                failed,
            }) => self.progress[worker] = (established, failed),
            Ok(Msg::Ready { report }) => {
                self.progress[worker] = (report.connect.established, report.connect.failed());
                self.ready[worker] = Some(report);
            }
            Ok(Msg::Done { report }) => self.done[worker] = Some(report),
            Ok(Msg::Fatal { error }) => self.errors.push(format!("worker {worker}: {error}")),
            Err(e) => self
                .errors
                .push(format!("worker {worker}: unreadable line {line:?}: {e}")),
        }
    }

    /// Sleeps `d` while handling worker events (a worker dying mid-hold is noticed).
    fn wait(&mut self, workers: &Workers, d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until {
            self.poll(workers, until.saturating_duration_since(Instant::now()));
        }
    }
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
// Worker (child process)

fn worker(args: &IdleArgs, index: usize) -> anyhow::Result<ExitCode> {
    let (soft, _) = spawn::raise_nofile();
    if args.conns + spawn::FD_HEADROOM > soft as usize {
        spawn::emit(&Msg::Fatal {
            error: format!(
                "{} connections + {} need more than RLIMIT_NOFILE {soft}",
                args.conns,
                spawn::FD_HEADROOM
            ),
        });
        return Ok(ExitCode::from(2));
    }
    let target = match Target::resolve(&args.gateway) {
        Ok(t) => t,
        Err(e) => {
            spawn::emit(&Msg::Fatal {
                error: format!("{e:#}"),
            });
            return Ok(ExitCode::from(2));
        }
    };
    let stop = spawn::stop_flag();
    let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()?;
    let report = rt.block_on(worker_main(args.clone(), target, index, stop));
    spawn::emit(&Msg::Done { report });
    // Exit without tearing down thousands of tasks; the kernel closes the sockets.
    std::process::exit(0)
}

/// A worker's live counters (single-threaded).
struct State {
    stats: RefCell<ConnectStats>,
    hist: RefCell<Histogram<u64>>,
    dropped: RefCell<BTreeMap<String, u64>>,
    pings: Cell<u64>,
    next: Cell<usize>,
    ramp_over: Cell<bool>,
}

impl State {
    fn report(&self, index: usize, ramp_secs: f64) -> WorkerReport {
        let mut connect = self.stats.borrow().clone();
        connect.connect_us = HistData::from_histogram(&self.hist.borrow());
        WorkerReport {
            worker: index,
            source: spawn::source_ip(index).to_string(),
            connect,
            ramp_secs,
            dropped: self.dropped.borrow().clone(),
            pings_answered: self.pings.get(),
        }
    }
}

async fn worker_main(
    args: IdleArgs,
    target: Target,
    index: usize,
    stop: Arc<AtomicBool>,
) -> WorkerReport {
    let st = Rc::new(State {
        stats: RefCell::default(),
        hist: RefCell::new(report::new_histogram()),
        dropped: RefCell::default(),
        pings: Cell::new(0),
        next: Cell::new(0),
        ramp_over: Cell::new(false),
    });
    let minter = Rc::new(Minter::new(&target.secret));
    let target = Rc::new(target);
    let args = Rc::new(args);
    let started = Instant::now();

    let progress = {
        let st = st.clone();
        monoio::spawn(async move {
            while !st.ramp_over.get() {
                monoio::time::sleep(Duration::from_millis(500)).await;
                let s = st.stats.borrow();
                spawn::emit(&Msg::Progress {
                    established: s.established,
                    failed: s.failed(),
                });
            }
        })
    };
    let ramps: Vec<_> = (0..args.concurrency.clamp(1, args.conns.max(1)))
        .map(|_| {
            monoio::spawn(ramp(
                st.clone(),
                minter.clone(),
                target.clone(),
                args.clone(),
                index,
            ))
        })
        .collect();
    for r in ramps {
        r.await;
    }
    st.ramp_over.set(true);
    let ramp_secs = started.elapsed().as_secs_f64();
    spawn::emit(&Msg::Ready {
        report: st.report(index, ramp_secs),
    });
    while !stop.load(Ordering::SeqCst) {
        monoio::time::sleep(Duration::from_millis(50)).await;
    }
    progress.await;
    st.report(index, ramp_secs)
}

/// One lane of the ramp: takes the next connection index until none is left.
async fn ramp(
    st: Rc<State>,
    minter: Rc<Minter>,
    target: Rc<Target>,
    args: Rc<IdleArgs>,
    index: usize,
) {
    let source = spawn::source_ip(index);
    let timeout = Duration::from_millis(args.connect_timeout_ms);
    loop {
        let i = st.next.get();
        if i >= args.conns {
            return;
        }
        st.next.set(i + 1);
        let g = args.worker.worker_first + i;
        st.stats.borrow_mut().attempted += 1;
        let token = match minter.mint(
            &format!("user-{g}"),
            &format!("bench-{}-{g}", args.worker.run_id),
            &["user"],
        ) {
            Ok(t) => t,
            Err(_) => {
                *st.stats
                    .borrow_mut()
                    .failures
                    .entry("token:mint".into())
                    .or_default() += 1;
                continue;
            }
        };
        let opts = ConnectOptions {
            path: target.path.clone(),
            token: Some(token),
            token_via: TokenVia::Header,
            ..Default::default()
        };
        let t0 = Instant::now();
        let mut result = conn::open(target.addr, Some(source), &opts, timeout).await;
        if matches!(&result, Err(f) if f.retryable) {
            st.stats.borrow_mut().retries += 1;
            monoio::time::sleep(Duration::from_millis(100)).await;
            result = conn::open(target.addr, Some(source), &opts, timeout).await;
        }
        match result {
            Ok((client, _manifest)) => {
                report::record(&mut st.hist.borrow_mut(), t0.elapsed().as_micros() as u64);
                st.stats.borrow_mut().established += 1;
                monoio::spawn(hold(client, st.clone()));
            }
            Err(f) => {
                *st.stats.borrow_mut().failures.entry(f.cause()).or_default() += 1;
            }
        }
    }
}

/// Parks one connection on readiness until it ends (answering pings on the way).
async fn hold(mut client: Client, st: Rc<State>) {
    let cause = loop {
        match client.next().await {
            Ok(Incoming::Ping(_)) => st.pings.set(st.pings.get() + 1),
            Ok(Incoming::Close(c)) => {
                break format!("hold:closed_{}", c.map_or(1005, |(code, _)| code));
            }
            Ok(_) => {}
            Err(e) => break conn::drop_cause("hold", &e),
        }
    };
    *st.dropped.borrow_mut().entry(cause).or_default() += 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker_report(i: usize, values: &[u64], fail: u64, drop: u64, ramp: f64) -> WorkerReport {
        let mut h = report::new_histogram();
        values.iter().for_each(|&v| report::record(&mut h, v));
        let mut connect = ConnectStats {
            attempted: values.len() as u64 + fail,
            established: values.len() as u64,
            connect_us: HistData::from_histogram(&h),
            ..Default::default()
        };
        if fail > 0 {
            connect.failures.insert("upgrade:http_503".into(), fail);
        }
        let mut dropped = BTreeMap::new();
        if drop > 0 {
            dropped.insert("hold:closed_1001".into(), drop);
        }
        WorkerReport {
            worker: i,
            source: spawn::source_ip(i).to_string(),
            connect,
            ramp_secs: ramp,
            dropped,
            pings_answered: i as u64,
        }
    }

    #[test]
    fn merge_adds_workers_up() {
        let a = worker_report(0, &[10, 20, 30], 1, 0, 1.5);
        let b = worker_report(1, &[40, 50], 2, 3, 2.5);
        let m = merge(&[a, b]);
        assert_eq!(m.connect.attempted, 8);
        assert_eq!(m.connect.established, 5);
        assert_eq!(m.connect.failures["upgrade:http_503"], 3);
        assert_eq!(m.dropped["hold:closed_1001"], 3);
        assert_eq!(m.ramp_secs, 2.5);
        assert_eq!(m.pings_answered, 1);
        let p = Percentiles::of(&m.connect.connect_us.to_histogram());
        assert_eq!((p.count, p.min, p.max), (5, 10, 50));
        assert_eq!(merge(&[]), Merged::default());
    }

    #[test]
    fn worker_messages_round_trip() {
        let msg = Msg::Ready {
            report: worker_report(3, &[7], 0, 0, 0.25),
        };
        let line = serde_json::to_string(&msg).unwrap();
        assert!(line.starts_with(r#"{"phase":"ready""#), "{line}");
        match serde_json::from_str::<Msg>(&line).unwrap() {
            Msg::Ready { report } => assert_eq!(report, worker_report(3, &[7], 0, 0, 0.25)),
            other => panic!("{other:?}"),
        }
    }
}
