//! The backend link (docs/DESIGN.md §5, `docs/LINK.md`): one persistent, multiplexed WebSocket
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
//!
//! [`LinkFailure::Lost`]: crate::upstream::LinkFailure::Lost
//! [`LinkFailure::Down`]: crate::upstream::LinkFailure::Down
//!
//! # Layout
//! Each file adds to `Inner` (the `Rc` the handle and the tasks share) the part its
//! concern needs. Bottom up:
//! - `calls`: the call table (slot + generation call ids) and a pending call.
//! - `state`: one connection's state: phase, write buffer and how frames get into it,
//!   calls, sessions announced.
//! - `inner`: `Inner` itself, and [`LinkSettings`].
//! - `writer`: the way out: the writer task and its flush.
//! - `actions`: the backend's actions (REPLY, SEND, CLOSE, and the push plane's).
//! - `push_actions`: PUBLISH, SUBSCRIBE, PUSH, ROLES, KICK… through the push hub.
//! - `announce`: OPEN other than before a first request (`announce_all`, new roles).
//! - `raw`: raw routes' connections (RAW_OPEN, MESSAGE; SEND and CLOSE reach them).
//! - `request`: the way in: a [`LinkRequest`] placed into the write buffer as a call
//!   (after an OPEN for a session new to the connection), or refused at once.
//! - `sweep`: the sweeper task: call deadlines and liveness pings.
//! - `conn`: one connection: dial, upgrade, the reader loop, why it ended (`LinkEnd`).
//! - `run`: the link task: dial, serve, tear down, redial with backoff.
//!
//! A file imports from (and calls the methods of) only files above it in this list, so
//! none are in a circle; none imports from `mod.rs`, which holds the public [`Link`]
//! and composes the rest. Imports: `state` from `calls`; `inner` from `state`; `writer`
//! `actions`, `announce` and `raw` from `inner` (`announce` and `raw` also from `state`); `request` from `inner`, `state`, `calls`; `sweep` from
//! `inner`, `calls`; `conn` from `inner`, `writer`; `run` from `inner`, `state`, `conn`.

mod actions;
mod announce;
mod calls;
mod conn;
mod inner;
mod push_actions;
mod raw;
mod request;
mod run;
mod state;
mod sweep;
mod writer;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Instant;

use crate::config::url::LinkUrl;
use crate::metrics::ServiceMetrics;
use crate::proto::frame::MaskSeq;
use crate::proto::http1::Response;
use crate::proto::link::ToBackend;
use crate::push::ShardPlane;
use crate::rt::notify::LocalNotify;
use crate::rt::sys;
use crate::session::ConnShared;
use crate::upstream::{BackendError, Done};

use calls::Calls;
use inner::Inner;
use run::run;
use state::{Phase, State};
use sweep::sweep_loop;

pub use inner::{LinkSettings, PushIds};
pub use request::LinkRequest;

/// Where an awaited call's result lands (see [`Link::call`]).
type CallSlot = Rc<RefCell<(Option<Result<Response, BackendError>>, Option<Waker>)>>;

/// One shard's link to one service. Cheap to clone (an `Rc`).
#[derive(Clone)]
pub struct Link {
    inner: Rc<Inner>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Link({} at {})",
            self.inner.service,
            self.inner.url.display()
        )
    }
}

impl Link {
    /// A link to `url` (`ws://host:port/path`, or `wss://` with `settings.tls`, the
    /// gateway's client config) for `service`, whose host resolved to `addrs` (the registry
    /// resolved them, off the shards). Nothing is dialed before [`Link::ensure_running`].
    pub fn new(
        service: Arc<str>,
        url: &str,
        addrs: Vec<SocketAddr>,
        settings: LinkSettings,
        push_ids: PushIds,
        metrics: Arc<ServiceMetrics>,
        plane: Rc<ShardPlane>,
    ) -> Result<Link, BackendError> {
        let url = LinkUrl::parse(url).map_err(|e| BackendError::InvalidUrl(e.to_string()))?;
        let tls = match (url.tls, settings.tls.clone()) {
            (false, _) => None,
            (true, Some(config)) => Some(config),
            (true, None) => {
                return Err(BackendError::InvalidUrl(format!(
                "{:?}: TLS is not set up (the client TLS config could not be built: see the log)",
                url.display()
            )))
            }
        };
        metrics
            .link
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(Link {
            inner: Rc::new(Inner {
                service,
                url,
                addrs,
                tls,
                settings,
                push_ids,
                metrics,
                plane,
                st: RefCell::new(State {
                    phase: Phase::Connecting,
                    wbuf: Vec::new(),
                    sent: 0,
                    masks: MaskSeq::new(u64::from_le_bytes(sys::random_bytes())),
                    calls: Calls::default(),
                    sessions: HashMap::default(),
                    raw: HashMap::default(),
                }),
                writer: RefCell::new(None),
                wake: LocalNotify::default(),
                running: Cell::new(false),
                retired: Cell::new(false),
                conn_fd: Cell::new(None),
                conn_tls: RefCell::new(None),
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

    /// A session connected: a service with `announce_all` is told of it (OPEN) now.
    pub fn session_opened(&self, session: &Rc<ConnShared>) {
        self.inner.announce(session);
    }

    /// A client answered this link's CALL_CLIENT `call` (or the gateway gave up on
    /// it: 60 timeout, 31 gone): the backend gets CLIENT_ANSWER.
    pub fn client_answer(&self, call: u64, code: u8, payload: &[u8]) {
        self.inner.client_answer(call, code, payload);
    }

    /// A session's roles changed: if the backend was told of it, it is told again.
    pub fn session_changed(&self, session: &Rc<ConnShared>) {
        self.inner.reannounce(session);
    }

    /// A session's client dropped; the session is kept for its window (AWAY to an
    /// `announce_all` service).
    pub fn session_away(&self, session: u64) {
        self.inner.away(session);
    }

    /// A session's client resumed it on a new connection: the link reaches the new
    /// handle (RESUMED to an `announce_all` service).
    pub fn session_resumed(&self, session: &Rc<ConnShared>) {
        self.inner.resumed(session);
    }

    /// A client connected to one of this service's raw routes (`path`): the backend
    /// is told (RAW_OPEN). False if the link is not up (the client is refused).
    pub fn raw_opened(&self, c: &Rc<ConnShared>, path: &str) -> bool {
        self.inner.raw_opened(c, path)
    }

    /// A raw route's client sent a message: the backend gets it (MESSAGE). False if the
    /// link is not up, or the connection is not (any longer) announced on it.
    pub fn raw_message(&self, session: u64, binary: bool, payload: &[u8]) -> bool {
        self.inner.raw_message(session, binary, payload)
    }

    /// Whether the link's connection is up now.
    pub fn is_up(&self) -> bool {
        self.inner.st.borrow().phase == Phase::Up
    }

    /// A session ended: if it was announced on the current connection, the backend is
    /// told (CLOSED).
    pub fn session_closed(&self, session: u64) {
        let mut st = self.inner.st.borrow_mut();
        let known = st.sessions.remove(&session).is_some() | st.raw.remove(&session).is_some();
        if known && st.phase != Phase::Down {
            st.put_message(&ToBackend::Closed { session });
            drop(st);
            self.inner.wake_writer();
        }
    }
}
