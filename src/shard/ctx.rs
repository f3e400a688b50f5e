//! A shard's state: everything one thread owns and its connections' message path
//! reaches.
//!
//! Why: thread-per-core (docs/DESIGN.md §1). Everything a connection touches on its
//! message path — its session, the registry snapshot, the backend pools and links, the
//! read buffer — belongs to its shard and is reached through `Rc`/`RefCell`, never a
//! lock. Other threads reach a shard only through its mailbox (`ShardMsg`). The
//! shard's tasks that use this state live above it (`edge`, `server::shard_thread`).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use crate::admission::Admission;
use crate::auth::Authenticator;
use crate::config::Config;
use crate::metrics::{Metrics, ShardMetrics};
use crate::proto::guid::SessionKey;
use crate::push::{Hub, ShardPlane};
use crate::registry::Registry;
use crate::rt::clock;
use crate::rt::notify::LocalNotify;
use crate::rt::task::{spawn_isolated, unix_now};
use crate::session::{ConnShared, Session, SessionEnv, SessionRef};
use crate::upstream::http::{BackendSettings, Pool};
use crate::upstream::link::{Link, LinkSettings};
use crate::upstream::{Alerts, Backend, FailureLog, ServiceMeter, ServiceRuntime};

use super::gate::ReadGate;

/// Size of a shard read: what one readiness wakeup reads at most per `recv`.
pub const READ_CHUNK: usize = 32 * 1024;

/// Everything one shard owns.
pub struct ShardCtx {
    pub id: usize,
    pub config: Arc<Config>,
    pub auth: Arc<Authenticator>,
    pub guid_secret: [u8; 32],
    pub registry: RefCell<Arc<Registry>>,
    /// Indexed like `registry.services`.
    pub services: RefCell<Vec<Rc<ServiceRuntime>>>,
    /// Indexed like `registry.endpoints`: each endpoint's path as this shard's own `Rc`,
    /// so that a request carries its path without touching an atomic count.
    pub paths: RefCell<Vec<Rc<str>>>,
    /// The shard's sessions (its table), topic subscriptions and the push hub.
    pub plane: Rc<ShardPlane>,
    /// Opens peer GUIDs (every shard holds the same key: docs/DESIGN.md §4).
    pub peer_key: SessionKey,
    pub metrics: Arc<ShardMetrics>,
    /// What every session handle of the shard shares (metrics, reconnection).
    pub session_env: Arc<SessionEnv>,
    pub all_metrics: Arc<Metrics>,
    /// The one read buffer all of this shard's connections read into.
    pub read_buf: RefCell<BytesMut>,
    /// The last session key expanded for opening GUIDs (a read batch is one session's).
    pub guid_cache: RefCell<crate::proto::guid::OpenCache>,
    /// Read batching while the thread is busy (see `shard::gate`).
    pub read_gate: Rc<ReadGate>,
    pub draining: Cell<bool>,
    pub stop_accept: LocalNotify,
    /// The connection caps and upgrade rate every shard shares (`crate::admission`).
    pub admission: Arc<Admission>,
    /// The client listener's TLS config (`[tls]`), if it serves `wss://`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The config `https://` backends and `wss://` links are dialed with (see
    /// [`ProcessShared::client_tls`]).
    pub client_tls: ClientTlsCell,
    /// Connections refused by `admission` are logged at most once a second per shard.
    pub refusals_log: FailureLog,
    push_counter: Rc<Cell<u16>>,
    /// Numbers sessions for the backend links (never reused while the process runs).
    link_refs: Cell<u64>,
    epoch: Instant,
}

/// What every shard starts from: the process's shared state.
#[derive(Clone)]
pub struct ProcessShared {
    pub config: Arc<Config>,
    pub auth: Arc<Authenticator>,
    pub guid_secret: [u8; 32],
    /// The first registry snapshot.
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    pub hub: Arc<Hub>,
    pub admission: Arc<Admission>,
    /// The client listener's TLS config (`[tls]`), if it serves `wss://`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The client side's TLS config (`tls.ca_file`, else the system's roots): built
    /// once by the gateway, at start if a service is `https://` or `wss://`, else at
    /// the first reload that brings one, before that registry is sent; empty while no
    /// service needs it (or it could not be built: those services answer 60).
    pub client_tls: ClientTlsCell,
}

/// Where the gateway puts the client side's TLS config once it is built, for every
/// shard to read when it builds its pools and links.
pub type ClientTlsCell = Arc<std::sync::OnceLock<Arc<rustls::ClientConfig>>>;

impl ShardCtx {
    pub fn new(id: usize, shared: ProcessShared) -> ShardCtx {
        let ProcessShared {
            config,
            auth,
            guid_secret,
            registry,
            metrics: all_metrics,
            hub,
            admission,
            tls,
            client_tls,
        } = shared;
        let session_env = Arc::new(SessionEnv {
            metrics: all_metrics.shards[id].clone(),
            shard: id as u16,
            resume: (config.server.reconnect_window_secs > 0).then(|| hub.resume.clone()),
            window_secs: config.server.reconnect_window_secs,
            resume_buffer: config.server.resume_buffer_bytes,
            max_inflight: config.server.max_inflight_per_connection,
        });
        let ctx = ShardCtx {
            session_env,
            plane: Rc::new(ShardPlane::new(id, hub, all_metrics.shards[id].clone())),
            peer_key: SessionKey::derive_peer_key(&guid_secret),
            id,
            metrics: all_metrics.shards[id].clone(),
            config,
            auth,
            guid_secret,
            registry: RefCell::new(Arc::new(Registry::default())),
            services: RefCell::default(),
            paths: RefCell::default(),
            all_metrics,
            read_buf: RefCell::new(BytesMut::new()),
            guid_cache: RefCell::default(),
            read_gate: Rc::default(),
            draining: Cell::new(false),
            stop_accept: LocalNotify::default(),
            admission,
            tls,
            client_tls,
            refusals_log: FailureLog::default(),
            push_counter: Rc::default(),
            link_refs: Cell::new(0),
            epoch: Instant::now(),
        };
        ctx.apply_registry(registry);
        ctx
    }

    /// Seconds since the shard started (the coarse clock of idle and ping timers).
    pub fn now_secs(&self) -> u32 {
        clock::recent()
            .saturating_duration_since(self.epoch)
            .as_secs() as u32
    }

    /// Milliseconds since the shard started (rate limiting).
    pub fn now_ms(&self) -> u64 {
        clock::recent()
            .saturating_duration_since(self.epoch)
            .as_millis() as u64
    }

    /// A fresh message id for a server push, in Bannou's `(unix_ms << 16) | counter`
    /// scheme.
    pub fn next_push_id(&self) -> u64 {
        next_push_id(&self.push_counter)
    }

    /// A session's number on the backend links.
    pub fn next_link_ref(&self) -> u64 {
        let n = self.link_refs.get() + 1;
        self.link_refs.set(n);
        n
    }

    /// A session ended: the links that were told about it are told it is gone.
    pub fn session_ended(&self, session: &Session) {
        let Ok(services) = self.services.try_borrow() else {
            return;
        };
        for svc in services.iter() {
            if let Backend::Link(link) = &svc.backend {
                link.session_closed(session.link_ref);
            }
        }
    }

    /// Swaps in a new registry snapshot; pools and links of services whose URL and
    /// addresses did not change are kept (with their connections); those no longer used
    /// are retired (their calls in flight still get answers). Must run on the shard's
    /// runtime: new links start dialing here. No DNS lookup happens here: the registry
    /// carries each service's resolved addresses.
    pub fn apply_registry(&self, reg: Arc<Registry>) {
        let b = &self.config.backend;
        let settings = BackendSettings {
            connect_timeout: Duration::from_millis(b.connect_timeout_ms),
            request_timeout: Duration::from_millis(b.request_timeout_ms),
            max_idle_per_shard: b.max_idle_per_shard,
            max_conns_per_shard: b.max_conns_per_shard,
            pipeline_depth: b.pipeline_depth,
            max_response_bytes: b.max_response_bytes,
        };
        let client_tls = self.client_tls.get().cloned();
        let link_settings = LinkSettings {
            connect_timeout: settings.connect_timeout,
            request_timeout: settings.request_timeout,
            max_inflight: b.link_max_inflight,
            idle_ping: Duration::from_secs(b.link_ping_secs),
            max_message_bytes: self
                .config
                .server
                .max_message_bytes
                .max(b.max_response_bytes),
            shard: self.id,
            announce_all: false,
            tls: client_tls.clone(),
        };
        let old = self.services.take();
        let mut services = Vec::with_capacity(reg.services.len());
        for svc in &reg.services {
            let url = svc.link.as_ref().unwrap_or(&svc.url);
            let addrs = svc.addrs.as_ref().ok();
            // Kept (with its connections) while its name, URL, addresses and
            // `announce_all` stay; a
            // service that could not be built is tried again at every update.
            let reuse = old
                .iter()
                .find(|o| {
                    o.meter.name == svc.name
                        && &o.url == url
                        && o.addrs.as_ref() == addrs
                        && o.announce_all == svc.announce_all
                        && !matches!(o.backend, Backend::Unavailable(_))
                })
                .cloned();
            let rt = match reuse {
                Some(rt) => rt,
                None => {
                    let metrics = self.all_metrics.service(self.id, &svc.name);
                    let built = match (&svc.addrs, &svc.link) {
                        (Err(why), _) => Err(why.clone()),
                        (Ok(_), None) if svc.url.is_empty() => Ok(Backend::Unavailable(
                            "no backend: the service has topic endpoints only".into(),
                        )),
                        (Ok(addrs), Some(link)) => {
                            let counter = self.push_counter.clone();
                            Link::new(
                                svc.name.clone(),
                                link,
                                addrs.to_vec(),
                                LinkSettings {
                                    announce_all: svc.announce_all,
                                    ..link_settings.clone()
                                },
                                Rc::new(move || next_push_id(&counter)),
                                metrics.clone(),
                                self.plane.clone(),
                            )
                            .map(|link| {
                                link.ensure_running();
                                Backend::Link(link)
                            })
                            .map_err(|e| e.to_string())
                        }
                        (Ok(addrs), None) => Pool::with_addrs(
                            &svc.url,
                            addrs.to_vec(),
                            settings.clone(),
                            client_tls.clone(),
                        )
                        .map(|p| Backend::Http(Rc::new(p)))
                        .map_err(|e| e.to_string()),
                    };
                    let backend = built.unwrap_or_else(|why| {
                        tracing::error!(shard = self.id, service = %svc.name, url = %url, error = %why, "service unavailable on this shard until the next registry update: its requests answer 60");
                        Backend::Unavailable(why.into())
                    });
                    Rc::new(ServiceRuntime {
                        url: url.clone(),
                        addrs: addrs.cloned(),
                        announce_all: svc.announce_all,
                        backend,
                        meter: Rc::new(ServiceMeter {
                            name: svc.name.clone(),
                            metrics,
                            failures: FailureLog::default(),
                            alerts: (!self.config.server.service_error_roles.is_empty()).then(
                                || Alerts {
                                    plane: self.plane.clone(),
                                    roles: self.config.server.service_error_roles.clone().into(),
                                },
                            ),
                        }),
                    })
                }
            };
            services.push(rt);
        }
        for o in old {
            if services.iter().any(|n| Rc::ptr_eq(n, &o)) {
                continue;
            }
            match &o.backend {
                // Its calls in flight still get their answers; then it closes.
                Backend::Link(link) => link.retire(),
                // Replies do not hold the pool: it is kept until every call it took
                // has been answered or has timed out (one deadline covers a call's
                // wait, connect, write and read), then dropped with its connections.
                Backend::Http(_) => {
                    let keep = settings.request_timeout + Duration::from_secs(1);
                    spawn_isolated("retired backend pool", async move {
                        monoio::time::sleep(keep).await;
                        drop(o);
                    });
                }
                Backend::Unavailable(_) => {}
            }
        }
        *self.services.borrow_mut() = services;
        *self.paths.borrow_mut() = reg.endpoints.iter().map(|e| Rc::from(&*e.path)).collect();
        *self.registry.borrow_mut() = reg;
    }

    /// A new handle for `session` on this shard, its idle timers counting from now.
    pub fn new_handle(&self, session: Session) -> Rc<ConnShared> {
        clock::refresh();
        Rc::new(ConnShared::new(
            session,
            self.config.server.max_outbox_bytes,
            self.session_env.clone(),
            self.now_secs(),
        ))
    }

    fn count_connection(&self) {
        self.metrics
            .connections_open
            .fetch_add(1, Ordering::Relaxed);
        self.metrics
            .connections_total
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Runs `f` on each of the shard's backend links.
    fn each_link(&self, f: impl Fn(&Link)) {
        for svc in self.services.borrow().iter() {
            if let Backend::Link(link) = &svc.backend {
                f(link);
            }
        }
    }

    /// Registers a session; its reference stays valid until it is removed.
    pub fn add_session(&self, c: Rc<ConnShared>) -> SessionRef {
        self.count_connection();
        let at = self.plane.add(c.clone());
        self.each_link(|link| link.session_opened(&c));
        at
    }

    /// Registers a raw route's connection: in the table (the sweep and the drain
    /// reach it), not in the directory (pushes by session or user are not for it).
    pub fn add_raw(&self, c: Rc<ConnShared>) {
        self.count_connection();
        self.plane.sessions.insert(c);
    }

    /// A resumed session's new connection took its place (`edge::resume`): counted
    /// as a connection, and the links reach the new handle.
    pub fn connection_resumed(&self, c: &Rc<ConnShared>) {
        self.count_connection();
        self.each_link(|link| link.session_resumed(c));
    }

    /// A connection's task ended. Its session is parked for its client's return
    /// (docs/DESIGN.md §7) unless it was ended on purpose, cannot be resumed, or a
    /// newer connection took it over; otherwise it ends now.
    pub fn connection_ended(&self, c: &ConnShared) {
        self.metrics
            .connections_open
            .fetch_sub(1, Ordering::Relaxed);
        if c.is_superseded() {
            return; // its session lives on in the newer connection
        }
        if c.resumable(unix_now().as_secs()) {
            c.park(self.now_secs());
            self.plane.park(c);
            self.metrics.sessions_parked.fetch_add(1, Ordering::Relaxed);
            self.each_link(|link| link.session_away(c.session.link_ref));
            self.plane.sessions.touch();
            return;
        }
        self.end_session(c);
    }

    /// A parked session's window ran out, or it was ended while parked: it ends.
    pub fn end_parked(&self, c: &ConnShared) {
        self.metrics.sessions_parked.fetch_sub(1, Ordering::Relaxed);
        self.end_session(c);
    }

    /// The session ends (its connection's task is over, so its socket is already
    /// unset): it leaves the table, the directory and its topics, and the links that
    /// knew it are told.
    fn end_session(&self, c: &ConnShared) {
        c.gone.set(true);
        if let Ok(mut out) = c.outbox.try_borrow_mut() {
            out.clear();
        }
        self.plane.remove(c.at(), c);
        self.session_ended(&c.session);
    }
}

/// A fresh push message id from the shard's counter, in Bannou's
/// `(unix_ms << 16) | counter` scheme.
fn next_push_id(counter: &Cell<u16>) -> u64 {
    let c = counter.get().wrapping_add(1);
    counter.set(c);
    crate::proto::event::push_message_id(unix_now().as_millis() as u64, c)
}
