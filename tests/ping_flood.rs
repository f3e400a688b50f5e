//! A client that floods pings and never reads: the pongs it is owed count against the
//! outbox bound, so it is closed (and counted) instead of growing the gateway's memory,
//! and other clients go on being served. Alone in its test binary, so the process's
//! memory is the gateway's and this client's only.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::*;
use ringgate::proto::ws;

/// Peak resident memory of this process (the gateway runs in it), in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

#[test]
fn a_client_that_pings_and_never_reads_is_closed_counted_and_bounded_in_memory() {
    let backend = Backend::start();
    let g = gateway(config(&backend, "max_outbox_bytes = 4194304", ""));
    let before = peak_rss();
    let mut flood = RawClient::upgrade(g.addr, &user_token(&["user"]), b"");
    flood
        .stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut batch = Vec::new();
    for _ in 0..1000 {
        batch.extend_from_slice(&ws::ping_frame(&[b'p'; 125], Some([9, 8, 7, 6])));
    }
    let start = Instant::now();
    let mut sent = 0usize;
    let mut closed = false;
    // Until the gateway closes this client (its writes then fail), for 20 s at most.
    while start.elapsed() < Duration::from_secs(20) {
        match flood.stream.write_all(&batch) {
            Ok(()) => sent += batch.len(),
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    let grown = peak_rss().saturating_sub(before);
    assert!(
        closed,
        "the gateway read {} MiB of pings in 20 s without closing the client",
        sent >> 20
    );
    let metrics = g.metrics.render();
    assert!(
        metrics
            .lines()
            .any(|l| l == "ringgate_outbox_overflow_total 1"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("overflow"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        grown < 16 << 20,
        "peak RSS grew {} MiB with a 4 MiB bound (sent {} MiB of pings)",
        grown >> 20,
        sent >> 20
    );
    // Another client is served all along.
    run(async {
        let (mut c, m) = connect(&g, &user_token(&["user"])).await;
        let (h, body) = c
            .call(m.guid("/echo").unwrap(), b"still here")
            .await
            .unwrap();
        assert_eq!((h.code, &body[..]), (0, &b"still here"[..]));
    });
}
