//! A scripted link backend (docs/LINK.md) on std threads and the library's sans-IO
//! codecs, for the integration tests of the link (`tests/link.rs`) and of the push
//! plane's link actions (`tests/link_push.rs`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use ringgate::proto::frame::{encode_frame, OpCode};
use ringgate::proto::link::{FromBackend, ToBackend};
use ringgate::proto::ws::{Decoder, Limits, Message, Role};

/// What the backend saw, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Open {
        session: u64,
        session_id: String,
        account_id: String,
        roles: String,
    },
    Request {
        session: u64,
        call: u64,
        flags: u8,
        path: String,
        payload: Vec<u8>,
    },
    Closed {
        session: u64,
    },
    /// AWAY (`announce_all` services): the session's client dropped.
    Away {
        session: u64,
    },
    /// RESUMED (`announce_all` services): the session's client came back.
    Resumed {
        session: u64,
    },
    /// RAW_OPEN: a client on a raw route.
    RawOpen {
        session: u64,
        path: String,
        session_id: String,
        roles: String,
    },
    /// MESSAGE: a raw route's client message (echoed back with the same flags; the
    /// text "close-me" is answered with CLOSE 4000 "bye").
    Message {
        session: u64,
        flags: u8,
        payload: Vec<u8>,
    },
}

/// A scripted link backend. Paths: `/echo` (reply 200 with the payload), `/status/N`
/// (reply N), `/slow/MS` (reply after MS, from another thread), `/push` (SEND the
/// payload to the session, then reply), `/kick` (CLOSE the session with 4002),
/// `/garbage` (an unknown action kind), `/freeze` (go silent: read and answer nothing,
/// pings included), anything else: no reply. Pings are answered (and counted) unless
/// `mute_pings` is set.
pub struct LinkBackend {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub connections: Arc<AtomicUsize>,
    /// Link connections not yet closed.
    pub open: Arc<AtomicUsize>,
    /// The `X-Ringgate-Shard` of every link upgrade.
    pub shards: Arc<Mutex<Vec<String>>>,
    /// Pings received, on any connection.
    pub pings: Arc<AtomicUsize>,
    /// While set, pings get no pong (a host gone silent, as seen from the gateway).
    pub mute_pings: Arc<AtomicBool>,
    /// Every link connection: its shard, its writer, and what it saw.
    pub conns: Arc<Mutex<Vec<Arc<LinkConn>>>>,
}

/// One link connection as the backend holds it.
pub struct LinkConn {
    /// Its `X-Ringgate-Shard`.
    pub shard: String,
    writer: Arc<Mutex<TcpStream>>,
    /// What this connection saw, in order.
    pub seen: Mutex<Vec<Seen>>,
}

impl LinkConn {
    /// Sends `actions` in one write.
    pub fn act(&self, actions: &[FromBackend]) {
        let mut out = Vec::new();
        for a in actions {
            let mut body = Vec::new();
            a.encode(&mut body);
            out.extend_from_slice(&encode_frame(OpCode::Binary, &body, None));
        }
        self.writer.lock().unwrap().write_all(&out).unwrap();
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl LinkBackend {
    pub fn start() -> LinkBackend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let shards = Arc::new(Mutex::new(Vec::new()));
        let pings = Arc::new(AtomicUsize::new(0));
        let mute_pings = Arc::new(AtomicBool::new(false));
        let (s, n, o, sh) = (
            seen.clone(),
            connections.clone(),
            open.clone(),
            shards.clone(),
        );
        let (p, m) = (pings.clone(), mute_pings.clone());
        let conns: Arc<Mutex<Vec<Arc<LinkConn>>>> = Arc::default();
        let cs = conns.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                n.fetch_add(1, Ordering::SeqCst);
                o.fetch_add(1, Ordering::SeqCst);
                let (s, o, sh, cs) = (s.clone(), o.clone(), sh.clone(), cs.clone());
                let pings = Pings {
                    count: p.clone(),
                    mute: m.clone(),
                };
                std::thread::spawn(move || {
                    serve(stream, s, sh, cs, pings);
                    o.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        LinkBackend {
            addr,
            seen,
            connections,
            open,
            shards,
            pings,
            mute_pings,
            conns,
        }
    }

    /// The newest link connection of `shard`, once it is up (waits up to 5 s).
    pub fn conn(&self, shard: u16) -> Arc<LinkConn> {
        let t0 = Instant::now();
        loop {
            let found = self
                .conns
                .lock()
                .unwrap()
                .iter()
                .rev()
                .find(|c| c.shard == shard.to_string())
                .cloned();
            if let Some(c) = found {
                return c;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "no link from shard {shard}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Ends every link connection from the backend's side (the gateway redials).
    pub fn drop_connections(&self) {
        for c in self.conns.lock().unwrap().iter() {
            let _ = c.writer.lock().unwrap().shutdown(std::net::Shutdown::Both);
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/link", self.addr)
    }

    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn wait_for(&self, what: impl Fn(&[Seen]) -> bool) -> Vec<Seen> {
        let t0 = Instant::now();
        loop {
            let seen = self.seen();
            if what(&seen) {
                return seen;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "backend saw {seen:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The backend's ping counter and mute switch, for one connection's thread.
struct Pings {
    count: Arc<AtomicUsize>,
    mute: Arc<AtomicBool>,
}

fn serve(
    mut stream: TcpStream,
    seen: Arc<Mutex<Vec<Seen>>>,
    shards: Arc<Mutex<Vec<String>>>,
    conns: Arc<Mutex<Vec<Arc<LinkConn>>>>,
    pings: Pings,
) {
    let Some((shard, rest)) = accept_link(&mut stream) else {
        return;
    };
    shards.lock().unwrap().push(shard.clone());
    let mut chunk = [0u8; 4096];
    let writer = Arc::new(Mutex::new(stream.try_clone().unwrap()));
    let conn = Arc::new(LinkConn {
        shard,
        writer: writer.clone(),
        seen: Mutex::new(Vec::new()),
    });
    conns.lock().unwrap().push(conn.clone());
    let record = |e: Seen| {
        conn.seen.lock().unwrap().push(e.clone());
        seen.lock().unwrap().push(e);
    };
    let send = move |w: &Arc<Mutex<TcpStream>>, a: FromBackend| {
        let mut body = Vec::new();
        a.encode(&mut body);
        let frame = encode_frame(OpCode::Binary, &body, None);
        let _ = w.lock().unwrap().write_all(&frame);
    };
    let mut rbuf = BytesMut::from(&rest[..]);
    let mut dec = Decoder::new(Role::Server, Limits::default());
    loop {
        while let Ok(Some(msg)) = dec.decode(&mut rbuf) {
            let b = match msg {
                Message::Binary(b) => b,
                Message::Ping(p) => {
                    pings.count.fetch_add(1, Ordering::SeqCst);
                    if !pings.mute.load(Ordering::SeqCst) {
                        let pong = encode_frame(OpCode::Pong, &p, None);
                        let _ = writer.lock().unwrap().write_all(&pong);
                    }
                    continue;
                }
                _ => continue,
            };
            let m = ToBackend::decode(&b).expect("ringgate sends valid link messages");
            let (session, call, path, payload) = match m {
                ToBackend::Open {
                    session,
                    session_id,
                    account_id,
                    roles,
                } => {
                    record(Seen::Open {
                        session,
                        session_id: session_id.into(),
                        account_id: account_id.into(),
                        roles: roles.into(),
                    });
                    continue;
                }
                ToBackend::Closed { session } => {
                    record(Seen::Closed { session });
                    continue;
                }
                ToBackend::Away { session } => {
                    record(Seen::Away { session });
                    continue;
                }
                ToBackend::Resumed { session } => {
                    record(Seen::Resumed { session });
                    continue;
                }
                ToBackend::RawOpen {
                    session,
                    path,
                    session_id,
                    roles,
                    ..
                } => {
                    record(Seen::RawOpen {
                        session,
                        path: path.into(),
                        session_id: session_id.into(),
                        roles: roles.into(),
                    });
                    continue;
                }
                ToBackend::Message {
                    session,
                    flags,
                    payload,
                } => {
                    record(Seen::Message {
                        session,
                        flags,
                        payload: payload.to_vec(),
                    });
                    let action = if payload == b"close-me" {
                        FromBackend::Close {
                            session,
                            code: 4000,
                            reason: Bytes::from_static(b"bye"),
                        }
                    } else {
                        FromBackend::Send {
                            session,
                            flags,
                            payload: Bytes::copy_from_slice(payload),
                        }
                    };
                    send(&writer, action);
                    continue;
                }
                // This backend makes no client calls (CALL_CLIENT).
                ToBackend::ClientAnswer { .. } => continue,
                ToBackend::Request {
                    session,
                    call,
                    flags,
                    path,
                    payload,
                    ..
                } => {
                    record(Seen::Request {
                        session,
                        call,
                        flags,
                        path: path.into(),
                        payload: payload.to_vec(),
                    });
                    (
                        session,
                        call,
                        path.to_string(),
                        Bytes::copy_from_slice(payload),
                    )
                }
            };
            let reply = |status| FromBackend::Reply {
                call,
                status,
                payload: payload.clone(),
            };
            if call == 0 {
                // An event: the protocol forbids a reply.
            } else if path == "/echo" {
                send(&writer, reply(200));
            } else if let Some(code) = path.strip_prefix("/status/") {
                send(&writer, reply(code.parse().unwrap()));
            } else if let Some(ms) = path.strip_prefix("/slow/") {
                let (w, ms) = (writer.clone(), ms.parse().unwrap());
                let r = reply(200);
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(ms));
                    send(&w, r);
                });
            } else if path == "/push" {
                send(
                    &writer,
                    FromBackend::Send {
                        session,
                        flags: 0,
                        payload: payload.clone(),
                    },
                );
                send(&writer, reply(200));
            } else if path == "/kick" {
                send(
                    &writer,
                    FromBackend::Close {
                        session,
                        code: 4002,
                        reason: Bytes::from_static(b"kicked by test"),
                    },
                );
            } else if path == "/freeze" {
                // A host gone silent: no reply, no pong, nothing read any more.
                std::thread::sleep(Duration::from_secs(30));
                return;
            } else if path == "/garbage" {
                let frame = encode_frame(OpCode::Binary, &[0x7f, 1, 2], None);
                let _ = writer.lock().unwrap().write_all(&frame);
            }
        }
        rbuf.reserve(4096);
        let n = stream.read(&mut chunk).unwrap_or(0);
        if n == 0 {
            return;
        }
        rbuf.extend_from_slice(&chunk[..n]);
    }
}

/// Accepts a link's upgrade on `stream`: checks it asks for `ringgate-link.v1`, answers
/// 101 with the accept key and the subprotocol. Returns the shard the gateway named
/// (`X-Ringgate-Shard`) and the bytes that came after the request; none if the
/// connection closed first.
pub fn accept_link(stream: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let (key, head_len, shard) = loop {
        let n = stream.read(&mut chunk).unwrap_or(0);
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        if let Ok(httparse::Status::Complete(len)) = req.parse(&buf) {
            let h = |name: &str| {
                req.headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case(name))
                    .map(|h| String::from_utf8_lossy(h.value).into_owned())
            };
            assert_eq!(
                h("sec-websocket-protocol").as_deref(),
                Some("ringgate-link.v1")
            );
            let shard = h("x-ringgate-shard").expect("the shard is named");
            break (h("sec-websocket-key").unwrap(), len, shard);
        }
    };
    let accept = ringgate::proto::handshake::accept_key(&key);
    let resp = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: ringgate-link.v1\r\n\r\n"
    );
    stream.write_all(resp.as_bytes()).unwrap();
    Some((shard, buf[head_len..].to_vec()))
}

/// Calls `/push` on a link test backend (which pushes the payload back to the caller,
/// then replies): the push that came before the reply and the reply's code.
pub async fn push_through(
    c: &mut ringgate::client::Client,
    m: &ringgate::client::Manifest,
    payload: &[u8],
) -> (ringgate::proto::bannou::RequestHeader, Bytes, u8) {
    use ringgate::client::Incoming;
    let id = c
        .send_request(0, 0, 0, m.guid("/push").expect("/push listed"), payload)
        .await
        .expect("request sent");
    let mut pushed = None;
    loop {
        match c.next().await.expect("a message") {
            Incoming::Push(h, body) => pushed = Some((h, body)),
            Incoming::Response(h, _) if h.message_id == id => {
                let (ph, body) = pushed.expect("the push came before the reply");
                return (ph, body, h.code);
            }
            _ => {}
        }
    }
}
