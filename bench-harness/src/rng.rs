//! A small seeded pseudo-random generator (splitmix64) for the NPC scenario's choices:
//! each NPC's next decision interval and made-up state, each observer's NPCs.
//!
//! Why it exists: those choices must be cheap (thousands per second on the backend's one
//! thread), reproducible from a seed (an observer's NPCs follow from its index) and need
//! no statistical quality beyond "spread out"; a dependency would buy nothing here.

/// splitmix64: every seed (0 included) gives a full-period sequence.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi` (`lo <= hi`).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        let span = hi - lo + 1;
        // Multiply-shift: no modulo bias worth naming for spans far below 2^64.
        lo + ((u128::from(self.next_u64()) * u128::from(span)) >> 64) as u64
    }

    /// `n` distinct values of `0..k` (all of them, shuffled, if `n >= k`).
    pub fn distinct(&mut self, n: usize, k: usize) -> Vec<u32> {
        let n = n.min(k);
        if n * 4 < k {
            // Few of many: draw until distinct.
            let mut out: Vec<u32> = Vec::with_capacity(n);
            while out.len() < n {
                let v = self.range(0, k as u64 - 1) as u32;
                if !out.contains(&v) {
                    out.push(v);
                }
            }
            out
        } else {
            // Partial Fisher–Yates.
            let mut all: Vec<u32> = (0..k as u32).collect();
            for i in 0..n {
                let j = self.range(i as u64, k as u64 - 1) as usize;
                all.swap(i, j);
            }
            all.truncate(n);
            all
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_stays_within_its_bounds_and_reaches_both() {
        let mut r = Rng::new(7);
        let v: Vec<u64> = (0..10_000).map(|_| r.range(3, 9)).collect();
        assert!(v.iter().all(|x| (3..=9).contains(x)));
        assert!(v.contains(&3) && v.contains(&9));
    }

    #[test]
    fn distinct_draws_distinct_values_of_the_range() {
        let mut r = Rng::new(1);
        for (n, k) in [(20, 1000), (20, 30), (5, 5), (9, 4)] {
            let mut v = r.distinct(n, k);
            assert_eq!(v.len(), n.min(k));
            assert!(v.iter().all(|&x| (x as usize) < k));
            v.sort_unstable();
            v.dedup();
            assert_eq!(v.len(), n.min(k), "{n} of {k}");
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_sequence() {
        let (mut a, mut b) = (Rng::new(42), Rng::new(42));
        assert!((0..100).all(|_| a.next_u64() == b.next_u64()));
    }
}
