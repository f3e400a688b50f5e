//! Client-to-client messages on real sockets (flag 0x20; docs/DESIGN.md §2, §6): to one
//! peer by the `peerGuid` of its manifest, across shards, and broadcasts to everyone
//! (the all-FF GUID) for the roles in `server.broadcast_roles`.

mod common;

use std::time::{Duration, Instant};

use common::push::*;
use common::*;
use ringgate::proto::bannou::{flags, RequestHeader, ResponseCode};
use serde_json::json;

#[test]
fn a_peer_message_crosses_shards_unchanged_is_acknowledged_and_a_gone_or_unknown_peer_answers_31() {
    let g = push_gateway("", "", "");
    let mut api = Api::new(g.admin_addr);
    run(async {
        let mut all = place(&g, &mut api, "peer", "acct", &["user"], 1).await;
        let mut b = all.pop().unwrap();
        let mut a = all.pop().unwrap();
        assert_ne!(a.shard, b.shard);
        let to = b.manifest.peer_guid.expect("the manifest carries peerGuid");
        assert_ne!(
            Some(to),
            a.manifest.peer_guid,
            "each connection has its own"
        );

        let payload = br#"{"hello":"from a"}"#;
        let id = a
            .client
            .send_request(flags::CLIENT, 0, 7, to, payload)
            .await
            .unwrap();
        let (h, body) = push(&mut b.client).await;
        assert_eq!(
            h,
            RequestHeader {
                flags: flags::CLIENT,
                channel: 0,
                sequence: 7,
                guid: to,
                message_id: id,
            },
            "the sender's header, unchanged"
        );
        assert_eq!(&body[..], payload);
        let (h, body) = response(&mut a.client).await;
        assert_eq!((h.message_id, h.code), (id, ResponseCode::Ok as u8));
        assert_eq!(h.flags, flags::CLIENT | flags::RESPONSE);
        let ack: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(ack["Status"], "delivered", "{ack}");

        // An event (0x10) is delivered with no answer: the next thing A gets is the
        // marker.
        call_ok(&mut a.client, &a.manifest.clone(), "/marker/watch", b"{}").await;
        a.client
            .send_request(flags::CLIENT | flags::EVENT, 0, 0, to, b"ev")
            .await
            .unwrap();
        let (h, body) = push(&mut b.client).await;
        assert_eq!(
            (h.flags, &body[..]),
            (flags::CLIENT | flags::EVENT, &b"ev"[..])
        );
        api.publish("marker", None, &json!({ "marker": 1 }));
        expect_marker(&mut a.client, 1, "the event's sender").await;

        // B goes away (and out of the directory): 31.
        b.client.close(1000).await.unwrap();
        let t0 = Instant::now();
        while api.get(&format!("/v1/sessions/{}", b.sid)).0 != 404 {
            assert!(t0.elapsed() < Duration::from_secs(5), "B never left");
            std::thread::sleep(Duration::from_millis(10));
        }
        let id = a
            .client
            .send_request(flags::CLIENT, 0, 0, to, b"x")
            .await
            .unwrap();
        let (h, _) = response(&mut a.client).await;
        assert_eq!(
            (h.message_id, h.code),
            (id, ResponseCode::ClientNotFound as u8)
        );

        // A GUID that was never a peer's: 31.
        let id = a
            .client
            .send_request(flags::CLIENT, 0, 0, [0x5a; 16], b"x")
            .await
            .unwrap();
        let (h, body) = response(&mut a.client).await;
        assert_eq!(
            (h.message_id, h.code, body.len()),
            (id, ResponseCode::ClientNotFound as u8, 0)
        );
    });
}

#[test]
fn a_broadcast_from_an_allowed_role_reaches_every_other_session_on_both_shards_and_others_get_40() {
    let g = push_gateway("", "", "");
    let mut api = Api::new(g.admin_addr);
    run(async {
        let mut users = place(&g, &mut api, "bu", "acct", &["user"], 2).await;
        let mut admins = place(&g, &mut api, "ba", "acct-admin", &["user", "admin"], 1).await;
        let mut admin = admins.remove(0);
        // The admin left on the other shard receives it too.
        let mut receivers: Vec<&mut Placed> = users.iter_mut().chain(admins.iter_mut()).collect();
        assert_eq!(receivers.len(), 5);
        let m = admin.manifest.clone();
        call_ok(&mut admin.client, &m, "/marker/watch", b"{}").await;
        for r in receivers.iter_mut() {
            let m = r.manifest.clone();
            call_ok(&mut r.client, &m, "/marker/watch", b"{}").await;
        }

        let id = admin
            .client
            .send_request(flags::CLIENT | flags::EVENT, 0, 0, [0xff; 16], b"to all")
            .await
            .unwrap();
        for r in receivers.iter_mut() {
            let (h, body) = push(&mut r.client).await;
            assert_eq!(
                (h.flags, h.guid, h.message_id),
                (flags::CLIENT | flags::EVENT, [0xff; 16], id),
                "{}",
                r.sid
            );
            assert_eq!(&body[..], b"to all");
        }
        // Not to itself: after every other session got it, the marker is its next.
        api.publish("marker", None, &json!({ "marker": 1 }));
        expect_marker(&mut admin.client, 1, "the broadcaster").await;
        for r in receivers.iter_mut() {
            let who = r.sid.clone();
            expect_marker(&mut r.client, 1, &who).await;
        }

        // A session without the role: 40, and nobody gets anything.
        let sender = &mut receivers[0];
        let id = sender
            .client
            .send_request(flags::CLIENT, 0, 0, [0xff; 16], b"not allowed")
            .await
            .unwrap();
        let (h, body) = response(&mut sender.client).await;
        assert_eq!(
            (h.message_id, h.code, body.len()),
            (id, ResponseCode::BroadcastNotAllowed as u8, 0)
        );
        api.publish("marker", None, &json!({ "marker": 2 }));
        for r in receivers.iter_mut() {
            let who = r.sid.clone();
            expect_marker(&mut r.client, 2, &who).await;
        }
        expect_marker(&mut admin.client, 2, "the admin").await;
    });
}

#[test]
fn flooding_a_peer_that_does_not_read_gets_the_sender_12_and_never_closes_the_peer() {
    // A small outbox bound, so the flood reaches it quickly.
    let g = push_gateway("max_outbox_bytes = 262144", "", "");
    let mut api = Api::new(g.admin_addr);
    run(async {
        let mut all = place(&g, &mut api, "flood", "acct", &["user"], 1).await;
        let mut victim = all.pop().unwrap();
        let mut flooder = all.pop().unwrap();
        let to = victim.manifest.peer_guid.unwrap();
        let big = vec![b'x'; 60_000];
        // The victim reads nothing meanwhile. Events (0x10): only refusals answer.
        let mut refused = 0;
        for _ in 0..400 {
            flooder
                .client
                .send_request(flags::CLIENT | flags::EVENT, 0, 0, to, &big)
                .await
                .unwrap();
            while let Some(Got::Response(h, _)) =
                next_within(&mut flooder.client, Duration::from_millis(1)).await
            {
                assert_eq!(h.code, ResponseCode::TooManyRequests.as_u8());
                refused += 1;
            }
            if refused > 0 {
                break;
            }
        }
        assert!(refused > 0, "the sender was never told 12");
        assert_eq!(
            metric(&g, "ringgate_outbox_overflow_total"),
            0,
            "nobody closed"
        );
        // The victim, reading again, is still connected and gets a push.
        let (status, _) = api.post(
            &format!("/v1/sessions/{}/push", victim.sid),
            &json!({ "payload": { "still": "here" } }),
        );
        assert_eq!(status, 202);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            assert!(Instant::now() < deadline, "the push never came");
            match next_within(&mut victim.client, Duration::from_secs(5)).await {
                Some(Got::Push(_, p)) if &p[..] == br#"{"still":"here"}"# => break,
                Some(Got::Push(..)) => {}
                other => panic!("the victim got {other:?}"),
            }
        }
    });
    g.stop();
}
