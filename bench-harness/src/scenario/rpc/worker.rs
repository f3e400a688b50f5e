//! An `rpc` worker process: T threads, each a monoio runtime (`sched::client_runtime`,
//! io_uring without completion interrupts) holding its share of the connections. Each
//! thread opens its connections (the ramp, in lanes), waits for the coordinator's `go`,
//! then runs every connection's loop (`conn_loop`). Threads record into their own
//! HdrHistograms; the worker merges theirs and ships them to the parent as `HistData`
//! (`protocol`: a progress line with the last second's histogram every second, the final
//! histograms at the end).
//!
//! Why it exists: this is the side of a run that makes the load; it is a process of its
//! own so that the coordinator can spread connections over source addresses and cores.

use std::cell::{Cell, RefCell};
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use ringgate::client::{ConnectOptions, TokenVia};

use super::conn_loop::run_conn;
use super::protocol::{Live, Msg, WorkerReport};
use super::request::payload;
use super::state::{Control, Ready, RunCfg, ThreadState};
use crate::cli::{RpcArgs, RpcMode};
use crate::conn;
use crate::jwt::Minter;
use crate::report::{self, ConnectStats, HistData, RequestStats};
use crate::sched::{mono_ns, unix_ns, Pacer};
use crate::spawn;
use crate::target::Target;

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

pub(super) fn worker(args: &RpcArgs, index: usize) -> anyhow::Result<ExitCode> {
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
            tls: cfg.target.tls.clone(),
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
