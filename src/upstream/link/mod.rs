//! The backend link (DESIGN §5, `docs/LINK.md`): one persistent, multiplexed WebSocket
//! per shard to a service, carrying that shard's requests for the service and the
//! service's replies and actions (push to a session, close it) back.
//!
//! Why: over HTTP every forwarded request costs a request head to build and a response
//! head to parse (and the backend the reverse). Over the link a request is one binary
//! message with a 28-byte prefix (`proto::link`), everything queued leaves in one
//! `sendmsg`, and replies come back in any order, matched by a call id, so one slow
//! request blocks nothing behind it.
//!
//! Shape, per shard and link service (all `Rc`, no locks):
//! - [`Link::start`] encodes the request (and, for a session's first request on this
//!   connection, its OPEN) straight into the link's write buffer, masked in place, and
//!   registers the call with its callback. No task and no timer per request.
//! - A writer task sends the whole write buffer with one `sendmsg` whenever it is not
//!   empty; the connection's reader (the link task itself) waits for readability, reads
//!   what is there and runs the callbacks of the replies it decodes, in the order they
//!   arrive. Replies' payloads are slices of the read buffer, queued into the clients'
//!   outboxes without a copy.
//! - One sweeper task answers calls past their deadline with a timeout (their late
//!   replies are dropped and counted) and pings a connection that has gone quiet (idle
//!   for `idle_ping`, or since a call that timed out); an unanswered ping ends it.
//! - The link task dials, upgrades (subprotocol `ringgate-link.v1`), serves, and on any
//!   failure answers every call in flight with [`LinkFailure::Lost`] and redials with
//!   backoff. While it is down requests fail at once ([`LinkFailure::Down`]); while it
//!   dials they wait in the write buffer (bounded by their deadline).
//!
//! A session is announced (OPEN) on first use per connection and CLOSED when its client
//! goes away ([`Link::session_closed`]); the link keeps a weak reference per announced
//! session, which is how SEND and CLOSE actions find the client.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::poll_fn;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::rc::{Rc, Weak};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use monoio::net::TcpStream;

use crate::config::url::LinkUrl;
use crate::metrics::ServiceMetrics;
use crate::proto::bannou::{flags, RequestHeader};
use crate::proto::frame::{
    append_masked, close_payload, MaskSeq, OpCode, CLOSE_NORMAL, CLOSE_PROTOCOL_ERROR,
};
use crate::proto::http1::Response;
use crate::proto::link::{self as wire, FromBackend, LinkError, ToBackend, UpgradeError};
use crate::proto::ws::{self, Decoder, Limits, Message, Role};
use crate::rt::notify::LocalNotify;
use crate::rt::sys::{self, Nb};
use crate::session::ConnShared;
use crate::upstream::{BackendError, Done, LinkFailure};

/// Unsent bytes a link may hold; requests beyond fail with [`LinkFailure::Overloaded`]
/// (a backend that stops reading must not grow the gateway's memory without bound).
pub const MAX_UNSENT_BYTES: usize = 64 << 20;
/// Read buffer growth step.
const READ_CHUNK: usize = 64 * 1024;
/// Reads per readiness wakeup before other tasks run.
const READS_PER_WAKEUP: usize = 8;
/// First and longest wait before redialing a failed link. The longest wait is also the
/// longest a restarted backend waits for its links: kept short (a dial is one connect
/// per shard).
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// While dials keep failing, one log line per this period (with the count).
const DIAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// Tuning for one shard's link to one service.
#[derive(Debug, Clone)]
pub struct LinkSettings {
    pub connect_timeout: Duration,
    /// Deadline of each call, from `start` to its reply.
    pub request_timeout: Duration,
    /// Calls waiting for a reply at most.
    pub max_inflight: usize,
    /// A connection that has delivered nothing for this long gets a liveness ping
    /// (zero: only after a timed-out call).
    pub idle_ping: Duration,
    /// Largest message either way (a larger action closes the link with 1009).
    pub max_message_bytes: usize,
    /// Sent to the backend as `X-Ringgate-Shard`.
    pub shard: usize,
}

/// Why a link connection ended (logged).
#[derive(Debug, thiserror::Error)]
enum LinkEnd {
    #[error("connect failed: {0}")]
    Connect(io::Error),
    #[error("connect timed out")]
    ConnectTimeout,
    #[error("upgrade refused: {0}")]
    Upgrade(#[from] UpgradeError),
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    #[error("backend closed the connection")]
    Eof,
    #[error("backend closed the link (close code {0:?})")]
    Closed(Option<u16>),
    #[error("WebSocket protocol error: {0}")]
    Ws(#[from] ws::ProtocolError),
    #[error("bad action from backend: {0}")]
    Action(#[from] LinkError),
    #[error("text message from backend (link messages are binary)")]
    Text,
    #[error("link retired by a registry update")]
    Retired,
}

impl LinkEnd {
    /// The close frame ringgate sends on the way out, if the connection still takes one:
    /// the decoder's code for a WebSocket violation, 1002 for a bad link message, 1000
    /// for an orderly end (retired, or answering the backend's close).
    fn close_frame(&self) -> Option<(u16, &'static str)> {
        match self {
            LinkEnd::Ws(e) => Some((e.close_code(), "")),
            LinkEnd::Action(_) | LinkEnd::Text => Some((CLOSE_PROTOCOL_ERROR, "bad link message")),
            LinkEnd::Retired | LinkEnd::Closed(_) => Some((CLOSE_NORMAL, "")),
            _ => None,
        }
    }
}

/// One client request for the link (borrowed; encoded into the write buffer at once).
#[derive(Debug, Clone, Copy)]
pub struct LinkRequest<'a> {
    /// The client's message id.
    pub message_id: u64,
    /// The client's Bannou flags (0x10 = an event: no reply).
    pub flags: u8,
    /// The endpoint path (a meta request's ends in `/meta/<kind>`).
    pub path: &'a str,
    pub payload: &'a [u8],
}

/// Where an awaited call's result lands (see [`Link::call`]).
type CallSlot = Rc<RefCell<(Option<Result<Response, BackendError>>, Option<Waker>)>>;

/// Supplies message ids for server pushes (the shard's counter).
pub type PushIds = Rc<dyn Fn() -> u64>;

/// One shard's link to one service. Cheap to clone (an `Rc`).
#[derive(Clone)]
pub struct Link {
    inner: Rc<Inner>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Link({} at ws://{}{})",
            self.inner.service, self.inner.url.authority, self.inner.url.path
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Dialing: requests queue (their deadline bounds the wait).
    Connecting,
    Up,
    /// Waiting to redial: requests fail at once.
    Down,
}

struct Pending {
    on_done: Done,
    deadline: Instant,
}

/// The calls awaiting replies: a slot table. A call id is `generation << 32 | slot`, so
/// placing and completing a call are two array accesses, and a reply that comes after
/// its call timed out (and the slot was reused) does not match the slot's new
/// generation. (A slot would have to be reused 2^32 times between a call and its late
/// reply to be confused.)
#[derive(Default)]
struct Calls {
    slots: Vec<Slot>,
    free: Vec<u32>,
    live: usize,
}

#[derive(Default)]
struct Slot {
    generation: u32,
    pending: Option<Pending>,
}

impl Calls {
    fn len(&self) -> usize {
        self.live
    }

    fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Files `p`; returns its (never 0) call id.
    fn insert(&mut self, p: Pending) -> u64 {
        let i = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot::default());
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[i as usize];
        // Generations start at 1, so no call id is 0 (0 marks events).
        slot.generation = slot.generation.wrapping_add(1).max(1);
        slot.pending = Some(p);
        self.live += 1;
        (u64::from(slot.generation) << 32) | u64::from(i)
    }

    /// Takes the call with id `call`, if it is still waiting.
    fn remove(&mut self, call: u64) -> Option<Pending> {
        let i = (call & 0xffff_ffff) as usize;
        let slot = self.slots.get_mut(i)?;
        if u64::from(slot.generation) != call >> 32 {
            return None;
        }
        let p = slot.pending.take()?;
        self.free.push(i as u32);
        self.live -= 1;
        Some(p)
    }

    /// Takes every call whose deadline is at or before `now`.
    fn expire(&mut self, now: Instant) -> Vec<Pending> {
        let mut out = Vec::new();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if slot.pending.as_ref().is_some_and(|p| p.deadline <= now) {
                out.extend(slot.pending.take());
                self.free.push(i as u32);
            }
        }
        self.live -= out.len();
        out
    }

    /// Takes every call.
    fn drain(&mut self) -> Vec<Pending> {
        let out: Vec<Pending> = self
            .slots
            .iter_mut()
            .filter_map(|s| s.pending.take())
            .collect();
        *self = Calls::default();
        out
    }
}

struct State {
    phase: Phase,
    /// Masked frames not yet sent; `wbuf[sent..]` is what is left.
    wbuf: Vec<u8>,
    sent: usize,
    masks: MaskSeq,
    calls: Calls,
    /// Sessions announced (OPEN) on the current connection.
    sessions: HashMap<u64, Weak<ConnShared>, ahash::RandomState>,
}

struct Inner {
    service: Arc<str>,
    url: LinkUrl,
    addrs: Vec<SocketAddr>,
    settings: LinkSettings,
    push_ids: PushIds,
    metrics: Arc<ServiceMetrics>,
    st: RefCell<State>,
    /// The writer task's waker (woken when the write buffer gets bytes).
    writer: RefCell<Option<Waker>>,
    /// Wakes the link task out of its backoff sleep or its read wait (retire).
    wake: LocalNotify,
    running: Cell<bool>,
    retired: Cell<bool>,
    /// The connection being served (the sweeper shuts it down when it is unresponsive).
    conn_fd: Cell<Option<RawFd>>,
    /// When the current connection last delivered bytes.
    last_read: Cell<Instant>,
    /// A liveness ping in flight on the current connection, and when it was sent.
    ping_at: Cell<Option<Instant>>,
}

impl Link {
    /// A link to `url` (`ws://host:port/path`) for `service`. Host names are resolved
    /// here, once. Nothing is dialed before [`Link::ensure_running`].
    pub fn new(
        service: Arc<str>,
        url: &str,
        settings: LinkSettings,
        push_ids: PushIds,
        metrics: Arc<ServiceMetrics>,
    ) -> Result<Link, BackendError> {
        let url = LinkUrl::parse(url).map_err(|e| BackendError::InvalidUrl(e.to_string()))?;
        let addrs: Vec<SocketAddr> = (url.host.as_str(), url.port)
            .to_socket_addrs()
            .map_err(|e| BackendError::InvalidUrl(format!("cannot resolve {}: {e}", url.host)))?
            .collect();
        if addrs.is_empty() {
            return Err(BackendError::InvalidUrl(format!(
                "{} resolves to no address",
                url.host
            )));
        }
        metrics
            .link
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(Link {
            inner: Rc::new(Inner {
                service,
                url,
                addrs,
                settings,
                push_ids,
                metrics,
                st: RefCell::new(State {
                    phase: Phase::Connecting,
                    wbuf: Vec::new(),
                    sent: 0,
                    masks: MaskSeq::new(u64::from_le_bytes(sys::random_bytes())),
                    calls: Calls::default(),
                    sessions: HashMap::default(),
                }),
                writer: RefCell::new(None),
                wake: LocalNotify::default(),
                running: Cell::new(false),
                retired: Cell::new(false),
                conn_fd: Cell::new(None),
                last_read: Cell::new(Instant::now()),
                ping_at: Cell::new(None),
            }),
        })
    }

    /// Starts the link's tasks (dial, serve, redial; deadline sweeper) on the current
    /// monoio runtime, once.
    pub fn ensure_running(&self) {
        if self.inner.running.replace(true) {
            return;
        }
        crate::rt::task::spawn_isolated("backend link", run(self.inner.clone()));
        crate::rt::task::spawn_isolated("backend link sweeper", sweep_loop(self.inner.clone()));
    }

    /// Takes the link out of service (a registry update replaced or removed it): no new
    /// calls; the calls in flight still get their replies (or time out), then the
    /// connection is closed and the tasks end.
    pub fn retire(&self) {
        self.inner.retired.set(true);
        self.inner.wake.notify();
        self.inner.wake_writer();
    }

    /// Forwards one request (`payload` is copied, masked, into the write buffer). Every
    /// outcome — the reply, a failure, the timeout — reaches `on_done` exactly once; a
    /// failure known at once runs it before `start` returns. A client event (flag 0x10)
    /// goes out with call 0 (the backend sends no reply) and `on_done` gets `202` with no
    /// body as soon as it is queued.
    pub fn start(&self, session: &Rc<ConnShared>, req: LinkRequest<'_>, on_done: Done) {
        match self.inner.place(session, req, on_done) {
            Ok(None) => {}
            Ok(Some(on_done)) => on_done.run(Ok(Response {
                status: 202,
                body: bytes::Bytes::new(),
                keep_alive: true,
            })),
            Err((on_done, e)) => on_done.run(Err(BackendError::Link(e))),
        }
    }

    /// Like [`Link::start`], awaiting the reply (ordered channels).
    pub async fn call(
        &self,
        session: &Rc<ConnShared>,
        req: LinkRequest<'_>,
    ) -> Result<Response, BackendError> {
        let slot: CallSlot = Rc::default();
        let s = slot.clone();
        self.start(
            session,
            req,
            Done::Callback(Box::new(move |r| {
                let mut s = s.borrow_mut();
                s.0 = Some(r);
                if let Some(w) = s.1.take() {
                    w.wake();
                }
            })),
        );
        poll_fn(|cx| {
            let mut s = slot.borrow_mut();
            match s.0.take() {
                Some(r) => Poll::Ready(r),
                None => {
                    s.1 = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// A session ended: if it was announced on the current connection, the backend is
    /// told (CLOSED).
    pub fn session_closed(&self, session: u64) {
        let mut st = self.inner.st.borrow_mut();
        if st.sessions.remove(&session).is_some() && st.phase != Phase::Down {
            st.put_message(&ToBackend::Closed { session });
            drop(st);
            self.inner.wake_writer();
        }
    }
}

impl State {
    /// Appends `msg` as one masked binary frame. `msg` must have passed `check()`.
    fn put_message(&mut self, msg: &ToBackend<'_>) {
        let mask = self.masks.next_mask();
        append_masked(
            &mut self.wbuf,
            true,
            OpCode::Binary,
            mask,
            msg.encoded_len(),
            |out| msg.encode(out).expect("checked before"),
        );
    }

    /// Appends a masked control frame (ping, pong, close).
    fn put_control(&mut self, opcode: OpCode, payload: &[u8]) {
        let mask = self.masks.next_mask();
        append_masked(&mut self.wbuf, true, opcode, mask, payload.len(), |out| {
            out.extend_from_slice(payload)
        });
    }
}

/// A call that could not be placed hands its callback back with the reason.
type Refused = (Done, LinkFailure);

impl Inner {
    /// Queues `req` (after its session's OPEN if this connection has not seen the
    /// session). `Ok(None)`: the call waits for its reply; `Ok(Some)`: an event, queued,
    /// whose callback the caller runs now.
    fn place(
        &self,
        session: &Rc<ConnShared>,
        req: LinkRequest<'_>,
        on_done: Done,
    ) -> Result<Option<Done>, Refused> {
        let event = req.flags & flags::EVENT != 0;
        let fail = |on_done: Done, e: LinkFailure| Err((on_done, e));
        if self.retired.get() {
            return fail(on_done, LinkFailure::Retired);
        }
        let mut st = self.st.borrow_mut();
        if st.phase == Phase::Down {
            return fail(on_done, LinkFailure::Down);
        }
        if st.calls.len() >= self.settings.max_inflight {
            return fail(on_done, LinkFailure::Overloaded("too many calls waiting"));
        }
        if st.wbuf.len() - st.sent > MAX_UNSENT_BYTES {
            return fail(on_done, LinkFailure::Overloaded("backend not reading"));
        }
        let s = &session.session;
        let sref = s.link_ref;
        let announce = !st.sessions.contains_key(&sref);
        let roles;
        let open = if announce {
            roles = s.roles.join(",");
            let open = ToBackend::Open {
                session: sref,
                session_id: &s.session_id,
                account_id: s.account_id.as_deref().unwrap_or(""),
                roles: &roles,
            };
            if let Err(e) = open.check() {
                return fail(on_done, LinkFailure::Encode(e));
            }
            Some(open)
        } else {
            None
        };
        let mut req = ToBackend::Request {
            session: sref,
            call: 0,
            message_id: req.message_id,
            flags: req.flags,
            path: req.path,
            payload: req.payload,
        };
        if let Err(e) = req.check() {
            return fail(on_done, LinkFailure::Encode(e));
        }
        if req.encoded_len() > self.settings.max_message_bytes {
            return fail(
                on_done,
                LinkFailure::Encode(LinkError::TooLong {
                    kind: wire::kind::REQUEST,
                    field: "message",
                    len: req.encoded_len(),
                }),
            );
        }
        if let Some(open) = open {
            st.put_message(&open);
            st.sessions.insert(sref, Rc::downgrade(session));
        }
        let unfinished = if event {
            Some(on_done)
        } else {
            let deadline = crate::rt::clock::recent() + self.settings.request_timeout;
            if let ToBackend::Request { call, .. } = &mut req {
                *call = st.calls.insert(Pending { on_done, deadline });
            }
            None
        };
        st.put_message(&req);
        drop(st);
        self.wake_writer();
        Ok(unfinished)
    }

    fn wake_writer(&self) {
        if let Some(w) = self.writer.borrow_mut().take() {
            w.wake();
        }
    }

    /// Sends what is unsent: `Ok(true)` when all of it went, `Ok(false)` when the socket
    /// is full.
    fn flush(&self, fd: RawFd) -> io::Result<bool> {
        let mut st = self.st.borrow_mut();
        while st.sent < st.wbuf.len() {
            match sys::send_vectored(fd, &[&st.wbuf[st.sent..]])? {
                Nb::Done(n) => st.sent += n,
                Nb::WouldBlock => {
                    // A socket that never drains completely must not keep what was sent.
                    if st.sent >= READ_CHUNK && st.sent * 2 >= st.wbuf.len() {
                        let sent = std::mem::take(&mut st.sent);
                        st.wbuf.drain(..sent);
                    }
                    return Ok(false);
                }
            }
        }
        st.wbuf.clear();
        st.sent = 0;
        if st.wbuf.capacity() > 4 * READ_CHUNK {
            st.wbuf = Vec::new();
        }
        Ok(true)
    }

    /// Ends the current connection's life: every call in flight fails with `why`,
    /// announcements and unsent bytes are forgotten, and new calls fail fast until the
    /// next dial.
    fn tear_down(&self, why: LinkFailure) {
        let calls = {
            let mut st = self.st.borrow_mut();
            if st.phase == Phase::Up {
                self.metrics.link_up.fetch_sub(1, Relaxed);
            }
            st.phase = Phase::Down;
            st.wbuf = Vec::new();
            st.sent = 0;
            st.sessions.clear();
            st.calls.drain()
        };
        for p in calls {
            p.on_done.run(Err(BackendError::Link(why.clone())));
        }
    }

    /// Handles one message from the backend.
    fn on_message(&self, msg: Message) -> Result<(), LinkEnd> {
        match msg {
            Message::Binary(b) => self.on_action(FromBackend::decode(&b)?),
            Message::Text(_) => return Err(LinkEnd::Text),
            Message::Ping(p) => {
                self.st.borrow_mut().put_control(OpCode::Pong, &p);
                self.wake_writer();
            }
            Message::Pong(_) => {}
            Message::Close(c) => return Err(LinkEnd::Closed(c.map(|c| c.code))),
        }
        Ok(())
    }

    fn on_action(&self, action: FromBackend) {
        match action {
            FromBackend::Reply {
                call,
                status,
                payload,
            } => {
                let pending = self.st.borrow_mut().calls.remove(call);
                if pending.is_none() {
                    self.metrics.link_late_replies.fetch_add(1, Relaxed);
                }
                if let Some(p) = pending {
                    p.on_done.run(Ok(Response {
                        status,
                        body: payload,
                        keep_alive: true,
                    }));
                }
            }
            FromBackend::Send {
                session,
                flags: f,
                payload,
            } => match self.session(session) {
                Some(c) => {
                    let mut head = RequestHeader::push((self.push_ids)());
                    head.flags |= f & flags::BINARY;
                    c.send_binary(&head.encode(), payload);
                }
                None => {
                    tracing::debug!(service = %self.service, session, "SEND for a session that is gone; dropped")
                }
            },
            FromBackend::Close {
                session,
                code,
                reason,
            } => match self.session(session) {
                Some(c) => {
                    let reason = String::from_utf8_lossy(&reason).into_owned();
                    c.request_close(code, reason);
                }
                None => {
                    tracing::debug!(service = %self.service, session, "CLOSE for a session that is gone; dropped")
                }
            },
        }
    }

    fn session(&self, session: u64) -> Option<Rc<ConnShared>> {
        self.st
            .borrow()
            .sessions
            .get(&session)
            .and_then(Weak::upgrade)
            .filter(|c| !c.is_gone())
    }

    /// Dials and upgrades one connection; the bytes read past the 101 are returned.
    async fn dial(&self) -> Result<(TcpStream, BytesMut), LinkEnd> {
        let mut last = LinkEnd::ConnectTimeout;
        for &addr in &self.addrs {
            let stream = match monoio::time::timeout(
                self.settings.connect_timeout,
                TcpStream::connect_addr(addr),
            )
            .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    last = LinkEnd::Connect(e);
                    continue;
                }
                Err(_) => {
                    last = LinkEnd::ConnectTimeout;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            return match monoio::time::timeout(self.settings.connect_timeout, self.upgrade(&stream))
                .await
            {
                Ok(Ok(rest)) => Ok((stream, rest)),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(LinkEnd::Upgrade(UpgradeError::Malformed(
                    "no complete answer within the connect timeout".into(),
                ))),
            };
        }
        Err(last)
    }

    async fn upgrade(&self, stream: &TcpStream) -> Result<BytesMut, LinkEnd> {
        let key_bytes: [u8; 16] = sys::random_bytes();
        let key = base64_key(&key_bytes);
        let req = wire::upgrade_request(
            &self.url.authority,
            &self.url.path,
            &key,
            self.settings.shard,
        );
        let fd = stream.as_raw_fd();
        let mut out = req.as_bytes();
        while !out.is_empty() {
            match sys::send_vectored(fd, &[out])? {
                Nb::Done(n) => out = &out[n..],
                Nb::WouldBlock => stream.writable(false).await?,
            }
        }
        let mut buf = BytesMut::with_capacity(1024);
        loop {
            stream.readable(false).await?;
            buf.reserve(1024);
            match sys::recv_into(fd, &mut buf)? {
                Nb::Done(0) => return Err(LinkEnd::Eof),
                Nb::Done(_) => {}
                Nb::WouldBlock => continue,
            }
            if let Some(n) = wire::check_upgrade_response(&buf, &key)? {
                let _ = buf.split_to(n);
                return Ok(buf);
            }
        }
    }

    /// Serves one established connection until it fails or the link retires.
    async fn serve(self: &Rc<Self>, stream: TcpStream, mut rbuf: BytesMut) -> LinkEnd {
        let stream = Rc::new(stream);
        let fd = stream.as_raw_fd();
        self.conn_fd.set(Some(fd));
        self.last_read.set(crate::rt::clock::refresh());
        self.ping_at.set(None);
        let dead = Rc::new(Cell::new(false));
        crate::rt::task::spawn_isolated(
            "backend link writer",
            write_loop(self.clone(), stream.clone(), dead.clone()),
        );
        let mut decoder = Decoder::new(
            Role::Client,
            Limits {
                max_message_bytes: self.settings.max_message_bytes,
            },
        );
        let end = 'serve: loop {
            // Messages already buffered (also what followed the 101).
            loop {
                match decoder.decode(&mut rbuf) {
                    Ok(Some(msg)) => {
                        if let Err(e) = self.on_message(msg) {
                            break 'serve e;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => break 'serve LinkEnd::Ws(e),
                }
            }
            if self.retired.get() && self.st.borrow().calls.is_empty() {
                break LinkEnd::Retired;
            }
            if dead.get() {
                break LinkEnd::Eof;
            }
            monoio::select! {
                r = stream.readable(false) => {
                    if let Err(e) = r {
                        break LinkEnd::Io(e);
                    }
                }
                _ = self.wake.notified() => continue,
            }
            self.last_read.set(crate::rt::clock::refresh());
            for _ in 0..READS_PER_WAKEUP {
                if rbuf.capacity() - rbuf.len() < READ_CHUNK / 2 {
                    rbuf.reserve(READ_CHUNK);
                }
                let spare = rbuf.capacity() - rbuf.len();
                match sys::recv_into(fd, &mut rbuf) {
                    Ok(Nb::Done(0)) => break 'serve LinkEnd::Eof,
                    Ok(Nb::Done(n)) if n < spare => break,
                    Ok(Nb::Done(_)) => {}
                    Ok(Nb::WouldBlock) => break,
                    Err(e) => break 'serve LinkEnd::Io(e),
                }
            }
        };
        if let Some((code, reason)) = end.close_frame() {
            self.st
                .borrow_mut()
                .put_control(OpCode::Close, &close_payload(code, reason));
            let _ = self.flush(fd);
        }
        self.conn_fd.set(None);
        dead.set(true);
        self.wake_writer();
        // A writer waiting for writability wakes with an error and lets the stream go.
        sys::shutdown(fd);
        end
    }
}

/// Sends the write buffer whenever it has bytes, until the connection is dead.
async fn write_loop(link: Rc<Inner>, stream: Rc<TcpStream>, dead: Rc<Cell<bool>>) {
    let fd = stream.as_raw_fd();
    loop {
        poll_fn(|cx| {
            let st = link.st.borrow();
            if dead.get() || st.sent < st.wbuf.len() {
                Poll::Ready(())
            } else {
                *link.writer.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
        if dead.get() {
            return;
        }
        match link.flush(fd) {
            Ok(true) => {}
            Ok(false) => {
                if stream.writable(false).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                tracing::debug!(service = %link.service, error = %e, "backend link write failed");
                break;
            }
        }
    }
    // Wake the reader with EOF: the link task notices and tears down.
    dead.set(true);
    sys::shutdown(fd);
}

/// The link's life: dial, serve, and after a failure redial with backoff.
async fn run(link: Rc<Inner>) {
    let mut backoff = BACKOFF_MIN;
    let ws_url = format!("ws://{}{}", link.url.authority, link.url.path);
    // Dial failures since the link was last up, and when one was last logged.
    let mut failed_dials = 0u64;
    let mut dial_logged: Option<Instant> = None;
    loop {
        if link.retired.get() {
            break;
        }
        link.st.borrow_mut().phase = Phase::Connecting;
        match link.dial().await {
            Ok((stream, rest)) => {
                backoff = BACKOFF_MIN;
                failed_dials = 0;
                dial_logged = None;
                {
                    let mut st = link.st.borrow_mut();
                    st.phase = Phase::Up;
                    link.metrics.link_up.fetch_add(1, Relaxed);
                    link.metrics.link_connects.fetch_add(1, Relaxed);
                }
                tracing::info!(shard = link.settings.shard, service = %link.service, url = %ws_url, "backend link up");
                link.wake_writer();
                let end = link.serve(stream, rest).await;
                if matches!(end, LinkEnd::Retired) {
                    link.tear_down(LinkFailure::Retired);
                    break;
                }
                tracing::warn!(shard = link.settings.shard, service = %link.service, url = %ws_url, reason = %end, "backend link lost; calls in flight answered 60, redialing");
                link.tear_down(LinkFailure::Lost);
            }
            Err(e) => {
                failed_dials += 1;
                let now = crate::rt::clock::refresh();
                if dial_logged.is_none_or(|t| now.saturating_duration_since(t) >= DIAL_LOG_EVERY) {
                    dial_logged = Some(now);
                    tracing::warn!(shard = link.settings.shard, service = %link.service, url = %ws_url, error = %e, failed_dials, retry_in_ms = backoff.as_millis() as u64, "backend link dial failed; requests answer 60 until it is up");
                }
                link.tear_down(LinkFailure::Down);
            }
        }
        let _ = monoio::time::timeout(backoff, link.wake.notified()).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
    link.tear_down(LinkFailure::Retired);
}

/// Answers calls past their deadline with [`BackendError::Timeout`], and watches the
/// connection's liveness. A ping goes out when the connection has delivered nothing for
/// `idle_ping`, or when a call times out and it has delivered nothing since that call
/// was sent; if nothing at all arrives within the connect timeout after it (not even
/// the pong, which WebSocket libraries send by themselves), the backend host is taken
/// for gone (one that vanished without a reset looks like this) and the connection is
/// shut down, so the link redials instead of timing out every call (or, idle, instead
/// of holding a dead connection until the next request finds it). A slow backend that
/// answers pings keeps its link.
async fn sweep_loop(link: Rc<Inner>) {
    let every = (link.settings.request_timeout / 10)
        .clamp(Duration::from_millis(5), Duration::from_millis(100));
    loop {
        monoio::time::sleep(every).await;
        let now = crate::rt::clock::refresh();
        link.check_liveness(now);
        let idle = link.settings.idle_ping;
        if !idle.is_zero() && now.saturating_duration_since(link.last_read.get()) >= idle {
            link.ping(now);
        }
        let expired: Vec<Pending> = {
            let mut st = link.st.borrow_mut();
            if st.calls.is_empty() {
                if link.retired.get() {
                    return;
                }
                continue;
            }
            let expired = st.calls.expire(now);
            if link.retired.get() && st.calls.is_empty() {
                // A retired link closes once its calls are settled; its reader may be
                // waiting for bytes that will never come.
                link.wake.notify();
            }
            expired
        };
        let oldest_sent = expired
            .iter()
            .map(|p| p.deadline - link.settings.request_timeout)
            .min();
        if oldest_sent.is_some_and(|sent| link.last_read.get() < sent) {
            link.ping(now);
        }
        for p in expired {
            p.on_done.run(Err(BackendError::Timeout));
        }
    }
}

impl Inner {
    /// Sends a liveness ping on the connection being served, unless one is in flight.
    fn ping(&self, now: Instant) {
        if self.conn_fd.get().is_some() && self.ping_at.get().is_none() {
            self.st.borrow_mut().put_control(OpCode::Ping, b"liveness");
            self.ping_at.set(Some(now));
            self.wake_writer();
        }
    }

    /// Settles a liveness ping: answered (anything arrived since) or overdue (the
    /// connection is shut down; its reader sees EOF and the link redials).
    fn check_liveness(&self, now: Instant) {
        let Some(sent) = self.ping_at.get() else {
            return;
        };
        if self.last_read.get() >= sent {
            self.ping_at.set(None);
        } else if now.saturating_duration_since(sent) >= self.settings.connect_timeout {
            self.ping_at.set(None);
            if let Some(fd) = self.conn_fd.get() {
                tracing::warn!(shard = self.settings.shard, service = %self.service, "backend link unresponsive: a liveness ping got no answer; closing it to redial");
                // The reader wakes with EOF and tears the connection down.
                sys::shutdown(fd);
            }
        }
    }
}

fn base64_key(b: &[u8; 16]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(deadline: Instant) -> Pending {
        Pending {
            on_done: Done::Callback(Box::new(|_| {})),
            deadline,
        }
    }

    #[test]
    fn a_reused_call_slot_does_not_take_the_late_reply_of_its_previous_call() {
        let now = Instant::now();
        let mut calls = Calls::default();
        let first = calls.insert(pending(now));
        assert_ne!(first, 0, "0 marks events");
        assert!(calls.remove(first).is_some());
        let second = calls.insert(pending(now));
        assert_eq!(second & 0xffff_ffff, first & 0xffff_ffff, "same slot");
        assert!(
            calls.remove(first).is_none(),
            "the late reply matches nothing"
        );
        assert_eq!(calls.len(), 1);
        assert!(calls.remove(second).is_some());
        assert!(calls.remove(second).is_none(), "answered once");
        assert!(calls.is_empty());
        assert!(calls.remove(u64::MAX).is_none(), "an id never issued");
    }

    #[test]
    fn expire_takes_only_calls_past_their_deadline_and_frees_their_slots() {
        let now = Instant::now();
        let later = now + Duration::from_secs(5);
        let mut calls = Calls::default();
        let due = calls.insert(pending(now));
        let not_due = calls.insert(pending(later));
        assert_eq!(calls.expire(now).len(), 1);
        assert_eq!(calls.len(), 1);
        assert!(calls.remove(due).is_none());
        assert!(calls.remove(not_due).is_some());
        assert_eq!(calls.drain().len(), 0);
    }
}
