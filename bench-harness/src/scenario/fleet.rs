//! The worker side shared by the connection scenarios (`idle`, `connect`): a worker
//! process opens its share of the connections (token, upgrade, manifest), as fast as
//! `concurrency` lanes allow or at a set rate, holds them (answering pings) until its
//! parent says stop, and reports on stdout; the parent's `Collect` gathers the reports.
//!
//! Why it exists: `idle` and `connect` differ in what the coordinator does around the
//! connections (sample the gateway over a hold; time a storm), not in how connections
//! are opened, counted and held, so that lives here once.
//!
//! Worker → parent protocol: one JSON `Msg` per stdout line: `progress` (every 0.5 s while
//! connecting), `ready` (every attempt is over; the connections are held), `done` (after
//! the stop signal, i.e. stdin closing), or `fatal`.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use ringgate::client::{Client, Incoming};
use serde::{Deserialize, Serialize};

use crate::cli::GatewayArgs;
use crate::conn;
use crate::jwt::Minter;
use crate::report::{self, ConnectStats, HistData};
use crate::spawn::{self, Event, Workers};
use crate::target::Target;

/// What a worker tells its parent, one JSON object per stdout line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Msg {
    /// Once every half second while connecting.
    Progress { established: u64, failed: u64 },
    /// Every attempt is over; the connections are now held.
    Ready { report: WorkerReport },
    /// After the stop signal: the final counts (including connections lost while held).
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

// ---------------------------------------------------------------------------------
// Parent side

/// The parent side of a multi-process scenario: what every scenario's collector does
/// with its workers' events (the event loop and the stop sequence are shared).
pub trait Coordinator {
    /// Every worker has sent its final report or exited.
    fn all_done(&self) -> bool;
    /// Problems to report with the run.
    fn errors_mut(&mut self) -> &mut Vec<String>;
    /// One JSON line from worker `worker`.
    fn on_line(&mut self, worker: usize, line: &str);
    /// Worker `worker` exited; returns whether it had reported ready (a worker that
    /// exits before that is an error; one stopped before its end report keeps its ready
    /// report).
    fn on_exit(&mut self, worker: usize) -> bool;

    /// Handles the worker events arriving within `timeout`.
    fn poll(&mut self, workers: &Workers, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match workers.events.recv_timeout(left) {
                Ok(Event::Line { worker, line }) => self.on_line(worker, &line),
                Ok(Event::Exited { worker }) => {
                    if !self.on_exit(worker) {
                        self.errors_mut()
                            .push(format!("worker {worker} exited before it was ready"));
                    }
                }
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }
}

/// Stops the workers, collects their final reports for up to `drain`, reaps them, and
/// (with a gateway pid) checks the gateway survived the run. Every problem goes into
/// the coordinator's errors. Returns whether the gateway is alive (true without a pid).
pub fn stop_workers(
    workers: &mut Workers,
    st: &mut impl Coordinator,
    drain: Duration,
    gateway_pid: Option<u32>,
) -> bool {
    workers.stop_all();
    let stop_deadline = Instant::now() + drain;
    while !st.all_done() && Instant::now() < stop_deadline {
        st.poll(workers, Duration::from_millis(100));
    }
    for (i, status) in workers.wait_all(Duration::from_secs(5)) {
        st.errors_mut()
            .push(format!("worker {i} exited with {status}"));
    }
    let alive = gateway_pid.is_none_or(crate::procstat::alive);
    if !alive {
        st.errors_mut().push(format!(
            "gateway pid {} is gone (crashed or stopped during the run)",
            gateway_pid.unwrap_or(0)
        ));
    }
    alive
}

impl Coordinator for Collect {
    fn all_done(&self) -> bool {
        Collect::all_done(self)
    }
    fn errors_mut(&mut self) -> &mut Vec<String> {
        &mut self.errors
    }
    fn on_line(&mut self, worker: usize, line: &str) {
        self.line(worker, line)
    }
    fn on_exit(&mut self, worker: usize) -> bool {
        self.exited[worker] = true;
        self.ready[worker].is_some()
    }
}

/// What the coordinator has heard from its workers.
pub struct Collect {
    pub ready: Vec<Option<WorkerReport>>,
    pub done: Vec<Option<WorkerReport>>,
    pub progress: Vec<(u64, u64)>,
    pub exited: Vec<bool>,
    pub errors: Vec<String>,
}

impl Collect {
    pub fn new(p: usize) -> Collect {
        Collect {
            ready: vec![None; p],
            done: vec![None; p],
            progress: vec![(0, 0); p],
            exited: vec![false; p],
            errors: Vec::new(),
        }
    }

    pub fn all_ready(&self) -> bool {
        (0..self.ready.len()).all(|i| self.ready[i].is_some() || self.exited[i])
    }

    pub fn all_done(&self) -> bool {
        (0..self.done.len()).all(|i| self.done[i].is_some() || self.exited[i])
    }

    /// `(established, failed)` over all workers, as last reported.
    pub fn progress(&self) -> (u64, u64) {
        self.progress
            .iter()
            .fold((0, 0), |(e, f), &(e2, f2)| (e + e2, f + f2))
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
    pub fn wait(&mut self, workers: &Workers, d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until {
            self.poll(workers, until.saturating_duration_since(Instant::now()));
        }
    }

    /// Each worker's last report (`done` if it sent one, else `ready`).
    pub fn reports(&self) -> Vec<WorkerReport> {
        self.done
            .iter()
            .zip(&self.ready)
            .filter_map(|(d, r)| d.clone().or_else(|| r.clone()))
            .collect()
    }

    /// Counts the connections of workers that never reported as failed
    /// (`worker:no_report`); `per_worker[i]` is worker i's share.
    pub fn charge_silent_workers(&self, connect: &mut ConnectStats, per_worker: &[usize]) {
        for (i, r) in self.ready.iter().enumerate() {
            if r.is_none() && self.done[i].is_none() {
                let n = per_worker[i] as u64;
                connect.attempted += n;
                *connect
                    .failures
                    .entry("worker:no_report".into())
                    .or_default() += n;
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// Worker side (child process)

/// What one worker process does.
#[derive(Debug, Clone)]
pub struct WorkerParams {
    /// Worker number (source address 127.0.0.(2+index)).
    pub index: usize,
    /// Connections to open.
    pub conns: usize,
    /// Global index of the first one (names users uniquely across workers).
    pub first: usize,
    /// Run id shared by all workers of one run (makes session ids unique).
    pub run_id: String,
    /// Attempts in flight at once (when `rate` is `None`).
    pub concurrency: usize,
    /// TCP connect + upgrade + manifest, per attempt.
    pub connect_timeout: Duration,
    /// Attempts per second of this worker; `None`: as fast as `concurrency` allows.
    /// With a rate, latency runs from each attempt's intended start.
    pub rate: Option<f64>,
}

/// A worker process: checks its limits, opens and holds its connections, reports `done`
/// when stdin closes, and exits without tearing down thousands of tasks.
pub fn run_worker(params: WorkerParams, gateway: &GatewayArgs) -> anyhow::Result<ExitCode> {
    let (soft, _) = spawn::raise_nofile();
    if params.conns + spawn::FD_HEADROOM > soft as usize {
        spawn::emit(&Msg::Fatal {
            error: format!(
                "{} connections + {} need more than RLIMIT_NOFILE {soft}",
                params.conns,
                spawn::FD_HEADROOM
            ),
        });
        return Ok(ExitCode::from(2));
    }
    let target = match Target::resolve(gateway) {
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
    let report = rt.block_on(worker_main(params, target, stop));
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
    /// Attempts not yet over (rate mode).
    pending: Cell<usize>,
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

/// What every attempt needs.
struct Ctx {
    st: State,
    minter: Minter,
    target: Target,
    params: WorkerParams,
    source: IpAddr,
}

async fn worker_main(params: WorkerParams, target: Target, stop: Arc<AtomicBool>) -> WorkerReport {
    let index = params.index;
    let cx = Rc::new(Ctx {
        st: State {
            stats: RefCell::default(),
            hist: RefCell::new(report::new_histogram()),
            dropped: RefCell::default(),
            pings: Cell::new(0),
            next: Cell::new(0),
            pending: Cell::new(0),
            ramp_over: Cell::new(false),
        },
        minter: Minter::new(&target.secret),
        target,
        source: spawn::source_ip(index),
        params,
    });
    let started = Instant::now();

    let progress = {
        let cx = cx.clone();
        monoio::spawn(async move {
            while !cx.st.ramp_over.get() {
                monoio::time::sleep(Duration::from_millis(500)).await;
                let s = cx.st.stats.borrow();
                spawn::emit(&Msg::Progress {
                    established: s.established,
                    failed: s.failed(),
                });
            }
        })
    };
    match cx.params.rate {
        None => {
            let lanes: Vec<_> = (0..cx.params.concurrency.clamp(1, cx.params.conns.max(1)))
                .map(|_| monoio::spawn(lane(cx.clone())))
                .collect();
            for l in lanes {
                l.await;
            }
        }
        Some(rate) => paced(cx.clone(), rate, started).await,
    }
    cx.st.ramp_over.set(true);
    let ramp_secs = started.elapsed().as_secs_f64();
    spawn::emit(&Msg::Ready {
        report: cx.st.report(index, ramp_secs),
    });
    while !stop.load(Ordering::SeqCst) {
        monoio::time::sleep(Duration::from_millis(50)).await;
    }
    progress.await;
    cx.st.report(index, ramp_secs)
}

/// One lane of an as-fast-as-possible ramp: takes the next connection until none is left.
async fn lane(cx: Rc<Ctx>) {
    loop {
        let i = cx.st.next.get();
        if i >= cx.params.conns {
            return;
        }
        cx.st.next.set(i + 1);
        attempt(&cx, i, Instant::now()).await;
    }
}

/// Starts attempt k at `t0 + k / rate` (each its own task), then waits for all of them.
async fn paced(cx: Rc<Ctx>, rate: f64, t0: Instant) {
    let interval = Duration::from_secs_f64(1.0 / rate.max(1e-9));
    for i in 0..cx.params.conns {
        let due = t0 + interval.mul_f64(i as f64);
        if due > Instant::now() {
            monoio::time::sleep_until(due.into()).await;
        }
        cx.st.pending.set(cx.st.pending.get() + 1);
        let cx2 = cx.clone();
        monoio::spawn(async move {
            attempt(&cx2, i, due).await;
            cx2.st.pending.set(cx2.st.pending.get() - 1);
        });
    }
    while cx.st.pending.get() > 0 {
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Attempt `i` of this worker (one retry after ECONNREFUSED/EAGAIN); on success the
/// connection is held by a task of its own. Latency runs from `from`.
async fn attempt(cx: &Rc<Ctx>, i: usize, from: Instant) {
    let st = &cx.st;
    let g = cx.params.first + i;
    st.stats.borrow_mut().attempted += 1;
    let (result, retried) = conn::open_user(
        &cx.target,
        &cx.minter,
        &cx.params.run_id,
        g,
        cx.source,
        cx.params.connect_timeout,
        None,
    )
    .await;
    if retried {
        st.stats.borrow_mut().retries += 1;
    }
    match result {
        Ok((client, _manifest)) => {
            report::record(&mut st.hist.borrow_mut(), from.elapsed().as_micros() as u64);
            st.stats.borrow_mut().established += 1;
            monoio::spawn(hold(client, cx.clone()));
        }
        Err(f) => {
            *st.stats.borrow_mut().failures.entry(f.cause()).or_default() += 1;
        }
    }
}

/// Parks one connection on readiness until it ends (answering pings on the way).
async fn hold(mut client: Client, cx: Rc<Ctx>) {
    let st = &cx.st;
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
        let p = crate::report::Percentiles::of(&m.connect.connect_us.to_histogram());
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

    #[test]
    fn silent_workers_count_as_failed() {
        let mut c = Collect::new(3);
        c.ready[0] = Some(worker_report(0, &[5], 0, 0, 0.1));
        c.done[2] = Some(worker_report(2, &[5], 0, 0, 0.1));
        let mut stats = ConnectStats::default();
        c.charge_silent_workers(&mut stats, &[4, 7, 9]);
        assert_eq!(stats.attempted, 7);
        assert_eq!(stats.failures["worker:no_report"], 7);
        assert_eq!(c.reports().len(), 2);
    }
}
