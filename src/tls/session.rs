//! One connection's TLS state, driven over its non-blocking descriptor.
//!
//! Why by hand around rustls' buffered `Connection`: the connection tasks read only
//! when their socket is ready and write their whole outbox at once (`rt::sys`); so
//! ciphertext is read from the descriptor straight into rustls (`read_tls`), and what
//! it decrypted is copied out whole into the caller's buffer, leaving rustls holding no
//! plaintext (else a task parked on readiness would never see it). Writing encrypts into
//! rustls' bounded send buffer and pushes that to the descriptor at once; what the
//! socket does not take stays there, and the caller waits for writability as it would
//! for its own unsent bytes (`drain` says whether any is left).
//!
//! The order to call things in: `handshake` first (the server's side after accept, the
//! client's after connect); then `recv_into` when the socket is readable, and
//! `send_vectored` / `drain` when there is something to write or it is writable.

use std::io::{self, IoSlice, Read, Write};
use std::os::fd::RawFd;
use std::sync::Arc;

use bytes::BytesMut;
use monoio::net::TcpStream;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection};

use crate::rt::sys::{self, Nb};

/// Encrypted bytes rustls may hold unsent before it takes no more plaintext (a slow
/// reader's backlog stays in the caller's outbox, bounded and conflated there).
const SEND_BUFFER_LIMIT: usize = 64 * 1024;

/// One connection's rustls state.
#[derive(Debug)]
pub struct TlsSession {
    conn: Connection,
    /// Plaintext decrypted and not yet copied out (only between `process` and the copy).
    plain: usize,
    /// The peer sent close_notify.
    peer_closed: bool,
}

impl TlsSession {
    /// The server's side of a connection just accepted.
    pub fn server(config: &Arc<ServerConfig>) -> Result<TlsSession, rustls::Error> {
        Ok(Self::new(Connection::Server(ServerConnection::new(
            config.clone(),
        )?)))
    }

    /// The client's side of a connection to `host` (the name its certificate must hold).
    pub fn client(config: &Arc<ClientConfig>, host: &str) -> Result<TlsSession, rustls::Error> {
        let name = ServerName::try_from(host.to_owned())
            .map_err(|_| rustls::Error::General(format!("{host:?} is not a valid server name")))?;
        Ok(Self::new(Connection::Client(ClientConnection::new(
            config.clone(),
            name,
        )?)))
    }

    fn new(mut conn: Connection) -> TlsSession {
        conn.set_buffer_limit(Some(SEND_BUFFER_LIMIT));
        TlsSession {
            conn,
            plain: 0,
            peer_closed: false,
        }
    }

    /// Whether the handshake is still under way.
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// The TLS version agreed (after the handshake), e.g. `TLSv1_3`.
    pub fn version(&self) -> Option<rustls::ProtocolVersion> {
        self.conn.protocol_version()
    }

    /// Reads plaintext into `buf`'s spare capacity (growing it as needed), as
    /// `sys::recv_into` does: `Done(0)` when the peer closed (close_notify or EOF).
    /// Whatever was decrypted is copied out whole. A TLS error (a bad record, an alert)
    /// is an `InvalidData` error, after the alert rustls owes the peer is written.
    pub fn recv_into(&mut self, fd: RawFd, buf: &mut BytesMut) -> io::Result<Nb> {
        loop {
            if self.plain > 0 {
                let n = std::mem::take(&mut self.plain);
                let start = buf.len();
                buf.resize(start + n, 0);
                self.conn.reader().read_exact(&mut buf[start..])?;
                return Ok(Nb::Done(n));
            }
            if self.peer_closed {
                return Ok(Nb::Done(0));
            }
            match self.pump(fd)? {
                Pumped::Progress => {}
                Pumped::WouldBlock => return Ok(Nb::WouldBlock),
                Pumped::Eof => return Ok(Nb::Done(0)),
            }
        }
    }

    /// One read of ciphertext from `fd` into rustls, processed; what rustls owes the
    /// peer (handshake flights, tickets, key updates) is written as far as it goes.
    fn pump(&mut self, fd: RawFd) -> io::Result<Pumped> {
        match self.conn.read_tls(&mut FdIo(fd)) {
            Ok(0) => return Ok(Pumped::Eof),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Pumped::WouldBlock),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(Pumped::Progress),
            Err(e) => return Err(e),
        }
        let state = match self.conn.process_new_packets() {
            Ok(s) => s,
            Err(e) => {
                // rustls queued an alert saying why; the peer gets it if the socket
                // takes it now.
                let _ = self.drain(fd);
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        };
        self.plain = state.plaintext_bytes_to_read();
        self.peer_closed = state.peer_has_closed();
        if self.conn.wants_write() {
            self.drain(fd)?;
        }
        Ok(Pumped::Progress)
    }

    /// Encrypts as much of `slices` (in order) as the send buffer takes and writes it to
    /// `fd`, as `sys::send_vectored` does: `Done(n)` = the first `n` plaintext bytes were
    /// taken (some may still wait in rustls: see [`TlsSession::drain`]); `WouldBlock`
    /// when earlier bytes still wait for the socket.
    pub fn send_vectored(&mut self, fd: RawFd, slices: &[&[u8]]) -> io::Result<Nb> {
        if !self.drain(fd)? {
            return Ok(Nb::WouldBlock);
        }
        let mut io = [IoSlice::new(&[]); sys::MAX_IOVECS];
        let k = slices.len().min(io.len());
        for (v, s) in io.iter_mut().zip(slices) {
            *v = IoSlice::new(s);
        }
        let n = self.conn.writer().write_vectored(&io[..k])?;
        self.drain(fd)?;
        if n == 0 && slices.iter().any(|s| !s.is_empty()) {
            // (Only before a client's handshake completes, which `handshake` waits for.)
            return Ok(Nb::WouldBlock);
        }
        Ok(Nb::Done(n))
    }

    /// Writes what rustls holds encrypted and unsent; true when nothing is left.
    pub fn drain(&mut self, fd: RawFd) -> io::Result<bool> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut FdIo(fd)) {
                Ok(0) => return Ok(false),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Queues close_notify (the end of what this side sends) and writes it if it can.
    pub fn close_notify(&mut self, fd: RawFd) {
        self.conn.send_close_notify();
        let _ = self.drain(fd);
    }
}

/// What one `pump` did.
enum Pumped {
    Progress,
    WouldBlock,
    Eof,
}

/// The descriptor as rustls' reader and writer: non-blocking calls, EAGAIN as
/// `WouldBlock`.
struct FdIo(RawFd);

impl Read for FdIo {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `out` is writable memory of `out.len()` bytes; recv writes at most that.
        let ret = unsafe {
            libc::recv(
                self.0,
                out.as_mut_ptr().cast(),
                out.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(ret as usize)
    }
}

impl Write for FdIo {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(data)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut slices: [&[u8]; 64] = [&[]; 64];
        let k = bufs.len().min(slices.len());
        for (s, b) in slices.iter_mut().zip(bufs) {
            *s = b;
        }
        match sys::send_vectored(self.0, &slices[..k])? {
            Nb::Done(n) => Ok(n),
            Nb::WouldBlock => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The client side of a connection just made to `host`: a session whose handshake is
/// done within `within` (an `InvalidInput` error for a name rustls cannot use,
/// `TimedOut` past `within`, else the handshake's own error).
pub async fn connect(
    config: &Arc<ClientConfig>,
    host: &str,
    stream: &TcpStream,
    within: std::time::Duration,
) -> io::Result<Box<TlsSession>> {
    let mut session = TlsSession::client(config, host)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    match monoio::time::timeout(within, handshake(&mut session, stream)).await {
        Ok(Ok(())) => Ok(Box::new(session)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "timed out")),
    }
}

/// Completes `tls`'s handshake on `stream` (the caller bounds it in time). Plaintext
/// that came with the handshake's last flight stays for the first `recv_into`.
pub async fn handshake(tls: &mut TlsSession, stream: &TcpStream) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = stream.as_raw_fd();
    loop {
        if !tls.drain(fd)? {
            stream.writable(false).await?;
            continue;
        }
        if !tls.is_handshaking() {
            return Ok(());
        }
        match tls.pump(fd)? {
            Pumped::Progress => {}
            Pumped::WouldBlock => stream.readable(false).await?,
            Pumped::Eof => return Err(io::ErrorKind::UnexpectedEof.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;
    use std::sync::Arc;

    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use rustls::RootCertStore;

    use super::*;

    /// A server config for `localhost` and a client config trusting its CA.
    fn configs() -> (Arc<ServerConfig>, Arc<ClientConfig>) {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
            )
            .unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(CertificateDer::from(ca.der().to_vec())).unwrap();
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (Arc::new(server), Arc::new(client))
    }

    /// A connected pair of non-blocking sockets.
    fn pair() -> (UnixStream, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        (a, b)
    }

    /// Drives both sides until neither is handshaking (both on this thread).
    fn handshake_both(s: &mut TlsSession, sfd: RawFd, c: &mut TlsSession, cfd: RawFd) {
        for _ in 0..100 {
            c.drain(cfd).unwrap();
            s.drain(sfd).unwrap();
            if !s.is_handshaking() && !c.is_handshaking() {
                return;
            }
            let _ = s.pump(sfd).unwrap();
            let _ = c.pump(cfd).unwrap();
        }
        panic!("the handshake did not complete");
    }

    /// Reads from `t` until `want` bytes came (the peer's writes driven by `write`).
    fn read_n(t: &mut TlsSession, fd: RawFd, want: usize, mut write: impl FnMut()) -> Vec<u8> {
        let mut buf = BytesMut::new();
        for _ in 0..100_000 {
            if buf.len() >= want {
                break;
            }
            buf.reserve(16 * 1024);
            match t.recv_into(fd, &mut buf).unwrap() {
                Nb::Done(0) => break,
                Nb::Done(_) => assert_eq!(t.plain, 0, "rustls keeps no plaintext back"),
                Nb::WouldBlock => write(),
            }
        }
        buf.to_vec()
    }

    /// A server and a client session with their handshake done, over a socket pair.
    struct Connected {
        s: TlsSession,
        c: TlsSession,
        sock: (UnixStream, UnixStream),
        server_cfg: Arc<ServerConfig>,
    }

    fn connected() -> Connected {
        let (server_cfg, client_cfg) = configs();
        let (a, b) = pair();
        let mut s = TlsSession::server(&server_cfg).unwrap();
        let mut c = TlsSession::client(&client_cfg, "localhost").unwrap();
        handshake_both(&mut s, a.as_raw_fd(), &mut c, b.as_raw_fd());
        Connected {
            s,
            c,
            sock: (a, b),
            server_cfg,
        }
    }

    #[test]
    fn a_burst_larger_than_the_send_buffer_is_taken_in_parts_and_arrives_whole_in_order() {
        let Connected {
            mut s, mut c, sock, ..
        } = connected();
        let (sfd, cfd) = (sock.0.as_raw_fd(), sock.1.as_raw_fd());
        assert_eq!(s.version(), Some(rustls::ProtocolVersion::TLSv1_3));
        // 1 MiB in three slices, far past the socket's and rustls' buffers.
        let data: Vec<u8> = (0..(1 << 20)).map(|i| (i % 251) as u8).collect();
        let parts = [&data[..10], &data[10..300_000], &data[300_000..]];
        let mut sent = 0;
        let mut largest_take = 0;
        let got = read_n(&mut c, cfd, data.len(), || {
            // The server writes what the socket takes, as an outbox would.
            let mut off = sent;
            let mut slices: Vec<&[u8]> = Vec::new();
            for p in parts {
                if off >= p.len() {
                    off -= p.len();
                    continue;
                }
                slices.push(&p[off..]);
                off = 0;
            }
            if slices.is_empty() {
                s.drain(sfd).unwrap();
                return;
            }
            match s.send_vectored(sfd, &slices).unwrap() {
                Nb::Done(n) => {
                    sent += n;
                    largest_take = largest_take.max(n);
                }
                Nb::WouldBlock => {}
            }
        });
        assert_eq!(got.len(), data.len());
        assert!(got == data, "every byte, in order");
        assert!(
            largest_take <= SEND_BUFFER_LIMIT,
            "rustls takes at most its send buffer's bound per call: {largest_take}"
        );
    }

    #[test]
    fn close_notify_reads_as_the_end_and_a_non_tls_record_as_invalid_data() {
        let Connected {
            mut s,
            mut c,
            sock,
            server_cfg,
        } = connected();
        let (sfd, cfd) = (sock.0.as_raw_fd(), sock.1.as_raw_fd());
        assert_eq!(c.send_vectored(cfd, &[b"hello"]).unwrap(), Nb::Done(5));
        c.close_notify(cfd);
        let mut buf = BytesMut::with_capacity(64);
        let mut seen = Vec::new();
        loop {
            match s.recv_into(sfd, &mut buf).unwrap() {
                Nb::Done(0) => break,
                Nb::Done(_) => seen.extend_from_slice(&buf.split()),
                Nb::WouldBlock => panic!("close_notify was sent"),
            }
        }
        assert_eq!(seen, b"hello");

        let (a, b) = pair();
        let mut s = TlsSession::server(&server_cfg).unwrap();
        std::io::Write::write_all(&mut &b, b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let e = s.recv_into(a.as_raw_fd(), &mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
    }

    #[test]
    fn an_idle_server_session_holds_a_few_kib_once_its_handshake_is_done() {
        // The client runs on a thread of its own (blocking rustls), so this thread's
        // heap count is the server session's alone.
        let (server_cfg, client_cfg) = configs();
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let client = std::thread::spawn(move || {
            let conn = ClientConnection::new(client_cfg, "localhost".try_into().unwrap()).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, b);
            tls.write_all(b"ping").unwrap();
            let mut got = [0u8; 4];
            tls.read_exact(&mut got).unwrap();
            assert_eq!(&got, b"pong");
            // Held open until the server side is measured.
            let mut rest = Vec::new();
            let _ = tls.read_to_end(&mut rest);
        });
        let before = crate::rt::heap_count::held();
        let mut s = TlsSession::server(&server_cfg).unwrap();
        let fd = a.as_raw_fd();
        let mut buf = BytesMut::with_capacity(64);
        let got = loop {
            let _ = s.drain(fd).unwrap();
            match s.recv_into(fd, &mut buf).unwrap() {
                Nb::Done(n) if n > 0 => break buf.split(),
                Nb::Done(_) => panic!("client closed"),
                Nb::WouldBlock => std::thread::sleep(std::time::Duration::from_millis(1)),
            }
        };
        assert_eq!(&got[..], b"ping");
        assert_eq!(s.send_vectored(fd, &[b"pong"]).unwrap(), Nb::Done(4));
        assert!(s.drain(fd).unwrap());
        drop((got, buf));
        let held = crate::rt::heap_count::held() - before;
        eprintln!("an idle server TLS session holds {held} bytes");
        // monoio-rustls keeps 2 × 32 KiB per connection; this must stay well below
        // (rustls' 4 KiB receive buffer, keys and the session's state).
        assert!(held < 16 * 1024, "{held} bytes");
        s.close_notify(fd);
        drop(a);
        client.join().unwrap();
    }
}
