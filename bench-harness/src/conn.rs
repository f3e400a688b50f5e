//! Opens one simulated client: a TCP socket bound to a chosen source address, the
//! WebSocket upgrade and the manifest, through `ringgate::client` (the one client).
//!
//! Why it exists: past ~28,000 connections per source address the ephemeral ports run
//! out, so each worker binds its sockets to its own 127.0.0.x; and every scenario needs
//! the same answer to "why did this attempt fail", as a stable `stage:reason` label.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use monoio::net::TcpStream;
use ringgate::client::{Client, ClientError, ConnectOptions, Manifest, TokenVia};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// A failed attempt: where and why.
#[derive(Debug)]
pub struct Failure {
    pub stage: &'static str,
    pub reason: String,
    /// Worth one retry (ECONNREFUSED, EAGAIN: a full accept queue or a racing listener).
    pub retryable: bool,
}

impl Failure {
    /// `stage:reason`, e.g. `tcp:refused`.
    pub fn cause(&self) -> String {
        format!("{}:{}", self.stage, self.reason)
    }

    fn io(stage: &'static str, e: &io::Error) -> Failure {
        let (reason, retryable) = match e.raw_os_error() {
            Some(libc::ECONNREFUSED) => ("refused".to_string(), true),
            Some(libc::EAGAIN) => ("eagain".to_string(), true),
            Some(libc::EADDRNOTAVAIL) => ("addr_not_available".to_string(), false),
            Some(libc::EADDRINUSE) => ("addr_in_use".to_string(), false),
            Some(libc::ETIMEDOUT) => ("timeout".to_string(), false),
            Some(libc::ECONNRESET) => ("reset".to_string(), false),
            Some(libc::EPIPE) => ("broken_pipe".to_string(), false),
            Some(libc::EMFILE) | Some(libc::ENFILE) => ("too_many_open_files".to_string(), false),
            Some(n) => (format!("errno_{n}"), false),
            None => (format!("{:?}", e.kind()).to_lowercase(), false),
        };
        Failure {
            stage,
            reason,
            retryable,
        }
    }

    fn client(stage: &'static str, e: &ClientError) -> Failure {
        let reason = match e {
            ClientError::Io(io) => return Failure::io(stage, io),
            ClientError::Rejected { status, .. } => format!("http_{status}"),
            ClientError::BadHandshake(_) => "bad_handshake".into(),
            ClientError::Protocol(_) => "protocol_error".into(),
            ClientError::Closed { code: Some(c), .. } => format!("closed_{c}"),
            ClientError::Closed { code: None, .. } => "closed_eof".into(),
            ClientError::Unexpected(_) => "unexpected_message".into(),
            ClientError::Tls(_) => "tls".into(),
        };
        Failure {
            stage,
            reason,
            retryable: false,
        }
    }

    fn timeout(stage: &'static str) -> Failure {
        Failure {
            stage,
            reason: "timeout".into(),
            retryable: false,
        }
    }
}

/// A label for an error that ended an established connection (`stage` e.g. `hold`).
pub fn drop_cause(stage: &'static str, e: &ClientError) -> String {
    Failure::client(stage, e).cause()
}

/// A non-blocking TCP connect from `source` (port chosen at connect time), with a
/// receive buffer of `rcvbuf` bytes if given (the kernel doubles it; no autotuning).
pub async fn tcp_connect(
    addr: SocketAddr,
    source: Option<IpAddr>,
    rcvbuf: Option<usize>,
) -> io::Result<TcpStream> {
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let socket = Socket::new(
        domain,
        Type::STREAM.nonblocking().cloexec(),
        Some(Protocol::TCP),
    )?;
    socket.set_nodelay(true)?;
    if let Some(n) = rcvbuf {
        // Before connect, so the window it advertises is small from the start.
        socket.set_recv_buffer_size(n)?;
    }
    if let Some(ip) = source {
        // Defer the port choice to connect(): ports are then unique per 4-tuple, not
        // per source address alone.
        let one: libc::c_int = 1;
        // SAFETY: setsockopt reads sizeof(int) bytes from a live int.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        socket.bind(&SockAddr::from(SocketAddr::new(ip, 0)))?;
    }
    match socket.connect(&SockAddr::from(addr)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    let stream = TcpStream::from_std(std::net::TcpStream::from(socket))?;
    stream.writable(false).await?;
    if let Some(e) = socket_error(stream.as_raw_fd())? {
        return Err(e);
    }
    Ok(stream)
}

/// `SO_ERROR` of a socket: the outcome of a non-blocking connect.
fn socket_error(fd: std::os::fd::RawFd) -> io::Result<Option<io::Error>> {
    let mut err: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into a live int.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut err as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((err != 0).then(|| io::Error::from_raw_os_error(err)))
}

/// TCP connect + upgrade + manifest, each stage bounded by what is left of `timeout`.
pub async fn open(
    addr: SocketAddr,
    source: Option<IpAddr>,
    opts: &ConnectOptions,
    timeout: Duration,
) -> Result<(Client, Manifest), Failure> {
    open_with(addr, source, opts, timeout, None).await
}

/// [`open`] with the socket's receive buffer set to `rcvbuf` bytes if given.
async fn open_with(
    addr: SocketAddr,
    source: Option<IpAddr>,
    opts: &ConnectOptions,
    timeout: Duration,
    rcvbuf: Option<usize>,
) -> Result<(Client, Manifest), Failure> {
    let deadline = Instant::now() + timeout;
    let left = || deadline.saturating_duration_since(Instant::now());
    let mut client = open_ws_with(addr, source, opts, timeout, rcvbuf).await?;
    match monoio::time::timeout(left(), client.manifest()).await {
        Ok(Ok(m)) => Ok((client, m)),
        Ok(Err(e)) => Err(Failure::client("manifest", &e)),
        Err(_) => Err(Failure::timeout("manifest")),
    }
}

/// Opens simulated user `g`'s connection for run `run_id` (token for `user-{g}`, session
/// `bench-{run_id}-{g}`, role `user`, in the `Authorization` header): TCP connect from
/// `source` (with a receive buffer of `rcvbuf` bytes if given: a client that reads slowly
/// then pushes back on the server soon), upgrade, manifest, with one retry after 100 ms
/// when the failure is worth it. Returns the outcome and whether it retried.
pub async fn open_user(
    target: &crate::target::Target,
    minter: &crate::jwt::Minter,
    run_id: &str,
    g: usize,
    source: IpAddr,
    timeout: Duration,
    rcvbuf: Option<usize>,
) -> (Result<(Client, Manifest), Failure>, bool) {
    let token = match minter.mint(
        &format!("user-{g}"),
        &format!("bench-{run_id}-{g}"),
        &["user"],
    ) {
        Ok(t) => t,
        Err(_) => {
            let f = Failure {
                stage: "token",
                reason: "mint".into(),
                retryable: false,
            };
            return (Err(f), false);
        }
    };
    let opts = ConnectOptions {
        path: target.path.clone(),
        token: Some(token),
        token_via: TokenVia::Header,
        tls: target.tls.clone(),
        ..Default::default()
    };
    let result = open_with(target.addr, Some(source), &opts, timeout, rcvbuf).await;
    if !matches!(&result, Err(f) if f.retryable) {
        return (result, false);
    }
    monoio::time::sleep(Duration::from_millis(100)).await;
    let result = open_with(target.addr, Some(source), &opts, timeout, rcvbuf).await;
    (result, true)
}

/// TCP connect + WebSocket upgrade only (no manifest: a plain WebSocket server), each
/// stage bounded by what is left of `timeout`.
pub async fn open_ws(
    addr: SocketAddr,
    source: Option<IpAddr>,
    opts: &ConnectOptions,
    timeout: Duration,
) -> Result<Client, Failure> {
    open_ws_with(addr, source, opts, timeout, None).await
}

async fn open_ws_with(
    addr: SocketAddr,
    source: Option<IpAddr>,
    opts: &ConnectOptions,
    timeout: Duration,
    rcvbuf: Option<usize>,
) -> Result<Client, Failure> {
    let deadline = Instant::now() + timeout;
    let left = || deadline.saturating_duration_since(Instant::now());
    let stream = match monoio::time::timeout(left(), tcp_connect(addr, source, rcvbuf)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(Failure::io("tcp", &e)),
        Err(_) => return Err(Failure::timeout("tcp")),
    };
    match monoio::time::timeout(left(), Client::upgrade(stream, addr, opts)).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(Failure::client("upgrade", &e)),
        Err(_) => Err(Failure::timeout("upgrade")),
    }
}
