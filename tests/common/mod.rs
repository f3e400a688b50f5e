//! Shared fixtures for the integration tests: a real HTTP backend on 127.0.0.1 that
//! records what it receives, a gateway started on free ports, token minting, and a
//! monoio runtime to drive `ringgate::client` in.

#![allow(dead_code)]

pub mod link;
pub mod process;
pub mod push;
pub mod scripted_link;
pub mod tempdir;
pub mod tls;
pub mod tools;

use std::future::Future;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ringgate::client::{Client, ConnectOptions, Manifest, TokenVia};
use ringgate::{Config, Gateway};

pub const SECRET: &str = "integration-test-secret-0123456789abcdef";

/// One request as the backend saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A keep-alive HTTP/1.1 backend with behaviour chosen by path:
/// `/echo*` → 200 + body; `/status/N` → status N; `/delay/MS` → waits MS, then 200 +
/// body; `/big/N` → 200 + N bytes (`i % 251`); `*/meta/*` (GET) → 200
/// `{"path":"<path>"}` (JSON, as Bannou's meta endpoints answer: its client SDK
/// parses it); anything else → 200 `ok`.
pub struct Backend {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<Recorded>>>,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
}

impl Backend {
    pub fn start() -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let rec = requests.clone();
        let accepted: Arc<std::sync::atomic::AtomicUsize> = Arc::default();
        let count = accepted.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let rec = rec.clone();
                std::thread::spawn(move || serve_backend_conn(conn, rec));
            }
        });
        Backend {
            addr,
            requests,
            accepted,
        }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The recorded requests whose path is `path`.
    pub fn seen(&self, path: &str) -> Vec<Recorded> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }
}

fn serve_backend_conn(mut conn: TcpStream, rec: Arc<Mutex<Vec<Recorded>>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        // Read one request head.
        let (req, head_len, content_length) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut r = httparse::Request::new(&mut headers);
            if let Ok(httparse::Status::Complete(n)) = r.parse(&buf) {
                let hs: Vec<(String, String)> = r
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_string(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                let cl = hs
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .map(|(_, v)| v.trim().parse::<usize>().unwrap())
                    .unwrap_or(0);
                break (
                    Recorded {
                        method: r.method.unwrap().to_string(),
                        path: r.path.unwrap().to_string(),
                        headers: hs,
                        body: Vec::new(),
                    },
                    n,
                    cl,
                );
            }
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        while buf.len() < head_len + content_length {
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let mut req = req;
        req.body = buf[head_len..head_len + content_length].to_vec();
        buf.drain(..head_len + content_length);
        rec.lock().unwrap().push(req.clone());

        let (status, body): (u16, Vec<u8>) = if let Some(code) = req.path.strip_prefix("/status/") {
            (code.parse().unwrap(), b"status body".to_vec())
        } else if let Some(ms) = req.path.strip_prefix("/delay/") {
            std::thread::sleep(Duration::from_millis(ms.parse().unwrap()));
            (200, req.body.clone())
        } else if req.path.contains("/meta/") {
            (
                200,
                serde_json::json!({ "path": req.path })
                    .to_string()
                    .into_bytes(),
            )
        } else if let Some(n) = req.path.strip_prefix("/big/") {
            let n: usize = n.parse().unwrap();
            (200, (0..n).map(|i| (i % 251) as u8).collect())
        } else if req.path.starts_with("/echo") {
            (200, req.body.clone())
        } else {
            (200, b"ok".to_vec())
        };
        let head = format!(
            "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nContent-Type: application/json\r\n\r\n",
            body.len()
        );
        // One write: a head and a body written apart meet Nagle and the gateway's
        // delayed ACK, 40 ms per answer.
        let mut answer = head.into_bytes();
        answer.extend_from_slice(&body);
        if conn.write_all(&answer).is_err() {
            return;
        }
    }
}

/// The standard test config: two shards on free ports, services on `backend`, plus a
/// service whose port refuses connections. `extra_server` lines go into `[server]`,
/// `extra_auth` into `[auth]`.
pub fn config(backend: &Backend, extra_server: &str, extra_auth: &str) -> Config {
    Config::from_toml_str(&config_text(backend, extra_server, extra_auth), &[])
        .expect("test config is valid")
}

/// The text of [`config`].
pub fn config_text(backend: &Backend, extra_server: &str, extra_auth: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
path = "/connect"
shards = 2
admin_listen = "127.0.0.1:0"
max_message_bytes = 4096
shutdown_grace_ms = 2000
drain_window_ms = 400
{extra_server}
[auth]
hs256_secret = "{SECRET}"
{extra_auth}
[backend]
request_timeout_ms = 1000
connect_timeout_ms = 1000
[[services]]
name = "account"
url = "{url}"
endpoints = [
  {{ path = "/echo", roles = ["user"] }},
  {{ path = "/echo/admin", roles = ["admin"] }},
  {{ path = "/echo/public", roles = [] }},
  {{ path = "/status/200", roles = ["user"] }},
  {{ path = "/status/400", roles = ["user"] }},
  {{ path = "/status/401", roles = ["user"] }},
  {{ path = "/status/403", roles = ["user"] }},
  {{ path = "/status/404", roles = ["user"] }},
  {{ path = "/status/409", roles = ["user"] }},
  {{ path = "/status/500", roles = ["user"] }},
  {{ path = "/delay/300", roles = ["user"] }},
  {{ path = "/delay/10", roles = ["user"] }},
  {{ path = "/delay/3000", roles = ["user"] }},
  {{ path = "/big/8388608", roles = ["user"] }},
]
[[services]]
name = "small"
url = "{url}"
max_request_bytes = 100
endpoints = [ {{ path = "/echo/small", roles = ["user"] }} ]
[[services]]
name = "dead"
url = "http://127.0.0.1:1"
endpoints = [ {{ path = "/dead/call", roles = ["user"] }} ]
"#,
        url = backend.url()
    )
}

/// Starts a gateway and waits until it is ready.
pub fn gateway(config: Config) -> Gateway {
    let g = Gateway::start(config).expect("gateway starts");
    for _ in 0..200 {
        if g.is_ready() {
            return g;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("gateway never became ready");
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An HS256 token signed with [`SECRET`].
pub fn token(sub: &str, roles: &[&str], sid: Option<&str>, exp: u64) -> String {
    let mut claims = serde_json::json!({ "sub": sub, "roles": roles, "exp": exp });
    if let Some(sid) = sid {
        claims["sid"] = sid.into();
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// A valid token for a user with `roles`, expiring in an hour.
pub fn user_token(roles: &[&str]) -> String {
    token("account-1", roles, None, unix_now() + 3600)
}

/// Runs `f` on a fresh monoio runtime (io_uring where available), failing after 20 s.
pub fn run<F: Future>(f: F) -> F::Output {
    let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
        .unwrap();
    rt.block_on(async {
        monoio::time::timeout(Duration::from_secs(20), f)
            .await
            .expect("test timed out")
    })
}

/// Connects with a bearer token in the header and reads the initial manifest.
pub async fn connect(g: &Gateway, token: &str) -> (Client, Manifest) {
    connect_via(g, token, TokenVia::Header).await
}

/// Resumes a session: upgrades with `Authorization: Reconnect <token>` (or, with
/// `query`, `?reconnect=<token>`) and reads the first message, the manifest.
pub async fn resume(g: &Gateway, token: &str, query: bool) -> (Client, Manifest) {
    let opts = if query {
        ConnectOptions {
            path: format!("/connect?reconnect={token}"),
            ..ConnectOptions::default()
        }
    } else {
        ConnectOptions {
            extra_headers: vec![("Authorization".into(), format!("Reconnect {token}"))],
            ..ConnectOptions::default()
        }
    };
    let mut c = Client::connect(g.addr, &opts)
        .await
        .expect("resume upgrade");
    let m = c
        .manifest()
        .await
        .expect("the first message is the manifest");
    (c, m)
}

pub async fn connect_via(g: &Gateway, token: &str, via: TokenVia) -> (Client, Manifest) {
    connect_at(g.addr, token, via).await
}

/// Connects to the gateway at `addr` (one started as a process, say) with a bearer
/// token and reads the initial manifest.
pub async fn connect_at(addr: SocketAddr, token: &str, via: TokenVia) -> (Client, Manifest) {
    let opts = ConnectOptions {
        token: Some(token.to_string()),
        token_via: via,
        ..ConnectOptions::default()
    };
    let mut c = Client::connect(addr, &opts).await.expect("upgrade");
    let m = c.manifest().await.expect("manifest");
    (c, m)
}

/// Sends a raw HTTP request and returns the status code of the answer. (A read
/// interrupted by a signal — the gateway's threads share this process — is retried.)
pub fn raw_status(addr: SocketAddr, request: &str) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut r = httparse::Response::new(&mut headers);
        if let Ok(httparse::Status::Complete(_)) = r.parse(&buf) {
            return r.code.unwrap();
        }
        match s.read(&mut chunk) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Ok(0) | Err(_) => panic!("no HTTP response; got {:?}", String::from_utf8_lossy(&buf)),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A well-formed upgrade request for `path` with extra header lines.
pub fn upgrade_request(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// A client on a plain blocking socket that writes exactly the bytes a test gives it
/// and reads the server's frames one by one: for tests that need a client no library
/// would be (one that sends a frame with its upgrade request, never answers a ping,
/// or never reads).
pub struct RawClient {
    pub stream: TcpStream,
    buf: bytes::BytesMut,
    decoder: ringgate::proto::ws::Decoder,
}

impl RawClient {
    /// Connects and writes `upgrade` followed by `after` in one write; checks the
    /// `101` (and keeps whatever came after its head).
    pub fn upgrade(addr: SocketAddr, token: &str, after: &[u8]) -> RawClient {
        Self::upgrade_with(addr, &format!("Authorization: Bearer {token}\r\n"), after).0
    }

    /// [`RawClient::upgrade`] with the header lines `headers` (the token's among them),
    /// returning the `101`'s head as text too.
    pub fn upgrade_with(addr: SocketAddr, headers: &str, after: &[u8]) -> (RawClient, String) {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_nodelay(true).unwrap();
        let mut bytes = upgrade_request("/connect", headers).into_bytes();
        bytes.extend_from_slice(after);
        (&stream).write_all(&bytes).unwrap();
        let mut c = RawClient {
            stream,
            buf: bytes::BytesMut::new(),
            decoder: ringgate::proto::ws::Decoder::new(
                ringgate::proto::ws::Role::Client,
                ringgate::proto::ws::Limits {
                    max_message_bytes: 64 << 20,
                },
            ),
        };
        let head_len = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut r = httparse::Response::new(&mut headers);
            if let Ok(httparse::Status::Complete(n)) = r.parse(&c.buf) {
                assert_eq!(r.code, Some(101), "{:?}", String::from_utf8_lossy(&c.buf));
                break n;
            }
            assert!(c.fill(Duration::from_secs(5)), "no 101");
        };
        let head = c.buf.split_to(head_len);
        (c, String::from_utf8_lossy(&head).into_owned())
    }

    /// Reads more bytes; false on timeout or EOF. (A read interrupted by a signal —
    /// the gateway's threads share this process — is retried.)
    fn fill(&mut self, timeout: Duration) -> bool {
        self.stream.set_read_timeout(Some(timeout)).unwrap();
        let mut chunk = [0u8; 65536];
        loop {
            match self.stream.read(&mut chunk) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Ok(0) | Err(_) => return false,
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return true;
                }
            }
        }
    }

    /// The next message from the server within `timeout`, or `None`.
    pub fn next(&mut self, timeout: Duration) -> Option<ringgate::proto::ws::Message> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(m) = self
                .decoder
                .decode(&mut self.buf)
                .expect("server frames are valid")
            {
                return Some(m);
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() || !self.fill(left) {
                return None;
            }
        }
    }

    /// Sends bytes as they are.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }
}

/// Whether `m` is a push carrying a capability manifest.
pub fn is_manifest(m: &ringgate::proto::ws::Message) -> bool {
    match m {
        ringgate::proto::ws::Message::Binary(b) if b.len() > 31 && b[0] & 0x10 != 0 => {
            serde_json::from_slice::<serde_json::Value>(&b[31..])
                .map(|j| j["eventName"] == "connect.capability-manifest")
                .unwrap_or(false)
        }
        _ => false,
    }
}
