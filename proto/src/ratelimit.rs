//! Rate limits as a token bucket (rate per second, burst): a connection's requests,
//! and a source address's upgrades. The clock is passed in by the caller so it is
//! testable without sleeping.
//!
//! Why hand-written: it is twelve bytes of state per connection and a few lines of
//! arithmetic; rate-limiter crates carry shared, atomic or keyed state this design does
//! not want on a single-threaded shard.

/// A token bucket. `now_ms` is any monotonic millisecond clock.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    /// Tokens in thousandths (so refill stays integral at any rate).
    milli_tokens: u64,
    last_ms: u64,
}

/// The limit a bucket enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Tokens added per second; 0 disables limiting.
    pub per_sec: u32,
    /// Bucket capacity.
    pub burst: u32,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: Rate, now_ms: u64) -> TokenBucket {
        TokenBucket {
            milli_tokens: rate.burst as u64 * 1000,
            last_ms: now_ms,
        }
    }

    /// Whether the bucket is full again at `now_ms` (always, with limiting off): a
    /// bucket in this state is the same as a new one, so a keyed table of buckets may
    /// forget it.
    pub fn is_full(&self, rate: Rate, now_ms: u64) -> bool {
        if rate.per_sec == 0 {
            return true;
        }
        let elapsed = now_ms.saturating_sub(self.last_ms);
        self.milli_tokens + elapsed * rate.per_sec as u64 >= rate.burst as u64 * 1000
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, rate: Rate, now_ms: u64) -> bool {
        if rate.per_sec == 0 {
            return true;
        }
        let elapsed = now_ms.saturating_sub(self.last_ms);
        self.last_ms = self.last_ms.max(now_ms);
        let cap = rate.burst as u64 * 1000;
        self.milli_tokens = (self.milli_tokens + elapsed * rate.per_sec as u64).min(cap);
        if self.milli_tokens >= 1000 {
            self.milli_tokens -= 1000;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: Rate = Rate {
        per_sec: 10,
        burst: 5,
    };

    #[test]
    fn burst_is_allowed_then_requests_are_refused() {
        let mut b = TokenBucket::new(RATE, 0);
        for _ in 0..5 {
            assert!(b.try_take(RATE, 0));
        }
        assert!(!b.try_take(RATE, 0));
    }

    #[test]
    fn tokens_refill_at_the_configured_rate() {
        let mut b = TokenBucket::new(RATE, 0);
        for _ in 0..5 {
            assert!(b.try_take(RATE, 0));
        }
        assert!(!b.try_take(RATE, 99));
        assert!(b.try_take(RATE, 100)); // 10/s → one token per 100 ms
        assert!(!b.try_take(RATE, 150));
    }

    #[test]
    fn refill_never_exceeds_the_burst() {
        let mut b = TokenBucket::new(RATE, 0);
        assert!(b.try_take(RATE, 0));
        let later = 1_000_000;
        for _ in 0..5 {
            assert!(b.try_take(RATE, later));
        }
        assert!(!b.try_take(RATE, later));
    }

    #[test]
    fn a_bucket_is_full_again_once_what_was_taken_has_refilled() {
        let mut b = TokenBucket::new(RATE, 0);
        assert!(b.is_full(RATE, 0));
        assert!(b.try_take(RATE, 0));
        assert!(b.try_take(RATE, 0));
        assert!(!b.is_full(RATE, 0));
        assert!(!b.is_full(RATE, 199), "two tokens take 200 ms at 10/s");
        assert!(b.is_full(RATE, 200));
        let off = Rate {
            per_sec: 0,
            burst: 0,
        };
        assert!(TokenBucket::new(off, 0).is_full(off, 0));
    }

    #[test]
    fn zero_rate_means_unlimited() {
        let off = Rate {
            per_sec: 0,
            burst: 0,
        };
        let mut b = TokenBucket::new(off, 0);
        for _ in 0..10_000 {
            assert!(b.try_take(off, 0));
        }
    }

    #[test]
    fn a_clock_going_backwards_does_not_mint_tokens() {
        let mut b = TokenBucket::new(RATE, 1000);
        for _ in 0..5 {
            assert!(b.try_take(RATE, 1000));
        }
        assert!(!b.try_take(RATE, 500));
        assert!(!b.try_take(RATE, 1000));
    }
}
