//! When each NPC decides next: every NPC decides every 100–500 ms, the interval drawn
//! uniformly afresh for each decision; the first decisions are spread over the first
//! 500 ms so the world starts at its steady rate (K / 0.3 s on average).
//!
//! Why it exists: the world has one ticker for all its NPCs (no task or timer per NPC),
//! which asks this queue which NPCs are due at each tick. Pure (time is passed in), so
//! the intervals are tested without a clock.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::rng::Rng;

/// Shortest time between two decisions of one NPC.
pub(crate) const MIN_INTERVAL_NS: u64 = 100_000_000;
/// Longest time between two decisions of one NPC.
pub(crate) const MAX_INTERVAL_NS: u64 = 500_000_000;

/// The NPCs' next decision times (nanoseconds on any one clock).
pub(super) struct Schedule {
    due: BinaryHeap<Reverse<(u64, u32)>>,
    rng: Rng,
}

impl Schedule {
    /// NPCs `0..npcs`, their first decisions spread over `now .. now + MAX_INTERVAL_NS`.
    pub(super) fn new(npcs: u32, now: u64, seed: u64) -> Schedule {
        let mut rng = Rng::new(seed);
        let due = (0..npcs)
            .map(|id| Reverse((now + rng.range(0, MAX_INTERVAL_NS), id)))
            .collect();
        Schedule { due, rng }
    }

    /// The NPCs due at `now` (each once), each rescheduled one fresh interval after its
    /// due time (so the ticker's lateness does not slow the world down), or after `now`
    /// if the ticker fell further behind than that (no catch-up burst).
    pub(super) fn take_due(&mut self, now: u64, into: &mut Vec<u32>) {
        into.clear();
        while let Some(&Reverse((at, id))) = self.due.peek() {
            if at > now {
                break;
            }
            self.due.pop();
            into.push(id);
            let interval = self.rng.range(MIN_INTERVAL_NS, MAX_INTERVAL_NS);
            let next = if at + interval > now {
                at + interval
            } else {
                now + interval
            };
            self.due.push(Reverse((next, id)));
        }
    }

    /// The earliest next decision.
    #[cfg(test)]
    fn next_at(&self) -> Option<u64> {
        self.due.peek().map(|r| r.0 .0)
    }

    /// Each NPC's next decision time, in NPC order.
    #[cfg(test)]
    fn all(&self) -> Vec<(u32, u64)> {
        let mut v: Vec<(u32, u64)> = self.due.iter().map(|r| (r.0 .1, r.0 .0)).collect();
        v.sort_unstable();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn first_decisions_are_spread_over_the_first_500_ms() {
        let s = Schedule::new(1000, 7 * MS, 1);
        let all = s.all();
        assert_eq!(all.len(), 1000);
        assert!(all.iter().all(|&(_, at)| (7 * MS..=507 * MS).contains(&at)));
        assert!(all.iter().any(|&(_, at)| at < 57 * MS));
        assert!(all.iter().any(|&(_, at)| at > 457 * MS));
    }

    #[test]
    fn every_decision_comes_100_to_500_ms_after_the_one_before() {
        let mut s = Schedule::new(200, 0, 3);
        let mut last: Vec<Option<u64>> = vec![None; 200];
        let mut due = Vec::new();
        let mut decisions = 0u64;
        // Ticks every 5 ms for 20 s: each gap between an NPC's decisions, as the ticks
        // see it, is the drawn interval within a tick.
        for tick in 0..4000u64 {
            let now = tick * 5 * MS;
            s.take_due(now, &mut due);
            for &id in &due {
                if let Some(prev) = last[id as usize] {
                    let gap = now - prev;
                    assert!(
                        (MIN_INTERVAL_NS - 5 * MS..=MAX_INTERVAL_NS + 5 * MS).contains(&gap),
                        "npc {id}: {gap} ns"
                    );
                }
                last[id as usize] = Some(now);
                decisions += 1;
            }
            assert!(s.next_at().unwrap() > now, "everything due was taken");
        }
        // 200 NPCs at one decision per 300 ms on average over 20 s: about 13,300.
        assert!((12_000..=14_000).contains(&decisions), "{decisions}");
    }

    #[test]
    fn a_late_ticker_gets_each_npc_once_not_a_burst() {
        let mut s = Schedule::new(50, 0, 9);
        let mut due = Vec::new();
        s.take_due(10_000 * MS, &mut due);
        assert_eq!(due.len(), 50);
        s.take_due(10_000 * MS + 99 * MS, &mut due);
        assert!(due.is_empty());
    }
}
