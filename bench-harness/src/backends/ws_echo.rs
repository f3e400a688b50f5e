//! `ws-echo`: a plain WebSocket echo server, the "no gateway" baseline of the peers
//! comparison (and the upstream nginx proxies to).
//!
//! Why it exists: to say what ringgate costs, the same load must run against a server
//! that does only the WebSocket part. This one is built like the gateway so that the
//! difference is the gateway's work, not a different I/O model: thread-per-core monoio
//! with one SO_REUSEPORT listener per thread, the library's sans-IO codecs
//! (`proto::handshake`, `proto::ws`), and the gateway's readiness discipline (park on
//! readiness, `recv` into the thread's one read buffer, keep bytes only for a partial
//! frame, flush a coalescing `Outbox` with one gathering `sendmsg`). No auth: any path,
//! any (or no) credential is accepted. Binary and text messages are echoed as they came
//! (same opcode, payload verbatim), pings are answered, a client close is echoed.
//!
//! `ws_conn` holds that connection loop (generic over what a server does with the upgrade
//! and the messages; ws-echo is its simplest service, [`Echo`]), `listen` the listeners.

use std::io;
use std::net::SocketAddr;

use bytes::Bytes;
use monoio::net::TcpStream;
use ringgate::io::Outbox;
use ringgate::proto::frame::OpCode;
use ringgate::proto::handshake::{self, UpgradeRequest};

use super::listen::{serve_threads, ReadBuf};
use super::ws_conn::{push_frame, serve_ws, Fail, WsService, WsUpgrade};
use crate::cli::WsEchoArgs;

pub fn run(args: &WsEchoArgs) -> anyhow::Result<()> {
    let addr: SocketAddr = args.listen.parse()?;
    serve_threads("ws-echo", addr, args.threads, |stream, rbuf| async move {
        let _ = serve_conn(stream, rbuf).await;
    })
}

/// ws-echo's service: any upgrade is accepted (the first offered subprotocol, if any,
/// selected), data messages are echoed as they came.
pub(crate) struct Echo;

impl WsUpgrade for Echo {
    fn upgrade(
        req: &UpgradeRequest,
        _: &[u8],
        _: Option<SocketAddr>,
    ) -> Result<(Self, Bytes), Bytes> {
        Ok((Echo, handshake::switching_protocols(req)))
    }
}

impl WsService for Echo {
    fn on_data(&mut self, opcode: OpCode, payload: Bytes, out: &mut Outbox) -> Result<(), Fail> {
        push_frame(out, opcode, &[], payload);
        Ok(())
    }
}

/// ws-echo's connection.
pub(crate) async fn serve_conn(stream: TcpStream, rbuf: ReadBuf) -> io::Result<()> {
    serve_ws::<Echo>(stream, rbuf).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::listen::{accept_loop, bind_std};
    use bytes::BytesMut;
    use monoio::net::ListenerOpts;
    use ringgate::proto::frame::encode_frame_into;
    use std::io::{Read, Write};
    use std::time::Duration;

    const UPGRADE: &str = "GET /any/path?x=1 HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\n\r\n";

    fn frame(op: OpCode, payload: &[u8]) -> Vec<u8> {
        let mut b = BytesMut::new();
        encode_frame_into(&mut b, true, op, payload, Some([1, 2, 3, 4]));
        b.to_vec()
    }

    fn read_frame(s: &mut std::net::TcpStream) -> (u8, Vec<u8>) {
        let mut h = [0u8; 2];
        s.read_exact(&mut h).unwrap();
        assert_eq!(h[1] & 0x80, 0, "server frames are unmasked");
        let len = match h[1] & 0x7f {
            126 => {
                let mut l = [0u8; 2];
                s.read_exact(&mut l).unwrap();
                u16::from_be_bytes(l) as usize
            }
            127 => {
                let mut l = [0u8; 8];
                s.read_exact(&mut l).unwrap();
                u64::from_be_bytes(l) as usize
            }
            n => n as usize,
        };
        let mut p = vec![0u8; len];
        s.read_exact(&mut p).unwrap();
        (h[0], p)
    }

    #[test]
    fn echoes_over_tcp() {
        let l = bind_std("127.0.0.1:0".parse().unwrap(), &ListenerOpts::new()).unwrap();
        let addr = l.local_addr().unwrap().as_socket().unwrap();
        let l = std::net::TcpListener::from(l);
        std::thread::spawn(move || {
            accept_loop(l, |s, b| async move {
                let _ = serve_conn(s, b).await;
            })
        });
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        // The upgrade and a first frame in one segment.
        let mut first = UPGRADE.as_bytes().to_vec();
        first.extend(frame(OpCode::Binary, b"early"));
        s.write_all(&first).unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut c = [0u8; 1];
            s.read_exact(&mut c).unwrap();
            head.push(c[0]);
        }
        let head = String::from_utf8(head).unwrap();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");
        assert_eq!(read_frame(&mut s), (0x82, b"early".to_vec()));
        // Text, a large binary split across writes, a ping, then close.
        s.write_all(&frame(OpCode::Text, "héllo".as_bytes()))
            .unwrap();
        assert_eq!(read_frame(&mut s), (0x81, "héllo".as_bytes().to_vec()));
        let big: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let f = frame(OpCode::Binary, &big);
        s.write_all(&f[..50_000]).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        s.write_all(&f[50_000..]).unwrap();
        assert_eq!(read_frame(&mut s), (0x82, big));
        s.write_all(&frame(OpCode::Ping, b"p")).unwrap();
        assert_eq!(read_frame(&mut s), (0x8A, b"p".to_vec()));
        s.write_all(&frame(OpCode::Close, &1000u16.to_be_bytes()))
            .unwrap();
        assert_eq!(read_frame(&mut s), (0x88, 1000u16.to_be_bytes().to_vec()));
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
    }

    #[test]
    fn refuses_a_bad_upgrade() {
        let l = bind_std("127.0.0.1:0".parse().unwrap(), &ListenerOpts::new()).unwrap();
        let addr = l.local_addr().unwrap().as_socket().unwrap();
        let l = std::net::TcpListener::from(l);
        std::thread::spawn(move || {
            accept_loop(l, |s, b| async move {
                let _ = serve_conn(s, b).await;
            })
        });
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
        let mut got = String::new();
        s.read_to_string(&mut got).unwrap();
        assert!(got.starts_with("HTTP/1.1 400"), "{got}");
    }
}
