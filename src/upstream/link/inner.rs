//! What the `Link` handle and the link's tasks (link task, writer, sweeper) share:
//! one `Rc<Inner>` per link, with its settings, its connection's state and the wakers
//! that tie the tasks together. The other files add methods to [`Inner`], each for its
//! own concern; this one only says what there is.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, Instant};

use crate::config::url::LinkUrl;
use crate::metrics::ServiceMetrics;
use crate::push::ShardPlane;
use crate::rt::notify::LocalNotify;
use crate::tls::TlsSession;

use super::state::State;

/// Read buffer growth step.
pub(super) const READ_CHUNK: usize = 64 * 1024;

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
    /// Tell the backend of every session at connect (`ServiceConfig::announce_all`).
    pub announce_all: bool,
    /// The gateway's client TLS config, for a `wss://` link (none: not built, and a
    /// `wss://` link cannot be made).
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// Supplies message ids for server pushes (the shard's counter).
pub type PushIds = Rc<dyn Fn() -> u64>;

pub(super) struct Inner {
    pub(super) service: Arc<str>,
    pub(super) url: LinkUrl,
    pub(super) addrs: Vec<SocketAddr>,
    /// A `wss://` link's client config (its certificate verified for `url.host`).
    pub(super) tls: Option<Arc<rustls::ClientConfig>>,
    pub(super) settings: LinkSettings,
    pub(super) push_ids: PushIds,
    pub(super) metrics: Arc<ServiceMetrics>,
    /// The shard's sessions and the push hub (actions addressing sessions, OPEN for
    /// every session).
    pub(super) plane: Rc<ShardPlane>,
    pub(super) st: RefCell<State>,
    /// The writer task's waker (woken when the write buffer gets bytes).
    pub(super) writer: RefCell<Option<Waker>>,
    /// Wakes the link task out of its backoff sleep or its read wait (retire).
    pub(super) wake: LocalNotify,
    pub(super) running: Cell<bool>,
    pub(super) retired: Cell<bool>,
    /// The connection being served (the sweeper shuts it down when it is unresponsive).
    pub(super) conn_fd: Cell<Option<RawFd>>,
    /// Its TLS session (`wss://`), which the reader and the writer both go through.
    pub(super) conn_tls: RefCell<Option<Box<TlsSession>>>,
    /// When the current connection last delivered bytes.
    pub(super) last_read: Cell<Instant>,
    /// A liveness ping in flight on the current connection, and when it was sent.
    pub(super) ping_at: Cell<Option<Instant>>,
}
