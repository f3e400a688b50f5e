//! Starting and stopping the gateway: listeners, shard threads, the admin listener.
//!
//! Why at the top: this is the only code that runs outside a shard. It binds one
//! `SO_REUSEPORT` socket per shard (all on the same port, so the kernel spreads
//! connections), starts each shard's thread pinned to a core with its own monoio runtime
//! (io_uring, or the legacy epoll driver when the kernel refuses io_uring — said in the
//! log), and turns a shutdown into a message in every shard's mailbox.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::admin::{self, AdminState, PushApi};
use crate::admission::{self, Admission};
use crate::auth::{AuthSettings, Authenticator};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::push::Hub;
use crate::registry::Registry;
use crate::rt::mailbox::Mailbox;
use crate::shard::{ClientTlsCell, ProcessShared, ShardCtx, ShardMsg};

mod drain;
mod shard_thread;

pub use crate::rt::sys::raise_nofile_limit;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthConfigError),
    #[error("{key}: cannot read {path}: {source}")]
    KeyFile {
        key: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr} ({key}): {source}")]
    Bind {
        key: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{key}: {why}")]
    Resolve { key: String, why: String },
    #[error("shard {shard} failed to start: {source}")]
    Shard {
        shard: usize,
        source: std::io::Error,
    },
    #[error("cannot block SIGTERM/SIGINT: {0}")]
    Signals(std::io::Error),
    #[error("{key}: {error}")]
    Tls {
        key: &'static str,
        error: crate::tls::TlsError,
    },
}

/// The client listener's TLS, if `[tls]` names a certificate: its files read now, so a
/// bad path or key stops the start naming the key.
fn server_tls(config: &Config) -> Result<Option<crate::tls::ServerTls>, StartError> {
    let (Some(cert), Some(key)) = (&config.tls.cert_file, &config.tls.key_file) else {
        return Ok(None);
    };
    crate::tls::ServerTls::load(cert, key)
        .map(Some)
        .map_err(|error| StartError::Tls {
            key: if error.is_about(key) {
                "tls.key_file"
            } else {
                "tls.cert_file"
            },
            error,
        })
}

/// The client side's TLS config (`https://` backends, `wss://` links): the CAs in
/// `tls.ca_file`, else the system's roots. An error names `tls.ca_file` (a bad file, or
/// no system roots found and none named).
fn client_tls(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, StartError> {
    crate::tls::client_config(ca_file).map_err(|error| StartError::Tls {
        key: "tls.ca_file",
        error,
    })
}

/// Whether some service of `config` is reached over TLS.
fn needs_client_tls(config: &Config) -> bool {
    config.services.iter().any(|s| s.uses_tls())
}

/// A service whose host did not resolve when the first registry was built stops the
/// start, naming its key (later, at an update, the shards log it and answer that
/// service's requests with 60 instead).
fn check_resolved(registry: &Registry) -> Result<(), StartError> {
    match registry.unresolved().next() {
        Some((i, svc, why)) => {
            let key = if svc.link.is_some() { "link" } else { "url" };
            Err(StartError::Resolve {
                key: format!("services[{i}].{key}"),
                why: why.to_string(),
            })
        }
        None => Ok(()),
    }
}

/// A running gateway.
pub struct Gateway {
    /// The client listener's address (the real port when configured with port 0).
    pub addr: SocketAddr,
    /// The admin listener's address.
    pub admin_addr: SocketAddr,
    pub metrics: Arc<Metrics>,
    mailboxes: Vec<Arc<Mailbox<ShardMsg>>>,
    threads: Vec<JoinHandle<()>>,
    state: Arc<AdminState>,
    admin_thread: Option<JoinHandle<()>>,
    grace: Duration,
    /// The config in force (replaced by each successful reload) and the generation of
    /// the last registry sent to the shards.
    config: std::sync::Mutex<Arc<Config>>,
    generation: std::sync::atomic::AtomicU64,
    /// The client listener's certificate (re-read by `reload`), if it serves TLS.
    tls: Option<crate::tls::ServerTls>,
    /// The client side's TLS config, once built (shared with every shard), and the
    /// `tls.ca_file` of the start it is built from (`[tls]` is read at start only).
    client_tls: ClientTlsCell,
    ca_file: Option<std::path::PathBuf>,
    /// The admission limits every shard shares (a reload replaces them).
    admission: Arc<Admission>,
}

impl Gateway {
    /// Validated config in, running gateway out (returns once every shard listens).
    pub fn start(config: Config) -> Result<Gateway, StartError> {
        let config = Arc::new(config);
        let auth = Arc::new(Authenticator::new(&auth_settings(&config)?)?);
        let guid_secret = match config.server.guid_secret_bytes() {
            Ok(Some(s)) => s,
            _ => {
                tracing::warn!("server.guid_secret is not set: GUIDs will change when this process restarts (set it to keep them stable across restarts and instances)");
                crate::rt::sys::random_bytes()
            }
        };
        let tls = server_tls(&config)?;
        // Built only when a service needs it, so a host without system roots still
        // starts a plain config. A CA file that is named is read now all the same: a
        // bad one stops the start, not the reload that first needs it.
        let client_tls_cell = ClientTlsCell::default();
        if !needs_client_tls(&config) {
            if let Some(ca) = &config.tls.ca_file {
                client_tls(Some(ca))?;
            }
        }
        if needs_client_tls(&config) {
            let built = client_tls(config.tls.ca_file.as_deref())?;
            let _ = client_tls_cell.set(built);
        }
        let registry = Arc::new(Registry::from_config(&config, 1));
        check_resolved(&registry)?;
        let shards = config.server.shard_count();
        let metrics = Arc::new(Metrics::new(shards));

        let listen = config.server.listen_addr().expect("validated");
        let listeners = bind_reuseport(listen, shards, config.server.backlog)?;
        let addr = listeners[0]
            .local_addr()
            .map_err(|source| StartError::Bind {
                key: "server.listen",
                addr: listen,
                source,
            })?;
        let admin_addr_cfg = config.server.admin_addr().expect("validated");
        let admin_listener =
            std::net::TcpListener::bind(admin_addr_cfg).map_err(|source| StartError::Bind {
                key: "server.admin_listen",
                addr: admin_addr_cfg,
                source,
            })?;
        let admin_addr = admin_listener.local_addr().expect("bound");

        let ready = Arc::new(AtomicUsize::new(0));
        let hub = Arc::new(Hub::new(shards));
        let admission = Arc::new(Admission::new(
            admission::Limits::from_config(&config.server),
            metrics.clone(),
        ));
        let shared = ProcessShared {
            config: config.clone(),
            auth: auth.clone(),
            guid_secret,
            registry: registry.clone(),
            metrics: metrics.clone(),
            hub: hub.clone(),
            admission: admission.clone(),
            tls: tls.as_ref().map(|t| t.config().clone()),
            client_tls: client_tls_cell.clone(),
        };
        let state = Arc::new(AdminState {
            metrics: metrics.clone(),
            ready_shards: ready.clone(),
            shards,
            draining: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            push: PushApi {
                hub: hub.clone(),
                token: config.admin.token.clone(),
            },
            max_body_bytes: config.admin.max_body_bytes,
            max_connections: config.admin.max_connections,
            serving: AtomicUsize::new(0),
        });
        let admin_thread = admin::spawn(admin_listener, state.clone());

        let uring = !config.server.force_legacy_driver && monoio::utils::detect_uring();
        if !uring && !config.server.force_legacy_driver {
            tracing::warn!(
                "io_uring is not available (kernel refused it); using monoio's legacy epoll driver"
            );
        }
        // Pin within the CPU set this process was given (taskset, cgroups), not to CPU
        // numbers counted from 0.
        let cpus = allowed_cpus();
        let (started_tx, started_rx) = mpsc::channel::<(usize, std::io::Result<()>)>();
        let mut mailboxes = Vec::with_capacity(shards);
        let mut threads = Vec::with_capacity(shards);
        for (id, listener) in listeners.into_iter().enumerate() {
            let mailbox = Arc::new(Mailbox::default());
            mailboxes.push(mailbox.clone());
            let cpus = cpus.clone();
            let (shared, ready, started_tx) = (shared.clone(), ready.clone(), started_tx.clone());
            let handle = std::thread::Builder::new()
                .name(format!("ringgate-shard-{id}"))
                .spawn(move || {
                    let cpu = cpus[id % cpus.len()];
                    if let Err(e) = monoio::utils::bind_to_cpu_set([cpu]) {
                        tracing::warn!(shard = id, error = ?e, "could not pin shard to its core");
                    }
                    let fail_tx = started_tx.clone();
                    let task = move || async move {
                        let listener = match monoio::net::TcpListener::from_std(listener) {
                            Ok(l) => l,
                            Err(e) => {
                                let _ = started_tx.send((id, Err(e)));
                                return;
                            }
                        };
                        let ctx = std::rc::Rc::new(ShardCtx::new(id, shared));
                        let _ = started_tx.send((id, Ok(())));
                        shard_thread::run(ctx, listener, mailbox, ready).await;
                    };
                    let built = if uring {
                        shard_uring_runtime().map(|mut rt| rt.block_on(task()))
                    } else {
                        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                            .enable_timer()
                            .build()
                            .map(|mut rt| rt.block_on(task()))
                    };
                    if let Err(e) = built {
                        let _ = fail_tx.send((id, Err(e)));
                    }
                })
                .map_err(|source| StartError::Shard { shard: id, source })?;
            threads.push(handle);
        }
        drop(started_tx);
        for _ in 0..shards {
            match started_rx.recv() {
                Ok((_, Ok(()))) => {}
                Ok((shard, Err(source))) => {
                    for m in &mailboxes {
                        m.send(ShardMsg::Shutdown);
                    }
                    return Err(StartError::Shard { shard, source });
                }
                Err(_) => {
                    return Err(StartError::Shard {
                        shard: 0,
                        source: std::io::Error::other("shard thread exited during start"),
                    })
                }
            }
        }
        tracing::info!(
            listen = %addr,
            admin = %admin_addr,
            shards,
            driver = if uring { "io_uring" } else { "legacy (epoll)" },
            tls = tls.is_some(),
            services = registry.services.len(),
            endpoints = registry.endpoints.len(),
            "ringgate listening"
        );
        Ok(Gateway {
            addr,
            admin_addr,
            metrics,
            mailboxes,
            threads,
            state,
            admin_thread: Some(admin_thread),
            // The longest a drain takes: the window, the last client's calls in flight
            // (answered by their timeout at the latest), then the close frames' grace.
            grace: Duration::from_millis(
                config.server.drain_window_ms
                    + config.backend.request_timeout_ms
                    + config.server.shutdown_grace_ms,
            ),
            generation: std::sync::atomic::AtomicU64::new(registry.generation),
            ca_file: config.tls.ca_file.clone(),
            config: std::sync::Mutex::new(config),
            tls,
            client_tls: client_tls_cell,
            admission,
        })
    }

    /// Applies a new config's services and endpoints to every shard: a new registry
    /// snapshot (hosts resolved here, on the caller's thread, never on a shard), and a
    /// new manifest to each session whose callable endpoints changed; and `[server]`'s
    /// admission limits (`max_connections`, `max_connections_per_ip`,
    /// `upgrade_rate_per_ip`, `upgrade_burst_per_ip`, `per_ip_exempt`) for the
    /// connections that come next. The rest of `[server]`, `[auth]`, `[backend]`,
    /// `[admin]` and `[tls]` are read at start only (the certificate files are re-read):
    /// a change there is logged as waiting for a restart. Returns the new registry's
    /// generation.
    pub fn reload(&self, config: Config) -> u64 {
        let mut current = self.config.lock().unwrap_or_else(|e| e.into_inner());
        // The admission limits apply now; the rest of [server] waits for a restart.
        let server = admission::Limits::with_limits_of(&current.server, &config.server);
        for (section, changed) in [
            ("server", server != config.server),
            ("auth", current.auth != config.auth),
            ("backend", current.backend != config.backend),
            ("admin", current.admin != config.admin),
            ("tls", current.tls != config.tls),
        ] {
            if changed {
                tracing::warn!(
                    section,
                    "config reload: [{section}] changed; it takes effect at the next start (a reload applies [[services]] and [server]'s admission limits)"
                );
            }
        }
        let limits = admission::Limits::from_config(&config.server);
        if self.admission.set_limits(limits.clone()) {
            tracing::info!(
                max_connections = limits.max_connections,
                max_connections_per_ip = limits.max_per_ip,
                upgrade_rate_per_ip = limits.rate.per_sec,
                upgrade_burst_per_ip = limits.rate.burst,
                per_ip_exempt = ?config.server.per_ip_exempt,
                "config reload: admission limits replaced (connections held stay)"
            );
        }
        if let Some(tls) = &self.tls {
            // The same files, read again: a renewed certificate is served from the next
            // handshake on; a bad one leaves the current one in place.
            match tls.reload() {
                Ok(()) => tracing::info!("config reload: TLS certificate re-read"),
                Err(e) => {
                    tracing::error!(error = %e, "config reload: TLS certificate not replaced (the current one stays)")
                }
            }
        }
        if self.client_tls.get().is_none() && needs_client_tls(&config) {
            // The first https:// or wss:// service: the client TLS config is built now,
            // before the shards get the registry that needs it (they read it then).
            match client_tls(self.ca_file.as_deref()) {
                Ok(built) => {
                    let _ = self.client_tls.set(built);
                }
                Err(e) => {
                    tracing::error!(error = %e, "config reload: no TLS client config, so https:// and wss:// services answer 60")
                }
            }
        }
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let registry = Registry::from_config(&config, generation);
        for (_, svc, why) in registry.unresolved() {
            tracing::error!(service = %svc.name, error = %why, "config reload: service unavailable (its requests answer 60 until a reload resolves it)");
        }
        tracing::info!(
            generation,
            services = registry.services.len(),
            endpoints = registry.endpoints.len(),
            "config reloaded: new registry sent to every shard"
        );
        self.update_registry(Arc::new(registry));
        // What is in force: the new services and limits, the rest as started (so a
        // change waiting for a restart is reported again at every reload).
        *current = Arc::new(Config {
            server,
            auth: current.auth.clone(),
            backend: current.backend.clone(),
            admin: current.admin.clone(),
            tls: current.tls.clone(),
            services: config.services,
        });
        generation
    }

    /// Whether every shard is accepting.
    pub fn is_ready(&self) -> bool {
        self.state.is_ready()
    }

    /// Publishes a new registry snapshot to every shard.
    pub fn update_registry(&self, reg: Arc<Registry>) {
        for m in &self.mailboxes {
            m.send(ShardMsg::Registry(reg.clone()));
        }
    }

    /// Starts a graceful shutdown: stop accepting, close every connection with 1001.
    pub fn shutdown(&self) {
        self.state.draining.store(true, Ordering::SeqCst);
        for m in &self.mailboxes {
            m.send(ShardMsg::Shutdown);
        }
    }

    /// Shuts down (if not yet) and waits for the shards; returns false if some shard
    /// did not finish its drain (window, calls in flight, grace) plus a margin.
    pub fn stop(mut self) -> bool {
        self.shutdown();
        let deadline = Instant::now() + self.grace + Duration::from_secs(2);
        let mut clean = true;
        for t in self.threads.drain(..) {
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if t.is_finished() {
                let _ = t.join();
            } else {
                clean = false;
            }
        }
        self.state.stop.store(true, Ordering::SeqCst);
        // Wake the admin thread's blocking accept.
        let _ = std::net::TcpStream::connect_timeout(&self.admin_addr, Duration::from_millis(200));
        if let Some(t) = self.admin_thread.take() {
            let _ = t.join();
        }
        clean
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.shutdown();
        }
    }
}

fn auth_settings(config: &Config) -> Result<AuthSettings, StartError> {
    let a = &config.auth;
    let read = |key: &'static str,
                p: &Option<std::path::PathBuf>|
     -> Result<Option<Vec<u8>>, StartError> {
        match p {
            None => Ok(None),
            Some(path) => std::fs::read(path)
                .map(Some)
                .map_err(|source| StartError::KeyFile {
                    key,
                    path: path.clone(),
                    source,
                }),
        }
    };
    Ok(AuthSettings {
        hs256_secret: a.hs256_secret.clone(),
        rs256_public_key_pem: read("auth.rs256_public_key", &a.rs256_public_key)?,
        es256_public_key_pem: read("auth.es256_public_key", &a.es256_public_key)?,
        eddsa_public_key_pem: read("auth.eddsa_public_key", &a.eddsa_public_key)?,
        issuer: a.issuer.clone(),
        audience: a.audience.clone(),
        leeway_secs: a.leeway_secs,
        allow_anonymous: a.allow_anonymous,
    })
}

/// Binds `n` listening sockets to the same address with `SO_REUSEPORT` (the first picks
/// the port when `addr` has port 0).
fn bind_reuseport(
    addr: SocketAddr,
    n: usize,
    backlog: i32,
) -> Result<Vec<std::net::TcpListener>, StartError> {
    use socket2::{Domain, Socket, Type};
    let mut out = Vec::with_capacity(n);
    let mut at = addr;
    for _ in 0..n {
        let err = |source| StartError::Bind {
            key: "server.listen",
            addr,
            source,
        };
        let s = Socket::new(Domain::for_address(at), Type::STREAM, None).map_err(err)?;
        s.set_reuse_address(true).map_err(err)?;
        s.set_reuse_port(true).map_err(err)?;
        s.set_nonblocking(true).map_err(err)?;
        s.bind(&at.into()).map_err(err)?;
        s.listen(backlog).map_err(err)?;
        let l: std::net::TcpListener = s.into();
        at = l.local_addr().map_err(err)?;
        out.push(l);
    }
    Ok(out)
}

/// Runs a gateway until SIGTERM or SIGINT, then drains it: what the `ringgate` binary
/// does (and `ringgate-bench gateway`). SIGHUP reloads `reload_from` (the `--config`
/// file): its services and endpoints reach every shard and every affected session gets
/// a new manifest ([`Gateway::reload`]); a file that fails validation changes nothing.
/// Call it before any other thread is started: it blocks the three signals in the
/// calling thread, every thread the gateway starts inherits that mask, and the signals
/// are then taken synchronously with `sigwait`, so no handler runs on a shard thread
/// and none is lost.
pub fn run_until_signalled(config: Config, reload_from: Option<&Path>) -> Result<(), StartError> {
    let (soft, hard) = raise_nofile_limit();
    tracing::info!(soft, hard, "file descriptor limit (RLIMIT_NOFILE)");
    let signals = Signals::block().map_err(StartError::Signals)?;
    let gateway = Gateway::start(config)?;
    let sig = loop {
        let sig = signals.wait();
        if sig != libc::SIGHUP {
            break sig;
        }
        // SIGHUP: read the config file again; a file that fails validation changes
        // nothing (the running config stays) and the log says why.
        let Some(path) = reload_from else {
            tracing::warn!("SIGHUP: no --config file to reload (running on the embedded defaults)");
            continue;
        };
        match Config::from_file(path, &Config::process_env()) {
            Ok(config) => {
                gateway.reload(config);
            }
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "SIGHUP: config reload refused, nothing changed");
            }
        }
    };
    tracing::info!(
        signal = sig,
        "shutting down: no new connections, closing open ones with 1001"
    );
    if gateway.stop() {
        tracing::info!("stopped");
    } else {
        tracing::warn!("stopped; some shards did not finish within the grace period");
    }
    Ok(())
}

/// SIGTERM, SIGINT (shut down) and SIGHUP (reload), blocked in every thread and taken
/// synchronously.
struct Signals(libc::sigset_t);

impl Signals {
    fn block() -> std::io::Result<Signals> {
        // SAFETY: sigset_t is plain data initialised by sigemptyset before use; the calls
        // only read and write the set we pass.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::sigaddset(&mut set, libc::SIGHUP);
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if rc != 0 {
                return Err(std::io::Error::from_raw_os_error(rc));
            }
            Ok(Signals(set))
        }
    }

    /// Waits for one of the signals; returns its number.
    fn wait(&self) -> i32 {
        let mut sig = 0;
        loop {
            // SAFETY: sigwait reads our set and writes the signal number.
            let rc = unsafe { libc::sigwait(&self.0, &mut sig) };
            if rc == 0 {
                return sig;
            }
        }
    }
}

/// The CPUs this process may run on, in order (at least one entry).
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills the set we pass, and
    // CPU_ISSET only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0 {
            let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
                .filter(|&c| libc::CPU_ISSET(c, &set))
                .collect();
            if !cpus.is_empty() {
                return cpus;
            }
        }
    }
    (0..std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1))
        .collect()
}

/// A shard's io_uring runtime, with `IORING_SETUP_COOP_TASKRUN` where the kernel has it
/// (5.19+; else the default setup, and monoio falls back to epoll where io_uring is
/// refused altogether).
///
/// Why: by default io_uring interrupts the shard thread (an inter-processor interrupt,
/// paid in the sender's path) whenever a completion arrives while it runs user code. A
/// busy shard enters the kernel on every turn of its loop anyway, and picks completions
/// up then, so the interrupt buys nothing.
fn shard_uring_runtime() -> std::io::Result<
    monoio::FusionRuntime<
        monoio::time::TimeDriver<monoio::IoUringDriver>,
        monoio::time::TimeDriver<monoio::LegacyDriver>,
    >,
> {
    let mut urb = io_uring::IoUring::builder();
    urb.setup_coop_taskrun();
    monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .with_entries(4096)
        .uring_builder(urb)
        .enable_timer()
        .build()
        .or_else(|_| {
            monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
                .with_entries(4096)
                .enable_timer()
                .build()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_cpus_follow_the_inherited_affinity_mask() {
        let all = allowed_cpus();
        assert!(!all.is_empty());
        // Restrict this thread to its last allowed CPU: the list follows.
        let last = *all.last().unwrap();
        std::thread::spawn(move || {
            // SAFETY: plain affinity calls on the current thread with a set we build.
            unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(last, &mut set);
                assert_eq!(
                    libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set),
                    0
                );
            }
            assert_eq!(allowed_cpus(), vec![last]);
        })
        .join()
        .unwrap();
    }
}
