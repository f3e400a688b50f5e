//! Per-shard HTTP/1.1 keep-alive connection pool for backend services.
//!
//! Why this exists: every client binary request that the gateway forwards
//! becomes an HTTP/1.1 request to a backend service. Opening a TCP
//! connection per request would dominate latency, and sharing connections
//! across shards would need locks, so each shard (thread) owns one [`Pool`]
//! per backend service: `!Send`, `Rc`-shared within the shard, no
//! cross-thread synchronisation anywhere.
//!
//! What it does:
//! - keeps idle keep-alive connections and reuses them LIFO (warmest first),
//!   dropping ones that the peer already closed;
//! - caps open connections per shard; callers beyond the cap wait FIFO for a
//!   free slot, bounded by the request timeout ([`BackendError::Saturated`]);
//! - writes the request head and the body as one vectored write; the body
//!   `Bytes` (a slice of the client's read buffer) is never copied;
//! - reads into an owned `BytesMut` feeding
//!   [`ResponseParser`](crate::proto::http1::ResponseParser);
//! - retries exactly once, on a fresh connection, when a *reused* connection
//!   turns out dead before any response byte arrived (EOF / reset);
//! - one deadline covers waiting + connect + write + read; a connection whose
//!   request timed out is closed, never returned to the pool.
//!
//! Requires a monoio runtime built with `enable_timer()`.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use monoio::buf::{IoBufMut, IoVecBuf};
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::net::TcpStream;

use crate::proto::http1::{encode_request_head, Http1Error, RequestHead, Response, ResponseParser};

/// Initial read buffer size; it grows as needed for large bodies.
const READ_CHUNK: usize = 8 * 1024;

/// Tuning for one backend service's pool on one shard.
#[derive(Debug, Clone)]
pub struct BackendSettings {
    /// Per address attempt; a connect that takes longer fails with
    /// [`BackendError::Connect`] (`ErrorKind::TimedOut`).
    pub connect_timeout: Duration,
    /// Deadline for the whole call: waiting for a connection slot, connect,
    /// write and read.
    pub request_timeout: Duration,
    /// Idle keep-alive connections kept for reuse.
    pub max_idle_per_shard: usize,
    /// Open (idle + busy) connections allowed; must be at least 1.
    pub max_conns_per_shard: usize,
    /// Largest accepted response body.
    pub max_response_bytes: usize,
}

impl Default for BackendSettings {
    fn default() -> Self {
        BackendSettings {
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(5),
            max_idle_per_shard: 32,
            max_conns_per_shard: 64,
            max_response_bytes: 1024 * 1024,
        }
    }
}

/// One request to the pool's service.
#[derive(Debug, Clone)]
pub struct BackendRequest {
    /// `"POST"` or `"GET"` (any token is accepted; `"HEAD"` is handled).
    pub method: &'static str,
    /// Appended to the base path of the pool's URL (`/` inserted if missing).
    pub path: String,
    /// Extra headers. `Host`, `Content-Length`, `Connection` and
    /// `Transfer-Encoding` are set by the codec and rejected here.
    pub headers: Vec<(&'static str, String)>,
    /// Request body; written without copying.
    pub body: Bytes,
}

/// Who is to blame for a failed call (for choosing a status / metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorSide {
    /// The backend failed: refused/unreachable, timed out, reset, or sent
    /// an invalid or oversized response (502/504-like).
    Backend,
    /// The gateway itself: pool saturated, bad configuration (503/500-like).
    Gateway,
    /// The request could not be encoded, e.g. a header value taken from a
    /// client's claims contains CR/LF (400-like).
    Request,
}

/// Why a backend call failed.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// Could not connect (refused, unreachable, connect timeout). The
    /// request was not sent.
    #[error("backend connect failed: {0}")]
    Connect(#[source] io::Error),
    /// The request deadline expired after the request may have been sent.
    #[error("backend request timed out")]
    Timeout,
    /// I/O error on an established connection.
    #[error("backend I/O error: {0}")]
    Io(#[source] io::Error),
    /// The backend's response violated HTTP/1.1 or our limits.
    #[error("backend protocol error: {0}")]
    Protocol(#[source] Http1Error),
    /// No connection slot became free before the deadline. The request was
    /// not sent.
    #[error("backend connection pool saturated")]
    Saturated,
    /// The pool's URL is unusable (the message says why).
    #[error("invalid backend URL: {0}")]
    InvalidUrl(String),
    /// Settings are unusable (the message says why).
    #[error("invalid backend settings: {0}")]
    InvalidSettings(&'static str),
    /// The request could not be encoded (bad header value, path, ...).
    /// Nothing was sent.
    #[error("invalid backend request: {0}")]
    InvalidRequest(#[source] Http1Error),
}

impl BackendError {
    /// True only when the request certainly never reached the backend and
    /// retrying (e.g. another instance) is safe: connect failures and
    /// saturation. (`InvalidRequest` was not sent either, but retrying it
    /// cannot succeed, so it is `false`.)
    pub fn retry_safe(&self) -> bool {
        matches!(self, BackendError::Connect(_) | BackendError::Saturated)
    }

    /// Which side failed.
    pub fn side(&self) -> ErrorSide {
        match self {
            BackendError::Connect(_)
            | BackendError::Timeout
            | BackendError::Io(_)
            | BackendError::Protocol(_) => ErrorSide::Backend,
            BackendError::Saturated
            | BackendError::InvalidUrl(_)
            | BackendError::InvalidSettings(_) => ErrorSide::Gateway,
            BackendError::InvalidRequest(_) => ErrorSide::Request,
        }
    }
}

/// Snapshot of a pool's occupancy (for metrics and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Idle connections kept for reuse.
    pub idle: usize,
    /// Connection slots held by in-flight calls.
    pub busy: usize,
    /// Calls waiting for a slot.
    pub waiting: usize,
}

/// Keep-alive connection pool for ONE backend service on ONE shard.
pub struct Pool {
    /// `Host` header value (`host[:port]` as written in the URL).
    authority: String,
    /// Base path without trailing `/` (may be empty).
    base_path: String,
    addrs: Vec<SocketAddr>,
    settings: BackendSettings,
    /// LIFO stack of idle connections.
    idle: RefCell<Vec<TcpStream>>,
    limiter: Limiter,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("authority", &self.authority)
            .field("base_path", &self.base_path)
            .field("addrs", &self.addrs)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// Where a call was when its deadline expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Queued,
    Connecting,
    Exchanging,
}

/// Failure of one request/response exchange on one connection.
enum Failure {
    /// The connection was dead before any response byte arrived; safe to
    /// retry on a fresh connection if it was a reused one.
    Stale(BackendError),
    Fatal(BackendError),
}

impl Pool {
    /// Pool for the service at `url` = `http://host[:port][/base/path]`.
    ///
    /// Host names are resolved here, once (blocking `getaddrinfo`); IP
    /// literals need no lookup. Only `http://` is supported for now.
    pub fn new(url: &str, settings: BackendSettings) -> Result<Pool, BackendError> {
        if settings.max_conns_per_shard == 0 {
            return Err(BackendError::InvalidSettings(
                "max_conns_per_shard must be at least 1",
            ));
        }
        let origin = parse_url(url)?;
        let addrs: Vec<SocketAddr> = (origin.host.as_str(), origin.port)
            .to_socket_addrs()
            .map_err(|e| {
                BackendError::InvalidUrl(format!("cannot resolve {:?}: {e}", origin.host))
            })?
            .collect();
        if addrs.is_empty() {
            return Err(BackendError::InvalidUrl(format!(
                "{:?} resolved to no address",
                origin.host
            )));
        }
        Ok(Pool {
            authority: origin.authority,
            base_path: origin.base_path,
            addrs,
            limiter: Limiter::new(settings.max_conns_per_shard),
            settings,
            idle: RefCell::new(Vec::new()),
        })
    }

    /// Send `req` and wait for the complete response, within the configured
    /// `request_timeout`.
    pub async fn call(&self, req: BackendRequest) -> Result<Response, BackendError> {
        self.call_with_timeout(req, self.settings.request_timeout)
            .await
    }

    /// Like [`Pool::call`] with a per-call deadline instead of
    /// `request_timeout`.
    pub async fn call_with_timeout(
        &self,
        req: BackendRequest,
        timeout: Duration,
    ) -> Result<Response, BackendError> {
        let head = self.encode_head(&req)?;
        let head_request = req.method.eq_ignore_ascii_case("HEAD");
        let phase = Cell::new(Phase::Queued);
        let attempt = self.call_inner(&head, &req.body, head_request, &phase);
        match monoio::time::timeout(timeout, attempt).await {
            Ok(result) => result,
            // Dropping `attempt` released the slot and closed any connection
            // it held; an in-flight io_uring op keeps its buffers until the
            // kernel has cancelled it.
            Err(_elapsed) => Err(match phase.get() {
                Phase::Queued => BackendError::Saturated,
                Phase::Connecting => BackendError::Connect(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "request deadline expired while connecting",
                )),
                Phase::Exchanging => BackendError::Timeout,
            }),
        }
    }

    /// Current occupancy.
    pub fn stats(&self) -> PoolStats {
        let st = self.limiter.state.borrow();
        PoolStats {
            idle: self.idle.borrow().len(),
            busy: st.in_use,
            waiting: st.queue.len(),
        }
    }

    fn encode_head(&self, req: &BackendRequest) -> Result<Bytes, BackendError> {
        let path = join_path(&self.base_path, &req.path);
        let headers: Vec<(&str, &str)> =
            req.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let head = RequestHead {
            method: req.method,
            path: &path,
            host: &self.authority,
            headers: &headers,
            content_length: req.body.len(),
        };
        let mut out = BytesMut::with_capacity(256);
        encode_request_head(&head, &mut out).map_err(BackendError::InvalidRequest)?;
        Ok(out.freeze())
    }

    async fn call_inner(
        &self,
        head: &Bytes,
        body: &Bytes,
        head_request: bool,
        phase: &Cell<Phase>,
    ) -> Result<Response, BackendError> {
        // Held until the end of this function, i.e. after the connection has
        // been put back, so a woken waiter finds it idle.
        let _slot = self.limiter.acquire().await;
        let mut pooled = self.take_idle();
        let mut retried = false;
        loop {
            let (mut conn, reused) = match pooled.take() {
                Some(conn) => (conn, true),
                None => {
                    phase.set(Phase::Connecting);
                    (self.connect().await?, false)
                }
            };
            phase.set(Phase::Exchanging);
            match self.exchange(&mut conn, head, body, head_request).await {
                Ok((response, reusable)) => {
                    if reusable {
                        self.put_idle(conn);
                    }
                    return Ok(response);
                }
                Err(Failure::Stale(err)) if reused && !retried => {
                    tracing::debug!(backend = %self.authority, error = %err,
                        "pooled backend connection was dead; retrying once on a fresh connection");
                    retried = true;
                }
                Err(Failure::Stale(err) | Failure::Fatal(err)) => return Err(err),
            }
        }
    }

    /// Pop the most recently used idle connection that still looks alive.
    fn take_idle(&self) -> Option<TcpStream> {
        let mut idle = self.idle.borrow_mut();
        while let Some(conn) = idle.pop() {
            if idle_conn_usable(&conn) {
                return Some(conn);
            }
            tracing::debug!(backend = %self.authority, "dropping idle backend connection closed by peer");
        }
        None
    }

    fn put_idle(&self, conn: TcpStream) {
        // A request waiting for a slot will want a connection at once: keep this one
        // for it even past the idle cap rather than close it and make it reconnect.
        let waiting = !self.limiter.state.borrow().queue.is_empty();
        let mut idle = self.idle.borrow_mut();
        if waiting || idle.len() < self.settings.max_idle_per_shard {
            idle.push(conn);
        }
    }

    async fn connect(&self) -> Result<TcpStream, BackendError> {
        let mut last_err = None;
        for &addr in &self.addrs {
            let err = match monoio::time::timeout(
                self.settings.connect_timeout,
                TcpStream::connect_addr(addr),
            )
            .await
            {
                Ok(Ok(stream)) => {
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::warn!(backend = %self.authority, error = %e, "TCP_NODELAY failed");
                    }
                    return Ok(stream);
                }
                Ok(Err(e)) => e,
                Err(_) => io::Error::new(io::ErrorKind::TimedOut, "connect timed out"),
            };
            tracing::debug!(backend = %self.authority, %addr, error = %err, "backend connect failed");
            last_err = Some(err);
        }
        Err(BackendError::Connect(last_err.unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::AddrNotAvailable, "no address")
        })))
    }

    /// Write one request and read its response. On success also says
    /// whether the connection can go back to the pool.
    async fn exchange(
        &self,
        conn: &mut TcpStream,
        head: &Bytes,
        body: &Bytes,
        head_request: bool,
    ) -> Result<(Response, bool), Failure> {
        let io_failure = |e: io::Error, received_any: bool| {
            if !received_any && is_dead_connection(&e) {
                Failure::Stale(BackendError::Io(e))
            } else {
                Failure::Fatal(BackendError::Io(e))
            }
        };

        // Head + body as one writev. The buffer owns (refcounted) both
        // `Bytes`, so if this future is dropped mid-write the runtime keeps
        // them alive until the kernel is done with the iovecs.
        let mut iov = BytesIoVec::new(head.clone(), body.clone());
        while iov.remaining() > 0 {
            let (res, back) = conn.writev(iov).await;
            iov = back;
            match res {
                Ok(0) => {
                    let e = io::Error::new(io::ErrorKind::WriteZero, "backend accepted no bytes");
                    return Err(Failure::Fatal(BackendError::Io(e)));
                }
                Ok(n) => iov.advance(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_failure(e, false)),
            }
        }
        drop(iov);

        let mut parser =
            ResponseParser::new(self.settings.max_response_bytes).head_request(head_request);
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        let mut received_any = false;
        loop {
            if received_any {
                match parser.parse(&mut buf) {
                    // Leftover bytes after the response mean the peer is out
                    // of step with us: do not reuse such a connection.
                    Ok(Some(resp)) => {
                        let reusable = resp.keep_alive && buf.is_empty();
                        return Ok((resp, reusable));
                    }
                    Ok(None) => {}
                    Err(e) => return Err(Failure::Fatal(BackendError::Protocol(e))),
                }
            }
            if buf.capacity() - buf.len() < READ_CHUNK / 2 {
                buf.reserve(READ_CHUNK);
            }
            // Read into the spare capacity: reading into a plain BytesMut
            // would write at offset 0 and overwrite what is already there.
            let (len, cap) = (buf.len(), buf.capacity());
            let (res, slice) = conn.read(buf.slice_mut(len..cap)).await;
            buf = slice.into_inner();
            match res {
                Ok(0) if !received_any => {
                    return Err(Failure::Stale(BackendError::Protocol(
                        Http1Error::ConnectionClosed,
                    )));
                }
                Ok(0) => {
                    return match parser.parse_eof(&mut buf) {
                        Ok(resp) => Ok((resp, false)),
                        Err(e) => Err(Failure::Fatal(BackendError::Protocol(e))),
                    };
                }
                Ok(_) => received_any = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_failure(e, received_any)),
            }
        }
    }
}

/// Errors that mean the peer had already closed/reset the connection.
fn is_dead_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::NotConnected
            | io::ErrorKind::UnexpectedEof
    )
}

/// Cheap liveness probe for an idle connection: a non-blocking 1-byte
/// `MSG_PEEK`. `EAGAIN` means "alive and quiet"; EOF, an error, or
/// unsolicited bytes (e.g. a `408` sent before closing) mean "discard".
/// Works alongside both drivers: it consumes nothing and registers nothing.
fn idle_conn_usable(conn: &TcpStream) -> bool {
    let mut byte = 0u8;
    // SAFETY: valid fd owned by `conn`; 1-byte buffer on the stack.
    let n = unsafe {
        libc::recv(
            conn.as_raw_fd(),
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock
}

/// Owned iovec buffer over `[head, body]` for `writev`, without copying.
///
/// Partial writes are handled by [`BytesIoVec::advance`], which adjusts the
/// iovecs in place. (monoio's `write_vectored_all` is not used: it keeps the
/// caller's buffer outside the in-flight op, so dropping it on timeout could
/// free memory the kernel is still reading under io_uring.)
struct BytesIoVec {
    /// Keeps the memory the iovecs point into alive.
    _bufs: [Bytes; 2],
    /// Boxed so the array's address is stable while the value moves into
    /// and out of the runtime's op.
    iovecs: Box<[libc::iovec; 2]>,
    first: usize,
    end: usize,
    remaining: usize,
}

impl BytesIoVec {
    fn new(head: Bytes, body: Bytes) -> Self {
        let iov = |b: &Bytes| libc::iovec {
            iov_base: b.as_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        };
        let iovecs = Box::new([iov(&head), iov(&body)]);
        BytesIoVec {
            end: if body.is_empty() { 1 } else { 2 },
            remaining: head.len() + body.len(),
            iovecs,
            first: 0,
            _bufs: [head, body],
        }
    }

    fn remaining(&self) -> usize {
        self.remaining
    }

    fn advance(&mut self, mut n: usize) {
        self.remaining -= n;
        while n > 0 && self.first < self.end {
            let iov = &mut self.iovecs[self.first];
            if n >= iov.iov_len {
                n -= iov.iov_len;
                self.first += 1;
            } else {
                // SAFETY: n < iov_len, so the pointer stays inside the buffer.
                iov.iov_base = unsafe { iov.iov_base.cast::<u8>().add(n).cast() };
                iov.iov_len -= n;
                n = 0;
            }
        }
    }
}

// SAFETY: the iovecs point into `_bufs`, whose heap memory `Bytes` never moves
// and which this value owns, and the iovec array is boxed, so both stay valid
// and fixed for as long as the runtime holds the value.
unsafe impl IoVecBuf for BytesIoVec {
    fn read_iovec_ptr(&self) -> *const libc::iovec {
        self.iovecs[self.first..].as_ptr()
    }

    fn read_iovec_len(&self) -> usize {
        self.end - self.first
    }
}

/// FIFO connection-slot limiter (a local, `!Send` semaphore).
///
/// A released slot is handed directly to the oldest waiter, so late arrivals
/// cannot overtake the queue.
struct Limiter {
    state: RefCell<LimiterState>,
}

struct LimiterState {
    max: usize,
    in_use: usize,
    queue: VecDeque<Rc<RefCell<Waiter>>>,
}

struct Waiter {
    waker: Option<Waker>,
    granted: bool,
}

impl Limiter {
    fn new(max: usize) -> Self {
        Limiter {
            state: RefCell::new(LimiterState {
                max,
                in_use: 0,
                queue: VecDeque::new(),
            }),
        }
    }

    fn acquire(&self) -> Acquire<'_> {
        Acquire {
            limiter: self,
            waiter: None,
            done: false,
        }
    }

    fn release(&self) {
        let waker = {
            let mut st = self.state.borrow_mut();
            match st.queue.pop_front() {
                Some(waiter) => {
                    let mut w = waiter.borrow_mut();
                    w.granted = true;
                    w.waker.take()
                }
                None => {
                    st.in_use -= 1;
                    None
                }
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

struct Acquire<'a> {
    limiter: &'a Limiter,
    waiter: Option<Rc<RefCell<Waiter>>>,
    done: bool,
}

struct Slot<'a>(&'a Limiter);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.release();
    }
}

impl<'a> Future for Acquire<'a> {
    type Output = Slot<'a>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Slot<'a>> {
        let this = &mut *self;
        match &this.waiter {
            None => {
                let mut st = this.limiter.state.borrow_mut();
                if st.queue.is_empty() && st.in_use < st.max {
                    st.in_use += 1;
                    this.done = true;
                    return Poll::Ready(Slot(this.limiter));
                }
                let waiter = Rc::new(RefCell::new(Waiter {
                    waker: Some(cx.waker().clone()),
                    granted: false,
                }));
                st.queue.push_back(waiter.clone());
                this.waiter = Some(waiter);
                Poll::Pending
            }
            Some(waiter) => {
                let mut w = waiter.borrow_mut();
                if w.granted {
                    drop(w);
                    this.done = true;
                    return Poll::Ready(Slot(this.limiter));
                }
                match &w.waker {
                    Some(old) if old.will_wake(cx.waker()) => {}
                    _ => w.waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        }
    }
}

impl Drop for Acquire<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let Some(waiter) = self.waiter.take() else {
            return;
        };
        if waiter.borrow().granted {
            // Granted but never observed (e.g. timed out at the same
            // moment): pass the slot on.
            self.limiter.release();
        } else {
            self.limiter
                .state
                .borrow_mut()
                .queue
                .retain(|w| !Rc::ptr_eq(w, &waiter));
        }
    }
}

/// Parsed `http://` origin.
#[derive(Debug, PartialEq, Eq)]
struct Origin {
    authority: String,
    host: String,
    port: u16,
    base_path: String,
}

fn parse_url(url: &str) -> Result<Origin, BackendError> {
    let bad = |why: &str| BackendError::InvalidUrl(format!("{why}: {url:?}"));
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(bad("expected http://host[:port][/path]"));
    };
    if scheme.eq_ignore_ascii_case("https") {
        return Err(bad("https:// backends are not supported yet (use http://)"));
    }
    if !scheme.eq_ignore_ascii_case("http") {
        return Err(bad("only http:// is supported"));
    }
    if rest.contains(['?', '#']) {
        return Err(bad("query and fragment are not allowed in a backend URL"));
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(bad("missing host or unsupported userinfo"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| bad("unterminated IPv6 literal"))?;
        match after {
            "" => (host, None),
            p => (
                host,
                Some(p.strip_prefix(':').ok_or_else(|| bad("bad port"))?),
            ),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        None => 80,
        Some(digits) => match digits.parse::<u16>() {
            Ok(p) if p != 0 && digits.bytes().all(|b| b.is_ascii_digit()) => p,
            _ => return Err(bad("bad port")),
        },
    };
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'_'))
    {
        return Err(bad("bad host"));
    }
    if !path.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(bad("bad base path"));
    }
    Ok(Origin {
        authority: authority.to_owned(),
        host: host.to_owned(),
        port,
        base_path: path.trim_end_matches('/').to_owned(),
    })
}

/// `base` (no trailing `/`) + `path`, with exactly one `/` between them.
fn join_path(base: &str, path: &str) -> String {
    let path = path.strip_prefix('/').unwrap_or(path);
    let mut full = String::with_capacity(base.len() + path.len() + 1);
    full.push_str(base);
    full.push('/');
    full.push_str(path);
    full
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream as StdStream};
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::sync::{Arc, Mutex};
    use std::thread;
    use std::time::Instant;

    // ---- canned backend on 127.0.0.1 (std threads, one per connection) ----

    #[derive(Debug, Clone)]
    struct Recorded {
        conn: usize,
        method: String,
        path: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Recorded {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    #[derive(Default)]
    struct Stats {
        accepted: AtomicUsize,
        open: AtomicUsize,
        max_open: AtomicUsize,
        requests: Mutex<Vec<Recorded>>,
    }

    struct Server {
        addr: SocketAddr,
        stats: Arc<Stats>,
    }

    impl Server {
        fn start() -> Server {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let stats = Arc::new(Stats::default());
            let st = stats.clone();
            thread::spawn(move || {
                for stream in listener.incoming() {
                    let Ok(stream) = stream else { continue };
                    let id = st.accepted.fetch_add(1, SeqCst) + 1;
                    let open = st.open.fetch_add(1, SeqCst) + 1;
                    st.max_open.fetch_max(open, SeqCst);
                    let st = st.clone();
                    thread::spawn(move || {
                        serve_conn(stream, id, &st);
                        st.open.fetch_sub(1, SeqCst);
                    });
                }
            });
            Server { addr, stats }
        }

        fn url(&self, base: &str) -> String {
            format!("http://{}{base}", self.addr)
        }

        fn accepted(&self) -> usize {
            self.stats.accepted.load(SeqCst)
        }

        fn requests(&self) -> Vec<Recorded> {
            self.stats.requests.lock().unwrap().clone()
        }
    }

    /// Read one request; `None` on EOF/error.
    fn read_request(s: &mut StdStream, buf: &mut Vec<u8>, conn: usize) -> Option<Recorded> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            if let Ok(httparse::Status::Complete(n)) = req.parse(buf) {
                let headers: Vec<(String, String)> = req
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_owned(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                let len: usize = headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                    .map_or(0, |(_, v)| v.parse().unwrap());
                let (method, path) = (req.method.unwrap().to_owned(), req.path.unwrap().to_owned());
                while buf.len() < n + len {
                    read_more(s, buf)?;
                }
                let body = buf[n..n + len].to_vec();
                buf.drain(..n + len);
                return Some(Recorded {
                    conn,
                    method,
                    path,
                    headers,
                    body,
                });
            }
            read_more(s, buf)?;
        }
    }

    fn read_more(s: &mut StdStream, buf: &mut Vec<u8>) -> Option<()> {
        let mut tmp = [0u8; 16 * 1024];
        match s.read(&mut tmp) {
            Ok(0) | Err(_) => None,
            Ok(n) => {
                buf.extend_from_slice(&tmp[..n]);
                Some(())
            }
        }
    }

    fn ok(body: &[u8]) -> Vec<u8> {
        let mut r =
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        r.extend_from_slice(body);
        r
    }

    /// Routes (on the last path segment(s)):
    /// `echo` → 200 with the request body; `chunked`; `close-delimited`;
    /// `slow` → 1.5 s delay; `close-after` → respond, then close;
    /// `hangup` → close without responding;
    /// `drop-next` / `reset-next` → respond, then read the next request on
    /// this connection and close (FIN / RST) without answering it;
    /// `delay/<ms>/<tag>` → respond `tag` after `ms`.
    fn serve_conn(mut s: StdStream, conn: usize, st: &Stats) {
        let mut buf = Vec::new();
        let mut kill_next: Option<bool> = None; // Some(rst?)
        while let Some(req) = read_request(&mut s, &mut buf, conn) {
            st.requests.lock().unwrap().push(req.clone());
            if let Some(rst) = kill_next {
                if rst {
                    set_linger_zero(&s);
                }
                return;
            }
            let path = req.path.as_str();
            let resp = if path.ends_with("/echo") {
                ok(&req.body)
            } else if path.ends_with("/chunked") {
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                  5;ext=1\r\nhello\r\n2\r\n, \r\nd\r\nchunked world\r\n0\r\nX-Trailer: t\r\n\r\n"
                    .to_vec()
            } else if path.ends_with("/close-delimited") {
                let _ =
                    s.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the very end");
                return;
            } else if path.ends_with("/slow") {
                thread::sleep(Duration::from_millis(1500));
                ok(b"too late")
            } else if path.ends_with("/hangup") {
                return;
            } else if path.ends_with("/close-after") {
                let _ = s.write_all(&ok(b"first"));
                return;
            } else if path.ends_with("/drop-next") || path.ends_with("/reset-next") {
                kill_next = Some(path.ends_with("/reset-next"));
                ok(b"served")
            } else if let Some(rest) = path.split("/delay/").nth(1) {
                let (ms, tag) = rest.split_once('/').unwrap();
                thread::sleep(Duration::from_millis(ms.parse().unwrap()));
                ok(tag.as_bytes())
            } else {
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec()
            };
            if s.write_all(&resp).is_err() {
                return;
            }
        }
    }

    fn set_linger_zero(s: &StdStream) {
        use std::os::fd::AsRawFd as _;
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: valid socket fd and a properly sized option value.
        let rc = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0);
    }

    // ---- helpers ----

    fn run<F: Future>(f: F) -> F::Output {
        monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn settings() -> BackendSettings {
        BackendSettings {
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(3),
            max_idle_per_shard: 8,
            max_conns_per_shard: 8,
            max_response_bytes: 1 << 20,
        }
    }

    fn get(path: &str) -> BackendRequest {
        BackendRequest {
            method: "GET",
            path: path.to_owned(),
            headers: vec![],
            body: Bytes::new(),
        }
    }

    fn post(path: &str, body: Bytes) -> BackendRequest {
        BackendRequest {
            method: "POST",
            path: path.to_owned(),
            headers: vec![],
            body,
        }
    }

    fn pattern(len: usize, seed: u8) -> Bytes {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect::<Vec<u8>>()
            .into()
    }

    // ---- tests ----

    #[test]
    fn request_body_and_headers_arrive_byte_for_byte() {
        let server = Server::start();
        let pool = Pool::new(&server.url("/api/"), settings()).unwrap();
        // Includes bytes that look like HTTP framing.
        let mut body = b"HTTP/1.1 200 OK\r\n\r\n\0".to_vec();
        body.extend_from_slice(&pattern(200_000, 7));
        let body = Bytes::from(body);
        let req = BackendRequest {
            headers: vec![
                ("X-User-Id", "u-42".into()),
                ("X-Claims", "a=1; b=\"x y\"".into()),
            ],
            ..post("/echo", body.clone())
        };
        let resp = run(pool.call(req)).unwrap();
        assert_eq!((resp.status, resp.keep_alive), (200, true));
        assert_eq!(resp.body, body);

        let rec = &server.requests()[0];
        assert_eq!(
            (rec.method.as_str(), rec.path.as_str()),
            ("POST", "/api/echo")
        );
        assert_eq!(rec.body, &body[..]);
        assert_eq!(rec.header("Host"), Some(server.addr.to_string().as_str()));
        assert_eq!(rec.header("Content-Length"), Some("200020"));
        assert_eq!(rec.header("Connection"), Some("keep-alive"));
        assert_eq!(rec.header("X-User-Id"), Some("u-42"));
        assert_eq!(rec.header("X-Claims"), Some("a=1; b=\"x y\""));

        // GET without a body still sends Content-Length: 0.
        let resp = run(pool.call(get("echo"))).unwrap();
        assert!(resp.body.is_empty());
        let rec = &server.requests()[1];
        assert_eq!(
            (rec.method.as_str(), rec.path.as_str()),
            ("GET", "/api/echo")
        );
        assert_eq!(rec.header("Content-Length"), Some("0"));
    }

    #[test]
    fn keep_alive_connection_is_reused() {
        let server = Server::start();
        let pool = Pool::new(&server.url(""), settings()).unwrap();
        run(async {
            for i in 0..3u8 {
                let resp = pool.call(post("/echo", pattern(100, i))).await.unwrap();
                assert_eq!(resp.body, pattern(100, i));
            }
        });
        assert_eq!(server.accepted(), 1);
        assert!(server.requests().iter().all(|r| r.conn == 1));
        assert_eq!(
            pool.stats(),
            PoolStats {
                idle: 1,
                busy: 0,
                waiting: 0
            }
        );
    }

    #[test]
    fn chunked_and_close_delimited_responses() {
        let server = Server::start();
        let pool = Pool::new(&server.url(""), settings()).unwrap();
        run(async {
            let resp = pool.call(get("/chunked")).await.unwrap();
            assert_eq!(
                (&resp.body[..], resp.keep_alive),
                (&b"hello, chunked world"[..], true)
            );
            let resp = pool.call(get("/close-delimited")).await.unwrap();
            assert_eq!(
                (&resp.body[..], resp.keep_alive),
                (&b"until the very end"[..], false)
            );
            // The close-delimited connection was not pooled.
            let resp = pool.call(get("/chunked")).await.unwrap();
            assert_eq!(resp.status, 200);
        });
        assert_eq!(server.accepted(), 2);
    }

    #[test]
    fn dead_pooled_connection_is_retried_once_transparently() {
        for (route, what) in [("/drop-next", "FIN"), ("/reset-next", "RST")] {
            let server = Server::start();
            let pool = Pool::new(&server.url(""), settings()).unwrap();
            run(async {
                assert_eq!(&pool.call(get(route)).await.unwrap().body[..], b"served");
                // The server reads this request on the pooled connection and
                // closes it without answering: retried on a new connection.
                let resp = pool.call(post("/echo", pattern(5000, 3))).await.unwrap();
                assert_eq!(resp.body, pattern(5000, 3), "{what}");
            });
            assert_eq!(server.accepted(), 2, "{what}");
            let conns: Vec<usize> = server.requests().iter().map(|r| r.conn).collect();
            assert_eq!(conns, [1, 1, 2], "{what}");
        }
    }

    #[test]
    fn idle_connection_closed_by_peer_is_not_used() {
        let server = Server::start();
        let pool = Pool::new(&server.url(""), settings()).unwrap();
        run(async {
            assert_eq!(
                &pool.call(get("/close-after")).await.unwrap().body[..],
                b"first"
            );
            monoio::time::sleep(Duration::from_millis(50)).await;
            assert_eq!(
                &pool.call(get("/chunked")).await.unwrap().body[..],
                b"hello, chunked world"
            );
        });
        assert_eq!(server.accepted(), 2);
        // The probe discarded it before sending: no lost request on conn 1.
        let conns: Vec<usize> = server.requests().iter().map(|r| r.conn).collect();
        assert_eq!(conns, [1, 2]);
    }

    #[test]
    fn retry_happens_once_and_never_for_fresh_connections() {
        let server = Server::start();
        let pool = Pool::new(&server.url(""), settings()).unwrap();
        run(async {
            // Fresh connection hung up on: error, no retry.
            let err = pool.call(get("/hangup")).await.unwrap_err();
            assert!(
                matches!(err, BackendError::Protocol(Http1Error::ConnectionClosed)),
                "{err:?}"
            );
            assert!(!err.retry_safe());
            assert_eq!(server.accepted(), 1);
            // Pooled connection hung up on: retried once on a fresh one,
            // which hangs up too; that error is returned.
            pool.call(get("/echo")).await.unwrap();
            let err = pool.call(get("/hangup")).await.unwrap_err();
            assert!(
                matches!(err, BackendError::Protocol(Http1Error::ConnectionClosed)),
                "{err:?}"
            );
        });
        assert_eq!(server.accepted(), 3);
        let paths: Vec<(usize, String)> = server
            .requests()
            .into_iter()
            .map(|r| (r.conn, r.path))
            .collect();
        let expect = [(1, "/hangup"), (2, "/echo"), (2, "/hangup"), (3, "/hangup")];
        assert_eq!(paths, expect.map(|(c, p)| (c, p.to_owned())));
    }

    #[test]
    fn refused_port_fails_fast_with_connect_error() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut s = settings();
        s.request_timeout = Duration::from_secs(5);
        s.connect_timeout = Duration::from_secs(5);
        let pool = Pool::new(&format!("http://127.0.0.1:{port}"), s).unwrap();
        let start = Instant::now();
        let err = run(pool.call(post("/echo", Bytes::from_static(b"x")))).unwrap_err();
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
        match &err {
            BackendError::Connect(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused),
            other => panic!("expected Connect, got {other:?}"),
        }
        assert!(err.retry_safe());
        assert_eq!(err.side(), ErrorSide::Backend);
        assert_eq!(pool.stats().busy, 0);
    }

    #[test]
    fn slow_backend_times_out_and_connection_is_discarded() {
        let server = Server::start();
        let mut s = settings();
        s.request_timeout = Duration::from_millis(300);
        let pool = Pool::new(&server.url(""), s).unwrap();
        run(async {
            let start = Instant::now();
            let err = pool.call(post("/slow", pattern(10, 1))).await.unwrap_err();
            let took = start.elapsed();
            assert!(matches!(err, BackendError::Timeout), "{err:?}");
            assert!(
                took >= Duration::from_millis(290) && took < Duration::from_millis(900),
                "{took:?}"
            );
            assert!(!err.retry_safe());
            assert_eq!(err.side(), ErrorSide::Backend);
            assert_eq!(
                pool.stats(),
                PoolStats {
                    idle: 0,
                    busy: 0,
                    waiting: 0
                }
            );
            // Next call must not see the slow response on a reused socket.
            let resp = pool.call(post("/echo", pattern(10, 2))).await.unwrap();
            assert_eq!(resp.body, pattern(10, 2));
        });
        assert_eq!(server.accepted(), 2);
    }

    #[test]
    fn concurrency_cap_is_honoured_and_waiters_are_fifo() {
        let server = Server::start();
        let mut s = settings();
        s.max_conns_per_shard = 2;
        let pool = Rc::new(Pool::new(&server.url(""), s).unwrap());
        let order = Rc::new(RefCell::new(Vec::new()));
        run(async {
            let mut handles = Vec::new();
            for i in 0..8 {
                let (pool, order) = (pool.clone(), order.clone());
                handles.push(monoio::spawn(async move {
                    let resp = pool.call(get(&format!("/delay/60/t{i}"))).await.unwrap();
                    assert_eq!(resp.body, format!("t{i}"));
                    order.borrow_mut().push(i);
                }));
            }
            monoio::time::sleep(Duration::from_millis(10)).await;
            assert_eq!(
                pool.stats(),
                PoolStats {
                    idle: 0,
                    busy: 2,
                    waiting: 6
                }
            );
            for h in handles {
                h.await;
            }
        });
        assert!(server.stats.max_open.load(SeqCst) <= 2);
        assert_eq!(server.accepted(), 2);
        // Two connections, each serving requests in queue order.
        let order = order.borrow();
        for pair in order.chunks(2) {
            assert!(pair[0] / 2 == pair[1] / 2, "{order:?}");
        }
        assert_eq!(
            pool.stats(),
            PoolStats {
                idle: 2,
                busy: 0,
                waiting: 0
            }
        );
    }

    #[test]
    fn saturated_when_no_slot_frees_up_in_time() {
        let server = Server::start();
        let mut s = settings();
        s.max_conns_per_shard = 1;
        s.request_timeout = Duration::from_millis(200);
        let pool = Rc::new(Pool::new(&server.url(""), s).unwrap());
        run(async {
            let p = pool.clone();
            let hog = monoio::spawn(async move {
                p.call_with_timeout(get("/delay/500/hog"), Duration::from_secs(2))
                    .await
            });
            monoio::time::sleep(Duration::from_millis(20)).await;
            let start = Instant::now();
            let err = pool.call(get("/echo")).await.unwrap_err();
            assert!(matches!(err, BackendError::Saturated), "{err:?}");
            assert!(start.elapsed() < Duration::from_millis(450));
            assert!(err.retry_safe());
            assert_eq!(err.side(), ErrorSide::Gateway);
            assert_eq!(pool.stats().waiting, 0, "timed-out waiter left the queue");
            assert_eq!(&hog.await.unwrap().body[..], b"hog");
            // The slot was released and the connection pooled.
            assert_eq!(pool.call(get("/echo")).await.unwrap().status, 200);
        });
        assert_eq!(server.accepted(), 1);
    }

    #[test]
    fn many_concurrent_requests_get_their_own_bodies() {
        let server = Server::start();
        let mut s = settings();
        s.max_conns_per_shard = 16;
        s.max_idle_per_shard = 16; // nothing is closed, so accepted == opened
        let pool = Rc::new(Pool::new(&server.url("/v1"), s).unwrap());
        run(async {
            let mut handles = Vec::new();
            for i in 0..64u8 {
                let pool = pool.clone();
                let len = if i % 16 == 0 {
                    300_000
                } else {
                    1 + usize::from(i) * 97
                };
                handles.push(monoio::spawn(async move {
                    let body = pattern(len, i);
                    let resp = pool.call(post("/echo", body.clone())).await.unwrap();
                    assert_eq!(resp.body, body, "request {i}");
                }));
            }
            for h in handles {
                h.await;
            }
        });
        assert!(server.accepted() <= 16, "{}", server.accepted());
        assert!(server.stats.max_open.load(SeqCst) <= 16);
        assert_eq!(server.requests().len(), 64);
    }

    #[test]
    fn header_injection_is_rejected_before_anything_is_sent() {
        let server = Server::start();
        let pool = Pool::new(&server.url(""), settings()).unwrap();
        let req = BackendRequest {
            headers: vec![("X-User", "bob\r\nX-Admin: true".into())],
            ..post("/echo", Bytes::from_static(b"x"))
        };
        let err = run(pool.call(req)).unwrap_err();
        assert!(
            matches!(&err, BackendError::InvalidRequest(Http1Error::InvalidHeaderValue { name }) if name == "X-User"),
            "{err:?}"
        );
        assert_eq!(err.side(), ErrorSide::Request);
        assert!(!err.retry_safe());
        assert_eq!(server.accepted(), 0);
    }

    #[test]
    fn oversized_response_is_a_protocol_error() {
        let server = Server::start();
        let mut s = settings();
        s.max_response_bytes = 1000;
        let pool = Pool::new(&server.url(""), s).unwrap();
        let err = run(pool.call(post("/echo", pattern(1001, 0)))).unwrap_err();
        assert!(
            matches!(
                err,
                BackendError::Protocol(Http1Error::BodyTooLarge { limit: 1000 })
            ),
            "{err:?}"
        );
        assert_eq!(pool.stats().idle, 0);
    }

    #[test]
    fn legacy_driver_smoke() {
        let server = Server::start();
        let pool = Rc::new(Pool::new(&server.url(""), settings()).unwrap());
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        rt.block_on(async {
            assert_eq!(
                &pool.call(get("/chunked")).await.unwrap().body[..],
                b"hello, chunked world"
            );
            pool.call(get("/reset-next")).await.unwrap();
            let body = pattern(400_000, 9);
            assert_eq!(
                pool.call(post("/echo", body.clone())).await.unwrap().body,
                body
            );
            let mut handles = Vec::new();
            for i in 0..16u8 {
                let pool = pool.clone();
                handles.push(monoio::spawn(async move {
                    let resp = pool.call(get(&format!("/delay/5/x{i}"))).await.unwrap();
                    assert_eq!(resp.body, format!("x{i}"));
                }));
            }
            for h in handles {
                h.await;
            }
            let err = pool
                .call_with_timeout(get("/slow"), Duration::from_millis(100))
                .await
                .unwrap_err();
            assert!(matches!(err, BackendError::Timeout));
        });
    }

    #[test]
    fn url_parsing() {
        let o = parse_url("http://example.com:8080/api/v1/").unwrap();
        assert_eq!(
            o,
            Origin {
                authority: "example.com:8080".into(),
                host: "example.com".into(),
                port: 8080,
                base_path: "/api/v1".into(),
            }
        );
        let o = parse_url("HTTP://10.0.0.1").unwrap();
        assert_eq!(
            (o.port, o.base_path.as_str(), o.authority.as_str()),
            (80, "", "10.0.0.1")
        );
        let o = parse_url("http://[::1]:9000/x").unwrap();
        assert_eq!(
            (o.host.as_str(), o.port, o.authority.as_str()),
            ("::1", 9000, "[::1]:9000")
        );
        let err = parse_url("https://example.com").unwrap_err();
        assert!(
            matches!(&err, BackendError::InvalidUrl(m) if m.contains("https")),
            "{err}"
        );
        for bad in [
            "example.com",
            "ftp://x",
            "http://",
            "http://h:0",
            "http://h:99999",
            "http://h:+80",
            "http://u@h",
            "http://h/a?b",
            "http://h/a b",
            "http://h\r\nX: y/",
        ] {
            assert!(
                matches!(parse_url(bad), Err(BackendError::InvalidUrl(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            Pool::new(
                "http://127.0.0.1:1",
                BackendSettings {
                    max_conns_per_shard: 0,
                    ..settings()
                }
            ),
            Err(BackendError::InvalidSettings(_))
        ));
    }

    #[test]
    fn path_joining() {
        assert_eq!(join_path("", ""), "/");
        assert_eq!(join_path("", "/a"), "/a");
        assert_eq!(join_path("/api", "a/b"), "/api/a/b");
        assert_eq!(join_path("/api", "/a?x=1"), "/api/a?x=1");
    }

    #[test]
    fn iovec_advance_handles_partial_writes() {
        let mut v = BytesIoVec::new(Bytes::from_static(b"head"), Bytes::from_static(b"body!"));
        assert_eq!((v.remaining(), v.read_iovec_len()), (9, 2));
        v.advance(2);
        assert_eq!(
            (v.remaining(), v.read_iovec_len(), v.iovecs[0].iov_len),
            (7, 2, 2)
        );
        v.advance(3);
        assert_eq!(
            (v.remaining(), v.read_iovec_len(), v.iovecs[1].iov_len),
            (4, 1, 4)
        );
        // SAFETY: the iovec points into the live `body!` buffer.
        let rest = unsafe {
            std::slice::from_raw_parts(v.read_iovec_ptr().read().iov_base as *const u8, 4)
        };
        assert_eq!(rest, b"ody!");
        v.advance(4);
        assert_eq!((v.remaining(), v.read_iovec_len()), (0, 0));
        let v = BytesIoVec::new(Bytes::from_static(b"head"), Bytes::new());
        assert_eq!(v.read_iovec_len(), 1);
    }

    #[test]
    fn body_is_not_copied_into_the_iovec() {
        let body = pattern(1000, 5);
        let v = BytesIoVec::new(Bytes::from_static(b"h"), body.slice(10..));
        assert_eq!(v.iovecs[1].iov_base as *const u8, body[10..].as_ptr());
    }
}
