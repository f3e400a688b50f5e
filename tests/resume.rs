//! Sessions that outlive their connection (docs/DESIGN.md §7), on real sockets: a
//! client that drops resumes with its reconnection token, on whichever shard the
//! kernel gives it, and gets its manifest (same session, GUIDs and peer GUID, a new
//! token) then the events it missed, in order, then new ones; tokens are single-use
//! and refused (401) once their session has ended; a second connection with the token
//! takes over; the buffer bound drops the oldest and the resume says how many.
//! Gateways have two shards.

mod common;

use std::time::{Duration, Instant};

use common::push::*;
use common::*;
use ringgate::client::Client;
use ringgate::proto::bannou::{flags, ResponseCode};
use serde_json::{json, Value};

/// The HTTP status answering an upgrade with `Authorization: Reconnect <token>`.
fn resume_status(g: &ringgate::Gateway, token: &str) -> u16 {
    raw_status(
        g.addr,
        &upgrade_request("/connect", &format!("Authorization: Reconnect {token}\r\n")),
    )
}

/// Waits until the push API reports session `sid` with no client connected (an async
/// wait: a dropped client's socket is closed by this thread's runtime).
async fn wait_parked(api: &mut Api, sid: &str) {
    let t0 = Instant::now();
    loop {
        let (status, body) = api.get(&format!("/v1/sessions/{sid}"));
        if status == 200 && body["connections"][0]["connected"] == json!(false) {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{sid} never parked: {status} {body}"
        );
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Reads pushes `{"n": i}` for i in `from..=to`, in order, each once.
async fn expect_sequence(c: &mut Client, from: u64, to: u64, who: &str) {
    for want in from..=to {
        let v = push_json(c).await;
        assert_eq!(
            v,
            json!({ "n": want }),
            "{who}: out of order, repeated or lost"
        );
    }
}

#[test]
fn a_dropped_client_resumes_its_session_with_what_it_missed_in_order_on_any_shard() {
    let g = push_gateway("reconnect_window_secs = 30", "", "");
    let mut api = Api::new(g.admin_addr);
    let sid = "resume-1";
    run(async {
        let (mut c, first) = connect(&g, &session_token("acct-r", sid, &["user"])).await;
        let mut token = first
            .reconnection_token
            .clone()
            .expect("a token from the start");
        call_ok(&mut c, &first, "/t/watch", b"{}").await;
        let home = api.shard_of(sid);
        let mut n = 0;
        let mut version = first.version;
        // Drops in a row until the kernel has put a resuming connection both on the
        // session's shard and on the other (handed over): at least four, at most 40.
        let mut rounds = 0;
        while rounds < 4
            || metric(&g, "ringgate_resume_handovers_total") == 0
            || metric(&g, "ringgate_resumes_total") == metric(&g, "ringgate_resume_handovers_total")
        {
            let round = rounds;
            rounds += 1;
            assert!(
                rounds <= 40,
                "the kernel never spread the resumes over both shards"
            );
            drop(c); // the network goes: no close frame
            wait_parked(&mut api, sid).await;
            // Topic messages and session pushes while away, interleaved.
            let from = n;
            for _ in 0..3 {
                api.publish("t", None, &json!({ "n": n }));
                n += 1;
                let (status, _) = api.post(
                    &format!("/v1/sessions/{sid}/push"),
                    &json!({ "payload": { "n": n } }),
                );
                assert_eq!(status, 202);
                n += 1;
            }
            let (c2, m) = resume(&g, &token, round % 2 == 1).await;
            c = c2;
            assert_eq!(m.session_id, sid);
            assert_eq!(m.reason, "session_reconnected");
            assert_eq!(m.version, version + 1, "the manifest count goes on");
            assert_eq!(m.apis, first.apis, "the same GUIDs");
            assert_eq!(m.peer_guid, first.peer_guid, "the same peer GUID");
            assert_eq!(m.events_lost, 0);
            let next = m.reconnection_token.clone().expect("a new token");
            assert_ne!(next, token, "tokens rotate on every resume");
            version = m.version;
            expect_sequence(&mut c, from, n - 1, "missed events").await;
            // And what comes now follows them.
            api.publish("t", None, &json!({ "n": n }));
            expect_sequence(&mut c, n, n, "a new event").await;
            n += 1;
            assert_eq!(api.shard_of(sid), home, "the session stays on its shard");
            assert_eq!(resume_status(&g, &token), 401, "a used token opens nothing");
            token = next;
        }
        // Requests work on the resumed connection.
        let (h, _) = c
            .call(first.guid("/t/pub").unwrap(), b"{\"n\":99}")
            .await
            .unwrap();
        assert_eq!(h.code, 0);
        assert_eq!(metric(&g, "ringgate_resumes_total"), rounds);
        assert!(metric(&g, "ringgate_resumes_refused_total") >= rounds);
    });
    assert_eq!(metric(&g, "ringgate_resume_events_lost_total"), 0);
}

#[test]
fn tokens_of_ended_sessions_unknown_or_altered_get_401() {
    let g = push_gateway("reconnect_window_secs = 1", "", "");
    let mut api = Api::new(g.admin_addr);
    run(async {
        // Kicked: ended on purpose, not resumable.
        let (c, m) = connect(&g, &session_token("a", "kicked", &["user"])).await;
        let (status, _) = api.post("/v1/sessions/kicked/kick", &json!({ "reason": "bye" }));
        assert_eq!(status, 202);
        let mut c = c;
        assert_eq!(close_frame(&mut c).await.map(|c| c.0), Some(4002));
        let t = m.reconnection_token.unwrap();
        monoio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(resume_status(&g, &t), 401, "a kicked session");

        // Its window ran out.
        let (c, m) = connect(&g, &session_token("a", "late", &["user"])).await;
        drop(c);
        wait_parked(&mut api, "late").await;
        let t0 = Instant::now();
        while api.get("/v1/sessions/late").0 != 404 {
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "the window never ended"
            );
            monoio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            t0.elapsed() >= Duration::from_millis(500),
            "ended before its window"
        );
        assert_eq!(
            resume_status(&g, &m.reconnection_token.unwrap()),
            401,
            "window over"
        );

        // Not a token at all, or one altered.
        assert_eq!(resume_status(&g, "not-a-token"), 401);
        let (c, m) = connect(&g, &session_token("a", "altered", &["user"])).await;
        let mut t = m.reconnection_token.unwrap().into_bytes();
        t[40] = if t[40] == b'A' { b'B' } else { b'A' };
        assert_eq!(resume_status(&g, std::str::from_utf8(&t).unwrap()), 401);
        drop(c);
    });
    assert!(metric(&g, "ringgate_resume_windows_expired_total") >= 1);
}

#[test]
fn a_second_connection_with_the_token_takes_the_session_over_and_the_first_closes_with_1000() {
    let g = push_gateway("reconnect_window_secs = 30", "", "");
    let mut api = Api::new(g.admin_addr);
    run(async {
        let (mut old, m) = connect(&g, &session_token("a", "twice", &["user"])).await;
        call_ok(&mut old, &m, "/t/watch", b"{}").await;
        let (mut new, m2) = resume(&g, &m.reconnection_token.unwrap(), false).await;
        assert_eq!((m2.session_id.as_str(), m2.apis == m.apis), ("twice", true));
        assert_eq!(
            close_frame(&mut old).await,
            Some((1000, "New connection established".into()))
        );
        // The subscription carried over; the topic reaches the new connection only.
        api.publish("t", None, &json!({ "n": 1 }));
        expect_sequence(&mut new, 1, 1, "the new connection").await;
        let (status, body) = api.get("/v1/sessions/twice");
        assert_eq!(status, 200);
        assert_eq!(body["connections"].as_array().unwrap().len(), 1, "{body}");
        assert_eq!(body["connections"][0]["connected"], true, "{body}");
    });
}

#[test]
fn a_client_away_longer_than_its_buffer_loses_the_oldest_events_and_the_resume_says_how_many() {
    let g = push_gateway(
        "reconnect_window_secs = 30\nresume_buffer_bytes = 4096",
        "",
        "",
    );
    let mut api = Api::new(g.admin_addr);
    run(async {
        let (c, m) = connect(&g, &session_token("a", "behind", &["user"])).await;
        let mut c = c;
        call_ok(&mut c, &m, "/t/watch", b"{}").await;
        drop(c);
        wait_parked(&mut api, "behind").await;
        // ~200 bytes each: 100 of them are ~5x the buffer.
        let pad = "x".repeat(160);
        for n in 0..100u64 {
            api.publish("t", None, &json!({ "n": n, "pad": pad }));
        }
        // A keyed stream conflates while away, as in the outbox: one (the newest) is
        // kept, none counted lost.
        for v in 0..50u64 {
            api.publish("t", Some("npc-7"), &json!({ "npc": 7, "v": v }));
        }
        // (The marker: the publishes above were applied before the resume.)
        api.publish("t", None, &json!({ "marker": 1 }));
        wait_parked(&mut api, "behind").await;
        let (mut c, m) = resume(&g, &m.reconnection_token.unwrap(), false).await;
        assert!(m.events_lost > 0, "nothing was dropped?");
        let mut got = Vec::new();
        let mut keyed = Vec::new();
        loop {
            let v = push_json(&mut c).await;
            if v.get("marker").is_some() {
                break;
            }
            if let Some(x) = v.get("v") {
                keyed.push(x.as_u64().unwrap());
            } else {
                got.push(v["n"].as_u64().unwrap());
            }
        }
        // The newest survived, in order, with no gap after the first kept one; the
        // count lost is exactly what is missing.
        assert_eq!(got.last(), Some(&99), "{got:?}");
        let first = got[0];
        assert_eq!(got, (first..100).collect::<Vec<_>>());
        assert_eq!(m.events_lost, first, "lost = the oldest {first} messages");
        assert_eq!(
            keyed,
            [49],
            "the keyed stream conflated to its newest state"
        );
    });
    assert!(metric(&g, "ringgate_resume_events_lost_total") >= 1);
}

#[test]
fn a_peer_message_to_a_client_that_is_away_answers_31_at_once() {
    let g = push_gateway("reconnect_window_secs = 30", "", "");
    let mut api = Api::new(g.admin_addr);
    run(async {
        let (mut a, _) = connect(&g, &session_token("a", "peer-a", &["user"])).await;
        let (b, mb) = connect(&g, &session_token("b", "peer-b", &["user"])).await;
        drop(b);
        wait_parked(&mut api, "peer-b").await;
        let id = a
            .send_request(flags::CLIENT, 0, 0, mb.peer_guid.unwrap(), b"x")
            .await
            .unwrap();
        let (h, _) = response(&mut a).await;
        assert_eq!(
            (h.message_id, h.code),
            (id, ResponseCode::ClientNotFound as u8)
        );
    });
}

#[test]
fn a_client_reconnecting_with_its_bearer_token_gets_its_session_back_with_what_it_missed() {
    // Bannou's SDKs reconnect with the same bearer JWT, not the reconnection token
    // (BANNOU.md, "Queue on Reconnect").
    let g = push_gateway("reconnect_window_secs = 30", "", "");
    let mut api = Api::new(g.admin_addr);
    let sid = "bearer-back";
    let token = session_token("acct-b", sid, &["user"]);
    run(async {
        let (mut c, first) = connect(&g, &token).await;
        call_ok(&mut c, &first, "/t/watch", b"{}").await;
        for round in 0..4u64 {
            drop(c);
            wait_parked(&mut api, sid).await;
            api.publish("t", None, &json!({ "n": 2 * round }));
            let (c2, m) = connect(&g, &token).await;
            c = c2;
            assert_eq!(m.session_id, sid);
            assert_eq!(m.reason, "session_reconnected");
            assert_eq!(m.peer_guid, first.peer_guid, "the same session");
            expect_sequence(&mut c, 2 * round, 2 * round, "the event it missed").await;
            api.publish("t", None, &json!({ "n": 2 * round + 1 }));
            expect_sequence(&mut c, 2 * round + 1, 2 * round + 1, "its subscription").await;
        }
    });
    assert_eq!(metric(&g, "ringgate_resumes_total"), 4);
}

#[test]
fn a_connection_with_the_same_session_id_closes_the_older_one_with_1000() {
    let g = push_gateway("reconnect_window_secs = 30", "", "");
    run(async {
        let token = session_token("a", "same-sid", &["user"]);
        let (mut older, _) = connect(&g, &token).await;
        let (_newer, _) = connect(&g, &token).await;
        assert_eq!(
            close_frame(&mut older).await,
            Some((1000, "New connection established".into()))
        );
    });
}

#[test]
fn the_shutdown_notice_carries_the_reconnection_token_and_its_expiry() {
    let g = push_gateway("reconnect_window_secs = 30", "", "");
    run(async {
        let (mut c, m) = connect(&g, &session_token("a", "drained", &["user"])).await;
        g.shutdown();
        let v: Value = push_json(&mut c).await;
        assert_eq!(v["eventName"], "connect.disconnect-notification", "{v}");
        assert_eq!(v["reconnectable"], true);
        assert_eq!(
            v["reason"], "server_shutdown",
            "Bannou's SDK reads it as ServerShutdown"
        );
        assert_eq!(v["reconnectionToken"], json!(m.reconnection_token.unwrap()));
        assert!(
            v["expiresAt"]
                .as_str()
                .is_some_and(|s| s.ends_with("+00:00")),
            "{v}"
        );
        assert_eq!(close_frame(&mut c).await.map(|c| c.0), Some(1001));
    });
}

#[test]
fn roles_granted_while_away_show_in_the_resume_manifest_and_no_stale_manifest_follows() {
    let g = push_gateway("reconnect_window_secs = 30", "", "");
    let mut api = Api::new(g.admin_addr);
    run(async {
        let (mut c, m) = connect(&g, &session_token("a", "roles-away", &["user"])).await;
        call_ok(&mut c, &m, "/marker/watch", b"{}").await;
        assert!(m.guid("/vip/watch").is_none());
        drop(c);
        wait_parked(&mut api, "roles-away").await;
        let (status, _) = api.post("/v1/sessions/roles-away/roles", &json!({ "add": ["vip"] }));
        assert_eq!(status, 202);
        api.publish("marker", None, &json!({ "marker": 1 }));
        wait_parked(&mut api, "roles-away").await;
        let (mut c, m2) = resume(&g, m.reconnection_token.as_deref().unwrap(), false).await;
        assert!(
            m2.guid("/vip/watch").is_some(),
            "the granted role's endpoint"
        );
        assert_eq!(
            m2.guid("/t/watch"),
            m.guid("/t/watch"),
            "kept GUIDs unchanged"
        );
        expect_marker(&mut c, 1, "the resumed client").await;
    });
}
