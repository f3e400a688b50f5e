//! Tests of the `ringgate` binary itself: config checking and signal handling.

mod common;

use std::process::Command;
use std::time::Duration;

use common::process::GatewayProcess;

const BIN: &str = env!("CARGO_BIN_EXE_ringgate");

fn write_config(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("ringgate-test-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn default_with(replace: &str, with: &str) -> String {
    let text = ringgate::config::DEFAULT_CONFIG_TOML.replace(replace, with);
    assert_ne!(
        text,
        ringgate::config::DEFAULT_CONFIG_TOML,
        "replacement did not apply"
    );
    text
}

/// Runs `ringgate --check-config` on `text`; returns the exit code and stderr.
fn check_config(name: &str, text: &str) -> (Option<i32>, String) {
    let dir = temp_dir("check");
    let p = write_config(&dir, name, text);
    let out = Command::new(BIN)
        .arg("--check-config")
        .arg(&p)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_accepts_a_valid_file() {
    let (code, err) = check_config("ok.toml", ringgate::config::DEFAULT_CONFIG_TOML);
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn check_config_fails_naming_the_offending_key() {
    let bad_addr = default_with("listen = \"127.0.0.1:8080\"", "listen = \"not-an-address\"");
    let (code, err) = check_config("bad.toml", &bad_addr);
    assert_eq!(code, Some(2));
    assert!(err.contains("server.listen"), "{err}");

    let typo = default_with("[auth]", "[auth]\nallow_anonymus = true");
    let (code, err) = check_config("typo.toml", &typo);
    assert_eq!(code, Some(2));
    assert!(err.contains("allow_anonymus"), "{err}");
}

#[test]
fn sigterm_drains_and_exits_zero_within_the_grace_period() {
    let dir = temp_dir("sigterm");
    let text = default_with("listen = \"127.0.0.1:8080\"", "listen = \"127.0.0.1:0\"")
        .replace(
            "admin_listen = \"127.0.0.1:9090\"",
            "admin_listen = \"127.0.0.1:0\"",
        )
        .replace("shutdown_grace_ms = 5000", "shutdown_grace_ms = 1000");
    let p = write_config(&dir, "run.toml", &text);
    let mut gw = GatewayProcess::start(&p);
    gw.wait_log("ringgate listening");
    gw.signal(libc::SIGTERM);
    let status = gw.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0));
    assert!(gw.log.contains("stopped"), "{}", gw.log);
}
