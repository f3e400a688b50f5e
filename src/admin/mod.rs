//! The admin listener: `/healthz`, `/readyz`, `/metrics` (Prometheus text), and the
//! push API under `/v1/` (`push_api`).
//!
//! Why plain threads, off the shards: probes and a scraper are a handful of requests a
//! minute, and the push API's callers (services publishing every few ms) keep a few
//! connections open; a thread per connection (keep-alive, at most
//! `[admin] max_connections`) serves both without touching a shard's thread. A probe
//! still answers when the shards are busy, and the push API reaches shards only
//! through their push inboxes.
//!
//! # Layout
//! - `http`: read one request, write one response (blocking, keep-alive).
//! - `push_api`: the `/v1/` routes.

mod http;
mod push_api;

use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::metrics::Metrics;

pub use push_api::PushApi;

use http::{read_request, respond, ReadError};

/// How long a kept-alive admin connection may sit idle between requests.
const IDLE: Duration = Duration::from_secs(30);

/// What the admin endpoints report on, and the push API.
#[derive(Debug)]
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    pub ready_shards: Arc<AtomicUsize>,
    pub shards: usize,
    pub draining: AtomicBool,
    pub stop: AtomicBool,
    pub push: PushApi,
    pub max_body_bytes: usize,
    pub max_connections: usize,
    /// Connections being served now.
    pub serving: AtomicUsize,
}

impl AdminState {
    /// Every shard accepts and no shutdown has begun.
    pub fn is_ready(&self) -> bool {
        !self.draining.load(Ordering::SeqCst)
            && self.ready_shards.load(Ordering::SeqCst) == self.shards
    }
}

/// Serves admin requests on `listener` until `state.stop` is set.
pub fn spawn(listener: TcpListener, state: Arc<AdminState>) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name("ringgate-admin".into())
        .spawn(move || {
            for conn in listener.incoming() {
                if state.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                if state.serving.load(Ordering::SeqCst) >= state.max_connections {
                    // Answered here, at once: the caller retries or uses a connection
                    // it already has.
                    let _ = conn.set_write_timeout(Some(Duration::from_secs(1)));
                    let _ = respond(
                        &mut conn,
                        503,
                        "application/json",
                        b"{\"error\":\"too many admin connections ([admin] max_connections)\"}",
                        true,
                        "",
                    );
                    continue;
                }
                state.serving.fetch_add(1, Ordering::SeqCst);
                let st = state.clone();
                let spawned = std::thread::Builder::new()
                    .name("ringgate-admin-conn".into())
                    .spawn(move || {
                        if let Err(e) = serve(&mut conn, &st) {
                            tracing::debug!(error = %e, "admin connection ended");
                        }
                        st.serving.fetch_sub(1, Ordering::SeqCst);
                    });
                if spawned.is_err() {
                    state.serving.fetch_sub(1, Ordering::SeqCst);
                    tracing::warn!("could not start an admin connection thread");
                }
            }
        })
        .expect("spawn admin thread")
}

/// Serves one connection's requests until it closes, idles out or errs.
fn serve(conn: &mut TcpStream, state: &AdminState) -> std::io::Result<()> {
    conn.set_read_timeout(Some(IDLE))?;
    conn.set_write_timeout(Some(Duration::from_secs(5)))?;
    let _ = conn.set_nodelay(true);
    let mut buf = Vec::new();
    loop {
        let req = match read_request(conn, &mut buf, state.max_body_bytes) {
            Ok(r) => r,
            Err(ReadError::Gone) => return Ok(()),
            Err(ReadError::Io(e)) => return Err(e),
            Err(ReadError::Bad(why)) => {
                let body = serde_json::json!({ "error": why }).to_string();
                return respond(conn, 400, "application/json", body.as_bytes(), true, "");
            }
            Err(ReadError::TooLarge(n)) => {
                let body = serde_json::json!({
                    "error": format!("body of {n} bytes is over [admin] max_body_bytes ({})", state.max_body_bytes)
                })
                .to_string();
                respond(conn, 413, "application/json", body.as_bytes(), true, "")?;
                // The body is still coming: closing with it unread would reset the
                // connection, and a client that writes its whole body before reading
                // would fail on its write and never see the 413. Read it away first.
                discard_body(conn, n);
                return Ok(());
            }
        };
        let close = req.close || state.stop.load(Ordering::SeqCst);
        if req.path.starts_with("/v1/") {
            let a = state.push.handle(&req);
            let extra = match a.status {
                401 => "WWW-Authenticate: Bearer\r\n",
                503 => "Retry-After: 1\r\n",
                _ => "",
            };
            let body = a.body.to_string();
            respond(
                conn,
                a.status,
                "application/json",
                body.as_bytes(),
                close,
                extra,
            )?;
        } else {
            // Probes and scrapes are one request each: closed after the answer, as
            // they always were (a client reading to the end gets it at once).
            return probe(conn, state, &req.method, &req.path, true);
        }
        if close {
            return Ok(());
        }
    }
}

/// Most of a refused body read away before the connection is closed, and for how long.
const DISCARD_BYTES: usize = 64 << 20;
const DISCARD_TIME: Duration = Duration::from_secs(2);

/// After answering: stops writing, then reads and drops what the client still sends
/// (the rest of a `len`-byte body, bounded by `DISCARD_BYTES` and `DISCARD_TIME`) until
/// it closes, so the close that follows does not reset the connection under the
/// answer.
fn discard_body(conn: &mut TcpStream, len: usize) {
    use std::io::Read;
    let _ = conn.shutdown(std::net::Shutdown::Write);
    let deadline = std::time::Instant::now() + DISCARD_TIME;
    let mut left = len.min(DISCARD_BYTES) + http::MAX_HEAD;
    let mut chunk = [0u8; 16 * 1024];
    while left > 0 {
        let wait = deadline.saturating_duration_since(std::time::Instant::now());
        if wait.is_zero() || conn.set_read_timeout(Some(wait)).is_err() {
            return;
        }
        match conn.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => left = left.saturating_sub(n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// `/healthz`, `/readyz`, `/metrics`.
fn probe(
    conn: &mut TcpStream,
    state: &AdminState,
    method: &str,
    path: &str,
    close: bool,
) -> std::io::Result<()> {
    let text = "text/plain";
    if method != "GET" && method != "HEAD" {
        return respond(conn, 405, text, b"method not allowed\n", close, "");
    }
    match path {
        "/healthz" => respond(conn, 200, text, b"ok\n", close, ""),
        "/readyz" => {
            if state.is_ready() {
                respond(conn, 200, text, b"ready\n", close, "")
            } else if state.draining.load(Ordering::SeqCst) {
                respond(conn, 503, text, b"draining\n", close, "")
            } else {
                respond(conn, 503, text, b"starting\n", close, "")
            }
        }
        "/metrics" => respond(
            conn,
            200,
            "text/plain; version=0.0.4",
            (state.metrics.render() + &state.push.metrics()).as_bytes(),
            close,
            "",
        ),
        _ => respond(conn, 404, text, b"not found\n", close, ""),
    }
}
