//! Samples another process's memory and CPU time from `/proc/PID/{status,stat}`.
//!
//! Why it exists: the harness reports what the gateway *costs* (RSS per idle connection,
//! CPU over a hold), measured from outside without any cooperation from the gateway.
//! The parsing is split from the reading so that it is unit-tested on sample text.

use std::io;
use std::time::Instant;

/// One reading of a process's memory and CPU counters.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub at: Instant,
    /// `VmRSS`: resident set size (anonymous + file-backed + shmem), bytes.
    pub rss_bytes: u64,
    /// `RssAnon`: the anonymous part of the RSS (heap, stacks), bytes.
    pub rss_anon_bytes: u64,
    /// `VmHWM`: peak RSS so far, bytes.
    pub hwm_bytes: u64,
    /// `utime + stime` in clock ticks.
    pub cpu_ticks: u64,
}

impl Sample {
    /// CPU seconds spent between `earlier` and `self`.
    pub fn cpu_secs_since(&self, earlier: &Sample) -> f64 {
        self.cpu_ticks.saturating_sub(earlier.cpu_ticks) as f64 / clock_ticks_per_sec()
    }
}

/// Reads `/proc/PID/status` and `/proc/PID/stat` now.
pub fn sample(pid: u32) -> io::Result<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let bad =
        |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("/proc/{pid}: {what}"));
    let (utime, stime) = parse_stat_cpu_ticks(&stat).ok_or_else(|| bad("unparsable stat"))?;
    Ok(Sample {
        at: Instant::now(),
        rss_bytes: parse_status_kib(&status, "VmRSS").ok_or_else(|| bad("no VmRSS"))? * 1024,
        rss_anon_bytes: parse_status_kib(&status, "RssAnon").unwrap_or(0) * 1024,
        hwm_bytes: parse_status_kib(&status, "VmHWM").unwrap_or(0) * 1024,
        cpu_ticks: utime + stime,
    })
}

/// Whether a process with this pid exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => parse_stat_state(&s).is_some_and(|c| c != 'Z' && c != 'X'),
        Err(_) => false,
    }
}

/// `sysconf(_SC_CLK_TCK)`, the unit of utime/stime (100 on Linux in practice).
pub fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// The value in kB of a `Key:   1234 kB` line of `/proc/PID/status`.
pub fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// The fields of `/proc/PID/stat` after the `(comm)` field; `comm` may itself contain
/// spaces and parentheses, so the split is at the LAST `)`.
fn stat_fields_after_comm(stat: &str) -> Option<std::str::SplitWhitespace<'_>> {
    let close = stat.rfind(')')?;
    Some(stat[close + 1..].split_whitespace())
}

/// Field 3 (state) of `/proc/PID/stat`.
fn parse_stat_state(stat: &str) -> Option<char> {
    stat_fields_after_comm(stat)?.next()?.chars().next()
}

/// Fields 14 and 15 (`utime`, `stime`, in clock ticks) of `/proc/PID/stat`.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<(u64, u64)> {
    // After the comm field, index 0 is field 3 (state); utime is field 14.
    let mut f = stat_fields_after_comm(stat)?.skip(14 - 3);
    let utime = f.next()?.parse().ok()?;
    let stime = f.next()?.parse().ok()?;
    Some((utime, stime))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "4242 (ring gate) (x)) S 1 4242 4242 0 -1 4194560 2741 0 0 0 \
        1234 567 0 0 20 0 3 0 123456 98765432 4321 18446744073709551615 1 1 0 0 0 0 0 \
        4096 17920 0 0 0 17 1 0 0 0 0 0";

    #[test]
    fn stat_cpu_ticks_survive_odd_comm() {
        assert_eq!(parse_stat_cpu_ticks(STAT), Some((1234, 567)));
        assert_eq!(parse_stat_state(STAT), Some('S'));
    }

    #[test]
    fn stat_truncated_is_none() {
        assert_eq!(parse_stat_cpu_ticks("1 (a) S 1 2 3"), None);
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
    }

    #[test]
    fn status_kib() {
        let status = "Name:\tringgate\nVmHWM:\t   52000 kB\nVmRSS:\t   41234 kB\n\
                      RssAnon:\t   30000 kB\nThreads:\t3\n";
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(41234));
        assert_eq!(parse_status_kib(status, "RssAnon"), Some(30000));
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(52000));
        assert_eq!(parse_status_kib(status, "VmSwap"), None);
        // A key that is a prefix of another must not match it.
        assert_eq!(parse_status_kib(status, "Rss"), None);
    }

    #[test]
    fn sample_self() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_bytes > 0);
        assert!(alive(std::process::id()));
    }
}
