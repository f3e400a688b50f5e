//! `ringgate-bench observers` end to end: the scenario starts its own NPC world
//! (in-process) and gateway (a child, on free ports, one shard), 20 observers watch 5
//! NPCs of 50 each (a fifth of them slow readers) for one second after half a second of
//! warm-up; the JSON report's counts must add up, and the world, the gateway and the
//! workers must be gone afterwards.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BENCH: &str = env!("CARGO_BIN_EXE_ringgate-bench");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rg-bench-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn n(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

/// Runs `observers` with the test's shape, writing its JSON and chart into `dir`.
fn run_observers(dir: &Path, listen: &str, admin: &str) -> (serde_json::Value, String, String) {
    let json = dir.join("observers.json");
    let out = Command::new(BENCH)
        .args([
            "observers",
            "--observers=20",
            "--watch=5",
            "--npcs=50",
            "--duration=1",
            "--warmup=0.5",
            "--slow-share=0.2",
            "--procs=1",
            "--shards=1",
            "--world-listen=127.0.0.1:0",
        ])
        .arg(format!("--listen={listen}"))
        .arg(format!("--admin-listen={admin}"))
        .arg("--gateway-log")
        .arg(dir.join("gateway.log"))
        .arg("--json")
        .arg(&json)
        .arg("--chart")
        .arg(dir.join("observers.svg"))
        .stdin(Stdio::null())
        .output()
        .expect("run observers");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let log = std::fs::read_to_string(dir.join("gateway.log")).unwrap_or_default();
    assert!(
        out.status.success(),
        "observers failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}\ngateway log:\n{log}",
        out.status
    );
    let text = std::fs::read_to_string(&json).expect("report written");
    (serde_json::from_str(&text).unwrap(), stdout, stderr)
}

#[test]
fn observers_of_an_npc_world_get_every_state_of_their_npcs() {
    let started = Instant::now();
    let listen = format!("127.0.0.1:{}", free_port());
    let admin = format!("127.0.0.1:{}", free_port());
    let dir = temp_dir("observers");
    let (r, stdout, stderr) = run_observers(&dir, &listen, &admin);

    assert_eq!(r["scenario"], "observers");
    assert_eq!(r["schema_version"], 1);
    assert_eq!(n(&r["connect"]["established"]), 20, "{stderr}");
    assert_eq!(n(&r["watch"]["ok"]), 20, "{}", r["watch"]);
    let (fast, slow) = (&r["fast"], &r["slow"]);
    assert_eq!((n(&fast["observers"]), n(&slow["observers"])), (16, 4));
    // 16 fast observers x 5 NPCs, each deciding every 300 ms on average: about 267
    // states a second; the window is one second.
    let delivered = n(&fast["deliveries"]);
    assert!(
        (150..=400).contains(&delivered),
        "fast deliveries {delivered}\n{stderr}"
    );
    assert_eq!(
        n(&fast["gaps"]),
        0,
        "a fast observer misses nothing: {fast}"
    );
    assert_eq!(n(&fast["stale"]) + n(&fast["foreign"]), 0, "{fast}");
    let expected = fast["expected_per_sec"]
        .as_f64()
        .expect("the world ran in-process");
    let ratio = delivered as f64 / expected;
    assert!((0.8..=1.2).contains(&ratio), "{delivered} of {expected}");
    // Latency from the decision: positive, ordered, and on loopback under a second.
    let l = &fast["latency_us"];
    assert_eq!(n(&l["count"]), delivered);
    let ps: Vec<u64> = ["min", "p50", "p90", "p99", "p999", "p9999", "max"]
        .iter()
        .map(|k| n(&l[*k]))
        .collect();
    assert!(ps.windows(2).all(|w| w[0] <= w[1]), "unordered: {l}");
    assert!(ps[6] < 1_000_000, "{l}");
    // Slow observers read at a tenth of the rate: fewer states, counted apart.
    assert!(n(&slow["deliveries"]) < delivered / 2, "{slow}");
    assert!(
        r["disconnects"].as_object().unwrap().is_empty(),
        "{}",
        r["disconnects"]
    );
    let w = &r["world_counts"];
    assert!(n(&w["published"]) > 0 && n(&w["subscribes"]) == 100, "{w}");
    assert!(r["ok"].as_bool().unwrap(), "{r}");

    // The table, the chart, and the gateway sampled then stopped.
    assert!(
        stdout.contains("decision→read") && stdout.contains("slow observers"),
        "{stdout}"
    );
    let svg = std::fs::read_to_string(dir.join("observers.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("<path "));
    let g = &r["gateway"];
    assert_eq!(g["spawned"], true, "{g}");
    let pid = n(&g["pid"]);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "gateway {pid} still there"
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
