//! Integration tests of the backend link (docs/LINK.md) on real sockets: a scripted
//! link backend (std threads, the library's sans-IO codecs) behind a real gateway.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::link::*;
use common::*;
use ringgate::client::Incoming;
use ringgate::config::Config;
use ringgate::proto::bannou::{flags, ResponseCode};

const PATHS: &[&str] = &[
    "/echo",
    "/status/404",
    "/status/500",
    "/slow/300",
    "/slow/1500",
    "/push",
    "/kick",
    "/garbage",
    "/freeze",
    "/silent",
];

fn link_config(link_url: &str) -> Config {
    Config::from_toml_str(&link_config_text(link_url), &[]).expect("link test config is valid")
}

fn link_config_text(link_url: &str) -> String {
    let endpoints: Vec<String> = PATHS
        .iter()
        .map(|p| format!("{{ path = \"{p}\", roles = [\"user\"] }}"))
        .collect();
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
path = "/connect"
shards = 1
admin_listen = "127.0.0.1:0"
max_message_bytes = 4096
[auth]
hs256_secret = "{SECRET}"
[backend]
request_timeout_ms = 1000
connect_timeout_ms = 1000
[[services]]
name = "game"
link = "{link_url}"
endpoints = [ {} ]
"#,
        endpoints.join(", ")
    )
}

/// Starts a gateway on `link_config` and waits until its link is up (the backend saw a
/// connection).
fn gateway_with_link(backend: &LinkBackend) -> ringgate::Gateway {
    let g = gateway(link_config(&backend.url()));
    let t0 = Instant::now();
    while backend.connections.load(Ordering::SeqCst) == 0 {
        assert!(t0.elapsed() < Duration::from_secs(5), "link never dialed");
        std::thread::sleep(Duration::from_millis(5));
    }
    g
}

#[test]
fn a_request_travels_over_the_link_after_its_sessions_open_and_the_reply_reaches_the_client() {
    let backend = LinkBackend::start();
    let g = gateway_with_link(&backend);
    run(async {
        let tok = token(
            "acct-9",
            &["user", "tester"],
            Some("sess-9"),
            unix_now() + 3600,
        );
        let (mut c, m) = connect(&g, &tok).await;
        let (h, body) = c
            .call(m.guid("/echo").unwrap(), b"{\"x\":1}")
            .await
            .unwrap();
        assert_eq!(h.code, 0);
        assert_eq!(&body[..], b"{\"x\":1}");
        let (h, _) = c.call(m.guid("/echo").unwrap(), b"2").await.unwrap();
        assert_eq!(h.code, 0);
    });
    let seen = backend.seen();
    let Seen::Open {
        session,
        session_id,
        account_id,
        roles,
    } = &seen[0]
    else {
        panic!("first message is not OPEN: {seen:?}");
    };
    assert_eq!(
        (session_id.as_str(), account_id.as_str(), roles.as_str()),
        ("sess-9", "acct-9", "user,tester")
    );
    let opens = seen
        .iter()
        .filter(|s| matches!(s, Seen::Open { .. }))
        .count();
    assert_eq!(opens, 1, "a session is announced once per link connection");
    assert!(
        matches!(&seen[1], Seen::Request { session: s, call, path, payload, flags: 0 }
        if s == session && *call != 0 && path == "/echo" && payload == b"{\"x\":1}")
    );
}

#[test]
fn backend_statuses_map_to_codes_over_the_link() {
    let backend = LinkBackend::start();
    let g = gateway_with_link(&backend);
    run(async {
        let (mut c, m) = connect(&g, &user_token(&["user"])).await;
        let (h, body) = c.call(m.guid("/status/404").unwrap(), b"x").await.unwrap();
        assert_eq!((h.code, body.len()), (ResponseCode::NotFound as u8, 0));
        let (h, body) = c.call(m.guid("/status/500").unwrap(), b"x").await.unwrap();
        assert_eq!((h.code, body.len()), (ResponseCode::InternalError as u8, 0));
    });
}

#[test]
fn replies_may_come_out_of_order_and_each_reaches_its_request() {
    let backend = LinkBackend::start();
    let g = gateway_with_link(&backend);
    run(async {
        let (mut c, m) = connect(&g, &user_token(&["user"])).await;
        let slow = c
            .send_request(0, 0, 0, m.guid("/slow/300").unwrap(), b"slow")
            .await
            .unwrap();
        let fast = c
            .send_request(0, 0, 0, m.guid("/echo").unwrap(), b"fast")
            .await
            .unwrap();
        let mut order = Vec::new();
        while order.len() < 2 {
            if let Incoming::Response(h, body) = c.next().await.unwrap() {
                assert_eq!(h.code, 0);
                order.push((h.message_id, body));
            }
        }
        assert_eq!(order[0].0, fast, "the fast call overtakes the slow one");
        assert_eq!(&order[0].1[..], b"fast");
        assert_eq!((order[1].0, &order[1].1[..]), (slow, &b"slow"[..]));
    });
}

#[test]
fn an_ordered_channel_over_the_link_keeps_its_order() {
    let backend = LinkBackend::start();
    let g = gateway_with_link(&backend);
    run(async {
        let (mut c, m) = connect(&g, &user_token(&["user"])).await;
        let first = c
            .send_request(0, 1, 1, m.guid("/slow/300").unwrap(), b"1")
            .await
            .unwrap();
        let second = c
            .send_request(0, 1, 2, m.guid("/echo").unwrap(), b"2")
            .await
            .unwrap();
        let mut order = Vec::new();
        while order.len() < 2 {
            if let Incoming::Response(h, _) = c.next().await.unwrap() {
                order.push(h.message_id);
            }
        }
        assert_eq!(order, vec![first, second]);
    });
}

#[test]
fn the_backend_pushes_to_a_session_and_closes_it_with_its_code() {
    let backend = LinkBackend::start();
    let g = gateway_with_link(&backend);
    run(async {
        let (mut c, m) = connect(&g, &user_token(&["user"])).await;
        let (h, pushed, _) =
            common::link::push_through(&mut c, &m, b"{\"eventName\":\"npc.moved\"}").await;
        assert_eq!(h.flags, flags::EVENT);
        assert_eq!(h.guid, [0; 16]);
        assert_eq!(&pushed[..], b"{\"eventName\":\"npc.moved\"}");
        c.send_request(0, 0, 0, m.guid("/kick").unwrap(), b"k")
            .await
            .unwrap();
        let closed = loop {
            match c.next().await {
                Ok(Incoming::Close(cl)) => break cl,
                Ok(_) => {}
                Err(e) => panic!("no close frame: {e}"),
            }
        };
        assert_eq!(closed, Some((4002, "kicked by test".to_string())));
    });
}

#[test]
fn a_client_that_goes_away_is_reported_closed_to_the_backend_once_its_reconnection_window_ends() {
    let backend = LinkBackend::start();
    let text =
        link_config_text(&backend.url()).replace("[auth]", "reconnect_window_secs = 2\n[auth]");
    let g = gateway(Config::from_toml_str(&text, &[]).unwrap());
    let closed_at = run(async {
        let (mut c, m) = connect(&g, &user_token(&["user"])).await;
        c.call(m.guid("/echo").unwrap(), b"x").await.unwrap();
        c.close(1000).await.unwrap();
        Instant::now()
    });
    let seen = backend.wait_for(|s| s.iter().any(|e| matches!(e, Seen::Closed { .. })));
    let waited = closed_at.elapsed();
    let Seen::Open { session, .. } = &seen[0] else {
        panic!("{seen:?}")
    };
    assert!(seen.contains(&Seen::Closed { session: *session }));
    // The session outlived its connection for the window (the sweep ends it within a
    // second after), not a moment longer than it needs to.
    assert!(
        waited >= Duration::from_millis(1900) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
}

#[test]
fn an_event_goes_out_with_call_zero_and_gets_no_response() {
    let backend = LinkBackend::start();
    let g = gateway_with_link(&backend);
    run(async {
        let (mut c, m) = connect(&g, &user_token(&["user"])).await;
        c.send_request(flags::EVENT, 0, 0, m.guid("/echo").unwrap(), b"ev")
            .await
            .unwrap();
        // The next response is the call's, not an answer to the event.
        let (h, body) = c.call(m.guid("/echo").unwrap(), b"after").await.unwrap();
        assert_eq!((h.code, &body[..]), (0, &b"after"[..]));
    });
    let seen = backend.seen();
    assert!(seen.iter().any(
        |s| matches!(s, Seen::Request { call: 0, flags: f, payload, .. }
        if *f == flags::EVENT && payload == b"ev")
    ));
}

#[test]
fn a_reply_after_the_timeout_is_dropped_and_the_client_gets_60() {
    let backend = LinkBackend::start();
    let g = gateway_with_link(&backend);
    run(async {
        let (mut c, m) = connect(&g, &user_token(&["user"])).await;
        let t0 = Instant::now();
        let (h, _) = c.call(m.guid("/slow/1500").unwrap(), b"x").await.unwrap();
        assert_eq!(h.code, ResponseCode::InternalError as u8);
        assert!(
            t0.elapsed() >= Duration::from_millis(900),
            "{:?}",
            t0.elapsed()
        );
        assert!(
            t0.elapsed() < Duration::from_millis(1400),
            "{:?}",
            t0.elapsed()
        );
        // The late reply arrives while the next call is in flight and goes nowhere.
        let (h, body) = c.call(m.guid("/slow/300").unwrap(), b"next").await.unwrap();
        assert_eq!((h.code, &body[..]), (0, &b"next"[..]));
    });
    // The late reply comes 1.5 s after its request.
    let t0 = Instant::now();
    let mut metrics = admin_metrics(&g);
    while !metrics.contains("ringgate_link_late_replies_total{service=\"game\"} 1")
        && t0.elapsed() < Duration::from_secs(3)
    {
        std::thread::sleep(Duration::from_millis(20));
        metrics = admin_metrics(&g);
    }
    for needle in [
        "ringgate_link_late_replies_total{service=\"game\"} 1",
        "ringgate_link_up{service=\"game\"} 1",
        "ringgate_link_connects_total{service=\"game\"} 1",
        "ringgate_requests_total{service=\"game\",code=\"60\"} 1",
    ] {
        assert!(metrics.contains(needle), "missing {needle} in\n{metrics}");
    }
}

fn admin_metrics(g: &ringgate::Gateway) -> String {
    let mut s = TcpStream::connect(g.admin_addr).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn a_backend_that_breaks_the_protocol_loses_the_link_its_calls_get_60_and_it_is_redialed() {
    let backend = LinkBackend::start();
    let g = gateway_with_link(&backend);
    run(async {
        let (mut c, m) = connect(&g, &user_token(&["user"])).await;
        let silent = c
            .send_request(0, 0, 0, m.guid("/silent").unwrap(), b"s")
            .await
            .unwrap();
        let t0 = Instant::now();
        let garbage = c
            .send_request(0, 0, 0, m.guid("/garbage").unwrap(), b"g")
            .await
            .unwrap();
        // Both calls fail when the link goes (in no particular order).
        let mut failed = Vec::new();
        while failed.len() < 2 {
            if let Incoming::Response(h, _) = c.next().await.unwrap() {
                assert_eq!(h.code, ResponseCode::InternalError as u8);
                failed.push(h.message_id);
            }
        }
        failed.sort();
        assert_eq!(failed, vec![silent, garbage]);
        assert!(t0.elapsed() < Duration::from_millis(900), "not by timeout");
        // Redialed after the backoff; the session is announced again.
        let t0 = Instant::now();
        loop {
            let (h, _) = c.call(m.guid("/echo").unwrap(), b"again").await.unwrap();
            if h.code == 0 {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(3), "link not redialed");
            monoio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    assert!(backend.connections.load(Ordering::SeqCst) >= 2);
    let opens = backend
        .seen()
        .iter()
        .filter(|s| matches!(s, Seen::Open { .. }))
        .count();
    assert_eq!(opens, 2);
}

#[test]
fn with_nothing_listening_on_the_link_requests_answer_60_at_once() {
    // A port that refuses connections.
    let dead = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/link", dead.local_addr().unwrap());
    drop(dead);
    let g = gateway(link_config(&url));
    std::thread::sleep(Duration::from_millis(50)); // the first dial fails
    run(async {
        let (mut c, m) = connect(&g, &user_token(&["user"])).await;
        let t0 = Instant::now();
        let (h, _) = c.call(m.guid("/echo").unwrap(), b"x").await.unwrap();
        assert_eq!(h.code, ResponseCode::InternalError as u8);
        assert!(
            t0.elapsed() < Duration::from_millis(200),
            "{:?}",
            t0.elapsed()
        );
    });
}

#[test]
fn a_link_url_and_an_http_url_on_one_service_are_refused_naming_the_key() {
    let text = link_config_text("ws://127.0.0.1:2/link");
    let both = text.replace("link = ", "url = \"http://127.0.0.1:1\"\nlink = ");
    let e = Config::from_toml_str(&both, &[]).unwrap_err().to_string();
    assert!(
        e.contains("services[0].link") && e.contains("not both"),
        "{e}"
    );
    let http = text.replace("ws://", "http://");
    let e = Config::from_toml_str(&http, &[]).unwrap_err().to_string();
    assert!(
        e.contains("services[0].link") && e.contains("ws://") && e.contains("wss://"),
        "{e}"
    );
    let neither = text.replace("link = \"ws://127.0.0.1:2/link\"", "");
    let e = Config::from_toml_str(&neither, &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("services[0].url") && e.contains("missing"),
        "{e}"
    );
}

#[test]
fn a_backend_gone_silent_is_pinged_after_a_timeout_then_its_link_is_redialed() {
    let backend = LinkBackend::start();
    let g = gateway_with_link(&backend);
    run(async {
        let (mut c, m) = connect(&g, &user_token(&["user"])).await;
        let (h, _) = c.call(m.guid("/freeze").unwrap(), b"x").await.unwrap();
        assert_eq!(h.code, ResponseCode::InternalError as u8, "timed out");
        // The unanswered ping (1 s, the connect timeout) ends that connection; the link
        // redials and serves again.
        let t0 = Instant::now();
        loop {
            let (h, _) = c.call(m.guid("/echo").unwrap(), b"again").await.unwrap();
            if h.code == 0 && backend.connections.load(Ordering::SeqCst) >= 2 {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(5), "link not redialed");
            monoio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}

#[test]
fn an_idle_link_is_pinged_and_kept_while_answered_then_redialed_once_its_backend_goes_silent() {
    let backend = LinkBackend::start();
    let text = link_config_text(&backend.url()).replace(
        "connect_timeout_ms = 1000",
        "connect_timeout_ms = 1000\nlink_ping_secs = 1",
    );
    let g = gateway(Config::from_toml_str(&text, &[]).unwrap());
    let wait = |what: &str, done: &dyn Fn() -> bool, within: Duration| {
        let t0 = Instant::now();
        while !done() {
            assert!(t0.elapsed() < within, "{what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let conns = || backend.connections.load(Ordering::SeqCst);
    let pings = || backend.pings.load(Ordering::SeqCst);
    wait("link up", &|| conns() == 1, Duration::from_secs(5));
    // Idle with no request at all: pinged about once a second, answered, kept.
    wait("idle pings", &|| pings() >= 2, Duration::from_secs(4));
    assert_eq!(conns(), 1, "an answered ping keeps the link");
    // The host goes silent: the next ping gets no answer within the connect timeout
    // (1 s), the gateway closes that connection and dials again.
    backend.mute_pings.store(true, Ordering::SeqCst);
    wait("redialed", &|| conns() >= 2, Duration::from_secs(4));
    backend.mute_pings.store(false, Ordering::SeqCst);
    run(async {
        let (mut c, m) = connect(&g, &user_token(&["user"])).await;
        let (h, body) = c.call(m.guid("/echo").unwrap(), b"after").await.unwrap();
        assert_eq!((h.code, &body[..]), (0, &b"after"[..]));
    });
    // The silent connection was the one closed: one link open, the new one.
    wait(
        "old link closed",
        &|| backend.open_connections() == 1,
        Duration::from_secs(3),
    );
}

#[test]
fn a_registry_update_that_moves_the_link_retires_the_old_one_after_its_calls() {
    let old = LinkBackend::start();
    let new = LinkBackend::start();
    let g = gateway_with_link(&old);
    run(async {
        let (mut c, m) = connect(&g, &user_token(&["user"])).await;
        let slow = c
            .send_request(0, 0, 0, m.guid("/slow/300").unwrap(), b"owed")
            .await
            .unwrap();
        monoio::time::sleep(Duration::from_millis(50)).await;
        let cfg = link_config(&new.url());
        g.update_registry(std::sync::Arc::new(
            ringgate::registry::Registry::from_config(&cfg, 2),
        ));
        // The call in flight on the old link still gets its answer.
        let (h, body) = c.response(slow).await.unwrap();
        assert_eq!((h.code, &body[..]), (0, &b"owed"[..]));
        // New calls go to the new backend.
        let t0 = Instant::now();
        loop {
            let (h, _) = c.call(m.guid("/echo").unwrap(), b"moved").await.unwrap();
            if h.code == 0 && new.seen().iter().any(|s| matches!(s, Seen::Request { .. })) {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(3),
                "not moved to the new link"
            );
            monoio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    // The old link, its call answered, is closed: its backend sees the connection end.
    let t0 = Instant::now();
    while old.open_connections() > 0 {
        assert!(t0.elapsed() < Duration::from_secs(3), "old link still open");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn every_shard_dials_its_own_link_and_each_serves_its_clients() {
    let backend = LinkBackend::start();
    let text = link_config_text(&backend.url()).replace("shards = 1", "shards = 2");
    let g = gateway(Config::from_toml_str(&text, &[]).unwrap());
    let t0 = Instant::now();
    while backend.connections.load(Ordering::SeqCst) < 2 {
        assert!(t0.elapsed() < Duration::from_secs(5), "one link per shard");
        std::thread::sleep(Duration::from_millis(5));
    }
    run(async {
        // Enough clients that both shards get some (the kernel spreads them).
        let mut clients = Vec::new();
        for _ in 0..16 {
            clients.push(connect(&g, &user_token(&["user"])).await);
        }
        for (i, (c, m)) in clients.iter_mut().enumerate() {
            let body = format!("client {i}");
            let (h, got) = c
                .call(m.guid("/echo").unwrap(), body.as_bytes())
                .await
                .unwrap();
            assert_eq!((h.code, &got[..]), (0, body.as_bytes()));
        }
    });
    assert_eq!(backend.connections.load(Ordering::SeqCst), 2, "no redials");
    let mut shards = backend.shards.lock().unwrap().clone();
    shards.sort();
    assert_eq!(shards, vec!["0", "1"]);
    let opens = backend
        .seen()
        .iter()
        .filter(|s| matches!(s, Seen::Open { .. }))
        .count();
    assert_eq!(
        opens, 16,
        "each session announced once, on its own shard's link"
    );
}

#[test]
fn a_shutdown_answers_the_calls_in_flight_before_the_notice_and_1001() {
    let backend = LinkBackend::start();
    let g = gateway_with_link(&backend);
    run(async {
        let (mut c, m) = connect(&g, &user_token(&["user"])).await;
        let id = c
            .send_request(0, 0, 0, m.guid("/slow/300").unwrap(), b"late")
            .await
            .unwrap();
        std::thread::sleep(Duration::from_millis(50));
        g.shutdown();
        // The answer first, then the notice, then the close.
        let mut got = Vec::new();
        loop {
            match c.next().await.unwrap() {
                Incoming::Response(h, body) => {
                    assert_eq!((h.message_id, h.code, &body[..]), (id, 0, &b"late"[..]));
                    got.push("answer");
                }
                Incoming::Push(_, p) => {
                    let v: serde_json::Value = serde_json::from_slice(&p).unwrap();
                    assert_eq!(v["eventName"], "connect.disconnect-notification");
                    got.push("notice");
                }
                Incoming::Close(cl) => {
                    assert_eq!(cl.map(|c| c.0), Some(1001));
                    got.push("close");
                    break;
                }
                _ => {}
            }
        }
        assert_eq!(got, ["answer", "notice", "close"]);
    });
}
