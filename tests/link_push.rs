//! The push-plane actions of the backend link (docs/LINK.md: PUBLISH, SUBSCRIBE, PUSH,
//! ROLES, KICK) and `announce_all`, on real sockets: a scripted link backend
//! (`common::link`) behind a two-shard gateway, each shard with its own link.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::link::*;
use common::push::*;
use common::*;
use ringgate::proto::bannou::flags;
use ringgate::proto::link::{Addr, FromBackend};
use serde_json::json;

/// A two-shard gateway with a link service that announces every session, and its
/// backend's links from both shards up.
fn gateway_with_links(backend: &LinkBackend) -> ringgate::Gateway {
    let service = format!(
        r#"
[[services]]
name = "game"
link = "{}"
announce_all = true
endpoints = [
  {{ path = "/echo", roles = ["user"] }},
  {{ path = "/status/200", roles = ["vip"] }},
]
"#,
        backend.url()
    );
    let g = push_gateway("", "", &service);
    backend.conn(0);
    backend.conn(1);
    g
}

/// The link session number of session `sid` announced (OPEN) on `conn`, waiting for it;
/// with `roles`, an OPEN carrying those roles.
fn link_session(conn: &LinkConn, sid: &str, roles: Option<&str>) -> u64 {
    let t0 = Instant::now();
    loop {
        let found = conn.seen().iter().rev().find_map(|s| match s {
            Seen::Open {
                session,
                session_id,
                roles: r,
                ..
            } if session_id == sid && roles.is_none_or(|want| want == r) => Some(*session),
            _ => None,
        });
        if let Some(n) = found {
            return n;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "no OPEN of {sid} ({roles:?}) on shard {}'s link: {:?}",
            conn.shard,
            conn.seen()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits (5 s at most) until `conn` has seen `event`.
async fn saw(conn: &LinkConn, event: &Seen) {
    let t0 = Instant::now();
    while !conn.seen().contains(event) {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "no {event:?}: {:?}",
            conn.seen()
        );
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn bytes(v: serde_json::Value) -> Bytes {
    Bytes::from(v.to_string())
}

#[test]
fn announce_all_opens_every_session_at_connect_and_again_when_the_link_reconnects() {
    let backend = LinkBackend::start();
    let g = gateway_with_links(&backend);
    let mut api = Api::new(g.admin_addr);
    run(async {
        // None of them ever calls the service.
        let all = place(&g, &mut api, "ann", "acct", &["user"], 1).await;
        for p in &all {
            link_session(&backend.conn(p.shard), &p.sid, Some("user"));
            assert!(
                !backend
                    .seen()
                    .iter()
                    .any(|s| matches!(s, Seen::Request { .. })),
                "no request was made"
            );
        }
        // The backend drops both links; each shard redials and announces its open
        // sessions on the new connection.
        let before = backend.connections.load(Ordering::SeqCst);
        backend.drop_connections();
        let t0 = Instant::now();
        while backend.connections.load(Ordering::SeqCst) < before + 2 {
            assert!(t0.elapsed() < Duration::from_secs(5), "links not redialed");
            std::thread::sleep(Duration::from_millis(10));
        }
        for p in &all {
            let conn = backend.conn(p.shard);
            link_session(&conn, &p.sid, Some("user"));
            let others = all.iter().filter(|o| o.shard != p.shard);
            for o in others {
                assert!(
                    !conn.seen().iter().any(
                        |s| matches!(s, Seen::Open { session_id, .. } if *session_id == o.sid)
                    ),
                    "a session is announced only on its own shard's link"
                );
            }
        }
    });
}

#[test]
fn a_link_publish_reaches_the_subscribers_of_both_shards() {
    let backend = LinkBackend::start();
    let g = gateway_with_links(&backend);
    let mut api = Api::new(g.admin_addr);
    run(async {
        let mut all = place(&g, &mut api, "lp", "acct", &["user"], 1).await;
        for p in all.iter_mut() {
            call_ok(&mut p.client, &p.manifest, "/t/watch", b"{}").await;
        }
        for n in 1..=3 {
            backend.conn(0).act(&[FromBackend::Publish {
                flags: 0,
                topic: "t".into(),
                key: None,
                payload: bytes(json!({ "n": n })),
            }]);
        }
        for p in all.iter_mut() {
            for n in 1..=3 {
                let (h, body) = push(&mut p.client).await;
                assert_eq!(h.flags, flags::EVENT);
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(v, json!({ "n": n }), "{} on shard {}", p.sid, p.shard);
            }
        }
    });
}

#[test]
fn a_subscribe_by_link_session_then_a_publish_in_the_same_write_reaches_the_session() {
    let backend = LinkBackend::start();
    let g = gateway_with_links(&backend);
    let mut api = Api::new(g.admin_addr);
    run(async {
        let mut all = place(&g, &mut api, "sp", "acct", &["user"], 1).await;
        for (i, p) in all.iter_mut().enumerate() {
            let conn = backend.conn(p.shard);
            let n = link_session(&conn, &p.sid, None);
            let topic = format!("fresh-{i}");
            conn.act(&[
                FromBackend::Subscribe {
                    addr: Addr::Link(n),
                    topic: topic.clone().into(),
                },
                FromBackend::Publish {
                    flags: 0,
                    topic: topic.into(),
                    key: None,
                    payload: bytes(json!({ "first": i })),
                },
            ]);
            let v = push_json(&mut p.client).await;
            assert_eq!(v, json!({ "first": i }));
        }
    });
}

#[test]
fn a_link_push_by_session_id_reaches_a_session_on_the_other_shard() {
    let backend = LinkBackend::start();
    let g = gateway_with_links(&backend);
    let mut api = Api::new(g.admin_addr);
    run(async {
        let mut all = place(&g, &mut api, "pp", "acct", &["user"], 1).await;
        for p in all.iter_mut() {
            let other = backend.conn(1 - p.shard);
            other.act(&[FromBackend::Push {
                addr: Addr::Session(p.sid.clone().into()),
                flags: flags::BINARY,
                payload: Bytes::from_static(&[9, 8, 7]),
            }]);
            let (h, body) = push(&mut p.client).await;
            assert_eq!(h.flags, flags::EVENT | flags::BINARY);
            assert_eq!(&body[..], &[9, 8, 7]);
        }
    });
}

#[test]
fn link_roles_resend_the_manifest_and_announce_the_session_again_with_its_new_roles() {
    let backend = LinkBackend::start();
    let g = gateway_with_links(&backend);
    let mut api = Api::new(g.admin_addr);
    run(async {
        let mut all = place(&g, &mut api, "rl", "acct", &["user"], 1).await;
        for p in all.iter_mut() {
            let conn = backend.conn(p.shard);
            let n = link_session(&conn, &p.sid, Some("user"));
            assert!(p.manifest.guid("/status/200").is_none());
            // Sent by the other shard's link, by session id.
            backend.conn(1 - p.shard).act(&[FromBackend::Roles {
                addr: Addr::Session(p.sid.clone().into()),
                add: vec!["vip".into()],
                remove: vec![],
            }]);
            let m2 = p.client.manifest().await.unwrap();
            assert_eq!((m2.version, m2.reason.as_str()), (2, "role_changed"));
            assert_eq!(m2.guid("/echo"), p.manifest.guid("/echo"));
            let vip = m2.guid("/status/200").expect("listed");
            let (h, body) = p.client.call(vip, b"vip!").await.unwrap();
            assert_eq!((h.code, &body[..]), (0, &b"vip!"[..]));
            assert_eq!(
                link_session(&conn, &p.sid, Some("user,vip")),
                n,
                "same session"
            );
        }
    });
}

#[test]
fn a_link_kick_closes_a_session_on_either_shard_with_its_code_and_reason() {
    let backend = LinkBackend::start();
    let g = gateway_with_links(&backend);
    let mut api = Api::new(g.admin_addr);
    run(async {
        let mut all = place(&g, &mut api, "kk", "acct", &["user"], 1).await;
        for p in all.iter_mut() {
            backend.conn(0).act(&[FromBackend::Kick {
                addr: Addr::Session(p.sid.clone().into()),
                code: 4002,
                reason: Bytes::from_static(b"banned"),
            }]);
            assert_eq!(
                close_frame(&mut p.client).await,
                Some((4002, "banned".to_string()))
            );
        }
    });
}

#[test]
fn an_announce_all_service_hears_a_client_go_away_and_resume_and_its_pushes_meanwhile_reach_it() {
    let backend = LinkBackend::start();
    let service = format!(
        r#"
[[services]]
name = "game"
link = "{}"
announce_all = true
endpoints = [ {{ path = "/echo", roles = ["user"] }} ]
"#,
        backend.url()
    );
    let g = push_gateway("reconnect_window_secs = 30", "", &service);
    backend.conn(0);
    backend.conn(1);
    let mut api = Api::new(g.admin_addr);
    run(async {
        let (c, m) = connect(&g, &session_token("acct", "away-1", &["user"])).await;
        let shard = api.shard_of("away-1");
        let conn = backend.conn(shard);
        let session = link_session(&conn, "away-1", None);
        drop(c);
        saw(&conn, &Seen::Away { session }).await;
        // A push by link session number while the client is away waits for it.
        conn.act(&[FromBackend::Push {
            addr: Addr::Link(session),
            flags: 0,
            payload: bytes(json!({ "n": 1 })),
        }]);
        // (The push API's view goes through the same inbox: the push is queued by now.)
        assert_eq!(api.get("/v1/sessions/away-1").0, 200);
        let (mut c, m2) = resume(&g, &m.reconnection_token.unwrap(), false).await;
        assert_eq!(m2.session_id, "away-1");
        assert_eq!(push_json(&mut c).await, json!({ "n": 1 }));
        saw(&conn, &Seen::Resumed { session }).await;
        // The link reaches the new connection under the same number.
        conn.act(&[FromBackend::Push {
            addr: Addr::Link(session),
            flags: 0,
            payload: bytes(json!({ "n": 2 })),
        }]);
        assert_eq!(push_json(&mut c).await, json!({ "n": 2 }));
        assert!(
            !conn.seen().contains(&Seen::Closed { session }),
            "the session never closed"
        );
    });
}
