//! `probe`: loads a probe server (or, with `--ws`, any WebSocket echo server) and writes
//! an `RpcReport` (`scenario` and `mode` `"probe"`, or mode `"probe-ws"`), so `compare`
//! and the peers script read it like any `rpc` report.
//!
//! Why it exists: to be comparable with `rpc`, the load must be measured like `rpc`'s
//! (same schedule, timer and report): open loop (`--rate R`), the run's k-th message is
//! due at `k / R` (connection g of C sends k = g, g + C, ...; see `sched`), paced by the
//! nanosecond `sched::Pacer`, and latency runs from that intended send time (no
//! coordinated omission); saturation (`--rate max`): every connection keeps `--window`
//! messages in flight and latency runs from the actual send. Only messages whose intended
//! send time falls in the measured window (after `--warmup`) count. `probe --ws` keeps
//! this client (same loops, same I/O, same accounting) but speaks WebSocket; against the
//! same server as `rpc --mode echo` it separates the harness's client cost from
//! framing's.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt, Splitable};
use monoio::net::TcpStream;

use super::wire::{probe_wire_bytes, read_more, Codec, READ_BUF};
use crate::cli::{LoadRate, ProbeArgs};
use crate::report::{
    self, fmt_counts, ConnectStats, HistData, Percentiles, RequestStats, RpcReport,
};
use crate::sched;

/// What one thread measured.
struct ThreadResult {
    connect: ConnectStats,
    requests: RequestStats,
    latency: Histogram<u64>,
    service: Histogram<u64>,
    send_lag: Histogram<u64>,
}

/// The run's timing, shared by a thread's tasks (CLOCK_MONOTONIC ns, see `sched`).
#[derive(Debug, Clone, Copy)]
struct Window {
    /// Start of the schedule.
    t0: u64,
    /// Offset where measuring starts (the warmup's end).
    measure_from: u64,
    /// Offset where sending stops.
    end: u64,
}

impl Window {
    fn measured(&self, off: u64) -> bool {
        (self.measure_from..self.end).contains(&off)
    }
}

pub fn run_client(args: &ProbeArgs) -> anyhow::Result<ExitCode> {
    let addr: SocketAddr = args.server.parse()?;
    if args.conns == 0 {
        anyhow::bail!("--conns must be at least 1");
    }
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, args.conns);
    let wire = probe_wire_bytes(args.payload);
    let window = args.window.max(1);
    eprintln!(
        "probe: {} connections to {addr} on {threads} thread(s), rate {}, warmup {} s + {} s, \
         {wire} bytes per message",
        args.conns,
        match args.rate {
            LoadRate::Max => format!("max (window {window})"),
            LoadRate::PerSec(r) => format!("{r}/s"),
        },
        args.warmup,
        args.duration
    );
    // Connections are numbered globally (g of conns), as `rpc` numbers them, so that
    // the schedule is the same: the run's k-th message goes out at k / rate.
    let barrier = Arc::new(Barrier::new(threads));
    let t0_cell = Arc::new(std::sync::OnceLock::new());
    let started_unix_ms = Arc::new(std::sync::OnceLock::new());
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let first = t * (args.conns / threads) + t.min(args.conns % threads);
            let n = args.conns / threads + usize::from(t < args.conns % threads);
            let (barrier, t0_cell, started) =
                (barrier.clone(), t0_cell.clone(), started_unix_ms.clone());
            let args = args.clone();
            std::thread::Builder::new()
                .name(format!("probe-{t}"))
                .spawn(move || -> anyhow::Result<ThreadResult> {
                    let mut rt = crate::sched::client_runtime()?;
                    let r = rt.block_on(async move {
                        let conns = connect_all(addr, n, args.ws).await;
                        // All threads start the schedule at the same instant.
                        barrier.wait();
                        let t0 = *t0_cell.get_or_init(|| sched::mono_ns() + 1_000_000);
                        started.get_or_init(|| sched::unix_ns() / 1_000_000 + 1);
                        let w = Window {
                            t0,
                            measure_from: (args.warmup * 1e9) as u64,
                            end: ((args.warmup + args.duration) * 1e9) as u64,
                        };
                        let codec = if args.ws {
                            Codec::ws(args.payload)
                        } else {
                            Codec::raw(args.payload)
                        };
                        client_thread(conns, first, &args, w, codec).await
                    });
                    // Connections and tasks may still be pending: skip the teardown.
                    std::mem::forget(rt);
                    r
                })
        })
        .collect::<Result<_, _>>()?;
    let mut connect = ConnectStats::default();
    let mut requests = RequestStats::default();
    let (mut lat, mut svc, mut lag) = (
        report::new_histogram(),
        report::new_histogram(),
        report::new_histogram(),
    );
    let mut worker_errors = Vec::new();
    for (i, h) in handles.into_iter().enumerate() {
        match h.join() {
            Ok(Ok(r)) => {
                connect.merge(&r.connect);
                requests.merge(&r.requests);
                let _ = lat.add(&r.latency);
                let _ = svc.add(&r.service);
                let _ = lag.add(&r.send_lag);
            }
            Ok(Err(e)) => worker_errors.push(format!("thread {i}: {e:#}")),
            Err(_) => worker_errors.push(format!("thread {i} panicked")),
        }
    }
    let ok = connect.established == args.conns as u64
        && requests.failed() == 0
        && requests.conn_drops.is_empty()
        && worker_errors.is_empty();
    let r = RpcReport {
        scenario: "probe".into(),
        schema_version: 1,
        label: if args.ws {
            format!("ws probe (WebSocket frames, {wire} B)")
        } else {
            format!("limit probe (raw TCP, {wire} B)")
        },
        started_unix_ms: started_unix_ms.get().copied().unwrap_or(0),
        mode: if args.ws { "probe-ws" } else { "probe" }.into(),
        gateway_url: format!("tcp://{addr}"),
        endpoint: None,
        conns: args.conns,
        procs: 1,
        per_proc: vec![args.conns],
        threads_per_proc: threads,
        rate_target_per_sec: match args.rate {
            LoadRate::Max => None,
            LoadRate::PerSec(r) => Some(r),
        },
        window: (args.rate == LoadRate::Max).then_some(window),
        payload_bytes: args.payload,
        warmup_secs: args.warmup,
        duration_secs: args.duration,
        timeout_ms: args.timeout_ms,
        connect_us: Percentiles::of(&connect.connect_us.to_histogram()),
        connect,
        throughput_per_sec: requests.ok as f64 / args.duration.max(1e-9),
        send_rate_per_sec: requests.sent as f64 / args.duration.max(1e-9),
        requests,
        latency_us: Percentiles::of(&lat),
        latency_hist: HistData::from_histogram(&lat),
        service_time_us: Percentiles::of(&svc),
        send_lag_us: Percentiles::of(&lag),
        gateway: None,
        worker_errors,
        ok,
    };
    print_table(&r);
    if let Some(path) = &args.json {
        report::write_json(path, &r)?;
        eprintln!("report written to {}", path.display());
    }
    Ok(if r.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_table(r: &RpcReport) {
    let q = &r.requests;
    println!();
    println!(
        "probe  {} conns -> {}  rate {}  payload {} B ({} B per message on the wire)",
        r.conns,
        r.gateway_url,
        r.rate_target_per_sec.map_or_else(
            || format!("max (window {})", r.window.unwrap_or(0)),
            |x| format!("{x}/s")
        ),
        r.payload_bytes,
        probe_wire_bytes(r.payload_bytes)
    );
    println!(
        "  throughput   {:.0} msg/s over {:.1} s (sent {:.0}/s)",
        r.throughput_per_sec, r.duration_secs, r.send_rate_per_sec
    );
    println!("  latency      {}", r.latency_us.row_us());
    println!("  service      {}", r.service_time_us.row_us());
    println!("  send lag     {}", r.send_lag_us.row_us());
    println!(
        "  messages     sent {}, echoed {}, timeouts {}, lost {}; connected {} / {}; drops {}",
        q.sent,
        q.ok,
        q.timeouts,
        q.lost,
        r.connect.established,
        r.conns,
        fmt_counts(&q.conn_drops)
    );
    for e in &r.worker_errors {
        println!("  ERROR: {e}");
    }
    println!("  result: {}", if r.ok { "ok" } else { "FAILED" });
}

/// Opens `n` connections, with the WebSocket upgrade when `ws` (connect latency and
/// failures recorded).
async fn connect_all(addr: SocketAddr, n: usize, ws: bool) -> (Vec<TcpStream>, ConnectStats) {
    let mut stats = ConnectStats::default();
    let mut h = report::new_histogram();
    let mut streams = Vec::with_capacity(n);
    for _ in 0..n {
        stats.attempted += 1;
        let t = Instant::now();
        let opened = match TcpStream::connect_addr(addr).await {
            Ok(s) if ws => upgrade(s, addr).await,
            Ok(s) => Ok(s),
            Err(e) => Err(io_cause("tcp", &e)),
        };
        match opened {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                report::record(&mut h, t.elapsed().as_micros() as u64);
                stats.established += 1;
                streams.push(s);
            }
            Err(cause) => *stats.failures.entry(cause).or_default() += 1,
        }
    }
    stats.connect_us = HistData::from_histogram(&h);
    (streams, stats)
}

/// The WebSocket upgrade (`--ws`): request, then the `101` head; the server must send
/// nothing more before the first frame.
async fn upgrade(mut s: TcpStream, addr: SocketAddr) -> Result<TcpStream, String> {
    let req = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    let (res, _) = s.write_all(req.into_bytes()).await;
    res.map_err(|e| io_cause("upgrade", &e))?;
    let mut head: Vec<u8> = Vec::with_capacity(1024);
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 {
            return Err("upgrade:head_too_large".into());
        }
        // One byte at a time: nothing after the head may be consumed (a few hundred
        // bytes, once per connection).
        let (res, b) = s.read(Vec::with_capacity(1)).await;
        match res {
            Ok(0) => return Err("upgrade:eof".into()),
            Ok(_) => head.extend_from_slice(&b),
            Err(e) => return Err(io_cause("upgrade", &e)),
        }
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        return Err("upgrade:refused".into());
    }
    Ok(s)
}

/// A thread's live counters.
struct Shared {
    w: Window,
    pacer: Rc<sched::Pacer>,
    requests: RefCell<RequestStats>,
    latency: RefCell<Histogram<u64>>,
    service: RefCell<Histogram<u64>>,
    send_lag: RefCell<Histogram<u64>>,
    /// Measured messages sent and not yet echoed (or written off).
    outstanding: Cell<u64>,
    /// Write halves whose schedule is over: dropping one would shut the socket down
    /// (monoio's `OwnedWriteHalf` does) while echoes are still on their way.
    parked: RefCell<Vec<monoio::net::tcp::TcpOwnedWriteHalf>>,
}

/// One message in flight: id, intended and actual send times (absolute ns).
#[derive(Debug, Clone, Copy)]
struct Sent {
    id: u64,
    intended: u64,
    actual: u64,
}

impl Shared {
    /// A message went out; `open_loop`: it had an intended time of its own (the send
    /// lag is only meaningful then, as in `rpc`).
    fn sent(&self, s: &Sent, open_loop: bool) {
        if self.w.measured(s.intended - self.w.t0) {
            self.requests.borrow_mut().sent += 1;
            self.outstanding.set(self.outstanding.get() + 1);
            if open_loop {
                report::record(
                    &mut self.send_lag.borrow_mut(),
                    (s.actual - s.intended) / 1000,
                );
            }
        }
    }

    fn echoed(&self, s: &Sent, now: u64) {
        if self.w.measured(s.intended - self.w.t0) {
            self.requests.borrow_mut().ok += 1;
            self.outstanding.set(self.outstanding.get() - 1);
            report::record(&mut self.latency.borrow_mut(), (now - s.intended) / 1000);
            report::record(&mut self.service.borrow_mut(), (now - s.actual) / 1000);
        }
    }

    /// A connection ended with these messages in flight.
    fn dropped(&self, cause: String, in_flight: impl Iterator<Item = Sent>) {
        let mut lost = 0;
        for s in in_flight {
            if self.w.measured(s.intended - self.w.t0) {
                lost += 1;
            }
        }
        let mut r = self.requests.borrow_mut();
        r.lost += lost;
        *r.conn_drops.entry(cause).or_default() += 1;
        self.outstanding.set(self.outstanding.get() - lost);
    }
}

fn io_cause(stage: &str, e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => format!("{stage}:refused"),
        Some(libc::ECONNRESET) => format!("{stage}:reset"),
        Some(libc::EPIPE) => format!("{stage}:broken_pipe"),
        Some(n) => format!("{stage}:errno_{n}"),
        None => format!("{stage}:{:?}", e.kind()).to_lowercase(),
    }
}

async fn client_thread(
    (streams, connect): (Vec<TcpStream>, ConnectStats),
    first: usize,
    args: &ProbeArgs,
    w: Window,
    codec: Codec,
) -> anyhow::Result<ThreadResult> {
    let pacer = sched::Pacer::new()?;
    monoio::spawn(pacer.clone().drive());
    let sh = Rc::new(Shared {
        w,
        pacer,
        requests: RefCell::default(),
        latency: RefCell::new(report::new_histogram()),
        service: RefCell::new(report::new_histogram()),
        send_lag: RefCell::new(report::new_histogram()),
        outstanding: Cell::new(0),
        parked: RefCell::default(),
    });
    for (i, s) in streams.into_iter().enumerate() {
        let g = (first + i) as u64;
        match args.rate {
            LoadRate::Max => {
                monoio::spawn(closed_loop(
                    s,
                    args.window.max(1),
                    codec.clone(),
                    args.write_per_message,
                    sh.clone(),
                ));
            }
            LoadRate::PerSec(r) => {
                let due = sched::Due::new(sched::Schedule::new(r, args.conns as u64, g), w.end);
                let in_flight = Rc::new(RefCell::new(VecDeque::new()));
                let (rd, wr) = s.into_split();
                monoio::spawn(open_loop_writer(
                    wr,
                    due,
                    in_flight.clone(),
                    codec.clone(),
                    args.write_per_message,
                    sh.clone(),
                ));
                monoio::spawn(open_loop_reader(rd, in_flight, codec.clone(), sh.clone()));
            }
        }
    }
    // Until the end of the schedule, then until every measured message is echoed (or
    // the timeout passes: the rest are timeouts).
    sh.pacer.sleep_until(w.t0 + w.end).await;
    let deadline = sched::mono_ns() + args.timeout_ms * 1_000_000;
    while sh.outstanding.get() > 0 && sched::mono_ns() < deadline {
        monoio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut requests = sh.requests.borrow().clone();
    requests.timeouts += sh.outstanding.get();
    let r = ThreadResult {
        connect,
        requests,
        latency: sh.latency.borrow().clone(),
        service: sh.service.borrow().clone(),
        send_lag: sh.send_lag.borrow().clone(),
    };
    Ok(r)
}

type InFlight = Rc<RefCell<VecDeque<Sent>>>;

/// Sends each message at its intended time (all the overdue ones at once after a stall,
/// with their original times), until the schedule ends.
async fn open_loop_writer(
    mut wr: monoio::net::tcp::TcpOwnedWriteHalf,
    mut due: sched::Due,
    in_flight: InFlight,
    codec: Codec,
    per_message: bool,
    sh: Rc<Shared>,
) {
    let t0 = sh.w.t0;
    let mut out: Vec<u8> = Vec::with_capacity(codec.wire * 4);
    let mut mask_seed = 0x9e37_79b9u32;
    let mut batch: Vec<Sent> = Vec::new();
    'run: while let Some(off) = due.peek() {
        sh.pacer.sleep_until(t0 + off).await;
        loop {
            // Everything due goes in one write, or (`--write-per-message`) one each.
            let now = sched::mono_ns();
            out.clear();
            batch.clear();
            while let Some((j, intended)) = due.next_due(now - t0) {
                codec.encode(&mut out, j, &mut mask_seed);
                batch.push(Sent {
                    id: j,
                    intended: t0 + intended,
                    actual: now,
                });
                if per_message {
                    break;
                }
            }
            if batch.is_empty() {
                break;
            }
            {
                let mut fl = in_flight.borrow_mut();
                for m in &batch {
                    sh.sent(m, true);
                    fl.push_back(*m);
                }
            }
            let (res, o) = wr.write_all(out).await;
            out = o;
            if res.is_err() {
                // The reader sees the connection end and accounts for what was in flight.
                break 'run;
            }
        }
    }
    sh.parked.borrow_mut().push(wr);
}

async fn open_loop_reader(
    mut rd: monoio::net::tcp::TcpOwnedReadHalf,
    in_flight: InFlight,
    codec: Codec,
    sh: Rc<Shared>,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(READ_BUF);
    let cause = loop {
        match read_more(&mut rd, &mut buf).await {
            Ok(0) => break "run:eof".to_string(),
            Ok(_) => {}
            Err(e) => break io_cause("run", &e),
        }
        let now = sched::mono_ns();
        let mut fl = in_flight.borrow_mut();
        let mut bad = false;
        let used = codec.each(&buf, |id| match fl.pop_front() {
            Some(s) if s.id == id => sh.echoed(&s, now),
            _ => bad = true,
        });
        drop(fl);
        match used {
            Ok(n) if !bad => {
                buf.drain(..n);
            }
            _ => break "run:bad_echo".to_string(),
        }
    };
    let left: Vec<Sent> = in_flight.borrow_mut().drain(..).collect();
    sh.dropped(cause, left.into_iter());
}

/// Saturation: keep `window` messages in flight on one connection until the schedule's
/// end; latency runs from the actual send (intended = actual).
async fn closed_loop(
    mut s: TcpStream,
    window: usize,
    codec: Codec,
    per_message: bool,
    sh: Rc<Shared>,
) {
    let t0 = sh.w.t0;
    let end = t0 + sh.w.end;
    let mut in_flight: VecDeque<Sent> = VecDeque::with_capacity(window);
    let mut next_id = 0u64;
    let mut out: Vec<u8> = Vec::with_capacity(codec.wire * window);
    let mut mask_seed = 0x9e37_79b9u32;
    let mut buf: Vec<u8> = Vec::with_capacity(READ_BUF);
    let mut to_send = window;
    // Wait for the common start.
    sh.pacer.sleep_until(t0).await;
    let cause = loop {
        let now = sched::mono_ns();
        if now >= end {
            to_send = 0;
            if in_flight.is_empty() {
                return;
            }
        }
        if to_send > 0 {
            let mut failed = None;
            while to_send > 0 {
                // All freed slots in one write, or (`--write-per-message`) one each.
                let n = if per_message { 1 } else { to_send };
                out.clear();
                for _ in 0..n {
                    codec.encode(&mut out, next_id, &mut mask_seed);
                    let m = Sent {
                        id: next_id,
                        intended: now,
                        actual: now,
                    };
                    sh.sent(&m, false);
                    in_flight.push_back(m);
                    next_id += 1;
                }
                to_send -= n;
                let (res, o) = s.write_all(out).await;
                out = o;
                if let Err(e) = res {
                    failed = Some(io_cause("run", &e));
                    break;
                }
            }
            if let Some(cause) = failed {
                break cause;
            }
        }
        match read_more(&mut s, &mut buf).await {
            Ok(0) => break "run:eof".to_string(),
            Ok(_) => {}
            Err(e) => break io_cause("run", &e),
        }
        let now = sched::mono_ns();
        let mut bad = false;
        let used = codec.each(&buf, |id| match in_flight.pop_front() {
            Some(m) if m.id == id => {
                sh.echoed(&m, now);
                to_send += 1;
            }
            _ => bad = true,
        });
        match used {
            Ok(n) if !bad => {
                buf.drain(..n);
            }
            _ => break "run:bad_echo".to_string(),
        }
    };
    sh.dropped(cause, in_flight.into_iter());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::server::serve_conn;

    /// Both loops (open at 2000/s, closed with a window of 2) over 4 connections to a
    /// server on a free port: every measured message echoed, none lost.
    fn load_both_ways(addr: SocketAddr, ws: bool) {
        for rate in [LoadRate::PerSec(2000.0), LoadRate::Max] {
            let args = ProbeArgs {
                server: addr.to_string(),
                conns: 4,
                rate,
                duration: 0.3,
                warmup: 0.1,
                payload: 64,
                window: 2,
                threads: Some(1),
                timeout_ms: 2000,
                write_per_message: rate == LoadRate::Max,
                ws,
                json: None,
            };
            let r = std::thread::spawn(move || {
                let mut rt = crate::sched::client_runtime().unwrap();
                let r = rt.block_on(async {
                    let conns = connect_all(addr, 4, ws).await;
                    let w = Window {
                        t0: sched::mono_ns() + 1_000_000,
                        measure_from: 100_000_000,
                        end: 400_000_000,
                    };
                    let codec = if ws { Codec::ws(64) } else { Codec::raw(64) };
                    client_thread(conns, 0, &args, w, codec).await
                });
                std::mem::forget(rt);
                r.unwrap()
            })
            .join()
            .unwrap();
            assert_eq!(r.connect.established, 4);
            let q = &r.requests;
            assert!(q.conn_drops.is_empty(), "{q:?}");
            assert_eq!((q.timeouts, q.lost), (0, 0), "{q:?}");
            assert_eq!(q.sent, q.ok);
            assert_eq!(r.latency.len(), q.ok);
            if rate != LoadRate::Max {
                // 2000/s over the 0.3 s measured window: exactly 600 intended times.
                assert_eq!(q.sent, 600);
            } else {
                assert!(q.sent > 100, "{}", q.sent);
            }
        }
    }

    fn listener() -> (SocketAddr, std::net::TcpListener) {
        let l = crate::backends::listen::bind_std(
            "127.0.0.1:0".parse().unwrap(),
            &monoio::net::ListenerOpts::new(),
        )
        .unwrap();
        let addr = l.local_addr().unwrap().as_socket().unwrap();
        (addr, std::net::TcpListener::from(l))
    }

    #[test]
    fn probe_against_probe_server() {
        let (addr, l) = listener();
        std::thread::spawn(move || {
            crate::backends::listen::accept_loop(l, |s, _| async move {
                let _ = serve_conn(s).await;
            })
        });
        load_both_ways(addr, false);
    }

    /// The probe server's WebSocket mode, serving the frames `rpc --mode echo` and
    /// `probe --ws` send (the same as ws-echo would).
    #[test]
    fn ws_probe_against_the_probe_servers_websocket_mode() {
        let (addr, l) = listener();
        std::thread::spawn(move || {
            crate::backends::listen::accept_loop(l, |s, _| async move {
                let _ = serve_conn(s).await;
            })
        });
        load_both_ways(addr, true);
    }

    #[test]
    fn ws_probe_against_ws_echo() {
        let (addr, l) = listener();
        std::thread::spawn(move || {
            crate::backends::listen::accept_loop(l, |s, b| async move {
                let _ = crate::backends::ws_echo::serve_conn(s, b).await;
            })
        });
        load_both_ways(addr, true);
    }
}
