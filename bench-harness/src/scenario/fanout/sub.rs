//! One subscriber, per target: open it (connect, upgrade, subscribe the way that server
//! wants) and then receive until told to stop, handing each delivery's stamp and the
//! time of the read it came in to the thread's `Recorder`.
//!
//! Why it exists: the five targets differ only here — in how a client subscribes and
//! how a delivery is framed — so the worker, the steps and the report are shared.
//!
//! * `raw`: plain TCP; the server's first 4-byte length prefix (an empty message) says it
//!   accepted us; then `u32 length (big-endian) + payload` per message.
//! * `nats`: WebSocket; `CONNECT`, `SUB bench 1`, `PING` in one frame, subscribed at the
//!   `PONG`; `MSG` lines parsed across frames (`nats::Parser`); `PING` answered.
//! * `socketio`: WebSocket on `/socket.io/?EIO=4&transport=websocket`; `0{…}` → `40`,
//!   subscribed at the server's `40{…}`; `42["msg","…"]` deliveries; `2` answered `3`.
//! * `pushpin`: WebSocket; subscribed once the 101 arrives (the GRIP backend answered the
//!   OPEN with the subscription before Pushpin accepts); deliveries are text frames.
//! * `ringgate`: a Bannou client (`ringgate::client`, via `conn::open`), token and
//!   manifest; calls the GUID of `/fanout/watch` with `{}` and needs code 0; deliveries
//!   are push frames whose payload is the published bytes.

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Buf;
use hdrhistogram::Histogram;
use ringgate::client::{Client, ConnectOptions, Incoming, TokenVia};
use ringgate::proto::frame::OpCode;
use ringgate::proto::ws::Message;

use super::nats;
use super::socketio::{self, Packet};
use super::stamp::{self, Stamp};
use super::ws::{upgrade_failure, Socket, Ws};
use super::FanoutTarget;
use crate::conn::{self, Failure};
use crate::jwt::Minter;
use crate::report;
use crate::sched::unix_ns;

/// One step's deliveries so far: their count and latency histogram.
type StepAcc = (u64, Histogram<u64>);

/// What one thread's subscribers received, by step.
#[derive(Default)]
pub struct Recorder {
    steps: RefCell<Vec<Option<StepAcc>>>,
    /// Steps already reported: later deliveries of theirs are counted as late only.
    reported_below: std::cell::Cell<u32>,
    pub late: std::cell::Cell<u64>,
    pub unparsable: std::cell::Cell<u64>,
}

impl Recorder {
    /// One delivery, received at `now_ns` (unix).
    pub fn record(&self, s: Stamp, now_ns: u64) {
        if s.step < self.reported_below.get() {
            self.late.set(self.late.get() + 1);
            return;
        }
        let mut steps = self.steps.borrow_mut();
        let i = s.step as usize;
        if steps.len() <= i {
            steps.resize_with(i + 1, || None);
        }
        let (n, h) = steps[i].get_or_insert_with(|| (0, report::new_histogram()));
        *n += 1;
        report::record(h, now_ns.saturating_sub(s.t_ns) / 1000);
    }

    /// Deliveries that carried no stamp.
    pub fn record_unparsable(&self) {
        self.unparsable.set(self.unparsable.get() + 1);
    }

    /// Takes step `step`'s count and histogram; later deliveries of it count as late.
    pub fn take(&self, step: u32) -> (u64, Histogram<u64>) {
        self.reported_below
            .set(self.reported_below.get().max(step + 1));
        let mut steps = self.steps.borrow_mut();
        steps
            .get_mut(step as usize)
            .and_then(Option::take)
            .unwrap_or_else(|| (0, report::new_histogram()))
    }
}

/// Where and how subscribers connect.
pub struct SubCfg {
    pub target: FanoutTarget,
    pub addr: SocketAddr,
    /// The upgrade path (ringgate: its config's; the peers: their own).
    pub path: String,
    /// ringgate: token signer and the topic endpoint to call.
    pub minter: Option<Minter>,
    pub endpoint: String,
    pub run_id: String,
    pub timeout: Duration,
}

/// An open, subscribed subscriber.
pub enum Sub {
    Raw(Socket),
    Ws(Box<Ws>),
    Bannou(Box<Client>),
}

fn io_failure(stage: &'static str, e: &std::io::Error) -> Failure {
    Failure {
        stage,
        reason: format!("{:?}", e.kind()).to_lowercase(),
        retryable: false,
    }
}

/// Opens and subscribes subscriber number `g` from `source`, within `cfg.timeout`.
pub async fn open(cfg: &SubCfg, source: IpAddr, g: usize) -> Result<Sub, Failure> {
    match monoio::time::timeout(cfg.timeout, open_inner(cfg, source, g)).await {
        Ok(r) => r,
        Err(_) => Err(Failure {
            stage: "subscribe",
            reason: "timeout".into(),
            retryable: false,
        }),
    }
}

async fn open_inner(cfg: &SubCfg, source: IpAddr, g: usize) -> Result<Sub, Failure> {
    if cfg.target == FanoutTarget::Ringgate {
        return open_ringgate(cfg, source, g).await;
    }
    let stream = conn::tcp_connect(cfg.addr, Some(source), None)
        .await
        .map_err(|e| io_failure("tcp", &e))?;
    match cfg.target {
        FanoutTarget::Raw => {
            let mut s = Socket::new(stream);
            while s.buf.len() < 4 {
                if !s.read_more().await.map_err(|e| io_failure("hello", &e))? {
                    return Err(upgrade_failure("closed"));
                }
            }
            s.buf.advance(4);
            Ok(Sub::Raw(s))
        }
        FanoutTarget::Nats => {
            let mut ws = Ws::upgrade(stream, cfg.addr, &cfg.path).await?;
            ws.queue(OpCode::Binary, &nats::subscribe_lines());
            ws.flush().await.map_err(|e| io_failure("subscribe", &e))?;
            let mut parser = nats::Parser::default();
            loop {
                let data = next_data(&mut ws).await?;
                let ctl = parser.feed(&data, |_| {});
                if ctl.errors > 0 {
                    return Err(upgrade_failure("nats_err"));
                }
                if ctl.pongs > 0 {
                    return Ok(Sub::Ws(Box::new(ws)));
                }
            }
        }
        FanoutTarget::Socketio => {
            let mut ws = Ws::upgrade(stream, cfg.addr, &cfg.path).await?;
            loop {
                let data = next_data(&mut ws).await?;
                match socketio::parse(&data) {
                    Packet::Open => {
                        ws.queue(OpCode::Text, socketio::CONNECT);
                        ws.flush().await.map_err(|e| io_failure("subscribe", &e))?;
                    }
                    Packet::Ping => {
                        ws.queue(OpCode::Text, socketio::PONG);
                        ws.flush().await.map_err(|e| io_failure("subscribe", &e))?;
                    }
                    Packet::Connected => return Ok(Sub::Ws(Box::new(ws))),
                    _ => {}
                }
            }
        }
        FanoutTarget::Pushpin => Ok(Sub::Ws(Box::new(
            Ws::upgrade(stream, cfg.addr, &cfg.path).await?,
        ))),
        FanoutTarget::Ringgate => unreachable!("handled above"),
    }
}

/// The next data frame's payload (pings answered on the way).
async fn next_data(ws: &mut Ws) -> Result<bytes::Bytes, Failure> {
    loop {
        match ws.try_next().map_err(|e| io_failure("subscribe", &e))? {
            Some(Message::Text(b)) | Some(Message::Binary(b)) => return Ok(b),
            Some(Message::Ping(p)) => {
                ws.queue(OpCode::Pong, &p);
                ws.flush().await.map_err(|e| io_failure("subscribe", &e))?;
            }
            Some(Message::Close(_)) => return Err(upgrade_failure("closed")),
            Some(Message::Pong(_)) => {}
            None => {
                if !ws
                    .sock
                    .read_more()
                    .await
                    .map_err(|e| io_failure("subscribe", &e))?
                {
                    return Err(upgrade_failure("closed"));
                }
            }
        }
    }
}

async fn open_ringgate(cfg: &SubCfg, source: IpAddr, g: usize) -> Result<Sub, Failure> {
    let minter = cfg.minter.as_ref().expect("ringgate target has a minter");
    let token = minter
        .mint(
            &format!("user-{g}"),
            &format!("fanout-{}-{g}", cfg.run_id),
            &["user"],
        )
        .map_err(|_| upgrade_failure("token"))?;
    let opts = ConnectOptions {
        path: cfg.path.clone(),
        token: Some(token),
        token_via: TokenVia::Header,
        ..Default::default()
    };
    let (mut client, manifest) = conn::open(cfg.addr, Some(source), &opts, cfg.timeout).await?;
    let guid = manifest.guid(&cfg.endpoint).ok_or(Failure {
        stage: "manifest",
        reason: "endpoint_not_listed".into(),
        retryable: false,
    })?;
    let (h, _) = client.call(guid, b"{}").await.map_err(|e| Failure {
        stage: "subscribe",
        reason: conn::drop_cause("subscribe", &e),
        retryable: false,
    })?;
    if h.code != 0 {
        return Err(Failure {
            stage: "subscribe",
            reason: format!("code_{}", h.code),
            retryable: false,
        });
    }
    Ok(Sub::Bannou(Box::new(client)))
}

/// Receives until the connection ends; returns why it ended.
pub async fn receive(sub: Sub, target: FanoutTarget, rec: &Recorder) -> String {
    match sub {
        Sub::Raw(s) => receive_raw(s, rec).await,
        Sub::Ws(ws) => receive_ws(*ws, target, rec).await,
        Sub::Bannou(c) => receive_bannou(*c, rec).await,
    }
}

async fn receive_raw(mut s: Socket, rec: &Recorder) -> String {
    loop {
        match s.read_more().await {
            Ok(true) => {}
            Ok(false) => return "eof".into(),
            Err(e) => return format!("io:{:?}", e.kind()).to_lowercase(),
        }
        let now = unix_ns();
        while s.buf.len() >= 4 {
            let len = u32::from_be_bytes([s.buf[0], s.buf[1], s.buf[2], s.buf[3]]) as usize;
            if s.buf.len() < 4 + len {
                break;
            }
            match stamp::find(&s.buf[4..4 + len]) {
                Some(st) => rec.record(st, now),
                None => rec.record_unparsable(),
            }
            s.buf.advance(4 + len);
        }
    }
}

async fn receive_ws(mut ws: Ws, target: FanoutTarget, rec: &Recorder) -> String {
    let mut parser = nats::Parser::default();
    loop {
        let now = unix_ns();
        loop {
            let msg = match ws.try_next() {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(e) => return format!("protocol:{e}"),
            };
            match msg {
                Message::Text(b) | Message::Binary(b) => match target {
                    FanoutTarget::Nats => {
                        let ctl = parser.feed(&b, |m| match stamp::find(m) {
                            Some(st) => rec.record(st, now),
                            None => rec.record_unparsable(),
                        });
                        for _ in 0..ctl.pings {
                            ws.queue(OpCode::Binary, b"PONG\r\n");
                        }
                    }
                    FanoutTarget::Socketio => match socketio::parse(&b) {
                        Packet::Event { args, .. } => match stamp::find(args) {
                            Some(st) => rec.record(st, now),
                            None => rec.record_unparsable(),
                        },
                        Packet::Ping => ws.queue(OpCode::Text, socketio::PONG),
                        _ => {}
                    },
                    _ => match stamp::find(&b) {
                        Some(st) => rec.record(st, now),
                        None => rec.record_unparsable(),
                    },
                },
                Message::Ping(p) => ws.queue(OpCode::Pong, &p),
                Message::Pong(_) => {}
                Message::Close(c) => return format!("closed_{}", c.map_or(1005, |c| c.code)),
            }
        }
        if let Err(e) = ws.flush().await {
            return format!("io:{:?}", e.kind()).to_lowercase();
        }
        match ws.sock.read_more().await {
            Ok(true) => {}
            Ok(false) => return "eof".into(),
            Err(e) => return format!("io:{:?}", e.kind()).to_lowercase(),
        }
    }
}

async fn receive_bannou(mut c: Client, rec: &Recorder) -> String {
    loop {
        let now = unix_ns();
        loop {
            match c.try_next() {
                Ok(Some(Incoming::Push(_, payload))) => match stamp::find(&payload) {
                    Some(st) => rec.record(st, now),
                    None => rec.record_unparsable(),
                },
                Ok(Some(Incoming::Close(c))) => {
                    return format!("closed_{}", c.map_or(1005, |c| c.0))
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => return conn::drop_cause("receive", &e),
            }
        }
        if let Err(e) = c.flush().await {
            return conn::drop_cause("receive", &e);
        }
        match c.fill_once().await {
            Ok(true) => {}
            Ok(false) => return "eof".into(),
            Err(e) => return conn::drop_cause("receive", &e),
        }
    }
}
