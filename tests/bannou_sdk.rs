//! Interop with Bannou's own published TypeScript client SDK
//! (`@beyondimmersion/bannou-client`, vendored unchanged in
//! `../shared/vendor/bannou-sdk-ts`): ringgate claims to speak Connect v1 so that the
//! clients Bannou's users already ship work against it, and only that client can show
//! it. The test starts a real gateway and HTTP backend (`tests/common`), prepares a Node
//! package folder under the cargo target dir (`sdk-interop`: `ws@8` from npm, installed
//! once and kept; the SDK copied in on every run), runs `tests/sdk/interop.mjs` there
//! with a timeout, and checks its JSON summary and what the backend saw.
//!
//! It needs `node` (18+) and `npm`; `.ci/run` installs them and pre-installs `ws`. When
//! they or the vendored SDK are missing, the test fails saying what to install;
//! `RINGGATE_SKIP_SDK_INTEROP=1` skips it instead.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Connecting (upgrade + capability manifest) must take less than this.
const CONNECT_BOUND_MS: u64 = 1000;
/// The script is killed past this.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);
/// `npm install` is given this long.
const NPM_TIMEOUT: Duration = Duration::from_secs(300);
const SCRIPT: &str = include_str!("sdk/interop.mjs");
const SKIP_ENV: &str = "RINGGATE_SKIP_SDK_INTEROP";

#[test]
fn bannou_ts_sdk_connects_calls_and_sees_codes_against_a_real_gateway() {
    if std::env::var(SKIP_ENV).as_deref() == Ok("1") {
        eprintln!("skipped: {SKIP_ENV}=1 (the Bannou TypeScript SDK interop test did not run)");
        return;
    }
    let dir = match prepare_package_dir() {
        Ok(dir) => dir,
        Err(e) => panic!(
            "Bannou TypeScript SDK interop test cannot run: {e}\n(set {SKIP_ENV}=1 to skip it)"
        ),
    };

    let backend = Backend::start();
    let g = gateway(config(&backend, "", ""));
    let jwt = user_token(&["user"]);
    let url = format!("http://{}", g.addr);
    let bound = CONNECT_BOUND_MS.to_string();
    let out = run_with_timeout(
        Command::new("node")
            .arg("interop.mjs")
            .current_dir(&dir)
            .env("RINGGATE_URL", &url)
            .env("RINGGATE_JWT", &jwt)
            .env("RINGGATE_CONNECT_BOUND_MS", &bound),
        SCRIPT_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("node interop.mjs: {e}"));

    let line = out.stdout.lines().rev().find(|l| l.starts_with('{'));
    let summary: Option<serde_json::Value> = line.and_then(|l| serde_json::from_str(l).ok());
    let Some(summary) = summary.filter(|_| out.success) else {
        let failures = line
            .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|s| s["failures"].to_string())
            .unwrap_or_else(|| "(no JSON summary)".into());
        panic!(
            "the Bannou TypeScript SDK failed against ringgate ({}):\nfailures: {failures}\n\
             --- stdout ---\n{}--- stderr ---\n{}",
            out.status, out.stdout, out.stderr
        );
    };
    eprint!("{}", out.stderr);
    println!("{}", line.unwrap_or_default());

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
    let deadline = Instant::now() + Duration::from_secs(5);
    while g.metrics.connections_open() != 0 {
        assert!(
            Instant::now() < deadline,
            "connection still open on the gateway"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The Node package folder the script runs in: `ws@8` installed (kept across runs),
/// the SDK copied in fresh, the script written. Err says what is missing.
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

    let dir = package_dir();
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
    std::fs::write(dir.join("interop.mjs"), SCRIPT)
        .map_err(|e| format!("writing the script: {e}"))?;
    Ok(dir)
}

/// `$CARGO_TARGET_DIR/sdk-interop`, else `target/sdk-interop` in the package: the folder
/// `.ci/run` pre-installs `ws` into.
fn package_dir() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(t) if !t.is_empty() => manifest.join(t),
        _ => manifest.join("target"),
    };
    target.join("sdk-interop")
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

/// `tool --version`, or None when it does not run.
fn tool_version(tool: &str) -> Option<String> {
    let out = Command::new(tool)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
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

struct Output {
    success: bool,
    status: String,
    stdout: String,
    stderr: String,
}

/// Runs `cmd` with its output captured; past `timeout` the child is killed (by its pid)
/// and that is an error carrying what it printed.
fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<Output, String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", shown(cmd)))?;
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = r.read_to_end(&mut s);
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let (stdout, stderr) = (out.join().unwrap(), err.join().unwrap());
    match status {
        Some(status) => Ok(Output {
            success: status.success(),
            status: status.to_string(),
            stdout,
            stderr,
        }),
        None => Err(format!(
            "`{}` did not finish within {timeout:?} and was killed\n--- stdout ---\n{stdout}--- stderr ---\n{stderr}",
            shown(cmd)
        )),
    }
}

/// The command line without its environment (which holds the token).
fn shown(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}
