//! Interop with Bannou's own published TypeScript client SDK
//! (`@beyondimmersion/bannou-client`, vendored unchanged in
//! `../shared/vendor/bannou-sdk-ts`): ringgate claims to speak Connect v1 so that the
//! clients Bannou's users already ship work against it, and only that client can show
//! it. Each test starts a real gateway and HTTP backend (`tests/common`), prepares a Node
//! package folder under the cargo target dir (`sdk-interop`: `ws@8` from npm, installed
//! once and kept; the SDK copied in once per run), runs a script of `tests/sdk/` there
//! with a timeout, and checks its JSON summary and what the backend saw:
//! `interop.mjs` (connect, calls, codes, meta, disconnect) and `push.mjs` (the push
//! plane through the push API: a push, roles that add and remove a capability, a kick).
//!
//! It needs `node` (18+) and `npm`; `.ci/run` installs them and pre-installs `ws`. When
//! they or the vendored SDK are missing, the test fails saying what to install;
//! `RINGGATE_SKIP_SDK_INTEROP=1` skips it instead.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::push::metric;
use common::tools::{run_with_timeout, target_subdir, tool_version};
use common::*;
use serde_json::{json, Value};

/// Connecting (upgrade + capability manifest) must take less than this.
const CONNECT_BOUND_MS: u64 = 1000;
/// The script is killed past this.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);
/// `npm install` is given this long.
const NPM_TIMEOUT: Duration = Duration::from_secs(300);
const SCRIPTS: &[(&str, &str)] = &[
    ("interop.mjs", include_str!("sdk/interop.mjs")),
    ("push.mjs", include_str!("sdk/push.mjs")),
];
const SKIP_ENV: &str = "RINGGATE_SKIP_SDK_INTEROP";
/// The push API's bearer token in the push test's gateway.
const ADMIN_TOKEN: &str = "sdk-push-api-token-0123456789";

/// The package folder, or None when the test is to be skipped.
fn package_dir_or_skip() -> Option<PathBuf> {
    if std::env::var(SKIP_ENV).as_deref() == Ok("1") {
        eprintln!("skipped: {SKIP_ENV}=1 (the Bannou TypeScript SDK interop test did not run)");
        return None;
    }
    // Once per test binary: the tests run on parallel threads and share the folder.
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match DIR.get_or_init(prepare_package_dir) {
        Ok(dir) => Some(dir.clone()),
        Err(e) => panic!(
            "Bannou TypeScript SDK interop test cannot run: {e}\n(set {SKIP_ENV}=1 to skip it)"
        ),
    }
}

/// Runs `node script` in `dir` with `envs`; its JSON summary once it passed, else a
/// panic showing its failures and output.
fn run_script(dir: &Path, script: &str, envs: &[(&str, &str)]) -> Value {
    let mut cmd = Command::new("node");
    cmd.arg(script).current_dir(dir);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out =
        run_with_timeout(&mut cmd, SCRIPT_TIMEOUT).unwrap_or_else(|e| panic!("node {script}: {e}"));
    let line = out.stdout.lines().rev().find(|l| l.starts_with('{'));
    let summary: Option<Value> = line.and_then(|l| serde_json::from_str(l).ok());
    let Some(summary) = summary.filter(|_| out.success) else {
        let failures = line
            .and_then(|l| serde_json::from_str::<Value>(l).ok())
            .map(|s| s["failures"].to_string())
            .unwrap_or_else(|| "(no JSON summary)".into());
        panic!(
            "the Bannou TypeScript SDK failed against ringgate in {script} ({}):\nfailures: {failures}\n\
             --- stdout ---\n{}--- stderr ---\n{}",
            out.status, out.stdout, out.stderr
        );
    };
    eprint!("{}", out.stderr);
    println!("{}", line.unwrap_or_default());
    summary
}

/// Waits up to 5 s for the gateway to have no connection open.
fn wait_no_connections(g: &ringgate::Gateway) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while g.metrics.connections_open() != 0 {
        assert!(
            Instant::now() < deadline,
            "connection still open on the gateway"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn bannou_ts_sdk_connects_calls_and_sees_codes_against_a_real_gateway() {
    let Some(dir) = package_dir_or_skip() else {
        return;
    };
    let backend = Backend::start();
    let g = gateway(config(&backend, "", ""));
    let jwt = user_token(&["user"]);
    let url = format!("http://{}", g.addr);
    let bound = CONNECT_BOUND_MS.to_string();
    let summary = run_script(
        &dir,
        "interop.mjs",
        &[
            ("RINGGATE_URL", &url),
            ("RINGGATE_JWT", &jwt),
            ("RINGGATE_CONNECT_BOUND_MS", &bound),
        ],
    );

    // What the script checked, pinned here too so a weaker script cannot pass quietly.
    let connect_ms = summary["connect_ms"].as_u64().expect("connect_ms");
    assert!(
        connect_ms < CONNECT_BOUND_MS,
        "connect took {connect_ms} ms"
    );
    assert_eq!(summary["echo_round_trips"], 4, "{summary}");
    assert_eq!(summary["concurrent_ok"], 50, "{summary}");
    assert_eq!(summary["not_found"]["wire_code"], 51, "{summary}");
    assert_eq!(summary["not_found"]["response_code"], 404, "{summary}");
    assert_eq!(summary["not_found"]["error_name"], "NotFound", "{summary}");
    assert_eq!(summary["disconnect"]["close_code"], 1000, "{summary}");

    // What the backend saw: the SDK's calls, forwarded with the session's identity.
    let echoes = backend.seen("/echo");
    assert_eq!(echoes.len(), 4 + 50);
    assert!(echoes.iter().all(|r| r.method == "POST"
        && r.header("X-Account-Id") == Some("account-1")
        && r.header("X-Roles") == Some("user")));
    assert_eq!(backend.seen("/status/404").len(), 1);
    for kind in ["info", "request-schema"] {
        let seen = backend.seen(&format!("/echo/meta/{kind}"));
        assert_eq!(seen.len(), 1, "meta {kind}");
        assert_eq!(seen[0].method, "GET");
    }
    // The gateway let the connection go.
    wait_no_connections(&g);
}

#[test]
fn bannou_ts_sdk_connects_and_calls_over_wss_verifying_the_gateway_certificate() {
    let Some(dir) = package_dir_or_skip() else {
        return;
    };
    let backend = Backend::start();
    let pki = common::tls::TestPki::new();
    let leaf = pki.leaf("leaf", "ringgate-sdk");
    let text = format!(
        "{}\n{}",
        config_text(&backend, "", ""),
        common::tls::tls_section(&leaf)
    );
    let g = gateway(ringgate::Config::from_toml_str(&text, &[]).unwrap());
    let jwt = user_token(&["user"]);
    // The SDK turns https:// into wss://; Node trusts the test CA through
    // NODE_EXTRA_CA_CERTS and checks the certificate's 127.0.0.1.
    let url = format!("https://127.0.0.1:{}", g.addr.port());
    let ca = pki.ca_file();
    let bound = CONNECT_BOUND_MS.to_string();
    let summary = run_script(
        &dir,
        "interop.mjs",
        &[
            ("RINGGATE_URL", &url),
            ("RINGGATE_JWT", &jwt),
            ("RINGGATE_CONNECT_BOUND_MS", &bound),
            ("NODE_EXTRA_CA_CERTS", ca.to_str().unwrap()),
        ],
    );
    assert_eq!(summary["echo_round_trips"], 4, "{summary}");
    assert_eq!(summary["concurrent_ok"], 50, "{summary}");
    assert_eq!(summary["not_found"]["wire_code"], 51, "{summary}");
    assert_eq!(summary["disconnect"]["close_code"], 1000, "{summary}");
    assert_eq!(backend.seen("/echo").len(), 4 + 50);
    assert!(
        metric(&g, "ringgate_handshakes_total{result=\"ok\"}") >= 1,
        "the SDK upgraded over TLS"
    );
    wait_no_connections(&g);
}

#[test]
fn bannou_ts_sdk_gets_pushes_as_raw_events_capability_callbacks_on_role_changes_and_a_kick_as_kicked(
) {
    let Some(dir) = package_dir_or_skip() else {
        return;
    };
    let backend = Backend::start();
    let text = format!(
        "{}\n[admin]\ntoken = \"{ADMIN_TOKEN}\"\n",
        config_text(&backend, "", "")
    );
    let g = gateway(ringgate::Config::from_toml_str(&text, &[]).expect("push test config"));
    let sid = "sdk-push-session-1";
    let jwt = token("account-1", &["user"], Some(sid), unix_now() + 3600);
    let url = format!("http://{}", g.addr);
    let admin_url = format!("http://{}", g.admin_addr);
    let summary = run_script(
        &dir,
        "push.mjs",
        &[
            ("RINGGATE_URL", &url),
            ("RINGGATE_JWT", &jwt),
            ("RINGGATE_SESSION_ID", sid),
            ("RINGGATE_ADMIN_URL", &admin_url),
            ("RINGGATE_ADMIN_TOKEN", ADMIN_TOKEN),
            ("RINGGATE_ROLE", "admin"),
            ("RINGGATE_UNLOCKED", "/echo/admin"),
        ],
    );

    // What the script checked, pinned here too so a weaker script cannot pass quietly.
    assert_eq!(summary["session_id"], sid, "{summary}");
    assert_eq!(
        summary["push"]["received"],
        json!({"eventName": "ringgate.test-push", "n": 7, "text": "h\u{e9}llo w\u{f6}rld \u{2713}",
               "nested": {"list": [1, "two", null]}}),
        "{summary}"
    );
    assert_eq!(
        summary["roles_added"]["endpoints"],
        json!(["/echo/admin"]),
        "{summary}"
    );
    assert_eq!(summary["roles_added"]["call_ok"], true, "{summary}");
    assert_eq!(
        summary["roles_removed"]["endpoints"],
        json!(["/echo/admin"]),
        "{summary}"
    );
    assert_eq!(summary["roles_removed"]["still_mapped"], false, "{summary}");
    assert_eq!(
        summary["capability_callbacks"],
        json!({"added": [["/echo/admin"]], "removed": [["/echo/admin"]]}),
        "{summary}"
    );
    assert_eq!(
        summary["kick"]["disconnect"],
        json!({"reason": "kicked", "close_code": 4002,
               "message": "kicked by the push API test", "can_reconnect": false}),
        "{summary}"
    );

    // The granted call reached the backend with the new role.
    let granted = backend.seen("/echo/admin");
    assert_eq!(granted.len(), 1, "{granted:?}");
    assert_eq!(granted[0].header("X-Roles"), Some("user,admin"));
    assert_eq!(granted[0].body, br#"{"granted":"admin"}"#);
    wait_no_connections(&g);
}

/// The Node package folder the scripts run in: `ws@8` installed (kept across runs),
/// the SDK copied in fresh, the scripts written. Err says what is missing.
fn prepare_package_dir() -> Result<PathBuf, String> {
    let node = tool_version("node").ok_or(
        "`node` (18 or later) is not on PATH: install Node.js (e.g. `apt-get install -y nodejs npm`)",
    )?;
    let major: u32 = node
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major < 18 {
        return Err(format!(
            "`node` is {node}; the SDK needs Node.js 18 or later: install a newer nodejs"
        ));
    }
    tool_version("npm")
        .ok_or("`npm` is not on PATH: install it (e.g. `apt-get install -y npm`)")?;
    let sdk = vendored_sdk()?;

    let dir = target_subdir("sdk-interop");
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let package_json = dir.join("package.json");
    if !package_json.exists() {
        std::fs::write(&package_json, r#"{"type":"module","private":true}"#)
            .map_err(|e| format!("writing {}: {e}", package_json.display()))?;
    }
    if !has_ws8(&dir) {
        eprintln!("installing ws@8 into {} (npm)", dir.display());
        let out = run_with_timeout(
            Command::new("npm")
                .args(["install", "--silent", "--no-audit", "--no-fund", "ws@8"])
                .current_dir(&dir),
            NPM_TIMEOUT,
        )?;
        if !out.success || !has_ws8(&dir) {
            return Err(format!(
                "`npm install ws@8` in {} failed ({}): it needs the npm registry\n{}{}",
                dir.display(),
                out.status,
                out.stdout,
                out.stderr
            ));
        }
    }
    // After npm (which prunes packages its package.json does not name).
    let scope = dir.join("node_modules/@beyondimmersion");
    for pkg in ["bannou-client", "bannou-core"] {
        let to = scope.join(pkg);
        if to.exists() {
            std::fs::remove_dir_all(&to).map_err(|e| format!("removing {}: {e}", to.display()))?;
        }
        copy_tree(&sdk.join(pkg), &to).map_err(|e| format!("copying the SDK's {pkg}: {e}"))?;
    }
    for (name, text) in SCRIPTS {
        std::fs::write(dir.join(name), text)
            .map_err(|e| format!("writing the script {name}: {e}"))?;
    }
    Ok(dir)
}

/// The vendored SDK in `../shared` beside the repository (for a git worktree one folder
/// deeper, the `shared` beside its parent).
fn vendored_sdk() -> Result<PathBuf, String> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let candidates: Vec<PathBuf> = manifest
        .ancestors()
        .skip(1)
        .take(2)
        .map(|a| a.join("shared/vendor/bannou-sdk-ts"))
        .collect();
    candidates
        .iter()
        .find(|c| {
            c.join("bannou-client/dist/index.js").is_file()
                && c.join("bannou-core/dist/index.js").is_file()
        })
        .cloned()
        .ok_or_else(|| {
            format!(
                "the vendored Bannou SDK is missing: expected `shared/` beside the repository \
                 with vendor/bannou-sdk-ts/bannou-{{client,core}} (looked in {})",
                candidates
                    .iter()
                    .map(|c| c.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

fn has_ws8(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("node_modules/ws/package.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["version"].as_str().map(|s| s.starts_with("8.")))
        .unwrap_or(false)
}

/// Copies a folder's files (new files get default permissions: the vendored copy is
/// read-only, and the next run must be able to replace what this one wrote).
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let dest = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &dest)?;
        } else {
            std::fs::write(&dest, std::fs::read(entry.path())?)?;
        }
    }
    Ok(())
}
