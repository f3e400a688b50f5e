//! The listener side every built-in server shares: SO_REUSEPORT listeners bound before
//! serving, one thread per listener running a monoio runtime that accepts connections
//! and hands each (with the thread's one read buffer) to the server's handler.
//!
//! Why it exists: the HTTP echo, ws-echo, the link echo and the probe server are built
//! alike (thread-per-core, one SO_REUSEPORT listener per thread, like the gateway), so the
//! plumbing lives once, here. The servers take it from this file (and the WebSocket
//! ones their connection loop from `ws_conn`), never from each other.

use std::cell::RefCell;
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::BytesMut;
use monoio::net::{ListenerOpts, TcpListener, TcpStream};

/// Bytes read per `recv` into the thread's read buffer (the gateway's `READ_CHUNK`).
pub(super) const READ_CHUNK: usize = 32 * 1024;

/// The per-thread read buffer all of a thread's connections read into.
pub type ReadBuf = Rc<RefCell<BytesMut>>;

/// Binds one SO_REUSEPORT listener per thread (all before serving, so a bad address
/// fails fast), then runs `handler` for every accepted connection on its thread's monoio
/// runtime. Returns only if a thread fails.
pub fn serve_threads<H, F>(
    name: &'static str,
    addr: SocketAddr,
    threads: Option<usize>,
    handler: H,
) -> anyhow::Result<()>
where
    H: Fn(TcpStream, ReadBuf) -> F + Clone + Send + 'static,
    F: Future<Output = ()> + 'static,
{
    let listeners = bind_listeners(addr, threads)?;
    eprintln!("{name} listening on {addr} ({} threads)", listeners.len());
    join_threads(name, spawn_accept_threads(name, listeners, handler)?)
}

/// One SO_REUSEPORT listener on `addr` per thread (`threads`, default one per core).
pub fn bind_listeners(
    addr: SocketAddr,
    threads: Option<usize>,
) -> anyhow::Result<Vec<std::net::TcpListener>> {
    let threads = threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let opts = ListenerOpts::new().reuse_port(true).backlog(4096);
    (0..threads)
        .map(|_| Ok(bind_std(addr, &opts)?.into()))
        .collect()
}

/// A thread (`name-i`) per listener, each running [`accept_loop`] with `handler`.
pub fn spawn_accept_threads<H, F>(
    name: &'static str,
    listeners: Vec<std::net::TcpListener>,
    handler: H,
) -> anyhow::Result<Vec<JoinHandle<anyhow::Result<()>>>>
where
    H: Fn(TcpStream, ReadBuf) -> F + Clone + Send + 'static,
    F: Future<Output = ()> + 'static,
{
    let handles = listeners
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            let handler = handler.clone();
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || accept_loop(l, handler))
        })
        .collect::<Result<_, _>>()?;
    Ok(handles)
}

/// Waits for the threads (they return only on failure) and passes a failure on.
pub fn join_threads(
    name: &'static str,
    handles: Vec<JoinHandle<anyhow::Result<()>>>,
) -> anyhow::Result<()> {
    for h in handles {
        match h.join() {
            Ok(r) => r?,
            Err(_) => anyhow::bail!("{name} thread panicked"),
        }
    }
    Ok(())
}

pub(crate) fn accept_loop<H, F>(l: std::net::TcpListener, handler: H) -> anyhow::Result<()>
where
    H: Fn(TcpStream, ReadBuf) -> F,
    F: Future<Output = ()> + 'static,
{
    let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::from_std(l)?;
        let rbuf: ReadBuf = Rc::new(RefCell::new(BytesMut::with_capacity(READ_CHUNK)));
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    monoio::spawn(handler(stream, rbuf.clone()));
                }
                Err(e) if e.raw_os_error() == Some(libc::EMFILE) => {
                    monoio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(_) => {}
            }
        }
    })
}

/// An SO_REUSEPORT listener as a std socket (monoio adopts it on its own thread).
pub(crate) fn bind_std(addr: SocketAddr, opts: &ListenerOpts) -> std::io::Result<socket2::Socket> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM.cloexec(), None)?;
    s.set_reuse_port(opts.reuse_port)?;
    s.set_reuse_address(opts.reuse_addr)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(opts.backlog)?;
    Ok(s)
}
