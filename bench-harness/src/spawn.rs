//! Spreads a scenario's connections over worker processes, each under the descriptor
//! limit and with its own source address, and carries their results back.
//!
//! Why it exists: one process here may hold at most 20,000 descriptors (RLIMIT_NOFILE)
//! and one source address has ~28,000 ephemeral ports, so 100k simulated clients need
//! several processes on several 127.0.0.x addresses. The parent re-executes its own
//! binary with hidden `--worker-*` flags; a worker writes one JSON object per line on
//! stdout (progress, ready, done) and stops when its stdin closes, so a worker never
//! outlives its parent.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use crate::cli::Procs;

/// Descriptors a worker needs besides its connections (stdio, io_uring, eventfd, ...).
pub const FD_HEADROOM: usize = 64;
/// `--procs auto` puts at most this many connections in one worker, so that ramps run
/// in parallel and each worker stays well below the limit.
pub const AUTO_MAX_PER_WORKER: usize = 10_000;
/// Source addresses 127.0.0.2 ..= 127.0.0.254.
pub const MAX_WORKERS: usize = 253;

/// The source address of worker `index`: 127.0.0.(2+index).
pub fn source_ip(index: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        127,
        0,
        0,
        (2 + index.min(MAX_WORKERS - 1)) as u8,
    ))
}

/// RLIMIT_NOFILE after raising the soft limit to the hard one: `(soft, hard)`.
pub fn raise_nofile() -> (u64, u64) {
    ringgate::server::raise_nofile_limit()
}

/// Size of the ephemeral port range (`net.ipv4.ip_local_port_range`).
pub fn ephemeral_ports() -> usize {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|x| x.parse::<usize>().ok());
            let (lo, hi) = (it.next()??, it.next()??);
            Some(hi.saturating_sub(lo) + 1)
        })
        .unwrap_or(28_232)
}

/// How connections are split over workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Connections per worker (sums to the total; the first ones take the remainder).
    pub per_worker: Vec<usize>,
}

impl Plan {
    pub fn procs(&self) -> usize {
        self.per_worker.len()
    }

    /// How long the slowest worker's ramp may take: every connection of its share,
    /// `concurrency` at a time, each allowed twice the connect timeout plus 200 ms.
    pub fn ramp_time(&self, connect_timeout_ms: u64, concurrency: usize) -> Duration {
        let per_max = self.per_worker.iter().copied().max().unwrap_or(0);
        Duration::from_millis(
            (2 * connect_timeout_ms + 200) * per_max.div_ceil(concurrency.max(1)) as u64,
        )
    }
    /// Global index of worker `i`'s first connection.
    pub fn first(&self, i: usize) -> usize {
        self.per_worker[..i].iter().sum()
    }
}

/// Splits `conns` over worker processes given the descriptor limit (`nofile`, after
/// raising) and ports per source address; the error says plainly what would fit.
/// Raises RLIMIT_NOFILE and plans `conns` connections over worker processes; returns
/// the plan and the (soft, hard) limit. When no plan fits, says why (naming the
/// `scenario`) and gives the exit code the scenario should end with (2).
pub fn plan_for(
    scenario: &str,
    conns: usize,
    procs: Procs,
) -> Result<(Plan, u64, u64), std::process::ExitCode> {
    let (soft, hard) = raise_nofile();
    match plan(conns, procs, soft, ephemeral_ports()) {
        Ok(p) => Ok((p, soft, hard)),
        Err(msg) => {
            eprintln!("ringgate-bench {scenario}: {msg}");
            Err(std::process::ExitCode::from(2))
        }
    }
}

pub fn plan(conns: usize, procs: Procs, nofile: u64, ports: usize) -> Result<Plan, String> {
    let fd_room = (nofile as usize).saturating_sub(FD_HEADROOM);
    if fd_room == 0 {
        return Err(format!(
            "RLIMIT_NOFILE is {nofile}: not even the {FD_HEADROOM} descriptors a worker needs"
        ));
    }
    let per_max = fd_room.min(ports);
    let needed = conns.div_ceil(per_max).max(1);
    let p = match procs {
        Procs::Auto => needed.max(conns.div_ceil(AUTO_MAX_PER_WORKER)).max(1),
        Procs::Fixed(p) => p,
    };
    if p > MAX_WORKERS {
        return Err(format!(
            "{p} worker processes would need more than the {MAX_WORKERS} source addresses \
             127.0.0.2-254"
        ));
    }
    let per = conns.div_ceil(p);
    if per + FD_HEADROOM > nofile as usize {
        return Err(format!(
            "{conns} connections over {p} process(es) is {per} per process, but one process \
             may hold only {nofile} descriptors (RLIMIT_NOFILE, hard limit) and needs \
             {FD_HEADROOM} for itself: use --procs {needed} or more (or --procs auto)"
        ));
    }
    if per > ports {
        return Err(format!(
            "{per} connections per process exceed the {ports} ephemeral ports of its source \
             address: use --procs {needed} or more (or --procs auto)"
        ));
    }
    let (base, extra) = (conns / p, conns % p);
    Ok(Plan {
        per_worker: (0..p).map(|i| base + usize::from(i < extra)).collect(),
    })
}

/// A line from a worker, or its end.
#[derive(Debug)]
pub enum Event {
    Line {
        worker: usize,
        line: String,
    },
    /// The worker's stdout closed (it exited or crashed).
    Exited {
        worker: usize,
    },
}

/// The running worker processes of one scenario.
pub struct Workers {
    children: Vec<Child>,
    stdins: Vec<Option<ChildStdin>>,
    pub events: mpsc::Receiver<Event>,
}

impl Workers {
    /// Starts one worker per argument list (`args[i]` after the binary name), with
    /// `env` added to the environment. Stderr is shared with the parent.
    pub fn spawn(args: Vec<Vec<String>>, env: &[(&str, &str)]) -> anyhow::Result<Workers> {
        let exe = std::env::current_exe()?;
        let (tx, events) = mpsc::channel();
        let mut children = Vec::new();
        let mut stdins = Vec::new();
        for (worker, a) in args.into_iter().enumerate() {
            let mut cmd = Command::new(&exe);
            cmd.args(&a)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit());
            for (k, v) in env {
                cmd.env(k, v);
            }
            let mut child = cmd.spawn()?;
            let stdout = child.stdout.take().expect("piped stdout");
            stdins.push(child.stdin.take());
            children.push(child);
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(Event::Line { worker, line }).is_err() {
                        return;
                    }
                }
                let _ = tx.send(Event::Exited { worker });
            });
        }
        Ok(Workers {
            children,
            stdins,
            events,
        })
    }

    /// Writes one line to worker `worker`'s stdin (a control message, e.g. `rpc`'s
    /// `go`); the worker reads it with `control_lines`.
    pub fn send_line(&mut self, worker: usize, line: &str) -> std::io::Result<()> {
        match self.stdins.get_mut(worker).and_then(Option::as_mut) {
            Some(s) => {
                s.write_all(line.as_bytes())?;
                s.write_all(b"\n")?;
                s.flush()
            }
            None => Err(std::io::Error::other("worker stdin already closed")),
        }
    }

    /// Tells every worker to stop (closes their stdin).
    pub fn stop_all(&mut self) {
        for s in &mut self.stdins {
            s.take();
        }
    }

    /// Waits for every worker to exit (killing, by pid, those that outlive `grace`);
    /// returns the ones that failed as `(index, status)`.
    pub fn wait_all(&mut self, grace: Duration) -> Vec<(usize, String)> {
        self.stop_all();
        let deadline = std::time::Instant::now() + grace;
        let mut failed = Vec::new();
        for (i, c) in self.children.iter_mut().enumerate() {
            let status = loop {
                match c.try_wait() {
                    Ok(Some(st)) => break Some(st),
                    Ok(None) if std::time::Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    Ok(None) => {
                        let _ = c.kill();
                        break c.wait().ok();
                    }
                    Err(_) => break None,
                }
            };
            match status {
                Some(st) if st.success() => {}
                Some(st) => failed.push((i, st.to_string())),
                None => failed.push((i, "unknown exit status".into())),
            }
        }
        failed
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop_all();
        for c in &mut self.children {
            if matches!(c.try_wait(), Ok(None)) {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// Worker side: writes one JSON line to stdout (the parent reads it).
pub fn emit<T: serde::Serialize>(msg: &T) {
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer(&mut out, msg);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

/// Worker side: a flag set when stdin closes (the parent's stop signal, or its death).
pub fn stop_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        f.store(true, Ordering::SeqCst);
    });
    flag
}

/// Worker side: the control lines the parent sends on stdin (see `Workers::send_line`),
/// and a flag set when stdin closes (the parent's stop signal, or its death).
pub fn control_lines() -> (Arc<AtomicBool>, mpsc::Receiver<String>) {
    let flag = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let f = flag.clone();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
        f.store(true, Ordering::SeqCst);
    });
    (flag, rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ramp_time_covers_the_largest_share_in_waves_of_the_concurrency() {
        let plan = Plan {
            per_worker: vec![5, 3],
        };
        // 5 connections, 2 at a time: 3 waves of (2 × 100 + 200) ms.
        assert_eq!(plan.ramp_time(100, 2), Duration::from_millis(1200));
        assert_eq!(plan.ramp_time(100, 0), Duration::from_millis(2000));
    }

    #[test]
    fn auto_fits_the_limits() {
        let p = plan(15_000, Procs::Auto, 20_000, 28_232).unwrap();
        assert_eq!(p.per_worker, vec![7_500, 7_500]);
        assert_eq!(p.first(1), 7_500);
        let p = plan(2_000, Procs::Auto, 20_000, 28_232).unwrap();
        assert_eq!(p.per_worker, vec![2_000]);
        let p = plan(100_000, Procs::Auto, 20_000, 28_232).unwrap();
        assert_eq!(p.procs(), 10);
        assert_eq!(p.per_worker.iter().sum::<usize>(), 100_000);
        // A low limit forces more workers.
        let p = plan(10_000, Procs::Auto, 1_024, 28_232).unwrap();
        assert_eq!(p.procs(), 11);
        assert!(p.per_worker.iter().all(|&n| n + FD_HEADROOM <= 1_024));
    }

    #[test]
    fn fixed_split_takes_the_remainder_first() {
        let p = plan(10, Procs::Fixed(3), 20_000, 28_232).unwrap();
        assert_eq!(p.per_worker, vec![4, 3, 3]);
        assert_eq!(p.first(2), 7);
    }

    #[test]
    fn too_few_procs_says_how_many() {
        let e = plan(50_000, Procs::Fixed(2), 20_000, 28_232).unwrap_err();
        assert!(e.contains("--procs 3"), "{e}");
        assert!(e.contains("20000"), "{e}");
        let e = plan(60_000, Procs::Fixed(1), 100_000, 28_232).unwrap_err();
        assert!(e.contains("ephemeral ports"), "{e}");
    }
}
