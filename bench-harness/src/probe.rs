//! The limit probe: raw TCP ping-pong over io_uring with messages of the same size as
//! the WebSocket ones, measured the same way. `probe-server` echoes length-prefixed
//! messages; `probe` loads it (open loop at a fixed rate, or saturation with a window of
//! messages in flight) and writes a report.
//!
//! Why it exists: a ratio is only meaningful against what the machine can do at all.
//! The probe does the least any server can do per message (one length prefix parsed,
//! bytes written back verbatim from the buffer they were read into, with monoio's
//! owned-buffer `read`/`write` straight on io_uring), on the same cores, with the same
//! message sizes and the same latency accounting as `rpc`. ringgate's throughput over the
//! probe's is the share of the machine's limit the gateway reaches.
//!
//! Wire format (`probe_wire_bytes(payload)` bytes per message, both ways):
//! `u32 BE body length | u64 BE message id | zero filler`. A message is as long as the
//! WebSocket frame a client sends for a Bannou request of `payload` bytes: 31-byte
//! header + payload + the frame header (2, 4 or 10 bytes) and the 4-byte mask.
//!
//! Measured like `rpc` (same schedule, timer and report): open loop (`--rate R`), the
//! run's k-th message is due at `k / R` (connection g of C sends k = g, g + C, ...; see
//! `sched`), paced by the nanosecond `sched::Pacer`, and latency runs from that intended
//! send time (no coordinated omission); saturation (`--rate max`): every connection keeps
//! `--window` messages in flight and latency runs from the actual send. Only messages
//! whose intended send time falls in the measured window (after `--warmup`) count. The
//! report is an `RpcReport` (`scenario` and `mode` `"probe"`), so `compare` and the
//! peers script read it like any `rpc` report.
//!
//! The server's WebSocket mode: a connection that opens with `GET ` is upgraded and its
//! frames echoed in place on the same owned-buffer I/O (`serve_ws`,
//! `echo_frames_in_place`), the least a WebSocket echo server can do. `rpc --mode echo`
//! against it is the harness measured against the limit probe (issue 3 asks for ≥ 80 %
//! of the raw rate; `perf/peers.sh`'s `harness` row).
//!
//! `probe --ws` keeps the probe's client (same loops, same I/O, same accounting) but
//! speaks WebSocket: the upgrade, then exactly the frames `rpc --mode echo` sends
//! (masked, 31-byte request header carrying the message id), matched from the echoes
//! (mode `"probe-ws"`). Against the same server as `rpc --mode echo` it separates the
//! harness's client cost from framing's.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt, Splitable};
use monoio::net::TcpStream;
use ringgate::proto::bannou::REQUEST_HEADER_LEN;
use ringgate::proto::frame::{apply_mask, encode_header, parse_header, OpCode, MAX_HEADER_LEN};

use crate::cli::{LoadRate, ProbeArgs, ProbeServerArgs};
use crate::report::{
    self, fmt_counts, ConnectStats, HistData, Percentiles, RequestStats, RpcReport,
};
use crate::sched;

/// Bytes of the length prefix.
pub const LEN_PREFIX: usize = 4;
/// Bytes of the message id at the start of the body.
pub const ID_LEN: usize = 8;
/// Largest body accepted (the server closes beyond).
pub const MAX_BODY: usize = 16 << 20;
/// Read buffer of a probe connection.
const READ_BUF: usize = 64 * 1024;

/// Bytes a WebSocket client frame adds to a message of `n` bytes: the 2-byte header,
/// the extended length (0, 2 or 8 bytes) and the 4-byte mask.
pub fn ws_client_framing(n: usize) -> usize {
    let ext = match n {
        0..=125 => 0,
        126..=65535 => 2,
        _ => 8,
    };
    2 + ext + 4
}

/// Bytes on the wire of one probe message standing for a Bannou request of `payload`
/// bytes (never less than the prefix and the id).
pub fn probe_wire_bytes(payload: usize) -> usize {
    let msg = payload + REQUEST_HEADER_LEN;
    (msg + ws_client_framing(msg)).max(LEN_PREFIX + ID_LEN)
}

/// Appends one message of `wire` bytes (as `probe_wire_bytes` gives) carrying `id`.
pub fn encode_message(out: &mut Vec<u8>, id: u64, wire: usize) {
    let body = wire - LEN_PREFIX;
    out.extend_from_slice(&(body as u32).to_be_bytes());
    out.extend_from_slice(&id.to_be_bytes());
    out.resize(out.len() + body - ID_LEN, 0);
}

/// A body length the server will not accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadLength(pub usize);

/// Length of the complete messages at the start of `buf` (a partial one may follow).
pub fn complete_prefix(buf: &[u8]) -> Result<usize, BadLength> {
    let mut at = 0;
    while buf.len() - at >= LEN_PREFIX {
        let body =
            u32::from_be_bytes(buf[at..at + LEN_PREFIX].try_into().expect("4 bytes")) as usize;
        if !(ID_LEN..=MAX_BODY).contains(&body) {
            return Err(BadLength(body));
        }
        if buf.len() - at < LEN_PREFIX + body {
            break;
        }
        at += LEN_PREFIX + body;
    }
    Ok(at)
}

/// Calls `f(id)` for every complete message at the start of `buf`; returns the bytes
/// they took.
pub fn each_message(buf: &[u8], mut f: impl FnMut(u64)) -> Result<usize, BadLength> {
    let end = complete_prefix(buf)?;
    let mut at = 0;
    while at < end {
        let body =
            u32::from_be_bytes(buf[at..at + LEN_PREFIX].try_into().expect("4 bytes")) as usize;
        let id = u64::from_be_bytes(
            buf[at + LEN_PREFIX..at + LEN_PREFIX + ID_LEN]
                .try_into()
                .expect("8 bytes"),
        );
        f(id);
        at += LEN_PREFIX + body;
    }
    Ok(end)
}

/// Bytes before the message id in a Bannou request header (flags, channel, sequence,
/// GUID): where `--ws` finds the id in an echoed frame.
const WS_ID_AT: usize = REQUEST_HEADER_LEN - ID_LEN;

/// Appends one masked client frame (binary, FIN) carrying a Bannou request header with
/// message id `id` and `payload`: what `rpc --mode echo` sends.
pub fn encode_ws_message(out: &mut Vec<u8>, id: u64, payload: &[u8], mask: [u8; 4]) {
    let mut head = [0u8; MAX_HEADER_LEN];
    let len = REQUEST_HEADER_LEN + payload.len();
    let n = encode_header(&mut head, true, OpCode::Binary, Some(mask), len);
    out.extend_from_slice(&head[..n]);
    let start = out.len();
    out.resize(start + WS_ID_AT, 0);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask, 0);
}

/// Calls `f(id)` for every complete server frame (unmasked, binary, FIN, at least a
/// request header long) at the start of `buf`; returns the bytes they took.
pub fn each_ws_message(buf: &[u8], mut f: impl FnMut(u64)) -> Result<usize, BadLength> {
    let mut at = 0;
    loop {
        let (h, hlen) = match parse_header(&buf[at..]) {
            Ok(Some(v)) => v,
            Ok(None) => return Ok(at),
            Err(_) => return Err(BadLength(0)),
        };
        let len = h.payload_len as usize;
        if h.opcode != OpCode::Binary || !h.fin || h.mask.is_some() || len < REQUEST_HEADER_LEN {
            return Err(BadLength(len));
        }
        if len > MAX_BODY {
            return Err(BadLength(len));
        }
        if buf.len() - at < hlen + len {
            return Ok(at);
        }
        let id_at = at + hlen + WS_ID_AT;
        f(u64::from_be_bytes(
            buf[id_at..id_at + ID_LEN].try_into().expect("8 bytes"),
        ));
        at += hlen + len;
    }
}

/// What a probe connection speaks: the raw length-prefixed probe messages, or (`--ws`)
/// WebSocket frames as `rpc --mode echo` sends them, to a plain WebSocket echo server.
#[derive(Debug, Clone)]
pub struct Codec {
    /// Raw: bytes per message on the wire.
    wire: usize,
    /// WebSocket: the request payload (None: raw).
    ws: Option<Rc<[u8]>>,
}

impl Codec {
    pub fn raw(payload: usize) -> Codec {
        Codec {
            wire: probe_wire_bytes(payload),
            ws: None,
        }
    }

    pub fn ws(payload: usize) -> Codec {
        Codec {
            wire: probe_wire_bytes(payload),
            ws: Some(crate::scenario::rpc::payload(payload).into()),
        }
    }

    /// Appends message `id`; `mask_seed` advances per WebSocket frame.
    fn encode(&self, out: &mut Vec<u8>, id: u64, mask_seed: &mut u32) {
        match &self.ws {
            None => encode_message(out, id, self.wire),
            Some(p) => {
                // xorshift32: a fresh mask per frame, as a client must use.
                let mut x = *mask_seed;
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                *mask_seed = x;
                encode_ws_message(out, id, p, x.to_le_bytes());
            }
        }
    }

    fn each(&self, buf: &[u8], f: impl FnMut(u64)) -> Result<usize, BadLength> {
        match self.ws {
            None => each_message(buf, f),
            Some(_) => each_ws_message(buf, f),
        }
    }
}

// ---------------------------------------------------------------------------------
// Server

pub fn run_server(args: &ProbeServerArgs) -> anyhow::Result<()> {
    let addr: SocketAddr = args.listen.parse()?;
    crate::backends::listen::serve_threads(
        "probe-server",
        addr,
        args.threads,
        |stream, _| async move {
            let _ = serve_conn(stream).await;
        },
    )
}

/// Reads once into `buf`'s spare room (grown when short), after the bytes it already
/// holds; returns how many arrived (0 at EOF). Every probe loop reads this way.
async fn read_more<R: AsyncReadRent>(rd: &mut R, buf: &mut Vec<u8>) -> io::Result<usize> {
    let len = buf.len();
    if buf.capacity() - len < READ_BUF / 4 {
        buf.reserve(READ_BUF);
    }
    let (res, slice) = rd.read(std::mem::take(buf).slice_mut(len..)).await;
    *buf = slice.into_inner();
    res
}

/// One probe connection. Raw: every complete message is written back from the buffer
/// it was read into. A connection that opens with `GET ` (no raw message can: its length
/// would exceed [`MAX_BODY`]) is a WebSocket one, served by [`serve_ws`].
async fn serve_conn(mut stream: TcpStream) -> io::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(READ_BUF);
    while buf.len() < 4 {
        if read_more(&mut stream, &mut buf).await? == 0 {
            return Ok(());
        }
    }
    if buf.starts_with(b"GET ") {
        return serve_ws(stream, buf).await;
    }
    loop {
        let n = match complete_prefix(&buf) {
            Ok(n) => n,
            Err(_) => return Ok(()),
        };
        if n > 0 {
            let (res, slice) = stream.write_all(buf.slice(..n)).await;
            buf = slice.into_inner();
            res?;
            buf.drain(..n);
        }
        if read_more(&mut stream, &mut buf).await? == 0 {
            return Ok(());
        }
    }
}

/// Longest upgrade request the WebSocket mode reads.
const MAX_UPGRADE_HEAD: usize = 16 * 1024;

/// The probe's WebSocket mode: the least a WebSocket echo server can do, on the raw
/// probe's I/O (owned-buffer io_uring reads and writes, one buffer per connection). The
/// upgrade is answered (any path), then each read's complete frames are turned into
/// their echoes in place ([`echo_frames_in_place`]) and written back with one write.
/// This is the server `rpc --mode echo` is measured against for the harness's own cost:
/// the raw probe's rate over this one's is what WebSocket framing plus the harness's
/// client cost.
async fn serve_ws(mut stream: TcpStream, mut buf: Vec<u8>) -> io::Result<()> {
    let n = loop {
        match crate::backends::ws_conn::parse_upgrade_any_path(&buf) {
            Ok(Some((req, n))) => {
                let response = ringgate::proto::handshake::switching_protocols(&req);
                let (res, _) = stream.write_all(response.to_vec()).await;
                res?;
                break n;
            }
            Ok(None) if buf.len() <= MAX_UPGRADE_HEAD => {}
            Ok(None) => return Ok(()),
            Err(e) => {
                let (res, _) = stream.write_all(e.response().to_vec()).await;
                return res.map(|_| ());
            }
        }
        if read_more(&mut stream, &mut buf).await? == 0 {
            return Ok(());
        }
    };
    buf.drain(..n);
    loop {
        let echo = echo_frames_in_place(&mut buf);
        if echo.out > 0 {
            let (res, slice) = stream.write_all(buf.slice(..echo.out)).await;
            buf = slice.into_inner();
            res?;
        }
        if let Some(code) = echo.refuse {
            let (res, _) = stream.write_all(close_frame(code).to_vec()).await;
            res?;
        }
        if echo.end {
            return Ok(());
        }
        buf.drain(..echo.consumed);
        if read_more(&mut stream, &mut buf).await? == 0 {
            return Ok(());
        }
    }
}

/// What [`echo_frames_in_place`] did with a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InPlaceEcho {
    /// Bytes of client frames taken off the start of the buffer.
    pub consumed: usize,
    /// Bytes of server frames now at the start of the buffer, to be sent.
    pub out: usize,
    /// The connection ends once they are sent (a close was echoed, or `refuse`).
    pub end: bool,
    /// A frame broke the protocol (1002) or was too big (1009): after the echoes, a
    /// close frame with this code is sent.
    pub refuse: Option<u16>,
}

/// Turns the complete client frames at the start of `buf` into the server's answers,
/// written over them from the start of `buf`: a data frame (text, binary, continuation)
/// is echoed as it came (same FIN and opcode, payload unmasked), a ping gets its pong, a
/// pong is dropped, a close is echoed and ends the connection. A server frame is four
/// bytes shorter than the client frame it answers (no mask), so the output never
/// overtakes the input. A frame without a mask or with a bad header is refused with
/// 1002, one over [`MAX_BODY`] with 1009. No allocation.
pub fn echo_frames_in_place(buf: &mut [u8]) -> InPlaceEcho {
    let (mut at, mut out) = (0, 0);
    loop {
        let (h, hlen) = match parse_header(&buf[at..]) {
            Ok(Some(v)) => v,
            Ok(None) => break,
            Err(_) => return refuse(at, out, 1002),
        };
        let Some(mask) = h.mask else {
            return refuse(at, out, 1002);
        };
        if h.payload_len > MAX_BODY as u64 {
            return refuse(at, out, 1009);
        }
        let len = h.payload_len as usize;
        if buf.len() - at < hlen + len {
            break;
        }
        let src = at + hlen;
        at = src + len;
        let opcode = match h.opcode {
            OpCode::Pong => continue,
            OpCode::Ping => OpCode::Pong,
            op => op,
        };
        let mut head = [0u8; MAX_HEADER_LEN];
        let n = encode_header(&mut head, h.fin, opcode, None, len);
        buf[out..out + n].copy_from_slice(&head[..n]);
        buf.copy_within(src..src + len, out + n);
        apply_mask(&mut buf[out + n..out + n + len], mask, 0);
        out += n + len;
        if opcode == OpCode::Close {
            return InPlaceEcho {
                consumed: at,
                out,
                end: true,
                refuse: None,
            };
        }
    }
    InPlaceEcho {
        consumed: at,
        out,
        end: false,
        refuse: None,
    }
}

/// Ends [`echo_frames_in_place`] at a frame it cannot take: the echoes before it go out,
/// then a close frame with `code`.
fn refuse(at: usize, out: usize, code: u16) -> InPlaceEcho {
    InPlaceEcho {
        consumed: at,
        out,
        end: true,
        refuse: Some(code),
    }
}

/// The close frame (unmasked) carrying `code`.
pub fn close_frame(code: u16) -> [u8; 4] {
    let c = code.to_be_bytes();
    [0x80 | OpCode::Close as u8, 2, c[0], c[1]]
}

// ---------------------------------------------------------------------------------
// Client

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

    #[test]
    fn wire_size_matches_websocket_frames() {
        // 64-byte payload: 95-byte message, 2-byte header + 4-byte mask.
        assert_eq!(probe_wire_bytes(64), 64 + 31 + 6);
        // 94 + 31 = 125: still the short form.
        assert_eq!(probe_wire_bytes(94), 125 + 6);
        assert_eq!(probe_wire_bytes(95), 126 + 8);
        assert_eq!(probe_wire_bytes(65_535 - 31), 65_535 + 8);
        assert_eq!(probe_wire_bytes(65_536 - 31), 65_536 + 14);
        assert_eq!(probe_wire_bytes(0), 31 + 6);
    }

    #[test]
    fn messages_round_trip_in_pieces() {
        let wire = probe_wire_bytes(200);
        let mut out = Vec::new();
        for id in [7u64, 8, u64::MAX] {
            encode_message(&mut out, id, wire);
        }
        assert_eq!(out.len(), 3 * wire);
        let mut ids = Vec::new();
        assert_eq!(each_message(&out, |id| ids.push(id)), Ok(3 * wire));
        assert_eq!(ids, vec![7, 8, u64::MAX]);
        // A partial message is left for later, whatever the split point.
        for cut in [1, 3, 4, 11, 12, wire - 1, wire + 2] {
            let mut ids = Vec::new();
            let n = each_message(&out[..cut], |id| ids.push(id)).unwrap();
            assert_eq!(n, if cut >= wire { wire } else { 0 }, "cut {cut}");
            assert_eq!(ids.len(), n / wire);
        }
    }

    #[test]
    fn bad_lengths_are_refused() {
        assert_eq!(complete_prefix(&[0, 0, 0, 3, 1, 2, 3]), Err(BadLength(3)));
        let huge = ((MAX_BODY + 1) as u32).to_be_bytes();
        assert_eq!(complete_prefix(&huge), Err(BadLength(MAX_BODY + 1)));
        assert_eq!(complete_prefix(&[]), Ok(0));
    }

    #[test]
    fn ws_messages_are_the_frames_rpc_sends_and_echoes_are_matched_in_pieces() {
        use bytes::BytesMut;
        use ringgate::proto::bannou::RequestHeader;
        use ringgate::proto::ws::{encode_message_into, Decoder, Limits, Message, Role};
        let payload = crate::scenario::rpc::payload(64);
        let mut out = Vec::new();
        for (id, mask) in [(7u64, [1, 2, 3, 4]), (u64::MAX, [9, 8, 7, 6])] {
            encode_ws_message(&mut out, id, &payload, mask);
        }
        assert_eq!(out.len(), 2 * probe_wire_bytes(64));
        // A server reads them as two masked Bannou requests carrying the ids.
        let mut buf = BytesMut::from(&out[..]);
        let mut dec = Decoder::new(Role::Server, Limits::default());
        let mut got = Vec::new();
        while let Some(m) = dec.decode(&mut buf).unwrap() {
            let Message::Binary(b) = m else {
                panic!("{m:?}")
            };
            assert_eq!(&b[REQUEST_HEADER_LEN..], &payload[..]);
            got.push(RequestHeader::decode(&b).unwrap().message_id);
        }
        assert_eq!(got, vec![7, u64::MAX]);
        // Echoes (unmasked, as ws-echo sends them) are matched whatever the split point.
        let mut echo = BytesMut::new();
        for id in [7u64, 8] {
            let mut msg = RequestHeader {
                flags: 0,
                channel: 0,
                sequence: 0,
                guid: [0; 16],
                message_id: id,
            }
            .encode()
            .to_vec();
            msg.extend_from_slice(&payload);
            encode_message_into(&mut echo, OpCode::Binary, &msg, None);
        }
        let one = echo.len() / 2;
        let mut ids = Vec::new();
        assert_eq!(each_ws_message(&echo, |id| ids.push(id)), Ok(echo.len()));
        assert_eq!(ids, vec![7, 8]);
        for cut in [1, 2, 20, one - 1, one, one + 3] {
            let mut ids = Vec::new();
            let n = each_ws_message(&echo[..cut], |id| ids.push(id)).unwrap();
            assert_eq!(n, if cut >= one { one } else { 0 }, "cut {cut}");
            assert_eq!(ids.len(), n / one);
        }
        // A masked or text frame is not an echo of ours.
        assert!(each_ws_message(&out, |_| {}).is_err());
        let mut text = BytesMut::new();
        encode_message_into(&mut text, OpCode::Text, &[b'x'; 40], None);
        assert!(each_ws_message(&text, |_| {}).is_err());
    }

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

    fn client_frame(fin: bool, op: OpCode, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut head = [0u8; MAX_HEADER_LEN];
        let n = encode_header(&mut head, fin, op, Some(mask), payload.len());
        let mut f = head[..n].to_vec();
        let at = f.len();
        f.extend_from_slice(payload);
        apply_mask(&mut f[at..], mask, 0);
        f
    }

    fn server_frame(fin: bool, op: OpCode, payload: &[u8]) -> Vec<u8> {
        let mut head = [0u8; MAX_HEADER_LEN];
        let n = encode_header(&mut head, fin, op, None, payload.len());
        let mut f = head[..n].to_vec();
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn in_place_echo_answers_each_frame_and_leaves_a_partial_one() {
        let big = vec![0xabu8; 300];
        let mut input = Vec::new();
        input.extend(client_frame(true, OpCode::Binary, b"hello", [1, 2, 3, 4]));
        input.extend(client_frame(false, OpCode::Text, b"frag", [5, 6, 7, 8]));
        input.extend(client_frame(true, OpCode::Ping, b"p", [9, 9, 9, 9]));
        input.extend(client_frame(true, OpCode::Pong, b"ignored", [1, 1, 1, 1]));
        input.extend(client_frame(
            true,
            OpCode::Continuation,
            b"ment",
            [2, 2, 2, 2],
        ));
        input.extend(client_frame(true, OpCode::Binary, &big, [3, 1, 4, 1]));
        let complete = input.len();
        let partial = client_frame(true, OpCode::Binary, b"later", [7, 7, 7, 7]);
        input.extend(&partial[..4]);
        let mut want = Vec::new();
        want.extend(server_frame(true, OpCode::Binary, b"hello"));
        want.extend(server_frame(false, OpCode::Text, b"frag"));
        want.extend(server_frame(true, OpCode::Pong, b"p"));
        want.extend(server_frame(true, OpCode::Continuation, b"ment"));
        want.extend(server_frame(true, OpCode::Binary, &big));
        let r = echo_frames_in_place(&mut input);
        assert_eq!(
            r,
            InPlaceEcho {
                consumed: complete,
                out: want.len(),
                end: false,
                refuse: None
            }
        );
        assert_eq!(&input[..r.out], &want[..]);
        // The partial frame's bytes are untouched behind what was consumed.
        assert_eq!(&input[complete..], &partial[..4]);
    }

    #[test]
    fn in_place_echo_echoes_a_close_and_ends() {
        let mut input = client_frame(true, OpCode::Binary, b"x", [1, 2, 3, 4]);
        input.extend(client_frame(
            true,
            OpCode::Close,
            &[0x03, 0xe8],
            [4, 3, 2, 1],
        ));
        input.extend(client_frame(true, OpCode::Binary, b"after", [1, 2, 3, 4]));
        let r = echo_frames_in_place(&mut input);
        let mut want = server_frame(true, OpCode::Binary, b"x");
        want.extend(server_frame(true, OpCode::Close, &[0x03, 0xe8]));
        assert!(r.end && r.refuse.is_none(), "{r:?}");
        assert_eq!(&input[..r.out], &want[..]);
    }

    #[test]
    fn in_place_echo_refuses_unmasked_and_oversized_frames() {
        // Echoes before the bad frame still go out.
        let mut input = client_frame(true, OpCode::Binary, b"ok", [1, 2, 3, 4]);
        input.extend(server_frame(true, OpCode::Binary, b"unmasked"));
        let r = echo_frames_in_place(&mut input);
        assert_eq!(r.refuse, Some(1002));
        assert!(r.end);
        assert_eq!(
            &input[..r.out],
            &server_frame(true, OpCode::Binary, b"ok")[..]
        );
        // Too big: refused from its header alone.
        let mut head = [0u8; MAX_HEADER_LEN];
        let n = encode_header(&mut head, true, OpCode::Binary, Some([1; 4]), MAX_BODY + 1);
        let r = echo_frames_in_place(&mut head[..n]);
        assert_eq!((r.out, r.refuse, r.end), (0, Some(1009), true));
        // A reserved opcode is a bad header.
        let mut bad = [0x83u8, 0x80, 0, 0, 0, 0];
        assert_eq!(echo_frames_in_place(&mut bad).refuse, Some(1002));
        assert_eq!(close_frame(1009), [0x88, 2, 0x03, 0xf1]);
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
