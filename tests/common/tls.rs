//! Certificates for the TLS tests, made fresh per test with rcgen: a CA, and leaf
//! certificates for `localhost` / 127.0.0.1 (or other names) it signs, written as PEM
//! files (the gateway reads files; so do openssl and Python). And `TlsFront`, a TLS
//! terminator on std threads in front of a plain test backend (the HTTP `Backend` or
//! the `LinkBackend`), so an `https://` or `wss://` backend behaves exactly as the
//! plain one does.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection};

use super::tempdir;

/// A CA and the directory its files are written to.
pub struct TestPki {
    pub dir: tempdir::Dir,
    ca: CertifiedIssuer<'static, KeyPair>,
}

/// The files of one leaf certificate.
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestPki {
    pub fn new() -> TestPki {
        TestPki::named("ringgate test CA")
    }

    /// A CA with common name `cn` (a CA a verifier does not know must not share its
    /// name with one it does, or it is taken for that one with a bad signature).
    pub fn named(cn: &str) -> TestPki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, cn);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let dir = tempdir::Dir::new("ringgate-tls");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        TestPki { dir, ca }
    }

    /// The CA certificate's file.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A leaf for `localhost` and 127.0.0.1 with common name `cn`, written to
    /// `<name>.pem` and `<name>.key` (over any earlier ones).
    pub fn leaf(&self, name: &str, cn: &str) -> Leaf {
        self.leaf_for(name, cn, &["localhost", "127.0.0.1"])
    }

    /// A leaf for the names (DNS names or IP addresses) `sans`, as [`TestPki::leaf`].
    pub fn leaf_for(&self, name: &str, cn: &str, sans: &[&str]) -> Leaf {
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let leaf = Leaf {
            cert: self.dir.path().join(format!("{name}.pem")),
            key: self.dir.path().join(format!("{name}.key")),
        };
        std::fs::write(&leaf.cert, cert.pem()).unwrap();
        std::fs::write(&leaf.key, key.serialize_pem()).unwrap();
        leaf
    }
}

/// The `[tls]` section serving `leaf`.
pub fn tls_section(leaf: &Leaf) -> String {
    format!(
        "[tls]\ncert_file = {:?}\nkey_file = {:?}\n",
        path_str(&leaf.cert),
        path_str(&leaf.key)
    )
}

/// The `[tls]` section naming `ca_file` (for `https://` backends and `wss://` links).
pub fn ca_section(ca_file: &Path) -> String {
    format!("[tls]\nca_file = {:?}\n", path_str(ca_file))
}

/// A TLS terminator in front of a plain backend at `target`: every connection it
/// accepts gets a TLS session (rustls, TLS 1.3 and 1.2) with `leaf`'s certificate and a
/// plain connection to `target`, and bytes are relayed both ways (two threads per
/// connection; the session behind a mutex).
pub struct TlsFront {
    pub addr: SocketAddr,
    /// Handshakes completed, and the SNI name each client sent.
    pub sni: Arc<Mutex<Vec<Option<String>>>>,
    /// TLS errors (an alert from a client that refused the certificate, …).
    pub errors: Arc<Mutex<Vec<String>>>,
    /// Connections accepted.
    pub accepted: Arc<AtomicUsize>,
}

impl TlsFront {
    pub fn start(target: SocketAddr, leaf: &Leaf) -> TlsFront {
        TlsFront::start_with(target, leaf, None)
    }

    /// A front slow to read: a small receive buffer (4 KiB asked), and on each
    /// connection a pause of `stall` once 64 KiB came, so a writer sending much at once
    /// meets a full socket.
    pub fn start_slow(target: SocketAddr, leaf: &Leaf, stall: std::time::Duration) -> TlsFront {
        TlsFront::start_with(target, leaf, Some(stall))
    }

    fn start_with(target: SocketAddr, leaf: &Leaf, stall: Option<std::time::Duration>) -> TlsFront {
        let certs = CertificateDer::pem_file_iter(&leaf.cert)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(&leaf.key).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = Arc::new(
            ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .unwrap(),
        );
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        if stall.is_some() {
            // (Inherited by the accepted sockets.)
            socket.set_recv_buffer_size(4096).unwrap();
        }
        let bind: SocketAddr = "127.0.0.1:0".parse().unwrap();
        socket.bind(&bind.into()).unwrap();
        socket.listen(128).unwrap();
        let listener: TcpListener = socket.into();
        let addr = listener.local_addr().unwrap();
        let front = TlsFront {
            addr,
            sni: Arc::default(),
            errors: Arc::default(),
            accepted: Arc::default(),
        };
        let (sni, errors, accepted) = (
            front.sni.clone(),
            front.errors.clone(),
            front.accepted.clone(),
        );
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                accepted.fetch_add(1, Ordering::SeqCst);
                let (config, sni, errors) = (config.clone(), sni.clone(), errors.clone());
                std::thread::spawn(move || relay(conn, target, config, sni, errors, stall));
            }
        });
        front
    }

    /// Handshakes completed so far.
    pub fn handshakes(&self) -> usize {
        self.sni.lock().unwrap().len()
    }

    pub fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap().clone()
    }
}

/// Writes what the session owes the client.
fn write_out(tls: &mut ServerConnection, to: &mut TcpStream) -> std::io::Result<()> {
    while tls.wants_write() {
        tls.write_tls(to)?;
    }
    Ok(())
}

fn relay(
    client: TcpStream,
    target: SocketAddr,
    config: Arc<ServerConfig>,
    sni: Arc<Mutex<Vec<Option<String>>>>,
    errors: Arc<Mutex<Vec<String>>>,
    mut stall: Option<std::time::Duration>,
) {
    let Ok(up) = TcpStream::connect(target) else {
        return;
    };
    let _ = up.set_nodelay(true);
    let _ = client.set_nodelay(true);
    let mut session = ServerConnection::new(config).unwrap();
    session.set_buffer_limit(None);
    let tls = Arc::new(Mutex::new(session));
    // Backend → client: encrypt what the backend sends.
    let (mut to_client, mut from_up, t) = (
        client.try_clone().unwrap(),
        up.try_clone().unwrap(),
        tls.clone(),
    );
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from_up.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let mut s = t.lock().unwrap();
            if s.writer().write_all(&buf[..n]).is_err()
                || write_out(&mut s, &mut to_client).is_err()
            {
                break;
            }
        }
        let mut s = t.lock().unwrap();
        s.send_close_notify();
        let _ = write_out(&mut s, &mut to_client);
        let _ = to_client.shutdown(Shutdown::Write);
    });
    // Client → backend: decrypt what the client sends.
    let (mut from_client, mut to_client, mut to_up) = (client.try_clone().unwrap(), client, up);
    let mut buf = vec![0u8; 64 * 1024];
    let mut plain = Vec::new();
    let mut handshaking = true;
    let mut relayed = 0;
    'relay: loop {
        let n = match from_client.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut s = tls.lock().unwrap();
        let mut input = &buf[..n];
        let mut closed = false;
        while !input.is_empty() {
            if s.read_tls(&mut input).is_err() {
                break 'relay;
            }
            match s.process_new_packets() {
                Ok(state) => closed |= state.peer_has_closed(),
                Err(e) => {
                    errors.lock().unwrap().push(e.to_string());
                    let _ = write_out(&mut s, &mut to_client);
                    break 'relay;
                }
            }
            let mut chunk = [0u8; 16 * 1024];
            loop {
                match s.reader().read(&mut chunk) {
                    Ok(0) => break,
                    Ok(k) => plain.extend_from_slice(&chunk[..k]),
                    Err(_) => break,
                }
            }
        }
        if handshaking && !s.is_handshaking() {
            handshaking = false;
            sni.lock()
                .unwrap()
                .push(s.server_name().map(str::to_string));
        }
        let _ = write_out(&mut s, &mut to_client);
        drop(s);
        relayed += plain.len();
        if relayed > 64 * 1024 {
            if let Some(pause) = stall.take() {
                std::thread::sleep(pause);
            }
        }
        if to_up.write_all(&plain).is_err() {
            break;
        }
        plain.clear();
        if closed {
            break;
        }
    }
    let _ = to_up.shutdown(Shutdown::Write);
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}
