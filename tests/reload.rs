//! Reloading the config while clients are connected: services and endpoints added,
//! removed or changed reach every shard, and every session whose callable endpoints
//! changed gets a new manifest (version + 1, the GUIDs it keeps unchanged); a session
//! that can call the same endpoints as before gets none. The binary reloads its
//! `--config` file on SIGHUP, and a file that fails validation changes nothing. Of
//! `[server]`, a reload applies the admission limits; the rest waits for a restart,
//! logged.

mod common;

use std::time::Duration;

use common::process::GatewayProcess;
use common::tempdir;
use common::*;
use ringgate::client::Incoming;
use ringgate::Config;

/// `config` with one more endpoint on the first service.
fn with_extra_endpoint(backend: &Backend, path: &str, role: &str) -> Config {
    let text = config_text(backend, "", "").replace(
        "  { path = \"/echo\", roles = [\"user\"] },",
        &format!(
            "  {{ path = \"/echo\", roles = [\"user\"] }},\n  {{ path = \"{path}\", roles = [\"{role}\"] }},"
        ),
    );
    assert!(
        text.contains(path),
        "the endpoint was added to the config text"
    );
    Config::from_toml_str(&text, &[]).unwrap()
}

#[test]
fn a_reload_that_adds_an_endpoint_sends_affected_sessions_manifest_v2_with_stable_guids() {
    let backend = Backend::start();
    let g = gateway(config(&backend, "", ""));
    run(async {
        let (mut user, m1) = connect(&g, &user_token(&["user"])).await;
        assert_eq!(m1.version, 1);
        assert!(m1.guid("/echo/new").is_none());
        // A session with no role sees only endpoints that need none: unaffected.
        let (mut other, om) = connect(&g, &user_token(&["nobody"])).await;

        let generation = g.reload(with_extra_endpoint(&backend, "/echo/new", "user"));
        assert_eq!(generation, 2);

        let m2 = user.manifest().await.unwrap();
        assert_eq!(m2.version, 2);
        assert_eq!(m2.reason, "capabilities_updated");
        assert_eq!(m2.session_id, m1.session_id);
        let new = m2.guid("/echo/new").expect("the new endpoint is listed");
        for api in &m1.apis {
            assert_eq!(
                m2.guid(&api.endpoint),
                Some(api.guid),
                "{} kept its GUID",
                api.endpoint
            );
        }
        let (h, body) = user.call(new, b"fresh").await.unwrap();
        assert_eq!((h.code, &body[..]), (0, &b"fresh"[..]));

        // The unaffected session gets no manifest: its next message is the answer to
        // a call made now.
        let public = om.guid("/echo/public").unwrap();
        let id = other.send_request(0, 0, 0, public, b"x").await.unwrap();
        match other.next().await.unwrap() {
            Incoming::Response(h, _) => assert_eq!(h.message_id, id),
            m => panic!("expected the answer, got {m:?}"),
        }

        // Removing it again: a third manifest without it; its GUID answers 30.
        g.reload(config(&backend, "", ""));
        let m3 = user.manifest().await.unwrap();
        assert_eq!(m3.version, 3);
        assert!(m3.guid("/echo/new").is_none());
        let (h, _) = user.call(new, b"gone").await.unwrap();
        assert_eq!(h.code, 30);
    });
}

#[test]
fn sighup_reloads_the_config_file_and_a_bad_file_changes_nothing() {
    let backend = Backend::start();
    let dir = tempdir::Dir::new("ringgate-reload");
    let path = dir.path().join("ringgate.toml");
    let base = config_text(&backend, "", "");
    std::fs::write(&path, &base).unwrap();
    let mut gw = GatewayProcess::start(&path);
    let addr = gw.wait_listening();

    run(async {
        let (mut c, m1) = connect_at(addr, &user_token(&["user"]), Default::default()).await;
        assert!(m1.guid("/echo/hup").is_none());

        // A file that fails validation: refused, the process lives, nothing changes.
        std::fs::write(&path, base.replace("[server]", "[server]\nno_such_key = 1")).unwrap();
        gw.signal(libc::SIGHUP);
        let refused = gw.wait_log("reload refused");
        assert!(refused.contains("no_such_key"), "{refused}");

        // A good file: the new endpoint reaches the live session.
        let added = base.replace(
            "  { path = \"/echo\", roles = [\"user\"] },",
            "  { path = \"/echo\", roles = [\"user\"] },\n  { path = \"/echo/hup\", roles = [\"user\"] },",
        );
        assert!(added.contains("/echo/hup"));
        std::fs::write(&path, added).unwrap();
        gw.signal(libc::SIGHUP);
        let m2 = c.manifest().await.unwrap();
        assert_eq!(m2.version, 2, "one manifest: the refused reload sent none");
        let hup = m2.guid("/echo/hup").expect("the endpoint added by SIGHUP");
        let (h, body) = c.call(hup, b"hi").await.unwrap();
        assert_eq!((h.code, &body[..]), (0, &b"hi"[..]));
    });
    gw.wait_log("config reloaded");
    gw.signal(libc::SIGTERM);
    let status = gw.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{}", gw.log);
}

#[test]
fn a_reload_reaches_every_session_of_a_shard_past_one_batch_once_each() {
    // The new manifests go out a batch of sessions at a time (the walk yields between
    // batches): more sessions than one batch holds must each get exactly one.
    const CLIENTS: usize = 400;
    let backend = Backend::start();
    let g = gateway(config(&backend, "", ""));
    run(async {
        let mut clients = Vec::with_capacity(CLIENTS);
        for _ in 0..CLIENTS {
            clients.push(connect(&g, &user_token(&["user"])).await);
        }
        g.reload(with_extra_endpoint(&backend, "/echo/batch", "user"));
        for (i, (c, m1)) in clients.iter_mut().enumerate() {
            let m2 = c.manifest().await.unwrap();
            assert_eq!(m2.version, 2, "client {i}");
            assert_eq!(m2.session_id, m1.session_id, "client {i}");
            let new = m2.guid("/echo/batch").expect("the new endpoint is listed");
            // No second manifest follows: the next message is this call's answer.
            let id = c.send_request(0, 0, 0, new, b"x").await.unwrap();
            match c.next().await.unwrap() {
                Incoming::Response(h, body) => {
                    assert_eq!((h.message_id, h.code, &body[..]), (id, 0, &b"x"[..]))
                }
                m => panic!("client {i}: expected the answer, got {m:?}"),
            }
        }
    });
}

#[test]
fn sighup_applies_new_admission_limits_and_logs_other_server_keys_as_waiting_for_a_restart() {
    let backend = Backend::start();
    let dir = tempdir::Dir::new("ringgate-reload-limits");
    let path = dir.path().join("ringgate.toml");
    std::fs::write(&path, config_text(&backend, "", "")).unwrap();
    let mut gw = GatewayProcess::start(&path);
    let addr = gw.wait_listening();
    let held = RawClient::upgrade(addr, &user_token(&["user"]), b"");

    // A cap of one (applies now) and a drain window (only a restart applies it).
    let next = config_text(&backend, "max_connections = 1", "")
        .replace("drain_window_ms = 400", "drain_window_ms = 500");
    assert!(next.contains("drain_window_ms = 500"));
    std::fs::write(&path, next).unwrap();
    gw.signal(libc::SIGHUP);
    let waiting = gw.wait_log("changed; it takes effect at the next start");
    assert!(waiting.contains("[server]"), "{waiting}");
    let applied = gw.wait_log("admission limits replaced");
    assert!(applied.contains("max_connections=1"), "{applied}");
    gw.wait_log("config reloaded");
    let request = upgrade_request(
        "/connect",
        &format!("Authorization: Bearer {}\r\n", user_token(&["user"])),
    );
    assert_eq!(
        raw_status(addr, &request),
        503,
        "the held connection fills the new cap"
    );
    drop(held);

    gw.signal(libc::SIGTERM);
    let status = gw.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{}", gw.log);
}
