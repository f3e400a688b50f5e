//! The admin listener: `/healthz`, `/readyz`, `/metrics` (Prometheus text).
//!
//! Why a plain blocking thread: it serves a scraper every few seconds and a load
//! balancer's probes — a handful of requests, never on the message path. Keeping it off
//! the shards means a probe still answers when a shard is busy, and keeps the shards free
//! of anything but client traffic. The push API (docs/DESIGN.md §5) will join it here.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::metrics::Metrics;

/// What the admin endpoints report on.
#[derive(Debug)]
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    pub ready_shards: Arc<AtomicUsize>,
    pub shards: usize,
    pub draining: AtomicBool,
    pub stop: AtomicBool,
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
                if let Err(e) = serve(&mut conn, &state) {
                    tracing::debug!(error = %e, "admin request failed");
                }
            }
        })
        .expect("spawn admin thread")
}

fn serve(conn: &mut TcpStream, state: &AdminState) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    conn.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = [0u8; 4096];
    let mut len = 0;
    let (method, path) = loop {
        let n = conn.read(&mut buf[len..])?;
        if n == 0 {
            return Ok(());
        }
        len += n;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf[..len]) {
            Ok(httparse::Status::Complete(_)) => {
                break (
                    req.method.unwrap_or("").to_string(),
                    req.path.unwrap_or("").to_string(),
                )
            }
            Ok(httparse::Status::Partial) if len < buf.len() => continue,
            _ => return respond(conn, 400, "text/plain", "bad request\n"),
        }
    };
    if method != "GET" && method != "HEAD" {
        return respond(conn, 405, "text/plain", "method not allowed\n");
    }
    let path = path.split('?').next().unwrap_or("");
    match path {
        "/healthz" => respond(conn, 200, "text/plain", "ok\n"),
        "/readyz" => {
            if state.is_ready() {
                respond(conn, 200, "text/plain", "ready\n")
            } else if state.draining.load(Ordering::SeqCst) {
                respond(conn, 503, "text/plain", "draining\n")
            } else {
                respond(conn, 503, "text/plain", "starting\n")
            }
        }
        "/metrics" => respond(
            conn,
            200,
            "text/plain; version=0.0.4",
            &state.metrics.render(),
        ),
        _ => respond(conn, 404, "text/plain", "not found\n"),
    }
}

fn respond(conn: &mut TcpStream, status: u16, ctype: &str, body: &str) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes())?;
    conn.write_all(body.as_bytes())
}
