//! `rpc`: C connections calling one endpoint at a constant total rate R (open loop, with
//! coordinated-omission correction) or at saturation (`--rate max`, closed loop with a
//! window of requests in flight per connection); latency percentiles, throughput, errors
//! by response code, and the gateway's CPU and RSS.
//!
//! Why it exists: RPC latency under a known load is what users decide by (DESIGN.md §9).
//! Open loop means requests leave on a schedule fixed by the rate alone (`sched`), not
//! when the previous response arrives, so a slow server faces the same offered load and
//! its slowness is measured from each request's intended send time.
//!
//! Batched, so that the harness is not what it measures: each connection sends
//! everything that is due (or every free window slot) with one write and handles every
//! response of one read before it waits again, through the client's batching primitives
//! (`Client::queue_request`, `flush` / `flush_batched`, `try_next`; see `run_conn`). One frame
//! per syscall topped out near 150k requests/s on one core. The worker threads run
//! `sched::client_runtime` (io_uring without completion interrupts).
//!
//! Shape: the coordinator (this process) plans worker processes (`spawn::plan`, each on
//! its own source address), optionally spawns the gateway (`gateway`), waits until every
//! worker has opened its connections, then sends them all one `go <unix ns>` line so the
//! schedule starts at the same instant everywhere. Each worker runs T threads, each a
//! monoio runtime holding its share of connections; every connection pipelines its
//! requests (many in flight) and matches responses by message id. Threads record into
//! their own HdrHistograms; workers merge theirs and ship them as `HistData` in JSON
//! lines (a progress line with the last second's histogram every second, the final
//! histograms at the end); the coordinator merges those, prints live progress and the
//! final table, and writes the JSON report, the HdrHistogram interval log and the chart.
//!
//! Worker → parent protocol (stdout, one JSON object a line, `phase` tagged): `progress`
//! (`live` counters since the start, `interval` histogram of the last second), `ready`
//! (the ramp is over: `connect` stats), `done` (`report`: the worker's final results),
//! `fatal`. Parent → worker (stdin): `go <unix_ns>`, then EOF = stop.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use ringgate::client::{Client, ConnectOptions, Incoming, ReadOutcome, TokenVia};
use ringgate::proto::bannou::ResponseCode;
use serde::{Deserialize, Serialize};

use super::fleet::Coordinator;
use crate::chart;
use crate::cli::{ChartArgs, LoadRate, RpcArgs, RpcMode};
use crate::conn;
use crate::gateway::SpawnedGateway;
use crate::jwt::Minter;
use crate::procstat::{self, Sample};
use crate::report::{
    self, fmt_bytes, fmt_counts, fmt_us, ConnectStats, GatewaySample, GatewayUsage, HistData,
    Percentiles, RequestStats, RpcReport,
};
use crate::sched::{mono_ns, race, unix_ns, Due, Pacer, Race, Schedule};
use crate::spawn::{self, Workers};
use crate::target::Target;

/// Live counters of a thread, a worker or the run (everything since the start, warm-up
/// included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Live {
    pub established: u64,
    pub connect_failed: u64,
    pub alive: u64,
    pub sent: u64,
    pub ok: u64,
    /// Error responses, timeouts and requests lost with their connection.
    pub errors: u64,
}

impl Live {
    fn add(&mut self, o: &Live) {
        self.established += o.established;
        self.connect_failed += o.connect_failed;
        self.alive += o.alive;
        self.sent += o.sent;
        self.ok += o.ok;
        self.errors += o.errors;
    }
}

/// What a worker tells its parent, one JSON object per stdout line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
enum Msg {
    Progress { live: Live, interval: HistData },
    Ready { connect: ConnectStats },
    Done { report: Box<WorkerReport> },
    Fatal { error: String },
}

/// One worker's final results (histograms in µs).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerReport {
    pub worker: usize,
    pub source: String,
    pub connect: ConnectStats,
    pub requests: RequestStats,
    /// From the intended send time (ok responses, measured window).
    pub latency: HistData,
    /// From the actual send time.
    pub service: HistData,
    /// Actual − intended send time (open loop).
    pub send_lag: HistData,
}

pub fn run(args: &RpcArgs) -> anyhow::Result<ExitCode> {
    match args.worker.worker_index {
        Some(index) => worker(args, index),
        None => coordinate(args),
    }
}

/// The request body: a JSON object of exactly `n` bytes when `n >= 8`.
pub fn payload(n: usize) -> Vec<u8> {
    match n {
        0 => Vec::new(),
        1..=7 => {
            let mut v = b"{}".to_vec();
            v.resize(n.max(2), b' ');
            v.truncate(n);
            v
        }
        _ => {
            let mut v = b"{\"p\":\"".to_vec();
            v.resize(n - 2, b'x');
            v.extend_from_slice(b"\"}");
            v
        }
    }
}

/// `"code:Name"`, the key of an error response in `RequestStats::errors`.
pub fn code_key(code: u8) -> String {
    match ResponseCode::from_u8(code) {
        Some(c) => format!("{code}:{c:?}"),
        None => format!("{code}:Unknown"),
    }
}

// ---------------------------------------------------------------------------------
// Coordinator (parent process)

fn fmt_rate(r: LoadRate) -> String {
    match r {
        LoadRate::Max => "max".into(),
        LoadRate::PerSec(r) => format!("{r}"),
    }
}

fn mode_name(m: RpcMode) -> &'static str {
    match m {
        RpcMode::Bannou => "bannou",
        RpcMode::Echo => "echo",
    }
}

fn coordinate(args: &RpcArgs) -> anyhow::Result<ExitCode> {
    if args.conns == 0 || args.duration <= 0.0 || args.warmup < 0.0 || args.window == 0 {
        anyhow::bail!("--conns, --duration and --window must be positive, --warmup >= 0");
    }
    let (plan, soft, hard) = match spawn::plan_for("rpc", args.conns, args.procs) {
        Ok(v) => v,
        Err(code) => return Ok(code),
    };
    let p = plan.procs();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = args
        .threads
        .unwrap_or((cores / p).max(1))
        .clamp(1, plan.per_worker.iter().copied().max().unwrap_or(1).max(1));

    // The gateway: spawned for the run, or already running.
    let mut spawned = match &args.spawn_gateway {
        Some(cfg) => {
            eprintln!("rpc: starting gateway with {}", cfg.display());
            let g = SpawnedGateway::start(
                cfg,
                args.gateway_bin.as_deref(),
                args.gateway_log.as_deref(),
                Duration::from_secs(20),
            )?;
            eprintln!(
                "rpc: gateway {} pid {} ready (admin http://{})",
                g.command, g.pid, g.admin
            );
            Some(g)
        }
        None => None,
    };
    let mut gw_args = args.gateway.clone();
    if gw_args.gateway_config.is_none() {
        gw_args.gateway_config = args.spawn_gateway.clone();
    }
    let target = Target::resolve(&gw_args)?;
    let gateway_pid = spawned.as_ref().map(|g| g.pid).or(args.gateway_pid);
    let label = args.label.clone().unwrap_or_else(|| match args.mode {
        RpcMode::Bannou => format!("{} {}", target.url(), args.endpoint),
        RpcMode::Echo => format!("echo {}", target.url()),
    });
    eprintln!(
        "rpc: {} connections to {} over {p} worker process(es) {:?} x {threads} thread(s) \
         (RLIMIT_NOFILE {soft}/{hard}); rate {}, {} s measured after {} s warm-up, mode {}",
        args.conns,
        target.url(),
        plan.per_worker,
        fmt_rate(args.rate),
        args.duration,
        args.warmup,
        mode_name(args.mode)
    );

    let run_id = format!("{:x}", std::process::id() as u64 ^ unix_ns() >> 10);
    let worker_args = (0..p)
        .map(|i| {
            vec![
                "rpc".to_string(),
                format!("--conns={}", plan.per_worker[i]),
                format!("--total-conns={}", args.conns),
                format!("--rate={}", fmt_rate(args.rate)),
                format!("--duration={}", args.duration),
                format!("--warmup={}", args.warmup),
                format!("--payload={}", args.payload),
                format!("--endpoint={}", args.endpoint),
                format!("--mode={}", mode_name(args.mode)),
                format!("--window={}", args.window),
                format!("--threads={threads}"),
                format!("--timeout-ms={}", args.timeout_ms),
                format!("--gateway={}", target.url()),
                format!("--concurrency={}", args.concurrency),
                format!("--connect-timeout-ms={}", args.connect_timeout_ms),
                format!("--worker-index={i}"),
                format!("--worker-first={}", plan.first(i)),
                format!("--run-id={run_id}"),
            ]
        })
        .collect();
    let mut workers = Workers::spawn(worker_args, &[("RG_BENCH_SECRET", &target.secret)])?;
    let mut st = Collect::new(p);

    // Ramp: until every worker is ready (or gone).
    let ramp_started = Instant::now();
    let ramp_limit =
        plan.ramp_time(args.connect_timeout_ms, args.concurrency) + Duration::from_secs(30);
    let mut last_print = Instant::now();
    while !st.all_ready() {
        st.poll(&workers, Duration::from_millis(100));
        if last_print.elapsed() >= Duration::from_secs(1) {
            last_print = Instant::now();
            let l = st.live();
            eprintln!(
                "  [ramp {:>5.1}s] established {}/{}, failed {}",
                ramp_started.elapsed().as_secs_f64(),
                l.established,
                args.conns,
                l.connect_failed
            );
        }
        if ramp_started.elapsed() > ramp_limit {
            st.errors
                .push(format!("ramp not over after {ramp_limit:?}"));
            break;
        }
    }
    let mut ramp_connect = ConnectStats::default();
    for c in st.ready.iter().flatten() {
        ramp_connect.merge(c);
    }
    eprintln!(
        "  ramp over in {:.2} s: established {}/{}, failures {}",
        ramp_started.elapsed().as_secs_f64(),
        ramp_connect.established,
        args.conns,
        fmt_counts(&ramp_connect.failures)
    );

    // Go: the same start instant for every worker.
    let lead = Duration::from_millis(200);
    let start_unix = unix_ns() + lead.as_nanos() as u64;
    let start = Instant::now() + lead;
    for i in 0..p {
        if st.ready[i].is_some() {
            if let Err(e) = workers.send_line(i, &format!("go {start_unix}")) {
                st.errors.push(format!("worker {i}: cannot send go: {e}"));
            }
        }
    }
    let warmup = Duration::from_secs_f64(args.warmup);
    let measure_end = warmup + Duration::from_secs_f64(args.duration);
    let deadline = start + measure_end + Duration::from_millis(args.timeout_ms) * 2;
    let deadline = deadline + Duration::from_secs(20);

    // Gateway sampling.
    let mut gw = GatewayTrack::new(gateway_pid, spawned.is_some());
    gw.sample(start, Instant::now());

    // Run: progress every second, until every worker is done.
    let mut live_hist = report::new_histogram();
    let mut interval = report::new_histogram();
    let mut intervals: Vec<(f64, f64, Histogram<u64>)> = Vec::new();
    let mut interval_start = 0.0f64;
    let mut next_tick = start + Duration::from_secs(1);
    let mut last_ok = 0u64;
    let mut last_tick = start;
    let mut measure_begin_sampled = false;
    let mut measure_end_sampled = false;
    while !st.all_done() && Instant::now() < deadline {
        let wait = next_tick
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(50));
        st.poll(&workers, wait);
        for h in st.take_intervals() {
            let _ = interval.add(&h);
            if Instant::now() >= start + warmup {
                let _ = live_hist.add(&h);
            }
        }
        let now = Instant::now();
        if !measure_begin_sampled && now >= start + warmup {
            measure_begin_sampled = true;
            gw.mark_begin();
        }
        if !measure_end_sampled && now >= start + measure_end {
            measure_end_sampled = true;
            gw.mark_end();
        }
        if now >= next_tick {
            let t = now.saturating_duration_since(start).as_secs_f64();
            gw.sample(start, now);
            let l = st.live();
            let dt = now.duration_since(last_tick).as_secs_f64().max(1e-9);
            let rate = (l.ok.saturating_sub(last_ok)) as f64 / dt;
            last_ok = l.ok;
            last_tick = now;
            let phase = if now < start + warmup {
                " (warm-up)"
            } else if now > start + measure_end {
                " (draining)"
            } else {
                ""
            };
            let p99 = if live_hist.is_empty() {
                "-".to_string()
            } else {
                fmt_us(live_hist.value_at_quantile(0.99))
            };
            let gws = gw.last_line();
            eprintln!(
                "  [{t:>6.1}s] conns {}/{}  rate {:>8.0}/s  sent {}  ok {}  errors {}  p99 {p99}{gws}{phase}",
                l.alive, args.conns, rate, l.sent, l.ok, l.errors
            );
            intervals.push((
                interval_start,
                t - interval_start,
                std::mem::replace(&mut interval, report::new_histogram()),
            ));
            interval_start = t;
            next_tick += Duration::from_secs(1);
        }
    }
    let now = Instant::now();
    if !measure_end_sampled {
        gw.mark_end();
    }
    if !interval.is_empty() {
        let t = now.saturating_duration_since(start).as_secs_f64();
        intervals.push((interval_start, t - interval_start, interval));
    }
    if !st.all_done() {
        st.errors
            .push("some workers did not finish before the deadline".to_string());
    }
    super::fleet::stop_workers(&mut workers, &mut st, Duration::from_secs(10), gateway_pid);
    let stop_status = spawned.as_mut().map(|g| g.stop());
    if let Some(s) = &stop_status {
        eprintln!("rpc: gateway stopped (SIGTERM): {s}");
    }

    // Merge and report.
    let mut connect = ConnectStats::default();
    let mut requests = RequestStats::default();
    let mut lat = report::new_histogram();
    let mut svc = report::new_histogram();
    let mut lag = report::new_histogram();
    for (i, d) in st.done.iter().enumerate() {
        match d {
            Some(r) => {
                connect.merge(&r.connect);
                requests.merge(&r.requests);
                r.latency.add_to(&mut lat);
                r.service.add_to(&mut svc);
                r.send_lag.add_to(&mut lag);
            }
            None => {
                // A worker that never reported: its connections count as failed.
                let n = plan.per_worker[i] as u64;
                match &st.ready[i] {
                    Some(c) => connect.merge(c),
                    None => {
                        connect.attempted += n;
                        *connect
                            .failures
                            .entry("worker:no_report".into())
                            .or_default() += n;
                    }
                }
                st.errors.push(format!("worker {i} sent no final report"));
            }
        }
    }
    let report = RpcReport {
        scenario: "rpc".into(),
        schema_version: 1,
        label,
        started_unix_ms: start_unix / 1_000_000,
        mode: mode_name(args.mode).into(),
        gateway_url: target.url(),
        endpoint: (args.mode == RpcMode::Bannou).then(|| args.endpoint.clone()),
        conns: args.conns,
        procs: p,
        per_proc: plan.per_worker.clone(),
        threads_per_proc: threads,
        rate_target_per_sec: match args.rate {
            LoadRate::Max => None,
            LoadRate::PerSec(r) => Some(r),
        },
        window: (args.rate == LoadRate::Max).then_some(args.window),
        payload_bytes: args.payload,
        warmup_secs: args.warmup,
        duration_secs: args.duration,
        timeout_ms: args.timeout_ms,
        connect_us: Percentiles::of(&connect.connect_us.to_histogram()),
        ok: connect.established == args.conns as u64
            && requests.sent > 0
            && requests.failed() == 0
            && st.errors.is_empty(),
        connect,
        throughput_per_sec: requests.ok as f64 / args.duration,
        send_rate_per_sec: requests.sent as f64 / args.duration,
        requests,
        latency_us: Percentiles::of(&lat),
        latency_hist: HistData::from_histogram(&lat),
        service_time_us: Percentiles::of(&svc),
        send_lag_us: Percentiles::of(&lag),
        gateway: gw.usage(args.duration),
        worker_errors: st.errors.clone(),
    };
    print_table(&report);
    if let Some(path) = &args.json {
        report::write_json(path, &report)?;
        eprintln!("report written to {}", path.display());
    }
    if let Some(path) = &args.hist_log {
        write_hist_log(path, start_unix, &intervals, args.warmup, &report)?;
        eprintln!("interval log written to {}", path.display());
    }
    if let Some(path) = &args.chart {
        let doc = chart::svg(
            &format!("rpc latency: {}", report.label),
            &[chart::Run {
                label: report.label.clone(),
                hist: &lat,
            }],
        );
        write_file(path, doc.as_bytes())?;
        eprintln!("chart written to {}", path.display());
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn write_file(path: &std::path::Path, data: &[u8]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, data)?;
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

/// The gateway's /proc samples over the run.
struct GatewayTrack {
    pid: Option<u32>,
    spawned: bool,
    samples: Vec<GatewaySample>,
    last: Option<Sample>,
    begin: Option<Sample>,
    end: Option<Sample>,
    peak: u64,
}

impl GatewayTrack {
    fn new(pid: Option<u32>, spawned: bool) -> GatewayTrack {
        GatewayTrack {
            pid,
            spawned,
            samples: Vec::new(),
            last: None,
            begin: None,
            end: None,
            peak: 0,
        }
    }

    fn read(&mut self) -> Option<Sample> {
        let s = procstat::sample(self.pid?).ok()?;
        self.peak = self.peak.max(s.rss_bytes);
        Some(s)
    }

    fn sample(&mut self, start: Instant, now: Instant) {
        let Some(s) = self.read() else { return };
        let t = if now >= start {
            now.duration_since(start).as_secs_f64()
        } else {
            -start.duration_since(now).as_secs_f64()
        };
        let cpu = self.last.map_or(0.0, |l| {
            100.0 * s.cpu_secs_since(&l) / s.at.duration_since(l.at).as_secs_f64().max(1e-9)
        });
        self.samples.push(GatewaySample {
            t_secs: t,
            rss_bytes: s.rss_bytes,
            cpu_percent_of_core: cpu,
        });
        self.last = Some(s);
    }

    fn mark_begin(&mut self) {
        self.begin = self.read();
    }

    fn mark_end(&mut self) {
        self.end = self.read();
    }

    fn last_line(&self) -> String {
        match self.samples.last() {
            Some(s) if self.pid.is_some() => format!(
                "  gw cpu {:.0}% rss {}",
                s.cpu_percent_of_core,
                fmt_bytes(s.rss_bytes as f64)
            ),
            _ => String::new(),
        }
    }

    fn usage(&mut self, duration_secs: f64) -> Option<GatewayUsage> {
        let pid = self.pid?;
        let (b, e) = (self.begin, self.end);
        let cpu_secs = b.zip(e).map(|(b, e)| e.cpu_secs_since(&b));
        let window = b
            .zip(e)
            .map(|(b, e)| e.at.duration_since(b.at).as_secs_f64())
            .unwrap_or(duration_secs)
            .max(1e-9);
        Some(GatewayUsage {
            pid,
            spawned: self.spawned,
            cpu_secs,
            cpu_percent_of_core: cpu_secs.map(|c| 100.0 * c / window),
            rss_start_bytes: b.map(|s| s.rss_bytes),
            rss_end_bytes: e.map(|s| s.rss_bytes),
            rss_peak_bytes: (self.peak > 0).then_some(self.peak),
            hwm_bytes: e.or(b).map(|s| s.hwm_bytes),
            samples: std::mem::take(&mut self.samples),
        })
    }
}

/// What the coordinator has heard from its workers.
struct Collect {
    ready: Vec<Option<ConnectStats>>,
    done: Vec<Option<Box<WorkerReport>>>,
    live: Vec<Live>,
    exited: Vec<bool>,
    intervals: Vec<Histogram<u64>>,
    errors: Vec<String>,
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

impl Collect {
    fn new(p: usize) -> Collect {
        Collect {
            ready: vec![None; p],
            done: vec![None; p],
            live: vec![Live::default(); p],
            exited: vec![false; p],
            intervals: Vec::new(),
            errors: Vec::new(),
        }
    }

    fn all_ready(&self) -> bool {
        (0..self.ready.len()).all(|i| self.ready[i].is_some() || self.exited[i])
    }

    fn all_done(&self) -> bool {
        (0..self.done.len()).all(|i| self.done[i].is_some() || self.exited[i])
    }

    fn live(&self) -> Live {
        let mut l = Live::default();
        self.live.iter().for_each(|w| l.add(w));
        l
    }

    fn take_intervals(&mut self) -> Vec<Histogram<u64>> {
        std::mem::take(&mut self.intervals)
    }

    fn line(&mut self, worker: usize, line: &str) {
        match serde_json::from_str::<Msg>(line) {
            Ok(Msg::Progress { live, interval }) => {
                self.live[worker] = live;
                if !interval.counts.is_empty() {
                    self.intervals.push(interval.to_histogram());
                }
            }
            Ok(Msg::Ready { connect }) => {
                self.live[worker].established = connect.established;
                self.live[worker].connect_failed = connect.failed();
                self.ready[worker] = Some(connect);
            }
            Ok(Msg::Done { report }) => self.done[worker] = Some(report),
            Ok(Msg::Fatal { error }) => self.errors.push(format!("worker {worker}: {error}")),
            Err(e) => self
                .errors
                .push(format!("worker {worker}: unreadable line {line:?}: {e}")),
        }
    }
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
    println!(
        "  {:<14} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "latency", "p50", "p90", "p99", "p99.9", "p99.99", "max"
    );
    let row = |name: &str, p: &Percentiles| {
        if p.count == 0 {
            println!("  {name:<14} (no samples)");
        } else {
            println!(
                "  {:<14} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
                name,
                fmt_us(p.p50),
                fmt_us(p.p90),
                fmt_us(p.p99),
                fmt_us(p.p999),
                fmt_us(p.p9999),
                fmt_us(p.max)
            );
        }
    };
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
        let opt = |b: Option<u64>| b.map_or("-".to_string(), |b| fmt_bytes(b as f64));
        println!();
        println!(
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
        );
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

// ---------------------------------------------------------------------------------
// Worker (child process)

/// What every thread of a worker needs to know.
struct RunCfg {
    mode: RpcMode,
    rate: LoadRate,
    total_conns: u64,
    window: usize,
    warmup_ns: u64,
    end_ns: u64,
    timeout_ns: u64,
    payload: Vec<u8>,
    endpoint: String,
    target: Target,
    connect_timeout: Duration,
    lanes: usize,
    worker_index: usize,
    run_id: String,
}

/// Start and stop, shared by a worker's threads.
struct Control {
    /// CLOCK_MONOTONIC ns of the schedule's start (0: not yet).
    start: AtomicU64,
    stop: Arc<AtomicBool>,
}

enum ThreadEvent {
    Tick {
        thread: usize,
        live: Live,
        interval: Histogram<u64>,
    },
    Ramped {
        thread: usize,
        connect: ConnectStats,
    },
    Done {
        thread: usize,
        result: Box<ThreadResult>,
    },
    Failed {
        thread: usize,
        error: String,
    },
}

struct ThreadResult {
    connect: ConnectStats,
    requests: RequestStats,
    latency: Histogram<u64>,
    service: Histogram<u64>,
    send_lag: Histogram<u64>,
}

fn worker(args: &RpcArgs, index: usize) -> anyhow::Result<ExitCode> {
    let fatal = |error: String| {
        spawn::emit(&Msg::Fatal { error });
        Ok(ExitCode::from(2))
    };
    let (soft, _) = spawn::raise_nofile();
    if args.conns + spawn::FD_HEADROOM > soft as usize {
        return fatal(format!(
            "{} connections + {} need more than RLIMIT_NOFILE {soft}",
            args.conns,
            spawn::FD_HEADROOM
        ));
    }
    let target = match Target::resolve(&args.gateway) {
        Ok(t) => t,
        Err(e) => return fatal(format!("{e:#}")),
    };
    let (stop, lines) = spawn::control_lines();
    let threads = args.threads.unwrap_or(1).clamp(1, args.conns.max(1));
    let warmup_ns = (args.warmup * 1e9) as u64;
    let cfg = Arc::new(RunCfg {
        mode: args.mode,
        rate: args.rate,
        total_conns: args.total_conns.unwrap_or(args.conns).max(1) as u64,
        window: args.window.max(1),
        warmup_ns,
        end_ns: warmup_ns + (args.duration * 1e9) as u64,
        timeout_ns: args.timeout_ms * 1_000_000,
        payload: payload(args.payload),
        endpoint: args.endpoint.clone(),
        target,
        connect_timeout: Duration::from_millis(args.connect_timeout_ms),
        lanes: (args.concurrency / threads).max(1),
        worker_index: index,
        run_id: args.worker.run_id.clone(),
    });
    let ctl = Arc::new(Control {
        start: AtomicU64::new(0),
        stop,
    });
    let (tx, rx) = mpsc::channel();
    let (base, extra) = (args.conns / threads, args.conns % threads);
    let mut first = args.worker.worker_first;
    for t in 0..threads {
        let n = base + usize::from(t < extra);
        let (cfg, ctl, tx) = (cfg.clone(), ctl.clone(), tx.clone());
        let g0 = first;
        first += n;
        std::thread::Builder::new()
            .name(format!("rpc-{t}"))
            .spawn(move || thread_main(cfg, ctl, t, g0, n, tx))?;
    }
    drop(tx);

    let mut ramped: Vec<Option<ConnectStats>> = vec![None; threads];
    let mut done: Vec<Option<Box<ThreadResult>>> = (0..threads).map(|_| None).collect();
    let mut live = vec![Live::default(); threads];
    let mut interval = report::new_histogram();
    let mut ready_sent = false;
    let mut next_emit = Instant::now() + Duration::from_secs(1);
    let mut failed_threads = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(ThreadEvent::Tick {
                thread,
                live: l,
                interval: h,
            }) => {
                live[thread] = l;
                let _ = interval.add(&h);
            }
            Ok(ThreadEvent::Ramped { thread, connect }) => ramped[thread] = Some(connect),
            Ok(ThreadEvent::Done { thread, result }) => {
                ramped[thread].get_or_insert_with(|| result.connect.clone());
                done[thread] = Some(result);
            }
            Ok(ThreadEvent::Failed { thread, error }) => {
                failed_threads.push(thread);
                spawn::emit(&Msg::Fatal {
                    error: format!("thread {thread}: {error}"),
                });
                ramped[thread].get_or_insert_with(ConnectStats::default);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        while let Ok(line) = lines.try_recv() {
            if let Some(at) = line
                .strip_prefix("go ")
                .and_then(|s| s.trim().parse::<u64>().ok())
            {
                // Wall clock → this process's CLOCK_MONOTONIC.
                let (u, m) = (unix_ns() as i128, mono_ns() as i128);
                let start = (m + (at as i128 - u)).max(1) as u64;
                ctl.start.store(start, Ordering::SeqCst);
            }
        }
        if !ready_sent && ramped.iter().all(Option::is_some) {
            ready_sent = true;
            let mut c = ConnectStats::default();
            ramped.iter().flatten().for_each(|r| c.merge(r));
            spawn::emit(&Msg::Ready { connect: c });
        }
        if Instant::now() >= next_emit {
            next_emit += Duration::from_secs(1);
            let mut l = Live::default();
            live.iter().for_each(|x| l.add(x));
            spawn::emit(&Msg::Progress {
                live: l,
                interval: HistData::from_histogram(&interval),
            });
            interval.reset();
        }
        if (0..threads).all(|t| done[t].is_some() || failed_threads.contains(&t)) {
            break;
        }
    }
    // The final report: threads merged.
    let mut r = WorkerReport {
        worker: index,
        source: spawn::source_ip(index).to_string(),
        ..Default::default()
    };
    let (mut lat, mut svc, mut lag) = (
        report::new_histogram(),
        report::new_histogram(),
        report::new_histogram(),
    );
    for t in done.iter().flatten() {
        r.connect.merge(&t.connect);
        r.requests.merge(&t.requests);
        let _ = lat.add(&t.latency);
        let _ = svc.add(&t.service);
        let _ = lag.add(&t.send_lag);
    }
    r.latency = HistData::from_histogram(&lat);
    r.service = HistData::from_histogram(&svc);
    r.send_lag = HistData::from_histogram(&lag);
    spawn::emit(&Msg::Done {
        report: Box::new(r),
    });
    // Exit without tearing down thousands of tasks; the kernel closes the sockets.
    std::process::exit(0)
}

/// One thread's state (single-threaded: Cells and RefCells).
struct ThreadState {
    connect: RefCell<ConnectStats>,
    connect_hist: RefCell<Histogram<u64>>,
    requests: RefCell<RequestStats>,
    latency: RefCell<Histogram<u64>>,
    service: RefCell<Histogram<u64>>,
    send_lag: RefCell<Histogram<u64>>,
    interval: RefCell<Histogram<u64>>,
    live: Cell<Live>,
    next: Cell<usize>,
    finished: Cell<bool>,
    /// Connections whose run is over, kept open until the process exits (closing them
    /// early would put the gateway's close work inside the others' measurements).
    parked: RefCell<Vec<Client>>,
}

impl ThreadState {
    fn bump(&self, f: impl FnOnce(&mut Live)) {
        let mut l = self.live.get();
        f(&mut l);
        self.live.set(l);
    }
}

/// An established connection waiting for the start.
struct Ready {
    client: Client,
    guid: [u8; 16],
    g: u64,
}

fn thread_main(
    cfg: Arc<RunCfg>,
    ctl: Arc<Control>,
    thread: usize,
    g0: usize,
    n: usize,
    tx: mpsc::Sender<ThreadEvent>,
) {
    let rt = crate::sched::client_runtime();
    let mut rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            let _ = tx.send(ThreadEvent::Failed {
                thread,
                error: format!("monoio runtime: {e}"),
            });
            return;
        }
    };
    rt.block_on(async move {
        let pacer = match Pacer::new() {
            Ok(p) => p,
            Err(e) => {
                let _ = tx.send(ThreadEvent::Failed {
                    thread,
                    error: format!("timerfd: {e}"),
                });
                return;
            }
        };
        monoio::spawn(pacer.clone().drive());
        let st = Rc::new(ThreadState {
            connect: RefCell::default(),
            connect_hist: RefCell::new(report::new_histogram()),
            requests: RefCell::default(),
            latency: RefCell::new(report::new_histogram()),
            service: RefCell::new(report::new_histogram()),
            send_lag: RefCell::new(report::new_histogram()),
            interval: RefCell::new(report::new_histogram()),
            live: Cell::new(Live::default()),
            next: Cell::new(0),
            finished: Cell::new(false),
            parked: RefCell::default(),
        });
        // Ticker: the live counters and last second's histogram to the worker's main.
        {
            let (st, tx) = (st.clone(), tx.clone());
            monoio::spawn(async move {
                while !st.finished.get() {
                    monoio::time::sleep(Duration::from_millis(250)).await;
                    let h =
                        std::mem::replace(&mut *st.interval.borrow_mut(), report::new_histogram());
                    let _ = tx.send(ThreadEvent::Tick {
                        thread,
                        live: st.live.get(),
                        interval: h,
                    });
                }
            });
        }
        // Ramp.
        let ready: Rc<RefCell<Vec<Ready>>> = Rc::default();
        let minter = Rc::new(Minter::new(&cfg.target.secret));
        let lanes: Vec<_> = (0..cfg.lanes.min(n.max(1)))
            .map(|_| {
                monoio::spawn(ramp_lane(
                    cfg.clone(),
                    ctl.clone(),
                    st.clone(),
                    minter.clone(),
                    ready.clone(),
                    g0,
                    n,
                ))
            })
            .collect();
        for l in lanes {
            l.await;
        }
        let mut connect = st.connect.borrow().clone();
        connect.connect_us = HistData::from_histogram(&st.connect_hist.borrow());
        let _ = tx.send(ThreadEvent::Ramped {
            thread,
            connect: connect.clone(),
        });
        // Wait for `go` (or stop).
        let start = loop {
            if ctl.stop.load(Ordering::Relaxed) {
                break None;
            }
            match ctl.start.load(Ordering::SeqCst) {
                0 => monoio::time::sleep(Duration::from_millis(2)).await,
                s => break Some(s),
            }
        };
        if let Some(start) = start {
            let conns: Vec<Ready> = std::mem::take(&mut *ready.borrow_mut());
            let tasks: Vec<_> = conns
                .into_iter()
                .map(|c| {
                    monoio::spawn(run_conn(
                        c,
                        cfg.clone(),
                        ctl.clone(),
                        st.clone(),
                        pacer.clone(),
                        start,
                    ))
                })
                .collect();
            for t in tasks {
                t.await;
            }
        }
        st.finished.set(true);
        let h = std::mem::replace(&mut *st.interval.borrow_mut(), report::new_histogram());
        let _ = tx.send(ThreadEvent::Tick {
            thread,
            live: st.live.get(),
            interval: h,
        });
        let result = ThreadResult {
            connect,
            requests: st.requests.borrow().clone(),
            latency: st.latency.borrow().clone(),
            service: st.service.borrow().clone(),
            send_lag: st.send_lag.borrow().clone(),
        };
        let _ = tx.send(ThreadEvent::Done {
            thread,
            result: Box::new(result),
        });
    });
}

/// One lane of the ramp: opens the thread's connections one after another.
async fn ramp_lane(
    cfg: Arc<RunCfg>,
    ctl: Arc<Control>,
    st: Rc<ThreadState>,
    minter: Rc<Minter>,
    ready: Rc<RefCell<Vec<Ready>>>,
    g0: usize,
    n: usize,
) {
    let source = spawn::source_ip(cfg.worker_index);
    loop {
        if ctl.stop.load(Ordering::Relaxed) {
            return;
        }
        let i = st.next.get();
        if i >= n {
            return;
        }
        st.next.set(i + 1);
        let g = g0 + i;
        st.connect.borrow_mut().attempted += 1;
        let fail = |cause: String| {
            *st.connect.borrow_mut().failures.entry(cause).or_default() += 1;
            st.bump(|l| l.connect_failed += 1);
        };
        let token = match minter.mint(
            &format!("user-{g}"),
            &format!("bench-{}-{g}", cfg.run_id),
            &["user"],
        ) {
            Ok(t) => t,
            Err(_) => {
                fail("token:mint".into());
                continue;
            }
        };
        let opts = ConnectOptions {
            path: cfg.target.path.clone(),
            token: Some(token),
            token_via: TokenVia::Header,
            ..Default::default()
        };
        let t0 = Instant::now();
        let addr = cfg.target.addr;
        let attempt = || async {
            match cfg.mode {
                RpcMode::Bannou => conn::open(addr, Some(source), &opts, cfg.connect_timeout)
                    .await
                    .and_then(|(c, m)| match m.guid(&cfg.endpoint) {
                        Some(guid) => Ok((c, guid)),
                        None => Err(conn::Failure {
                            stage: "manifest",
                            reason: "endpoint_not_listed".into(),
                            retryable: false,
                        }),
                    }),
                RpcMode::Echo => conn::open_ws(addr, Some(source), &opts, cfg.connect_timeout)
                    .await
                    .map(|c| (c, [0u8; 16])),
            }
        };
        let mut result = attempt().await;
        if matches!(&result, Err(f) if f.retryable) {
            st.connect.borrow_mut().retries += 1;
            monoio::time::sleep(Duration::from_millis(100)).await;
            result = attempt().await;
        }
        match result {
            Ok((client, guid)) => {
                report::record(
                    &mut st.connect_hist.borrow_mut(),
                    t0.elapsed().as_micros() as u64,
                );
                st.connect.borrow_mut().established += 1;
                st.bump(|l| {
                    l.established += 1;
                    l.alive += 1;
                });
                ready.borrow_mut().push(Ready {
                    client,
                    guid,
                    g: g as u64,
                });
            }
            Err(f) => fail(f.cause()),
        }
    }
}

/// A request in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// CLOCK_MONOTONIC ns.
    pub intended: u64,
    pub sent: u64,
    /// Inside the measured window.
    pub measured: bool,
}

/// The requests in flight on one connection, by message id (ids are sequential, so a
/// deque indexed from the oldest id).
#[derive(Debug, Default)]
pub struct Inflight {
    base: u64,
    slots: VecDeque<Option<Slot>>,
    live: usize,
}

impl Inflight {
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn push(&mut self, id: u64, slot: Slot) {
        if self.slots.is_empty() {
            self.base = id;
        }
        while self.base + (self.slots.len() as u64) < id {
            self.slots.push_back(None);
        }
        if id < self.base + self.slots.len() as u64 {
            return; // an id reused: ignore (cannot happen with Client's counter)
        }
        self.slots.push_back(Some(slot));
        self.live += 1;
    }

    fn trim(&mut self) {
        while matches!(self.slots.front(), Some(None)) {
            self.slots.pop_front();
            self.base += 1;
        }
    }

    /// Removes and returns request `id`, if it is in flight.
    pub fn take(&mut self, id: u64) -> Option<Slot> {
        let idx = id.checked_sub(self.base)? as usize;
        let s = self.slots.get_mut(idx)?.take()?;
        self.live -= 1;
        self.trim();
        Some(s)
    }

    /// The oldest request in flight.
    pub fn oldest(&self) -> Option<Slot> {
        self.slots.iter().flatten().next().copied()
    }

    /// Removes the requests sent at or before `cutoff` (ns): the timed-out ones.
    pub fn expire(&mut self, cutoff: u64) -> Vec<Slot> {
        let mut out = Vec::new();
        while let Some(Some(s)) = self.slots.front() {
            if s.sent > cutoff {
                break;
            }
            out.push(*s);
            self.slots.pop_front();
            self.base += 1;
            self.live -= 1;
            self.trim();
        }
        out
    }

    /// Everything still in flight (the connection ended).
    pub fn drain(&mut self) -> Vec<Slot> {
        let out = self.slots.drain(..).flatten().collect();
        self.live = 0;
        out
    }
}

/// A connection with nothing else to wake it wakes this often (to see the stop flag).
const TICK_NS: u64 = 100_000_000;

/// Drives one connection: pipelined sends on the schedule (or the window), responses
/// matched by message id, until the schedule is over and nothing is in flight.
///
/// Batched, like the limit probe's closed loop: each turn of the loop handles every
/// complete message already read, then queues everything that is due (open loop: each
/// request whose intended time has passed, with that intended time; closed loop: every
/// free window slot) and writes it all with one write (closed loop: `flush_batched`, one
/// io_uring send issued with the other connections' sends of the thread; open loop:
/// `flush`, a `send` right away), then waits once: for
/// readability or the connection's next deadline (the next intended send time, the
/// oldest request's timeout, the end of the closed loop, or the stop tick), and reads
/// once. The deadline is one pinned `Pacer` timer kept for the connection's life and
/// re-armed only when it has fired or an earlier deadline comes up (one that fires
/// early costs a loop turn), not a timer set and cancelled per response; with nothing
/// in flight the connection just sleeps until its next send.
async fn run_conn(
    c: Ready,
    cfg: Arc<RunCfg>,
    ctl: Arc<Control>,
    st: Rc<ThreadState>,
    pacer: Rc<Pacer>,
    start: u64,
) {
    let Ready {
        mut client,
        guid,
        g,
    } = c;
    let mut due = match cfg.rate {
        LoadRate::PerSec(r) => Some(Due::new(Schedule::new(r, cfg.total_conns, g), cfg.end_ns)),
        LoadRate::Max => None,
    };
    let mut inflight = Inflight::default();
    let mut sending = true;
    let mut drop_cause: Option<String> = None;
    let since = |t: u64| t.saturating_sub(start);
    let mut timer = std::pin::pin!(pacer.sleep_until(start));
    let mut timer_at = start;
    timer.as_mut().await;
    'run: loop {
        if ctl.stop.load(Ordering::Relaxed) {
            return;
        }
        // Every complete message already read (they all arrived with the last read).
        let now = mono_ns();
        loop {
            let incoming = match client.try_next() {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(e) => {
                    drop_cause = Some(conn::drop_cause("run", &e));
                    break 'run;
                }
            };
            let (id, code) = match incoming {
                Incoming::Response(h, _) if cfg.mode == RpcMode::Bannou => (h.message_id, h.code),
                Incoming::Push(h, _) if cfg.mode == RpcMode::Echo => (h.message_id, 0),
                Incoming::Close(c) => {
                    drop_cause = Some(format!("run:closed_{}", c.map_or(1005, |(code, _)| code)));
                    break 'run;
                }
                // Pings are answered by the client (the pong goes out with the flush).
                _ => continue,
            };
            settle(&st, &mut inflight, id, code, now);
        }
        // Timeouts.
        let now = mono_ns();
        for s in inflight.expire(now.saturating_sub(cfg.timeout_ns)) {
            st.bump(|l| l.errors += 1);
            if s.measured {
                st.requests.borrow_mut().timeouts += 1;
            }
        }
        // Queue what is due (open loop) or fills the window (closed loop): one flush.
        while sending {
            let intended = match &mut due {
                Some(d) => match d.next_due(since(now)) {
                    Some((_, off)) => start + off,
                    None => {
                        sending = d.peek().is_some();
                        break;
                    }
                },
                None => {
                    if since(now) >= cfg.end_ns {
                        sending = false;
                        break;
                    }
                    if inflight.len() >= cfg.window {
                        break;
                    }
                    now
                }
            };
            let measured = (cfg.warmup_ns..cfg.end_ns).contains(&since(intended));
            let id = client.queue_request(0, 0, 0, guid, &cfg.payload);
            inflight.push(
                id,
                Slot {
                    intended,
                    sent: now,
                    measured,
                },
            );
            st.bump(|l| l.sent += 1);
            if measured {
                st.requests.borrow_mut().sent += 1;
                if due.is_some() {
                    report::record(
                        &mut st.send_lag.borrow_mut(),
                        now.saturating_sub(intended) / 1_000,
                    );
                }
            }
        }
        let mut batched = false;
        if client.queued() > 0 {
            // Closed loop: a window's worth per connection, handed to io_uring with the
            // other connections' batches (far cheaper at saturation). Open loop: sent
            // at once, so the actual send is the recorded one (at sane rates a
            // connection has about one request due per turn: nothing to batch), and
            // sends do not bunch into bursts at the runtime's next submission (that
            // tipped a ws-echo near its limit into long queues at 80k/s).
            let flushed = if due.is_some() {
                client.flush().await
            } else {
                batched = true;
                client.flush_batched().await
            };
            if let Err(e) = flushed {
                drop_cause = Some(conn::drop_cause("send", &e));
                break;
            }
        }
        if !sending && inflight.len() == 0 {
            break;
        }
        // The next deadline; the timer is re-armed only if it fired or is too late.
        let mut wake = now + TICK_NS;
        if sending {
            wake = wake.min(match &due {
                Some(d) => d.peek().map_or(u64::MAX, |o| start + o),
                // The window is full: a response frees it, or the loop's end.
                None => start + cfg.end_ns,
            });
        }
        if let Some(o) = inflight.oldest() {
            wake = wake.min(o.sent + cfg.timeout_ns);
        }
        if mono_ns() >= timer_at || wake < timer_at {
            timer.set(pacer.sleep_until(wake));
            timer_at = wake;
        }
        if inflight.len() == 0 {
            // Nothing to wait for but the next send: a plain sleep, holding no buffers
            // (a push or close is read with the next response).
            client.release_buffers();
            timer.as_mut().await;
            continue;
        }
        if batched {
            // The batched send completed a scheduler round later: at saturation the
            // answers to the previous batch are there by now, so read before asking for
            // readiness (saves a poll op and a wakeup per turn; costs one empty recv when
            // nothing came).
            match read_now(&mut client) {
                Ok(true) => continue,
                Ok(false) => {}
                Err(cause) => {
                    drop_cause = Some(cause);
                    break;
                }
            }
        }
        match race(client.readable(), timer.as_mut()).await {
            Race::First(Ok(())) => {
                if let Err(cause) = read_now(&mut client) {
                    drop_cause = Some(cause);
                    break;
                }
            }
            Race::First(Err(e)) => {
                drop_cause = Some(conn::drop_cause("run", &e));
                break;
            }
            Race::Second => {}
        }
    }
    if let Some(cause) = drop_cause {
        st.bump(|l| l.alive = l.alive.saturating_sub(1));
        *st.requests
            .borrow_mut()
            .conn_drops
            .entry(cause)
            .or_default() += 1;
        for s in inflight.drain() {
            st.bump(|l| l.errors += 1);
            if s.measured {
                st.requests.borrow_mut().lost += 1;
            }
        }
    }
    st.parked.borrow_mut().push(client);
}

/// One non-blocking read: whether anything came, or why the connection is over.
fn read_now(client: &mut Client) -> Result<bool, String> {
    match client.try_read() {
        Ok(ReadOutcome::Data(_)) => Ok(true),
        Ok(ReadOutcome::WouldBlock) => Ok(false),
        Ok(ReadOutcome::Eof) => Err("run:closed_eof".into()),
        Err(e) => Err(conn::drop_cause("run", &e)),
    }
}

/// Accounts for the answer (`code`, 0 = ok) to request `id`, received at `now`: latency
/// from the intended send time, service time from the actual send; an id no longer in
/// flight (it timed out) is late.
fn settle(st: &ThreadState, inflight: &mut Inflight, id: u64, code: u8, now: u64) {
    match inflight.take(id) {
        Some(s) if code == 0 => {
            st.bump(|l| l.ok += 1);
            let latency = now.saturating_sub(s.intended) / 1_000;
            report::record(&mut st.interval.borrow_mut(), latency);
            if s.measured {
                st.requests.borrow_mut().ok += 1;
                report::record(&mut st.latency.borrow_mut(), latency);
                report::record(
                    &mut st.service.borrow_mut(),
                    now.saturating_sub(s.sent) / 1_000,
                );
            }
        }
        Some(s) => {
            st.bump(|l| l.errors += 1);
            if s.measured {
                *st.requests
                    .borrow_mut()
                    .errors
                    .entry(code_key(code))
                    .or_default() += 1;
            }
        }
        None => st.requests.borrow_mut().late += 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_has_the_requested_length_and_is_json() {
        for n in [0, 1, 2, 7, 8, 9, 64, 1000] {
            let p = payload(n);
            assert_eq!(p.len(), n, "{n}");
            if n >= 8 {
                serde_json::from_slice::<serde_json::Value>(&p).unwrap();
            }
        }
        assert_eq!(payload(8), b"{\"p\":\"\"}");
    }

    #[test]
    fn code_keys() {
        assert_eq!(code_key(12), "12:TooManyRequests");
        assert_eq!(code_key(60), "60:InternalError");
        assert_eq!(code_key(250), "250:Unknown");
    }

    fn slot(t: u64) -> Slot {
        Slot {
            intended: t,
            sent: t,
            measured: true,
        }
    }

    #[test]
    fn inflight_matches_out_of_order_and_expires_oldest() {
        let mut f = Inflight::default();
        for id in 1..=5 {
            f.push(id, slot(id * 10));
        }
        assert_eq!(f.len(), 5);
        assert_eq!(f.take(3), Some(slot(30)));
        assert_eq!(f.take(3), None);
        assert_eq!(f.take(1), Some(slot(10)));
        assert_eq!(f.oldest(), Some(slot(20)));
        // Timeouts: everything sent at or before 40.
        let gone = f.expire(40);
        assert_eq!(gone, vec![slot(20), slot(40)]);
        assert_eq!(f.len(), 1);
        assert_eq!(f.take(2), None); // answered after its timeout: late
        f.push(6, slot(60));
        assert_eq!(f.drain(), vec![slot(50), slot(60)]);
        assert_eq!(f.len(), 0);
        assert_eq!(f.oldest(), None);
        assert_eq!(f.take(99), None);
    }

    #[test]
    fn worker_messages_round_trip() {
        let mut h = report::new_histogram();
        report::record(&mut h, 123);
        let msg = Msg::Progress {
            live: Live {
                sent: 5,
                ok: 4,
                ..Default::default()
            },
            interval: HistData::from_histogram(&h),
        };
        let line = serde_json::to_string(&msg).unwrap();
        assert!(line.starts_with(r#"{"phase":"progress""#), "{line}");
        match serde_json::from_str::<Msg>(&line).unwrap() {
            Msg::Progress { live, interval } => {
                assert_eq!((live.sent, live.ok), (5, 4));
                assert_eq!(interval.to_histogram().len(), 1);
            }
            other => panic!("{other:?}"),
        }
    }
}
