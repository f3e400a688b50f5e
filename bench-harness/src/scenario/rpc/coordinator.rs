//! The `rpc` coordinator (the parent process): plans the worker processes
//! (`spawn::plan`, each on its own source address), optionally spawns the gateway
//! (`gateway`), waits until every worker has opened its connections, then sends them all
//! one `go <unix ns>` line so the schedule starts at the same instant everywhere. While
//! they run it merges the histograms they ship (`protocol`) and prints live progress
//! every second; at the end it stops them (and the gateway), merges their final results
//! into the `RpcReport` and hands it to `output`.
//!
//! Why it exists: one process cannot hold the connections a run needs (file descriptors,
//! ephemeral ports per source address) nor drive them on every core; the coordinator is
//! what makes many worker processes one run with one schedule and one report.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::output;
use super::protocol::{Live, Msg, WorkerReport};
use crate::cli::{LoadRate, RpcArgs, RpcMode};
use crate::gateway::SpawnedGateway;
use crate::report::{
    self, fmt_counts, fmt_us, ConnectStats, HistData, Percentiles, RequestStats, RpcReport,
};
use crate::scenario::fleet::{self, Coordinator};
use crate::scenario::gateway_track::GatewayTrack;
use crate::sched::unix_ns;
use crate::spawn::{self, Workers};
use crate::target::Target;

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

pub(super) fn coordinate(args: &RpcArgs) -> anyhow::Result<ExitCode> {
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
    let env = target.worker_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut workers = Workers::spawn(worker_args, &env)?;
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
    let mut progress = match &args.progress_json {
        Some(path) => Some(report::JsonLines::create(path)?),
        None => None,
    };
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
            let (phase, phase_name) = if now < start + warmup {
                (" (warm-up)", "warmup")
            } else if now > start + measure_end {
                (" (draining)", "after")
            } else {
                ("", "measured")
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
            if let Some(out) = progress.as_mut() {
                let line = output::ProgressLine {
                    t_secs: t,
                    unix_ms: unix_ns() / 1_000_000,
                    phase: phase_name,
                    live: &l,
                    latency: HistData::from_histogram(&interval),
                };
                if let Err(e) = out.write(&line) {
                    st.errors.push(format!("--progress-json: {e:#}"));
                    progress = None;
                }
            }
            let h = std::mem::replace(&mut interval, report::new_histogram());
            // Only the interval log needs every second's histogram (~170 KiB each).
            if args.hist_log.is_some() {
                intervals.push((interval_start, t - interval_start, h));
            }
            interval_start = t;
            next_tick += Duration::from_secs(1);
        }
    }
    let now = Instant::now();
    if !measure_end_sampled {
        gw.mark_end();
    }
    if !interval.is_empty() && args.hist_log.is_some() {
        let t = now.saturating_duration_since(start).as_secs_f64();
        intervals.push((interval_start, t - interval_start, interval));
    }
    if !st.all_done() {
        st.errors
            .push("some workers did not finish before the deadline".to_string());
    }
    fleet::stop_workers(&mut workers, &mut st, Duration::from_secs(10), gateway_pid);
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
    output::write_reports(args, &report, start_unix, &intervals, &lat)?;
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
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
