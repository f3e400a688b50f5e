//! A link backend written in Python (`tests/link_py/backend.py`, on the `websockets`
//! library) behind a real gateway: the link protocol (docs/LINK.md) is meant for any
//! language with a WebSocket server library, and its push-plane actions (SUBSCRIBE,
//! UNSUBSCRIBE, PUBLISH, ROLES, KICK, PUSH) are checked here from real clients
//! (`ringgate::client`) as a backend outside this code base sends them.
//!
//! Each test starts the gateway in-process with `[[services]] link` pointing at its own
//! Python process, which is stopped by its pid when the test ends, also when it fails
//! (and which exits by itself if this process dies: it watches its stdin).
//!
//! Python comes from a venv under the cargo target dir (`link-py/venv`, with
//! `websockets` from PyPI): `.ci/run` prepares it, and the test makes it when it is
//! missing. Without `python3` (and its `venv` module) the test fails saying what to
//! install; `RINGGATE_SKIP_PY_LINK=1` skips it instead.

mod common;

use std::io::{BufRead, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::tools::{run_with_timeout, target_subdir, tool_version};
use common::*;
use ringgate::client::{Client, Incoming, Manifest};
use ringgate::config::Config;
use ringgate::proto::bannou::flags;
use serde_json::{json, Value};

const SKIP_ENV: &str = "RINGGATE_SKIP_PY_LINK";
/// What the venv gets from PyPI (the `websockets.asyncio` server API is 14+).
const WEBSOCKETS_REQUIREMENT: &str = "websockets>=14,<18";
const PIP_TIMEOUT: Duration = Duration::from_secs(300);
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/link_py/backend.py");
const SHARDS: usize = 2;

/// The Python backend process: its address, what it printed, stopped on drop.
struct PyBackend {
    child: Child,
    /// Held open: the backend exits when it closes (this process gone).
    _stdin: ChildStdin,
    addr: SocketAddr,
    /// Its JSON lines (`{"event": ...}`), in order.
    events: Arc<Mutex<Vec<Value>>>,
    stderr: Arc<Mutex<String>>,
}

impl PyBackend {
    /// Starts the backend; None when the test is to be skipped.
    fn start() -> Option<PyBackend> {
        if std::env::var(SKIP_ENV).as_deref() == Ok("1") {
            eprintln!("skipped: {SKIP_ENV}=1 (the Python link backend test did not run)");
            return None;
        }
        let python = match venv_python() {
            Ok(p) => p,
            Err(e) => panic!(
                "the Python link backend test cannot run: {e}\n(set {SKIP_ENV}=1 to skip it)"
            ),
        };
        let mut child = Command::new(&python)
            .arg("-u")
            .arg(SCRIPT)
            .args(["--host", "127.0.0.1", "--port", "0"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} {SCRIPT}: {e}", python.display()));
        let stdin = child.stdin.take().unwrap();
        let stderr: Arc<Mutex<String>> = Arc::default();
        let err = stderr.clone();
        let mut pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut chunk) {
                err.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        });
        let (addr_tx, addr_rx) = std::sync::mpsc::channel::<String>();
        let events: Arc<Mutex<Vec<Value>>> = Arc::default();
        let ev = events.clone();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.strip_prefix("listening ") {
                    let _ = addr_tx.send(addr.to_string());
                } else if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    ev.lock().unwrap().push(v);
                }
            }
        });
        let mut backend = PyBackend {
            child,
            _stdin: stdin,
            addr: "127.0.0.1:0".parse().unwrap(),
            events,
            stderr,
        };
        match addr_rx.recv_timeout(Duration::from_secs(15)) {
            Ok(a) => backend.addr = a.parse().expect("the backend prints HOST:PORT"),
            Err(_) => panic!(
                "the Python backend did not say where it listens:\n{}",
                backend.stderr.lock().unwrap()
            ),
        }
        Some(backend)
    }

    fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    fn events(&self) -> Vec<Value> {
        self.events.lock().unwrap().clone()
    }

    /// Waits up to 5 s until what the backend printed satisfies `what`.
    fn wait_for(&self, about: &str, what: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let t0 = Instant::now();
        loop {
            let events = self.events();
            if what(&events) {
                return events;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "the Python backend never showed {about}; it printed:\n{}\n--- stderr ---\n{}",
                events
                    .iter()
                    .map(Value::to_string)
                    .collect::<Vec<_>>()
                    .join("\n"),
                self.stderr.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for PyBackend {
    fn drop(&mut self) {
        // By its pid (Child::kill), the process this test started.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The venv's python, with `websockets` importable: made (once per test binary) when
/// missing. Err says what to install.
fn venv_python() -> Result<PathBuf, String> {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PYTHON.get_or_init(prepare_venv).clone()
}

fn prepare_venv() -> Result<PathBuf, String> {
    let venv = target_subdir("link-py").join("venv");
    let python = venv.join("bin/python");
    if has_websockets(&python) {
        return Ok(python);
    }
    tool_version("python3").ok_or(
        "`python3` is not on PATH: install Python 3.9 or later with its venv module \
         (e.g. `apt-get install -y python3 python3-venv`)",
    )?;
    if !python.exists() {
        eprintln!("creating a Python venv in {}", venv.display());
        let out = run_with_timeout(
            Command::new("python3").arg("-m").arg("venv").arg(&venv),
            PIP_TIMEOUT,
        )?;
        if !out.success {
            let _ = std::fs::remove_dir_all(&venv);
            return Err(format!(
                "`python3 -m venv {}` failed ({}): install Python's venv module \
                 (e.g. `apt-get install -y python3-venv`)\n{}{}",
                venv.display(),
                out.status,
                out.stdout,
                out.stderr
            ));
        }
    }
    eprintln!(
        "installing {WEBSOCKETS_REQUIREMENT} into {} (pip)",
        venv.display()
    );
    let out = run_with_timeout(
        Command::new(&python).args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            WEBSOCKETS_REQUIREMENT,
        ]),
        PIP_TIMEOUT,
    )?;
    if !out.success || !has_websockets(&python) {
        return Err(format!(
            "`pip install {WEBSOCKETS_REQUIREMENT}` into {} failed ({}): it needs PyPI\n{}{}",
            venv.display(),
            out.status,
            out.stdout,
            out.stderr
        ));
    }
    Ok(python)
}

fn has_websockets(python: &Path) -> bool {
    python.exists()
        && Command::new(python)
            .args(["-c", "import websockets.asyncio.server"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

fn config(link_url: &str) -> Config {
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
path = "/connect"
shards = {SHARDS}
admin_listen = "127.0.0.1:0"
max_message_bytes = 4096
[auth]
hs256_secret = "{SECRET}"
[backend]
request_timeout_ms = 3000
connect_timeout_ms = 1000
[[services]]
name = "py"
link = "{link_url}"
endpoints = [
  {{ path = "/py/echo", roles = ["user"] }},
  {{ path = "/py/watch", roles = ["user"] }},
  {{ path = "/py/unwatch", roles = ["user"] }},
  {{ path = "/py/shout", roles = ["user"] }},
  {{ path = "/py/promote", roles = ["user"] }},
  {{ path = "/py/vip", roles = ["vip"] }},
  {{ path = "/py/kick", roles = ["user"] }},
  {{ path = "/py/notify", roles = ["user"] }},
]
"#
    );
    Config::from_toml_str(&text, &[]).expect("the Python link test config is valid")
}

/// A gateway whose service `py` is the Python backend, once every shard's link is up.
fn gateway_with(py: &PyBackend) -> ringgate::Gateway {
    let g = gateway(config(&py.url()));
    py.wait_for("a link from every shard with the subprotocol", |ev| {
        ev.iter()
            .filter(|e| e["event"] == "link" && e["subprotocol"] == "ringgate-link.v1")
            .count()
            >= SHARDS
    });
    g
}

fn user(account: &str, sid: &str) -> String {
    token(account, &["user"], Some(sid), unix_now() + 3600)
}

/// The next push that is not a manifest, within `within`; None if none came.
async fn next_push(c: &mut Client, within: Duration) -> Option<(u8, Bytes)> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match monoio::time::timeout(left, c.next()).await {
            Err(_) => return None,
            Ok(Ok(Incoming::Push(h, body))) if !is_manifest_payload(&body) => {
                return Some((h.flags, body))
            }
            Ok(Ok(Incoming::Close(cl))) => panic!("closed while waiting for a push: {cl:?}"),
            Ok(Err(e)) => panic!("connection failed while waiting for a push: {e}"),
            Ok(Ok(_)) => {}
        }
    }
}

fn is_manifest_payload(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body)
        .map(|v| v["eventName"] == "connect.capability-manifest")
        .unwrap_or(false)
}

/// Calls `endpoint` and waits for its response, keeping the pushes that come meanwhile
/// (`Client::call` skips them).
async fn call_keeping_pushes(
    c: &mut Client,
    m: &Manifest,
    endpoint: &str,
    payload: &[u8],
) -> (u8, Bytes, Vec<Bytes>) {
    let guid = m
        .guid(endpoint)
        .unwrap_or_else(|| panic!("{endpoint} is not in the manifest: {m:?}"));
    let id = c.send_request(0, 0, 0, guid, payload).await.unwrap();
    let mut pushes = Vec::new();
    loop {
        match c.next().await.expect("connection open") {
            Incoming::Response(h, body) if h.message_id == id => return (h.code, body, pushes),
            Incoming::Push(_, body) => pushes.push(body),
            Incoming::Close(cl) => panic!("closed while calling {endpoint}: {cl:?}"),
            _ => {}
        }
    }
}

#[test]
fn a_session_the_python_backend_subscribes_gets_its_keyed_publishes_until_unsubscribed() {
    let Some(py) = PyBackend::start() else { return };
    let g = gateway_with(&py);
    run(async {
        let (mut watcher, mw) = connect(&g, &user("acct-w", "py-watcher")).await;
        let (mut shouter, ms) = connect(&g, &user("acct-s", "py-shouter")).await;

        let (code, body, _) = call_keeping_pushes(&mut watcher, &mw, "/py/watch", b"{}").await;
        assert_eq!(code, 0);
        assert_eq!(
            serde_json::from_slice::<Value>(&body).unwrap(),
            json!({"watching": "py.news"})
        );

        let first = br#"{"eventName":"py.news","n":1}"#;
        let (code, _, pushes) = call_keeping_pushes(&mut shouter, &ms, "/py/shout", first).await;
        assert_eq!(code, 0);
        assert!(
            pushes.is_empty(),
            "the publisher is not subscribed, yet got {pushes:?}"
        );
        let (f, got) = next_push(&mut watcher, Duration::from_secs(5))
            .await
            .expect("the subscriber gets the publish");
        assert_eq!(f & flags::EVENT, flags::EVENT);
        assert_eq!(&got[..], first);

        // Unsubscribed, then subscribed again: only what was published after that comes.
        let (code, _, _) = call_keeping_pushes(&mut watcher, &mw, "/py/unwatch", b"{}").await;
        assert_eq!(code, 0);
        let missed = br#"{"eventName":"py.news","n":2}"#;
        assert_eq!(
            call_keeping_pushes(&mut shouter, &ms, "/py/shout", missed)
                .await
                .0,
            0
        );
        let (code, _, pushes) = call_keeping_pushes(&mut watcher, &mw, "/py/watch", b"{}").await;
        assert_eq!(code, 0);
        assert!(pushes.is_empty(), "got {pushes:?} while unsubscribed");
        let third = br#"{"eventName":"py.news","n":3}"#;
        assert_eq!(
            call_keeping_pushes(&mut shouter, &ms, "/py/shout", third)
                .await
                .0,
            0
        );
        let (_, got) = next_push(&mut watcher, Duration::from_secs(5))
            .await
            .expect("the publish after subscribing again");
        assert_eq!(&got[..], third, "the publish made while unsubscribed came");
    });
    for a in ["subscribe", "unsubscribe", "publish"] {
        py.wait_for(&format!("its {a} action"), |ev| {
            ev.iter()
                .any(|e| e["event"] == "action" && e["action"] == a)
        });
    }
}

#[test]
fn a_session_the_python_backend_promotes_gets_a_manifest_with_the_vip_endpoint_and_may_call_it() {
    let Some(py) = PyBackend::start() else { return };
    let g = gateway_with(&py);
    run(async {
        let (mut c, m) = connect(&g, &user("acct-vip", "py-vip-1")).await;
        assert!(m.guid("/py/vip").is_none(), "vip before the promotion");
        let id = c
            .send_request(0, 0, 0, m.guid("/py/promote").unwrap(), b"{}")
            .await
            .unwrap();
        let (mut replied, mut promoted) = (false, None);
        while !replied || promoted.is_none() {
            match c.next().await.expect("connection open") {
                Incoming::Response(h, _) if h.message_id == id => {
                    assert_eq!(h.code, 0);
                    replied = true;
                }
                Incoming::Push(_, body) if is_manifest_payload(&body) => {
                    promoted = Some(Manifest::parse(&body).unwrap());
                }
                Incoming::Close(cl) => panic!("closed: {cl:?}"),
                _ => {}
            }
        }
        let promoted = promoted.unwrap();
        assert_eq!(promoted.version, m.version + 1);
        assert_eq!(promoted.reason, "role_changed");
        assert_eq!(promoted.session_id, "py-vip-1");
        let vip = promoted
            .guid("/py/vip")
            .expect("the new manifest lists the vip endpoint");
        for api in &m.apis {
            assert_eq!(
                promoted.guid(&api.endpoint),
                Some(api.guid),
                "{} kept its GUID",
                api.endpoint
            );
        }
        // The backend was told the new roles (OPEN again) before the vip call reached it.
        let (h, body) = c.call(vip, b"{}").await.unwrap();
        assert_eq!(h.code, 0);
        assert_eq!(
            serde_json::from_slice::<Value>(&body).unwrap(),
            json!({"session_id": "py-vip-1", "account_id": "acct-vip", "roles": "user,vip"})
        );
    });
}

#[test]
fn a_session_the_python_backend_kicks_is_closed_with_4002_and_reported_closed_to_it() {
    let Some(py) = PyBackend::start() else { return };
    let g = gateway_with(&py);
    run(async {
        let (mut c, m) = connect(&g, &user("acct-k", "py-kicked")).await;
        c.send_request(0, 0, 0, m.guid("/py/kick").unwrap(), b"{}")
            .await
            .unwrap();
        let closed = loop {
            match c.next().await {
                Ok(Incoming::Close(cl)) => break cl,
                Ok(_) => {}
                Err(e) => panic!("no close frame: {e}"),
            }
        };
        assert_eq!(closed, Some((4002, "kicked by python".to_string())));
    });
    // (The backend's lines are read on another thread: wait for the request's.)
    let is_kick = |e: &&Value| e["event"] == "request" && e["path"] == "/py/kick";
    let events = py.wait_for("the kick request", |ev| ev.iter().any(|e| is_kick(&e)));
    let kicked = events.iter().find(is_kick).expect("waited for");
    let (shard, session) = (kicked["shard"].clone(), kicked["session"].clone());
    py.wait_for("CLOSED for the kicked session", |ev| {
        ev.iter()
            .any(|e| e["event"] == "closed" && e["shard"] == shard && e["session"] == session)
    });
}

#[test]
fn a_push_the_python_backend_sends_to_an_account_reaches_every_session_of_it_and_no_other() {
    let Some(py) = PyBackend::start() else { return };
    let g = gateway_with(&py);
    run(async {
        let (mut first, m) = connect(&g, &user("acct-n", "py-n-1")).await;
        let (mut second, _) = connect(&g, &user("acct-n", "py-n-2")).await;
        let (mut stranger, _) = connect(&g, &user("acct-other", "py-n-3")).await;

        let notice = "{\"eventName\":\"py.notice\",\"text\":\"h\u{e9}llo \u{2713}\"}".as_bytes();
        let (code, _, mut pushes) = call_keeping_pushes(&mut first, &m, "/py/notify", notice).await;
        assert_eq!(code, 0);
        if pushes.is_empty() {
            let (_, p) = next_push(&mut first, Duration::from_secs(5))
                .await
                .expect("the caller's own session gets the push");
            pushes.push(p);
        }
        assert_eq!(pushes.len(), 1, "{pushes:?}");
        assert_eq!(&pushes[0][..], notice);
        let (f, got) = next_push(&mut second, Duration::from_secs(5))
            .await
            .expect("the account's other session gets the push");
        assert_eq!(f & flags::EVENT, flags::EVENT);
        assert_eq!(&got[..], notice);
        assert_eq!(
            next_push(&mut stranger, Duration::from_millis(300)).await,
            None,
            "another account's session got the push"
        );
    });
}
