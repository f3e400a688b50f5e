//! Raw routes (docs/LINK.md "Raw routes", seed 003) on real sockets: a client on
//! `/lobby` speaks plain WebSocket messages; the route's link backend hears RAW_OPEN,
//! MESSAGE (text and binary, as sent) and CLOSED, and answers with SEND (echo) and
//! CLOSE; authentication and roles as for any client; one connection per user per
//! route, the newer replacing the older.

mod common;

use std::time::{Duration, Instant};

use common::link::*;
use common::*;
use ringgate::client::{Client, ConnectOptions, Incoming};
use ringgate::config::Config;
use ringgate::proto::frame::OpCode;

fn raw_config(link_url: &str) -> Config {
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
path = "/connect"
shards = 2
admin_listen = "127.0.0.1:0"
drain_window_ms = 200
[auth]
hs256_secret = "{SECRET}"
[[services]]
name = "lobby"
link = "{link_url}"
raw_routes = [ {{ path = "/lobby", roles = ["user"] }}, {{ path = "/spectate" }} ]
"#
    );
    Config::from_toml_str(&text, &[]).expect("raw route config")
}

fn gateway_with_raw(backend: &LinkBackend) -> ringgate::Gateway {
    let g = gateway(raw_config(&backend.url()));
    backend.conn(0);
    backend.conn(1);
    g
}

async fn open(g: &ringgate::Gateway, path: &str, token: &str) -> Client {
    let opts = ConnectOptions {
        path: path.into(),
        token: Some(token.into()),
        raw: true,
        ..ConnectOptions::default()
    };
    Client::connect(g.addr, &opts).await.expect("raw upgrade")
}

/// The next message that is not a ping, within 5 s.
async fn next(c: &mut Client) -> Incoming {
    loop {
        match monoio::time::timeout(Duration::from_secs(5), c.next()).await {
            Ok(Ok(Incoming::Ping(_))) => {}
            Ok(Ok(m)) => return m,
            Ok(Err(e)) => panic!("connection failed: {e}"),
            Err(_) => panic!("nothing within 5 s"),
        }
    }
}

#[test]
fn a_raw_route_relays_text_and_binary_both_ways_with_open_and_close_events() {
    let backend = LinkBackend::start();
    let g = gateway_with_raw(&backend);
    run(async {
        let token = token("player-1", &["user"], Some("s-raw-1"), unix_now() + 3600);
        let mut c = open(&g, "/lobby", &token).await;
        c.send_frame(OpCode::Text, "héllo".as_bytes(), true)
            .await
            .unwrap();
        assert_eq!(next(&mut c).await, Incoming::Text("héllo".into()));
        c.send_binary(&[0, 1, 2, 255]).await.unwrap();
        assert_eq!(
            next(&mut c).await,
            Incoming::Binary(bytes::Bytes::from_static(&[0, 1, 2, 255]))
        );
        // The backend's CLOSE reaches the client with its code and reason.
        c.send_frame(OpCode::Text, b"close-me", true).await.unwrap();
        assert_eq!(
            next(&mut c).await,
            Incoming::Close(Some((4000, "bye".into())))
        );
    });
    let seen = backend.wait_for(|s| s.iter().any(|e| matches!(e, Seen::Closed { .. })));
    let session = seen
        .iter()
        .find_map(|e| match e {
            Seen::RawOpen {
                session,
                path,
                session_id,
                roles,
            } => {
                assert_eq!(
                    (path.as_str(), session_id.as_str(), roles.as_str()),
                    ("/lobby", "s-raw-1", "user")
                );
                Some(*session)
            }
            _ => None,
        })
        .expect("RAW_OPEN");
    let messages: Vec<(u8, Vec<u8>)> = seen
        .iter()
        .filter_map(|e| match e {
            Seen::Message {
                session: s,
                flags,
                payload,
            } if *s == session => Some((*flags, payload.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        messages,
        [
            (0, "héllo".as_bytes().to_vec()),
            (1, vec![0, 1, 2, 255]),
            (0, b"close-me".to_vec())
        ]
    );
    assert!(seen.contains(&Seen::Closed { session }));
    assert!(
        !seen
            .iter()
            .any(|e| matches!(e, Seen::Open { .. } | Seen::Request { .. })),
        "a raw client is no Bannou session"
    );
}

#[test]
fn a_raw_route_authenticates_like_any_upgrade_and_checks_its_roles() {
    let backend = LinkBackend::start();
    let g = gateway_with_raw(&backend);
    let req = |path: &str, extra: &str| raw_status(g.addr, &upgrade_request(path, extra));
    assert_eq!(req("/lobby", ""), 401, "no token");
    let guest = token("g", &["guest"], None, unix_now() + 3600);
    assert_eq!(
        req("/lobby", &format!("Authorization: Bearer {guest}\r\n")),
        403,
        "a role the route does not permit"
    );
    assert_eq!(
        req("/spectate", &format!("Authorization: Bearer {guest}\r\n")),
        101,
        "a route open to any authenticated client"
    );
    assert_eq!(
        req("/nowhere", &format!("Authorization: Bearer {guest}\r\n")),
        404
    );
}

#[test]
fn a_newer_connection_of_the_same_user_on_a_route_replaces_the_older() {
    let backend = LinkBackend::start();
    let g = gateway_with_raw(&backend);
    run(async {
        let t = token("same-player", &["user"], None, unix_now() + 3600);
        let mut older = open(&g, "/lobby", &t).await;
        // Another route is another claim: it stays.
        let mut other_route = open(&g, "/spectate", &t).await;
        let mut newer = open(&g, "/lobby", &t).await;
        assert_eq!(
            next(&mut older).await,
            Incoming::Close(Some((1000, "replaced by a newer connection".into())))
        );
        newer
            .send_frame(OpCode::Text, b"still here", true)
            .await
            .unwrap();
        assert_eq!(next(&mut newer).await, Incoming::Text("still here".into()));
        other_route
            .send_frame(OpCode::Text, b"me too", true)
            .await
            .unwrap();
        assert_eq!(
            next(&mut other_route).await,
            Incoming::Text("me too".into())
        );
    });
}

#[test]
fn raw_clients_are_closed_with_1011_when_their_backend_link_is_lost() {
    let backend = LinkBackend::start();
    let g = gateway_with_raw(&backend);
    run(async {
        let t = token("p", &["user"], None, unix_now() + 3600);
        let mut c = open(&g, "/lobby", &t).await;
        c.send_frame(OpCode::Text, b"hi", true).await.unwrap();
        assert_eq!(next(&mut c).await, Incoming::Text("hi".into()));
        backend.drop_connections();
        let t0 = Instant::now();
        match next(&mut c).await {
            Incoming::Close(Some((code, _))) => assert_eq!(code, 1011),
            other => panic!("expected a close, got {other:?}"),
        }
        assert!(t0.elapsed() < Duration::from_secs(5));
    });
}

#[test]
fn a_raw_route_whose_link_is_down_answers_503_counted_as_unavailable_not_draining() {
    // Port 1 refuses: the route's link never comes up.
    let g = gateway(raw_config("ws://127.0.0.1:1/link"));
    let t = token("p", &["user"], None, unix_now() + 3600);
    let request = upgrade_request("/lobby", &format!("Authorization: Bearer {t}\r\n"));
    assert_eq!(raw_status(g.addr, &request), 503);
    let series = |result: &str| format!("ringgate_handshakes_total{{result=\"{result}\"}} ");
    let deadline = Instant::now() + Duration::from_secs(2);
    let text = loop {
        let text = g.metrics.render();
        if text.contains(&format!("{}1", series("unavailable"))) || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        text.contains(&format!("{}1", series("unavailable"))),
        "counted as unavailable: {text}"
    );
    assert!(
        !text.contains(&format!("{}1", series("draining"))),
        "not as a drain"
    );
}
