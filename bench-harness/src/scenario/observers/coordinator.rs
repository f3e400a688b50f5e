//! The `observers` coordinator (the parent process): starts the world and the gateway
//! (`setup`), plans and spawns the worker processes (`spawn`, each on its own source
//! address), waits until every observer has connected and asked to watch, sends every
//! worker one `go <unix ns>` so the measured window is the same everywhere, prints live
//! progress every second (with the gateway's CPU and RSS, `gateway_track`), then merges
//! the workers' counts into the report (`output`).
//!
//! Why it exists: one process cannot hold the observers a run needs (file descriptors,
//! ephemeral ports per source address); this makes many worker processes one run with
//! one window and one report. The event loop and the stop sequence are the harness's
//! (`fleet::Coordinator`, `fleet::stop_workers`).

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::output::{self, ClassReport, ObserversReport, WorldCounts};
use super::protocol::{Live, Msg, WatchStats, WorkerReport};
use super::setup;
use super::tally::ClassStats;
use super::worker::slow_pause;
use crate::backends::npc_world::WorldCounters;
use crate::cli::{ObserversArgs, Procs};
use crate::report::{self, fmt_counts, fmt_us, ConnectStats, HistData, Percentiles};
use crate::scenario::fleet::{self, Coordinator};
use crate::scenario::gateway_track::GatewayTrack;
use crate::sched::unix_ns;
use crate::spawn::{self, Workers};

pub(super) fn coordinate(args: &ObserversArgs) -> anyhow::Result<ExitCode> {
    if args.observers == 0
        || args.watch == 0
        || args.npcs == 0
        || args.duration <= 0.0
        || args.warmup < 0.0
        || !(0.0..=1.0).contains(&args.slow_share)
    {
        anyhow::bail!(
            "--observers, --watch, --npcs and --duration must be positive, --warmup >= 0, \
             --slow-share within 0..1"
        );
    }
    // A worker is one thread: `auto` takes at least one per core (more if the
    // descriptor and port limits need them).
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let procs = match args.procs {
        Procs::Auto => match spawn::plan_for("observers", args.observers, Procs::Auto) {
            Ok((p, ..)) if p.procs() < cores => Procs::Fixed(cores.min(args.observers)),
            Ok(_) => Procs::Auto,
            Err(code) => return Ok(code),
        },
        fixed => fixed,
    };
    let (plan, soft, hard) = match spawn::plan_for("observers", args.observers, procs) {
        Ok(v) => v,
        Err(code) => return Ok(code),
    };
    let p = plan.procs();
    let mut setup = setup::start(args)?;
    let target = setup.target.clone();
    let gateway_pid = setup.gateway.as_ref().map(|g| g.pid).or(args.gateway_pid);
    let label = args.label.clone().unwrap_or_else(|| {
        format!(
            "{} observers x {} of {} NPCs via {}",
            args.observers,
            args.watch,
            args.npcs,
            target.url()
        )
    });
    eprintln!(
        "observers: {} observers of {} NPCs each ({} slow) over {p} worker process(es) {:?} \
         (RLIMIT_NOFILE {soft}/{hard}); {} s measured after {} s warm-up",
        args.observers,
        args.watch,
        (0..args.observers as u64)
            .filter(|&g| super::tally::is_slow(g, args.slow_share))
            .count(),
        plan.per_worker,
        args.duration,
        args.warmup
    );

    let run_id = format!("{:x}", std::process::id() as u64 ^ unix_ns() >> 10);
    let worker_args = (0..p)
        .map(|i| {
            vec![
                "observers".to_string(),
                format!("--observers={}", plan.per_worker[i]),
                format!("--watch={}", args.watch),
                format!("--npcs={}", args.npcs),
                format!("--duration={}", args.duration),
                format!("--warmup={}", args.warmup),
                format!("--slow-share={}", args.slow_share),
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
                "  [ramp {:>5.1}s] established {}/{}, failed {}, watching {}",
                ramp_started.elapsed().as_secs_f64(),
                l.established,
                args.observers,
                l.connect_failed,
                l.watching
            );
        }
        if ramp_started.elapsed() > ramp_limit {
            st.errors
                .push(format!("ramp not over after {ramp_limit:?}"));
            break;
        }
    }
    let mut ramp_connect = ConnectStats::default();
    st.ready
        .iter()
        .flatten()
        .for_each(|c| ramp_connect.merge(c));
    eprintln!(
        "  ramp over in {:.2} s: established {}/{}, failures {}",
        ramp_started.elapsed().as_secs_f64(),
        ramp_connect.established,
        args.observers,
        fmt_counts(&ramp_connect.failures)
    );

    // Go: one start for every worker.
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
    let deadline = start + measure_end + Duration::from_secs(30);
    let mut gw = GatewayTrack::new(gateway_pid, setup.gateway.is_some());
    gw.sample(start, Instant::now());
    let world = setup.counters.clone();
    let mut world_begin: Option<WorldCounts> = None;
    let mut world_end: Option<WorldCounts> = None;

    // Run: progress every second, until every worker is done.
    let mut progress = match &args.progress_json {
        Some(path) => Some(report::JsonLines::create(path)?),
        None => None,
    };
    let mut next_tick = start + Duration::from_secs(1);
    let (mut last_deliveries, mut last_tick) = (0u64, start);
    let (mut begun, mut ended) = (false, false);
    while !st.all_done() && Instant::now() < deadline {
        let wait = next_tick
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(50));
        st.poll(&workers, wait);
        let now = Instant::now();
        if !begun && now >= start + warmup {
            begun = true;
            gw.mark_begin();
            world_begin = world.as_deref().map(world_counts);
        }
        if !ended && now >= start + measure_end {
            ended = true;
            gw.mark_end();
            world_end = world.as_deref().map(world_counts);
        }
        if now >= next_tick {
            gw.sample(start, now);
            let l = st.live();
            let dt = now.duration_since(last_tick).as_secs_f64().max(1e-9);
            let rate = l.deliveries.saturating_sub(last_deliveries) as f64 / dt;
            (last_deliveries, last_tick) = (l.deliveries, now);
            let (fast, slow) = st.take_interval();
            let p99 = |h: &Histogram<u64>| {
                if h.is_empty() {
                    "-".to_string()
                } else {
                    fmt_us(h.value_at_quantile(0.99))
                }
            };
            let (phase, phase_name) = if now < start + warmup {
                (" (warm-up)", "warmup")
            } else if now > start + measure_end {
                (" (draining)", "after")
            } else {
                ("", "measured")
            };
            eprintln!(
                "  [{:>6.1}s] watching {}/{}  deliveries {:>8.0}/s  gaps {}  disconnects {}  \
                 p99 fast {} slow {}{}{phase}",
                now.saturating_duration_since(start).as_secs_f64(),
                l.watching,
                args.observers,
                rate,
                l.gaps,
                l.disconnects,
                p99(&fast),
                p99(&slow),
                gw.last_line()
            );
            if let Some(out) = progress.as_mut() {
                let line = output::ProgressLine {
                    t_secs: now.saturating_duration_since(start).as_secs_f64(),
                    unix_ms: unix_ns() / 1_000_000,
                    phase: phase_name,
                    live: &l,
                    fast: HistData::from_histogram(&fast),
                    slow: HistData::from_histogram(&slow),
                };
                if let Err(e) = out.write(&line) {
                    st.errors.push(format!("--progress-json: {e:#}"));
                    progress = None;
                }
            }
            next_tick += Duration::from_secs(1);
        }
    }
    if !ended {
        gw.mark_end();
        world_end = world.as_deref().map(world_counts);
    }
    if !st.all_done() {
        st.errors
            .push("some workers did not finish before the deadline".to_string());
    }
    fleet::stop_workers(&mut workers, &mut st, Duration::from_secs(10), gateway_pid);
    if let Some(g) = setup.gateway.as_mut() {
        eprintln!("observers: gateway stopped (SIGTERM): {}", g.stop());
    }

    // Merge and report.
    let mut connect = ConnectStats::default();
    let mut watch = WatchStats::default();
    let (mut fast, mut slow) = (ClassStats::default(), ClassStats::default());
    let mut disconnects = BTreeMap::new();
    let mut npcs_seen = 0;
    for (i, d) in st.done.iter().enumerate() {
        match d {
            Some(r) => {
                connect.merge(&r.connect);
                watch.merge(&r.watch);
                fast.merge(&r.fast);
                slow.merge(&r.slow);
                report::add_counts(&mut disconnects, &r.disconnects);
                npcs_seen += r.npcs_seen;
            }
            None => {
                match &st.ready[i] {
                    Some(c) => connect.merge(c),
                    None => {
                        connect.attempted += plan.per_worker[i] as u64;
                        *connect
                            .failures
                            .entry("worker:no_report".into())
                            .or_default() += plan.per_worker[i] as u64;
                    }
                }
                st.errors.push(format!("worker {i} sent no final report"));
            }
        }
    }
    let world_counts = world_end.zip(world_begin).map(|(e, b)| WorldCounts {
        decisions: e.decisions - b.decisions,
        published: e.published - b.published,
        unlinked: e.unlinked - b.unlinked,
        dropped: e.dropped - b.dropped,
        subscribes: e.subscribes,
    });
    let per_decision = |k: &ClassStats| {
        // Each decision reaches every observer watching its NPC: observers x S / K of them.
        world_counts.as_ref().map(|w| {
            w.decisions as f64 / args.duration * k.observers as f64 * args.watch as f64
                / f64::from(args.npcs)
        })
    };
    let class = |k: &ClassStats| {
        let h = k.latency.to_histogram();
        ClassReport {
            observers: k.observers,
            deliveries: k.deliveries,
            deliveries_per_sec: k.deliveries as f64 / args.duration,
            gaps: k.gaps,
            stale: k.stale,
            foreign: k.foreign,
            manifests: k.manifests,
            expected_per_sec: per_decision(k),
            latency_us: Percentiles::of(&h),
            latency_hist: HistData::from_histogram(&h),
        }
    };
    let fast_disconnects: u64 = disconnects
        .iter()
        .filter(|(k, _)| k.starts_with("fast:"))
        .map(|(_, n)| n)
        .sum();
    let deliveries = fast.deliveries + slow.deliveries;
    let report = ObserversReport {
        scenario: "observers".into(),
        schema_version: 1,
        label,
        started_unix_ms: start_unix / 1_000_000,
        gateway_url: target.url(),
        world: setup.world.to_string(),
        npcs: args.npcs,
        observers: args.observers,
        watch_per_observer: args.watch,
        slow_share: args.slow_share,
        slow_pause_ms: slow_pause(args.watch).as_secs_f64() * 1e3,
        procs: p,
        per_proc: plan.per_worker.clone(),
        warmup_secs: args.warmup,
        duration_secs: args.duration,
        connect_us: Percentiles::of(&connect.connect_us.to_histogram()),
        ok: connect.established == args.observers as u64
            && watch.ok == args.observers as u64
            && (fast.observers == 0 || fast.deliveries > 0)
            && fast_disconnects == 0
            && st.errors.is_empty(),
        connect,
        watch,
        deliveries,
        deliveries_per_sec: deliveries as f64 / args.duration,
        fast: class(&fast),
        slow: class(&slow),
        disconnects,
        npcs_seen,
        world_counts,
        gateway: gw.usage(args.duration),
        worker_errors: st.errors.clone(),
    };
    output::write_reports(args, &report)?;
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn world_counts(c: &WorldCounters) -> WorldCounts {
    let get = WorldCounters::get;
    WorldCounts {
        decisions: get(&c.decisions),
        published: get(&c.published),
        unlinked: get(&c.unlinked),
        dropped: get(&c.dropped),
        subscribes: get(&c.subscribes),
    }
}

/// What the coordinator has heard from its workers.
struct Collect {
    ready: Vec<Option<ConnectStats>>,
    done: Vec<Option<Box<WorkerReport>>>,
    live: Vec<Live>,
    exited: Vec<bool>,
    interval_fast: Histogram<u64>,
    interval_slow: Histogram<u64>,
    errors: Vec<String>,
}

impl Coordinator for Collect {
    fn all_done(&self) -> bool {
        (0..self.done.len()).all(|i| self.done[i].is_some() || self.exited[i])
    }
    fn errors_mut(&mut self) -> &mut Vec<String> {
        &mut self.errors
    }
    fn on_line(&mut self, worker: usize, line: &str) {
        match serde_json::from_str::<Msg>(line) {
            Ok(Msg::Progress { live, fast, slow }) => {
                self.live[worker] = live;
                fast.add_to(&mut self.interval_fast);
                slow.add_to(&mut self.interval_slow);
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
    fn on_exit(&mut self, worker: usize) -> bool {
        self.exited[worker] = true;
        self.ready[worker].is_some()
    }
}

impl Collect {
    fn new(p: usize) -> Collect {
        Collect {
            ready: vec![None; p],
            done: (0..p).map(|_| None).collect(),
            live: vec![Live::default(); p],
            exited: vec![false; p],
            interval_fast: report::new_histogram(),
            interval_slow: report::new_histogram(),
            errors: Vec::new(),
        }
    }

    fn all_ready(&self) -> bool {
        (0..self.ready.len()).all(|i| self.ready[i].is_some() || self.exited[i])
    }

    fn live(&self) -> Live {
        let mut l = Live::default();
        self.live.iter().for_each(|w| l.add(w));
        l
    }

    /// The fast and slow observers' latencies since the last call.
    fn take_interval(&mut self) -> (Histogram<u64>, Histogram<u64>) {
        (
            std::mem::replace(&mut self.interval_fast, report::new_histogram()),
            std::mem::replace(&mut self.interval_slow, report::new_histogram()),
        )
    }
}
