//! A shard: one thread, one monoio runtime, one `SO_REUSEPORT` listener, and all the
//! state of the connections it accepted.
//!
//! Why: thread-per-core (DESIGN §1). Everything a connection touches on its message path
//! — its session, the registry snapshot, the backend pools, the read buffer — belongs to
//! its shard and is reached through `Rc`/`RefCell`, never a lock. Other threads reach a
//! shard only through its [`Mailbox`]. The shard's connection table (a slab) is where the
//! timer sweep, shutdown and, later, cross-shard pushes find a connection.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use monoio::net::TcpListener;
use slab::Slab;

use crate::auth::Authenticator;
use crate::backend::{BackendSettings, Pool};
use crate::config::Config;
use crate::conn::{self, ConnShared};
use crate::link::{Link, LinkSettings};
use crate::mailbox::{Mailbox, ShardMsg};
use crate::metrics::{Metrics, ServiceMetrics, ShardMetrics};
use crate::outbox::LocalNotify;
use crate::registry::Registry;

/// Size of a shard read: what one readiness wakeup reads at most per `recv`.
pub const READ_CHUNK: usize = 32 * 1024;

/// How a shard reaches a service.
pub enum Backend {
    /// HTTP/1.1 `POST` per request over the shard's pool (`url`).
    Http(Rc<Pool>),
    /// The backend link: one multiplexed WebSocket (`link`, docs/LINK.md).
    Link(Link),
    /// The service could not be set up on this shard (its host did not resolve at a
    /// reload): its requests answer 60; the reason was logged when it was built.
    Unavailable(Box<str>),
}

/// A backend service as one shard uses it.
pub struct ServiceRuntime {
    pub name: Arc<str>,
    /// The `url` or the `link` URL, as configured.
    pub url: String,
    pub backend: Backend,
    pub metrics: Arc<ServiceMetrics>,
    /// Throttles the warning logged per failed backend call.
    pub failures: FailureLog,
}

/// Backend failures are logged at most once a second per service and shard, with the
/// number left unlogged since the previous line: during an outage every failed request
/// is still counted in the metrics and answered, but does not become a log line of its
/// own (measured: a 1.5 s backend restart under 20k requests/s logged 30,143 lines).
#[derive(Debug, Default)]
pub struct FailureLog {
    since: Cell<Option<Instant>>,
    unlogged: Cell<u64>,
}

impl FailureLog {
    /// Records a failure at `now`: `Some(n)` if it should be logged now (`n` failures
    /// went unlogged since the previous line), `None` if it only counts.
    pub fn admit(&self, now: Instant) -> Option<u64> {
        match self.since.get() {
            Some(t) if now.saturating_duration_since(t) < Duration::from_secs(1) => {
                self.unlogged.set(self.unlogged.get() + 1);
                None
            }
            _ => {
                self.since.set(Some(now));
                Some(self.unlogged.replace(0))
            }
        }
    }
}

impl std::fmt::Debug for ServiceRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Service({} at {})", self.name, self.url)
    }
}

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
    pub conns: RefCell<Slab<Rc<ConnShared>>>,
    pub metrics: Arc<ShardMetrics>,
    pub all_metrics: Arc<Metrics>,
    /// The one read buffer all of this shard's connections read into.
    pub read_buf: RefCell<BytesMut>,
    /// The last session key expanded for opening GUIDs (a read batch is one session's).
    pub guid_cache: RefCell<crate::proto::guid::OpenCache>,
    /// Read batching while the thread is busy (see `crate::gate`).
    pub read_gate: Rc<crate::gate::ReadGate>,
    pub draining: Cell<bool>,
    stop_accept: LocalNotify,
    conns_changed: LocalNotify,
    push_counter: Rc<Cell<u16>>,
    /// Numbers sessions for the backend links (never reused while the process runs).
    link_refs: Cell<u64>,
    epoch: Instant,
}

impl ShardCtx {
    pub fn new(
        id: usize,
        config: Arc<Config>,
        auth: Arc<Authenticator>,
        guid_secret: [u8; 32],
        registry: Arc<Registry>,
        all_metrics: Arc<Metrics>,
    ) -> ShardCtx {
        let ctx = ShardCtx {
            id,
            metrics: all_metrics.shards[id].clone(),
            config,
            auth,
            guid_secret,
            registry: RefCell::new(Arc::new(Registry::default())),
            services: RefCell::default(),
            paths: RefCell::default(),
            conns: RefCell::new(Slab::new()),
            all_metrics,
            read_buf: RefCell::new(BytesMut::new()),
            guid_cache: RefCell::default(),
            read_gate: Rc::default(),
            draining: Cell::new(false),
            stop_accept: LocalNotify::default(),
            conns_changed: LocalNotify::default(),
            push_counter: Rc::default(),
            link_refs: Cell::new(0),
            epoch: Instant::now(),
        };
        ctx.apply_registry(registry);
        ctx
    }

    /// Seconds since the shard started (the coarse clock of idle and ping timers).
    pub fn now_secs(&self) -> u32 {
        crate::clock::recent()
            .saturating_duration_since(self.epoch)
            .as_secs() as u32
    }

    /// Milliseconds since the shard started (rate limiting).
    pub fn now_ms(&self) -> u64 {
        crate::clock::recent()
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
    pub fn session_ended(&self, session: &crate::conn::Session) {
        let Ok(services) = self.services.try_borrow() else {
            return;
        };
        for svc in services.iter() {
            if let Backend::Link(link) = &svc.backend {
                link.session_closed(session.link_ref);
            }
        }
    }

    /// Swaps in a new registry snapshot; pools and links of services whose URL did not
    /// change are kept (with their connections); links no longer used are retired (their
    /// calls in flight still get answers). Must run on the shard's runtime: new links
    /// start dialing here.
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
        };
        let old = self.services.take();
        let mut services = Vec::with_capacity(reg.services.len());
        for svc in &reg.services {
            let url = svc.link.as_ref().unwrap_or(&svc.url);
            let reuse = old
                .iter()
                .find(|o| o.name == svc.name && &o.url == url)
                .cloned();
            let rt = match reuse {
                Some(rt) => rt,
                None => {
                    let metrics = self.all_metrics.service(self.id, &svc.name);
                    let built = match &svc.link {
                        Some(link) => {
                            let counter = self.push_counter.clone();
                            Link::new(
                                svc.name.clone(),
                                link,
                                link_settings.clone(),
                                Rc::new(move || next_push_id(&counter)),
                                metrics.clone(),
                            )
                            .map(|link| {
                                link.ensure_running();
                                Backend::Link(link)
                            })
                            .map_err(|e| e.to_string())
                        }
                        None => Pool::new(&svc.url, settings.clone())
                            .map(|p| Backend::Http(Rc::new(p)))
                            .map_err(|e| e.to_string()),
                    };
                    let backend = built.unwrap_or_else(|why| {
                        tracing::error!(shard = self.id, service = %svc.name, url = %url, error = %why, "service unavailable on this shard: its requests answer 60");
                        Backend::Unavailable(why.into())
                    });
                    Rc::new(ServiceRuntime {
                        name: svc.name.clone(),
                        url: url.clone(),
                        backend,
                        metrics,
                        failures: FailureLog::default(),
                    })
                }
            };
            services.push(rt);
        }
        for o in &old {
            if let Backend::Link(link) = &o.backend {
                if !services.iter().any(|n| Rc::ptr_eq(n, o)) {
                    link.retire();
                }
            }
        }
        *self.services.borrow_mut() = services;
        *self.paths.borrow_mut() = reg.endpoints.iter().map(|e| Rc::from(&*e.path)).collect();
        *self.registry.borrow_mut() = reg;
    }

    /// Registers a connection; returns its slot.
    pub fn add_conn(&self, c: Rc<ConnShared>) -> usize {
        self.metrics
            .connections_open
            .fetch_add(1, Ordering::Relaxed);
        self.metrics
            .connections_total
            .fetch_add(1, Ordering::Relaxed);
        self.conns.borrow_mut().insert(c)
    }

    /// Removes a connection by slot.
    pub fn remove_conn(&self, slot: usize) {
        if self.conns.borrow_mut().try_remove(slot).is_some() {
            self.metrics
                .connections_open
                .fetch_sub(1, Ordering::Relaxed);
            self.conns_changed.notify();
        }
    }
}

/// Spawns a task on this shard whose panic ends only that task: the panic is caught,
/// logged with `what`, and the shard's other connections carry on. (monoio would
/// otherwise unwind through the whole shard runtime.)
pub fn spawn_isolated<F>(what: &'static str, fut: F)
where
    F: std::future::Future<Output = ()> + 'static,
{
    monoio::spawn(Isolated { what, fut });
}

struct Isolated<F> {
    what: &'static str,
    fut: F,
}

impl<F: std::future::Future<Output = ()>> std::future::Future for Isolated<F> {
    type Output = ();
    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        // SAFETY: a pin projection: `fut` is never moved out of the pinned `Isolated`
        // (no method hands it out by value, and `Isolated` has no Drop impl).
        let this = unsafe { self.get_unchecked_mut() };
        let fut = unsafe { std::pin::Pin::new_unchecked(&mut this.fut) };
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(p) => p,
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(task = this.what, panic = %msg, "task panicked; it alone was stopped");
                std::task::Poll::Ready(())
            }
        }
    }
}

/// A fresh push message id from the shard's counter, in Bannou's
/// `(unix_ms << 16) | counter` scheme.
fn next_push_id(counter: &Cell<u16>) -> u64 {
    let c = counter.get().wrapping_add(1);
    counter.set(c);
    crate::proto::event::push_message_id(unix_now().as_millis() as u64, c)
}

/// Wall-clock time since the Unix epoch (JWT expiry, event timestamps).
pub fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// The shard's main task: accepts, sweeps timers, obeys its mailbox; returns once a
/// shutdown has drained (or the grace period ran out).
pub async fn run(
    ctx: Rc<ShardCtx>,
    listener: TcpListener,
    mailbox: Arc<Mailbox>,
    ready: Arc<AtomicUsize>,
) {
    monoio::spawn(sweep(ctx.clone()));
    monoio::spawn(accept_loop(ctx.clone(), listener));
    let tick = ctx.config.server.read_batch_tick_us;
    if tick > 0 {
        monoio::spawn(crate::gate::run(
            ctx.read_gate.clone(),
            Duration::from_micros(tick),
            ctx.metrics.clone(),
        ));
    }
    ready.fetch_add(1, Ordering::SeqCst);
    loop {
        match mailbox.recv().await {
            ShardMsg::Shutdown => break,
            ShardMsg::Registry(reg) => {
                tracing::info!(
                    shard = ctx.id,
                    generation = reg.generation,
                    "registry updated"
                );
                ctx.apply_registry(reg);
            }
        }
    }
    ready.fetch_sub(1, Ordering::SeqCst);
    ctx.draining.set(true);
    ctx.stop_accept.notify();
    let open: Vec<Rc<ConnShared>> = ctx.conns.borrow().iter().map(|(_, c)| c.clone()).collect();
    tracing::info!(shard = ctx.id, connections = open.len(), "draining");
    for c in &open {
        c.request_close(crate::proto::frame::CLOSE_GOING_AWAY, "server shutdown");
    }
    drop(open);
    let grace = Duration::from_millis(ctx.config.server.shutdown_grace_ms);
    let drained = monoio::time::timeout(grace, async {
        while !ctx.conns.borrow().is_empty() {
            ctx.conns_changed.notified().await;
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            shard = ctx.id,
            left = ctx.conns.borrow().len(),
            "shutdown grace period over; dropping the remaining connections"
        );
    }
}

async fn accept_loop(ctx: Rc<ShardCtx>, listener: TcpListener) {
    let mut fd_limit_logged = false;
    loop {
        monoio::select! {
            r = listener.accept() => match r {
                Ok((stream, _peer)) => {
                    fd_limit_logged = false;
                    if ctx.draining.get() {
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    spawn_isolated("connection handshake", conn::serve(ctx.clone(), stream));
                }
                Err(e) => {
                    let limit = matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE));
                    if limit {
                        if !fd_limit_logged {
                            tracing::error!(
                                shard = ctx.id,
                                open = ctx.conns.borrow().len(),
                                nofile = crate::server::nofile_limit(),
                                "file descriptor limit reached (RLIMIT_NOFILE); new connections wait until some close — raise LimitNOFILE or run more processes"
                            );
                            fd_limit_logged = true;
                        }
                    } else {
                        tracing::warn!(shard = ctx.id, error = %e, "accept failed");
                    }
                    monoio::time::sleep(Duration::from_millis(if limit { 100 } else { 10 })).await;
                }
            },
            _ = ctx.stop_accept.notified() => break,
        }
    }
    tracing::debug!(shard = ctx.id, "listener closed");
}

/// Once a second: server pings to idle clients, the pong deadline, session expiry.
async fn sweep(ctx: Rc<ShardCtx>) {
    let idle = ctx.config.server.idle_ping_secs as u32;
    let pong = ctx.config.server.pong_timeout_secs as u32;
    loop {
        monoio::time::sleep(Duration::from_secs(1)).await;
        if ctx.draining.get() {
            return;
        }
        crate::clock::refresh();
        let now = ctx.now_secs();
        let unix = unix_now().as_secs();
        let conns: Vec<Rc<ConnShared>> =
            ctx.conns.borrow().iter().map(|(_, c)| c.clone()).collect();
        for c in conns {
            if c.manifest_overdue(now) && !c.closing() {
                crate::conn::send_manifest(&ctx, &c, "initial");
            }
            c.on_tick(now, unix, idle, pong);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_failures_are_logged_once_a_second_with_the_count_left_unlogged() {
        let log = FailureLog::default();
        let t0 = Instant::now();
        assert_eq!(log.admit(t0), Some(0), "the first failure is logged");
        for ms in [1, 200, 999] {
            assert_eq!(log.admit(t0 + Duration::from_millis(ms)), None);
        }
        assert_eq!(log.admit(t0 + Duration::from_millis(1000)), Some(3));
        assert_eq!(log.admit(t0 + Duration::from_millis(1500)), None);
        assert_eq!(log.admit(t0 + Duration::from_secs(5)), Some(1));
    }

    #[test]
    fn a_panicking_task_stops_alone_and_the_shard_runs_on() {
        let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        let done = rt.block_on(async {
            let done = std::rc::Rc::new(Cell::new(false));
            spawn_isolated("test", async { panic!("boom") });
            let d = done.clone();
            spawn_isolated("test", async move {
                monoio::time::sleep(Duration::from_millis(10)).await;
                d.set(true);
            });
            // (Printing the panic, with a backtrace, can take a while.)
            for _ in 0..500 {
                if done.get() {
                    break;
                }
                monoio::time::sleep(Duration::from_millis(10)).await;
            }
            done.get()
        });
        assert!(done);
    }
}
