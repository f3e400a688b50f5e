//! The push plane on real sockets (docs/DESIGN.md §6): topics (publish through the
//! push API and through topic endpoints, subscribe, unsubscribe), per-key conflation
//! for a client that does not read, the outbox bound for a slow consumer, pushes to a
//! session and to a user, roles and kicks through the push API, and the API's errors.
//! Gateways have two shards; clients are placed on known shards (`common::push::place`).

mod common;

use std::time::{Duration, Instant};

use common::push::*;
use common::*;
use ringgate::client::Client;
use ringgate::proto::bannou::{flags, ResponseCode, ResponseHeader};
use serde_json::{json, Value};

/// Subscribes each client to the marker topic (and `t` if `to_t`).
async fn subscribe(clients: &mut [Placed], to_t: bool) {
    for p in clients.iter_mut() {
        call_ok(&mut p.client, &p.manifest, "/marker/watch", b"{}").await;
        if to_t {
            call_ok(&mut p.client, &p.manifest, "/t/watch", b"{}").await;
        }
    }
}

/// Reads pushes `{"n": i}` for i in `from..=to`, in order, each once.
async fn expect_sequence(c: &mut Client, from: u64, to: u64, who: &str) {
    for want in from..=to {
        let (h, p) = push(c).await;
        assert_eq!(h.flags, flags::EVENT, "{who}: a JSON push");
        let v: Value = serde_json::from_slice(&p).unwrap();
        assert_eq!(v, json!({ "n": want }), "{who}: out of order or repeated");
    }
}

#[test]
fn an_api_publish_reaches_every_subscriber_on_both_shards_once_in_order_and_no_one_else() {
    let g = push_gateway("", "", "");
    let mut api = Api::new(g.admin_addr);
    run(async {
        // Three per shard: the first two subscribe to "t", the third does not.
        let mut all = place(&g, &mut api, "pub", "acct", &["user"], 3).await;
        subscribe(&mut all, false).await;
        for i in [0, 1, 3, 4] {
            let p = &mut all[i];
            call_ok(&mut p.client, &p.manifest, "/t/watch", b"{}").await;
        }
        const N: u64 = 50;
        for n in 1..=N {
            api.publish("t", None, &json!({ "n": n }));
        }
        api.publish("marker", None, &json!({ "marker": 1 }));
        for (i, p) in all.iter_mut().enumerate() {
            let who = format!("{} (shard {})", p.sid, p.shard);
            if i % 3 != 2 {
                expect_sequence(&mut p.client, 1, N, &who).await;
            }
            expect_marker(&mut p.client, 1, &who).await;
        }

        // The first subscriber of each shard unsubscribes: it gets no more.
        for i in [0, 3] {
            let p = &mut all[i];
            call_ok(&mut p.client, &p.manifest, "/t/unwatch", b"{}").await;
        }
        api.publish("t", None, &json!({ "n": N + 1 }));
        api.publish("marker", None, &json!({ "marker": 2 }));
        for (i, p) in all.iter_mut().enumerate() {
            let who = format!("{} (shard {})", p.sid, p.shard);
            if i % 3 == 1 {
                expect_sequence(&mut p.client, N + 1, N + 1, &who).await;
            }
            expect_marker(&mut p.client, 2, &who).await;
        }
        assert_eq!(api.topics_of(&all[0].sid), vec!["marker".to_string()]);
        // Six on the marker, two left on "t" (both shards summed).
        assert_eq!(metric(&g, "ringgate_subscriptions"), 6 + 2);

        // A topic watched on one shard only (subscribed through the API) is sent to
        // that shard only.
        let (status, body) = api.post(
            &format!("/v1/sessions/{}/subscribe", all[2].sid),
            &json!({ "topics": ["solo"] }),
        );
        assert_eq!((status, &body["connections"]), (202, &json!(1)), "{body}");
        assert!(api.topics_of(&all[2].sid).contains(&"solo".to_string()));
        let (status, body) = api.post(
            "/v1/publish",
            &json!({ "topic": "solo", "payload": { "n": 1 } }),
        );
        assert_eq!(status, 202, "{body}");
        assert_eq!(body["shard_deliveries"], 1, "{body}");
        let (status, body) = api.post("/v1/publish", &json!({ "topic": "nobody", "payload": 1 }));
        assert_eq!(
            (status, &body["shard_deliveries"]),
            (202, &json!(0)),
            "{body}"
        );
        api.publish("marker", None, &json!({ "marker": 3 }));
        for (i, p) in all.iter_mut().enumerate() {
            let who = format!("{} (shard {})", p.sid, p.shard);
            if i == 2 {
                expect_sequence(&mut p.client, 1, 1, &who).await;
            }
            expect_marker(&mut p.client, 3, &who).await;
        }
    });
}

#[test]
fn a_topic_endpoint_publish_reaches_every_subscriber_on_both_shards_once_in_order() {
    let g = push_gateway("", "", "");
    let mut api = Api::new(g.admin_addr);
    run(async {
        let mut all = place(&g, &mut api, "ep", "acct", &["user"], 2).await;
        subscribe(&mut all, true).await;
        // The publisher (on shard 0) unsubscribes itself: a publisher is not told its
        // own messages unless it watches.
        let (publisher, subscribers) = all.split_first_mut().unwrap();
        call_ok(
            &mut publisher.client,
            &publisher.manifest,
            "/t/unwatch",
            b"{}",
        )
        .await;
        const N: u64 = 30;
        let guid = publisher.manifest.guid("/t/pub").unwrap();
        for n in 1..=N {
            let (h, body) = publisher
                .client
                .call(guid, json!({ "n": n }).to_string().as_bytes())
                .await
                .unwrap();
            assert_eq!((h.code, body.len()), (0, 0), "answered 0, empty");
        }
        // A binary publish keeps its flag.
        let h = call_with_flags(&mut publisher.client, flags::BINARY, guid, &[0, 1, 2, 0xff]).await;
        assert_eq!(h.code, 0);
        api.publish("marker", None, &json!({ "marker": 1 }));
        for p in subscribers.iter_mut() {
            let who = format!("{} (shard {})", p.sid, p.shard);
            expect_sequence(&mut p.client, 1, N, &who).await;
            let (h, body) = push(&mut p.client).await;
            assert_eq!(h.flags, flags::EVENT | flags::BINARY, "{who}");
            assert_eq!(&body[..], &[0, 1, 2, 0xff], "{who}");
            expect_marker(&mut p.client, 1, &who).await;
        }
        expect_marker(&mut publisher.client, 1, "the publisher").await;
    });
}

/// One request with flags `f` on channel 0, and its response.
async fn call_with_flags(c: &mut Client, f: u8, guid: [u8; 16], payload: &[u8]) -> ResponseHeader {
    let id = c.send_request(f, 0, 0, guid, payload).await.unwrap();
    c.response(id).await.unwrap().0
}

/// Receives pushes `{"n": i, "sent": µs since epoch}` for i in `from..from + count`,
/// in order, and returns how long each took from before its publish to here.
async fn receive_timed(c: &mut Client, epoch: Instant, from: u64, count: u64) -> Vec<Duration> {
    let mut lat = Vec::new();
    for n in from..from + count {
        let (_, p) = push(c).await;
        let v: Value = serde_json::from_slice(&p).unwrap();
        assert_eq!(v["n"], n, "in order, none lost");
        let sent = Duration::from_micros(v["sent"].as_u64().unwrap());
        lat.push(epoch.elapsed() - sent);
    }
    lat
}

#[test]
fn a_client_that_does_not_read_gets_the_last_message_per_key_and_every_unkeyed_one() {
    // A bound far above what is published unconflated in the outbox (4 keys and the
    // unkeyed ones), so nothing overflows.
    let g = push_gateway("max_outbox_bytes = 67108864", "", "");
    let mut api = Api::new(g.admin_addr);
    run(async {
        let mut all = place(&g, &mut api, "slow", "acct", &["user"], 1).await;
        subscribe(&mut all[..1], true).await;
        let c = &mut all[0].client;
        const KEYS: usize = 4;
        const KEYED: usize = 600;
        let pad = "x".repeat(32 * 1024);
        let mut last = [0usize; KEYS];
        let mut unkeyed = 0;
        // 600 keyed messages of 32 KiB (~20 MB) while the client reads nothing: the
        // socket's buffers take a few MB, the rest waits in the outbox, where each
        // key's newest message replaces its unsent older one.
        for batch in 0..KEYED / 10 {
            let mut items = Vec::new();
            for j in 0..10 {
                let seq = batch * 10 + j;
                let k = seq % KEYS;
                last[k] = seq;
                items.push(json!({ "topic": "t", "key": format!("k{k}"), "payload": { "k": k, "seq": seq, "pad": pad } }));
            }
            if batch % 6 == 0 {
                items.push(json!({ "topic": "t", "payload": { "u": unkeyed } }));
                unkeyed += 1;
            }
            let (status, body) = api.post("/v1/publish/batch", &json!({ "items": items }));
            assert_eq!(status, 202, "{body}");
        }
        api.publish("marker", None, &json!({ "marker": 1 }));

        let mut keyed_seen = 0;
        let mut newest: [Option<usize>; KEYS] = [None; KEYS];
        let mut unkeyed_seen = Vec::new();
        loop {
            let (_, p) = push(c).await;
            let v: Value = serde_json::from_slice(&p).unwrap();
            if v.get("marker").is_some() {
                break;
            }
            if let Some(u) = v.get("u") {
                unkeyed_seen.push(u.as_u64().unwrap());
                continue;
            }
            keyed_seen += 1;
            let (k, seq) = (
                v["k"].as_u64().unwrap() as usize,
                v["seq"].as_u64().unwrap() as usize,
            );
            assert!(
                newest[k].is_none_or(|n| n < seq),
                "key {k}: {seq} after {newest:?}"
            );
            newest[k] = Some(seq);
        }
        eprintln!("{keyed_seen} keyed messages arrived of {KEYED}");
        // Every publish was applied before the marker arrived.
        let conflated = metric(&g, "ringgate_conflated_total");
        assert!(conflated > 0, "nothing was conflated");
        assert_eq!(
            newest.map(|n| n.unwrap()),
            last,
            "each key's last message arrives"
        );
        assert_eq!(
            unkeyed_seen,
            (0..unkeyed as u64).collect::<Vec<_>>(),
            "every unkeyed message arrives, in order"
        );
        assert!(
            keyed_seen < KEYED / 3,
            "{keyed_seen} of {KEYED} keyed messages arrived: not conflated"
        );
        assert_eq!(
            keyed_seen as u64 + conflated,
            KEYED as u64,
            "each keyed message arrived or was replaced"
        );
    });
    assert_eq!(metric(&g, "ringgate_outbox_overflow_total"), 0);
}

/// The `q`-quantile of `v` (sorted here).
fn quantile(v: &mut [Duration], q: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * q).round() as usize]
}

#[test]
fn a_slow_consumer_is_noticed_and_closed_with_1013_while_a_reading_subscriber_keeps_its_latency() {
    // 2 MiB: the reading subscriber's slack for a hiccup of this (loaded) test process is
    // 64 of the 32 KiB messages, since the kernel holds only `send_lowat_bytes` unsent;
    // the 12.8 MB sent to the one that does not read still pass it.
    let g = push_gateway("max_outbox_bytes = 2097152", "", "");
    let mut api = Api::new(g.admin_addr);
    let admin = g.admin_addr;
    run(async {
        // The slow consumer and the good one share shard 0.
        let mut all = place(&g, &mut api, "lat", "acct", &["user"], 2).await;
        all.truncate(2);
        let mut slow = all.pop().unwrap();
        let mut good = all.pop().unwrap();
        call_ok(&mut good.client, &good.manifest, "/t/watch", b"{}").await;
        let epoch = Instant::now();
        // Publishes `count` messages of `pad` bytes at one every 2 ms from a thread,
        // each carrying when it was sent; the good client measures each arrival.
        let publish = move |from: u64, count: u64, pad: usize| {
            std::thread::spawn(move || {
                let mut api = Api::new(admin);
                let pad = "x".repeat(pad);
                for n in from..from + count {
                    let sent = epoch.elapsed().as_micros() as u64;
                    api.publish("t", None, &json!({ "n": n, "sent": sent, "pad": pad }));
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
        };
        // Before: the good client alone.
        let t = publish(0, 100, 1024);
        let mut before = receive_timed(&mut good.client, epoch, 0, 100).await;
        t.join().unwrap();
        // During: a subscriber that reads nothing while 32 KiB messages pile up
        // (the sockets' buffers take some, then its outbox passes 2 MiB).
        call_ok(&mut slow.client, &slow.manifest, "/t/watch", b"{}").await;
        let t = publish(100, 400, 32 * 1024);
        let mut during = receive_timed(&mut good.client, epoch, 100, 400).await;
        t.join().unwrap();
        let (b99, d99) = (quantile(&mut before, 0.99), quantile(&mut during, 0.99));
        eprintln!("publish -> receipt p99: before {b99:?}, during {d99:?}");
        assert!(b99 < Duration::from_millis(100), "before: p99 {b99:?}");
        assert!(d99 < Duration::from_millis(100), "during: p99 {d99:?}");

        // The slow one reads what its socket held, then the notice, then 1013.
        let mut notice = None;
        let close = loop {
            match next_within(&mut slow.client, Duration::from_secs(5)).await {
                Some(Got::Push(_, p)) => {
                    let v: Value = serde_json::from_slice(&p).unwrap();
                    if v["eventName"] == "connect.disconnect-notification" {
                        notice = Some(v);
                    } else {
                        assert!(notice.is_none(), "a message after the notice: {v}");
                    }
                }
                Some(Got::Close(c)) => break c,
                other => panic!("{other:?}"),
            }
        };
        let notice = notice.expect("the disconnect notice came before the close");
        assert_eq!(notice["reconnectable"], true, "{notice}");
        assert_eq!(close.map(|c| c.0), Some(1013));
    });
    assert_eq!(metric(&g, "ringgate_outbox_overflow_total"), 1);
}

#[test]
fn a_user_push_reaches_both_sessions_of_an_account_on_two_shards_and_no_other() {
    let g = push_gateway("", "", "");
    let mut api = Api::new(g.admin_addr);
    run(async {
        let mut mine = place(&g, &mut api, "u", "acct-u", &["user"], 1).await;
        let mut other = place(&g, &mut api, "o", "acct-o", &["user"], 1).await;
        assert_ne!(mine[0].shard, mine[1].shard);
        subscribe(&mut other, false).await;
        let (status, body) = api.post(
            "/v1/users/acct-u/push",
            &json!({ "payload": { "eventName": "game.hello", "n": 1 } }),
        );
        assert_eq!((status, &body["connections"]), (202, &json!(2)), "{body}");
        for p in mine.iter_mut() {
            let (h, payload) = push(&mut p.client).await;
            assert_eq!(h.flags, flags::EVENT);
            assert_eq!(h.guid, [0; 16]);
            let v: Value = serde_json::from_slice(&payload).unwrap();
            assert_eq!(v, json!({ "eventName": "game.hello", "n": 1 }));
        }
        api.publish("marker", None, &json!({ "marker": 1 }));
        for p in other.iter_mut() {
            expect_marker(&mut p.client, 1, "another account's session").await;
        }
    });
}

#[test]
fn a_broadcast_through_the_api_reaches_every_session_on_both_shards_once() {
    let g = push_gateway("", "", "");
    let mut api = Api::new(g.admin_addr);
    run(async {
        let mut all = place(&g, &mut api, "b", "acct-b", &["user"], 2).await;
        let mut anonymous_too = place(&g, &mut api, "c", "acct-c", &[], 1).await;
        let (status, body) = api.post("/v1/broadcast", &json!({ "payload": { "all": true } }));
        assert_eq!((status, &body["shards"]), (202, &json!(2)), "{body}");
        for p in all.iter_mut().chain(anonymous_too.iter_mut()) {
            let (h, payload) = push(&mut p.client).await;
            assert_eq!(h.flags, flags::EVENT);
            assert_eq!(&payload[..], br#"{"all":true}"#);
        }
        // Once each: the next thing each one gets is a push to its own session.
        for p in all.iter_mut().chain(anonymous_too.iter_mut()) {
            let path = format!("/v1/sessions/{}/push", p.sid);
            api.post(&path, &json!({ "payload": { "after": 1 } }));
            let (_, payload) = push(&mut p.client).await;
            assert_eq!(&payload[..], br#"{"after":1}"#, "{}", p.sid);
        }
        let (status, _) = api.post("/v1/broadcast", &json!({}));
        assert_eq!(status, 400, "no payload");
    });
}

#[test]
fn a_session_push_carries_json_as_is_and_base64_as_binary_with_flag_0x01() {
    let g = push_gateway("", "", "");
    let mut api = Api::new(g.admin_addr);
    run(async {
        let mut all = place(&g, &mut api, "s", "acct", &["user"], 1).await;
        for p in all.iter_mut() {
            let path = format!("/v1/sessions/{}/push", p.sid);
            let (status, body) = api.post(&path, &json!({ "payload": { "to": p.sid } }));
            assert_eq!((status, &body["connections"]), (202, &json!(1)), "{body}");
            let (status, _) = api.post(&path, &json!({ "payload_base64": "AAEC/w==" }));
            assert_eq!(status, 202);
            let (h, payload) = push(&mut p.client).await;
            assert_eq!(h.flags, flags::EVENT);
            assert_eq!(
                serde_json::from_slice::<Value>(&payload).unwrap(),
                json!({ "to": p.sid })
            );
            let (h, payload) = push(&mut p.client).await;
            assert_eq!(h.flags, flags::EVENT | flags::BINARY);
            assert_eq!(&payload[..], &[0, 1, 2, 0xff]);
        }
    });
    assert!(metric(&g, "ringgate_pushes_total") >= 4);
}

#[test]
fn granted_and_revoked_roles_resend_the_manifest_keeping_guids_and_the_revoked_guid_answers_30() {
    let g = push_gateway("", "", "");
    let mut api = Api::new(g.admin_addr);
    run(async {
        let mut all = place(&g, &mut api, "r", "acct", &["user"], 1).await;
        for p in all.iter_mut() {
            let m1 = p.manifest.clone();
            assert_eq!(m1.version, 1);
            assert!(m1.guid("/vip/watch").is_none());
            let path = format!("/v1/sessions/{}/roles", p.sid);
            let (status, body) = api.post(&path, &json!({ "add": ["vip"] }));
            assert_eq!(status, 202, "{body}");
            let m2 = p.client.manifest().await.unwrap();
            assert_eq!((m2.version, m2.reason.as_str()), (2, "role_changed"));
            for a in &m1.apis {
                assert_eq!(m2.guid(&a.endpoint), Some(a.guid), "{} kept", a.endpoint);
            }
            assert_eq!(m2.peer_guid, m1.peer_guid);
            let vip = m2
                .guid("/vip/watch")
                .expect("the granted endpoint is listed");
            call_ok(&mut p.client, &m2, "/vip/watch", b"{}").await;

            let (status, _) = api.post(&path, &json!({ "remove": ["vip"] }));
            assert_eq!(status, 202);
            let m3 = p.client.manifest().await.unwrap();
            assert_eq!((m3.version, m3.reason.as_str()), (3, "role_changed"));
            assert!(m3.guid("/vip/watch").is_none());
            assert_eq!(m3.apis, m1.apis);
            let (h, _) = p.client.call(vip, b"{}").await.unwrap();
            assert_eq!(h.code, ResponseCode::ServiceNotFound as u8);
            // A change that changes nothing callable sends no manifest.
            let (status, _) = api.post(&path, &json!({ "add": ["tester"] }));
            assert_eq!(status, 202);
            let (_, info) = api.get(&format!("/v1/sessions/{}", p.sid));
            assert_eq!(info["connections"][0]["roles"], json!(["user", "tester"]));
            assert_eq!(info["connections"][0]["manifest_version"], 3);
        }
    });
}

#[test]
fn a_kick_through_the_api_closes_the_session_with_4002_and_its_reason() {
    let g = push_gateway("", "", "");
    let mut api = Api::new(g.admin_addr);
    run(async {
        let mut all = place(&g, &mut api, "k", "acct", &["user"], 1).await;
        for p in all.iter_mut() {
            let (status, _) = api.post(
                &format!("/v1/sessions/{}/kick", p.sid),
                &json!({ "reason": "cheating" }),
            );
            assert_eq!(status, 202);
            let close = close_frame(&mut p.client).await;
            assert_eq!(close, Some((4002, "cheating".to_string())));
            // Gone from the directory: a second kick finds nobody.
            let t0 = std::time::Instant::now();
            loop {
                let (status, _) = api.post(&format!("/v1/sessions/{}/kick", p.sid), &json!({}));
                if status == 404 {
                    break;
                }
                assert!(
                    t0.elapsed() < Duration::from_secs(5),
                    "still kickable: {status}"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    });
}

#[test]
fn push_api_errors_name_the_field_the_token_the_target_or_the_size_on_one_keep_alive_connection() {
    let g = push_gateway("", "max_body_bytes = 4096", "");
    let mut api = Api::new(g.admin_addr);
    run(async {
        let mut all = place(&g, &mut api, "e", "acct", &["user"], 1).await;
        subscribe(&mut all, true).await;
        let sid = all[0].sid.clone();
        let roles = format!("/v1/sessions/{sid}/roles");
        let cases: Vec<(&str, &str, Value, u16, &str)> = vec![
            ("POST", "/v1/publish", json!({ "payload": 1 }), 400, "topic"),
            (
                "POST",
                "/v1/publish",
                json!({ "topic": "t", "payload_base64": "not base64!" }),
                400,
                "payload_base64",
            ),
            (
                "POST",
                "/v1/publish/batch",
                json!({ "items": [
                    { "topic": "t", "payload": { "n": "must not arrive" } },
                    { "payload": 2 },
                ] }),
                400,
                "items[1].topic",
            ),
            (
                "POST",
                "/v1/sessions/nobody/push",
                json!({ "payload": 1 }),
                404,
                "",
            ),
            (
                "POST",
                "/v1/users/nobody/push",
                json!({ "payload": 1 }),
                404,
                "",
            ),
            ("GET", "/v1/sessions/nobody", Value::Null, 404, ""),
            ("POST", "/v1/nothing/here", json!({}), 404, ""),
            ("POST", &roles, json!({ "add": "vip" }), 400, "add"),
        ];
        for (method, path, body, status, field) in cases {
            let raw = if body.is_null() {
                Vec::new()
            } else {
                body.to_string().into_bytes()
            };
            let (got, answer) = api.call(method, path, &raw);
            assert_eq!(got, status, "{method} {path}: {answer}");
            assert!(answer["error"].is_string(), "{method} {path}: {answer}");
            if !field.is_empty() {
                assert_eq!(answer["field"], field, "{method} {path}: {answer}");
            }
        }
        // Nothing of the refused batch was published.
        api.publish("marker", None, &json!({ "marker": 1 }));
        for p in all.iter_mut() {
            let who = p.sid.clone();
            expect_marker(&mut p.client, 1, &who).await;
        }
    });
    // The token: missing, or wrong.
    for token in [None, Some("push-api-test-token-0123456780")] {
        let mut bad = Api::with_token(g.admin_addr, token);
        for _ in 0..2 {
            let (status, body) = bad.post("/v1/publish", &json!({ "topic": "t", "payload": 1 }));
            assert_eq!(status, 401, "{token:?}: {body}");
        }
    }
    // A body over [admin] max_body_bytes.
    let mut big = Api::new(g.admin_addr);
    let (status, body) = big.post(
        "/v1/publish",
        &json!({ "topic": "t", "payload": "x".repeat(5000) }),
    );
    assert_eq!(status, 413, "{body}");
    assert!(body["error"].as_str().unwrap().contains("max_body_bytes"));
}

#[test]
fn without_an_admin_token_the_push_api_answers_404_saying_it_is_off() {
    let text = push_config_text("", "", "").replace(&format!("token = \"{ADMIN_TOKEN}\""), "");
    let g = gateway(ringgate::Config::from_toml_str(&text, &[]).unwrap());
    let mut api = Api::new(g.admin_addr);
    for path in ["/v1/publish", "/v1/sessions/x/push"] {
        let (status, body) = api.post(path, &json!({ "topic": "t", "payload": 1 }));
        assert_eq!(status, 404, "{body}");
        assert!(body["error"].as_str().unwrap().contains("off"), "{body}");
    }
    // The probes still answer.
    assert_eq!(
        raw_status(g.admin_addr, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"),
        200
    );
}

#[test]
fn a_body_over_max_body_bytes_gets_its_413_even_when_the_client_writes_it_all_before_reading() {
    use std::io::{Read, Write};
    let g = push_gateway("", "max_body_bytes = 4096", "");
    // As most HTTP clients do: the whole request goes out, then the answer is read.
    for size in [256 << 10, 4 << 20] {
        let mut s = std::net::TcpStream::connect(g.admin_addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let body = format!("{{\"topic\":\"t\",\"payload\":\"{}\"}}", "x".repeat(size));
        let head = format!(
            "POST /v1/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body.as_bytes())
            .unwrap_or_else(|e| panic!("{size}: the body could not be written: {e}"));
        let mut answer = Vec::new();
        s.read_to_end(&mut answer)
            .unwrap_or_else(|e| panic!("{size}: the answer could not be read: {e}"));
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 413 "), "{size}: {text}");
        assert!(text.contains("max_body_bytes"), "{size}: {text}");
    }
}
