//! A per-thread cached clock: one `Instant::now()` per batch of work instead of several
//! per request.
//!
//! Why: at the gateway's peak rate the profile showed `clock_gettime` as its single
//! largest item (9 % of the gateway's CPU; four clock reads per request: the rate
//! limiter, the request's start, its deadline, its latency). A request's times need
//! batch precision, not nanoseconds: every message of one read is handled within
//! microseconds. So the loops that start a batch — a connection's read, a backend
//! link's or connection's read, a deadline sweep — call [`refresh`], and the per-request
//! code reads [`recent`]. A thread that never refreshed gets a fresh reading.
//!
//! Not for timeouts that must not run early: a stale `recent()` is at most one batch
//! old, so a deadline computed from it can only be that much early, which the sweepers
//! (whose period is a tenth of the timeout) already allow for.
//!
//! The same reading is also kept as whole microseconds since a process-wide base
//! ([`recent_us`]), for the per-request arithmetic (a request's latency): one
//! subtraction of two `u64`s instead of an `Instant` difference (~40 instructions)
//! per request.

use std::cell::Cell;
use std::sync::LazyLock;
use std::time::Instant;

thread_local! {
    static NOW: Cell<Option<(Instant, u64)>> = const { Cell::new(None) };
}

/// Where [`recent_us`] counts from (the first use in the process).
static BASE: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Reads the clock and caches the reading for [`recent`] and [`recent_us`].
pub fn refresh() -> Instant {
    read().0
}

fn read() -> (Instant, u64) {
    let now = Instant::now();
    let us = u64::try_from(now.saturating_duration_since(*BASE).as_micros()).unwrap_or(u64::MAX);
    NOW.with(|c| c.set(Some((now, us))));
    (now, us)
}

fn cached() -> (Instant, u64) {
    NOW.with(|c| c.get()).unwrap_or_else(read)
}

/// The cached reading of this thread's last [`refresh`] (a fresh one if there was none).
pub fn recent() -> Instant {
    cached().0
}

/// [`recent`] as whole microseconds since the process-wide base: comparable across
/// threads, and the difference of two is the time between them.
pub fn recent_us() -> u64 {
    cached().1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_returns_the_last_refresh_until_the_next_one() {
        let a = refresh();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert_eq!(recent(), a);
        let b = refresh();
        assert!(b > a);
        assert_eq!(recent(), b);
    }

    #[test]
    fn recent_us_moves_with_refresh_by_the_time_between_readings() {
        let a = refresh();
        let a_us = recent_us();
        std::thread::sleep(std::time::Duration::from_millis(3));
        assert_eq!(recent_us(), a_us, "no refresh, no change");
        let b = refresh();
        let elapsed = u64::try_from(b.duration_since(a).as_micros()).unwrap();
        // Each reading is truncated to a whole microsecond.
        assert!(recent_us() - a_us >= elapsed.saturating_sub(1), "{elapsed}");
        assert!(recent_us() - a_us <= elapsed + 1, "{elapsed}");
        assert!(elapsed >= 3000);
    }

    #[test]
    fn a_thread_that_never_refreshed_gets_a_fresh_reading() {
        let before = Instant::now();
        let got = std::thread::spawn(recent).join().unwrap();
        assert!(got >= before);
    }
}
