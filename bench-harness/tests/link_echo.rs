//! `ringgate-bench echo-backend --link-listen` as the gateway meets it: one process
//! serving the HTTP echo and the backend link side by side (the unit tests in
//! `src/backends/link_echo.rs` cover the link's rules; this checks the command line
//! wires both up).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use ringgate::proto::frame::{encode_frame_into, OpCode};
use ringgate::proto::link::{FromBackend, ToBackend, SUBPROTOCOL};
use ringgate::proto::ws::{Decoder, Limits, Message, Role};

const BENCH: &str = env!("CARGO_BIN_EXE_ringgate-bench");

/// A child process killed (by its own pid) when the test ends, pass or fail.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn connect(addr: SocketAddr) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(s) => {
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                return s;
            }
            Err(e) => assert!(Instant::now() < deadline, "nothing listens on {addr}: {e}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads until `buf` holds a complete head; returns its length.
fn read_head(s: &mut TcpStream, buf: &mut Vec<u8>) -> usize {
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "closed before a complete head");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[test]
fn echo_backend_serves_http_and_the_link_side_by_side() {
    let http = free_addr();
    let link = free_addr();
    let _echo = Reaped(
        Command::new(BENCH)
            .args(["echo-backend", "--threads", "1", "--listen"])
            .arg(http.to_string())
            .arg("--link-listen")
            .arg(link.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn echo-backend"),
    );

    // HTTP, as before.
    let mut s = connect(http);
    s.write_all(
        b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
    )
    .unwrap();
    let mut got = String::new();
    s.read_to_string(&mut got).unwrap();
    assert!(
        got.starts_with("HTTP/1.1 200 OK\r\n") && got.ends_with("\r\n\r\nhi"),
        "{got}"
    );

    // The link: upgrade with the subprotocol, then a session, an event and a request in
    // one write; the only answer is the request's.
    let mut s = connect(link);
    s.write_all(
        format!(
            "GET /link HTTP/1.1\r\nHost: {link}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: {SUBPROTOCOL}\r\nX-Ringgate-Shard: 0\r\n\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    let mut buf = Vec::new();
    let head_len = read_head(&mut s, &mut buf);
    let head = std::str::from_utf8(&buf[..head_len]).unwrap();
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(
        head.contains(&format!("\r\nSec-WebSocket-Protocol: {SUBPROTOCOL}\r\n")),
        "{head}"
    );

    let mut out = BytesMut::new();
    let mut msg = Vec::new();
    for m in [
        ToBackend::Open {
            session: 1,
            session_id: "s",
            account_id: "a",
            roles: "user",
        },
        ToBackend::Request {
            session: 1,
            call: 0,
            message_id: 1,
            flags: 0x10,
            path: "/echo",
            payload: b"event",
        },
        ToBackend::Request {
            session: 1,
            call: 42,
            message_id: 2,
            flags: 0,
            path: "/echo",
            payload: b"{\"x\":1}",
        },
    ] {
        msg.clear();
        m.encode(&mut msg).unwrap();
        encode_frame_into(&mut out, true, OpCode::Binary, &msg, Some([1, 2, 3, 4]));
    }
    s.write_all(&out).unwrap();

    let mut rbuf = BytesMut::from(&buf[head_len..]);
    let mut decoder = Decoder::new(Role::Client, Limits::default());
    let reply = loop {
        if let Some(m) = decoder.decode(&mut rbuf).unwrap() {
            break m;
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "link closed before the reply");
        rbuf.extend_from_slice(&chunk[..n]);
    };
    let Message::Binary(reply) = reply else {
        panic!("not a binary message: {reply:?}");
    };
    assert_eq!(
        FromBackend::decode(&reply).unwrap(),
        FromBackend::Reply {
            call: 42,
            status: 200,
            payload: Bytes::from_static(b"{\"x\":1}"),
        }
    );
}
