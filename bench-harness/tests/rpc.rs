//! `ringgate-bench rpc` end to end: the built-in echo backend as a child process, a
//! gateway started in-process on free ports in front of it, and one second of open-loop
//! load at 200 requests/s over 4 connections; the JSON report's counts must add up.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BENCH: &str = env!("CARGO_BIN_EXE_ringgate-bench");
const SECRET: &str = "rpc-integration-secret-0123456789abcdef";

/// A child process killed (by its own pid) when the test ends, pass or fail.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_listening(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn rpc_at_200_per_second_against_a_gateway() {
    let started = Instant::now();
    // The echo backend.
    let backend: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _echo = Reaped(
        Command::new(BENCH)
            .args(["echo-backend", "--threads", "1", "--listen"])
            .arg(backend.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn echo-backend"),
    );
    wait_listening(backend);

    // The gateway, in-process, on free ports.
    let config = ringgate::Config::from_toml_str(
        &format!(
            r#"
[server]
listen = "127.0.0.1:0"
path = "/connect"
shards = 1
admin_listen = "127.0.0.1:0"
shutdown_grace_ms = 500
max_message_bytes = 65536
rate_limit_per_sec = 0
[auth]
hs256_secret = "{SECRET}"
[[services]]
name = "echo"
url = "http://{backend}"
endpoints = [ {{ path = "/echo", roles = ["user"] }} ]
"#
        ),
        &[],
    )
    .expect("valid config");
    let gateway = ringgate::Gateway::start(config).expect("gateway starts");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !gateway.is_ready() {
        assert!(Instant::now() < deadline, "gateway never ready");
        std::thread::sleep(Duration::from_millis(10));
    }

    // One second of load.
    let dir = std::env::temp_dir().join(format!("rg-bench-rpc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("rpc.json");
    let out = Command::new(BENCH)
        .args([
            "rpc",
            "--conns",
            "4",
            "--rate",
            "200",
            "--duration",
            "1",
            "--procs",
            "1",
            "--threads",
            "1",
            "--timeout-ms",
            "2000",
        ])
        .arg(format!("--gateway=ws://{}/connect", gateway.addr))
        .arg(format!("--secret={SECRET}"))
        .arg("--json")
        .arg(&json)
        .arg("--chart")
        .arg(dir.join("rpc.svg"))
        .arg("--hist-log")
        .arg(dir.join("rpc.hlog"))
        .stdin(Stdio::null())
        .output()
        .expect("run rpc");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "rpc failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    let text = std::fs::read_to_string(&json).expect("report written");
    let r: serde_json::Value = serde_json::from_str(&text).unwrap();
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or_else(|| panic!("{v} in {text}"));

    assert_eq!(r["scenario"], "rpc");
    assert_eq!(r["schema_version"], 1);
    assert_eq!(n(&r["connect"]["established"]), 4);
    let sent = n(&r["requests"]["sent"]);
    assert!((180..=220).contains(&sent), "sent {sent}\n{stderr}");
    assert_eq!(n(&r["requests"]["ok"]), sent, "{text}");
    assert!(r["requests"]["errors"].as_object().unwrap().is_empty());
    assert_eq!(n(&r["requests"]["timeouts"]), 0);
    assert_eq!(n(&r["requests"]["lost"]), 0);
    let l = &r["latency_us"];
    assert_eq!(n(&l["count"]), sent);
    let ps: Vec<u64> = ["min", "p50", "p90", "p99", "p999", "p9999", "max"]
        .iter()
        .map(|k| n(&l[*k]))
        .collect();
    assert!(ps[0] > 0, "{l}");
    assert!(
        ps.windows(2).all(|w| w[0] <= w[1]),
        "percentiles unordered: {l}"
    );
    assert!(r["throughput_per_sec"].as_f64().unwrap() > 150.0);
    assert!(r["ok"].as_bool().unwrap());
    // The people's table, the chart and the interval log are there too.
    assert!(stdout.contains("p99.99"), "{stdout}");
    let svg = std::fs::read_to_string(dir.join("rpc.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("<path "));
    let hlog = std::fs::read_to_string(dir.join("rpc.hlog")).unwrap();
    assert!(hlog.contains("#[StartTime:"), "{hlog}");

    gateway.stop();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
}
