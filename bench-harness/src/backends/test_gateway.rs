//! Tests' stand-in for the gateway's end of a backend link: a blocking socket that
//! upgrades with the link subprotocol, sends masked link messages and decodes what the
//! backend sends back; and a backend served on an ephemeral port.
//!
//! Why it exists: every built-in link backend (the echo, the NPC world) is tested the
//! same way, as the gateway would drive it; one copy of that driver serves all of them.

use std::future::Future;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use monoio::net::{ListenerOpts, TcpStream as MonoStream};
use ringgate::proto::frame::{encode_frame_into, OpCode};
use ringgate::proto::link::{FromBackend, ToBackend, SUBPROTOCOL};
use ringgate::proto::ws::{CloseFrame, Decoder, Limits, Message, Role};

use super::listen::{accept_loop, bind_std, ReadBuf};

/// Serves `handler` on an ephemeral port of 127.0.0.1, on a thread of its own.
pub(crate) fn serve_ephemeral<H, F>(handler: H) -> SocketAddr
where
    H: Fn(MonoStream, ReadBuf) -> F + Send + 'static,
    F: Future<Output = ()> + 'static,
{
    let l = bind_std("127.0.0.1:0".parse().unwrap(), &ListenerOpts::new()).unwrap();
    let addr = l.local_addr().unwrap().as_socket().unwrap();
    let l = std::net::TcpListener::from(l);
    std::thread::spawn(move || accept_loop(l, handler));
    addr
}

pub(crate) const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

pub(crate) fn upgrade_request(protocols: Option<&str>) -> String {
    let mut r = format!(
        "GET /link HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\nX-Ringgate-Shard: 3\r\n"
    );
    if let Some(p) = protocols {
        r.push_str(&format!("Sec-WebSocket-Protocol: {p}\r\n"));
    }
    r.push_str("\r\n");
    r
}

/// The gateway's end of a link: a blocking socket, masked frames out, the server's
/// frames decoded by the library's client-side decoder.
pub(crate) struct Gateway {
    pub(crate) s: TcpStream,
    buf: BytesMut,
    decoder: Decoder,
}

impl Gateway {
    /// Upgrades with `protocols` offered; returns the response head too.
    pub(crate) fn connect(addr: SocketAddr, protocols: Option<&str>) -> (Gateway, String) {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(upgrade_request(protocols).as_bytes()).unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut c = [0u8; 1];
            if s.read(&mut c).unwrap() == 0 {
                break;
            }
            head.push(c[0]);
        }
        let gw = Gateway {
            s,
            buf: BytesMut::new(),
            decoder: Decoder::new(
                Role::Client,
                Limits {
                    max_message_bytes: 1 << 24,
                },
            ),
        };
        (gw, String::from_utf8(head).unwrap())
    }

    pub(crate) fn linked(addr: SocketAddr) -> Gateway {
        let (gw, head) = Gateway::connect(addr, Some(SUBPROTOCOL));
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        gw
    }

    /// Every message as one masked binary frame, all of them in one write.
    pub(crate) fn send(&mut self, msgs: &[Vec<u8>]) {
        let mut out = BytesMut::new();
        for m in msgs {
            encode_frame_into(&mut out, true, OpCode::Binary, m, Some([9, 8, 7, 6]));
        }
        self.s.write_all(&out).unwrap();
    }

    /// The next message from the backend; `None` once it closed the connection.
    pub(crate) fn next(&mut self) -> Option<Message> {
        loop {
            if let Some(m) = self.decoder.decode(&mut self.buf).unwrap() {
                return Some(m);
            }
            let mut chunk = [0u8; 64 * 1024];
            let n = self.s.read(&mut chunk).expect("a message within 5 s");
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next message, which must be a REPLY: its call, status and payload.
    pub(crate) fn reply(&mut self) -> (u64, u16, Bytes) {
        match self.next() {
            Some(Message::Binary(b)) => match FromBackend::decode(&b).unwrap() {
                FromBackend::Reply {
                    call,
                    status,
                    payload,
                } => (call, status, payload),
                other => panic!("not a reply: {other:?}"),
            },
            other => panic!("not a binary message: {other:?}"),
        }
    }

    /// The close frame the backend ends with, and that it then closes the socket.
    pub(crate) fn close_frame(&mut self) -> CloseFrame {
        let Some(Message::Close(Some(frame))) = self.next() else {
            panic!("no close frame with a code");
        };
        assert!(self.next().is_none(), "closed after the close frame");
        frame
    }
}

pub(crate) fn encode(m: ToBackend<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    m.encode(&mut out).unwrap();
    out
}
