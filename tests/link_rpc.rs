//! Shortcuts (70/71/72), calls from a backend to a client (service → client RPC) and
//! `service_error` events to admin sessions, on real sockets: a scripted link backend
//! (`common::scripted_link`) behind a real gateway.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::scripted_link::{Event, ScriptedLink};
use common::*;
use ringgate::client::{Client, Incoming, Manifest};
use ringgate::config::Config;
use ringgate::proto::bannou::{flags, ResponseCode, ResponseHeader};
use ringgate::proto::link::{Addr, FromBackend};

fn config(link: &ScriptedLink, extra_services: &str) -> Config {
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
path = "/connect"
shards = 1
admin_listen = "127.0.0.1:0"
[auth]
hs256_secret = "{SECRET}"
[[services]]
name = "game"
link = "{}"
endpoints = [
  {{ path = "/setup", roles = ["user"] }},
  {{ path = "/echo", roles = ["user"] }},
  {{ path = "/vip", roles = ["vip"] }},
]
{extra_services}
"#,
        link.url()
    );
    Config::from_toml_str(&text, &[]).expect("valid config")
}

/// Calls `/setup`, lets the backend act on the caller's link session (`act` gets it),
/// then replies 200. Returns the session and the manifests that arrived meanwhile
/// (the actions' effects may arrive before or after the answer).
async fn with_backend(
    c: &mut Client,
    m: &Manifest,
    link: &ScriptedLink,
    act: impl FnOnce(u64),
) -> (u64, Vec<Manifest>) {
    let id = c
        .send_request(0, 0, 0, m.guid("/setup").unwrap(), b"{}")
        .await
        .unwrap();
    let (session, call, _) = link.request("/setup");
    act(session);
    link.send(FromBackend::Reply {
        call,
        status: 200,
        payload: Bytes::new(),
    });
    let mut manifests = Vec::new();
    loop {
        match c.next().await.unwrap() {
            Incoming::Response(h, _) if h.message_id == id => {
                assert_eq!(h.code, 0);
                return (session, manifests);
            }
            Incoming::Push(_, p) => {
                if let Ok(m) = Manifest::parse(&p) {
                    manifests.push(m);
                }
            }
            _ => {}
        }
    }
}

/// The newest manifest, from `seen` or read next, until `want` holds for it.
async fn manifest_until(
    c: &mut Client,
    seen: Vec<Manifest>,
    want: impl Fn(&Manifest) -> bool,
) -> Manifest {
    if let Some(m) = seen.into_iter().rev().find(|m| want(m)) {
        return m;
    }
    loop {
        let m = c.manifest().await.unwrap();
        if want(&m) {
            return m;
        }
    }
}

fn shortcut(
    session: u64,
    name: &str,
    target: &str,
    expires: u64,
    payload: &'static [u8],
) -> FromBackend {
    FromBackend::Shortcut {
        addr: Addr::Link(session),
        name: name.into(),
        target: target.into(),
        expires_unix_ms: expires,
        payload: Bytes::from_static(payload),
    }
}

/// The endpoint names of a manifest, with their services.
fn listed(m: &Manifest) -> Vec<(String, String)> {
    m.apis
        .iter()
        .map(|a| (a.endpoint.clone(), a.service.clone()))
        .collect()
}

#[test]
fn a_shortcut_sends_its_bound_payload_to_its_target_and_answers_70_71_72() {
    let link = ScriptedLink::start();
    let g = gateway(config(&link, ""));
    run(async {
        let (mut c, m) = connect(&g, &user_token(&["user"])).await;
        let now_ms = unix_now() * 1000;
        let (_, seen) = with_backend(&mut c, &m, &link, |s| {
            link.send(shortcut(s, "join", "/echo", 0, b"{\"bound\":true}"));
            link.send(shortcut(s, "stale", "/echo", now_ms - 1000, b"{}"));
            link.send(shortcut(s, "nowhere", "/removed", 0, b"{}"));
            link.send(shortcut(s, "locked", "/vip", 0, b"{}"));
        })
        .await;
        // One manifest per shortcut published (the last lists all four).
        let m2 = manifest_until(&mut c, seen, |m| {
            m.apis.iter().filter(|a| a.service == "shortcut").count() == 4
        })
        .await;
        assert_eq!(m2.version, 5, "the initial one and one per shortcut");
        assert!(listed(&m2).contains(&("join".into(), "shortcut".into())));
        assert_eq!(m2.guid("/echo"), m.guid("/echo"), "endpoint GUIDs stay");

        // Invoked (any payload, even none): the bound payload goes to the target.
        let id = c
            .send_request(0, 0, 0, m2.guid("join").unwrap(), b"")
            .await
            .unwrap();
        let (_, call, payload) = link.request("/echo");
        assert_eq!(payload, b"{\"bound\":true}");
        link.send(FromBackend::Reply {
            call,
            status: 200,
            payload: Bytes::from_static(b"joined"),
        });
        let (h, body) = c.response(id).await.unwrap();
        assert_eq!((h.code, &body[..]), (0, &b"joined"[..]));

        let code = |h: ResponseHeader| ResponseCode::from_u8(h.code);
        let (h, _) = c.call(m2.guid("stale").unwrap(), b"{}").await.unwrap();
        assert_eq!(code(h), Some(ResponseCode::ShortcutExpired));
        let (h, _) = c.call(m2.guid("nowhere").unwrap(), b"{}").await.unwrap();
        assert_eq!(code(h), Some(ResponseCode::ShortcutTargetNotFound));
        let (h, _) = c.call(m2.guid("locked").unwrap(), b"{}").await.unwrap();
        assert_eq!(
            code(h),
            Some(ResponseCode::ShortcutTargetNotFound),
            "a target the session may not call is as good as gone"
        );

        // Revoked: the manifest is re-sent without it, and its GUID answers 72.
        let (_, seen) = with_backend(&mut c, &m2, &link, |s| {
            link.send(FromBackend::ShortcutRevoke {
                addr: Addr::Link(s),
                name: "join".into(),
            })
        })
        .await;
        let m3 = manifest_until(&mut c, seen, |m| m.version > m2.version).await;
        assert!(!listed(&m3).iter().any(|(n, _)| n == "join"));
        let (h, _) = c.call(m2.guid("join").unwrap(), b"{}").await.unwrap();
        assert_eq!(code(h), Some(ResponseCode::ShortcutRevoked));
    });
    g.stop();
}

#[test]
fn a_backend_call_to_a_client_gets_the_clients_answer_or_60_or_31() {
    let link = ScriptedLink::start();
    let g = gateway(config(&link, ""));
    run(async {
        let (mut c, m) = connect(&g, &user_token(&["user"])).await;
        let (session, _) = with_backend(&mut c, &m, &link, |_| {}).await;

        // Answered: the client gets a request frame (flag 0x01) and answers it.
        link.send(FromBackend::CallClient {
            addr: Addr::Link(session),
            call: 9,
            timeout_ms: 5000,
            flags: 0,
            payload: Bytes::from_static(b"ping?"),
        });
        let req = loop {
            match c.next().await.unwrap() {
                Incoming::Push(h, p) if h.flags & flags::EVENT == 0 => break (h, p),
                _ => {}
            }
        };
        assert_eq!(req.0.flags, flags::BINARY, "as Bannou sends it");
        assert_eq!(&req.1[..], b"ping?");
        let answer = ResponseHeader {
            flags: flags::RESPONSE | flags::BINARY,
            channel: 0,
            sequence: 0,
            message_id: req.0.message_id,
            code: 0,
        };
        let mut msg = answer.encode().to_vec();
        msg.extend_from_slice(b"pong!");
        c.send_binary(&msg).await.unwrap();
        let got = link.until(|e| match e {
            Event::ClientAnswer { .. } => Some(e),
            _ => None,
        });
        assert_eq!(
            got,
            Event::ClientAnswer {
                call: 9,
                code: 0,
                payload: b"pong!".to_vec()
            }
        );

        // Not answered within its timeout: 60. (The client reads but does not answer.)
        link.send(FromBackend::CallClient {
            addr: Addr::Link(session),
            call: 10,
            timeout_ms: 200,
            flags: 0,
            payload: Bytes::from_static(b"anyone?"),
        });
        let _ = monoio::time::timeout(Duration::from_millis(100), c.next()).await;
        let got = link.until(|e| match e {
            Event::ClientAnswer { call, code, .. } => Some((call, code)),
            _ => None,
        });
        assert_eq!(got, (10, ResponseCode::InternalError.as_u8()));

        // Nobody by that session id: 31 at once.
        link.send(FromBackend::CallClient {
            addr: Addr::Session("no-such-session".into()),
            call: 11,
            timeout_ms: 5000,
            flags: 0,
            payload: Bytes::new(),
        });
        let got = link.until(|e| match e {
            Event::ClientAnswer { call, code, .. } => Some((call, code)),
            _ => None,
        });
        assert_eq!(got, (11, ResponseCode::ClientNotFound.as_u8()));

        // A late answer to call 10 is not taken for anything: it is a bad request (10).
        let late = ResponseHeader {
            message_id: 424242,
            ..answer
        };
        c.send_binary(&late.encode()).await.unwrap();
        let bad = loop {
            if let Incoming::Response(h, _) = c.next().await.unwrap() {
                break h;
            }
        };
        assert_eq!(bad.code, ResponseCode::RequestError.as_u8());
    });
    g.stop();
}

#[test]
fn a_client_that_leaves_with_a_call_pending_is_answered_31() {
    let link = ScriptedLink::start();
    let g = gateway(config(&link, ""));
    run(async {
        let (mut c, m) = connect(&g, &user_token(&["user"])).await;
        let (session, _) = with_backend(&mut c, &m, &link, |_| {}).await;
        link.send(FromBackend::CallClient {
            addr: Addr::Link(session),
            call: 5,
            timeout_ms: 10_000,
            flags: 0,
            payload: Bytes::from_static(b"?"),
        });
        loop {
            if let Incoming::Push(h, _) = c.next().await.unwrap() {
                if h.flags & flags::EVENT == 0 {
                    break;
                }
            }
        }
        drop(c);
        // (Let the runtime carry the close out before this thread blocks.)
        monoio::time::sleep(Duration::from_millis(50)).await;
        let got = link.until(|e| match e {
            Event::ClientAnswer { call, code, .. } => Some((call, code)),
            _ => None,
        });
        assert_eq!(got, (5, ResponseCode::ClientNotFound.as_u8()));
    });
    g.stop();
}

#[test]
fn admin_sessions_get_a_service_error_event_when_a_backend_call_fails() {
    let link = ScriptedLink::start();
    // A service whose port refuses connections.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let g = gateway(config(
        &link,
        &format!(
            "[[services]]\nname = \"ledger\"\nurl = \"{dead_url}\"\nendpoints = [ {{ path = \"/ledger/get\", roles = [\"user\"] }} ]"
        ),
    ));
    run(async {
        let (mut admin, _) = connect(&g, &user_token(&["admin"])).await;
        let (mut user, m) = connect(&g, &user_token(&["user"])).await;
        let (h, _) = user
            .call(m.guid("/ledger/get").unwrap(), b"{}")
            .await
            .unwrap();
        assert_eq!(h.code, ResponseCode::InternalError.as_u8());
        let event = loop {
            if let Incoming::Push(_, p) = admin.next().await.unwrap() {
                let v: serde_json::Value = serde_json::from_slice(&p).unwrap();
                if v["eventName"] == "service_error" {
                    break v;
                }
            }
        };
        assert_eq!(event["dependency"], "ledger");
        assert_eq!(event["endpoint"], "/ledger/get");
        assert_eq!(event["errorType"], "unreachable");
        assert_eq!(event["severity"], "error");
        assert!(event["serviceId"].as_str().unwrap().len() == 36);
        // The user (no admin role) got only its 60, no event.
        let nothing = monoio::time::timeout(Duration::from_millis(300), async {
            loop {
                if let Incoming::Push(_, p) = user.next().await.unwrap() {
                    return p;
                }
            }
        })
        .await;
        assert!(nothing.is_err(), "a non-admin session got {nothing:?}");
    });
    g.stop();
}

#[test]
fn a_backend_broadcast_reaches_every_session_whether_or_not_it_called_the_service() {
    let link = ScriptedLink::start();
    let g = gateway(config(&link, ""));
    run(async {
        let (mut caller, m) = connect(&g, &user_token(&["user"])).await;
        let (mut bystander, _) = connect(&g, &user_token(&[])).await;
        // (A call first, so the link is up.)
        with_backend(&mut caller, &m, &link, |_| {}).await;
        link.send(FromBackend::Broadcast {
            flags: flags::BINARY,
            payload: Bytes::from_static(b"\x00all"),
        });
        for c in [&mut caller, &mut bystander] {
            let got = loop {
                match c.next().await.unwrap() {
                    Incoming::Push(h, p) if Manifest::parse(&p).is_err() => break (h, p),
                    _ => {}
                }
            };
            assert_eq!(got.0.flags, flags::EVENT | flags::BINARY);
            assert_eq!(&got.1[..], b"\x00all");
        }
    });
    g.stop();
}
