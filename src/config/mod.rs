//! Configuration: the TOML file, its embedded defaults, `RINGGATE_*` environment
//! overrides, and validation that names the offending key. `url` takes apart the
//! services' URLs.
//!
//! Why a module of its own: every other part of ringgate receives an already-validated
//! [`Config`], so no runtime code has to cope with a missing key or a bad address. The
//! defaults live in `configs/default.toml` (compiled in) so that one file documents them
//! and the binary runs as-is on localhost.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub mod net;
pub mod tls;
pub mod url;

pub use tls::TlsConfig;

/// The embedded default configuration (localhost only).
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../../configs/default.toml");

/// The HS256 secret `configs/default.toml` ships for localhost development. It is
/// public, so a config that uses it is refused for a listener off loopback.
pub const DEV_HS256_SECRET: &str = "ringgate-dev-secret-change-me-0123456789";

/// The most `server.max_outbox_bytes` and `backend.max_response_bytes` may be: an
/// outbox then never holds more than a few times this, which its `u32` offsets rely
/// on (`session::outbox`).
const MAX_BUFFERED: usize = 256 << 20;

/// Prefix of environment variables that override config keys:
/// `RINGGATE_SERVER_LISTEN=0.0.0.0:8080` sets `server.listen`.
pub const ENV_PREFIX: &str = "RINGGATE_";

/// A configuration problem; the message always names the key (e.g. `server.listen`).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config is not valid TOML: {0}")]
    Syntax(String),
    #[error("config key `{key}`: {message}")]
    Key { key: String, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
}

impl ConfigError {
    fn key(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Key {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub auth: AuthConfig,
    pub backend: BackendConfig,
    pub admin: AdminConfig,
    #[serde(default)]
    pub tls: TlsConfig,
    #[serde(default)]
    pub services: Vec<ServiceConfig>,
}

/// `[admin]`: the admin listener's push API (docs/DESIGN.md §5).
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Bearer token of the push API (`/v1/...`); absent = the push API is off (it
    /// answers 404 saying so). Never logged.
    #[serde(default)]
    pub token: Option<String>,
    /// Largest push API request body; larger ones answer 413.
    pub max_body_bytes: usize,
    /// Push API connections served at once (one thread each, keep-alive); more wait in
    /// the listen backlog.
    pub max_connections: usize,
}

// Every key of `[server]`, `[auth]` and `[backend]` is present when these structs are
// deserialized: `fill_defaults` gives the ones a file leaves out their value in
// `configs/default.toml`, so the defaults are written in that one place (optional
// keys, absent there too, are `Option`s or `#[serde(default)]`).

/// `[server]`: listeners, limits and timers of the client edge.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: String,
    pub path: String,
    #[serde(default)]
    pub shards: usize,
    pub admin_listen: String,
    pub max_message_bytes: usize,
    pub handshake_timeout_ms: u64,
    pub idle_ping_secs: u64,
    pub pong_timeout_secs: u64,
    pub max_channels: u16,
    pub rate_limit_per_sec: u32,
    pub rate_limit_burst: u32,
    pub max_outbox_bytes: usize,
    /// Requests of one connection being forwarded or queued at once; past it the
    /// connection is not read until some finish (TCP backpressure, nothing dropped).
    pub max_inflight_per_connection: u32,
    pub shutdown_grace_ms: u64,
    /// Shutdown: the clients are sent away (disconnect notice, 1001) evenly over this
    /// window, so their reconnections reach the next instance as a stream, not a spike.
    pub drain_window_ms: u64,
    /// Read batching while a shard's thread is busy: each client connection reads at
    /// most once per tick of this length (see `crate::shard::gate`); 0 = never.
    pub read_batch_tick_us: u64,
    pub backlog: i32,
    /// Send a ping with the `101` and the capability manifest once the client answers
    /// it (or sends anything), instead of in the same write as the `101`. Bannou's
    /// TypeScript SDK on Node handles a manifest that arrives with the `101` before it
    /// starts waiting for one, then waits 30 s; a client that never answers gets the
    /// manifest from the shard's sweep 1–3 s after its upgrade.
    pub manifest_after_pong: bool,
    /// Hex-encoded 32-byte secret from which per-session GUID keys are derived. Set it
    /// (the same on every instance) so GUIDs survive a restart or a move to another
    /// instance; unset, a random one is drawn at start.
    #[serde(default)]
    pub guid_secret: Option<String>,
    /// Force monoio's legacy (epoll) driver even where io_uring is available.
    #[serde(default)]
    pub force_legacy_driver: bool,
    /// `TCP_NOTSENT_LOWAT` on client sockets: at most this many bytes wait unsent in
    /// the kernel per client; the rest of a slow reader's backlog stays in its outbox,
    /// bounded by `max_outbox_bytes` and conflated by key (0 = the kernel's default,
    /// which lets up to the whole send buffer fill first).
    pub send_lowat_bytes: u32,
    /// Roles whose sessions may broadcast (a peer message to the all-FF GUID reaches
    /// every other session); empty = nobody (code 40).
    pub broadcast_roles: Vec<String>,
    /// Sessions with one of these roles receive `service_error` events when a backend
    /// call fails (rate-limited per session).
    pub service_error_roles: Vec<String>,
    /// How long a session outlives its connection (seconds): a client that drops, is
    /// dropped or closes may resume it within this window with its reconnection token
    /// (`Authorization: Reconnect <token>`); 0 = sessions end with their connection.
    pub reconnect_window_secs: u32,
    /// Events (pushes, topic messages) kept for a session while its client is away;
    /// past it the oldest go (counted, and the resume says how many). Keyed topic
    /// messages replace older ones with the same key, as in the outbox.
    pub resume_buffer_bytes: usize,

    // Limits and abuse (docs/DESIGN.md §3), kept together.
    /// Largest upgrade request head (request line and headers); a larger one is
    /// answered 431 before it is read further.
    pub max_handshake_bytes: usize,
    /// Client connections at once over all shards, from accept to close (handshakes in
    /// progress included); past it a new one is answered 503. 0 = no limit.
    pub max_connections: u64,
    /// The same per source address (IPv6: per /64 prefix); 0 = no limit.
    pub max_connections_per_ip: u32,
    /// Upgrade attempts per second from one source address (a token bucket), with
    /// `upgrade_burst_per_ip`; past it a new connection is answered 429. 0 = no limit.
    pub upgrade_rate_per_ip: u32,
    pub upgrade_burst_per_ip: u32,
    /// Source addresses or prefixes (`127.0.0.0/8`, `::1`) the per-address limits skip:
    /// a TLS terminator or load balancer in front, whose address every client shares,
    /// and the load harness on loopback.
    pub per_ip_exempt: Vec<String>,
    /// A connection that completes no message (pongs count) for this long is closed
    /// with 1001 "idle timeout": one that trickles a frame's bytes is never pinged.
    /// 0 = never; else more than `idle_ping_secs + pong_timeout_secs`, so a client
    /// that only answers pings is not idle.
    pub idle_timeout_secs: u64,
}

/// `[auth]`: how upgrade requests are authenticated.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(default)]
    pub hs256_secret: Option<String>,
    /// PEM files with the public keys of the pinned asymmetric algorithms.
    #[serde(default)]
    pub rs256_public_key: Option<PathBuf>,
    #[serde(default)]
    pub es256_public_key: Option<PathBuf>,
    #[serde(default)]
    pub eddsa_public_key: Option<PathBuf>,
    #[serde(default)]
    pub issuer: Option<String>,
    #[serde(default)]
    pub audience: Option<String>,
    pub leeway_secs: u64,
    #[serde(default)]
    pub allow_anonymous: bool,
    #[serde(default)]
    pub origins: Vec<String>,
}

/// `[backend]`: the HTTP forwarding pools (one per service per shard).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    pub connect_timeout_ms: u64,
    pub request_timeout_ms: u64,
    pub max_idle_per_shard: usize,
    pub max_conns_per_shard: usize,
    /// Requests in flight per backend connection (HTTP/1.1 pipelining): the requests
    /// of one scheduler round share a connection, and once all `max_conns_per_shard`
    /// connections are busy, more queue behind those in flight; 1 = never pipeline.
    pub pipeline_depth: usize,
    pub max_response_bytes: usize,
    /// Calls waiting for a reply on one shard's link to a service; more are answered
    /// with code 60 at once (docs/LINK.md).
    pub link_max_inflight: usize,
    /// A link that has received nothing for this long gets a ping; with no answer
    /// within `connect_timeout_ms` it is closed and redialed (0 = no idle pings).
    pub link_ping_secs: u64,
}

/// `[[services]]`: a backend service and the endpoints it exposes to clients.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    pub name: String,
    /// `http://host:port[/base]` (or `https://`, verified against `tls.ca_file` or the
    /// system's roots): each request is an HTTP/1.1 `POST`. Exactly one of `url` and
    /// `link` is set.
    #[serde(default)]
    pub url: String,
    /// `ws://host:port/path` (or `wss://`, verified like `https://`): requests travel
    /// over the backend link, one WebSocket per shard (docs/LINK.md).
    #[serde(default)]
    pub link: Option<String>,
    #[serde(default)]
    pub endpoints: Vec<EndpointConfig>,
    /// Largest request payload forwarded to this service; larger ones answer code 11.
    #[serde(default)]
    pub max_request_bytes: Option<usize>,
    /// For a link service: announce (OPEN) every session of the shard to the backend
    /// at connect, not only before its first request, so the backend can push to
    /// sessions that never called it.
    #[serde(default)]
    pub announce_all: bool,
    /// For a link service: upgrade paths where clients speak plain WebSocket messages
    /// (no Bannou header), each relayed to the backend as a MESSAGE event
    /// (docs/LINK.md, "Raw routes").
    #[serde(default)]
    pub raw_routes: Vec<RawRouteConfig>,
}

impl ServiceConfig {
    /// Whether the service is reached over TLS (`https://` url or `wss://` link): the
    /// gateway then needs its client-side TLS config (`tls.ca_file` or system roots).
    pub fn uses_tls(&self) -> bool {
        match &self.link {
            Some(link) => url::LinkUrl::parse(link).is_ok_and(|u| u.tls),
            None => url::parse_url(&self.url).is_ok_and(|o| o.tls),
        }
    }
}

/// A raw route: an upgrade path of its own, authenticated like the main one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouteConfig {
    pub path: String,
    /// A client may connect if it has ANY of these roles; empty = any authenticated
    /// client (403 otherwise).
    #[serde(default)]
    pub roles: Vec<String>,
}

/// One static POST endpoint of a service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    pub path: String,
    /// A session may call the endpoint if it has ANY of these roles; empty = no role
    /// needed (anonymous sessions see only these).
    #[serde(default)]
    pub roles: Vec<String>,
    /// Stable endpoint id (never reuse one for a different endpoint). When absent it is
    /// derived from `service` + `path`, which is stable across restarts and reloads.
    #[serde(default)]
    pub id: Option<u32>,
    /// A topic endpoint: the caller's payload is published to this topic (with the
    /// caller's binary flag), no backend hop.
    #[serde(default)]
    pub publish: Option<String>,
    /// With `publish`: the conflation key, `"session"` or `"account"` (the caller's);
    /// absent = unkeyed.
    #[serde(default)]
    pub key: Option<String>,
    /// A topic endpoint: the caller is subscribed to this topic.
    #[serde(default)]
    pub subscribe: Option<String>,
    /// A topic endpoint: the caller is unsubscribed from this topic.
    #[serde(default)]
    pub unsubscribe: Option<String>,
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

impl EndpointConfig {
    /// Whether the gateway answers this endpoint itself (a topic endpoint).
    pub fn is_topic_endpoint(&self) -> bool {
        self.publish.is_some() || self.subscribe.is_some() || self.unsubscribe.is_some()
    }
}

impl Config {
    /// The embedded defaults, with `RINGGATE_*` overrides from `env` applied.
    pub fn from_defaults(env: &[(String, String)]) -> Result<Config, ConfigError> {
        Self::from_toml_str(DEFAULT_CONFIG_TOML, env)
    }

    /// Reads and validates a config file, with `RINGGATE_*` overrides from `env`.
    pub fn from_file(path: &Path, env: &[(String, String)]) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml_str(&text, env)
    }

    /// Parses, applies overrides, deserializes and validates.
    pub fn from_toml_str(text: &str, env: &[(String, String)]) -> Result<Config, ConfigError> {
        let mut value: toml::Table =
            toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        apply_env_overrides(&mut value, env)?;
        fill_defaults(&mut value)?;
        let de = toml::Value::Table(value);
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            ConfigError::key(key, e.into_inner().to_string())
        })?;
        config.validate()?;
        if config.auth.hs256_secret.as_deref() == Some(DEV_HS256_SECRET)
            && !config.server.listen_addr()?.ip().is_loopback()
        {
            return Err(ConfigError::key(
                "auth.hs256_secret",
                "is the development secret from configs/default.toml, which is public (anyone could mint tokens), and the listener is not on loopback; set a secret of your own or a public key",
            ));
        }
        Ok(config)
    }

    /// The `RINGGATE_*` variables of this process's environment.
    pub fn process_env() -> Vec<(String, String)> {
        std::env::vars()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect()
    }

    /// Checks every value that deserialization alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.tls.validate()?;
        let s = &self.server;
        s.listen_addr()?;
        s.admin_addr()?;
        if !s.path.starts_with('/') || s.path.contains('?') || s.path.contains(' ') {
            return Err(ConfigError::key(
                "server.path",
                "must start with '/' and hold no query or spaces",
            ));
        }
        if s.max_message_bytes < crate::proto::bannou::REQUEST_HEADER_LEN {
            return Err(ConfigError::key(
                "server.max_message_bytes",
                format!(
                    "must be at least {} (one request header)",
                    crate::proto::bannou::REQUEST_HEADER_LEN
                ),
            ));
        }
        if s.max_message_bytes > 64 * 1024 * 1024 {
            return Err(ConfigError::key(
                "server.max_message_bytes",
                "must be at most 67108864 (64 MiB)",
            ));
        }
        if s.handshake_timeout_ms == 0 {
            return Err(ConfigError::key(
                "server.handshake_timeout_ms",
                "must be > 0",
            ));
        }
        if s.idle_ping_secs == 0 {
            return Err(ConfigError::key("server.idle_ping_secs", "must be > 0"));
        }
        if s.pong_timeout_secs == 0 {
            return Err(ConfigError::key("server.pong_timeout_secs", "must be > 0"));
        }
        if s.rate_limit_per_sec > 0 && s.rate_limit_burst == 0 {
            return Err(ConfigError::key(
                "server.rate_limit_burst",
                "must be > 0 when server.rate_limit_per_sec is set",
            ));
        }
        if !(4096..=MAX_BUFFERED).contains(&s.max_outbox_bytes) {
            return Err(ConfigError::key(
                "server.max_outbox_bytes",
                "must be between 4096 and 268435456 (256 MiB)",
            ));
        }
        if !(4096..=MAX_BUFFERED).contains(&s.resume_buffer_bytes) {
            return Err(ConfigError::key(
                "server.resume_buffer_bytes",
                "must be between 4096 and 268435456 (256 MiB)",
            ));
        }
        if s.reconnect_window_secs > 86_400 {
            return Err(ConfigError::key(
                "server.reconnect_window_secs",
                "must be at most 86400 (a day)",
            ));
        }
        if s.max_inflight_per_connection == 0 {
            return Err(ConfigError::key(
                "server.max_inflight_per_connection",
                "must be > 0",
            ));
        }
        if s.backlog <= 0 {
            return Err(ConfigError::key("server.backlog", "must be > 0"));
        }
        if s.read_batch_tick_us > 100_000 {
            return Err(ConfigError::key(
                "server.read_batch_tick_us",
                "must be at most 100000 (100 ms; 0 turns read batching off)",
            ));
        }
        s.guid_secret_bytes()?;
        s.check_limits()?;

        let a = &self.auth;
        if let Some(secret) = &a.hs256_secret {
            if secret.len() < crate::auth::MIN_HS256_SECRET_BYTES {
                return Err(ConfigError::key(
                    "auth.hs256_secret",
                    format!(
                        "must be at least {} bytes",
                        crate::auth::MIN_HS256_SECRET_BYTES
                    ),
                ));
            }
        }
        for (key, path) in [
            ("auth.rs256_public_key", &a.rs256_public_key),
            ("auth.es256_public_key", &a.es256_public_key),
            ("auth.eddsa_public_key", &a.eddsa_public_key),
        ] {
            if let Some(p) = path {
                if let Err(e) = std::fs::metadata(p) {
                    return Err(ConfigError::key(
                        key,
                        format!("cannot read {}: {e}", p.display()),
                    ));
                }
            }
        }
        let any_key = a.hs256_secret.is_some()
            || a.rs256_public_key.is_some()
            || a.es256_public_key.is_some()
            || a.eddsa_public_key.is_some();
        if !any_key && !a.allow_anonymous {
            return Err(ConfigError::key(
                "auth",
                "set hs256_secret or a public key (rs256_public_key, es256_public_key, eddsa_public_key), or allow_anonymous = true",
            ));
        }
        for (i, o) in a.origins.iter().enumerate() {
            if o.is_empty() || o.ends_with('/') {
                return Err(ConfigError::key(
                    format!("auth.origins[{i}]"),
                    "must be an exact origin like https://game.example.com (no trailing slash)",
                ));
            }
        }

        let b = &self.backend;
        if b.connect_timeout_ms == 0 {
            return Err(ConfigError::key(
                "backend.connect_timeout_ms",
                "must be > 0",
            ));
        }
        if b.request_timeout_ms == 0 {
            return Err(ConfigError::key(
                "backend.request_timeout_ms",
                "must be > 0",
            ));
        }
        if b.max_conns_per_shard == 0 {
            return Err(ConfigError::key(
                "backend.max_conns_per_shard",
                "must be > 0",
            ));
        }
        if b.link_max_inflight == 0 || b.link_max_inflight > u32::MAX as usize / 2 {
            return Err(ConfigError::key(
                "backend.link_max_inflight",
                "must be between 1 and 2147483647",
            ));
        }
        if b.max_response_bytes == 0 || b.max_response_bytes > MAX_BUFFERED {
            return Err(ConfigError::key(
                "backend.max_response_bytes",
                "must be between 1 and 268435456 (256 MiB)",
            ));
        }
        if b.pipeline_depth == 0 || b.pipeline_depth > 1024 {
            return Err(ConfigError::key(
                "backend.pipeline_depth",
                "must be between 1 (no pipelining) and 1024",
            ));
        }

        if let Some(t) = &self.admin.token {
            if t.len() < 16 || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(ConfigError::key(
                    "admin.token",
                    "must be at least 16 characters, with no spaces or control characters",
                ));
            }
        }
        if self.admin.max_connections == 0 {
            return Err(ConfigError::key(
                "admin.max_connections",
                "must be at least 1",
            ));
        }
        let mut names = ahash::AHashSet::new();
        let mut raw_paths = ahash::AHashSet::new();
        let mut ids = ahash::AHashMap::new();
        for (i, svc) in self.services.iter().enumerate() {
            let at = |k: &str| format!("services[{i}].{k}");
            if svc.name.is_empty()
                || !svc
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(ConfigError::key(
                    at("name"),
                    "must be non-empty ASCII letters, digits, '-' or '_'",
                ));
            }
            if !names.insert(svc.name.clone()) {
                return Err(ConfigError::key(
                    at("name"),
                    format!("duplicate service name {:?}", svc.name),
                ));
            }
            match (&svc.link, svc.url.is_empty()) {
                (Some(_), false) => {
                    return Err(ConfigError::key(
                        at("link"),
                        "set either url (HTTP) or link (WebSocket link), not both",
                    ))
                }
                (Some(link), true) => {
                    if let Err(e) = url::LinkUrl::parse(link) {
                        return Err(ConfigError::key(at("link"), e.to_string()));
                    }
                }
                (None, true) if !svc.endpoints.is_empty()
                    && svc.endpoints.iter().all(EndpointConfig::is_topic_endpoint) => {}
                (None, true) => return Err(ConfigError::key(
                    at("url"),
                    "missing: set url = \"http://host:port\" (or link = \"ws://host:port/path\"; only a service whose endpoints are all topic endpoints needs neither)",
                )),
                (None, false) => {
                    if let Err(e) = url::parse_url(&svc.url) {
                        return Err(ConfigError::key(at("url"), e.to_string()));
                    }
                }
            }
            if svc.announce_all && svc.link.is_none() {
                return Err(ConfigError::key(
                    at("announce_all"),
                    "only a link service (link = \"ws://...\") can be told of sessions",
                ));
            }
            for (j, r) in svc.raw_routes.iter().enumerate() {
                let key = format!("services[{i}].raw_routes[{j}].path");
                if svc.link.is_none() {
                    return Err(ConfigError::key(
                        key,
                        "only a link service (link = \"ws://...\") can serve a raw route",
                    ));
                }
                if !r.path.starts_with('/')
                    || r.path.contains('?')
                    || r.path.bytes().any(|b| b <= b' ' || b == 0x7f)
                {
                    return Err(ConfigError::key(
                        key,
                        "must start with '/' and hold no query, spaces or control characters",
                    ));
                }
                if r.path == self.server.path || !raw_paths.insert(r.path.clone()) {
                    return Err(ConfigError::key(
                        key,
                        format!(
                            "{:?} is already an upgrade path (server.path or another raw route)",
                            r.path
                        ),
                    ));
                }
            }
            for (j, ep) in svc.endpoints.iter().enumerate() {
                check_topic_endpoint(i, j, ep)?;
                let key = format!("services[{i}].endpoints[{j}].path");
                if !ep.path.starts_with('/')
                    || ep.path.contains('?')
                    || ep.path.bytes().any(|b| b <= b' ' || b == 0x7f)
                {
                    return Err(ConfigError::key(
                        key,
                        "must start with '/' and hold no query, spaces or control characters",
                    ));
                }
                let id = endpoint_id(&svc.name, ep);
                if let Some(prev) = ids.insert(id, format!("{}{}", svc.name, ep.path)) {
                    return Err(ConfigError::key(
                        format!("services[{i}].endpoints[{j}].id"),
                        format!(
                            "endpoint id {id} collides with {prev}; give one of them an explicit id"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A topic endpoint names one action and a valid topic; `key` only with `publish`.
fn check_topic_endpoint(i: usize, j: usize, ep: &EndpointConfig) -> Result<(), ConfigError> {
    let at = |k: &str| format!("services[{i}].endpoints[{j}].{k}");
    let actions = [
        ("publish", &ep.publish),
        ("subscribe", &ep.subscribe),
        ("unsubscribe", &ep.unsubscribe),
    ];
    let set: Vec<_> = actions.iter().filter(|(_, v)| v.is_some()).collect();
    if set.len() > 1 {
        return Err(ConfigError::key(
            at(set[1].0),
            format!("an endpoint has one action: {} is set too", set[0].0),
        ));
    }
    if let Some((name, Some(topic))) = set.first().map(|(n, v)| (*n, *v)) {
        if topic.is_empty() || topic.len() > 255 || topic.chars().any(char::is_control) {
            return Err(ConfigError::key(
                at(name),
                "a topic is 1 to 255 bytes with no control characters",
            ));
        }
    }
    if let Some(k) = &ep.key {
        if ep.publish.is_none() {
            return Err(ConfigError::key(
                at("key"),
                "only a publish endpoint has a key",
            ));
        }
        if k != "session" && k != "account" {
            return Err(ConfigError::key(
                at("key"),
                "must be \"session\" or \"account\" (the caller's id keys the conflation)",
            ));
        }
    }
    Ok(())
}

/// The stable id of an endpoint: the configured one, else derived from service + path.
pub fn endpoint_id(service: &str, ep: &EndpointConfig) -> u32 {
    if let Some(id) = ep.id {
        return id;
    }
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(service.as_bytes());
    h.update([0u8]);
    h.update(ep.path.as_bytes());
    let d = h.finalize();
    // The top bit is kept clear so derived ids and small explicit ids rarely meet.
    u32::from_be_bytes([d[0], d[1], d[2], d[3]]) & 0x7fff_ffff
}

impl ServerConfig {
    /// The limits block's checks (docs/DESIGN.md §3).
    fn check_limits(&self) -> Result<(), ConfigError> {
        if !(1024..=65536).contains(&self.max_handshake_bytes) {
            return Err(ConfigError::key(
                "server.max_handshake_bytes",
                "must be between 1024 and 65536",
            ));
        }
        if self.upgrade_rate_per_ip > 0 && self.upgrade_burst_per_ip == 0 {
            return Err(ConfigError::key(
                "server.upgrade_burst_per_ip",
                "must be > 0 when server.upgrade_rate_per_ip is set",
            ));
        }
        self.per_ip_exempt_nets()?;
        let pinged = self.idle_ping_secs.saturating_add(self.pong_timeout_secs);
        if self.idle_timeout_secs != 0 && self.idle_timeout_secs <= pinged {
            return Err(ConfigError::key(
                "server.idle_timeout_secs",
                format!(
                    "must be 0 (off) or more than idle_ping_secs + pong_timeout_secs ({pinged}): a client that answers pings is not idle; with idle_ping_secs raised, raise it or set it to 0"
                ),
            ));
        }
        if self.idle_timeout_secs > u64::from(u32::MAX) {
            return Err(ConfigError::key(
                "server.idle_timeout_secs",
                "must be at most 4294967295",
            ));
        }
        Ok(())
    }

    /// `per_ip_exempt`, parsed.
    pub fn per_ip_exempt_nets(&self) -> Result<Vec<net::IpNet>, ConfigError> {
        self.per_ip_exempt
            .iter()
            .enumerate()
            .map(|(i, text)| {
                net::IpNet::parse(text)
                    .map_err(|e| ConfigError::key(format!("server.per_ip_exempt[{i}]"), e))
            })
            .collect()
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen
            .parse()
            .map_err(|e| ConfigError::key("server.listen", format!("not an ip:port ({e})")))
    }
    pub fn admin_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.admin_listen
            .parse()
            .map_err(|e| ConfigError::key("server.admin_listen", format!("not an ip:port ({e})")))
    }
    /// The configured GUID secret, decoded; `None` when unset.
    pub fn guid_secret_bytes(&self) -> Result<Option<[u8; 32]>, ConfigError> {
        let Some(hex) = &self.guid_secret else {
            return Ok(None);
        };
        let err = || ConfigError::key("server.guid_secret", "must be 64 hex digits (32 bytes)");
        if hex.len() != 64 {
            return Err(err());
        }
        let mut out = [0u8; 32];
        for (i, chunk) in hex.as_bytes().chunks(2).enumerate() {
            let s = std::str::from_utf8(chunk).map_err(|_| err())?;
            out[i] = u8::from_str_radix(s, 16).map_err(|_| err())?;
        }
        Ok(Some(out))
    }
    /// The number of shards to run: the configured count, or one per available core.
    pub fn shard_count(&self) -> usize {
        if self.shards > 0 {
            self.shards
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        }
    }
}

/// The `[auth]` keys that configure a way to verify tokens.
const AUTH_KEYS: [&str; 4] = [
    "hs256_secret",
    "rs256_public_key",
    "es256_public_key",
    "eddsa_public_key",
];

/// Gives every key of `[server]`, `[auth]` and `[backend]` that `table` leaves out its
/// value in the embedded defaults (`configs/default.toml`, the one place the defaults
/// are written), so a file names only what it changes. `[[services]]` are never
/// inherited. The development HS256 secret is inherited only when `[auth]` configures
/// no key at all and does not ask for anonymous sessions (a file with a public key
/// must not silently accept HS256 tokens signed with a public secret); wherever it
/// comes from, it is refused for a listener off loopback.
fn fill_defaults(table: &mut toml::Table) -> Result<(), ConfigError> {
    let defaults: toml::Table = toml::from_str(DEFAULT_CONFIG_TOML)
        .map_err(|e| ConfigError::Syntax(format!("embedded defaults: {e}")))?;
    for (section, def) in defaults {
        let toml::Value::Table(def) = def else {
            continue;
        };
        let entry = table
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let toml::Value::Table(t) = entry else {
            return Err(ConfigError::key(section, "must be a table"));
        };
        let has_auth_key = section == "auth"
            && (AUTH_KEYS.iter().any(|k| t.contains_key(*k))
                || t.get("allow_anonymous") == Some(&toml::Value::Boolean(true)));
        for (key, value) in def {
            if section == "auth" && key == "hs256_secret" && has_auth_key {
                continue;
            }
            t.entry(key).or_insert(value);
        }
    }
    Ok(())
}

/// Applies `RINGGATE_<SECTION>_<KEY>=value` to the parsed table. The value is read as a
/// TOML value when it parses as one (numbers, booleans, arrays), else as a string.
fn apply_env_overrides(
    table: &mut toml::Table,
    env: &[(String, String)],
) -> Result<(), ConfigError> {
    const SECTIONS: [&str; 5] = ["server", "auth", "backend", "admin", "tls"];
    for (var, raw) in env {
        let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let rest = rest.to_ascii_lowercase();
        let Some((section, key)) = SECTIONS.iter().find_map(|s| {
            rest.strip_prefix(s)
                .and_then(|r| r.strip_prefix('_'))
                .map(|k| (*s, k.to_string()))
        }) else {
            return Err(ConfigError::Env {
                var: var.clone(),
                message: "expected RINGGATE_SERVER_*, RINGGATE_AUTH_*, RINGGATE_BACKEND_*, RINGGATE_ADMIN_* or RINGGATE_TLS_*".into(),
            });
        };
        let value = parse_env_value(raw);
        let entry = table
            .entry(section.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match entry {
            toml::Value::Table(t) => {
                t.insert(key, value);
            }
            _ => {
                return Err(ConfigError::key(section, "must be a table"));
            }
        }
    }
    Ok(())
}

fn parse_env_value(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match toml::from_str::<toml::Table>(&doc) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn embedded_defaults_are_valid_and_local_only() {
        let c = Config::from_defaults(&[]).unwrap();
        assert!(c.server.listen_addr().unwrap().ip().is_loopback());
        assert!(c.server.admin_addr().unwrap().ip().is_loopback());
        assert_eq!(c.server.path, "/connect");
        assert_eq!(c.server.max_message_bytes, 65536);
        assert!(!c.auth.allow_anonymous);
    }

    #[test]
    fn env_override_sets_typed_values() {
        let c = Config::from_defaults(&env(&[
            ("RINGGATE_SERVER_LISTEN", "127.0.0.1:0"),
            ("RINGGATE_SERVER_SHARDS", "3"),
            ("RINGGATE_AUTH_ALLOW_ANONYMOUS", "true"),
        ]))
        .unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:0");
        assert_eq!(c.server.shards, 3);
        assert!(c.auth.allow_anonymous);
    }

    #[test]
    fn unknown_env_section_is_named() {
        let e = Config::from_defaults(&env(&[("RINGGATE_NOPE_X", "1")])).unwrap_err();
        assert!(e.to_string().contains("RINGGATE_NOPE_X"), "{e}");
    }

    #[test]
    fn bad_listen_address_names_the_key() {
        let e = Config::from_defaults(&env(&[("RINGGATE_SERVER_LISTEN", "nowhere")])).unwrap_err();
        assert!(e.to_string().contains("server.listen"), "{e}");
    }

    #[test]
    fn wrong_type_names_the_key() {
        let text =
            DEFAULT_CONFIG_TOML.replace("max_message_bytes = 65536", "max_message_bytes = \"big\"");
        let e = Config::from_toml_str(&text, &[]).unwrap_err();
        assert!(e.to_string().contains("server.max_message_bytes"), "{e}");
    }

    /// The shipped config with the line that sets `key` left out (its serde default
    /// applies).
    fn shipped_without(key: &str) -> String {
        DEFAULT_CONFIG_TOML
            .lines()
            .filter(|l| !l.starts_with(key))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn read_batch_tick_beyond_100_ms_is_rejected_and_zero_turns_it_off() {
        let text =
            DEFAULT_CONFIG_TOML.replace("read_batch_tick_us = 500", "read_batch_tick_us = 100001");
        let e = Config::from_toml_str(&text, &[]).unwrap_err();
        assert!(e.to_string().contains("server.read_batch_tick_us"), "{e}");
        let text =
            DEFAULT_CONFIG_TOML.replace("read_batch_tick_us = 500", "read_batch_tick_us = 0");
        assert_eq!(
            Config::from_toml_str(&text, &[])
                .unwrap()
                .server
                .read_batch_tick_us,
            0
        );
        assert_eq!(
            Config::from_toml_str(DEFAULT_CONFIG_TOML, &[])
                .unwrap()
                .server
                .read_batch_tick_us,
            500
        );
        // A config that leaves it out gets the same tick as the shipped file.
        assert_eq!(
            Config::from_toml_str(&shipped_without("read_batch_tick_us"), &[])
                .unwrap()
                .server
                .read_batch_tick_us,
            500
        );
    }

    #[test]
    fn link_pings_an_idle_link_after_15_s_by_default_and_zero_or_env_turns_it_off() {
        let shipped = Config::from_toml_str(DEFAULT_CONFIG_TOML, &[]).unwrap();
        assert_eq!(shipped.backend.link_ping_secs, 15);
        let omitted = Config::from_toml_str(&shipped_without("link_ping_secs"), &[]).unwrap();
        assert_eq!(omitted.backend.link_ping_secs, 15);
        let env = [(
            "RINGGATE_BACKEND_LINK_PING_SECS".to_string(),
            "0".to_string(),
        )];
        let off = Config::from_toml_str(DEFAULT_CONFIG_TOML, &env).unwrap();
        assert_eq!(off.backend.link_ping_secs, 0);
        let bad = DEFAULT_CONFIG_TOML.replace("link_ping_secs = 15", "link_ping_secs = -1");
        let e = Config::from_toml_str(&bad, &[]).unwrap_err();
        assert!(e.to_string().contains("backend.link_ping_secs"), "{e}");
    }

    #[test]
    fn unknown_key_is_rejected_by_name() {
        let text = DEFAULT_CONFIG_TOML.replace("[server]", "[server]\nlisten_port = 3");
        let e = Config::from_toml_str(&text, &[]).unwrap_err();
        assert!(e.to_string().contains("listen_port"), "{e}");
    }

    #[test]
    fn a_file_naming_only_the_listener_takes_every_other_default() {
        let c = Config::from_toml_str("[server]\nlisten = \"127.0.0.1:7000\"\n", &[]).unwrap();
        let d = Config::from_defaults(&[]).unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:7000");
        assert_eq!(c.server.path, d.server.path);
        assert_eq!(c.server.admin_listen, d.server.admin_listen);
        assert_eq!(c.server.max_message_bytes, d.server.max_message_bytes);
        assert_eq!(c.server.max_outbox_bytes, d.server.max_outbox_bytes);
        assert_eq!(c.auth.leeway_secs, d.auth.leeway_secs);
        assert_eq!(
            c.auth.hs256_secret, d.auth.hs256_secret,
            "the dev secret, on loopback"
        );
        assert_eq!(c.backend.request_timeout_ms, d.backend.request_timeout_ms);
        assert_eq!(c.backend.link_max_inflight, 65_536);
        assert!(c.services.is_empty(), "services are never inherited");
    }

    #[test]
    fn a_file_with_only_a_secret_and_a_service_is_complete() {
        let text = r#"
[auth]
hs256_secret = "a-secret-of-at-least-thirty-two-bytes!!"
[[services]]
name = "account"
url = "http://127.0.0.1:5001"
endpoints = [{ path = "/account/get", roles = ["user"] }]
"#;
        let c = Config::from_toml_str(text, &[]).unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:8080");
        assert_eq!(c.services.len(), 1);
        assert_eq!(
            c.auth.hs256_secret.as_deref(),
            Some("a-secret-of-at-least-thirty-two-bytes!!")
        );
    }

    #[test]
    fn a_public_key_alone_does_not_inherit_the_dev_secret() {
        let text = format!(
            "[auth]\nrs256_public_key = \"{}/tests/fixtures/test_only_rsa2048_public.pem\"\n",
            env!("CARGO_MANIFEST_DIR")
        );
        let c = Config::from_toml_str(&text, &[]).unwrap();
        assert_eq!(c.auth.hs256_secret, None);
        let c = Config::from_toml_str("[auth]\nallow_anonymous = true\n", &[]).unwrap();
        assert_eq!(c.auth.hs256_secret, None, "anonymous-only stays keyless");
    }

    #[test]
    fn reconnection_settings_default_to_five_minutes_and_bad_values_name_their_key() {
        let c = Config::from_toml_str("", &[]).unwrap();
        assert_eq!(c.server.reconnect_window_secs, 300);
        assert_eq!(c.server.resume_buffer_bytes, 256 * 1024);
        for (text, key) in [
            (
                "[server]\nresume_buffer_bytes = 100\n",
                "server.resume_buffer_bytes",
            ),
            (
                "[server]\nreconnect_window_secs = 100000\n",
                "server.reconnect_window_secs",
            ),
        ] {
            let e = Config::from_toml_str(text, &[]).unwrap_err();
            assert!(e.to_string().contains(key), "{e}");
        }
    }

    #[test]
    fn limits_take_their_documented_defaults_and_bad_values_name_their_key() {
        let c = Config::from_toml_str("", &[]).unwrap().server;
        assert_eq!(c.max_handshake_bytes, 8192);
        assert_eq!(c.max_connections, 0, "no global limit");
        assert_eq!(c.max_connections_per_ip, 1000);
        assert_eq!((c.upgrade_rate_per_ip, c.upgrade_burst_per_ip), (50, 200));
        assert_eq!(c.per_ip_exempt, ["127.0.0.0/8", "::1"]);
        assert_eq!(c.per_ip_exempt_nets().unwrap().len(), 2);
        assert_eq!(c.idle_timeout_secs, 120);
        let env = env(&[("RINGGATE_SERVER_PER_IP_EXEMPT", r#"["10.0.0.0/8"]"#)]);
        let c = Config::from_toml_str("", &env).unwrap().server;
        assert_eq!(
            c.per_ip_exempt,
            ["10.0.0.0/8"],
            "loopback is no longer exempt"
        );
        for (text, key) in [
            ("max_handshake_bytes = 100", "server.max_handshake_bytes"),
            ("max_handshake_bytes = 70000", "server.max_handshake_bytes"),
            ("upgrade_burst_per_ip = 0", "server.upgrade_burst_per_ip"),
            (
                "per_ip_exempt = [\"::1\", \"10.0.0.1/8\"]",
                "server.per_ip_exempt[1]",
            ),
            ("max_connections = -1", "server.max_connections"),
            ("idle_timeout_secs = 40", "server.idle_timeout_secs"),
            ("idle_ping_secs = 300", "server.idle_timeout_secs"),
        ] {
            let e = Config::from_toml_str(&format!("[server]\n{text}\n"), &[]).unwrap_err();
            assert!(e.to_string().contains(key), "{text}: {e}");
        }
    }

    #[test]
    fn the_dev_secret_is_refused_off_loopback_wherever_it_comes_from() {
        assert!(DEFAULT_CONFIG_TOML.contains(DEV_HS256_SECRET));
        let e = Config::from_toml_str("[server]\nlisten = \"0.0.0.0:8080\"\n", &[]).unwrap_err();
        assert!(e.to_string().contains("auth.hs256_secret"), "{e}");
        let public = env(&[("RINGGATE_SERVER_LISTEN", "0.0.0.0:8080")]);
        let e = Config::from_defaults(&public).unwrap_err();
        assert!(e.to_string().contains("auth.hs256_secret"), "{e}");
        let copied = DEFAULT_CONFIG_TOML.replace("127.0.0.1:8080", "0.0.0.0:8080");
        assert!(
            Config::from_toml_str(&copied, &[]).is_err(),
            "a copy of the defaults"
        );
        let env = env(&[(
            "RINGGATE_AUTH_HS256_SECRET",
            "an-own-secret-of-32-bytes-or-more-ok",
        )]);
        let c = Config::from_toml_str("[server]\nlisten = \"0.0.0.0:8080\"\n", &env).unwrap();
        assert!(!c.server.listen_addr().unwrap().ip().is_loopback());
    }

    #[test]
    fn an_omitted_key_still_fails_on_a_wrong_value_or_name() {
        let e = Config::from_toml_str("[server]\nmax_outbox_bytes = \"big\"\n", &[]).unwrap_err();
        assert!(e.to_string().contains("server.max_outbox_bytes"), "{e}");
        let e = Config::from_toml_str("[backend]\nlink_max_infligt = 3\n", &[]).unwrap_err();
        assert!(e.to_string().contains("link_max_infligt"), "{e}");
    }

    #[test]
    fn bad_endpoint_path_names_service_and_endpoint() {
        let text = DEFAULT_CONFIG_TOML.replace("{ path = \"/echo\",", "{ path = \"echo\",");
        let e = Config::from_toml_str(&text, &[]).unwrap_err();
        assert!(
            e.to_string().contains("services[0].endpoints[0].path"),
            "{e}"
        );
    }

    #[test]
    fn duplicate_endpoint_ids_are_rejected() {
        let text = DEFAULT_CONFIG_TOML
            .replace(
                "{ path = \"/echo\", roles",
                "{ path = \"/echo\", id = 7, roles",
            )
            .replace(
                "{ path = \"/echo/public\", roles",
                "{ path = \"/echo/public\", id = 7, roles",
            );
        let e = Config::from_toml_str(&text, &[]).unwrap_err();
        assert!(e.to_string().contains("collides"), "{e}");
    }

    #[test]
    fn derived_endpoint_ids_are_stable_and_distinct() {
        let a = EndpointConfig {
            path: "/account/get".into(),
            roles: vec![],
            id: None,
            publish: None,
            key: None,
            subscribe: None,
            unsubscribe: None,
        };
        let b = EndpointConfig {
            path: "/account/set".into(),
            ..a.clone()
        };
        assert_eq!(endpoint_id("account", &a), endpoint_id("account", &a));
        assert_ne!(endpoint_id("account", &a), endpoint_id("account", &b));
        assert_ne!(endpoint_id("account", &a), endpoint_id("other", &a));
    }

    #[test]
    fn example_config_is_valid_once_its_key_file_exists() {
        let text = include_str!("../../configs/example.toml").replace(
            "/etc/ringgate/auth-rs256.pem",
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/test_only_rsa2048_public.pem"
            ),
        );
        let c = Config::from_toml_str(&text, &[]).unwrap();
        assert_eq!(c.services.len(), 3);
        assert_eq!(
            c.services[2].link.as_deref(),
            Some("ws://10.0.0.12:5003/link")
        );
        assert!(c.server.guid_secret_bytes().unwrap().is_some());
    }

    #[test]
    fn guid_secret_must_be_64_hex_digits() {
        let e = Config::from_defaults(&env(&[("RINGGATE_SERVER_GUID_SECRET", "abc")])).unwrap_err();
        assert!(e.to_string().contains("server.guid_secret"), "{e}");
        let ok = "ab".repeat(32);
        let c = Config::from_defaults(&env(&[("RINGGATE_SERVER_GUID_SECRET", &ok)])).unwrap();
        assert_eq!(c.server.guid_secret_bytes().unwrap(), Some([0xab; 32]));
    }
}
