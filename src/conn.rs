//! One client connection, from the first byte of its HTTP upgrade to its close.
//!
//! Why it is shaped like this: an idle connection must cost a few hundred bytes
//! (DESIGN §1). The task parks on readiness (an io_uring PollAdd), not on a read with a
//! buffer; when readable it reads into the shard's read buffer and decodes in place,
//! keeping bytes of its own only for a partial frame. Everything others need to reach
//! the connection — its outbox, its wakeup, a close request, its session — sits in one
//! `Rc<ConnShared>` registered in the shard's slab; request tasks hold that `Rc` to
//! answer. The task's own locals (decoder, partial buffer, rate bucket) never leave it.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use monoio::net::TcpStream;

use crate::auth::Identity;
use crate::dispatch::{self, Queued};
use crate::metrics::HandshakeResult;
use crate::outbox::{Flush, LocalNotify, Outbox};
use crate::proto::bannou::{flags, ResponseCode, ResponseHeader};
use crate::proto::event::{manifest_message, ApiEntry};
use crate::proto::frame::{encode_header, OpCode, CLOSE_NORMAL};
use crate::proto::guid::SessionKey;
use crate::proto::handshake::{self, parse_upgrade, Credential, HandshakeError, UpgradeRequest};
use crate::proto::http1::{HeaderBlock, Http1Error};
use crate::proto::ratelimit::{Rate, TokenBucket};
use crate::proto::ws::{self, Decoder, Limits, Message, ProtocolError, Role};
use crate::shard::{unix_now, ShardCtx, READ_CHUNK};
use crate::sys::{self, Nb};

/// How long a server-initiated close waits for the client's close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// Reads per readiness wakeup before the task yields to others.
const READS_PER_WAKEUP: usize = 8;
/// Close code for a client that fell too far behind (reconnectable in Bannou's SDKs).
pub const CLOSE_OVERLOADED: u16 = 1013;
/// Close code for a session whose token expired.
pub const CLOSE_SESSION_EXPIRED: u16 = 4001;

/// The authenticated identity of a connection, fixed at upgrade.
#[derive(Debug)]
pub struct Session {
    pub session_id: Box<str>,
    pub account_id: Option<Box<str>>,
    pub roles: Vec<String>,
    /// The headers every backend request of this session carries; see
    /// [`Session::backend_headers`]. Built at the first request, so an idle connection
    /// does not hold them.
    backend_headers: std::cell::OnceCell<Result<HeaderBlock, Http1Error>>,
    pub key: SessionKey,
    /// The session's number on backend links (unique within the shard; docs/LINK.md).
    pub link_ref: u64,
    pub expires_at: Option<u64>,
    pub manifest_version: Cell<u64>,
}

impl Session {
    /// The headers every backend request of this session carries (`X-Bannou-Session-Id`,
    /// `X-Account-Id`, `X-Roles`, and `X-Correlation-Id: {session id}:` left open for
    /// each request's message id in 16 hex digits), checked and encoded once, at the
    /// first request. An error (a claim with a control character) fails each request,
    /// as it would have failed when checked per request.
    pub fn backend_headers(&self) -> &Result<HeaderBlock, Http1Error> {
        self.backend_headers.get_or_init(|| {
            let roles = self.roles.join(",");
            let mut headers = vec![("X-Bannou-Session-Id", &*self.session_id)];
            if let Some(a) = &self.account_id {
                headers.push(("X-Account-Id", a));
            }
            headers.push(("X-Roles", &roles));
            let prefix = format!("{}:", self.session_id);
            HeaderBlock::with_open_tail(&headers, "X-Correlation-Id", &prefix)
        })
    }
}

/// A request to end the connection, made from outside its task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseRequest {
    /// Send a close frame with this code and reason, then close. (The reason is
    /// borrowed for the gateway's own closes, owned for one a backend asked for.)
    Close(u16, std::borrow::Cow<'static, str>),
    /// Drop the connection now (the peer is gone).
    Abort,
}

/// A connection's pending close request (a `Cell`; `Debug` without needing `Copy`).
#[derive(Default)]
pub struct CloseSlot(Cell<Option<CloseRequest>>);

impl std::ops::Deref for CloseSlot {
    type Target = Cell<Option<CloseRequest>>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::fmt::Debug for CloseSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let req = self.0.take();
        let r = write!(f, "{req:?}");
        self.0.set(req);
        r
    }
}

/// The part of a connection that other tasks of its shard reach.
#[derive(Debug)]
pub struct ConnShared {
    pub session: Session,
    outbox: RefCell<Outbox>,
    notify: LocalNotify,
    close: CloseSlot,
    gone: Cell<bool>,
    last_rx: Cell<u32>,
    ping_sent: Cell<Option<u32>>,
    max_outbox: usize,
    /// Requests forwarded or queued now, and the bound at which reading pauses.
    inflight: Cell<u32>,
    max_inflight: u32,
    /// Reading is paused: the bound was reached and the count has not yet fallen to
    /// half of it.
    paused: Cell<bool>,
    metrics: std::sync::Arc<crate::metrics::ShardMetrics>,
    /// Ordered channels with a request in flight, and the requests waiting behind it.
    /// (A short list: it holds only channels busy right now, and costs nothing idle.)
    pub channels: RefCell<Vec<(u16, VecDeque<Queued>)>>,
}

impl ConnShared {
    /// Whether the connection has ended (answers for it are dropped).
    pub fn is_gone(&self) -> bool {
        self.gone.get()
    }

    /// Queues a binary message `head ++ payload`; `head` is the Bannou header. Returns
    /// false if the connection is gone or was just closed for overflowing.
    pub fn send_binary(&self, head: &[u8], payload: Bytes) -> bool {
        if self.gone.get() || self.closing() {
            return false;
        }
        let mut buf = [0u8; 14 + 31];
        let mut ws_head = [0u8; 14];
        let n = encode_header(
            &mut ws_head,
            true,
            OpCode::Binary,
            None,
            head.len() + payload.len(),
        );
        buf[..n].copy_from_slice(&ws_head[..n]);
        buf[n..n + head.len()].copy_from_slice(head);
        self.push(&buf[..n + head.len()], payload)
    }

    /// Queues an already-encoded frame (control frames: pongs and pings, which count
    /// against the outbox bound like any frame, so a client that pings and never
    /// reads is closed, not buffered without end).
    pub fn send_frame(&self, frame: Bytes) -> bool {
        if self.gone.get() || self.closing() {
            return false;
        }
        self.push(&[], frame)
    }

    fn push(&self, head: &[u8], payload: Bytes) -> bool {
        crate::metrics::bump(&self.metrics.frames_out, 1);
        let mut out = self.outbox.borrow_mut();
        out.push(head, payload);
        if out.backlog() > self.max_outbox {
            // Whole frames only before the close: the rest of one being written stays.
            out.drop_backlog();
            drop(out);
            self.metrics
                .outbox_overflows
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(session = %self.session.session_id, bound = self.max_outbox, "client too slow: outbox past its bound, closing with 1013");
            self.close.set(Some(CloseRequest::Close(
                CLOSE_OVERLOADED,
                "client too slow: outbox full".into(),
            )));
            self.notify.notify();
            return false;
        }
        drop(out);
        self.notify.notify();
        true
    }

    /// A request was accepted for forwarding; at the bound, reading pauses.
    pub fn request_started(&self) {
        let n = self.inflight.get() + 1;
        self.inflight.set(n);
        if n >= self.max_inflight {
            self.paused.set(true);
        }
    }

    /// A request finished. A paused connection resumes once half of the bound is free,
    /// not at the first free slot: resuming one request at a time would turn a backlog
    /// (the moment batches matter most) into one wakeup, one decode and one backend
    /// write per request, and a gateway behind its load would never catch up.
    pub fn request_done(&self) {
        let n = self.inflight.get().saturating_sub(1);
        self.inflight.set(n);
        if self.paused.get() && n <= self.max_inflight / 2 {
            self.paused.set(false);
            self.notify.notify();
        }
    }

    /// Whether the first capability manifest is still owed (held back until the
    /// client answers the upgrade's ping; `ServerConfig::manifest_after_pong`).
    pub fn manifest_due(&self) -> bool {
        self.session.manifest_version.get() == 0
    }

    /// Whether the manifest has been owed since before the sweep's previous tick: a
    /// client that does not answer the upgrade's ping gets it 1–2 s late, not never.
    pub fn manifest_overdue(&self, now: u32) -> bool {
        self.manifest_due() && now.saturating_sub(self.last_rx.get()) >= 1
    }

    /// Whether the connection may read more requests now.
    pub fn can_read(&self) -> bool {
        !self.paused.get()
    }

    /// Whether a close was asked for (or decided) already.
    pub fn closing(&self) -> bool {
        let req = self.close.take();
        let closing = req.is_some();
        self.close.set(req);
        closing
    }

    /// The close asked for, if any (left in place).
    pub fn close_request(&self) -> Option<CloseRequest> {
        let req = self.close.take();
        self.close.set(req.clone());
        req
    }

    /// Asks the connection to close (the first request wins).
    pub fn request_close(&self, code: u16, reason: impl Into<std::borrow::Cow<'static, str>>) {
        if !self.closing() {
            self.close
                .set(Some(CloseRequest::Close(code, reason.into())));
            self.notify.notify();
        }
    }

    /// The once-a-second sweep: session expiry, idle ping, pong deadline.
    pub fn on_tick(&self, now: u32, unix_now: u64, idle_ping: u32, pong_timeout: u32) {
        if self.gone.get() || self.closing() {
            return;
        }
        if let Some(exp) = self.session.expires_at {
            if unix_now >= exp {
                self.request_close(CLOSE_SESSION_EXPIRED, "session expired");
                return;
            }
        }
        if !self.can_read() {
            // Reading is paused for backpressure: the client's silence is ours.
            self.last_rx.set(now);
            return;
        }
        match self.ping_sent.get() {
            Some(at) if now.saturating_sub(at) >= pong_timeout => {
                self.close.set(Some(CloseRequest::Abort));
                self.notify.notify();
            }
            Some(_) => {}
            None if now.saturating_sub(self.last_rx.get()) >= idle_ping => {
                self.ping_sent.set(Some(now));
                self.send_frame(ws::ping_frame(b"", None));
            }
            None => {}
        }
    }
}

/// Why a handshake ended without an upgrade.
enum HandshakeFail {
    /// Answer with this HTTP error response.
    Reject(HandshakeResult, Bytes),
    /// The peer went away or the socket failed: nothing to answer.
    Gone,
}

/// Serves one accepted connection to its end.
pub async fn serve(ctx: Rc<ShardCtx>, stream: TcpStream) {
    let fd = stream.as_raw_fd();
    let timeout = Duration::from_millis(ctx.config.server.handshake_timeout_ms);
    let upgraded = match monoio::time::timeout(timeout, handshake(&ctx, &stream)).await {
        Ok(Ok(v)) => v,
        Ok(Err(HandshakeFail::Reject(result, response))) => {
            ctx.metrics.handshake(result);
            let _ = sys::send_vectored(fd, &[&response]);
            sys::shutdown_write(fd);
            return;
        }
        Ok(Err(HandshakeFail::Gone)) => {
            ctx.metrics.handshake(HandshakeResult::Closed);
            return;
        }
        Err(_) => {
            ctx.metrics.handshake(HandshakeResult::Timeout);
            let resp = handshake::error_response(408, "handshake timed out");
            let _ = sys::send_vectored(fd, &[&resp]);
            return;
        }
    };
    ctx.metrics.handshake(HandshakeResult::Ok);
    let (shared, leftover) = upgraded;
    // The session runs as a task of its own: this handshake task (with its timer and
    // parse state) ends here, so a parked idle connection holds only what `session`
    // needs.
    crate::shard::spawn_isolated("connection", session(ctx, stream, shared, leftover));
}

/// The upgraded connection's task, from the first frame to the close.
async fn session(ctx: Rc<ShardCtx>, stream: TcpStream, shared: Rc<ConnShared>, leftover: BytesMut) {
    let _registered = Registration {
        slot: ctx.add_conn(shared.clone()),
        ctx: &ctx,
        shared: &shared,
    };
    let mut conn = Conn {
        ctx: &ctx,
        shared: &shared,
        fd: stream.as_raw_fd(),
        decoder: Decoder::new(
            Role::Server,
            Limits {
                max_message_bytes: ctx.config.server.max_message_bytes,
            },
        ),
        // Bytes that came with the upgrade request (a first frame sent without waiting
        // for the 101) are decoded at once, as if a read had just stopped there.
        stalled: !leftover.is_empty(),
        partial: (!leftover.is_empty()).then_some(leftover),
        bucket: TokenBucket::new(rate(&ctx), ctx.now_ms()),
        closing: None,
        read_epoch: u64::MAX,
        gate_registered: u64::MAX,
    };
    match conn.run(&stream).await {
        Ok(()) => {
            tracing::debug!(shard = ctx.id, session = %shared.session.session_id, "connection closed")
        }
        Err(e) => {
            tracing::debug!(shard = ctx.id, session = %shared.session.session_id, error = %e, "connection ended")
        }
    }
}

/// A connection's place in its shard; leaving it (also by a panic) unregisters the
/// connection and drops what was queued for it.
struct Registration<'a> {
    ctx: &'a ShardCtx,
    shared: &'a ConnShared,
    slot: usize,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.shared.gone.set(true);
        if let Ok(mut out) = self.shared.outbox.try_borrow_mut() {
            out.clear();
        }
        if let Ok(mut ch) = self.shared.channels.try_borrow_mut() {
            ch.clear();
        }
        self.ctx.remove_conn(self.slot);
        self.ctx.session_ended(&self.shared.session);
    }
}

fn rate(ctx: &ShardCtx) -> Rate {
    Rate {
        per_sec: ctx.config.server.rate_limit_per_sec,
        burst: ctx.config.server.rate_limit_burst,
    }
}

/// Reads and checks the upgrade, authenticates, and queues the 101 and the manifest.
async fn handshake(
    ctx: &Rc<ShardCtx>,
    stream: &TcpStream,
) -> Result<(Rc<ConnShared>, BytesMut), HandshakeFail> {
    let fd = stream.as_raw_fd();
    let mut buf = BytesMut::with_capacity(1024);
    let (req, consumed) = loop {
        match sys::recv_into(fd, &mut buf).map_err(|_| HandshakeFail::Gone)? {
            Nb::Done(0) => return Err(HandshakeFail::Gone),
            Nb::Done(_) => {}
            Nb::WouldBlock => {
                stream
                    .readable(false)
                    .await
                    .map_err(|_| HandshakeFail::Gone)?;
                continue;
            }
        }
        match parse_upgrade(&buf, &ctx.config.server.path) {
            Ok(Some(done)) => break done,
            Ok(None) => {
                if buf.capacity() == buf.len() {
                    let room = (handshake::MAX_HANDSHAKE_BYTES + 1).saturating_sub(buf.len());
                    buf.reserve(room.clamp(1, 4096));
                }
            }
            Err(e) => return Err(reject(&e)),
        }
    };
    let leftover = BytesMut::from(&buf[consumed..]);
    drop(buf);

    if ctx.draining.get() {
        return Err(HandshakeFail::Reject(
            HandshakeResult::Draining,
            handshake::error_response(503, "server is shutting down"),
        ));
    }
    let origins = &ctx.config.auth.origins;
    if !origins.is_empty() {
        if let Some(origin) = &req.origin {
            if !origins.iter().any(|o| o == origin) {
                tracing::info!(shard = ctx.id, origin = %origin, "upgrade refused: origin not allowed");
                return Err(HandshakeFail::Reject(
                    HandshakeResult::Forbidden,
                    handshake::error_response(403, "origin not allowed"),
                ));
            }
        }
    }
    let identity = authenticate(ctx, &req)?;
    let session = new_session(ctx, identity);
    let shared = Rc::new(ConnShared {
        session,
        outbox: RefCell::default(),
        notify: LocalNotify::default(),
        close: CloseSlot::default(),
        gone: Cell::new(false),
        last_rx: Cell::new(ctx.now_secs()),
        ping_sent: Cell::new(None),
        max_outbox: ctx.config.server.max_outbox_bytes,
        inflight: Cell::new(0),
        max_inflight: ctx.config.server.max_inflight_per_connection,
        paused: Cell::new(false),
        metrics: ctx.metrics.clone(),
        channels: RefCell::default(),
    });
    let mut out = shared.outbox.borrow_mut();
    out.push_bytes(handshake::switching_protocols(&req));
    let after_pong = ctx.config.server.manifest_after_pong;
    if after_pong {
        // The manifest follows the client's answer (`Conn::consume`), so it cannot
        // arrive in the same read as the 101 (see `ServerConfig::manifest_after_pong`).
        out.push_bytes(ws::ping_frame(b"", None));
    }
    // However the connection ends from here on, the client gets its 101 first.
    out.keep_queued();
    drop(out);
    if !after_pong {
        send_manifest(ctx, &shared, "initial");
    }
    Ok((shared, leftover))
}

fn reject(e: &HandshakeError) -> HandshakeFail {
    HandshakeFail::Reject(HandshakeResult::from_status(e.status()), e.response())
}

fn unauthorized(ctx: &ShardCtx, why: &str) -> HandshakeFail {
    tracing::info!(shard = ctx.id, reason = why, "upgrade refused: 401");
    HandshakeFail::Reject(
        HandshakeResult::Unauthorized,
        handshake::error_response(401, "invalid or missing token"),
    )
}

fn authenticate(ctx: &ShardCtx, req: &UpgradeRequest) -> Result<Identity, HandshakeFail> {
    match &req.credential {
        Some(Credential::Bearer(token)) => ctx
            .auth
            .verify(token, unix_now().as_secs())
            .map_err(|e| unauthorized(ctx, e.as_str())),
        // Session resumption arrives with the session store (DESIGN §7).
        Some(Credential::Reconnect(_)) => Err(unauthorized(ctx, "reconnect token not recognised")),
        None => ctx
            .auth
            .anonymous(crate::sys::random_uuid())
            .ok_or_else(|| unauthorized(ctx, "no token")),
    }
}

fn new_session(ctx: &ShardCtx, id: Identity) -> Session {
    let session_id = id.session_id.unwrap_or_else(crate::sys::random_uuid);
    let mut roles = id.roles;
    if id.anonymous && !roles.iter().any(|r| r == "anonymous") {
        roles.push("anonymous".to_string());
    }
    Session {
        key: SessionKey::derive(&ctx.guid_secret, &session_id),
        link_ref: ctx.next_link_ref(),
        session_id: session_id.into(),
        account_id: id.account_id.map(Into::into),
        backend_headers: std::cell::OnceCell::new(),
        roles,
        expires_at: id.expires_at,
        manifest_version: Cell::new(0),
    }
}

/// Queues the session's capability manifest (the endpoints its roles permit).
pub fn send_manifest(ctx: &ShardCtx, shared: &ConnShared, reason: &str) {
    let s = &shared.session;
    let reg = ctx.registry.borrow().clone();
    let minter = s.key.minter();
    let apis: Vec<ApiEntry> = reg
        .visible(&s.roles)
        .map(|e| {
            ApiEntry::new(
                &minter.endpoint_guid(e.id),
                &e.path,
                &reg.services[e.service].name,
            )
        })
        .collect();
    let version = s.manifest_version.get() + 1;
    s.manifest_version.set(version);
    let msg = manifest_message(
        ctx.next_push_id(),
        &s.session_id,
        &apis,
        version,
        reason,
        &sys::random_bytes(),
        unix_now().as_nanos(),
    );
    let msg = Bytes::from(msg);
    shared.send_binary(&[], msg);
}

/// What the connection is doing about closing.
#[derive(Debug, Clone, Copy)]
enum Closing {
    /// We sent a close frame; waiting for the client's until the deadline.
    Sent { deadline: Instant },
    /// Flush what is queued (the close reply), then close the socket.
    FlushThenEnd,
}

/// The task-local half of a connection.
struct Conn<'a> {
    ctx: &'a Rc<ShardCtx>,
    shared: &'a Rc<ConnShared>,
    fd: RawFd,
    decoder: Decoder,
    /// Bytes of a frame not yet complete (only then does a connection own a buffer).
    partial: Option<BytesMut>,
    bucket: TokenBucket,
    closing: Option<Closing>,
    /// Complete requests wait in `partial` because the in-flight bound was reached.
    stalled: bool,
    /// The read gate's tick of the last read, and of the last wait for the next tick
    /// (see `crate::gate`).
    read_epoch: u64,
    gate_registered: u64,
}

/// What woke the connection task.
enum Wake {
    Readable(io::Result<()>),
    Writable(io::Result<()>),
    Notified,
    Deadline,
}

/// What reading found.
enum ReadOutcome {
    /// Keep going.
    More,
    /// The peer closed its side (or the close handshake completed).
    End,
}

impl Conn<'_> {
    async fn run(&mut self, stream: &TcpStream) -> io::Result<()> {
        let mut readable = pin!(stream.readable(false));
        let mut writable: Option<Pin<Box<dyn Future<Output = io::Result<()>> + '_>>> = None;
        let mut sleep: Option<Pin<Box<monoio::time::Sleep>>> = None;
        loop {
            // 0. Requests read before the in-flight bound stopped us.
            if self.stalled && self.shared.can_read() && self.resume_buffered() {
                return Ok(());
            }
            // 1. A close asked for from outside.
            if let Some(req) = self.shared.close.take() {
                match &req {
                    CloseRequest::Abort => return Ok(()),
                    CloseRequest::Close(code, reason) => {
                        if self.closing.is_none() {
                            self.begin_close(*code, reason);
                        }
                    }
                }
                // Keep the request visible so no further messages are queued.
                self.shared.close.set(Some(req));
            }
            // 2. Flush.
            if writable.is_none() {
                let (n, state) = self.shared.outbox.borrow_mut().flush(self.fd)?;
                if n > 0 {
                    crate::metrics::bump(&self.ctx.metrics.bytes_out, n as u64);
                }
                if state == Flush::Blocked {
                    writable = Some(Box::pin(stream.writable(false)));
                } else if matches!(self.closing, Some(Closing::FlushThenEnd)) {
                    sys::shutdown_write(self.fd);
                    return Ok(());
                }
            }
            if let Some(Closing::Sent { deadline }) = self.closing {
                if sleep.is_none() {
                    sleep = Some(Box::pin(monoio::time::sleep_until(deadline.into())));
                }
            }
            // 3. Wait for something to do.
            let wake = poll_fn(|cx| {
                if self.shared.notify.poll_take(cx.waker()) {
                    return Poll::Ready(Wake::Notified);
                }
                if let Some(w) = writable.as_mut() {
                    if let Poll::Ready(r) = w.as_mut().poll(cx) {
                        return Poll::Ready(Wake::Writable(r));
                    }
                }
                // Past the in-flight bound the client is not read (TCP backpressure)
                // until a request finishes and notifies; while the shard is busy, not
                // twice in one tick of the read gate.
                if self.shared.can_read()
                    && self.ctx.read_gate.may_read(
                        self.read_epoch,
                        &mut self.gate_registered,
                        cx.waker(),
                    )
                {
                    if let Poll::Ready(r) = readable.as_mut().poll(cx) {
                        return Poll::Ready(Wake::Readable(r));
                    }
                }
                if let Some(s) = sleep.as_mut() {
                    if s.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Wake::Deadline);
                    }
                }
                Poll::Pending
            })
            .await;
            match wake {
                Wake::Notified => {}
                Wake::Writable(r) => {
                    r?;
                    writable = None;
                }
                Wake::Readable(r) => {
                    r?;
                    self.read_epoch = self.ctx.read_gate.epoch();
                    let outcome = self.read_ready();
                    readable.set(stream.readable(false));
                    match outcome? {
                        ReadOutcome::More => {}
                        ReadOutcome::End => return Ok(()),
                    }
                }
                Wake::Deadline => return Ok(()),
            }
        }
    }

    /// Starts a server-initiated close: queue the close frame, wait for the reply.
    fn begin_close(&mut self, code: u16, reason: &str) {
        self.shared
            .outbox
            .borrow_mut()
            .push_bytes(ws::close_frame(Some((code, reason)), None));
        self.closing = Some(Closing::Sent {
            deadline: Instant::now() + CLOSE_WAIT,
        });
    }

    /// Fails the connection on a protocol violation: close frame with its code, then end.
    fn fail(&mut self, e: &ProtocolError) {
        tracing::debug!(shard = self.ctx.id, error = %e, code = e.close_code(), "protocol error");
        self.ctx
            .metrics
            .protocol_errors
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut out = self.shared.outbox.borrow_mut();
        out.drop_backlog();
        out.push_bytes(ws::close_frame(Some((e.close_code(), "")), None));
        drop(out);
        self.shared
            .close
            .set(Some(CloseRequest::Close(e.close_code(), "".into())));
        self.closing = Some(Closing::FlushThenEnd);
        self.partial = None;
    }

    /// Reads what is there (bounded) and handles every complete message.
    fn read_ready(&mut self) -> io::Result<ReadOutcome> {
        let ctx = self.ctx.clone();
        for _ in 0..READS_PER_WAKEUP {
            // Read into the connection's partial-frame buffer if it has one, else into
            // the shard's shared read buffer.
            let mut own = self.partial.take();
            let from_shard = own.is_none();
            let mut shard_buf = None;
            let buf: &mut BytesMut = match own.as_mut() {
                Some(p) => {
                    let want = self.decoder.pending_frame_len().unwrap_or(0);
                    p.reserve(want.saturating_sub(p.len()).clamp(4096, READ_CHUNK));
                    p
                }
                None => {
                    // Room is made only once less than half a chunk is left: the
                    // messages cut from this buffer are still in flight, so making
                    // room means a new buffer, which was an allocation (and fresh
                    // memory) per read when each read carried one request.
                    let b = shard_buf.insert(ctx.read_buf.borrow_mut());
                    if b.capacity() - b.len() < READ_CHUNK / 2 {
                        b.reserve(READ_CHUNK);
                    }
                    b
                }
            };
            let n = match sys::recv_into(self.fd, buf) {
                Ok(Nb::Done(0)) => return Ok(ReadOutcome::End),
                Ok(Nb::Done(n)) => n,
                Ok(Nb::WouldBlock) => {
                    self.partial = own;
                    return Ok(ReadOutcome::More);
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    return Ok(ReadOutcome::End)
                }
                Err(e) => return Err(e),
            };
            crate::metrics::bump(&ctx.metrics.bytes_in, n as u64);
            if matches!(self.closing, Some(Closing::FlushThenEnd)) {
                // Failing or answering a close: whatever else arrives is discarded.
                buf.clear();
                continue;
            }
            crate::clock::refresh();
            self.shared.last_rx.set(ctx.now_secs());
            self.shared.ping_sent.set(None);
            let end = self.consume(buf);
            // Keep only a partial frame, in a buffer of the connection's own.
            if matches!(self.closing, Some(Closing::FlushThenEnd)) || buf.is_empty() {
                buf.clear();
            } else if from_shard {
                let mut mine = BytesMut::with_capacity(buf.len().max(1024));
                mine.extend_from_slice(buf);
                buf.clear();
                self.partial = Some(mine);
            } else {
                self.partial = own;
            }
            if end {
                return Ok(ReadOutcome::End);
            }
            if self.stalled {
                // At the in-flight bound: read no further until requests finish.
                return Ok(ReadOutcome::More);
            }
            if n < READ_CHUNK / 2 {
                // A short read: the socket is most likely drained.
                return Ok(ReadOutcome::More);
            }
        }
        Ok(ReadOutcome::More)
    }

    /// Decodes and handles the complete messages at the front of `buf`, stopping early
    /// at the in-flight bound (the rest waits in the connection's own buffer; `stalled`
    /// says so). Returns true when the connection should end now.
    fn consume(&mut self, buf: &mut BytesMut) -> bool {
        if self.shared.manifest_due() && self.closing.is_none() {
            // The client answered (the upgrade's ping, or sent anything): the manifest
            // goes out now, ahead of any answer to what it sent.
            send_manifest(self.ctx, self.shared, "initial");
        }
        // One reading for the whole batch (the clock is refreshed per read anyway).
        let now_ms = self.ctx.now_ms();
        loop {
            if !self.shared.can_read() {
                self.stalled = !buf.is_empty();
                return false;
            }
            match self.decoder.decode(buf) {
                Ok(Some(msg)) => {
                    if self.on_message(msg, now_ms) {
                        return true;
                    }
                }
                Ok(None) => return false,
                Err(e) => {
                    buf.clear();
                    self.fail(&e);
                    return false;
                }
            }
        }
    }

    /// After a stall at the in-flight bound: handles what was already read.
    fn resume_buffered(&mut self) -> bool {
        self.stalled = false;
        let Some(mut buf) = self.partial.take() else {
            return false;
        };
        let end = self.consume(&mut buf);
        if !buf.is_empty() && !matches!(self.closing, Some(Closing::FlushThenEnd)) {
            self.partial = Some(buf);
        }
        end
    }

    /// Handles one message; returns true when the connection should end now.
    /// `now_ms`: `ShardCtx::now_ms` for the rate limiter.
    fn on_message(&mut self, msg: Message, now_ms: u64) -> bool {
        crate::metrics::bump(&self.ctx.metrics.frames_in, 1);
        match msg {
            Message::Binary(payload) => {
                if self.closing.is_none() {
                    let allowed = self.bucket.try_take(rate(self.ctx), now_ms);
                    dispatch::handle_request(self.ctx, self.shared, payload, allowed);
                }
                false
            }
            Message::Text(_) => {
                if self.closing.is_none() {
                    let h = ResponseHeader {
                        flags: flags::RESPONSE,
                        channel: 0,
                        sequence: 0,
                        message_id: u64::from_be_bytes(sys::random_bytes()),
                        code: ResponseCode::TextProtocolNotSupported.as_u8(),
                    };
                    self.shared.send_binary(&h.encode(), Bytes::new());
                }
                false
            }
            Message::Ping(p) => {
                self.shared.send_frame(ws::pong_frame(&p, None));
                false
            }
            Message::Pong(_) => false,
            Message::Close(frame) => match self.closing {
                // The reply to our close: done.
                Some(Closing::Sent { .. }) => true,
                Some(Closing::FlushThenEnd) => false,
                None => {
                    // Echo the client's status code (none if it sent none).
                    let code = frame.as_ref().map(|f| f.code);
                    self.shared
                        .outbox
                        .borrow_mut()
                        .push_bytes(ws::close_frame(code.map(|c| (c, "")), None));
                    self.shared.close.set(Some(CloseRequest::Close(
                        code.unwrap_or(CLOSE_NORMAL),
                        "".into(),
                    )));
                    self.closing = Some(Closing::FlushThenEnd);
                    false
                }
            },
        }
    }
}

#[cfg(test)]
mod tests_support {
    use super::*;

    pub fn shared(max_outbox: usize) -> ConnShared {
        ConnShared {
            session: Session {
                session_id: "s".into(),
                account_id: None,
                roles: vec![],
                backend_headers: std::cell::OnceCell::new(),
                key: SessionKey::derive(&[0; 32], "s"),
                link_ref: 1,
                expires_at: Some(100),
                manifest_version: Cell::new(0),
            },
            outbox: RefCell::default(),
            notify: LocalNotify::default(),
            close: CloseSlot::default(),
            gone: Cell::new(false),
            last_rx: Cell::new(0),
            ping_sent: Cell::new(None),
            max_outbox,
            inflight: Cell::new(0),
            max_inflight: 4,
            paused: Cell::new(false),
            metrics: Default::default(),
            channels: RefCell::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::shared;
    use super::*;

    #[test]
    fn a_client_past_its_outbox_bound_is_closed_with_1013_counted_and_its_backlog_dropped() {
        let c = shared(4096);
        let chunk = Bytes::from(vec![0u8; 1000]);
        // The first frame is the one being written; the bound is on what queues behind.
        for _ in 0..5 {
            assert!(c.send_binary(&[0; 16], chunk.clone()));
        }
        assert!(!c.send_binary(&[0; 16], chunk.clone()));
        assert_eq!(
            c.close_request(),
            Some(CloseRequest::Close(
                CLOSE_OVERLOADED,
                "client too slow: outbox full".into()
            ))
        );
        assert_eq!(
            c.metrics
                .outbox_overflows
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        assert!(
            c.outbox.borrow().is_empty(),
            "nothing was written yet: all dropped"
        );
        // Nothing more is queued once the close is decided.
        assert!(!c.send_binary(&[0; 16], Bytes::from_static(b"x")));
    }

    #[test]
    fn one_message_larger_than_the_bound_is_queued_for_a_client_that_reads() {
        let c = shared(4096);
        assert!(c.send_binary(&[0; 16], Bytes::from(vec![1u8; 64 * 1024])));
        assert_eq!(c.close_request(), None);
        assert!(c.send_binary(&[0; 16], Bytes::from_static(b"a small answer behind it")));
        assert_eq!(c.close_request(), None);
    }

    #[test]
    fn pongs_owed_to_a_client_that_never_reads_count_against_the_bound() {
        let c = shared(4096);
        let mut queued = 0;
        while c.send_frame(ws::pong_frame(&[7u8; 125], None)) {
            queued += 1;
            assert!(queued < 100, "pongs must not pile up past the bound");
        }
        assert!(c.outbox.borrow().len() <= 4096 + 127);
        assert_eq!(
            c.close_request(),
            Some(CloseRequest::Close(
                CLOSE_OVERLOADED,
                "client too slow: outbox full".into()
            ))
        );
        assert!(
            !c.send_frame(ws::pong_frame(b"", None)),
            "none once closing"
        );
    }

    #[test]
    fn a_manifest_owed_since_before_the_previous_tick_is_overdue() {
        let c = shared(1 << 20);
        c.last_rx.set(10);
        assert!(c.manifest_due());
        assert!(!c.manifest_overdue(10));
        assert!(c.manifest_overdue(11));
        c.session.manifest_version.set(1);
        assert!(!c.manifest_due());
        assert!(!c.manifest_overdue(20));
    }

    #[test]
    fn sweep_pings_an_idle_client_then_drops_it_after_the_pong_deadline() {
        let c = shared(1 << 20);
        c.on_tick(5, 0, 30, 10);
        assert!(c.outbox.borrow().is_empty(), "not idle long enough");
        c.on_tick(30, 0, 30, 10);
        assert_eq!(c.ping_sent.get(), Some(30));
        assert!(!c.outbox.borrow().is_empty(), "a ping was queued");
        c.on_tick(39, 0, 30, 10);
        assert_eq!(c.close_request(), None);
        c.on_tick(40, 0, 30, 10);
        assert_eq!(c.close_request(), Some(CloseRequest::Abort));
    }

    #[test]
    fn sweep_closes_an_expired_session_with_4001() {
        let c = shared(1 << 20);
        c.on_tick(1, 99, 30, 10);
        assert_eq!(c.close_request(), None);
        c.on_tick(2, 100, 30, 10);
        assert_eq!(
            c.close_request(),
            Some(CloseRequest::Close(
                CLOSE_SESSION_EXPIRED,
                "session expired".into()
            ))
        );
    }

    #[test]
    fn reading_pauses_at_the_inflight_bound_and_resumes_at_half_of_it() {
        let c = shared(1 << 20); // max_inflight = 4
        let w = std::task::Waker::noop();
        for _ in 0..3 {
            c.request_started();
        }
        assert!(c.can_read(), "below the bound");
        c.request_started();
        assert!(!c.can_read(), "at the bound");
        let _ = c.notify.poll_take(w);
        c.request_done();
        assert!(!c.can_read(), "one free slot does not resume reading");
        assert!(!c.notify.poll_take(w), "nor wake the connection");
        c.request_done();
        assert!(c.can_read(), "half of the bound free: reading resumes");
        assert!(
            c.notify.poll_take(w),
            "the connection task is woken to read again"
        );
        // Below the bound, finishing requests wakes nobody.
        c.request_done();
        assert!(!c.notify.poll_take(w));
    }
}
