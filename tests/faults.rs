//! Faults on real sockets: backends that die in the middle of requests and come back,
//! a link backend that dies while sessions hold subscriptions made through it, and a
//! client that vanishes without a FIN. (Elsewhere: a client that never reads —
//! `push.rs`, slow consumer; garbage after the upgrade — `edge.rs`; the reconnection
//! flow after a dropped connection with publishes in between — `resume.rs`; a drain
//! with a second process on the port — `drain.rs`.)

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::link::*;
use common::push::*;
use common::*;
use ringgate::client::{Client, ConnectOptions, Incoming};
use ringgate::config::Config;
use ringgate::proto::link::{Addr, FromBackend};
use serde_json::json;

/// An HTTP backend on `addr` that reads requests and, while `answer` is off, holds
/// them unanswered; `kill` closes every connection and the listener at once.
struct Fragile {
    stop: Arc<AtomicBool>,
    held: Arc<Mutex<Vec<TcpStream>>>,
    requests: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Fragile {
    fn start(addr: SocketAddr, answer: bool) -> Fragile {
        let listener = TcpListener::bind(addr).expect("bind the backend's port");
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let held = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(AtomicUsize::new(0));
        let (s, h, r) = (stop.clone(), held.clone(), requests.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (s, h, r) = (s.clone(), h.clone(), r.clone());
                        conn.set_nonblocking(false).unwrap();
                        h.lock().unwrap().push(conn.try_clone().unwrap());
                        std::thread::spawn(move || serve(conn, answer, &s, &r));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Fragile {
            stop,
            held,
            requests,
            thread: Some(thread),
        }
    }

    /// The process dies: its sockets and its listener close.
    fn kill(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for c in self.held.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads HTTP/1.1 requests (Content-Length bodies) and answers each with 200 and its
/// body, or, with `answer` off, never.
fn serve(mut conn: TcpStream, answer: bool, stop: &AtomicBool, requests: &AtomicUsize) {
    conn.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    while !stop.load(Ordering::SeqCst) {
        match conn.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                continue
            }
            Err(_) => return,
        }
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            let Ok(httparse::Status::Complete(head)) = req.parse(&buf) else {
                break;
            };
            let len = req
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() < head + len {
                break;
            }
            let body = buf[head..head + len].to_vec();
            buf.drain(..head + len);
            requests.fetch_add(1, Ordering::SeqCst);
            if answer {
                let mut resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )
                .into_bytes();
                resp.extend_from_slice(&body);
                if conn.write_all(&resp).is_err() {
                    return;
                }
            }
        }
    }
}

fn fragile_config(port: u16) -> Config {
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
shards = 1
admin_listen = "127.0.0.1:0"
max_inflight_per_connection = 16
drain_window_ms = 200
[auth]
hs256_secret = "{SECRET}"
[backend]
request_timeout_ms = 10000
[[services]]
name = "fragile"
url = "http://127.0.0.1:{port}"
endpoints = [ {{ path = "/x", roles = ["user"] }} ]
"#
    );
    Config::from_toml_str(&text, &[]).unwrap()
}

/// Sends `n` calls on channel 0 at once and returns their answers' codes, in any order,
/// with the time the last one took.
async fn calls(c: &mut Client, guid: [u8; 16], n: usize) -> (Vec<u8>, Duration) {
    let t0 = Instant::now();
    for i in 0..n {
        c.send_request(0, 0, 0, guid, format!("{{\"i\":{i}}}").as_bytes())
            .await
            .unwrap();
    }
    let mut codes = Vec::new();
    while codes.len() < n {
        match monoio::time::timeout(Duration::from_secs(8), c.next()).await {
            Ok(Ok(Incoming::Response(h, _))) => codes.push(h.code),
            Ok(Ok(_)) => {}
            other => panic!("expected {n} answers, got {} then {other:?}", codes.len()),
        }
    }
    (codes, t0.elapsed())
}

#[test]
fn an_http_backend_killed_mid_request_answers_every_call_in_flight_60_and_serves_again_once_back() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let backend = Fragile::start(addr, false);
    let g = gateway(fragile_config(port));
    run(async {
        let (mut c, m) = connect(&g, &user_token(&["user"])).await;
        let guid = m.guid("/x").unwrap();
        // 16 calls in flight (the connection's bound), held by the backend...
        for i in 0..16 {
            c.send_request(0, 0, 0, guid, format!("{{\"i\":{i}}}").as_bytes())
                .await
                .unwrap();
        }
        let t0 = Instant::now();
        while backend.requests.load(Ordering::SeqCst) < 16 {
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "the backend never got them all"
            );
            monoio::time::sleep(Duration::from_millis(5)).await;
        }
        // ...and it dies: each is answered 60 now, not at its 10 s timeout.
        let killed = Instant::now();
        backend.kill();
        let mut codes = Vec::new();
        while codes.len() < 16 {
            match monoio::time::timeout(Duration::from_secs(8), c.next()).await {
                Ok(Ok(Incoming::Response(h, _))) => codes.push(h.code),
                Ok(Ok(_)) => {}
                other => panic!("got {} answers then {other:?}", codes.len()),
            }
        }
        assert!(codes.iter().all(|&c| c == 60), "{codes:?}");
        assert!(
            killed.elapsed() < Duration::from_secs(3),
            "{:?}",
            killed.elapsed()
        );
        // Nothing leaked: the connection's in-flight bound is free again (16 more calls
        // are all answered, 60 while the backend is down).
        let (codes, _) = calls(&mut c, guid, 16).await;
        assert!(codes.iter().all(|&c| c == 60), "{codes:?}");
        // The backend is back on its port: calls work again.
        let _back = Fragile::start(addr, true);
        let t0 = Instant::now();
        loop {
            let (codes, _) = calls(&mut c, guid, 16).await;
            if codes.iter().all(|&c| c == 0) {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "never served again: {codes:?}"
            );
            monoio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

#[test]
fn a_link_backend_killed_mid_request_answers_its_calls_60_and_its_subscriptions_survive_its_return()
{
    let backend = LinkBackend::start();
    let service = format!(
        r#"
[[services]]
name = "game"
link = "{}"
endpoints = [ {{ path = "/slow/3000", roles = ["user"] }}, {{ path = "/echo", roles = ["user"] }} ]
"#,
        backend.url()
    );
    let g = push_gateway("", "", &service);
    let mut api = Api::new(g.admin_addr);
    run(async {
        let (mut c, m) = connect(&g, &session_token("acct", "sub-1", &["user"])).await;
        // The session calls the backend (it is announced on its shard's link), and the
        // backend subscribes it to a topic through that link.
        let (h, _) = c.call(m.guid("/echo").unwrap(), b"{}").await.unwrap();
        assert_eq!(h.code, 0);
        let shard = api.shard_of("sub-1");
        let conn = backend.conn(shard);
        conn.act(&[FromBackend::Subscribe {
            addr: Addr::Session("sub-1".into()),
            topic: "t".into(),
        }]);
        let t0 = Instant::now();
        while api.topics_of("sub-1") != ["t"] {
            assert!(t0.elapsed() < Duration::from_secs(5));
            monoio::time::sleep(Duration::from_millis(10)).await;
        }
        // A call in flight when the backend dies is answered 60 at once.
        let id = c
            .send_request(0, 0, 0, m.guid("/slow/3000").unwrap(), b"{}")
            .await
            .unwrap();
        monoio::time::sleep(Duration::from_millis(50)).await;
        let died = Instant::now();
        let before = backend.connections.load(Ordering::SeqCst);
        backend.drop_connections();
        let (h, _) = response(&mut c).await;
        assert_eq!((h.message_id, h.code), (id, 60));
        assert!(died.elapsed() < Duration::from_secs(2));
        // It comes back (the shard redials); the subscription made through it is still
        // there, and calls work again.
        let t0 = Instant::now();
        while backend.connections.load(Ordering::SeqCst) < before + 2 {
            assert!(t0.elapsed() < Duration::from_secs(5), "never redialed");
            monoio::time::sleep(Duration::from_millis(10)).await;
        }
        api.publish("t", None, &json!({ "n": 1 }));
        assert_eq!(push_json(&mut c).await, json!({ "n": 1 }));
        let t0 = Instant::now();
        loop {
            let (h, _) = c.call(m.guid("/echo").unwrap(), b"{}").await.unwrap();
            if h.code == 0 {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "calls never worked again"
            );
            monoio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}

#[test]
fn a_client_that_vanishes_without_a_fin_is_found_by_the_ping_deadline_and_can_resume() {
    let g = push_gateway(
        "reconnect_window_secs = 30\nidle_ping_secs = 1\npong_timeout_secs = 1",
        "",
        "",
    );
    let mut api = Api::new(g.admin_addr);
    run(async {
        // A client whose network goes: its socket stays open on this side, but nothing
        // it is sent is read and no ping is answered (no FIN ever reaches the gateway).
        let opts = ConnectOptions {
            token: Some(session_token("acct", "ghost", &["user"])),
            ..ConnectOptions::default()
        };
        let mut ghost = Client::connect(g.addr, &opts).await.unwrap();
        let m = ghost.manifest().await.unwrap();
        let t0 = Instant::now();
        loop {
            let (status, body) = api.get("/v1/sessions/ghost");
            if status == 200 && body["connections"][0]["connected"] == json!(false) {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(8), "never found: {body}");
            monoio::time::sleep(Duration::from_millis(100)).await;
        }
        let found_after = t0.elapsed();
        // Found by the deadline (idle 1 s, then 1 s for the pong, on the coarse clock).
        assert!(found_after >= Duration::from_millis(900), "{found_after:?}");
        api.post("/v1/sessions/ghost/push", &json!({ "payload": { "n": 7 } }));
        let (mut back, m2) = resume(&g, &m.reconnection_token.unwrap(), false).await;
        assert_eq!(m2.session_id, "ghost");
        assert_eq!(push_json(&mut back).await, json!({ "n": 7 }));
        drop(ghost);
    });
}
