//! Tests of the `ringgate` binary itself: config checking and signal handling.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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

#[test]
fn check_config_accepts_a_valid_file() {
    let dir = temp_dir("check-ok");
    let p = write_config(&dir, "ok.toml", ringgate::config::DEFAULT_CONFIG_TOML);
    let out = Command::new(BIN)
        .arg("--check-config")
        .arg(&p)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn check_config_fails_naming_the_offending_key() {
    let dir = temp_dir("check-bad");
    let p = write_config(
        &dir,
        "bad.toml",
        &default_with("listen = \"127.0.0.1:8080\"", "listen = \"not-an-address\""),
    );
    let out = Command::new(BIN)
        .arg("--check-config")
        .arg(&p)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("server.listen"), "{err}");

    let p = write_config(
        &dir,
        "typo.toml",
        &default_with("[auth]", "[auth]\nallow_anonymus = true"),
    );
    let out = Command::new(BIN)
        .arg("--check-config")
        .arg(&p)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
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
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&p)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read the log on a thread so a silent child cannot hang the test.
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
    let mut log = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !log.contains("ringgate listening") {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => log.push_str(&line),
            Err(_) => {
                let _ = child.kill();
                panic!("never logged that it listens: {log}");
            }
        }
    }
    // SAFETY: sending a signal to the child we started, by its pid.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(2)) {
        log.push_str(&line);
    }
    assert!(log.contains("stopped"), "{log}");
}
