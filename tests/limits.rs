//! Limits and abuse (docs/DESIGN.md §3): each limit refuses or closes as documented
//! and is counted in `/metrics`. Real sockets on 127.0.0.1 (and 127.0.0.x as other
//! source addresses); no timing is asserted beyond "within a few seconds".

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use ringgate::proto::frame::{encode_frame, OpCode};
use ringgate::proto::ws::Message;
use ringgate::Gateway;

/// The value of one exact series of `/metrics`, e.g.
/// `ringgate_handshakes_total{result="timeout"}` (0 when absent).
fn sample(g: &Gateway, series: &str) -> i64 {
    g.metrics
        .render()
        .lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
                .map(|v| v.parse::<f64>().unwrap() as i64)
        })
        .unwrap_or(0)
}

fn handshakes(g: &Gateway, result: &str) -> i64 {
    sample(
        g,
        &format!("ringgate_handshakes_total{{result=\"{result}\"}}"),
    )
}

fn auth_header() -> String {
    format!("Authorization: Bearer {}\r\n", user_token(&["user"]))
}

/// Waits (up to 5 s) for `cond`, for counts that change once another thread has
/// caught up (a connection closed on the gateway's side, a handshake counted).
fn eventually(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < Duration::from_secs(5), "never: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_upgrade_head_past_max_handshake_bytes_gets_431_and_is_counted() {
    let backend = Backend::start();
    let g = gateway(config(&backend, "max_handshake_bytes = 2048", ""));
    let fits = upgrade_request(
        "/connect",
        &format!("{}X-Pad: {}\r\n", auth_header(), "a".repeat(1000)),
    );
    assert!(fits.len() < 2048, "{}", fits.len());
    assert_eq!(raw_status(g.addr, &fits), 101);
    let huge = upgrade_request(
        "/connect",
        &format!("{}X-Pad: {}\r\n", auth_header(), "a".repeat(2048)),
    );
    assert_eq!(raw_status(g.addr, &huge), 431);
    eventually("the 431 is counted", || handshakes(&g, "too_large") == 1);
}

#[test]
fn a_stalled_upgrade_gets_408_after_handshake_timeout_ms_and_is_counted() {
    let backend = Backend::start();
    let g = gateway(config(&backend, "handshake_timeout_ms = 300", ""));
    let mut s = std::net::TcpStream::connect(g.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // Half a request head, then nothing (slowloris).
    s.write_all(b"GET /connect HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let start = Instant::now();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert!(
        out.starts_with(b"HTTP/1.1 408"),
        "{:?}",
        String::from_utf8_lossy(&out)
    );
    eventually("the 408 is counted", || handshakes(&g, "timeout") == 1);
}

#[test]
fn requests_past_the_connection_rate_answer_12_and_are_counted() {
    let backend = Backend::start();
    let g = gateway(config(
        &backend,
        "rate_limit_per_sec = 1\nrate_limit_burst = 3",
        "",
    ));
    let refused = run(async {
        let (mut c, m) = connect(&g, &user_token(&["user"])).await;
        let guid = m.guid("/echo").unwrap();
        let mut refused = 0;
        for _ in 0..8 {
            let (h, _) = c.call(guid, b"{}").await.unwrap();
            assert!(h.code == 0 || h.code == 12, "{}", h.code);
            refused += i64::from(h.code == 12);
        }
        refused
    });
    // Eight calls against a burst of three at one a second: some are refused
    // (however slow the machine, eight calls do not take five seconds).
    assert!(refused >= 1, "none of 8 calls was refused");
    assert_eq!(sample(&g, "ringgate_rate_limited_total"), refused);
}

#[test]
fn permessage_deflate_offered_by_a_client_is_never_negotiated() {
    let backend = Backend::start();
    let g = gateway(config(&backend, "", ""));
    let offer = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n";
    let (mut c, head) = RawClient::upgrade_with(g.addr, &format!("{}{offer}", auth_header()), b"");
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("sec-websocket-extensions"),
        "the 101 accepts an extension:\n{head}"
    );
    // The connection works uncompressed: a ping is answered.
    c.send(&encode_frame(OpCode::Ping, b"plain", Some([1, 2, 3, 4])));
    loop {
        match c.next(Duration::from_secs(5)) {
            Some(Message::Pong(p)) => {
                assert_eq!(&p[..], b"plain");
                break;
            }
            Some(_) => {}
            None => panic!("no pong"),
        }
    }
}

#[test]
fn a_compressed_frame_rsv1_is_failed_with_1002_and_counted() {
    let backend = Backend::start();
    let g = gateway(config(&backend, "", ""));
    // A client that assumes deflate was accepted sends RSV1 frames.
    let offer = "Sec-WebSocket-Extensions: permessage-deflate\r\n";
    let (mut c, _) = RawClient::upgrade_with(g.addr, &format!("{}{offer}", auth_header()), b"");
    let mut frame = encode_frame(OpCode::Binary, &[0x4b, 0x04, 0x00], Some([9, 9, 9, 9]));
    frame[0] |= 0x40; // RSV1: "this message is compressed"
    c.send(&frame);
    let close = loop {
        match c.next(Duration::from_secs(5)) {
            Some(Message::Close(f)) => break f,
            Some(_) => {}
            None => panic!("no close frame"),
        }
    };
    assert_eq!(close.map(|f| f.code), Some(1002));
    eventually("the protocol error is counted", || {
        sample(&g, "ringgate_protocol_errors_total") == 1
    });
}

/// Opens a connection from the source address `from` (a 127.0.0.x: every one of them
/// is this host), sends an upgrade request with a valid token, and returns the status
/// of the answer with the connection (open, for a 101).
fn upgrade_from(from: &str, to: SocketAddr) -> (u16, TcpStream) {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::new(from.parse().unwrap(), 0).into())
        .unwrap();
    s.connect(&to.into()).unwrap();
    let mut s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(upgrade_request("/connect", &auth_header()).as_bytes())
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut r = httparse::Response::new(&mut headers);
        if let Ok(httparse::Status::Complete(_)) = r.parse(&buf) {
            return (r.code.unwrap(), s);
        }
        match s.read(&mut chunk) {
            // (A signal to this process — the gateway's threads share it — is no answer.)
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Ok(0) | Err(_) => panic!("no HTTP response; got {:?}", String::from_utf8_lossy(&buf)),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Upgrades from `from`, expecting a 101; the connection stays open while it is held.
fn upgraded_from(from: &str, to: SocketAddr) -> TcpStream {
    let (status, s) = upgrade_from(from, to);
    assert_eq!(status, 101, "upgrade from {from}");
    s
}

fn admitted(g: &Gateway) -> i64 {
    sample(g, "ringgate_connections_admitted")
}

#[test]
fn past_max_connections_over_all_shards_an_upgrade_gets_503_and_is_counted() {
    let backend = Backend::start();
    let g = gateway(config(&backend, "max_connections = 3", ""));
    // Three clients, wherever the kernel puts them (two shards), hold the three places.
    let mut held: Vec<_> = (0..3).map(|_| upgraded_from("127.0.0.1", g.addr)).collect();
    assert_eq!(admitted(&g), 3);
    assert_eq!(upgrade_from("127.0.0.2", g.addr).0, 503, "any source");
    eventually("the 503 is counted", || {
        handshakes(&g, "max_connections") == 1
    });
    assert_eq!(admitted(&g), 3, "a refused connection holds no place");
    // A client leaves: its place is free again.
    drop(held.pop());
    eventually("the closed connection gives its place back", || {
        admitted(&g) == 2
    });
    held.push(upgraded_from("127.0.0.1", g.addr));
    assert_eq!(handshakes(&g, "max_connections"), 1);
}

#[test]
fn a_reload_changes_max_connections_for_the_next_upgrades_and_keeps_those_held() {
    let backend = Backend::start();
    let g = gateway(config(&backend, "", ""));
    let held: Vec<_> = (0..2).map(|_| upgraded_from("127.0.0.1", g.addr)).collect();
    g.reload(config(&backend, "max_connections = 2", ""));
    assert_eq!(
        upgrade_from("127.0.0.2", g.addr).0,
        503,
        "the cap now in force"
    );
    assert_eq!(admitted(&g), 2, "the two held stay");
    g.reload(config(&backend, "max_connections = 3", ""));
    let third = upgraded_from("127.0.0.2", g.addr);
    assert_eq!(upgrade_from("127.0.0.3", g.addr).0, 503);
    eventually("both refusals are counted", || {
        handshakes(&g, "max_connections") == 2
    });
    drop((held, third));
}

#[test]
fn a_handshake_in_progress_holds_a_place_under_max_connections_per_ip() {
    let backend = Backend::start();
    let g = gateway(config(
        &backend,
        "max_connections_per_ip = 2\nper_ip_exempt = []",
        "",
    ));
    // Two connections that never send their request (slowloris) ...
    let silent: Vec<_> = (0..2)
        .map(|_| std::net::TcpStream::connect(g.addr).unwrap())
        .collect();
    eventually("both are accepted", || admitted(&g) == 2);
    // ... are the address's two places: a third connection from it is refused.
    assert_eq!(upgrade_from("127.0.0.1", g.addr).0, 503);
    eventually("the 503 is counted", || {
        handshakes(&g, "max_connections_per_ip") == 1
    });
    // Another address has places of its own.
    let other = upgraded_from("127.0.0.2", g.addr);
    drop(silent);
    eventually("the silent connections give their places back", || {
        admitted(&g) == 1
    });
    let _again = upgraded_from("127.0.0.1", g.addr);
    drop(other);
}

#[test]
fn upgraded_connections_count_against_max_connections_per_ip_per_source_address() {
    let backend = Backend::start();
    let g = gateway(config(
        &backend,
        "max_connections_per_ip = 1\nper_ip_exempt = []",
        "",
    ));
    let a = upgraded_from("127.0.0.3", g.addr);
    assert_eq!(upgrade_from("127.0.0.3", g.addr).0, 503);
    let b = upgraded_from("127.0.0.4", g.addr);
    assert_eq!(upgrade_from("127.0.0.4", g.addr).0, 503);
    assert_eq!(sample(&g, "ringgate_source_addresses"), 2);
    eventually("both refusals are counted", || {
        handshakes(&g, "max_connections_per_ip") == 2
    });
    drop((a, b));
}

#[test]
fn loopback_sources_are_exempt_from_the_per_address_limits_by_default() {
    let backend = Backend::start();
    let g = gateway(config(
        &backend,
        "max_connections_per_ip = 1\nupgrade_rate_per_ip = 1\nupgrade_burst_per_ip = 1",
        "",
    ));
    // (The load harness opens thousands of connections from each 127.0.0.x.)
    let held: Vec<_> = (0..5)
        .map(|i| upgraded_from(&format!("127.0.0.{}", 1 + i % 2), g.addr))
        .collect();
    assert_eq!(admitted(&g), 5);
    assert_eq!(sample(&g, "ringgate_source_addresses"), 0);
    drop(held);
}

#[test]
fn upgrades_past_the_per_address_rate_get_429_and_are_counted() {
    let backend = Backend::start();
    let g = gateway(config(
        &backend,
        "upgrade_rate_per_ip = 1\nupgrade_burst_per_ip = 2\nper_ip_exempt = []",
        "",
    ));
    // A burst of two, then one a second: ten attempts in a row meet a 429 (however
    // slow the machine, they do not take eight seconds).
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let (status, _) = upgrade_from("127.0.0.5", g.addr);
        statuses.push(status);
        if status != 101 {
            break;
        }
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    assert!(statuses.len() >= 3, "the burst passes: {statuses:?}");
    eventually("the 429 is counted", || handshakes(&g, "upgrade_rate") == 1);
    // Another address has a bucket of its own.
    let _other = upgraded_from("127.0.0.6", g.addr);
}

#[test]
fn the_per_address_table_forgets_an_address_once_it_has_no_connection_and_its_rate_refilled() {
    let backend = Backend::start();
    let g = gateway(config(
        &backend,
        "upgrade_rate_per_ip = 1\nupgrade_burst_per_ip = 5\nper_ip_exempt = []",
        "",
    ));
    let c = upgraded_from("127.0.0.7", g.addr);
    assert_eq!(sample(&g, "ringgate_source_addresses"), 1);
    drop(c);
    eventually("the connection gives its place back", || admitted(&g) == 0);
    // Its token refills within a second; a sweep then forgets the address.
    eventually("the address is forgotten", || {
        sample(&g, "ringgate_source_addresses") == 0
    });
}

/// Waits (up to 5 s, on the test's runtime, which closes a dropped client's socket)
/// until the gateway holds `n` connections.
async fn admitted_becomes(g: &Gateway, n: i64) {
    let start = Instant::now();
    while admitted(g) != n {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "admitted stays {} (want {n})",
            admitted(g)
        );
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn a_resumed_connection_holds_one_place_on_whichever_shard_its_session_is() {
    let backend = Backend::start();
    let g = gateway(config(&backend, "max_connections = 2", ""));
    run(async {
        let (c, m) = connect(&g, &user_token(&["user"])).await;
        let mut token = m.reconnection_token.expect("a token");
        drop(c);
        // Each resume lands on either shard; one on the other shard is handed to the
        // session's, its place with it.
        for _ in 0..6 {
            admitted_becomes(&g, 0).await;
            let (c, m) = resume(&g, &token, false).await;
            token = m.reconnection_token.unwrap();
            assert_eq!(admitted(&g), 1);
            drop(c);
        }
        admitted_becomes(&g, 0).await;
    });
}

#[test]
fn a_client_that_trickles_a_frame_and_completes_none_is_closed_with_1001_idle_timeout() {
    let backend = Backend::start();
    let g = gateway(config(
        &backend,
        "idle_ping_secs = 1\npong_timeout_secs = 1\nidle_timeout_secs = 4",
        "",
    ));
    let mut c = RawClient::upgrade(g.addr, &user_token(&["user"]), b"");
    // A 256-byte binary frame, sent a byte every 200 ms: bytes keep arriving (so no
    // ping is due), no message is ever complete.
    let frame = encode_frame(OpCode::Binary, &[7u8; 256], Some([1, 2, 3, 4]));
    let start = Instant::now();
    let mut sent = 0;
    let close = loop {
        assert!(start.elapsed() < Duration::from_secs(15), "never closed");
        c.send(&frame[sent..sent + 1]);
        sent += 1;
        if let Some(Message::Close(f)) = c.next(Duration::from_millis(200)) {
            break f.expect("a close code");
        }
    };
    assert!(sent < frame.len(), "the frame was completed");
    assert_eq!(close.code, 1001);
    assert_eq!(&close.reason[..], b"idle timeout");
    assert_eq!(sample(&g, "ringgate_idle_timeouts_total"), 1);
    assert_eq!(sample(&g, "ringgate_pong_timeouts_total"), 0);
}

#[test]
fn an_idle_client_that_answers_pings_outlives_the_idle_timeout() {
    use ringgate::client::Incoming;
    let backend = Backend::start();
    let g = gateway(config(
        &backend,
        "idle_ping_secs = 1\npong_timeout_secs = 1\nidle_timeout_secs = 4",
        "",
    ));
    run(async {
        let (mut c, m) = connect(&g, &user_token(&["user"])).await;
        // Sends nothing but its pongs (the client answers each ping as it reads).
        let start = Instant::now();
        let mut pings = 0;
        while start.elapsed() < Duration::from_secs(7) {
            match monoio::time::timeout(Duration::from_millis(200), c.next()).await {
                Ok(Ok(Incoming::Ping(_))) => pings += 1,
                Ok(Ok(Incoming::Close(f))) => panic!("closed: {f:?}"),
                Ok(Err(e)) => panic!("{e}"),
                _ => {}
            }
        }
        assert!(pings >= 2, "{pings} pings in 7 s");
        let (h, _) = c.call(m.guid("/echo").unwrap(), b"{}").await.unwrap();
        assert_eq!(h.code, 0);
    });
    assert_eq!(sample(&g, "ringgate_idle_timeouts_total"), 0);
}

#[test]
fn a_silent_client_is_dropped_at_the_pong_deadline_and_counted() {
    let backend = Backend::start();
    let g = gateway(config(
        &backend,
        "idle_ping_secs = 1\npong_timeout_secs = 1\nidle_timeout_secs = 60",
        "",
    ));
    // Never answers a ping, sends nothing.
    let mut c = RawClient::upgrade(g.addr, &user_token(&["user"]), b"");
    let start = Instant::now();
    while sample(&g, "ringgate_pong_timeouts_total") == 0 {
        assert!(start.elapsed() < Duration::from_secs(15), "never dropped");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Dropped: no close frame, the stream just ends.
    while let Some(m) = c.next(Duration::from_secs(5)) {
        assert!(matches!(m, Message::Ping(_)), "{m:?}");
    }
    let mut rest = [0u8; 16];
    assert_eq!(
        c.stream.read(&mut rest).unwrap_or(0),
        0,
        "the connection ended"
    );
    assert_eq!(sample(&g, "ringgate_idle_timeouts_total"), 0);
}

#[test]
fn a_session_whose_jwt_expires_gets_a_final_disconnect_notice_then_4001() {
    use common::push::{next_within, Got};
    let backend = Backend::start();
    let g = gateway(config(&backend, "", "leeway_secs = 0"));
    run(async {
        let t = token("a", &["user"], None, unix_now() + 2);
        let (mut c, m) = connect(&g, &t).await;
        let resume_token = m.reconnection_token.expect("a reconnection token");
        let notice = match next_within(&mut c, Duration::from_secs(10)).await {
            Some(Got::Push(_, p)) => serde_json::from_slice::<serde_json::Value>(&p).unwrap(),
            other => panic!("expected the disconnect notice, got {other:?}"),
        };
        assert_eq!(notice["eventName"], "connect.disconnect-notification");
        assert_eq!(notice["reason"], "session_expired", "{notice}");
        assert_eq!(notice["reconnectable"], false, "{notice}");
        assert!(notice.get("reconnectionToken").is_none(), "{notice}");
        match next_within(&mut c, Duration::from_secs(5)).await {
            Some(Got::Close(close)) => assert_eq!(close.map(|c| c.0), Some(4001)),
            other => panic!("expected the close, got {other:?}"),
        }
        drop(c);
        // The session ended with its token: its reconnection token opens nothing.
        let status = raw_status(
            g.addr,
            &upgrade_request(
                "/connect",
                &format!("Authorization: Reconnect {resume_token}\r\n"),
            ),
        );
        assert_eq!(status, 401);
    });
    assert_eq!(sample(&g, "ringgate_sessions_expired_total"), 1);
}

#[test]
fn a_raw_route_client_past_the_connection_rate_is_closed_1008_and_counted() {
    use common::link::LinkBackend;
    use ringgate::client::{Client, ConnectOptions, Incoming};
    let backend = LinkBackend::start();
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
shards = 2
admin_listen = "127.0.0.1:0"
rate_limit_per_sec = 1
rate_limit_burst = 2
[auth]
hs256_secret = "{SECRET}"
[[services]]
name = "lobby"
link = "{}"
raw_routes = [ {{ path = "/lobby", roles = ["user"] }} ]
"#,
        backend.url()
    );
    let g = gateway(ringgate::Config::from_toml_str(&text, &[]).unwrap());
    backend.conn(0);
    backend.conn(1);
    run(async {
        let opts = ConnectOptions {
            path: "/lobby".into(),
            token: Some(user_token(&["user"])),
            raw: true,
            ..ConnectOptions::default()
        };
        let mut c = Client::connect(g.addr, &opts).await.expect("raw upgrade");
        // A burst of two, then one a second: eight messages at once overrun it.
        for _ in 0..8 {
            if c.send_frame(OpCode::Text, b"hi", true).await.is_err() {
                break;
            }
        }
        let close = loop {
            match monoio::time::timeout(Duration::from_secs(5), c.next()).await {
                Ok(Ok(Incoming::Close(close))) => break close,
                Ok(Ok(_)) => {}
                other => panic!("no close: {other:?}"),
            }
        };
        assert_eq!(close.map(|c| c.0), Some(1008));
    });
    assert!(sample(&g, "ringgate_rate_limited_total") >= 1);
}
