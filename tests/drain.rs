//! A deploy, on real sockets and real processes: 2,000 clients on one gateway process,
//! a second process listening on the same port (SO_REUSEPORT), SIGTERM to the first.
//! Every client gets its disconnect notice (with a reconnection token) and then 1001,
//! the closes follow the configured spread (`drain_window_ms`), the first process
//! exits 0, and every client is connected to the second process at the end.

mod common;

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use common::process::GatewayProcess;
use ringgate::client::{Client, ConnectOptions, Incoming};
use serde_json::Value;

const CLIENTS: usize = 2000;
const WINDOW_MS: u64 = 2000;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn config_file(port: u16, tag: &str) -> std::path::PathBuf {
    let text = ringgate::config::DEFAULT_CONFIG_TOML
        .replace(
            "listen = \"127.0.0.1:8080\"",
            &format!("listen = \"127.0.0.1:{port}\""),
        )
        .replace(
            "admin_listen = \"127.0.0.1:9090\"",
            "admin_listen = \"127.0.0.1:0\"",
        )
        .replace(
            "drain_window_ms = 10000",
            &format!("drain_window_ms = {WINDOW_MS}"),
        )
        .replace("shards = 0", "shards = 2")
        .replace(
            "hs256_secret = \"ringgate-dev-secret-change-me-0123456789\"",
            &format!("hs256_secret = \"{}\"", common::SECRET),
        );
    let dir = std::env::temp_dir().join(format!("ringgate-drain-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(format!("{tag}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

/// The admin address from the "ringgate listening" line.
fn admin_of(line: &str) -> SocketAddr {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("admin="))
        .expect("the admin address is logged")
        .parse()
        .unwrap()
}

/// `ringgate_connections_open` of the gateway whose admin listener is `admin`.
fn connections_open(admin: SocketAddr) -> u64 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(admin).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.lines()
        .filter(|l| l.starts_with("ringgate_connections_open"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// What one client saw of the drain.
#[derive(Debug, Default, Clone)]
struct Seen {
    /// The notice's reconnection token and when the close came (since the SIGTERM).
    token: Option<String>,
    close: Option<(u16, Duration)>,
    /// Connected again (to whichever process listens) with a manifest.
    back: bool,
}

fn opts() -> ConnectOptions {
    ConnectOptions {
        token: Some(common::user_token(&["user"])),
        ..ConnectOptions::default()
    }
}

#[test]
fn a_drain_spreads_its_closes_and_every_client_lands_on_the_second_process() {
    let port = free_port();
    let mut a = GatewayProcess::start(&config_file(port, "a"));
    let addr = a.wait_listening();
    let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
        .unwrap();
    let seen: Rc<RefCell<Vec<Seen>>> = Rc::new(RefCell::new(vec![Seen::default(); CLIENTS]));
    let mut b: Option<GatewayProcess> = None;
    let mut b_admin = None;
    let mut sigterm_at = None;
    rt.block_on(async {
        // Everyone on the first process.
        let mut clients = Vec::with_capacity(CLIENTS);
        for _ in 0..CLIENTS {
            let mut c = Client::connect(addr, &opts()).await.expect("connect to A");
            c.manifest().await.expect("manifest from A");
            clients.push(c);
        }
        // The second process on the same port, then SIGTERM to the first.
        let mut second = GatewayProcess::start(&config_file(port, "b"));
        b_admin = Some(admin_of(&second.wait_log("ringgate listening")));
        b = Some(second);
        let t0 = Instant::now();
        sigterm_at = Some(t0);
        a.signal(libc::SIGTERM);
        let mut tasks = Vec::new();
        for (i, mut c) in clients.into_iter().enumerate() {
            let seen = seen.clone();
            tasks.push(monoio::spawn(async move {
                loop {
                    match c.next().await {
                        Ok(Incoming::Push(_, p)) => {
                            let v: Value = serde_json::from_slice(&p).unwrap_or(Value::Null);
                            if v["eventName"] == "connect.disconnect-notification" {
                                seen.borrow_mut()[i].token =
                                    v["reconnectionToken"].as_str().map(str::to_string);
                            }
                        }
                        Ok(Incoming::Close(cl)) => {
                            let code = cl.map(|c| c.0).unwrap_or(0);
                            seen.borrow_mut()[i].close = Some((code, t0.elapsed()));
                            break;
                        }
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
                drop(c);
                // Back, as a client does after a 1001 (the first process's listeners
                // are closed: the kernel sends it to the second).
                for _ in 0..50 {
                    if let Ok(mut c) = Client::connect(addr, &opts()).await {
                        if c.manifest().await.is_ok() {
                            seen.borrow_mut()[i].back = true;
                            // Stay connected until the test has counted.
                            let _ = monoio::time::timeout(Duration::from_secs(30), c.next()).await;
                            return;
                        }
                    }
                    monoio::time::sleep(Duration::from_millis(20)).await;
                }
            }));
        }
        // Wait until every client is back (or 30 s).
        let deadline = Instant::now() + Duration::from_secs(30);
        while seen.borrow().iter().any(|s| !s.back) && Instant::now() < deadline {
            monoio::time::sleep(Duration::from_millis(50)).await;
        }
        let open = connections_open(b_admin.unwrap());
        assert_eq!(
            open, CLIENTS as u64,
            "the second process holds every client"
        );
        drop(tasks);
    });
    let status = a.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "the drained process exits 0: {status:?}");
    let _ = sigterm_at;
    let seen = seen.borrow();
    let mut closes: Vec<Duration> = Vec::new();
    for (i, s) in seen.iter().enumerate() {
        assert!(
            s.token.is_some(),
            "client {i} got no notice with a token: {s:?}"
        );
        let (code, at) = s
            .close
            .unwrap_or_else(|| panic!("client {i} was not closed: {s:?}"));
        assert_eq!(code, 1001, "client {i}");
        assert!(s.back, "client {i} never got back in");
        closes.push(at);
    }
    closes.sort();
    let q = |p: f64| closes[((closes.len() - 1) as f64 * p) as usize].as_secs_f64();
    let w = WINDOW_MS as f64 / 1000.0;
    eprintln!(
        "closes after SIGTERM: first {:.3}s, p25 {:.3}s, p50 {:.3}s, p75 {:.3}s, last {:.3}s (window {w}s)",
        q(0.0),
        q(0.25),
        q(0.5),
        q(0.75),
        q(1.0)
    );
    // Evenly over the window: each quartile near its share of it (generous bounds for
    // a loaded machine), and not all at once.
    assert!(
        q(0.25) > 0.15 * w && q(0.25) < 0.5 * w,
        "p25 {:.3}s",
        q(0.25)
    );
    assert!(q(0.5) > 0.35 * w && q(0.5) < 0.75 * w, "p50 {:.3}s", q(0.5));
    assert!(
        q(0.75) > 0.6 * w && q(0.75) < 1.0 * w,
        "p75 {:.3}s",
        q(0.75)
    );
    assert!(q(1.0) < w + 2.0, "the last close {:.3}s", q(1.0));
    drop(b);
}
