//! A link backend driven step by step from a test: every event the gateway sends
//! arrives on a channel, and the test sends actions back (on the newest link
//! connection). Pings are answered. For tests that script a conversation (shortcuts,
//! calls to clients) rather than a fixed reply per path.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use ringgate::proto::frame::{encode_frame, OpCode};
use ringgate::proto::link::{FromBackend, ToBackend};
use ringgate::proto::ws::{Decoder, Limits, Message, Role};

/// An event from the gateway, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Open {
        session: u64,
        session_id: String,
        roles: String,
    },
    Request {
        session: u64,
        call: u64,
        path: String,
        payload: Vec<u8>,
    },
    Closed {
        session: u64,
    },
    ClientAnswer {
        call: u64,
        code: u8,
        payload: Vec<u8>,
    },
    Away {
        session: u64,
    },
    Resumed {
        session: u64,
    },
}

pub struct ScriptedLink {
    pub addr: SocketAddr,
    events: Receiver<Event>,
    writer: Arc<Mutex<Option<TcpStream>>>,
}

impl ScriptedLink {
    pub fn start() -> ScriptedLink {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, events) = channel();
        let writer = Arc::new(Mutex::new(None));
        let w = writer.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let (tx, w) = (tx.clone(), w.clone());
                std::thread::spawn(move || serve(stream, tx, w));
            }
        });
        ScriptedLink {
            addr,
            events,
            writer,
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/link", self.addr)
    }

    /// The next event (fails the test after 5 s).
    pub fn next(&self) -> Event {
        self.events
            .recv_timeout(Duration::from_secs(5))
            .expect("the gateway sent the link nothing for 5 s")
    }

    /// Skips events until one matches.
    pub fn until<T>(&self, mut f: impl FnMut(Event) -> Option<T>) -> T {
        loop {
            if let Some(t) = f(self.next()) {
                return t;
            }
        }
    }

    /// The next REQUEST for `path`: (session, call, payload).
    pub fn request(&self, path: &str) -> (u64, u64, Vec<u8>) {
        self.until(|e| match e {
            Event::Request {
                session,
                call,
                path: p,
                payload,
            } if p == path => Some((session, call, payload)),
            _ => None,
        })
    }

    /// Sends an action on the newest link connection.
    pub fn send(&self, action: FromBackend) {
        let mut body = Vec::new();
        action.encode(&mut body);
        let frame = encode_frame(OpCode::Binary, &body, None);
        let mut w = self.writer.lock().unwrap();
        w.as_mut()
            .expect("no link connection yet")
            .write_all(&frame)
            .unwrap();
    }
}

fn serve(mut stream: TcpStream, tx: Sender<Event>, writer: Arc<Mutex<Option<TcpStream>>>) {
    let Some((_, rest)) = super::link::accept_link(&mut stream) else {
        return;
    };
    let mut chunk = [0u8; 8192];
    *writer.lock().unwrap() = Some(stream.try_clone().unwrap());
    let mut rbuf = BytesMut::from(&rest[..]);
    let mut dec = Decoder::new(Role::Server, Limits::default());
    loop {
        while let Ok(Some(msg)) = dec.decode(&mut rbuf) {
            let b = match msg {
                Message::Binary(b) => b,
                Message::Ping(p) => {
                    let pong = encode_frame(OpCode::Pong, &p, None);
                    if let Some(w) = writer.lock().unwrap().as_mut() {
                        let _ = w.write_all(&pong);
                    }
                    continue;
                }
                _ => continue,
            };
            let e = match ToBackend::decode(&b).expect("ringgate sends valid link messages") {
                ToBackend::Open {
                    session,
                    session_id,
                    roles,
                    ..
                } => Event::Open {
                    session,
                    session_id: session_id.into(),
                    roles: roles.into(),
                },
                ToBackend::Request {
                    session,
                    call,
                    path,
                    payload,
                    ..
                } => Event::Request {
                    session,
                    call,
                    path: path.into(),
                    payload: payload.to_vec(),
                },
                ToBackend::Closed { session } => Event::Closed { session },
                ToBackend::Away { session } => Event::Away { session },
                ToBackend::Resumed { session } => Event::Resumed { session },
                ToBackend::RawOpen { .. } | ToBackend::Message { .. } => {
                    panic!("the scripted link serves no raw routes")
                }
                ToBackend::ClientAnswer {
                    call,
                    code,
                    payload,
                } => Event::ClientAnswer {
                    call,
                    code,
                    payload: payload.to_vec(),
                },
            };
            if tx.send(e).is_err() {
                return;
            }
        }
        let n = stream.read(&mut chunk).unwrap_or(0);
        if n == 0 {
            return;
        }
        rbuf.extend_from_slice(&chunk[..n]);
    }
}
