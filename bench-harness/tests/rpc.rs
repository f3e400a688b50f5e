//! `ringgate-bench rpc` end to end: the built-in echo backend as a child process, a
//! gateway in front of it on free ports (started in-process, or spawned by the harness
//! itself with `--spawn-gateway`), and one second of open-loop load at 200 requests/s
//! over 4 connections; the JSON report's counts must add up.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
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

/// The echo backend as a child process on a free port.
fn start_echo() -> (Reaped, SocketAddr) {
    let backend: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let echo = Reaped(
        Command::new(BENCH)
            .args(["echo-backend", "--threads", "1", "--listen"])
            .arg(backend.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn echo-backend"),
    );
    wait_listening(backend);
    (echo, backend)
}

/// A one-shard gateway config in front of `backend`, without rate limiting.
fn config_toml(listen: &str, admin: &str, backend: SocketAddr) -> String {
    format!(
        r#"
[server]
listen = "{listen}"
path = "/connect"
shards = 1
admin_listen = "{admin}"
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
    )
}

/// Runs `rpc` (4 connections, 200/s, 1 s) with `extra` arguments, writing its JSON,
/// chart and interval log into `dir`; returns the report and the process's output.
fn run_rpc(dir: &Path, extra: &[String]) -> (serde_json::Value, String, String) {
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
        .args(extra)
        .arg("--json")
        .arg(&json)
        .arg("--chart")
        .arg(dir.join("rpc.svg"))
        .arg("--hist-log")
        .arg(dir.join("rpc.hlog"))
        .stdin(Stdio::null())
        .output()
        .expect("run rpc");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "rpc failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    let text = std::fs::read_to_string(&json).expect("report written");
    (serde_json::from_str(&text).unwrap(), stdout, stderr)
}

fn n(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

/// The report of one second at 200/s over 4 connections, with every request answered:
/// counts that add up, ordered percentiles, the table, the chart and the interval log.
fn check_report(dir: &Path, r: &serde_json::Value, stdout: &str, stderr: &str) {
    assert_eq!(r["scenario"], "rpc");
    assert_eq!(r["schema_version"], 1);
    assert_eq!(n(&r["connect"]["established"]), 4);
    let sent = n(&r["requests"]["sent"]);
    assert!((180..=220).contains(&sent), "sent {sent}\n{stderr}");
    assert_eq!(n(&r["requests"]["ok"]), sent, "{r}");
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
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rg-bench-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn rpc_at_200_per_second_against_a_gateway() {
    let started = Instant::now();
    let (_echo, backend) = start_echo();

    // The gateway, in-process, on free ports.
    let config =
        ringgate::Config::from_toml_str(&config_toml("127.0.0.1:0", "127.0.0.1:0", backend), &[])
            .expect("valid config");
    let gateway = ringgate::Gateway::start(config).expect("gateway starts");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !gateway.is_ready() {
        assert!(Instant::now() < deadline, "gateway never ready");
        std::thread::sleep(Duration::from_millis(10));
    }

    let dir = temp_dir("rpc");
    let (r, stdout, stderr) = run_rpc(
        &dir,
        &[
            format!("--gateway=ws://{}/connect", gateway.addr),
            format!("--secret={SECRET}"),
        ],
    );
    check_report(&dir, &r, &stdout, &stderr);
    assert!(
        r["gateway"].is_null(),
        "no gateway pid was given: {}",
        r["gateway"]
    );

    gateway.stop();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn rpc_with_spawn_gateway_starts_samples_and_stops_the_gateway() {
    let started = Instant::now();
    let (_echo, backend) = start_echo();
    let listen = format!("127.0.0.1:{}", free_port());
    let admin = format!("127.0.0.1:{}", free_port());
    let dir = temp_dir("spawn");
    let config = dir.join("gateway.toml");
    std::fs::write(&config, config_toml(&listen, &admin, backend)).unwrap();

    // No --gateway or --secret: the harness takes them from the config it spawns.
    let (r, stdout, stderr) = run_rpc(
        &dir,
        &[
            "--spawn-gateway".into(),
            config.display().to_string(),
            "--gateway-log".into(),
            dir.join("gateway.log").display().to_string(),
        ],
    );
    check_report(&dir, &r, &stdout, &stderr);
    let g = &r["gateway"];
    assert_eq!(g["spawned"], true, "{g}");
    let pid = n(&g["pid"]);
    assert!(n(&g["rss_peak_bytes"]) > 1 << 20, "{g}");
    assert!(g["cpu_secs"].as_f64().unwrap() > 0.0, "{g}");
    assert!(!g["samples"].as_array().unwrap().is_empty(), "{g}");
    assert!(stderr.contains("gateway stopped (SIGTERM)"), "{stderr}");
    // Stopped and reaped by the harness: no process, nothing on its addresses.
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "gateway {pid} still there"
    );
    assert!(
        TcpStream::connect(&admin).is_err(),
        "admin {admin} still answers"
    );
    assert!(
        TcpStream::connect(&listen).is_err(),
        "{listen} still accepts"
    );

    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
}
