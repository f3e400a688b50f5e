//! What a worker and its observers share (one thread: `Cell`s and `RefCell`s): the run's
//! settings (`RunCfg`), the start and stop, the two classes' counts, the live counters
//! and the last second's histograms.
//!
//! Why it exists: the worker builds these and every observer's loop records into them;
//! as a file of their own, both import it and neither imports the other.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use ringgate::client::Client;

use super::protocol::{Live, WatchStats};
use super::tally::Class;
use crate::report;
use crate::target::Target;

/// What every observer of a worker needs to know.
pub(super) struct RunCfg {
    pub(super) target: Target,
    /// NPCs in the world, and per observer.
    pub(super) npcs: u32,
    pub(super) watch: usize,
    pub(super) slow_share: f64,
    /// A slow observer's pause after each message.
    pub(super) slow_pause: Duration,
    /// The measured window, as offsets from the start (ns).
    pub(super) warmup_ns: u64,
    pub(super) end_ns: u64,
    pub(super) connect_timeout: Duration,
    pub(super) run_id: String,
    /// Seeds the observers' choices of NPCs (the same for every worker of a run).
    pub(super) seed: u64,
}

/// A worker's shared state.
pub(super) struct State {
    pub(super) cfg: RunCfg,
    /// Unix ns of the run's start (0: not yet).
    pub(super) start: Cell<u64>,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) fast: RefCell<Class>,
    pub(super) slow: RefCell<Class>,
    pub(super) watch: RefCell<WatchStats>,
    pub(super) disconnects: RefCell<BTreeMap<String, u64>>,
    pub(super) npcs_seen: Cell<u64>,
    pub(super) live: Cell<Live>,
    /// Since the last progress line, from the start (warm-up included).
    pub(super) interval_fast: RefCell<Histogram<u64>>,
    pub(super) interval_slow: RefCell<Histogram<u64>>,
    /// Connections whose run is over, kept open until the process exits (closing them
    /// early would put the gateway's close work inside the others' measurements).
    pub(super) parked: RefCell<Vec<Client>>,
}

impl State {
    pub(super) fn new(cfg: RunCfg, stop: Arc<AtomicBool>) -> State {
        State {
            cfg,
            start: Cell::new(0),
            stop,
            fast: RefCell::default(),
            slow: RefCell::default(),
            watch: RefCell::default(),
            disconnects: RefCell::default(),
            npcs_seen: Cell::new(0),
            live: Cell::new(Live::default()),
            interval_fast: RefCell::new(report::new_histogram()),
            interval_slow: RefCell::new(report::new_histogram()),
            parked: RefCell::default(),
        }
    }

    pub(super) fn bump(&self, f: impl FnOnce(&mut Live)) {
        let mut l = self.live.get();
        f(&mut l);
        self.live.set(l);
    }

    /// Whether a push read at `now` (unix ns) falls in the measured window.
    pub(super) fn measured(&self, now: u64) -> bool {
        let start = self.start.get();
        start != 0 && (start + self.cfg.warmup_ns..start + self.cfg.end_ns).contains(&now)
    }

    /// Since the start, at `now` (unix ns): whether to record into the live histograms.
    pub(super) fn started(&self, now: u64) -> bool {
        let start = self.start.get();
        start != 0 && now >= start
    }

    /// The run is over for observers (the window has ended, or the parent said stop).
    pub(super) fn over(&self, now: u64) -> bool {
        let start = self.start.get();
        self.stop.load(Ordering::Relaxed) || (start != 0 && now >= start + self.cfg.end_ns)
    }
}
