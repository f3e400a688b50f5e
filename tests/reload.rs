//! Reloading the config while clients are connected: services and endpoints added,
//! removed or changed reach every shard, and every session whose callable endpoints
//! changed gets a new manifest (version + 1, the GUIDs it keeps unchanged); a session
//! that can call the same endpoints as before gets none. The binary reloads its
//! `--config` file on SIGHUP, and a file that fails validation changes nothing.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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

/// The gateway process a test started: stopped by its pid when the test ends, also
/// when it fails half-way.
struct Gateway(std::process::Child);

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn spawn_binary(config: &std::path::Path) -> (Gateway, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringgate"))
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (Gateway(child), rx)
}

/// Waits for a log line containing `needle`; returns it.
fn wait_log(rx: &std::sync::mpsc::Receiver<String>, needle: &str, log: &mut String) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                log.push_str(&line);
                log.push('\n');
                if line.contains(needle) {
                    return line;
                }
            }
            Err(_) => panic!("no log line with {needle:?}:\n{log}"),
        }
    }
}

fn signal(child: &Gateway, sig: i32) {
    // SAFETY: sending a signal to the child this test started, by its pid.
    unsafe {
        libc::kill(child.0.id() as i32, sig);
    }
}

#[test]
fn sighup_reloads_the_config_file_and_a_bad_file_changes_nothing() {
    let backend = Backend::start();
    let dir = std::env::temp_dir().join(format!("ringgate-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ringgate.toml");
    let base = config_text(&backend, "", "");
    std::fs::write(&path, &base).unwrap();
    let (mut child, rx) = spawn_binary(&path);
    let mut log = String::new();
    let line = wait_log(&rx, "ringgate listening", &mut log);
    let addr: std::net::SocketAddr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("listen="))
        .expect("the listen address is logged")
        .parse()
        .unwrap();

    run(async {
        let opts = ringgate::client::ConnectOptions {
            token: Some(user_token(&["user"])),
            ..Default::default()
        };
        let mut c = ringgate::client::Client::connect(addr, &opts)
            .await
            .unwrap();
        let m1 = c.manifest().await.unwrap();
        assert!(m1.guid("/echo/hup").is_none());

        // A file that fails validation: refused, the process lives, nothing changes.
        std::fs::write(&path, base.replace("[server]", "[server]\nno_such_key = 1")).unwrap();
        signal(&child, libc::SIGHUP);
        let refused = wait_log(&rx, "reload refused", &mut log);
        assert!(refused.contains("no_such_key"), "{refused}");

        // A good file: the new endpoint reaches the live session.
        let added = base.replace(
            "  { path = \"/echo\", roles = [\"user\"] },",
            "  { path = \"/echo\", roles = [\"user\"] },\n  { path = \"/echo/hup\", roles = [\"user\"] },",
        );
        assert!(added.contains("/echo/hup"));
        std::fs::write(&path, added).unwrap();
        signal(&child, libc::SIGHUP);
        let m2 = c.manifest().await.unwrap();
        assert_eq!(m2.version, 2, "one manifest: the refused reload sent none");
        let hup = m2.guid("/echo/hup").expect("the endpoint added by SIGHUP");
        let (h, body) = c.call(hup, b"hi").await.unwrap();
        assert_eq!((h.code, &body[..]), (0, &b"hi"[..]));
    });
    wait_log(&rx, "config reloaded", &mut log);
    signal(&child, libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            panic!("did not exit after SIGTERM:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}
