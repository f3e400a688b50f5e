//! Integration tests of the client edge on real sockets: upgrade and auth, the manifest,
//! forwarding to a real HTTP backend, response codes, channels, and WebSocket rules.

mod common;

use std::time::{Duration, Instant};

use common::*;
use ringgate::client::{Client, ClientError, ConnectOptions, Incoming, TokenVia};
use ringgate::proto::bannou::{flags, ResponseCode};
use ringgate::proto::frame::OpCode;

fn endpoints(m: &ringgate::client::Manifest) -> Vec<String> {
    let mut e: Vec<String> = m.apis.iter().map(|a| a.endpoint.clone()).collect();
    e.sort();
    e
}

#[test]
fn manifest_lists_only_endpoints_the_sessions_roles_permit() {
    let backend = Backend::start();
    let g = gateway(config(&backend, "", ""));
    run(async {
        let (_c, user) = connect(&g, &user_token(&["user"])).await;
        let e = endpoints(&user);
        assert!(e.contains(&"/echo".to_string()));
        assert!(e.contains(&"/echo/public".to_string()));
        assert!(e.contains(&"/dead/call".to_string()));
        assert!(!e.contains(&"/echo/admin".to_string()));
        assert_eq!(user.reason, "initial");
        assert_eq!(user.version, 1);
        assert!(user.apis.iter().all(|a| !a.service.is_empty()));

        let (_c, admin) = connect(&g, &user_token(&["admin"])).await;
        assert_eq!(endpoints(&admin), vec!["/echo/admin", "/echo/public"]);

        // The same endpoint has a different GUID in another session.
        assert_ne!(user.guid("/echo/public"), admin.guid("/echo/public"));
    });
}

#[test]
fn anonymous_sessions_see_only_endpoints_that_need_no_role() {
    let backend = Backend::start();
    let g = gateway(config(&backend, "", "allow_anonymous = true"));
    run(async {
        let mut c = Client::connect(g.addr, &ConnectOptions::default())
            .await
            .unwrap();
        let m = c.manifest().await.unwrap();
        assert_eq!(endpoints(&m), vec!["/echo/public"]);
        let (h, body) = c
            .call(m.guid("/echo/public").unwrap(), b"{\"a\":1}")
            .await
            .unwrap();
        assert_eq!(h.code, 0);
        assert_eq!(&body[..], b"{\"a\":1}");
        let seen = backend.seen("/echo/public");
        assert_eq!(seen[0].header("X-Roles"), Some("anonymous"));
    });
}

#[test]
fn call_forwards_payload_byte_for_byte_with_session_headers() {
    let backend = Backend::start();
    let g = gateway(config(&backend, "", ""));
    run(async {
        let tok = token(
            "acct-42",
            &["user", "tester"],
            Some("sess-abc"),
            unix_now() + 600,
        );
        let (mut c, m) = connect(&g, &tok).await;
        assert_eq!(m.session_id, "sess-abc");
        let payload: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
        let id = c
            .send_request(flags::BINARY, 0, 7, m.guid("/echo").unwrap(), &payload)
            .await
            .unwrap();
        let (h, body) = c.response(id).await.unwrap();
        assert_eq!(h.code, 0);
        assert_eq!(h.flags, flags::BINARY | flags::RESPONSE);
        assert_eq!(h.sequence, 7);
        assert_eq!(h.channel, 0);
        assert_eq!(&body[..], &payload[..]);
        let seen = backend.seen("/echo");
        assert_eq!(seen.len(), 1);
        let r = &seen[0];
        assert_eq!(r.method, "POST");
        assert_eq!(r.body, payload);
        assert_eq!(r.header("X-Bannou-Session-Id"), Some("sess-abc"));
        assert_eq!(r.header("X-Account-Id"), Some("acct-42"));
        assert_eq!(r.header("X-Roles"), Some("user,tester"));
        // `{session id}:{message id in 16 hex digits}`.
        let cid = format!("sess-abc:{id:016x}");
        assert_eq!(r.header("X-Correlation-Id"), Some(cid.as_str()));
        assert_eq!(r.header("Content-Type"), Some("application/octet-stream"));
        assert_eq!(r.header("Accept"), Some("application/json"));
        // A JSON payload is labelled as JSON.
        let (h, _) = c
            .call(m.guid("/echo").unwrap(), b"{\"a\":1}")
            .await
            .unwrap();
        assert_eq!(h.code, 0);
        let r = &backend.seen("/echo")[1];
        assert_eq!(
            r.header("Content-Type"),
            Some("application/json; charset=utf-8")
        );
        assert_eq!(r.header("Accept"), Some("application/json"));
    });
}

#[test]
fn backend_statuses_map_to_response_codes_with_empty_error_payloads() {
    let backend = Backend::start();
    let g = gateway(config(&backend, "", ""));
    run(async {
        let (mut c, m) = connect(&g, &user_token(&["user"])).await;
        for (status, code) in [
            (200, 0u8),
            (400, 50),
            (401, 52),
            (403, 52),
            (404, 51),
            (409, 53),
            (500, 60),
        ] {
            let guid = m.guid(&format!("/status/{status}")).unwrap();
            let (h, body) = c.call(guid, b"{}").await.unwrap();
            assert_eq!(h.code, code, "status {status}");
            if code == 0 {
                assert_eq!(&body[..], b"status body");
            } else {
                assert!(body.is_empty(), "status {status} carried a payload");
            }
        }
    });
}

#[test]
fn backend_timeout_answers_60_after_the_request_timeout() {
    let backend = Backend::start();
    let g = gateway(config(&backend, "", ""));
    run(async {
        let (mut c, m) = connect(&g, &user_token(&["user"])).await;
        let start = Instant::now();
        let (h, _) = c.call(m.guid("/delay/3000").unwrap(), b"{}").await.unwrap();
        let took = start.elapsed();
        assert_eq!(h.code, 60);
        assert!(took >= Duration::from_millis(900), "{took:?}");
        assert!(took < Duration::from_millis(2500), "{took:?}");
    });
}

#[test]
fn unreachable_backend_answers_60_at_once() {
    let backend = Backend::start();
    let g = gateway(config(&backend, "", ""));
    run(async {
        let (mut c, m) = connect(&g, &user_token(&["user"])).await;
        let start = Instant::now();
        let (h, body) = c.call(m.guid("/dead/call").unwrap(), b"{}").await.unwrap();
        assert_eq!(h.code, 60);
        assert!(body.is_empty());
        assert!(
            start.elapsed() < Duration::from_millis(500),
            "{:?}",
            start.elapsed()
        );
    });
}

fn expect_rejected(g: &ringgate::Gateway, opts: ConnectOptions, status: u16) {
    run(async {
        match Client::connect(g.addr, &opts).await {
            Err(ClientError::Rejected { status: s, .. }) => assert_eq!(s, status),
            other => panic!("expected HTTP {status}, got {other:?}"),
        }
    });
}

fn with_token(t: &str) -> ConnectOptions {
    ConnectOptions {
        token: Some(t.to_string()),
        ..ConnectOptions::default()
    }
}

#[test]
fn bad_tokens_get_401_before_any_upgrade() {
    let backend = Backend::start();
    let g = gateway(config(&backend, "", ""));
    // Missing.
    expect_rejected(&g, ConnectOptions::default(), 401);
    // Malformed.
    expect_rejected(&g, with_token("not.a.jwt"), 401);
    // Expired (beyond the leeway).
    expect_rejected(
        &g,
        with_token(&token("a", &["user"], None, unix_now() - 3600)),
        401,
    );
    // Signed with another key.
    let other = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({"sub": "a", "exp": unix_now() + 600}),
        &jsonwebtoken::EncodingKey::from_secret(b"another-secret-another-secret-0123456789"),
    )
    .unwrap();
    expect_rejected(&g, with_token(&other), 401);
    // alg: none.
    use base64::Engine;
    let b64 = |v: &serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    };
    let none = format!(
        "{}.{}.",
        b64(&serde_json::json!({"alg": "none", "typ": "JWT"})),
        b64(&serde_json::json!({"sub": "a", "roles": ["admin"], "exp": unix_now() + 600}))
    );
    expect_rejected(&g, with_token(&none), 401);
    // No exp.
    let no_exp = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({"sub": "a"}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    expect_rejected(&g, with_token(&no_exp), 401);
    let text = g.metrics.render();
    assert!(
        text.contains("ringgate_handshakes_total{result=\"unauthorized\"} 6"),
        "{text}"
    );
    assert!(text.contains("ringgate_connections_total 0"), "{text}");
}

#[test]
fn token_is_accepted_from_query_and_subprotocol() {
    let backend = Backend::start();
    let g = gateway(config(&backend, "", ""));
    run(async {
        let (_c, m) = connect_via(&g, &user_token(&["user"]), TokenVia::Query).await;
        assert!(m.guid("/echo").is_some());
        let (_c, m) = connect_via(&g, &user_token(&["user"]), TokenVia::Protocol).await;
        assert!(m.guid("/echo").is_some());
    });
}

#[test]
fn origin_outside_the_allow_list_gets_403() {
    let backend = Backend::start();
    let g = gateway(config(
        &backend,
        "",
        "origins = [\"https://game.example.com\"]",
    ));
    let mut opts = with_token(&user_token(&["user"]));
    opts.origin = Some("https://evil.example.com".into());
    expect_rejected(&g, opts.clone(), 403);
    opts.origin = Some("https://game.example.com".into());
    run(async {
        let mut c = Client::connect(g.addr, &opts).await.unwrap();
        c.manifest().await.unwrap();
    });
}

#[test]
fn wrong_path_method_and_version_get_their_http_statuses() {
    let backend = Backend::start();
    let g = gateway(config(&backend, "", ""));
    let auth = format!("Authorization: Bearer {}\r\n", user_token(&["user"]));
    assert_eq!(
        raw_status(g.addr, &upgrade_request("/elsewhere", &auth)),
        404
    );
    let post = upgrade_request("/connect", &auth).replacen("GET", "POST", 1);
    assert_eq!(raw_status(g.addr, &post), 405);
    let v12 = upgrade_request("/connect", &auth).replace("Version: 13", "Version: 12");
    assert_eq!(raw_status(g.addr, &v12), 426);
    let no_upgrade = upgrade_request("/connect", &auth).replace("Upgrade: websocket\r\n", "");
    assert_eq!(raw_status(g.addr, &no_upgrade), 400);
    let huge = upgrade_request("/connect", &format!("X-Pad: {}\r\n", "a".repeat(9000)));
    assert_eq!(raw_status(g.addr, &huge), 431);
}

#[test]
fn unknown_and_foreign_guids_answer_30() {
    let backend = Backend::start();
    let g = gateway(config(&backend, "", ""));
    run(async {
        let (mut a, ma) = connect(&g, &user_token(&["user"])).await;
        let (_b, mb) = connect(&g, &user_token(&["user"])).await;
        let (h, body) = a.call([0x42; 16], b"{}").await.unwrap();
        assert_eq!(h.code, ResponseCode::ServiceNotFound.as_u8());
        assert!(body.is_empty());
        // B's GUID for an endpoint A may also call is still not A's.
        let (h, _) = a.call(mb.guid("/echo").unwrap(), b"{}").await.unwrap();
        assert_eq!(h.code, 30);
        // A's own GUID works.
        let (h, _) = a.call(ma.guid("/echo").unwrap(), b"{}").await.unwrap();
        assert_eq!(h.code, 0);
        assert_eq!(backend.seen("/echo").len(), 1);
    });
}

#[test]
fn text_frame_answers_14() {
    let backend = Backend::start();
    let g = gateway(config(&backend, "", ""));
    run(async {
        let (mut c, _) = connect(&g, &user_token(&["user"])).await;
        c.send_frame(OpCode::Text, b"{\"hello\":1}", true)
            .await
            .unwrap();
        match c.next().await.unwrap() {
            Incoming::Response(h, body) => {
                assert_eq!(h.code, 14);
                assert_eq!(h.flags & flags::RESPONSE, flags::RESPONSE);
                assert!(body.is_empty());
            }
            other => panic!("{other:?}"),
        }
    });
}

#[test]
fn oversize_message_closes_with_1009() {
    let backend = Backend::start();
    let g = gateway(config(&backend, "", ""));
    run(async {
        let (mut c, m) = connect(&g, &user_token(&["user"])).await;
        let big = vec![b'x'; 5000]; // max_message_bytes = 4096
        c.send_request(0, 0, 0, m.guid("/echo").unwrap(), &big)
            .await
            .unwrap();
        match c.next().await.unwrap() {
            Incoming::Close(Some((code, _))) => assert_eq!(code, 1009),
            other => panic!("{other:?}"),
        }
    });
}

#[test]
fn unmasked_client_frame_closes_with_1002() {
    let backend = Backend::start();
    let g = gateway(config(&backend, "", ""));
    run(async {
        let (mut c, _) = connect(&g, &user_token(&["user"])).await;
        // A binary frame without the mask bit.
        c.write_all(&[0x82, 0x02, 0xAA, 0xBB]).await.unwrap();
        match c.next().await.unwrap() {
            Incoming::Close(Some((code, _))) => assert_eq!(code, 1002),
            other => panic!("{other:?}"),
        }
    });
}

#[test]
fn ordered_channel_keeps_order_while_channel_zero_lets_a_fast_call_overtake() {
    let backend = Backend::start();
    let g = gateway(config(&backend, "", ""));
    run(async {
        let (mut c, m) = connect(&g, &user_token(&["user"])).await;
        let slow = m.guid("/delay/300").unwrap();
        let fast = m.guid("/delay/10").unwrap();

        // Channel 0: the fast call overtakes the slow one.
        let s = c.send_request(0, 0, 1, slow, b"slow").await.unwrap();
        let f = c.send_request(0, 0, 2, fast, b"fast").await.unwrap();
        let mut order = Vec::new();
        while order.len() < 2 {
            if let Incoming::Response(h, _) = c.next().await.unwrap() {
                order.push(h.message_id);
            }
        }
        assert_eq!(order, vec![f, s]);

        // Channel 5: strictly in arrival order, even though the first is slowest.
        let a = c.send_request(0, 5, 1, slow, b"a").await.unwrap();
        let b = c.send_request(0, 5, 2, fast, b"b").await.unwrap();
        let d = c.send_request(0, 5, 3, fast, b"d").await.unwrap();
        let mut order = Vec::new();
        while order.len() < 3 {
            if let Incoming::Response(h, body) = c.next().await.unwrap() {
                assert_eq!(h.channel, 5);
                order.push((h.message_id, body));
            }
        }
        let ids: Vec<u64> = order.iter().map(|(i, _)| *i).collect();
        assert_eq!(ids, vec![a, b, d]);
        assert_eq!(&order[0].1[..], b"a");
    });
}

#[test]
fn channel_above_the_limit_answers_13() {
    let backend = Backend::start();
    let g = gateway(config(&backend, "max_channels = 10", ""));
    run(async {
        let (mut c, m) = connect(&g, &user_token(&["user"])).await;
        let id = c
            .send_request(0, 11, 1, m.guid("/echo").unwrap(), b"{}")
            .await
            .unwrap();
        let (h, _) = c.response(id).await.unwrap();
        assert_eq!(h.code, 13);
        let id = c
            .send_request(0, 10, 1, m.guid("/echo").unwrap(), b"{}")
            .await
            .unwrap();
        let (h, _) = c.response(id).await.unwrap();
        assert_eq!(h.code, 0);
    });
}

#[test]
fn requests_beyond_the_rate_limit_answer_12() {
    let backend = Backend::start();
    let g = gateway(config(
        &backend,
        "rate_limit_per_sec = 1\nrate_limit_burst = 3",
        "",
    ));
    run(async {
        let (mut c, m) = connect(&g, &user_token(&["user"])).await;
        let guid = m.guid("/echo").unwrap();
        let mut codes = Vec::new();
        for _ in 0..5 {
            let (h, _) = c.call(guid, b"{}").await.unwrap();
            codes.push(h.code);
        }
        assert_eq!(codes, vec![0, 0, 0, 12, 12]);
    });
}

#[test]
fn empty_payload_and_bad_header_answer_10() {
    let backend = Backend::start();
    let g = gateway(config(&backend, "", ""));
    run(async {
        let (mut c, m) = connect(&g, &user_token(&["user"])).await;
        let (h, _) = c.call(m.guid("/echo").unwrap(), b"").await.unwrap();
        assert_eq!(h.code, 10);
        // A message shorter than the 31-byte header.
        c.send_binary(&[0u8; 10]).await.unwrap();
        match c.next().await.unwrap() {
            Incoming::Response(h, _) => assert_eq!(h.code, 10),
            other => panic!("{other:?}"),
        }
    });
}

#[test]
fn meta_request_is_forwarded_as_get_of_the_meta_path() {
    let backend = Backend::start();
    let g = gateway(config(&backend, "", ""));
    run(async {
        let (mut c, m) = connect(&g, &user_token(&["user"])).await;
        let id = c
            .send_request(flags::META, 1, 1, m.guid("/echo").unwrap(), b"")
            .await
            .unwrap();
        let (h, body) = c.response(id).await.unwrap();
        assert_eq!(h.code, 0);
        assert_eq!(h.flags, flags::META | flags::RESPONSE);
        assert_eq!(&body[..], br#"{"path":"/echo/meta/request-schema"}"#);
        let seen = backend.seen("/echo/meta/request-schema");
        assert_eq!(seen[0].method, "GET");
    });
}

#[test]
fn event_requests_are_forwarded_without_a_response() {
    let backend = Backend::start();
    let g = gateway(config(&backend, "", ""));
    run(async {
        let (mut c, m) = connect(&g, &user_token(&["user"])).await;
        c.send_request(
            flags::EVENT,
            0,
            0,
            m.guid("/echo/public").unwrap(),
            b"{\"e\":1}",
        )
        .await
        .unwrap();
        // The next response must be the one to the call below, not to the event.
        let (h, _) = c.call(m.guid("/echo").unwrap(), b"{}").await.unwrap();
        assert_eq!(h.code, 0);
        for _ in 0..100 {
            if !backend.seen("/echo/public").is_empty() {
                return;
            }
            monoio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the event never reached the backend");
    });
}

#[test]
fn ping_is_answered_with_pong_carrying_the_same_payload() {
    let backend = Backend::start();
    let g = gateway(config(&backend, "", ""));
    run(async {
        let (mut c, _) = connect(&g, &user_token(&["user"])).await;
        c.send_frame(OpCode::Ping, b"are-you-there", true)
            .await
            .unwrap();
        match c.next().await.unwrap() {
            Incoming::Pong(p) => assert_eq!(&p[..], b"are-you-there"),
            other => panic!("{other:?}"),
        }
    });
}

#[test]
fn client_close_is_echoed_with_its_code() {
    let backend = Backend::start();
    let g = gateway(config(&backend, "", ""));
    run(async {
        let (mut c, _) = connect(&g, &user_token(&["user"])).await;
        let reply = c.close(1000).await.unwrap();
        assert_eq!(reply.map(|r| r.0), Some(1000));
    });
}

#[test]
fn shutdown_closes_every_connection_with_1001() {
    let backend = Backend::start();
    let g = gateway(config(&backend, "", ""));
    let addr = g.addr;
    let (tx, rx) = std::sync::mpsc::channel();
    let clients = std::thread::spawn(move || {
        run(async move {
            let mut cs = Vec::new();
            for _ in 0..4 {
                let opts = with_token(&user_token(&["user"]));
                let mut c = Client::connect(addr, &opts).await.unwrap();
                c.manifest().await.unwrap();
                cs.push(c);
            }
            tx.send(()).unwrap();
            let mut codes = Vec::new();
            for c in &mut cs {
                loop {
                    match c.next().await.unwrap() {
                        Incoming::Close(close) => {
                            codes.push(close.map(|c| c.0));
                            break;
                        }
                        _ => continue,
                    }
                }
            }
            codes
        })
    });
    rx.recv().unwrap();
    let start = Instant::now();
    assert!(g.stop());
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(clients.join().unwrap(), vec![Some(1001); 4]);
}

#[test]
fn admin_listener_serves_health_readiness_and_metrics() {
    let backend = Backend::start();
    let g = gateway(config(&backend, "", ""));
    run(async {
        let (mut c, m) = connect(&g, &user_token(&["user"])).await;
        c.call(m.guid("/status/404").unwrap(), b"{}").await.unwrap();
    });
    let get = |path: &str| -> (u16, String) {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(g.admin_addr).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let status = out[9..12].parse().unwrap();
        (status, out)
    };
    assert_eq!(get("/healthz").0, 200);
    assert_eq!(get("/readyz").0, 200);
    let (status, text) = get("/metrics");
    assert_eq!(status, 200);
    for needle in [
        "ringgate_connections_total 1",
        "ringgate_handshakes_total{result=\"ok\"} 1",
        "ringgate_requests_total{service=\"account\",code=\"51\"} 1",
        "ringgate_backend_latency_seconds_count{service=\"account\"} 1",
        "ringgate_bytes_in_total",
        "ringgate_frames_out_total",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    assert_eq!(get("/nope").0, 404);
}

#[test]
fn an_independent_websocket_client_can_upgrade_and_read_the_manifest() {
    let backend = Backend::start();
    let g = gateway(config(&backend, "", ""));
    let url = format!("ws://{}/connect", g.addr);
    let mut req = tungstenite::client::IntoClientRequest::into_client_request(url).unwrap();
    req.headers_mut().insert(
        "Authorization",
        format!("Bearer {}", user_token(&["user"])).parse().unwrap(),
    );
    let (mut ws, resp) = tungstenite::connect(req).unwrap();
    assert_eq!(resp.status(), 101);
    // The upgrade's ping first; tungstenite answers it, and the manifest follows.
    assert!(matches!(ws.read().unwrap(), tungstenite::Message::Ping(_)));
    match ws.read().unwrap() {
        tungstenite::Message::Binary(b) => {
            assert_eq!(b[0], 0x10);
            let json: serde_json::Value = serde_json::from_slice(&b[31..]).unwrap();
            assert_eq!(json["eventName"], "connect.capability-manifest");
        }
        other => panic!("{other:?}"),
    }
    ws.close(None).unwrap();
}

#[test]
fn many_requests_on_channel_zero_are_in_flight_at_once() {
    let backend = Backend::start();
    let g = gateway(config(&backend, "", ""));
    run(async {
        let (mut c, m) = connect(&g, &user_token(&["user"])).await;
        let slow = m.guid("/delay/300").unwrap();
        let start = Instant::now();
        let mut ids = std::collections::HashSet::new();
        for i in 0..40u32 {
            let body = format!("{{\"i\":{i}}}");
            ids.insert(
                c.send_request(0, 0, i, slow, body.as_bytes())
                    .await
                    .unwrap(),
            );
        }
        while !ids.is_empty() {
            if let Incoming::Response(h, body) = c.next().await.unwrap() {
                assert_eq!(h.code, 0);
                assert_eq!(body, format!("{{\"i\":{}}}", h.sequence).as_bytes());
                assert!(ids.remove(&h.message_id));
            }
        }
        // One at a time would take 40 × 300 ms = 12 s.
        assert!(
            start.elapsed() < Duration::from_secs(4),
            "{:?}",
            start.elapsed()
        );
    });
}

#[test]
fn pipelined_backend_connection_answers_every_request_with_its_own_body() {
    let backend = Backend::start();
    let mut cfg = config(&backend, "", "");
    // One backend connection per shard, 64 requests deep.
    cfg.backend.max_conns_per_shard = 1;
    cfg.backend.pipeline_depth = 64;
    let g = gateway(cfg);
    run(async {
        let (mut c, m) = connect(&g, &user_token(&["user"])).await;
        let echo = m.guid("/echo").unwrap();
        let mut ids = std::collections::HashSet::new();
        for i in 0..200u32 {
            let body = format!("{{\"i\":{i},\"pad\":\"{}\"}}", "x".repeat(i as usize * 7));
            ids.insert(
                c.send_request(0, 0, i, echo, body.as_bytes())
                    .await
                    .unwrap(),
            );
        }
        while !ids.is_empty() {
            if let Incoming::Response(h, body) = c.next().await.unwrap() {
                assert_eq!(h.code, 0);
                let want = format!(
                    "{{\"i\":{},\"pad\":\"{}\"}}",
                    h.sequence,
                    "x".repeat(h.sequence as usize * 7)
                );
                assert_eq!(body, want.as_bytes());
                assert!(ids.remove(&h.message_id));
            }
        }
    });
    // Every request went over the one connection of the client's shard.
    assert_eq!(backend.seen("/echo").len(), 200);
    assert_eq!(backend.connections(), 1);
}

#[test]
fn asymmetric_keys_from_config_authenticate_sessions() {
    let backend = Backend::start();
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let auth = format!(
        "rs256_public_key = \"{fixtures}/test_only_rsa2048_public.pem\"\nes256_public_key = \"{fixtures}/test_only_ec_p256_public.pem\"\neddsa_public_key = \"{fixtures}/test_only_ed25519_public.pem\""
    );
    let g = gateway(config(&backend, "", &auth));
    let claims = serde_json::json!({"sub": "a", "roles": ["user"], "exp": unix_now() + 600});
    for (alg, file) in [
        (
            jsonwebtoken::Algorithm::RS256,
            "test_only_rsa2048_private.pem",
        ),
        (
            jsonwebtoken::Algorithm::ES256,
            "test_only_ec_p256_private.pem",
        ),
        (
            jsonwebtoken::Algorithm::EdDSA,
            "test_only_ed25519_private.pem",
        ),
    ] {
        let pem = std::fs::read(format!("{fixtures}/{file}")).unwrap();
        let key = match alg {
            jsonwebtoken::Algorithm::RS256 => jsonwebtoken::EncodingKey::from_rsa_pem(&pem),
            jsonwebtoken::Algorithm::ES256 => jsonwebtoken::EncodingKey::from_ec_pem(&pem),
            _ => jsonwebtoken::EncodingKey::from_ed_pem(&pem),
        }
        .unwrap();
        let t = jsonwebtoken::encode(&jsonwebtoken::Header::new(alg), &claims, &key).unwrap();
        run(async {
            let (_c, m) = connect(&g, &t).await;
            assert!(m.guid("/echo").is_some(), "{alg:?}");
        });
    }
    // An RS256 token signed with a key that is not the configured one.
    let other = std::fs::read(format!("{fixtures}/test_only_rsa2048_other_private.pem")).unwrap();
    let t = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_rsa_pem(&other).unwrap(),
    )
    .unwrap();
    expect_rejected(&g, with_token(&t), 401);
}

#[test]
fn idle_client_gets_a_server_ping_and_a_silent_one_is_dropped() {
    let backend = Backend::start();
    let g = gateway(config(
        &backend,
        "idle_ping_secs = 1\npong_timeout_secs = 1",
        "",
    ));
    run(async {
        let (mut silent, _) = connect(&g, &user_token(&["user"])).await;
        // A client that answers pings (next() does) stays connected...
        let (mut alive, m) = connect(&g, &user_token(&["user"])).await;
        let start = Instant::now();
        let mut pings = 0;
        // Long enough for a ping (1-2 s on the coarse clock) and its deadline (1-2 s
        // more), with room for a loaded machine: the silent client must be dropped
        // before it reads again below, since reading answers pings.
        while start.elapsed() < Duration::from_millis(6000) {
            if let Ok(Ok(Incoming::Ping(_))) =
                monoio::time::timeout(Duration::from_millis(200), alive.next()).await
            {
                pings += 1;
            }
        }
        assert!(pings >= 1, "no server ping in 6 s");
        // ...while one that reads and sends nothing is dropped after the pong deadline.
        let mut saw_ping = false;
        let end = loop {
            match silent.next().await {
                Ok(Incoming::Ping(_)) => saw_ping = true,
                Ok(_) => {}
                Err(e) => break e,
            }
        };
        assert!(saw_ping);
        assert!(
            matches!(
                end,
                ClientError::Closed { code: None, .. } | ClientError::Io(_)
            ),
            "{end:?}"
        );
        // The answering client still works.
        let (h, _) = alive.call(m.guid("/echo").unwrap(), b"{}").await.unwrap();
        assert_eq!(h.code, 0);
    });
}

#[test]
fn session_is_closed_with_4001_when_its_token_expires() {
    let backend = Backend::start();
    let g = gateway(config(&backend, "", "leeway_secs = 0"));
    run(async {
        let t = token("a", &["user"], None, unix_now() + 2);
        let (mut c, _) = connect(&g, &t).await;
        let start = Instant::now();
        let close = loop {
            if let Incoming::Close(c) = c.next().await.unwrap() {
                break c;
            }
        };
        assert_eq!(close.map(|c| c.0), Some(4001));
        assert!(start.elapsed() < Duration::from_secs(5));
    });
}

#[test]
fn payload_over_the_services_request_limit_answers_11() {
    let backend = Backend::start();
    let g = gateway(config(&backend, "", ""));
    run(async {
        let (mut c, m) = connect(&g, &user_token(&["user"])).await;
        let guid = m.guid("/echo/small").unwrap();
        let (h, body) = c.call(guid, &[b'x'; 101]).await.unwrap();
        assert_eq!(h.code, 11);
        assert!(body.is_empty());
        let (h, body) = c.call(guid, &[b'x'; 100]).await.unwrap();
        assert_eq!(h.code, 0);
        assert_eq!(body.len(), 100);
        assert_eq!(backend.seen("/echo/small").len(), 1);
    });
}

#[test]
fn the_legacy_epoll_driver_serves_the_same_protocol() {
    let backend = Backend::start();
    let g = gateway(config(&backend, "force_legacy_driver = true", ""));
    run(async {
        let (mut c, m) = connect(&g, &user_token(&["user"])).await;
        let payload = vec![7u8; 2000];
        let (h, body) = c.call(m.guid("/echo").unwrap(), &payload).await.unwrap();
        assert_eq!(h.code, 0);
        assert_eq!(&body[..], &payload[..]);
        c.send_frame(OpCode::Ping, b"p", true).await.unwrap();
        match c.next().await.unwrap() {
            Incoming::Pong(p) => assert_eq!(&p[..], b"p"),
            other => panic!("{other:?}"),
        }
    });
    assert!(g.stop());
}

#[test]
fn past_the_inflight_bound_requests_wait_instead_of_failing() {
    let backend = Backend::start();
    let g = gateway(config(&backend, "max_inflight_per_connection = 4", ""));
    run(async {
        let (mut c, m) = connect(&g, &user_token(&["user"])).await;
        let slow = m.guid("/delay/300").unwrap();
        let start = Instant::now();
        let mut ids = std::collections::HashSet::new();
        for i in 0..12u32 {
            ids.insert(c.send_request(0, 0, i, slow, b"{}").await.unwrap());
        }
        while !ids.is_empty() {
            if let Incoming::Response(h, _) = c.next().await.unwrap() {
                assert_eq!(h.code, 0, "nothing is refused or dropped");
                assert!(ids.remove(&h.message_id));
            }
        }
        // Four at a time: three waves of 300 ms, not one.
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(850), "{took:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
    });
}
