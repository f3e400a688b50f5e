//! The session and its handle: what the rest of a shard reaches of a connection.
//!
//! Why apart from the connection task (`edge::conn`): request answers, backend links
//! and the shard's sweep all need to queue a frame for a client, ask it to close or
//! read its identity, while only the connection task touches the socket. So the
//! session's identity, its outbox, its wakeup and its close request sit in one
//! `Rc<ConnShared>` that any task of the shard may hold; the task's own locals
//! (decoder, partial buffer, rate bucket) never leave it. The push plane will find
//! sessions through the same handle (`session::SessionTable`).

use std::cell::{Cell, Ref, RefCell};
use std::io;
use std::rc::Rc;

use bytes::Bytes;

use crate::proto::frame::{encode_header, OpCode};
use crate::proto::guid::SessionKey;
use crate::proto::http1::{HeaderBlock, Http1Error};
use crate::rt::notify::LocalNotify;
use crate::rt::sys::Nb;
use crate::tls::{TlsSession, Wire};

use super::env::SessionEnv;
use super::outbox::{Flush, KeyedPush, Outbox};
use super::place::SessionRef;
use super::{CLOSE_OVERLOADED, CLOSE_SESSION_EXPIRED};

/// The authenticated identity of a connection, fixed at upgrade.
#[derive(Debug)]
pub struct Session {
    pub session_id: Box<str>,
    pub account_id: Option<Box<str>>,
    /// Granted at upgrade from the token's claims; changed at runtime by the push
    /// plane ([`Session::set_roles`]).
    roles: RefCell<Vec<String>>,
    /// The headers every backend request of this session carries; see
    /// [`Session::backend_headers`]. Built at the first request, so an idle connection
    /// does not hold them; dropped when the roles change.
    backend_headers: RefCell<Option<Rc<Result<HeaderBlock, Http1Error>>>>,
    pub key: SessionKey,
    /// The session's number on backend links (unique within the shard; docs/LINK.md).
    pub link_ref: u64,
    /// When the session expires (Unix seconds; `u64::MAX` = never: eight bytes, not
    /// sixteen, in every connection's handle).
    expires_at: u64,
    pub manifest_version: Cell<u32>,
    /// Which connection of the session this is (0 = the first; each resume starts the
    /// next): what its reconnection token names, so a token opens once.
    pub life: u32,
}

impl Session {
    pub fn new(
        session_id: Box<str>,
        account_id: Option<Box<str>>,
        roles: Vec<String>,
        key: SessionKey,
        link_ref: u64,
        expires_at: Option<u64>,
    ) -> Session {
        Session {
            session_id,
            account_id,
            roles: RefCell::new(roles),
            backend_headers: RefCell::new(None),
            key,
            link_ref,
            expires_at: expires_at.unwrap_or(u64::MAX),
            manifest_version: Cell::new(0),
            life: 0,
        }
    }

    /// The same session for its next connection (a resume): same id, account, roles,
    /// GUID key, link number and manifest count; the next life.
    pub fn successor(&self) -> Session {
        Session {
            session_id: self.session_id.clone(),
            account_id: self.account_id.clone(),
            roles: RefCell::new(self.roles.borrow().clone()),
            backend_headers: RefCell::new(None),
            key: self.key,
            link_ref: self.link_ref,
            expires_at: self.expires_at,
            manifest_version: Cell::new(self.manifest_version.get()),
            life: self.life.wrapping_add(1),
        }
    }

    /// The headers every backend request of this session carries (`X-Bannou-Session-Id`,
    /// `X-Account-Id`, `X-Roles`, and `X-Correlation-Id: {session id}:` left open for
    /// each request's message id in 16 hex digits), checked and encoded once, at the
    /// first request. An error (a claim with a control character) fails each request,
    /// as it would have failed when checked per request.
    pub fn backend_headers(&self) -> Rc<Result<HeaderBlock, Http1Error>> {
        if let Some(h) = &*self.backend_headers.borrow() {
            return h.clone();
        }
        let h = Rc::new({
            let roles = self.roles.borrow().join(",");
            let mut headers = vec![("X-Bannou-Session-Id", &*self.session_id)];
            if let Some(a) = &self.account_id {
                headers.push(("X-Account-Id", a));
            }
            headers.push(("X-Roles", &roles));
            let prefix = format!("{}:", self.session_id);
            HeaderBlock::with_open_tail(&headers, "X-Correlation-Id", &prefix)
        });
        *self.backend_headers.borrow_mut() = Some(h.clone());
        h
    }

    /// The same session, now expiring at `expires_at` (a resume with a new bearer
    /// token carries its expiry).
    pub fn until(mut self, expires_at: Option<u64>) -> Session {
        self.expires_at = expires_at.unwrap_or(u64::MAX);
        self
    }

    /// When the session expires (Unix seconds), if it does.
    pub fn expires_at(&self) -> Option<u64> {
        (self.expires_at != u64::MAX).then_some(self.expires_at)
    }

    /// The session's roles now.
    pub fn roles(&self) -> Ref<'_, Vec<String>> {
        self.roles.borrow()
    }

    /// Grants `add` and revokes `remove` (a role in both is revoked); returns whether
    /// the roles changed. Backend requests from now on carry the new `X-Roles`.
    pub fn change_roles(&self, add: &[String], remove: &[String]) -> bool {
        let mut roles = self.roles.borrow_mut();
        let before = roles.clone();
        for r in add {
            if !roles.contains(r) {
                roles.push(r.clone());
            }
        }
        roles.retain(|r| !remove.contains(r));
        let changed = *roles != before;
        drop(roles);
        if changed {
            *self.backend_headers.borrow_mut() = None;
        }
        changed
    }
}

/// What [`ConnShared::queue_pushed`] did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queued {
    /// Nothing (gone, closing, or closed now for overflowing).
    No,
    /// Queued; the connection's task writes it (or the push inbox already will).
    Yes,
    /// Queued for a client with nothing else queued: the caller writes it with
    /// [`ConnShared::flush_now`] once it has queued everything it has for now.
    FlushLater,
}

/// A `life_flags` bit (the others are `super::parked`'s): the connection reads no more.
const NO_READS: u8 = 0x80;
/// A `life_flags` bit: a raw route's connection.
const RAW: u8 = 0x40;
/// A `life_flags` bit: the connection has a TLS session (`tls`).
const TLS: u8 = 0x20;

/// The sweep's idle ping: a final Ping frame with no payload, unmasked (server side).
const IDLE_PING: &[u8] = &[0x89, 0x00];

/// The disconnect notice's reason for a session whose JWT expired: the value Bannou's
/// TypeScript SDK maps to its `SessionExpired` (it matches `"session_expired"`).
pub const SESSION_EXPIRED_REASON: &str = "session_expired";

/// The sweep's timers (seconds), from `[server]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// `idle_ping_secs`: a ping after this long without a byte from the client.
    pub idle_ping: u32,
    /// `pong_timeout_secs`: then, without a byte this long, the connection is dropped.
    pub pong_timeout: u32,
    /// `idle_timeout_secs`: without a whole message (pongs count) this long, the
    /// connection is closed with 1001 "idle timeout"; 0 = never.
    pub idle_timeout: u32,
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

/// A connection's TLS session, taken for each use and put back (see `ConnShared::tls`).
#[derive(Default)]
struct TlsSlot(Cell<Option<Box<TlsSession>>>);

impl std::ops::Deref for TlsSlot {
    type Target = Cell<Option<Box<TlsSession>>>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::fmt::Debug for TlsSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = self.0.take();
        let r = write!(f, "{}", if t.is_some() { "tls" } else { "-" });
        self.0.set(t);
        r
    }
}

/// When the sweep's idle ping went out (shard seconds), if one is unanswered: an
/// `Option<u32>` in four bytes (`u32::MAX` = none), which keeps the handle within one
/// allocator size class.
#[derive(Debug)]
pub(crate) struct PingSent(Cell<u32>);

impl PingSent {
    pub(crate) fn get(&self) -> Option<u32> {
        Some(self.0.get()).filter(|&at| at != u32::MAX)
    }

    pub(crate) fn set(&self, at: Option<u32>) {
        self.0.set(at.unwrap_or(u32::MAX));
    }
}

/// The part of a connection that other tasks of its shard reach.
#[derive(Debug)]
pub struct ConnShared {
    pub session: Session,
    /// Where the connection sits in its shard's table (`SessionRef::NONE` until it is
    /// added): what a push names it by, and what its peer GUID encodes.
    pub(crate) at: Cell<SessionRef>,
    /// The connection's socket (set by its task), for the push inbox's writes
    /// (`flush_now`); -1 until then and once the task ends.
    fd: Cell<i32>,
    /// The push inbox queued frames here and will write them itself at the end of its
    /// batch (`queue_shared`, `flush_now`): the task need not be woken for them.
    flush_pending: Cell<bool>,
    /// The connection's TLS session (`wss://`), which every read and write of the
    /// socket goes through; none for a plain connection, and none once it has ended
    /// (a parked session keeps no TLS state). A `Cell` (taken for each call, put back:
    /// `with_wire`) keeps the handle in its allocator size class.
    tls: TlsSlot,
    pub(crate) outbox: RefCell<Outbox>,
    pub(crate) notify: LocalNotify,
    pub(crate) close: CloseSlot,
    pub(crate) gone: Cell<bool>,
    pub(crate) last_rx: Cell<u32>,
    /// When the client last completed a message (pongs included; shard seconds): a
    /// client that sends bytes but no whole message stays `idle` (`Timers`).
    pub(crate) last_msg: Cell<u32>,
    pub(crate) ping_sent: PingSent,
    /// `server.max_outbox_bytes` (at most 1 GiB: a `u32` keeps the handle small).
    max_outbox: u32,
    /// Requests forwarded or queued now (reading pauses at `SessionEnv::max_inflight`).
    inflight: Cell<u32>,
    /// Reading is paused: the bound was reached and the count has not yet fallen to
    /// half of it.
    paused: Cell<bool>,
    /// Parked, superseded, ended on purpose (`super::parked`).
    pub(super) life_flags: Cell<u8>,
    /// Events dropped (oldest first) while parked, past `resume_buffer_bytes`.
    pub(super) lost: Cell<u32>,
    pub(super) env: std::sync::Arc<SessionEnv>,
}

impl ConnShared {
    /// The handle of a session just upgraded; `now_secs` is the shard's coarse clock
    /// (its idle timers count from here).
    pub fn new(
        session: Session,
        max_outbox: usize,
        env: std::sync::Arc<SessionEnv>,
        now_secs: u32,
    ) -> ConnShared {
        ConnShared {
            session,
            at: Cell::new(SessionRef::NONE),
            fd: Cell::new(-1),
            flush_pending: Cell::new(false),
            tls: TlsSlot::default(),
            outbox: RefCell::default(),
            notify: LocalNotify::default(),
            close: CloseSlot::default(),
            gone: Cell::new(false),
            last_rx: Cell::new(now_secs),
            last_msg: Cell::new(now_secs),
            ping_sent: PingSent(Cell::new(u32::MAX)),
            max_outbox: u32::try_from(max_outbox).unwrap_or(u32::MAX),
            inflight: Cell::new(0),
            paused: Cell::new(false),
            life_flags: Cell::new(0),
            lost: Cell::new(0),
            env,
        }
    }

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

    /// Queues a plain WebSocket message (`ws_head` its frame header) for a raw
    /// route's client (no Bannou header).
    pub fn send_raw_frame(&self, ws_head: &[u8], payload: Bytes) -> bool {
        if self.gone.get() || self.closing() {
            return false;
        }
        self.push(ws_head, payload)
    }

    /// Whether this is a raw route's connection (plain WebSocket messages relayed to a
    /// link service; no manifest, no pushes other than its backend's SENDs).
    pub fn is_raw(&self) -> bool {
        self.life_flags.get() & RAW != 0
    }

    /// Marks a raw route's connection (at its upgrade): it ends with its connection
    /// (never parked) and broadcasts skip it.
    pub fn mark_raw(&self) {
        self.life_flags.set(self.life_flags.get() | RAW);
        self.mark_final();
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

    /// The socket the connection task serves (for `flush_now`).
    pub fn set_fd(&self, fd: i32) {
        self.fd.set(fd);
    }

    /// The connection's TLS session (its handshake done), before its task starts.
    pub fn set_tls(&self, tls: Option<Box<TlsSession>>) {
        let flags = self.life_flags.get() & !TLS;
        self.life_flags
            .set(if tls.is_some() { flags | TLS } else { flags });
        self.tls.set(tls);
    }

    /// Drops the TLS session (the connection ended: a parked session keeps none).
    pub fn clear_tls(&self) {
        self.set_tls(None);
    }

    /// Runs `f` on the connection's wire: `fd`, through its TLS session if it has one.
    /// A TLS connection whose session is out (a call within a call, which the shard's
    /// single thread never makes) gets an error, never a plaintext write.
    fn with_wire<R>(
        &self,
        fd: i32,
        f: impl FnOnce(&mut Wire<'_>) -> io::Result<R>,
    ) -> io::Result<R> {
        let mut tls = self.tls.take();
        if tls.is_none() && self.life_flags.get() & TLS != 0 {
            return Err(io::Error::other("the connection's TLS session is in use"));
        }
        let r = f(&mut Wire::new(fd, tls.as_deref_mut()));
        self.tls.set(tls);
        r
    }

    /// Writes the outbox to `fd` (through the TLS session, if any): as `Outbox::flush`.
    pub(crate) fn flush_to(&self, fd: i32) -> io::Result<(usize, Flush)> {
        self.with_wire(fd, |w| self.outbox.borrow_mut().flush_to(w))
    }

    /// Reads from `fd` into `buf` (plaintext, through the TLS session, if any): as
    /// `sys::recv_into`.
    pub(crate) fn recv_into(&self, fd: i32, buf: &mut bytes::BytesMut) -> io::Result<Nb> {
        self.with_wire(fd, |w| w.recv_into(buf))
    }

    /// Ends what the gateway sends on `fd` (close_notify first, with TLS; then the FIN).
    pub(crate) fn shutdown_write(&self, fd: i32) {
        let _ = self.with_wire(fd, |w| {
            w.shutdown_write();
            Ok(())
        });
    }

    /// Queues a shared frame for the push inbox, which writes it itself at the end of
    /// its batch ([`ConnShared::flush_now`]) — one write per client per batch, and no
    /// wakeup of its task — when nothing else was queued for the client; else the task
    /// is woken as usual. `key`: a conflation key (a keyed topic message replaces an
    /// unsent older one with the same key, counted).
    pub fn queue_pushed(&self, frame: Bytes, key: Option<&Bytes>) -> Queued {
        if self.gone.get() || self.closing() {
            return Queued::No;
        }
        let mut out = self.outbox.borrow_mut();
        let idle = out.is_empty();
        match key {
            Some(key) => match out.push_keyed(frame, key) {
                KeyedPush::Replaced => crate::metrics::bump(&self.env.metrics.conflated, 1),
                KeyedPush::Queued => crate::metrics::bump(&self.env.metrics.frames_out, 1),
            },
            None => {
                crate::metrics::bump(&self.env.metrics.frames_out, 1);
                out.push_shared(frame);
            }
        }
        let over = out.backlog() > self.max_outbox as usize;
        drop(out);
        if self.is_parked() {
            self.trim_parked();
            return Queued::Yes;
        }
        if over {
            self.overflowed();
            return Queued::No;
        }
        if self.flush_pending.get() {
            Queued::Yes
        } else if idle && self.fd.get() >= 0 {
            self.flush_pending.set(true);
            Queued::FlushLater
        } else {
            self.notify.notify();
            Queued::Yes
        }
    }

    /// Writes what is queued, from the push inbox at the end of its batch (see
    /// [`ConnShared::queue_pushed`]); what the socket does not take is left to the
    /// connection's task, woken for it.
    pub fn flush_now(&self) {
        self.flush_pending.set(false);
        let fd = self.fd.get();
        if self.gone.get() || fd < 0 {
            return;
        }
        if self.closing() {
            self.notify.notify();
            return;
        }
        let flushed = self.flush_to(fd);
        match flushed {
            Ok((n, Flush::Empty)) => crate::metrics::bump(&self.env.metrics.bytes_out, n as u64),
            Ok((n, Flush::Blocked)) => {
                crate::metrics::bump(&self.env.metrics.bytes_out, n as u64);
                self.notify.notify();
            }
            // The task meets the error at its own flush.
            Err(_) => self.notify.notify(),
        }
    }

    /// Whether the client's backlog is past half its bound: what another client sends it
    /// (a peer message) is refused rather than queued, so no client can get another
    /// closed for slowness by flooding it.
    pub fn busy(&self) -> bool {
        self.outbox.borrow().backlog() > self.max_outbox as usize / 2
    }

    /// The connection's place in its shard's table.
    pub fn at(&self) -> SessionRef {
        self.at.get()
    }

    fn push(&self, head: &[u8], payload: Bytes) -> bool {
        self.push_with(|out| out.push(head, payload))
    }

    /// Queues what `queue` puts in the outbox, then applies the bound, the parked
    /// session's trim and the wakeup as for any frame.
    fn push_with(&self, queue: impl FnOnce(&mut Outbox)) -> bool {
        crate::metrics::bump(&self.env.metrics.frames_out, 1);
        let mut out = self.outbox.borrow_mut();
        queue(&mut out);
        let over = out.backlog() > self.max_outbox as usize;
        drop(out);
        if self.is_parked() {
            self.trim_parked();
            return true;
        }
        if over {
            self.overflowed();
            return false;
        }
        // (A push inbox batch that queued here writes it itself at its end.)
        if !self.flush_pending.get() {
            self.notify.notify();
        }
        true
    }

    /// The backlog passed its bound: the client is too slow. It gets the disconnect
    /// notice (reconnectable) and a close with 1013, its task woken.
    #[cold]
    fn overflowed(&self) {
        let mut out = self.outbox.borrow_mut();
        // Whole frames only before the close: the rest of one being written stays.
        out.drop_backlog();
        if !self.is_raw() {
            out.push_bytes(self.disconnect_notice("client too slow"));
        }
        drop(out);
        self.env
            .metrics
            .outbox_overflows
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(session = %self.session.session_id, bound = self.max_outbox, "client too slow: outbox past its bound, closing with 1013");
        self.close.set(Some(CloseRequest::Close(
            CLOSE_OVERLOADED,
            "client too slow: outbox full".into(),
        )));
        self.notify.notify();
    }

    /// A request was accepted for forwarding; at the bound, reading pauses.
    pub fn request_started(&self) {
        let n = self.inflight.get() + 1;
        self.inflight.set(n);
        if n >= self.env.max_inflight {
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
        if self.paused.get() && n <= self.env.max_inflight / 2 {
            self.paused.set(false);
            self.notify.notify();
        }
    }

    /// Whether the first capability manifest is still owed (held back until the
    /// client answers the upgrade's ping; `ServerConfig::manifest_after_pong`).
    pub fn manifest_due(&self) -> bool {
        self.session.manifest_version.get() == 0 && !self.is_raw()
    }

    /// Whether the manifest has been owed since before the sweep's previous tick: a
    /// client that does not answer the upgrade's ping gets it 1–3 s late, not never.
    /// (Two ticks of the coarse clock: at least a whole second after the upgrade, so
    /// the manifest never follows the `101` closely enough to share its read.)
    pub fn manifest_overdue(&self, now: u32) -> bool {
        self.manifest_due() && now.saturating_sub(self.last_rx.get()) >= 2
    }

    /// Whether the connection may read more requests now.
    pub fn can_read(&self) -> bool {
        !self.paused.get() && self.life_flags.get() & NO_READS == 0
    }

    /// Stops reading the client for good (the shutdown drain reached it): what it
    /// sent already is answered, nothing more is taken.
    pub fn stop_reading(&self) {
        self.life_flags.set(self.life_flags.get() | NO_READS);
        self.notify.notify();
    }

    /// Requests of this connection being forwarded or queued now.
    pub fn inflight(&self) -> u32 {
        self.inflight.get()
    }

    /// Whether a close was asked for (or decided) already.
    pub fn closing(&self) -> bool {
        let req = self.close.take();
        let closing = req.is_some();
        self.close.set(req);
        closing
    }

    /// The close asked for, if any (left in place).
    #[cfg(test)]
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

    /// The once-a-second sweep: session expiry, idle timeout, idle ping, pong deadline.
    pub fn on_tick(&self, now: u32, unix_now: u64, t: Timers) {
        if self.gone.get() || self.closing() || self.is_parked() {
            return;
        }
        if let Some(exp) = self.session.expires_at() {
            if unix_now >= exp {
                crate::metrics::bump(&self.env.metrics.sessions_expired, 1);
                // The notice first (nothing is queued once the close is asked for);
                // its reason is the one Bannou's SDKs read as SessionExpired.
                self.send_frame(self.final_notice(SESSION_EXPIRED_REASON));
                self.request_final_close(CLOSE_SESSION_EXPIRED, "session expired");
                return;
            }
        }
        if !self.can_read() {
            // Reading is paused for backpressure: the client's silence is ours.
            self.last_rx.set(now);
            self.last_msg.set(now);
            return;
        }
        if t.idle_timeout > 0 && now.saturating_sub(self.last_msg.get()) >= t.idle_timeout {
            // Bytes, perhaps, but no whole message (not even a pong) for that long: a
            // client trickling a frame never lets the ping below fire.
            crate::metrics::bump(&self.env.metrics.idle_timeouts, 1);
            self.request_close(crate::proto::frame::CLOSE_GOING_AWAY, "idle timeout");
            return;
        }
        match self.ping_sent.get() {
            Some(at) if now.saturating_sub(at) >= t.pong_timeout => {
                crate::metrics::bump(&self.env.metrics.pong_timeouts, 1);
                self.close.set(Some(CloseRequest::Abort));
                self.notify.notify();
            }
            Some(_) => {}
            None if now.saturating_sub(self.last_rx.get()) >= t.idle_ping => {
                self.ping_sent.set(Some(now));
                if !self.gone.get() && !self.closing() {
                    // Shared, not copied into the outbox's tail (whose first buffer is
                    // 2 KiB): clients that went idle together are pinged in one sweep,
                    // and 2,000 of them took 2–3 MiB at once for two bytes each.
                    self.push_with(|out| out.push_shared(Bytes::from_static(IDLE_PING)));
                }
            }
            None => {}
        }
    }
}

impl ConnShared {
    /// The disconnect notice (docs/DESIGN.md §2, §7) as a binary push frame: the client
    /// may reconnect, and resume the session with the token it carries while the
    /// session is resumable.
    pub fn disconnect_notice(&self, reason: &str) -> Bytes {
        let now = crate::rt::task::unix_now();
        let token = self.reconnection_token().filter(|_| !self.is_final());
        let resume = token
            .as_deref()
            .map(|token| crate::proto::event::Resumable {
                token,
                until_unix_nanos: now.as_nanos() + u128::from(self.env.window_secs) * 1_000_000_000,
            });
        disconnect_notice(reason, resume, true)
    }

    /// The disconnect notice before a close that ends the session for good because
    /// its credentials did (its JWT expired): `reconnectable: false` and no token, as
    /// neither a resume nor a reconnection with the same JWT would be accepted; the
    /// client needs a new token first.
    pub fn final_notice(&self, reason: &str) -> Bytes {
        disconnect_notice(reason, None, false)
    }
}

/// The disconnect notice as a binary push frame.
fn disconnect_notice(
    reason: &str,
    resume: Option<crate::proto::event::Resumable<'_>>,
    reconnectable: bool,
) -> Bytes {
    let now = crate::rt::task::unix_now();
    let id = crate::proto::event::push_message_id(
        now.as_millis() as u64,
        u16::from_le_bytes(crate::rt::sys::random_bytes()),
    );
    let msg = crate::proto::event::disconnect_message(
        id,
        reason,
        resume,
        reconnectable,
        &crate::rt::sys::random_bytes(),
        now.as_nanos(),
    );
    let mut ws_head = [0u8; 14];
    let n = encode_header(&mut ws_head, true, OpCode::Binary, None, msg.len());
    let mut frame = Vec::with_capacity(n + msg.len());
    frame.extend_from_slice(&ws_head[..n]);
    frame.extend_from_slice(&msg);
    Bytes::from(frame)
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    pub fn shared(max_outbox: usize) -> ConnShared {
        shared_numbered(max_outbox, 1)
    }

    /// A handle whose session has the shard-unique number `link_ref`.
    pub fn shared_numbered(max_outbox: usize, link_ref: u64) -> ConnShared {
        let session = Session::new(
            "s".into(),
            None,
            vec![],
            SessionKey::derive(&[0; 32], "s"),
            link_ref,
            Some(100),
        );
        let env = SessionEnv {
            max_inflight: 4,
            ..Default::default()
        };
        ConnShared::new(session, max_outbox, std::sync::Arc::new(env), 0)
    }

    /// A handle on a shard whose sessions are resumable, with `resume_buffer` bytes
    /// kept while away.
    pub fn resumable(resume_buffer: usize) -> ConnShared {
        let c = shared(1 << 20);
        let env = super::SessionEnv {
            resume: Some(std::sync::Arc::new(crate::proto::resume::ResumeKey::new(
                [9; 32],
            ))),
            window_secs: 60,
            resume_buffer,
            max_inflight: 4,
            ..Default::default()
        };
        ConnShared::new(c.session.successor(), 1 << 20, std::sync::Arc::new(env), 0)
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::shared;
    use super::*;
    use crate::proto::ws;
    use std::sync::atomic::Ordering::Relaxed;

    const TIMERS: Timers = Timers {
        idle_ping: 30,
        pong_timeout: 10,
        idle_timeout: 0,
    };

    #[test]
    fn a_client_past_its_outbox_bound_is_closed_with_1013_counted_and_its_backlog_dropped() {
        let c = shared(4096);
        let chunk = Bytes::from(vec![0u8; 1000]);
        // The first frame is the one being written and the largest behind it is left
        // out: the bound is on the rest (4 × 1,020 bytes fit in 4,096; 5 do not).
        for _ in 0..6 {
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
            c.env
                .metrics
                .outbox_overflows
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        // Nothing was written yet: all dropped, and the disconnect notice queued in
        // their place (a binary push the client may act on before the close).
        let notice = disconnect_notice("x", None, true);
        assert_eq!(
            c.outbox.borrow().len(),
            notice.len() - 1 + "client too slow".len()
        );
        // Nothing more is queued once the close is decided.
        assert!(!c.send_binary(&[0; 16], Bytes::from_static(b"x")));
    }

    #[test]
    fn the_disconnect_notice_is_a_binary_push_saying_the_client_may_reconnect() {
        let f = disconnect_notice("client too slow", None, true);
        assert_eq!(f[0], 0x82, "one binary frame");
        let body = &f[2 + if f[1] == 126 { 2 } else { 0 }..];
        let h = crate::proto::bannou::RequestHeader::decode(body).unwrap();
        assert!(h.is_push());
        let v: serde_json::Value = serde_json::from_slice(&body[31..]).unwrap();
        assert_eq!(v["eventName"], "connect.disconnect-notification");
        assert_eq!(v["reconnectable"], true);
        assert_eq!(v["reason"], "client too slow");
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
    fn the_idle_ping_is_the_empty_ping_frame_and_queues_without_a_tail_buffer() {
        assert_eq!(IDLE_PING, &ws::ping_frame(b"", None)[..]);
        let c = shared(1 << 20);
        let before = crate::rt::heap_count::held();
        c.on_tick(31, 0, TIMERS);
        let held = crate::rt::heap_count::held() - before;
        assert_eq!(c.ping_sent.get(), Some(31));
        assert_eq!(c.outbox.borrow().len(), 2, "the ping is queued");
        assert!(held < 512, "{held} bytes for a two-byte ping");
    }

    #[test]
    fn the_session_handle_stays_within_its_allocator_size_class() {
        // Rc<ConnShared> = 16 + size: at 384 bytes or less it is one 384-byte block
        // (mimalloc); past it, 448 — 64 more bytes for every idle connection.
        assert!(
            std::mem::size_of::<ConnShared>() <= 368,
            "{} bytes",
            std::mem::size_of::<ConnShared>()
        );
    }

    #[test]
    fn a_manifest_owed_for_two_ticks_of_the_coarse_clock_is_overdue() {
        let c = shared(1 << 20);
        c.last_rx.set(10);
        assert!(c.manifest_due());
        assert!(!c.manifest_overdue(10));
        assert!(
            !c.manifest_overdue(11),
            "not within the second after the upgrade"
        );
        assert!(c.manifest_overdue(12));
        c.session.manifest_version.set(1);
        assert!(!c.manifest_due());
        assert!(!c.manifest_overdue(20));
    }

    #[test]
    fn sweep_pings_an_idle_client_then_drops_it_after_the_pong_deadline() {
        let c = shared(1 << 20);
        c.on_tick(5, 0, TIMERS);
        assert!(c.outbox.borrow().is_empty(), "not idle long enough");
        c.on_tick(30, 0, TIMERS);
        assert_eq!(c.ping_sent.get(), Some(30));
        assert!(!c.outbox.borrow().is_empty(), "a ping was queued");
        c.on_tick(39, 0, TIMERS);
        assert_eq!(c.close_request(), None);
        c.on_tick(40, 0, TIMERS);
        assert_eq!(c.close_request(), Some(CloseRequest::Abort));
        assert_eq!(c.env.metrics.pong_timeouts.load(Relaxed), 1);
    }

    #[test]
    fn a_client_that_completes_no_message_for_the_idle_timeout_is_closed_with_1001() {
        let t = Timers {
            idle_timeout: 60,
            ..TIMERS
        };
        let c = shared(1 << 20);
        // Bytes keep coming (a frame trickled a byte at a time): no ping is due ...
        for now in 1..60 {
            c.last_rx.set(now);
            c.on_tick(now, 0, t);
        }
        assert_eq!(c.ping_sent.get(), None);
        assert_eq!(c.close_request(), None);
        // ... but no whole message came since the upgrade.
        c.on_tick(60, 0, t);
        assert_eq!(
            c.close_request(),
            Some(CloseRequest::Close(1001, "idle timeout".into()))
        );
        assert_eq!(c.env.metrics.idle_timeouts.load(Relaxed), 1);
        // A message (a pong counts) restarts the clock; 0 turns it off.
        let c = shared(1 << 20);
        c.last_msg.set(50);
        c.on_tick(100, 0, t);
        assert_eq!(c.close_request(), None);
        c.on_tick(1000, 0, TIMERS);
        assert_ne!(
            c.close_request(),
            Some(CloseRequest::Close(1001, "idle timeout".into()))
        );
    }

    #[test]
    fn sweep_closes_an_expired_session_with_4001_after_a_final_notice() {
        let c = shared(1 << 20);
        c.on_tick(1, 99, TIMERS);
        assert_eq!(c.close_request(), None);
        assert!(c.outbox.borrow().is_empty());
        c.on_tick(2, 100, TIMERS);
        assert_eq!(
            c.close_request(),
            Some(CloseRequest::Close(
                CLOSE_SESSION_EXPIRED,
                "session expired".into()
            ))
        );
        assert!(c.is_final(), "not resumable");
        assert_eq!(c.env.metrics.sessions_expired.load(Relaxed), 1);
        // The notice is queued ahead of the close: reconnectable false, no token.
        let queued = c.outbox.borrow().len();
        let notice = c.final_notice(SESSION_EXPIRED_REASON);
        assert_eq!(queued, notice.len());
        let body = &notice[2 + if notice[1] == 126 { 2 } else { 0 }..];
        let v: serde_json::Value = serde_json::from_slice(&body[31..]).unwrap();
        assert_eq!(v["eventName"], "connect.disconnect-notification");
        assert_eq!(v["reconnectable"], false);
        assert_eq!(v["reason"], "session_expired");
        assert!(v.get("reconnectionToken").is_none(), "{v}");
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
