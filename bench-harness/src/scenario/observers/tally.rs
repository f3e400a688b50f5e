//! What one observer counts about the pushes it reads, and who observes what: the
//! per-NPC sequence accounting (a jump in an NPC's `seq` is states this observer never
//! got: conflations), decision-to-receipt latency into a class's histogram (fast or
//! slow observers), and the pure choices of the run (which NPCs observer g watches,
//! whether it is a slow one).
//!
//! Why it exists: this is the arithmetic the report's numbers rest on; pure (times are
//! passed in), so it is tested without a gateway.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::npc_state::Head;
use crate::report::{self, HistData};
use crate::rng::Rng;

/// Observer `g` of a run is slow: exactly `share` of any run of consecutive observers
/// (rounded), spread evenly over them.
pub(super) fn is_slow(g: u64, share: f64) -> bool {
    let share = share.clamp(0.0, 1.0);
    ((g + 1) as f64 * share).floor() > (g as f64 * share).floor()
}

/// The NPCs observer `g` watches: `s` distinct ids of `0..k`, the same for the same
/// `(g, run seed)`.
pub(super) fn watch_list(g: u64, s: usize, k: u32, seed: u64) -> Vec<u32> {
    Rng::new(seed ^ g.wrapping_mul(0x9E37_79B9_7F4A_7C15)).distinct(s, k as usize)
}

/// One class's counts (fast or slow observers), in the measured window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClassStats {
    /// Observers of this class that started watching.
    pub observers: u64,
    /// State pushes read.
    pub deliveries: u64,
    /// States skipped: the sum of each `seq` jump minus one (conflations seen).
    pub gaps: u64,
    /// Pushes whose `seq` was not above the last one of their NPC (repeats, reordering).
    pub stale: u64,
    /// Pushes for an NPC the observer does not watch, or not an NPC state at all
    /// (other than a manifest).
    pub foreign: u64,
    /// New capability manifests pushed while watching (a config reload that changed
    /// what the session may call: expected, not an error).
    #[serde(default)]
    pub manifests: u64,
    /// Decision to receipt, µs.
    pub latency: HistData,
}

impl ClassStats {
    pub fn merge(&mut self, o: &ClassStats) {
        self.observers += o.observers;
        self.deliveries += o.deliveries;
        self.gaps += o.gaps;
        self.stale += o.stale;
        self.foreign += o.foreign;
        self.manifests += o.manifests;
        let mut h = self.latency.to_histogram();
        o.latency.add_to(&mut h);
        self.latency = HistData::from_histogram(&h);
    }
}

/// A class's live counters and histogram while the run goes (one thread's).
#[derive(Debug)]
pub(super) struct Class {
    pub(super) observers: u64,
    pub(super) deliveries: u64,
    pub(super) gaps: u64,
    pub(super) stale: u64,
    pub(super) foreign: u64,
    pub(super) manifests: u64,
    pub(super) latency: Histogram<u64>,
}

impl Default for Class {
    fn default() -> Class {
        Class {
            observers: 0,
            deliveries: 0,
            gaps: 0,
            stale: 0,
            foreign: 0,
            manifests: 0,
            latency: report::new_histogram(),
        }
    }
}

impl Class {
    pub(super) fn stats(&self) -> ClassStats {
        ClassStats {
            observers: self.observers,
            deliveries: self.deliveries,
            gaps: self.gaps,
            stale: self.stale,
            foreign: self.foreign,
            manifests: self.manifests,
            latency: HistData::from_histogram(&self.latency),
        }
    }
}

/// What one push was, to the observer that read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Seen {
    /// The NPC's first state this observer read (nothing to compare its seq with).
    First { latency_us: u64 },
    /// The next state, or a later one: `gap` states were skipped.
    Next { latency_us: u64, gap: u64 },
    /// Not above the last seq of its NPC.
    Stale,
    /// Not one of the observer's NPCs (or not an NPC state, nor a manifest).
    Foreign,
    /// A new capability manifest (after a config reload, say).
    Manifest,
}

/// One observer's view of its NPCs: the last `seq` read of each.
#[derive(Debug, Clone)]
pub(super) struct Watched {
    /// `(npc, last seq read; 0 = none yet)`, as few as the observer watches (a scan is
    /// cheaper than a map at 20).
    last: Vec<(u32, u64)>,
}

impl Watched {
    pub(super) fn new(npcs: &[u32]) -> Watched {
        Watched {
            last: npcs.iter().map(|&n| (n, 0)).collect(),
        }
    }

    /// Accounts for `head`, read at `now_ns` (unix ns).
    pub(super) fn see(&mut self, head: Head, now_ns: u64) -> Seen {
        let Some(slot) = self.last.iter_mut().find(|(n, _)| *n == head.npc) else {
            return Seen::Foreign;
        };
        let latency_us = now_ns.saturating_sub(head.t) / 1_000;
        let last = slot.1;
        slot.1 = head.seq.max(last);
        if last == 0 {
            Seen::First { latency_us }
        } else if head.seq > last {
            Seen::Next {
                latency_us,
                gap: head.seq - last - 1,
            }
        } else {
            Seen::Stale
        }
    }

    /// NPCs of which at least one state was read.
    pub(super) fn seen(&self) -> usize {
        self.last.iter().filter(|(_, s)| *s > 0).count()
    }
}

impl Class {
    /// Counts what [`Watched::see`] found, if the push was read in the measured window.
    pub(super) fn count(&mut self, seen: Seen, measured: bool) {
        if !measured {
            return;
        }
        match seen {
            Seen::First { latency_us } => {
                self.deliveries += 1;
                report::record(&mut self.latency, latency_us);
            }
            Seen::Next { latency_us, gap } => {
                self.deliveries += 1;
                self.gaps += gap;
                report::record(&mut self.latency, latency_us);
            }
            Seen::Stale => {
                self.deliveries += 1;
                self.stale += 1;
            }
            Seen::Foreign => self.foreign += 1,
            Seen::Manifest => self.manifests += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(npc: u32, seq: u64, t: u64) -> Head {
        Head { npc, seq, t }
    }

    #[test]
    fn latency_runs_from_the_decision_to_the_receipt() {
        let mut w = Watched::new(&[4, 9]);
        assert_eq!(
            w.see(head(9, 3, 1_000_000), 3_500_000),
            Seen::First { latency_us: 2_500 }
        );
        // A push stamped after its receipt (clock step): 0, not a wrap-around.
        assert_eq!(
            w.see(head(9, 4, 9_000_000), 8_000_000),
            Seen::Next {
                latency_us: 0,
                gap: 0
            }
        );
    }

    #[test]
    fn a_seq_jump_counts_the_states_skipped() {
        let mut w = Watched::new(&[1, 2]);
        w.see(head(1, 10, 0), 0);
        assert_eq!(
            w.see(head(1, 11, 0), 0),
            Seen::Next {
                latency_us: 0,
                gap: 0
            }
        );
        assert_eq!(
            w.see(head(1, 15, 0), 0),
            Seen::Next {
                latency_us: 0,
                gap: 3
            }
        );
        // Another NPC keeps its own count.
        assert_eq!(w.see(head(2, 100, 0), 0), Seen::First { latency_us: 0 });
        assert_eq!(
            w.see(head(2, 101, 0), 0),
            Seen::Next {
                latency_us: 0,
                gap: 0
            }
        );
        assert_eq!(w.seen(), 2);
    }

    #[test]
    fn repeats_and_reordering_are_stale_and_keep_the_highest_seq() {
        let mut w = Watched::new(&[1]);
        w.see(head(1, 5, 0), 0);
        assert_eq!(w.see(head(1, 5, 0), 0), Seen::Stale);
        assert_eq!(w.see(head(1, 3, 0), 0), Seen::Stale);
        assert_eq!(
            w.see(head(1, 6, 0), 0),
            Seen::Next {
                latency_us: 0,
                gap: 0
            }
        );
    }

    #[test]
    fn pushes_for_npcs_not_watched_are_foreign() {
        let mut w = Watched::new(&[1]);
        assert_eq!(w.see(head(2, 1, 0), 0), Seen::Foreign);
        assert_eq!(w.seen(), 0);
    }

    #[test]
    fn only_the_measured_window_is_counted() {
        let mut c = Class::default();
        c.count(Seen::First { latency_us: 100 }, false);
        c.count(Seen::Foreign, false);
        assert_eq!((c.deliveries, c.foreign, c.latency.len()), (0, 0, 0));
        c.count(Seen::First { latency_us: 100 }, true);
        c.count(
            Seen::Next {
                latency_us: 300,
                gap: 2,
            },
            true,
        );
        c.count(Seen::Stale, true);
        c.count(Seen::Foreign, true);
        c.count(Seen::Manifest, true);
        assert_eq!((c.deliveries, c.gaps, c.stale, c.foreign), (3, 2, 1, 1));
        assert_eq!(
            c.manifests, 1,
            "a manifest is neither a delivery nor foreign"
        );
        assert_eq!(c.latency.len(), 2, "stale pushes have no latency");
        let mut total = ClassStats::default();
        total.merge(&c.stats());
        total.merge(&c.stats());
        assert_eq!((total.deliveries, total.gaps, total.manifests), (6, 4, 2));
        assert_eq!(total.latency.to_histogram().len(), 4);
    }

    #[test]
    fn the_slow_share_picks_that_share_of_observers_evenly() {
        let slow = (0..1000).filter(|&g| is_slow(g, 0.1)).count();
        assert_eq!(slow, 100);
        assert_eq!((0..10).filter(|&g| is_slow(g, 0.1)).count(), 1);
        assert!((0..1000).all(|g| !is_slow(g, 0.0)));
        assert!((0..1000).all(|g| is_slow(g, 1.0)));
    }

    #[test]
    fn each_observer_watches_distinct_npcs_of_the_world_reproducibly() {
        let a = watch_list(7, 20, 1000, 1);
        assert_eq!(a.len(), 20);
        assert!(a.iter().all(|&n| n < 1000));
        let mut d = a.clone();
        d.sort_unstable();
        d.dedup();
        assert_eq!(d.len(), 20);
        assert_eq!(watch_list(7, 20, 1000, 1), a);
        assert_ne!(watch_list(8, 20, 1000, 1), a);
        assert_eq!(watch_list(0, 50, 10, 1).len(), 10);
    }
}
