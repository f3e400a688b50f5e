//! The server's CPU and RSS over a step, from /proc: the given pids and all their
//! descendants (Pushpin's runner starts condure, the proxy and the handler; zurl is
//! passed as a pid of its own), CPU time summed, VmRSS summed.
//!
//! Why it exists: a peer may be several processes; comparing one of them with a
//! one-process gateway would flatter the peer.

use std::time::Instant;

use super::steps::ServerUsage;
use crate::procstat;

/// The pids and, recursively, their children.
fn with_descendants(pids: &[u32]) -> Vec<u32> {
    let mut out = Vec::new();
    let mut todo: Vec<u32> = pids.to_vec();
    while let Some(p) = todo.pop() {
        if out.contains(&p) {
            continue;
        }
        out.push(p);
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                todo.extend(s.split_whitespace().filter_map(|c| c.parse::<u32>().ok()));
            }
        }
    }
    out
}

/// CPU ticks and RSS of a set of processes at one instant.
#[derive(Debug, Clone, Copy)]
pub struct Reading {
    at: Instant,
    cpu_ticks: u64,
    rss_bytes: u64,
}

/// Reads them now (`None` without pids).
pub fn read(pids: &[u32]) -> Option<Reading> {
    if pids.is_empty() {
        return None;
    }
    let mut r = Reading {
        at: Instant::now(),
        cpu_ticks: 0,
        rss_bytes: 0,
    };
    for p in with_descendants(pids) {
        if let Ok(s) = procstat::sample(p) {
            r.cpu_ticks += s.cpu_ticks;
            r.rss_bytes += s.rss_bytes;
        }
    }
    Some(r)
}

/// CPU between two readings (percent of one core) and RSS at the second.
pub fn usage(a: Option<Reading>, b: Option<Reading>) -> Option<ServerUsage> {
    let (a, b) = (a?, b?);
    let secs = b.at.duration_since(a.at).as_secs_f64().max(1e-9);
    Some(ServerUsage {
        cpu_percent_of_core: 100.0 * b.cpu_ticks.saturating_sub(a.cpu_ticks) as f64
            / procstat::clock_ticks_per_sec()
            / secs,
        rss_bytes: b.rss_bytes,
    })
}
