//! The pool itself: what the rest of the gateway calls ([`Pool`], its settings and its
//! request type) and the shard-local state behind it (`Inner`), which decides where
//! each call goes.
//!
//! Why apart: this is the one place that sees every connection and every call slot of
//! a service on a shard. It encodes request heads, picks a lane for a call or connects
//! a new one, places started calls or queues them (and runs the feeder that places
//! them later), and runs the deadline sweeper. It sits on top of the other files
//! (`lane`, `call`, `limiter`) and implements the traits through which a lane and a
//! started call reach it ([`LanePool`], [`CallPool`]).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use monoio::net::TcpStream;
use rustls::ClientConfig;

use super::call::{Call, CallParts, CallPool, CallState, Detached, Failure, OwnedSlot, Pending};
use super::lane::{read_loop, write_loop, Lane, LaneEnd, LanePool, LaneState, Waiting};
use super::limiter::{Limiter, Slot};
use crate::config::url::parse_url;
use crate::proto::http1::{
    encode_request_head, HeaderBlock, HostLine, RequestHead, RequestLine, Response,
};
use crate::tls::TlsSession;
use crate::upstream::{BackendError, Done};

/// Bodies up to this size are copied in behind their request head.
const INLINE_BODY: usize = 512;
/// Size of the buffer request heads are encoded into, one after another (see
/// [`Inner::encode_head`]).
const HEAD_ARENA: usize = 8 * 1024;

/// Tuning for one backend service's pool on one shard.
#[derive(Debug, Clone)]
pub struct BackendSettings {
    /// Per address attempt; a connect that takes longer fails with
    /// [`BackendError::Connect`] (`ErrorKind::TimedOut`).
    pub connect_timeout: Duration,
    /// Deadline for the whole call: waiting for a connection slot, connect,
    /// write and read.
    pub request_timeout: Duration,
    /// Idle keep-alive connections kept for reuse.
    pub max_idle_per_shard: usize,
    /// Open connections allowed; must be at least 1.
    pub max_conns_per_shard: usize,
    /// Requests in flight on one connection at most (HTTP/1.1 pipelining);
    /// 1 = one at a time. With more, the requests of one scheduler round share
    /// a connection, and once `max_conns_per_shard` connections are busy,
    /// requests queue behind those in flight.
    pub pipeline_depth: usize,
    /// Largest accepted response body.
    pub max_response_bytes: usize,
}

impl Default for BackendSettings {
    fn default() -> Self {
        BackendSettings {
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(5),
            max_idle_per_shard: 32,
            max_conns_per_shard: 64,
            pipeline_depth: 1,
            max_response_bytes: 1024 * 1024,
        }
    }
}

/// One request to the pool's service. Borrowed: the head is encoded before the
/// call first waits, so nothing here is copied into a `String` per request.
#[derive(Debug, Clone)]
pub struct BackendRequest<'a> {
    /// `"POST"` or `"GET"` (any token is accepted; `"HEAD"` is handled).
    pub method: &'static str,
    /// Appended to the base path of the pool's URL (`/` inserted if missing).
    pub path: &'a str,
    /// Extra headers. `Host`, `Content-Length`, `Connection` and
    /// `Transfer-Encoding` are set by the codec and rejected here.
    pub headers: &'a [(&'a str, &'a str)],
    /// Constant headers (`http1::CONTENT_JSON` …), written after `headers`.
    pub fixed: &'a HeaderBlock,
    /// More headers, checked and encoded beforehand (a client's session headers).
    pub block: &'a HeaderBlock,
    /// Finishes `block`'s open last line (the correlation id's request number).
    pub tail_id: u64,
    /// Request body; written without copying.
    pub body: Bytes,
    /// Requests with the same value share a connection when pipelining (the
    /// gateway passes one per client connection); any value is correct.
    pub affinity: u64,
}

/// Snapshot of a pool's occupancy (for metrics and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Idle connections kept for reuse.
    pub idle: usize,
    /// Call slots held by calls in progress.
    pub busy: usize,
    /// Calls waiting for a slot.
    pub waiting: usize,
}

/// Connection pool for ONE backend service on ONE shard.
pub struct Pool {
    inner: Rc<Inner>,
}

struct Inner {
    /// `Host` header value (`host[:port]` as written in the URL).
    authority: String,
    /// The request line's end and the `Host` line, checked and encoded once.
    host_line: HostLine,
    /// Base path without trailing `/` (may be empty).
    base_path: String,
    addrs: Vec<SocketAddr>,
    /// An `https://` service: the client config and the name its certificate must
    /// hold (the URL's host, also sent as SNI).
    tls: Option<(Arc<ClientConfig>, String)>,
    settings: BackendSettings,
    /// Every connection not yet torn down (open, draining or closing).
    lanes: RefCell<Vec<Rc<Lane>>>,
    /// Lanes in state `Open` (the ones counted against the cap).
    open: Cell<usize>,
    /// Connects in progress (counted against the cap too).
    connecting: Cell<usize>,
    /// Call slots: `max_conns_per_shard × pipeline_depth`.
    limiter: Limiter,
    /// Started calls waiting for a slot, oldest first (see [`Pool::start`]), and
    /// whether the task that places them ([`feed_loop`]) runs, and whether it waits
    /// in the slot queue (for them: not a waiter of its own).
    pending: RefCell<VecDeque<Pending>>,
    feeding: Cell<bool>,
    feeder_waiting: Cell<bool>,
    /// The lane the last pipelined call went to: while its writer has not sent yet,
    /// further pipelined calls join it (see [`Inner::pick_lane`]).
    filling: RefCell<Weak<Lane>>,
    /// Whether the deadline sweeper task runs (it stops when no lane is left).
    sweeping: Cell<bool>,
    /// How often the sweeper looks for calls past their deadline.
    sweep_every: Duration,
    /// Request heads are encoded here and split off (see [`Inner::encode_head`]).
    heads: RefCell<BytesMut>,
    /// The last request line encoded (most requests go to one endpoint): reused while
    /// requests keep to its method and path.
    line: RefCell<Option<RequestLine>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("authority", &self.inner.authority)
            .field("base_path", &self.inner.base_path)
            .field("addrs", &self.inner.addrs)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// Pool for the service at `url` = `http://host[:port][/base/path]`, resolving
    /// its host here (blocking: tests only; the shard's pools take the addresses the
    /// registry resolved, [`Pool::with_addrs`]).
    #[cfg(test)]
    pub fn new(url: &str, settings: BackendSettings) -> Result<Pool, BackendError> {
        let origin = parse_url(url).map_err(|e| BackendError::InvalidUrl(e.to_string()))?;
        let addrs = crate::config::url::resolve(&origin.host, origin.port)
            .map_err(BackendError::InvalidUrl)?;
        Pool::with_addrs(url, addrs, settings, None)
    }

    /// Pool for the service at `url` whose host resolved to `addrs` (the shard's way:
    /// the registry resolved them, so no lookup blocks the shard). An `https://` URL
    /// needs `tls`, the gateway's client config (`tls.ca_file` or the system's roots);
    /// an `http://` one ignores it.
    pub fn with_addrs(
        url: &str,
        addrs: Vec<SocketAddr>,
        settings: BackendSettings,
        tls: Option<Arc<ClientConfig>>,
    ) -> Result<Pool, BackendError> {
        if settings.max_conns_per_shard == 0 {
            return Err(BackendError::InvalidSettings(
                "max_conns_per_shard must be at least 1",
            ));
        }
        if settings.pipeline_depth == 0 {
            return Err(BackendError::InvalidSettings(
                "pipeline_depth must be at least 1",
            ));
        }
        let origin = parse_url(url).map_err(|e| BackendError::InvalidUrl(e.to_string()))?;
        let tls = match (origin.tls, tls) {
            (false, _) => None,
            (true, Some(config)) => Some((config, origin.host.clone())),
            (true, None) => {
                return Err(BackendError::InvalidUrl(format!(
                    "{url:?}: TLS is not set up (the client TLS config could not be built: see the log)"
                )))
            }
        };
        let host_line = HostLine::new(&origin.authority)
            .map_err(|e| BackendError::InvalidUrl(format!("{url:?}: {e}")))?;
        let slots = settings
            .max_conns_per_shard
            .saturating_mul(settings.pipeline_depth);
        let settings_timeout = settings.request_timeout;
        Ok(Pool {
            inner: Rc::new(Inner {
                authority: origin.authority,
                host_line,
                base_path: origin.base_path,
                addrs,
                tls,
                limiter: Limiter::new(slots),
                pending: RefCell::new(VecDeque::new()),
                feeding: Cell::new(false),
                feeder_waiting: Cell::new(false),
                filling: RefCell::new(Weak::new()),
                settings,
                lanes: RefCell::new(Vec::new()),
                open: Cell::new(0),
                connecting: Cell::new(0),
                sweeping: Cell::new(false),
                sweep_every: sweep_every(settings_timeout),
                heads: RefCell::new(BytesMut::with_capacity(HEAD_ARENA)),
                line: RefCell::default(),
            }),
        })
    }

    /// Send `req` and wait for the complete response, within the configured
    /// `request_timeout`.
    pub async fn call(&self, req: BackendRequest<'_>) -> Result<Response, BackendError> {
        self.call_with_timeout(req, self.inner.settings.request_timeout)
            .await
    }

    /// Like [`Pool::call`] with a per-call deadline instead of
    /// `request_timeout`.
    pub async fn call_with_timeout(
        &self,
        req: BackendRequest<'_>,
        timeout: Duration,
    ) -> Result<Response, BackendError> {
        let (head, body) = self.inner.encode_head(&req)?;
        let head_request = req.method.eq_ignore_ascii_case("HEAD");
        let deadline = Instant::now() + timeout;
        self.inner
            .call_inner(head, body, head_request, req.affinity, deadline, false)
            .await
    }

    /// Current occupancy.
    pub fn stats(&self) -> PoolStats {
        let limiter = &self.inner.limiter;
        PoolStats {
            idle: self
                .inner
                .lanes
                .borrow()
                .iter()
                .filter(|l| l.is_idle())
                .count(),
            busy: limiter.in_use(),
            waiting: limiter.queued() - usize::from(self.inner.feeder_waiting.get())
                + self.inner.pending.borrow().len(),
        }
    }

    /// Starts a call whose result goes to `on_done` instead of to an awaiting
    /// task: the gateway's path for requests that need no ordering. When a slot
    /// and a connection are free at once (the usual case), the call is placed
    /// right here and `on_done` runs in the connection's reader task when the
    /// answer is parsed: no task, no timer, no future per request. When every
    /// slot is taken, the call joins the pool's queue ([`Pending`]), still with
    /// no task or timer of its own; one feeder task places queued calls in
    /// order as slots free up. (Why not a task per waiting call: past the slots,
    /// a backlog made every request pay a spawn, a boxed timer and a wakeup,
    /// which halved the gateway's throughput exactly when it was behind, so it
    /// never caught up.) Only a call that needs a connect first waits in a task
    /// as [`Pool::call`] does. Every outcome, including a timeout
    /// (`request_timeout`), reaches `on_done` exactly once.
    ///
    /// `on_done` is a [`Done`]: the gateway's answer to a client is a plain value the
    /// call keeps in its own allocation (a boxed callback was a second allocation per
    /// request).
    pub fn start(&self, req: BackendRequest<'_>, on_done: Done) {
        let (head, body) = match self.inner.encode_head(&req) {
            Ok(h) => h,
            Err(e) => return on_done.run(Err(e)),
        };
        let call = CallParts {
            head,
            body,
            head_request: req.method.eq_ignore_ascii_case("HEAD"),
            deadline: crate::rt::clock::recent() + self.inner.settings.request_timeout,
            affinity: req.affinity,
        };
        if self.inner.pending.borrow().is_empty() {
            if let Some(slot) = self.inner.try_acquire_owned() {
                return self.inner.place(call, on_done, slot);
            }
        }
        self.inner.enqueue(Pending { call, on_done });
    }
}

impl Inner {
    /// One call until `deadline`. Only the waits that are not the common case
    /// (for a slot, a connect, a full pipeline) carry a timer of their own,
    /// boxed; a call placed on a connection is timed out by the pool's
    /// sweeper, so the usual call costs no timer and its future stays small.
    async fn call_inner(
        self: &Rc<Self>,
        head: Bytes,
        body: Bytes,
        head_request: bool,
        affinity: u64,
        deadline: Instant,
        retried: bool,
    ) -> Result<Response, BackendError> {
        let inner = self;
        // Held until the call ends, so at most `max_conns × depth` calls are
        // ever placed on connections.
        let _slot = match inner.limiter.try_acquire() {
            Some(slot) => slot,
            None => Box::pin(monoio::time::timeout_at(
                deadline.into(),
                inner.limiter.acquire(),
            ))
            .await
            .map_err(|_| BackendError::Saturated)?,
        };
        let mut retried = retried;
        loop {
            let lane = loop {
                match inner.pick_lane(affinity) {
                    Pick::Use(lane) => break lane,
                    Pick::Connect => {
                        let connect = monoio::time::timeout_at(deadline.into(), inner.open_lane());
                        match Box::pin(connect).await {
                            Ok(lane) => break lane?,
                            Err(_) => {
                                return Err(BackendError::Connect(io::Error::new(
                                    io::ErrorKind::TimedOut,
                                    "request deadline expired while connecting",
                                )))
                            }
                        }
                    }
                    // Every connection is full and the cap is taken by
                    // connects in progress: look again shortly.
                    Pick::Wait => {
                        if Instant::now() >= deadline {
                            return Err(BackendError::Saturated);
                        }
                        Box::pin(monoio::time::sleep(Duration::from_millis(1))).await
                    }
                }
            };
            if Instant::now() >= deadline {
                return Err(BackendError::Timeout);
            }
            let reused = lane.answered.get() > 0;
            let call: Rc<Call> = Rc::new(Call {
                head: head.clone(),
                body: body.clone(),
                head_request,
                deadline,
                state: RefCell::new(CallState::Waiting(None)),
                done: Cell::new(None),
            });
            lane.submit(call.clone());
            match (Waiting { lane, call }).await {
                Ok(resp) => return Ok(resp),
                Err(f) if !retried && f.may_retry(reused) => {
                    tracing::debug!(backend = %inner.authority, error = %f.error(),
                        "request not processed by the backend; retrying once on another connection");
                    retried = true;
                }
                Err(f) => return Err(f.into_error()),
            }
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // The pool is dropped once no call can still be in flight on it: a shard keeps
        // a replaced pool for a request timeout after the registry update
        // (`shard::ShardCtx::apply_registry`), and awaited calls hold their service.
        // Every lane is idle or draining here: close them all.
        let lanes: Vec<Rc<Lane>> = self.inner.lanes.borrow().clone();
        for lane in lanes {
            lane.shutdown(LaneEnd::Retired);
        }
    }
}

/// Where the next call goes.
enum Pick {
    Use(Rc<Lane>),
    Connect,
    Wait,
}

impl Inner {
    /// The request head, and the body to send after it. A small body is copied in
    /// behind the head (one allocation and one iovec per request instead of two; at
    /// the pool's peak, per-iovec kernel work and allocations were ~15 % of the
    /// gateway); a large one stays the client's `Bytes`, never copied.
    ///
    /// Heads are encoded one after another into one `HEAD_ARENA`-sized buffer and
    /// split off it, so a head costs no allocation of its own: a new buffer is taken
    /// once the free room is used up, and the old one is freed, or written over once
    /// all of its heads are, when its last head is dropped (a call keeps its head
    /// until answered, for a retry). The price: one slow call keeps its whole
    /// buffer alive, at most `HEAD_ARENA` bytes per call in flight. Measured with
    /// callgrind at max: two allocations per request (the buffer and, as it was not
    /// full, `freeze`'s shared header) were ~270 instructions of ~5200.
    fn encode_head(&self, req: &BackendRequest<'_>) -> Result<(Bytes, Bytes), BackendError> {
        // The usual path (`/x`) follows the base as is; others are joined.
        let joined;
        let (base, path) = if req.path.starts_with('/') {
            (self.base_path.as_str(), req.path)
        } else {
            joined = join_path(&self.base_path, req.path);
            ("", joined.as_str())
        };
        let mut cached = self.line.borrow_mut();
        let line = match &mut *cached {
            Some(line) if line.is_for(req.method, base, path) => line,
            slot => slot.insert(
                RequestLine::new(req.method, base, path, &self.host_line)
                    .map_err(BackendError::InvalidRequest)?,
            ),
        };
        let head = RequestHead {
            line,
            headers: req.headers,
            fixed: req.fixed,
            block: req.block,
            tail_id: req.tail_id,
            content_length: req.body.len(),
        };
        let inline = req.body.len() <= INLINE_BODY;
        let mut out = self.heads.borrow_mut();
        // The encoder reserves exactly what the head needs; with a body to copy in,
        // room for it and a typical head too, so the two share one buffer.
        if inline && out.capacity() - out.len() < req.body.len() + 512 {
            out.reserve(HEAD_ARENA.max(req.body.len() + 512));
        }
        encode_request_head(&head, &mut out).map_err(BackendError::InvalidRequest)?;
        if inline {
            out.extend_from_slice(&req.body);
            return Ok((out.split().freeze(), Bytes::new()));
        }
        Ok((out.split().freeze(), req.body.clone()))
    }

    /// With pipelining, first the batch this scheduler round started (the
    /// connection the round's first call went to, while its writer has not sent
    /// yet and it has room); then an idle connection (newest first); else a new
    /// one while under the cap; else the connection `affinity` maps to if it has
    /// room, else the least loaded one with room. Without pipelining, an idle
    /// connection or a new one.
    ///
    /// Why a round's calls share one batch even when other connections are idle:
    /// the cost of a forwarded request is mostly per-`sendmsg`/`recv` work on both
    /// ends, so calls sent as one batch on one connection cost one write here and
    /// one read at the backend, where spread over idle connections they cost one
    /// each. Measured at max (peers, 32 connections × 64 deep): joining the batch
    /// only once every connection was busy, 300–343k → 388–458k req/s; joining it
    /// before idle connections too, 285–340k → 377–393k back to back. The price is
    /// head-of-line waiting within one round's batch, which is what a pipelining
    /// pool has agreed to; the next round's batch still starts on an idle
    /// connection, so one slow call holds up at most its own batch.
    /// Why affinity when a new batch starts on a busy connection: a client's burst
    /// of requests then travels on one connection and comes back in one read, so
    /// its answers leave in one write to the client.
    fn pick_lane(&self, affinity: u64) -> Pick {
        let lanes = self.lanes.borrow();
        let depth = self.settings.pipeline_depth;
        if depth > 1 {
            if let Some(lane) = self.filling.borrow().upgrade() {
                if lane.has_unsent() && lane.has_room(depth) {
                    return Pick::Use(lane);
                }
            }
        }
        let mut best: Option<(&Rc<Lane>, usize)> = None;
        let mut pick = None;
        for lane in lanes.iter().rev() {
            if lane.state.get() != LaneState::Open {
                continue;
            }
            let load = lane.calls.borrow().len();
            if load == 0 {
                pick = Some(lane.clone());
                break;
            }
            if load < depth && best.is_none_or(|(_, b)| load < b) {
                best = Some((lane, load));
            }
        }
        let pick = match pick {
            Some(idle) => idle,
            None if self.open.get() + self.connecting.get() < self.settings.max_conns_per_shard => {
                return Pick::Connect
            }
            None => match lanes.get((affinity % lanes.len().max(1) as u64) as usize) {
                Some(lane) if lane.has_room(depth) => lane.clone(),
                _ => match best {
                    Some((lane, _)) => lane.clone(),
                    None => return Pick::Wait,
                },
            },
        };
        if depth > 1 {
            *self.filling.borrow_mut() = Rc::downgrade(&pick);
        }
        Pick::Use(pick)
    }

    async fn open_lane(self: &Rc<Self>) -> Result<Rc<Lane>, BackendError> {
        /// Keeps `connecting` right even if the connect is dropped (timeout).
        struct Connecting<'a>(&'a Cell<usize>);
        impl Drop for Connecting<'_> {
            fn drop(&mut self) {
                self.0.set(self.0.get() - 1);
            }
        }
        self.connecting.set(self.connecting.get() + 1);
        let guard = Connecting(&self.connecting);
        let stream = self.connect().await?;
        let tls = self.tls_handshake(&stream).await?;
        drop(guard);
        let pool: Weak<Self> = Rc::downgrade(self);
        let lane = Rc::new(Lane::new(stream, tls, pool));
        self.lanes.borrow_mut().push(lane.clone());
        self.open.set(self.open.get() + 1);
        let max_body = self.settings.max_response_bytes;
        crate::rt::task::spawn_isolated("backend reader", read_loop(lane.clone(), max_body));
        crate::rt::task::spawn_isolated("backend writer", write_loop(lane.clone()));
        self.ensure_sweeper();
        Ok(lane)
    }

    /// Times out every call on a connection whose deadline has passed: an
    /// unwritten one is dropped, a written one leaves its connection draining
    /// (as if its caller had given up).
    fn sweep(&self, now: Instant) {
        let lanes: Vec<Rc<Lane>> = self.lanes.borrow().clone();
        for lane in lanes {
            let late: Vec<Rc<Call>> = lane
                .calls
                .borrow()
                .iter()
                .filter(|c| c.is_live() && c.deadline <= now)
                .cloned()
                .collect();
            for call in late {
                call.complete(Err(Failure::Fatal(BackendError::Timeout)));
                lane.abandon(&call);
            }
        }
    }

    async fn connect(&self) -> Result<TcpStream, BackendError> {
        let mut last_err = None;
        for &addr in &self.addrs {
            let err = match monoio::time::timeout(
                self.settings.connect_timeout,
                TcpStream::connect_addr(addr),
            )
            .await
            {
                Ok(Ok(stream)) => {
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::warn!(backend = %self.authority, error = %e, "TCP_NODELAY failed");
                    }
                    return Ok(stream);
                }
                Ok(Err(e)) => e,
                Err(_) => io::Error::new(io::ErrorKind::TimedOut, "connect timed out"),
            };
            tracing::debug!(backend = %self.authority, %addr, error = %err, "backend connect failed");
            last_err = Some(err);
        }
        Err(BackendError::Connect(last_err.unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::AddrNotAvailable, "no address")
        })))
    }

    /// For an `https://` service, the TLS handshake on a connection just made, within
    /// `connect_timeout`. A failure (a certificate not signed by a trusted CA or not
    /// for the host, no common protocol, a timeout) is a connect failure: the request
    /// was not sent, and the error says why.
    async fn tls_handshake(
        &self,
        stream: &TcpStream,
    ) -> Result<Option<Box<TlsSession>>, BackendError> {
        let Some((config, host)) = &self.tls else {
            return Ok(None);
        };
        crate::tls::connect(config, host, stream, self.settings.connect_timeout)
            .await
            .map(Some)
            .map_err(|e| {
                BackendError::Connect(io::Error::new(
                    e.kind(),
                    format!("TLS handshake with {host} failed: {e}"),
                ))
            })
    }

    /// A call slot now, owned (for a started call), if one is free.
    fn try_acquire_owned(self: &Rc<Self>) -> Option<OwnedSlot> {
        let slot = self.limiter.try_acquire()?;
        Some(self.own(slot))
    }

    /// Turns a slot borrowed from the limiter into one a started call owns.
    fn own(self: &Rc<Self>, slot: Slot<'_>) -> OwnedSlot {
        // The owned slot releases it instead.
        std::mem::forget(slot);
        OwnedSlot(self.clone())
    }

    /// Puts a started call that holds `slot` on a connection: right here when one has
    /// room (the usual case: `on_done` then runs in that connection's reader task), else
    /// in a task that waits for a connect as [`Pool::call`] does.
    fn place(self: &Rc<Self>, call: CallParts, on_done: Done, slot: OwnedSlot) {
        if let Pick::Use(lane) = self.pick_lane(call.affinity) {
            let reused = lane.answered.get() > 0;
            let placed: Rc<Call> = Rc::new(Call {
                head: call.head,
                body: call.body,
                head_request: call.head_request,
                deadline: call.deadline,
                state: RefCell::new(CallState::Detached(Detached {
                    reused,
                    affinity: call.affinity,
                    _slot: slot,
                })),
                done: Cell::new(Some(on_done)),
            });
            lane.submit(placed);
            return;
        }
        drop(slot);
        let inner = self.clone();
        crate::rt::task::spawn_isolated("backend call", async move {
            let CallParts {
                head,
                body,
                head_request,
                deadline,
                affinity,
            } = call;
            let result = inner
                .call_inner(head, body, head_request, affinity, deadline, false)
                .await;
            on_done.run(result);
        });
    }

    /// Queues a started call behind the others waiting for a slot.
    fn enqueue(self: &Rc<Self>, call: Pending) {
        self.pending.borrow_mut().push_back(call);
        if !self.feeding.replace(true) {
            crate::rt::task::spawn_isolated("backend feeder", feed_loop(self.clone()));
        }
        self.ensure_sweeper();
    }

    /// Answers the queued calls whose deadline has passed (all the same timeout, so
    /// they are the oldest).
    fn expire_pending(&self, now: Instant) {
        loop {
            let call = {
                let mut q = self.pending.borrow_mut();
                match q.front() {
                    Some(c) if c.call.deadline <= now => q.pop_front(),
                    _ => None,
                }
            };
            let Some(call) = call else {
                return;
            };
            call.on_done.run(Err(BackendError::Saturated));
        }
    }

    /// Starts the deadline sweeper if it is not running.
    fn ensure_sweeper(self: &Rc<Self>) {
        if !self.sweeping.replace(true) {
            let every = self.sweep_every;
            crate::rt::task::spawn_isolated(
                "backend sweeper",
                sweep_loop(Rc::downgrade(self), every),
            );
        }
    }

    /// A lane just became idle: close it if more idle lanes are kept than
    /// allowed and nobody is waiting for a slot.
    fn idle_cap(&self, lane: &Lane) {
        let max_idle = self.settings.max_idle_per_shard;
        if self.open.get() <= max_idle
            || self.limiter.queued() > usize::from(self.feeder_waiting.get())
            || !self.pending.borrow().is_empty()
        {
            return;
        }
        let idle = self.lanes.borrow().iter().filter(|l| l.is_idle()).count();
        if idle > max_idle {
            lane.shutdown(LaneEnd::Retired);
        }
    }
}

/// What a lane tells its pool.
impl LanePool for Inner {
    fn lane_left_open(&self) {
        self.open.set(self.open.get() - 1);
    }

    fn lane_idle(&self, lane: &Lane) {
        self.idle_cap(lane);
    }

    fn lane_ended(&self, lane: &Lane) {
        self.lanes
            .borrow_mut()
            .retain(|l| !std::ptr::eq(Rc::as_ptr(l), lane));
    }
}

/// What a started call asks of its pool.
impl CallPool for Inner {
    fn release_slot(&self) {
        self.limiter.release();
    }

    fn retry(self: Rc<Self>, call: Rc<Call>, affinity: u64) {
        let pool = self;
        crate::rt::task::spawn_isolated("backend retry", async move {
            let (head, body) = (call.head.clone(), call.body.clone());
            let result = pool
                .call_inner(head, body, call.head_request, affinity, call.deadline, true)
                .await;
            if let Some(done) = call.done.take() {
                done.run(result);
            }
        });
    }
}

/// The sweeper's period: a tenth of the request timeout, within 5–100 ms.
fn sweep_every(request_timeout: Duration) -> Duration {
    (request_timeout / 10).clamp(Duration::from_millis(5), Duration::from_millis(100))
}

/// Enforces call deadlines for `pool` while it has connections.
async fn sweep_loop(pool: Weak<Inner>, every: Duration) {
    loop {
        monoio::time::sleep(every).await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        if pool.lanes.borrow().is_empty() && pool.pending.borrow().is_empty() {
            pool.sweeping.set(false);
            return;
        }
        let now = crate::rt::clock::refresh();
        pool.sweep(now);
        pool.expire_pending(now);
    }
}

/// Places the pool's queued started calls ([`Pending`]) in order, each as soon as a
/// slot is free: waits in the slot queue like any caller (one waiter for the whole
/// queue), then takes every slot free at that moment. Ends when the queue is empty.
/// Expired calls are left to the sweeper; one that expired just now is answered here.
async fn feed_loop(pool: Rc<Inner>) {
    loop {
        if pool.pending.borrow().is_empty() {
            pool.feeding.set(false);
            return;
        }
        let slot = match pool.try_acquire_owned() {
            Some(slot) => slot,
            None => {
                pool.feeder_waiting.set(true);
                let slot = pool.limiter.acquire().await;
                pool.feeder_waiting.set(false);
                pool.own(slot)
            }
        };
        let Some(call) = pool.pending.borrow_mut().pop_front() else {
            continue;
        };
        if call.call.deadline <= crate::rt::clock::recent() {
            drop(slot);
            call.on_done.run(Err(BackendError::Saturated));
            continue;
        }
        pool.place(call.call, call.on_done, slot);
    }
}

/// `base` (no trailing `/`) + `path`, with exactly one `/` between them.
fn join_path(base: &str, path: &str) -> String {
    let path = path.strip_prefix('/').unwrap_or(path);
    let mut full = String::with_capacity(base.len() + path.len() + 1);
    full.push_str(base);
    full.push('/');
    full.push_str(path);
    full
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::http1::Http1Error;
    use crate::upstream::error::ErrorSide;
    use crate::upstream::http::test_server::Server;
    use std::future::Future;
    use std::net::TcpListener;
    use std::sync::atomic::Ordering::SeqCst;
    use std::time::Instant;

    // ---- helpers ----

    fn run<F: Future>(f: F) -> F::Output {
        monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn settings() -> BackendSettings {
        BackendSettings {
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(3),
            max_idle_per_shard: 8,
            max_conns_per_shard: 8,
            pipeline_depth: 1,
            max_response_bytes: 1 << 20,
        }
    }

    fn get(path: &str) -> BackendRequest<'_> {
        BackendRequest {
            method: "GET",
            path,
            headers: &[],
            fixed: HeaderBlock::empty(),
            block: HeaderBlock::empty(),
            tail_id: 0,
            body: Bytes::new(),
            affinity: 0,
        }
    }

    fn post(path: &str, body: Bytes) -> BackendRequest<'_> {
        BackendRequest {
            method: "POST",
            path,
            headers: &[],
            fixed: HeaderBlock::empty(),
            block: HeaderBlock::empty(),
            tail_id: 0,
            body,
            affinity: 0,
        }
    }

    fn pattern(len: usize, seed: u8) -> Bytes {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect::<Vec<u8>>()
            .into()
    }

    // ---- tests ----

    #[test]
    fn request_body_and_headers_arrive_byte_for_byte() {
        let server = Server::start();
        let pool = Pool::new(&server.url("/api/"), settings()).unwrap();
        // Includes bytes that look like HTTP framing.
        let mut body = b"HTTP/1.1 200 OK\r\n\r\n\0".to_vec();
        body.extend_from_slice(&pattern(200_000, 7));
        let body = Bytes::from(body);
        let req = BackendRequest {
            headers: &[("X-User-Id", "u-42"), ("X-Claims", "a=1; b=\"x y\"")],
            ..post("/echo", body.clone())
        };
        // One runtime for both calls: the pool's connections live on it.
        let (resp, get_resp) = run(async { (pool.call(req).await, pool.call(get("echo")).await) });
        let resp = resp.unwrap();
        assert_eq!((resp.status, resp.keep_alive), (200, true));
        assert_eq!(resp.body, body);

        let rec = &server.requests()[0];
        assert_eq!(
            (rec.method.as_str(), rec.path.as_str()),
            ("POST", "/api/echo")
        );
        assert_eq!(rec.body, &body[..]);
        assert_eq!(rec.header("Host"), Some(server.addr.to_string().as_str()));
        assert_eq!(rec.header("Content-Length"), Some("200020"));
        // HTTP/1.1 connections persist unless a side says `close`: no header needed.
        assert_eq!(rec.header("Connection"), None);
        assert_eq!(rec.header("X-User-Id"), Some("u-42"));
        assert_eq!(rec.header("X-Claims"), Some("a=1; b=\"x y\""));

        // GET without a body still sends Content-Length: 0.
        let resp = get_resp.unwrap();
        assert!(resp.body.is_empty());
        let rec = &server.requests()[1];
        assert_eq!(
            (rec.method.as_str(), rec.path.as_str()),
            ("GET", "/api/echo")
        );
        assert_eq!(rec.header("Content-Length"), Some("0"));
    }

    #[test]
    fn bodies_copied_behind_the_head_and_bodies_sent_apart_both_arrive_intact() {
        let server = Server::start();
        let pool = Pool::new(&server.url(""), settings()).unwrap();
        let sizes = [1, INLINE_BODY, INLINE_BODY + 1, 5000];
        let bodies: Vec<Bytes> = sizes.iter().map(|&n| pattern(n, 3)).collect();
        let resps = run(async {
            let mut out = Vec::new();
            for b in &bodies {
                out.push(pool.call(post("/echo", b.clone())).await.unwrap());
            }
            out
        });
        for (i, (resp, body)) in resps.iter().zip(&bodies).enumerate() {
            assert_eq!(resp.body, body, "size {}", sizes[i]);
            assert_eq!(server.requests()[i].body, &body[..]);
        }
    }

    #[test]
    fn request_heads_are_cut_from_one_shared_buffer_and_stay_intact_as_it_moves_on() {
        let server = Server::start();
        let pool = Pool::new(&server.url(""), settings()).unwrap();
        let paths: Vec<String> = (0..200).map(|i| format!("/p{i}")).collect();
        // Kept alive, as calls in flight keep theirs: later heads never write over them.
        let heads: Vec<Bytes> = paths
            .iter()
            .map(|p| pool.inner.encode_head(&post(p, pattern(64, 5))).unwrap().0)
            .collect();
        let mut adjacent = 0;
        for (i, (h, p)) in heads.iter().zip(&paths).enumerate() {
            let text = std::str::from_utf8(&h[..h.len() - 64]).unwrap();
            assert!(
                text.starts_with(&format!("POST {p} HTTP/1.1\r\n")),
                "{text:?}"
            );
            assert!(text.ends_with("Content-Length: 64\r\n\r\n"), "{text:?}");
            assert_eq!(h[h.len() - 64..], pattern(64, 5)[..]);
            if i > 0 && heads[i - 1].as_ptr().wrapping_add(heads[i - 1].len()) == h.as_ptr() {
                adjacent += 1;
            }
        }
        // Most heads follow the one before in the same buffer (no allocation of
        // their own); a new buffer starts every HEAD_ARENA bytes or so.
        let per_buffer = HEAD_ARENA / heads[0].len();
        assert!(
            adjacent >= 199 - 199 / (per_buffer - 1),
            "{adjacent} of 199 heads shared a buffer with the one before"
        );
        // Heads dropped as soon as they are made (calls answered at once): the
        // buffer is written over from its start, never replaced.
        drop(heads);
        let starts: Vec<usize> = (0..3 * per_buffer)
            .map(|_| {
                pool.inner
                    .encode_head(&post("/again", pattern(64, 5)))
                    .unwrap()
                    .0
            })
            .map(|h| h.as_ptr() as usize)
            .collect();
        let lo = *starts.iter().min().unwrap();
        assert!(
            starts.iter().all(|&p| p < lo + HEAD_ARENA),
            "a new buffer was taken though the old one was free"
        );
        assert!(
            starts.iter().filter(|&&p| p == lo).count() >= 2,
            "never wrapped"
        );
    }

    #[test]
    fn keep_alive_connection_is_reused() {
        let server = Server::start();
        let pool = Pool::new(&server.url(""), settings()).unwrap();
        run(async {
            for i in 0..3u8 {
                let resp = pool.call(post("/echo", pattern(100, i))).await.unwrap();
                assert_eq!(resp.body, pattern(100, i));
            }
        });
        assert_eq!(server.accepted(), 1);
        assert!(server.requests().iter().all(|r| r.conn == 1));
        assert_eq!(
            pool.stats(),
            PoolStats {
                idle: 1,
                busy: 0,
                waiting: 0
            }
        );
    }

    #[test]
    fn chunked_and_close_delimited_responses() {
        let server = Server::start();
        let pool = Pool::new(&server.url(""), settings()).unwrap();
        run(async {
            let resp = pool.call(get("/chunked")).await.unwrap();
            assert_eq!(
                (&resp.body[..], resp.keep_alive),
                (&b"hello, chunked world"[..], true)
            );
            let resp = pool.call(get("/close-delimited")).await.unwrap();
            assert_eq!(
                (&resp.body[..], resp.keep_alive),
                (&b"until the very end"[..], false)
            );
            // The close-delimited connection was not pooled.
            let resp = pool.call(get("/chunked")).await.unwrap();
            assert_eq!(resp.status, 200);
        });
        assert_eq!(server.accepted(), 2);
    }

    #[test]
    fn dead_pooled_connection_is_retried_once_transparently() {
        for (route, what) in [("/drop-next", "FIN"), ("/reset-next", "RST")] {
            let server = Server::start();
            let pool = Pool::new(&server.url(""), settings()).unwrap();
            run(async {
                assert_eq!(&pool.call(get(route)).await.unwrap().body[..], b"served");
                // The server reads this request on the pooled connection and
                // closes it without answering: retried on a new connection.
                let resp = pool.call(post("/echo", pattern(5000, 3))).await.unwrap();
                assert_eq!(resp.body, pattern(5000, 3), "{what}");
            });
            assert_eq!(server.accepted(), 2, "{what}");
            let conns: Vec<usize> = server.requests().iter().map(|r| r.conn).collect();
            assert_eq!(conns, [1, 1, 2], "{what}");
        }
    }

    #[test]
    fn idle_connection_closed_by_peer_is_not_used() {
        let server = Server::start();
        let pool = Pool::new(&server.url(""), settings()).unwrap();
        run(async {
            assert_eq!(
                &pool.call(get("/close-after")).await.unwrap().body[..],
                b"first"
            );
            monoio::time::sleep(Duration::from_millis(50)).await;
            assert_eq!(
                &pool.call(get("/chunked")).await.unwrap().body[..],
                b"hello, chunked world"
            );
        });
        assert_eq!(server.accepted(), 2);
        // The probe discarded it before sending: no lost request on conn 1.
        let conns: Vec<usize> = server.requests().iter().map(|r| r.conn).collect();
        assert_eq!(conns, [1, 2]);
    }

    #[test]
    fn retry_happens_once_and_never_for_fresh_connections() {
        let server = Server::start();
        let pool = Pool::new(&server.url(""), settings()).unwrap();
        run(async {
            // Fresh connection hung up on: error, no retry.
            let err = pool.call(get("/hangup")).await.unwrap_err();
            assert!(
                matches!(err, BackendError::Protocol(Http1Error::ConnectionClosed)),
                "{err:?}"
            );
            assert!(!err.retry_safe());
            assert_eq!(server.accepted(), 1);
            // Pooled connection hung up on: retried once on a fresh one,
            // which hangs up too; that error is returned.
            pool.call(get("/echo")).await.unwrap();
            let err = pool.call(get("/hangup")).await.unwrap_err();
            assert!(
                matches!(err, BackendError::Protocol(Http1Error::ConnectionClosed)),
                "{err:?}"
            );
        });
        assert_eq!(server.accepted(), 3);
        let paths: Vec<(usize, String)> = server
            .requests()
            .into_iter()
            .map(|r| (r.conn, r.path))
            .collect();
        let expect = [(1, "/hangup"), (2, "/echo"), (2, "/hangup"), (3, "/hangup")];
        assert_eq!(paths, expect.map(|(c, p)| (c, p.to_owned())));
    }

    #[test]
    fn refused_port_fails_fast_with_connect_error() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut s = settings();
        s.request_timeout = Duration::from_secs(5);
        s.connect_timeout = Duration::from_secs(5);
        let pool = Pool::new(&format!("http://127.0.0.1:{port}"), s).unwrap();
        let start = Instant::now();
        let err = run(pool.call(post("/echo", Bytes::from_static(b"x")))).unwrap_err();
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
        match &err {
            BackendError::Connect(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused),
            other => panic!("expected Connect, got {other:?}"),
        }
        assert!(err.retry_safe());
        assert_eq!(err.side(), ErrorSide::Backend);
        assert_eq!(pool.stats().busy, 0);
    }

    #[test]
    fn slow_backend_times_out_and_connection_is_discarded() {
        let server = Server::start();
        let mut s = settings();
        s.request_timeout = Duration::from_millis(300);
        let pool = Pool::new(&server.url(""), s).unwrap();
        run(async {
            let start = Instant::now();
            let err = pool.call(post("/slow", pattern(10, 1))).await.unwrap_err();
            let took = start.elapsed();
            assert!(matches!(err, BackendError::Timeout), "{err:?}");
            assert!(
                took >= Duration::from_millis(290) && took < Duration::from_millis(900),
                "{took:?}"
            );
            assert!(!err.retry_safe());
            assert_eq!(err.side(), ErrorSide::Backend);
            assert_eq!(
                pool.stats(),
                PoolStats {
                    idle: 0,
                    busy: 0,
                    waiting: 0
                }
            );
            // Next call must not see the slow response on a reused socket.
            let resp = pool.call(post("/echo", pattern(10, 2))).await.unwrap();
            assert_eq!(resp.body, pattern(10, 2));
        });
        assert_eq!(server.accepted(), 2);
    }

    #[test]
    fn concurrency_cap_is_honoured_and_waiters_are_fifo() {
        let server = Server::start();
        let mut s = settings();
        s.max_conns_per_shard = 2;
        let pool = Rc::new(Pool::new(&server.url(""), s).unwrap());
        let order = Rc::new(RefCell::new(Vec::new()));
        run(async {
            let mut handles = Vec::new();
            for i in 0..8 {
                let (pool, order) = (pool.clone(), order.clone());
                handles.push(monoio::spawn(async move {
                    let resp = pool.call(get(&format!("/delay/60/t{i}"))).await.unwrap();
                    assert_eq!(resp.body, format!("t{i}"));
                    order.borrow_mut().push(i);
                }));
            }
            monoio::time::sleep(Duration::from_millis(10)).await;
            assert_eq!(
                pool.stats(),
                PoolStats {
                    idle: 0,
                    busy: 2,
                    waiting: 6
                }
            );
            for h in handles {
                h.await;
            }
        });
        assert!(server.stats.max_open.load(SeqCst) <= 2);
        assert_eq!(server.accepted(), 2);
        // Two connections, each serving requests in queue order.
        let order = order.borrow();
        for pair in order.chunks(2) {
            assert!(pair[0] / 2 == pair[1] / 2, "{order:?}");
        }
        assert_eq!(
            pool.stats(),
            PoolStats {
                idle: 2,
                busy: 0,
                waiting: 0
            }
        );
    }

    /// Takes the pool's one slot for 500 ms (a call with a 2 s timeout of its own);
    /// returns once it is placed.
    async fn spawn_hog(
        pool: &Rc<Pool>,
    ) -> monoio::task::JoinHandle<Result<Response, BackendError>> {
        let p = pool.clone();
        let hog = monoio::spawn(async move {
            p.call_with_timeout(get("/delay/500/hog"), Duration::from_secs(2))
                .await
        });
        monoio::time::sleep(Duration::from_millis(20)).await;
        hog
    }

    #[test]
    fn saturated_when_no_slot_frees_up_in_time() {
        let server = Server::start();
        let mut s = settings();
        s.max_conns_per_shard = 1;
        s.request_timeout = Duration::from_millis(200);
        let pool = Rc::new(Pool::new(&server.url(""), s).unwrap());
        run(async {
            let hog = spawn_hog(&pool).await;
            let start = Instant::now();
            let err = pool.call(get("/echo")).await.unwrap_err();
            assert!(matches!(err, BackendError::Saturated), "{err:?}");
            assert!(start.elapsed() < Duration::from_millis(450));
            assert!(err.retry_safe());
            assert_eq!(err.side(), ErrorSide::Gateway);
            assert_eq!(pool.stats().waiting, 0, "timed-out waiter left the queue");
            assert_eq!(&hog.await.unwrap().body[..], b"hog");
            // The slot was released and the connection pooled.
            assert_eq!(pool.call(get("/echo")).await.unwrap().status, 200);
        });
        assert_eq!(server.accepted(), 1);
    }

    #[test]
    fn many_concurrent_requests_get_their_own_bodies() {
        let server = Server::start();
        let mut s = settings();
        s.max_conns_per_shard = 16;
        s.max_idle_per_shard = 16; // nothing is closed, so accepted == opened
        let pool = Rc::new(Pool::new(&server.url("/v1"), s).unwrap());
        run(async {
            let mut handles = Vec::new();
            for i in 0..64u8 {
                let pool = pool.clone();
                let len = if i % 16 == 0 {
                    300_000
                } else {
                    1 + usize::from(i) * 97
                };
                handles.push(monoio::spawn(async move {
                    let body = pattern(len, i);
                    let resp = pool.call(post("/echo", body.clone())).await.unwrap();
                    assert_eq!(resp.body, body, "request {i}");
                }));
            }
            for h in handles {
                h.await;
            }
        });
        assert!(server.accepted() <= 16, "{}", server.accepted());
        assert!(server.stats.max_open.load(SeqCst) <= 16);
        assert_eq!(server.requests().len(), 64);
    }

    #[test]
    fn header_injection_is_rejected_before_anything_is_sent() {
        let server = Server::start();
        let pool = Pool::new(&server.url(""), settings()).unwrap();
        let req = BackendRequest {
            headers: &[("X-User", "bob\r\nX-Admin: true")],
            ..post("/echo", Bytes::from_static(b"x"))
        };
        let err = run(pool.call(req)).unwrap_err();
        assert!(
            matches!(&err, BackendError::InvalidRequest(Http1Error::InvalidHeaderValue { name }) if name == "X-User"),
            "{err:?}"
        );
        assert_eq!(err.side(), ErrorSide::Request);
        assert!(!err.retry_safe());
        assert_eq!(server.accepted(), 0);
    }

    #[test]
    fn oversized_response_is_a_protocol_error() {
        let server = Server::start();
        let mut s = settings();
        s.max_response_bytes = 1000;
        let pool = Pool::new(&server.url(""), s).unwrap();
        let err = run(pool.call(post("/echo", pattern(1001, 0)))).unwrap_err();
        assert!(
            matches!(
                err,
                BackendError::Protocol(Http1Error::BodyTooLarge { limit: 1000 })
            ),
            "{err:?}"
        );
        assert_eq!(pool.stats().idle, 0);
    }

    fn pipelined(max_conns: usize, depth: usize) -> BackendSettings {
        BackendSettings {
            max_conns_per_shard: max_conns,
            max_idle_per_shard: max_conns,
            pipeline_depth: depth,
            ..settings()
        }
    }

    /// Spawns `n` concurrent echo calls with distinct bodies; checks each
    /// caller gets its own body back.
    async fn concurrent_echoes(pool: &Rc<Pool>, n: u8, len: usize) {
        let mut handles = Vec::new();
        for i in 0..n {
            let pool = pool.clone();
            handles.push(monoio::spawn(async move {
                let body = pattern(len + usize::from(i), i);
                let resp = pool.call(post("/echo", body.clone())).await.unwrap();
                assert_eq!(resp.body, body, "call {i}");
            }));
        }
        for h in handles {
            h.await;
        }
    }

    #[test]
    fn pipelined_requests_share_one_connection_and_are_answered_in_order() {
        let server = Server::start();
        let pool = Rc::new(Pool::new(&server.url(""), pipelined(1, 32)).unwrap());
        run(concurrent_echoes(&pool, 32, 700));
        assert_eq!(server.accepted(), 1);
        assert_eq!(server.requests().len(), 32);
        assert_eq!(pool.stats().idle, 1);
    }

    #[test]
    fn pipelining_keeps_to_the_connection_cap() {
        let server = Server::start();
        let pool = Rc::new(Pool::new(&server.url(""), pipelined(4, 8)).unwrap());
        // 4 concurrent calls: one connection each, none pipelined.
        run(async {
            let mut handles = Vec::new();
            for i in 0..4 {
                let pool = pool.clone();
                handles.push(monoio::spawn(async move {
                    let resp = pool.call(get(&format!("/delay/50/p{i}"))).await.unwrap();
                    assert_eq!(resp.body, format!("p{i}"));
                }));
            }
            for h in handles {
                h.await;
            }
            assert_eq!(server.accepted(), 4);
            // 32 more: the cap holds, the rest is pipelined on those 4.
            concurrent_echoes(&pool, 32, 10).await;
        });
        assert_eq!(server.accepted(), 4);
        assert!(server.stats.max_open.load(SeqCst) <= 4);
    }

    #[test]
    fn pipelined_calls_of_one_round_join_one_lane_whatever_their_affinity() {
        let server = Server::start();
        let pool = Pool::new(&server.url(""), pipelined(4, 64)).unwrap();
        run(async {
            // Four connections, each busy with a slow call: every lane is taken.
            let slow: Vec<_> = (0..4)
                .map(|i| {
                    started(
                        &pool,
                        get([
                            "/delay/100/a",
                            "/delay/100/b",
                            "/delay/100/c",
                            "/delay/100/d",
                        ][i]),
                    )
                })
                .collect();
            monoio::time::sleep(Duration::from_millis(30)).await;
            assert_eq!(server.accepted(), 4);
            // Twenty calls started in one go, with affinities that would spread them over
            // the four lanes: they all join the first one's batch.
            let quick: Vec<_> = (0..20u8)
                .map(|i| started(&pool, with_affinity(i, post("/echo", pattern(16, i)))))
                .collect();
            assert_eq!(lane_loads(&pool), vec![1, 1, 1, 21]);
            for (i, q) in quick.iter().enumerate() {
                assert_eq!(until_done(q).await.unwrap().body, pattern(16, i as u8));
            }
            for s in &slow {
                until_done(s).await.unwrap();
            }
        });
        assert_eq!(server.accepted(), 4);
    }

    #[test]
    fn pipelined_calls_of_one_round_share_one_idle_connection_and_the_next_round_takes_another() {
        let server = Server::start();
        let pool = Rc::new(Pool::new(&server.url(""), pipelined(4, 64)).unwrap());
        run(async {
            // Four connections, open and idle.
            let warm: Vec<_> = (0..4)
                .map(|_| {
                    let pool = pool.clone();
                    monoio::spawn(async move { pool.call(get("/delay/20/w")).await.unwrap() })
                })
                .collect();
            for w in warm {
                w.await;
            }
            assert_eq!(pool.stats().idle, 4);
            // One round: twelve calls, spreading affinities, all in one batch.
            let first: Vec<_> = (0..12u8)
                .map(|i| {
                    let path = ["/delay/100/a", "/echo"][usize::from(i > 0)];
                    started(&pool, with_affinity(i, get(path)))
                })
                .collect();
            assert_eq!(lane_loads(&pool), vec![0, 0, 0, 12]);
            // Once that batch is sent, the next round's calls start a batch on an idle
            // connection rather than queue behind the slow call.
            monoio::time::sleep(Duration::from_millis(20)).await;
            let second: Vec<_> = (0..3u8)
                .map(|i| started(&pool, post("/echo", pattern(8, i))))
                .collect();
            assert_eq!(lane_loads(&pool), vec![0, 0, 3, 12]);
            for (i, r) in second.iter().enumerate() {
                assert_eq!(until_done(r).await.unwrap().body, pattern(8, i as u8));
            }
            for r in &first {
                until_done(r).await.unwrap();
            }
        });
        assert_eq!(server.accepted(), 4);
    }

    #[test]
    fn slots_beyond_conns_times_depth_wait_in_line() {
        let server = Server::start();
        let pool = Rc::new(Pool::new(&server.url(""), pipelined(2, 3)).unwrap());
        run(async {
            let mut handles = Vec::new();
            for i in 0..10 {
                let pool = pool.clone();
                handles.push(monoio::spawn(async move {
                    pool.call(get(&format!("/delay/40/w{i}"))).await.unwrap()
                }));
            }
            monoio::time::sleep(Duration::from_millis(10)).await;
            assert_eq!(
                pool.stats(),
                PoolStats {
                    idle: 0,
                    busy: 6,
                    waiting: 4
                }
            );
            for (i, h) in handles.into_iter().enumerate() {
                assert_eq!(h.await.body, format!("w{i}"));
            }
        });
        assert_eq!(server.accepted(), 2);
    }

    #[test]
    fn requests_queued_behind_a_connection_close_are_retried_on_a_new_connection() {
        let server = Server::start();
        let pool = Rc::new(Pool::new(&server.url(""), pipelined(1, 4)).unwrap());
        run(async {
            let p = pool.clone();
            let first = monoio::spawn(async move { p.call(get("/close-header")).await });
            let p = pool.clone();
            let second = monoio::spawn(async move { p.call(post("/echo", pattern(300, 4))).await });
            let first = first.await.unwrap();
            assert_eq!((&first.body[..], first.keep_alive), (&b"last"[..], false));
            assert_eq!(second.await.unwrap().body, pattern(300, 4));
        });
        assert_eq!(server.accepted(), 2);
        let echoed: Vec<usize> = server
            .requests()
            .iter()
            .filter(|r| r.path == "/echo")
            .map(|r| r.conn)
            .collect();
        assert_eq!(echoed, [2], "answered once, on the new connection");
    }

    #[test]
    fn a_timed_out_request_drains_its_connection_without_failing_the_others() {
        let server = Server::start();
        let pool = Rc::new(Pool::new(&server.url(""), pipelined(1, 4)).unwrap());
        run(async {
            let p = pool.clone();
            let slow = monoio::spawn(async move {
                p.call_with_timeout(get("/delay/400/a"), Duration::from_millis(150))
                    .await
            });
            let p = pool.clone();
            let behind = monoio::spawn(async move {
                p.call_with_timeout(get("/delay/10/b"), Duration::from_secs(3))
                    .await
            });
            let err = slow.await.unwrap_err();
            assert!(matches!(err, BackendError::Timeout), "{err:?}");
            // The connection takes nothing new while it drains.
            let fresh = pool.call(post("/echo", pattern(20, 1))).await.unwrap();
            assert_eq!(fresh.body, pattern(20, 1));
            assert_eq!(&behind.await.unwrap().body[..], b"b");
            // Drained, then closed: the late response went nowhere.
            monoio::time::sleep(Duration::from_millis(20)).await;
            let again = pool.call(post("/echo", pattern(20, 2))).await.unwrap();
            assert_eq!(again.body, pattern(20, 2));
        });
        assert_eq!(server.accepted(), 2);
        assert_eq!(pool.stats().idle, 1);
    }

    /// Starts a call; the returned receiver yields its result.
    fn started(
        pool: &Pool,
        req: BackendRequest<'_>,
    ) -> Rc<RefCell<Option<Result<Response, BackendError>>>> {
        let out = Rc::new(RefCell::new(None));
        let o = out.clone();
        pool.start(
            req,
            Done::Callback(Box::new(move |r| {
                assert!(o.borrow_mut().replace(r).is_none(), "on_done ran twice");
            })),
        );
        out
    }

    /// `req` with the connection affinity `i` (as distinct clients would have).
    fn with_affinity(i: u8, req: BackendRequest<'_>) -> BackendRequest<'_> {
        BackendRequest {
            affinity: u64::from(i),
            ..req
        }
    }

    /// Calls on each of the pool's connections, smallest first.
    fn lane_loads(pool: &Pool) -> Vec<usize> {
        let mut loads: Vec<usize> = (pool.inner.lanes.borrow().iter())
            .map(|l| l.calls.borrow().len())
            .collect();
        loads.sort_unstable();
        loads
    }

    async fn until_done(
        r: &Rc<RefCell<Option<Result<Response, BackendError>>>>,
    ) -> Result<Response, BackendError> {
        for _ in 0..400 {
            if let Some(r) = r.borrow_mut().take() {
                return r;
            }
            monoio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("a started call never finished");
    }

    #[test]
    fn started_calls_answer_through_their_callback_without_a_task() {
        let server = Server::start();
        let pool = Pool::new(&server.url(""), pipelined(1, 16)).unwrap();
        run(async {
            // No connection yet: the first goes the slow way (a task connects).
            let first = started(&pool, post("/echo", pattern(10, 0)));
            assert_eq!(until_done(&first).await.unwrap().body, pattern(10, 0));
            // Now placed at once, pipelined on the one connection.
            let results: Vec<_> = (1..=12u8)
                .map(|i| started(&pool, post("/echo", pattern(50 + usize::from(i), i))))
                .collect();
            for (i, r) in results.iter().enumerate() {
                let i = i as u8 + 1;
                assert_eq!(
                    until_done(r).await.unwrap().body,
                    pattern(50 + usize::from(i), i)
                );
            }
            // Encoding errors come back through the callback too.
            let bad = started(
                &pool,
                BackendRequest {
                    headers: &[("X", "a\r\nb")],
                    ..get("/echo")
                },
            );
            assert!(matches!(
                until_done(&bad).await,
                Err(BackendError::InvalidRequest(_))
            ));
        });
        assert_eq!(server.accepted(), 1);
        assert_eq!(pool.stats().busy, 0, "every slot was given back");
    }

    #[test]
    fn started_calls_past_every_slot_queue_in_order_without_a_task_each() {
        let server = Server::start();
        let pool = Pool::new(&server.url(""), pipelined(1, 2)).unwrap();
        run(async {
            until_done(&started(&pool, post("/echo", pattern(4, 0))))
                .await
                .unwrap();
            let order = Rc::new(RefCell::new(Vec::new()));
            for i in 0..40u8 {
                let order = order.clone();
                pool.start(
                    post("/echo", pattern(20 + usize::from(i), i)),
                    Done::Callback(Box::new(move |r| {
                        let body = r.expect("answered").body;
                        assert_eq!(body, pattern(20 + usize::from(i), i));
                        order.borrow_mut().push(i);
                    })),
                );
            }
            // Two slots: two placed, the rest in the pool's queue (no task spawned yet).
            assert_eq!(
                pool.stats(),
                PoolStats {
                    idle: 0,
                    busy: 2,
                    waiting: 38
                }
            );
            for _ in 0..400 {
                if order.borrow().len() == 40 {
                    break;
                }
                monoio::time::sleep(Duration::from_millis(5)).await;
            }
            assert_eq!(*order.borrow(), (0..40).collect::<Vec<u8>>());
            assert_eq!(pool.stats().waiting, 0);
        });
        assert_eq!(server.accepted(), 1);
        assert_eq!(pool.stats().busy, 0, "every slot was given back");
    }

    #[test]
    fn queued_started_calls_answer_saturated_at_their_deadline() {
        let server = Server::start();
        let mut s = pipelined(1, 1);
        s.request_timeout = Duration::from_millis(200);
        let pool = Rc::new(Pool::new(&server.url(""), s).unwrap());
        run(async {
            let hog = spawn_hog(&pool).await;
            let t0 = Instant::now();
            let queued: Vec<_> = (0..5)
                .map(|i| started(&pool, post("/echo", pattern(8, i))))
                .collect();
            assert_eq!(pool.stats().waiting, 5);
            for q in &queued {
                assert!(matches!(until_done(q).await, Err(BackendError::Saturated)));
            }
            assert!(
                t0.elapsed() < Duration::from_millis(450),
                "{:?}",
                t0.elapsed()
            );
            assert_eq!(pool.stats().waiting, 0, "expired calls left the queue");
            assert_eq!(&hog.await.unwrap().body[..], b"hog");
            // The queue is empty and the slot free again: the next call is placed at once.
            let next = started(&pool, post("/echo", pattern(8, 9)));
            assert_eq!(until_done(&next).await.unwrap().body, pattern(8, 9));
        });
        assert_eq!(server.accepted(), 1);
    }

    #[test]
    fn started_calls_are_retried_and_timed_out_like_awaited_ones() {
        let server = Server::start();
        let mut s = pipelined(1, 4);
        s.request_timeout = Duration::from_millis(200);
        let pool = Pool::new(&server.url(""), s).unwrap();
        run(async {
            // Open the connection, then pipeline an echo behind a response that closes it:
            // the echo is retried on a new connection.
            let warm = started(&pool, post("/echo", pattern(5, 1)));
            until_done(&warm).await.unwrap();
            let closing = started(&pool, get("/close-header"));
            let behind = started(&pool, post("/echo", pattern(30, 2)));
            assert_eq!(&until_done(&closing).await.unwrap().body[..], b"last");
            assert_eq!(until_done(&behind).await.unwrap().body, pattern(30, 2));
            // Past the deadline the sweeper answers Timeout.
            let slow = started(&pool, get("/slow"));
            let t0 = Instant::now();
            assert!(matches!(
                until_done(&slow).await,
                Err(BackendError::Timeout)
            ));
            assert!(
                t0.elapsed() < Duration::from_millis(1000),
                "{:?}",
                t0.elapsed()
            );
        });
        assert_eq!(pool.stats().busy, 0);
    }

    #[test]
    fn legacy_driver_smoke() {
        let server = Server::start();
        let pool = Rc::new(Pool::new(&server.url(""), settings()).unwrap());
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        rt.block_on(async {
            assert_eq!(
                &pool.call(get("/chunked")).await.unwrap().body[..],
                b"hello, chunked world"
            );
            pool.call(get("/reset-next")).await.unwrap();
            let body = pattern(400_000, 9);
            assert_eq!(
                pool.call(post("/echo", body.clone())).await.unwrap().body,
                body
            );
            let mut handles = Vec::new();
            for i in 0..16u8 {
                let pool = pool.clone();
                handles.push(monoio::spawn(async move {
                    let resp = pool.call(get(&format!("/delay/5/x{i}"))).await.unwrap();
                    assert_eq!(resp.body, format!("x{i}"));
                }));
            }
            for h in handles {
                h.await;
            }
            let err = pool
                .call_with_timeout(get("/slow"), Duration::from_millis(100))
                .await
                .unwrap_err();
            assert!(matches!(err, BackendError::Timeout));
        });
    }

    #[test]
    fn a_pool_without_connections_is_refused() {
        assert!(matches!(
            Pool::new(
                "http://127.0.0.1:1",
                BackendSettings {
                    max_conns_per_shard: 0,
                    ..settings()
                }
            ),
            Err(BackendError::InvalidSettings(_))
        ));
    }

    #[test]
    fn path_joining() {
        assert_eq!(join_path("", ""), "/");
        assert_eq!(join_path("", "/a"), "/a");
        assert_eq!(join_path("/api", "a/b"), "/api/a/b");
        assert_eq!(join_path("/api", "/a?x=1"), "/api/a?x=1");
    }
}
