//! The `fanout` coordinator (the parent process): plans the worker processes (`spawn`),
//! waits until every subscriber is subscribed, connects the publisher, then runs the
//! steps: publish at the step's rate for `--step-secs` (the due messages of each
//! `--tick-ms` tick in one batch), wait `--drain-secs`, ask every worker for the step's
//! deliveries, judge the step (`steps::falls_behind`) and stop after the first that
//! falls behind. The server's CPU and RSS are read over each publishing window.
//!
//! Why it exists: one process cannot hold 10,000 subscribers here, and the publisher
//! and the rule need one view of all of them.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::output::{self, FanoutReport};
use super::protocol::{report_line, Msg};
use super::publish::Publisher;
use super::server_usage;
use super::stamp::{self, Stamp};
use super::steps::{falls_behind, StepResult, DEFAULT_RATES};
use crate::cli::FanoutArgs;
use crate::report::{self, ConnectStats, HistData, Percentiles};
use crate::scenario::fleet::{self, Coordinator};
use crate::sched::unix_ns;
use crate::spawn::{self, Workers};

struct StepMsg {
    delivered: u64,
    latency: Histogram<u64>,
    dropped: BTreeMap<String, u64>,
    late: u64,
    unparsable: u64,
}

/// What the coordinator has heard from its workers.
struct Collect {
    ready: Vec<Option<ConnectStats>>,
    progress: Vec<(u64, u64)>,
    exited: Vec<bool>,
    steps: Vec<BTreeMap<u32, StepMsg>>,
    errors: Vec<String>,
}

impl Coordinator for Collect {
    fn all_done(&self) -> bool {
        self.exited.iter().all(|&e| e)
    }
    fn errors_mut(&mut self) -> &mut Vec<String> {
        &mut self.errors
    }
    fn on_line(&mut self, worker: usize, line: &str) {
        match serde_json::from_str::<Msg>(line) {
            Ok(Msg::Progress {
                established,
                failed,
            }) => self.progress[worker] = (established, failed),
            Ok(Msg::Ready { connect }) => {
                self.progress[worker] = (connect.established, connect.failed());
                self.ready[worker] = Some(connect);
            }
            Ok(Msg::Step {
                step,
                delivered,
                latency,
                dropped,
                late,
                unparsable,
            }) => {
                self.steps[worker].insert(
                    step,
                    StepMsg {
                        delivered,
                        latency: latency.to_histogram(),
                        dropped,
                        late,
                        unparsable,
                    },
                );
            }
            Ok(Msg::Fatal { error }) => self.errors.push(format!("worker {worker}: {error}")),
            Err(e) => self
                .errors
                .push(format!("worker {worker}: unreadable line ({e}): {line}")),
        }
    }
    fn on_exit(&mut self, worker: usize) -> bool {
        self.exited[worker] = true;
        self.ready[worker].is_some()
    }
}

impl Collect {
    fn all_ready(&self) -> bool {
        (0..self.ready.len()).all(|i| self.ready[i].is_some() || self.exited[i])
    }
    fn has_step(&self, step: u32) -> bool {
        (0..self.steps.len())
            .all(|i| self.steps[i].contains_key(&step) || self.exited[i] || self.ready[i].is_none())
    }
}

pub(super) fn coordinate(args: &FanoutArgs) -> anyhow::Result<ExitCode> {
    if args.subs == 0 || args.step_secs <= 0.0 || args.step_secs > 10.0 {
        anyhow::bail!("--subs must be positive and --step-secs in (0, 10]");
    }
    let (plan, soft, hard) = match spawn::plan_for("fanout", args.subs, args.procs) {
        Ok(v) => v,
        Err(code) => return Ok(code),
    };
    let p = plan.procs();
    let target = super::target_name(args.target);
    let label = args.label.clone().unwrap_or_else(|| target.to_string());
    let sub_cfg = super::sub_cfg(args)?;
    eprintln!(
        "fanout: {} subscribers to {target} at {} over {p} worker process(es) {:?} \
         (RLIMIT_NOFILE {soft}/{hard}); publish to {}",
        args.subs, sub_cfg.addr, plan.per_worker, args.publish
    );
    let run_id = format!("{:x}", std::process::id() as u64 ^ unix_ns() >> 10);
    let open_rate = args.open_rate.map(|r| r / p as f64);
    let worker_args = (0..p)
        .map(|i| {
            let mut a = vec![
                "fanout".to_string(),
                format!("--target={target}"),
                format!("--subs={}", plan.per_worker[i]),
                format!("--publish={}", args.publish),
                format!("--concurrency={}", args.concurrency),
                format!("--connect-timeout-ms={}", args.connect_timeout_ms),
                format!("--endpoint={}", args.endpoint),
                format!("--worker-index={i}"),
                format!("--worker-first={}", plan.first(i)),
                format!("--run-id={run_id}"),
            ];
            if let Some(s) = &args.server {
                a.push(format!("--server={s}"));
            }
            if let Some(s) = &args.gateway.gateway {
                a.push(format!("--gateway={s}"));
            }
            if let Some(s) = &args.gateway.gateway_config {
                a.push(format!("--gateway-config={}", s.display()));
            }
            if let Some(r) = open_rate {
                a.push(format!("--open-rate={r}"));
            }
            a
        })
        .collect();
    let secret = sub_cfg_secret(args);
    let mut workers = Workers::spawn(worker_args, &[("RG_BENCH_SECRET", &secret)])?;
    let mut st = Collect {
        ready: vec![None; p],
        progress: vec![(0, 0); p],
        exited: vec![false; p],
        steps: (0..p).map(|_| BTreeMap::new()).collect(),
        errors: Vec::new(),
    };

    // Subscribe.
    let ramp_started = Instant::now();
    let ramp_limit = plan.ramp_time(args.connect_timeout_ms, args.concurrency)
        + Duration::from_secs(30)
        + Duration::from_secs_f64(args.open_rate.map_or(0.0, |r| args.subs as f64 / r));
    let mut last_print = Instant::now();
    while !st.all_ready() {
        st.poll(&workers, Duration::from_millis(100));
        if last_print.elapsed() >= Duration::from_secs(1) {
            last_print = Instant::now();
            let (e, f) = st
                .progress
                .iter()
                .fold((0, 0), |(a, b), (e, f)| (a + e, b + f));
            eprintln!(
                "  [subscribe {:>5.1}s] subscribed {e}/{}, failed {f}",
                ramp_started.elapsed().as_secs_f64(),
                args.subs
            );
        }
        if ramp_started.elapsed() > ramp_limit {
            st.errors
                .push(format!("subscribing not over after {ramp_limit:?}"));
            break;
        }
    }
    let mut connect = ConnectStats::default();
    for c in st.ready.iter().flatten() {
        connect.merge(c);
    }
    eprintln!(
        "  subscribed in {:.2} s: {}/{}, failures {}",
        ramp_started.elapsed().as_secs_f64(),
        connect.established,
        args.subs,
        report::fmt_counts(&connect.failures)
    );
    let mut rep = FanoutReport {
        scenario: "fanout".into(),
        schema_version: 1,
        label,
        target: target.into(),
        started_unix_ms: unix_ns() / 1_000_000,
        subscribers_asked: args.subs,
        procs: p,
        per_proc: plan.per_worker.clone(),
        payload_bytes: args.payload,
        step_secs: args.step_secs,
        drain_secs: args.drain_secs,
        tick_ms: args.tick_ms,
        connect: connect.clone(),
        ..Default::default()
    };
    if connect.established == 0 {
        rep.errors.push("no subscriber could subscribe".into());
        rep.errors.append(&mut st.errors);
        return finish(args, rep, &mut workers, &mut st);
    }
    // Let the last subscriptions settle (a server may register them asynchronously).
    std::thread::sleep(Duration::from_millis(500));
    let mut publisher = Publisher::connect(args.target, &args.publish, args.publish_token.clone())?;

    let rates: Vec<f64> = if args.rates.is_empty() {
        DEFAULT_RATES.to_vec()
    } else {
        args.rates.clone()
    };
    let tick = Duration::from_millis(args.tick_ms.max(1));
    let mut payloads: Vec<Vec<u8>> = Vec::new();
    eprintln!("{}", output::header());
    for (k, &rate) in rates.iter().enumerate() {
        let step = k as u32;
        let total = (rate * args.step_secs).ceil().max(1.0) as u64;
        let _ = publisher.take_raw_fanout_us();
        let mut fanout_hist = report::new_histogram();
        let before = server_usage::read(&args.server_pid);
        let start = Instant::now();
        let (mut sent, mut accepted, mut publish_errors) = (0u64, 0u64, 0u64);
        while sent < total {
            let el = start.elapsed().as_secs_f64();
            let due = ((rate * el).floor() as u64 + 1).min(total);
            if due > sent {
                let t_ns = unix_ns();
                payloads.clear();
                for seq in sent..due {
                    let mut p = Vec::with_capacity(args.payload);
                    stamp::encode(&mut p, Stamp { t_ns, step, seq }, args.payload);
                    payloads.push(p);
                }
                match publisher.publish(&payloads) {
                    Ok(n) => {
                        accepted += n;
                        publish_errors += due - sent - n;
                    }
                    Err(e) => {
                        publish_errors += due - sent;
                        rep.errors.push(format!("step {step}: publish: {e:#}"));
                        break;
                    }
                }
                sent = due;
            }
            for us in publisher.take_raw_fanout_us() {
                report::record(&mut fanout_hist, us);
            }
            let next = start
                + tick.mul_f64((start.elapsed().as_secs_f64() / tick.as_secs_f64()).floor() + 1.0);
            let next = next.min(start + Duration::from_secs_f64(args.step_secs));
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
        let publish_secs = args.step_secs.max(start.elapsed().as_secs_f64());
        let after = server_usage::read(&args.server_pid);
        // Drain, then collect the step.
        let drain_end = Instant::now() + Duration::from_secs_f64(args.drain_secs);
        while Instant::now() < drain_end {
            st.poll(&workers, Duration::from_millis(50));
            for us in publisher.take_raw_fanout_us() {
                report::record(&mut fanout_hist, us);
            }
        }
        for i in 0..p {
            if st.ready[i].is_some() && !st.exited[i] {
                if let Err(e) = workers.send_line(i, &report_line(step)) {
                    st.errors.push(format!("worker {i}: {e}"));
                }
            }
        }
        let asked = Instant::now();
        while !st.has_step(step) && asked.elapsed() < Duration::from_secs(10) {
            st.poll(&workers, Duration::from_millis(20));
        }
        let mut lat = report::new_histogram();
        let mut delivered = 0;
        let mut dropped = BTreeMap::new();
        let (mut late, mut unparsable) = (0, 0);
        for w in &mut st.steps {
            if let Some(m) = w.remove(&step) {
                delivered += m.delivered;
                let _ = lat.add(&m.latency);
                report::add_counts(&mut dropped, &m.dropped);
                late += m.late;
                unparsable += m.unparsable;
            }
        }
        rep.dropped = dropped;
        rep.late = late;
        rep.unparsable = unparsable;
        let subscribers = connect.established;
        let latency = Percentiles::of(&lat);
        let why = falls_behind(accepted, subscribers, delivered, latency.p99);
        let r = StepResult {
            step,
            rate_per_sec: rate,
            published: accepted,
            publish_secs,
            subscribers,
            delivered,
            deliveries_per_sec: delivered as f64 / publish_secs,
            lost: (accepted * subscribers).saturating_sub(delivered),
            latency_us: latency,
            latency_hist: HistData::from_histogram(&lat),
            server: server_usage::usage(before, after),
            fanout_write_us: (!fanout_hist.is_empty()).then(|| Percentiles::of(&fanout_hist)),
            publish_errors,
            fell_behind: why.is_some() || publish_errors > 0,
            why: why.unwrap_or_else(|| {
                if publish_errors > 0 {
                    format!("{publish_errors} publish errors")
                } else {
                    String::new()
                }
            }),
        };
        eprintln!("{}", output::row(&r));
        let stop = r.fell_behind;
        rep.steps.push(r);
        if stop || !rep.errors.is_empty() {
            break;
        }
    }
    rep.errors.append(&mut st.errors);
    finish(args, rep, &mut workers, &mut st)
}

fn finish(
    args: &FanoutArgs,
    mut rep: FanoutReport,
    workers: &mut Workers,
    st: &mut Collect,
) -> anyhow::Result<ExitCode> {
    fleet::stop_workers(workers, st, Duration::from_secs(5), None);
    rep.errors.append(&mut st.errors);
    rep.finish();
    output::print_table(&rep);
    if let Some(path) = &args.json {
        report::write_json(path, &rep)?;
    }
    Ok(
        if rep.errors.is_empty() && rep.connect.established == args.subs as u64 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        },
    )
}

/// The HS256 secret the workers sign ringgate tokens with (empty for the peers).
fn sub_cfg_secret(args: &FanoutArgs) -> String {
    if args.target != super::FanoutTarget::Ringgate {
        return String::new();
    }
    crate::target::Target::resolve(&args.gateway)
        .map(|t| t.secret)
        .unwrap_or_default()
}
