//! A `fanout` worker process: one thread (a monoio runtime, io_uring without completion
//! interrupts) that opens its share of the subscribers from its own 127.0.0.x address
//! (`concurrency` lanes, optionally no faster than `--open-rate`), says ready, then
//! receives on all of them; between steps the coordinator asks `report <step>` and gets
//! that step's count and latency histogram back (`protocol`).
//!
//! Why it exists: subscribers are spread over processes by the harness's `spawn` plan
//! (one process holds at most 20,000 descriptors, one source address ~28,000 ports);
//! this is the process side of that, kept single-threaded since a delivery's whole cost
//! is one parse and one histogram record.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::protocol::{parse_report_line, Msg};
use super::sub::{self, Recorder};
use crate::cli::FanoutArgs;
use crate::report::{self, ConnectStats, HistData};
use crate::spawn;

pub(super) fn worker(args: &FanoutArgs, index: usize) -> anyhow::Result<ExitCode> {
    let fatal = |error: String| {
        spawn::emit(&Msg::Fatal { error });
        Ok(ExitCode::from(2))
    };
    let (soft, _) = spawn::raise_nofile();
    if args.subs + spawn::FD_HEADROOM > soft as usize {
        return fatal(format!(
            "{} subscribers + {} need more than RLIMIT_NOFILE {soft}",
            args.subs,
            spawn::FD_HEADROOM
        ));
    }
    let cfg = match super::sub_cfg(args) {
        Ok(c) => c,
        Err(e) => return fatal(format!("{e:#}")),
    };
    let (stop, lines) = spawn::control_lines();
    let mut rt = crate::sched::client_runtime()?;
    let n = args.subs;
    let first = args.worker.worker_first;
    let concurrency = args.concurrency.max(1);
    // Seconds between two opens of this worker (0: as fast as the lanes go).
    let open_gap = args.open_rate.map_or(0.0, |r| 1.0 / r.max(1e-3));
    rt.block_on(async move {
        let cfg = Rc::new(cfg);
        let rec = Rc::new(Recorder::default());
        let dropped: Rc<std::cell::RefCell<BTreeMap<String, u64>>> = Rc::default();
        let next = Rc::new(Cell::new(0usize));
        let established = Rc::new(Cell::new(0u64));
        let connect = Rc::new(std::cell::RefCell::new(ConnectStats::default()));
        let hist = Rc::new(std::cell::RefCell::new(report::new_histogram()));
        let subs: Rc<std::cell::RefCell<Vec<sub::Sub>>> = Rc::default();
        let started = Instant::now();
        let source = spawn::source_ip(index);
        let lanes: Vec<_> = (0..concurrency.min(n.max(1)))
            .map(|_| {
                let (cfg, next, established, connect, hist, subs) = (
                    cfg.clone(),
                    next.clone(),
                    established.clone(),
                    connect.clone(),
                    hist.clone(),
                    subs.clone(),
                );
                let stop = stop.clone();
                monoio::spawn(async move {
                    loop {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        let i = next.get();
                        if i >= n {
                            return;
                        }
                        next.set(i + 1);
                        if open_gap > 0.0 {
                            let due = started + Duration::from_secs_f64(open_gap * i as f64);
                            monoio::time::sleep(due.saturating_duration_since(Instant::now()))
                                .await;
                        }
                        connect.borrow_mut().attempted += 1;
                        let t0 = Instant::now();
                        let mut r = sub::open(&cfg, source, first + i).await;
                        if matches!(&r, Err(f) if f.retryable) {
                            connect.borrow_mut().retries += 1;
                            monoio::time::sleep(Duration::from_millis(100)).await;
                            r = sub::open(&cfg, source, first + i).await;
                        }
                        match r {
                            Ok(s) => {
                                report::record(
                                    &mut hist.borrow_mut(),
                                    t0.elapsed().as_micros() as u64,
                                );
                                connect.borrow_mut().established += 1;
                                established.set(established.get() + 1);
                                subs.borrow_mut().push(s);
                            }
                            Err(f) => {
                                *connect.borrow_mut().failures.entry(f.cause()).or_default() += 1
                            }
                        }
                    }
                })
            })
            .collect();
        // Progress while the lanes run.
        {
            let (connect, stop) = (connect.clone(), stop.clone());
            let next = next.clone();
            monoio::spawn(async move {
                while next.get() < n && !stop.load(Ordering::Relaxed) {
                    monoio::time::sleep(Duration::from_millis(500)).await;
                    let c = connect.borrow();
                    spawn::emit(&Msg::Progress {
                        established: c.established,
                        failed: c.failed(),
                    });
                }
            });
        }
        for l in lanes {
            l.await;
        }
        let mut c = connect.borrow().clone();
        c.connect_us = HistData::from_histogram(&hist.borrow());
        spawn::emit(&Msg::Ready { connect: c });
        let target = cfg.target;
        for s in std::mem::take(&mut *subs.borrow_mut()) {
            let (rec, dropped) = (rec.clone(), dropped.clone());
            monoio::spawn(async move {
                let why = sub::receive(s, target, &rec).await;
                *dropped.borrow_mut().entry(why).or_default() += 1;
            });
        }
        // Control: answer `report <step>` until stdin closes.
        while !stop.load(Ordering::Relaxed) {
            monoio::time::sleep(Duration::from_millis(5)).await;
            while let Ok(line) = lines.try_recv() {
                if let Some(step) = parse_report_line(&line) {
                    let (delivered, h) = rec.take(step);
                    spawn::emit(&Msg::Step {
                        step,
                        delivered,
                        latency: HistData::from_histogram(&h),
                        dropped: dropped.borrow().clone(),
                        late: rec.late.get(),
                        unparsable: rec.unparsable.get(),
                    });
                }
            }
        }
    });
    // Exit without tearing down thousands of tasks; the kernel closes the sockets.
    std::process::exit(0)
}
