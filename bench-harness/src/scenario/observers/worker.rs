//! An `observers` worker process: one runtime (`sched::client_runtime`, io_uring
//! without completion interrupts) holding its share of the observers. It opens them in
//! lanes (the ramp; each observer asks to watch as soon as it is connected), says
//! `ready`, takes the run's start from the coordinator's `go`, and reports progress
//! every second and its final counts once the measured window is over.
//!
//! Why it exists: this is the side of a run that holds the connections; it is a process
//! of its own so that the coordinator can spread them over source addresses (and, with
//! `--procs`, over cores).

use std::cell::{Cell, RefCell};
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use monoio::task::JoinHandle;

use super::observer::{observe, Observer};
use super::protocol::{Msg, WorkerReport};
use super::state::{RunCfg, State};
use super::tally::is_slow;
use crate::backends::npc_world::WATCH_PATH;
use crate::cli::ObserversArgs;
use crate::conn;
use crate::jwt::Minter;
use crate::report::{self, ConnectStats, HistData};
use crate::sched::unix_ns;
use crate::spawn;
use crate::target::Target;

/// Seeds the observers' choices of NPCs: observer g watches the same NPCs in every run.
const WATCH_SEED: u64 = 1;

/// A slow observer's socket receive buffer (the kernel doubles it).
const SLOW_RCVBUF: usize = 4096;

/// Mean time between two decisions of one NPC (uniform over 100–500 ms).
const MEAN_DECISION_NS: u64 = 300_000_000;

/// A slow observer's pause after each message: ten times the mean time between its
/// pushes (`watch` NPCs, each deciding every 300 ms on average).
pub(super) fn slow_pause(watch: usize) -> Duration {
    Duration::from_nanos(10 * MEAN_DECISION_NS / watch.max(1) as u64)
}

pub(super) fn worker(args: &ObserversArgs, index: usize) -> anyhow::Result<ExitCode> {
    let fatal = |error: String| {
        spawn::emit(&Msg::Fatal { error });
        Ok(ExitCode::from(2))
    };
    let (soft, _) = spawn::raise_nofile();
    if args.observers + spawn::FD_HEADROOM > soft as usize {
        return fatal(format!(
            "{} connections + {} need more than RLIMIT_NOFILE {soft}",
            args.observers,
            spawn::FD_HEADROOM
        ));
    }
    let target = match Target::resolve(&args.gateway) {
        Ok(t) => t,
        Err(e) => return fatal(format!("{e:#}")),
    };
    let (stop, lines) = spawn::control_lines();
    let warmup_ns = (args.warmup * 1e9) as u64;
    let cfg = RunCfg {
        target,
        npcs: args.npcs,
        watch: args.watch,
        slow_share: args.slow_share,
        slow_pause: slow_pause(args.watch),
        warmup_ns,
        end_ns: warmup_ns + (args.duration * 1e9) as u64,
        connect_timeout: Duration::from_millis(args.connect_timeout_ms),
        run_id: args.worker.run_id.clone(),
        seed: WATCH_SEED,
    };
    let mut rt = crate::sched::client_runtime()?;
    let st = Rc::new(State::new(cfg, stop));
    let first = args.worker.worker_first;
    let (n, lanes) = (args.observers, args.concurrency.max(1));
    rt.block_on(async move {
        // The coordinator's `go`, and the progress lines.
        let ticker = {
            let st = st.clone();
            monoio::spawn(async move {
                let mut next = unix_ns() + 1_000_000_000;
                loop {
                    while let Ok(line) = lines.try_recv() {
                        if let Some(at) =
                            line.strip_prefix("go ").and_then(|s| s.trim().parse().ok())
                        {
                            st.start.set(at);
                        }
                    }
                    let now = unix_ns();
                    if now >= next {
                        next += 1_000_000_000;
                        progress(&st);
                    }
                    if st.over(now) || st.stop.load(Ordering::Relaxed) {
                        return;
                    }
                    monoio::time::sleep(Duration::from_millis(2)).await;
                }
            })
        };
        // The ramp.
        let ramp = Rc::new(Ramp {
            next: Cell::new(0),
            connect: RefCell::default(),
            hist: RefCell::new(report::new_histogram()),
            observers: RefCell::default(),
        });
        let minter = Rc::new(Minter::new(&st.cfg.target.secret));
        let lanes: Vec<_> = (0..lanes.min(n.max(1)))
            .map(|_| {
                monoio::spawn(ramp_lane(
                    st.clone(),
                    ramp.clone(),
                    minter.clone(),
                    index,
                    first,
                    n,
                ))
            })
            .collect();
        for l in lanes {
            l.await;
        }
        let mut connect = ramp.connect.borrow().clone();
        connect.connect_us = HistData::from_histogram(&ramp.hist.borrow());
        spawn::emit(&Msg::Ready {
            connect: connect.clone(),
        });
        let observers: Vec<JoinHandle<()>> = std::mem::take(&mut *ramp.observers.borrow_mut());
        for o in observers {
            o.await;
        }
        ticker.await;
        progress(&st);
        let report = WorkerReport {
            worker: index,
            source: spawn::source_ip(index).to_string(),
            connect,
            watch: st.watch.borrow().clone(),
            fast: st.fast.borrow().stats(),
            slow: st.slow.borrow().stats(),
            disconnects: st.disconnects.borrow().clone(),
            npcs_seen: st.npcs_seen.get(),
        };
        spawn::emit(&Msg::Done {
            report: Box::new(report),
        });
    });
    // Exit without tearing down thousands of connections; the kernel closes them.
    std::process::exit(0)
}

/// The live counters and the last second's histograms, to the parent.
fn progress(st: &State) {
    let take = |h: &RefCell<hdrhistogram::Histogram<u64>>| {
        let d = HistData::from_histogram(&h.borrow());
        h.borrow_mut().reset();
        d
    };
    spawn::emit(&Msg::Progress {
        live: st.live.get(),
        fast: take(&st.interval_fast),
        slow: take(&st.interval_slow),
    });
}

/// The ramp's shared state.
struct Ramp {
    next: Cell<usize>,
    connect: RefCell<ConnectStats>,
    hist: RefCell<hdrhistogram::Histogram<u64>>,
    observers: RefCell<Vec<JoinHandle<()>>>,
}

/// One lane of the ramp: opens observers one after another; each starts observing (its
/// watch first) as soon as it is connected.
async fn ramp_lane(
    st: Rc<State>,
    ramp: Rc<Ramp>,
    minter: Rc<Minter>,
    index: usize,
    first: usize,
    n: usize,
) {
    let source = spawn::source_ip(index);
    loop {
        if st.stop.load(Ordering::Relaxed) {
            return;
        }
        let i = ramp.next.get();
        if i >= n {
            return;
        }
        ramp.next.set(i + 1);
        let g = first + i;
        ramp.connect.borrow_mut().attempted += 1;
        let t0 = std::time::Instant::now();
        let cfg = &st.cfg;
        // A slow reader's small receive buffer makes its backlog reach the gateway's
        // outbox (where conflation happens) within a second or two, not after megabytes.
        let rcvbuf = is_slow(g as u64, cfg.slow_share).then_some(SLOW_RCVBUF);
        let (result, retried) = conn::open_user(
            &cfg.target,
            &minter,
            &cfg.run_id,
            g,
            source,
            cfg.connect_timeout,
            rcvbuf,
        )
        .await;
        if retried {
            ramp.connect.borrow_mut().retries += 1;
        }
        let result = result.and_then(|(c, m)| match m.guid(WATCH_PATH) {
            Some(guid) => Ok((c, guid)),
            None => Err(conn::Failure {
                stage: "manifest",
                reason: "endpoint_not_listed".into(),
                retryable: false,
            }),
        });
        match result {
            Ok((client, guid)) => {
                report::record(&mut ramp.hist.borrow_mut(), t0.elapsed().as_micros() as u64);
                ramp.connect.borrow_mut().established += 1;
                st.bump(|l| l.established += 1);
                let o = Observer {
                    client,
                    guid,
                    g: g as u64,
                };
                ramp.observers
                    .borrow_mut()
                    .push(monoio::spawn(observe(o, st.clone())));
            }
            Err(f) => {
                *ramp
                    .connect
                    .borrow_mut()
                    .failures
                    .entry(f.cause())
                    .or_default() += 1;
                st.bump(|l| l.connect_failed += 1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_observer_reads_at_a_tenth_of_its_push_rate() {
        // 20 NPCs at one decision per 300 ms: a push every 15 ms; slow: one per 150 ms.
        assert_eq!(slow_pause(20), Duration::from_millis(150));
        assert_eq!(slow_pause(1), Duration::from_secs(3));
    }
}
