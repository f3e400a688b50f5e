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

use std::cell::Cell;
use std::time::Instant;

thread_local! {
    static NOW: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Reads the clock and caches the reading for [`recent`].
pub fn refresh() -> Instant {
    let now = Instant::now();
    NOW.with(|c| c.set(Some(now)));
    now
}

/// The cached reading of this thread's last [`refresh`] (a fresh one if there was none).
pub fn recent() -> Instant {
    NOW.with(|c| c.get()).unwrap_or_else(refresh)
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
    fn a_thread_that_never_refreshed_gets_a_fresh_reading() {
        let before = Instant::now();
        let got = std::thread::spawn(recent).join().unwrap();
        assert!(got >= before);
    }
}
