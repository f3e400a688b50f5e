//! What a worker's threads and connections share: the run's settings (`RunCfg`), the
//! start and stop (`Control`), one thread's counters and histograms (`ThreadState`), and
//! an established connection waiting for the start (`Ready`).
//!
//! Why it exists: the worker builds these and the connection loop reads and records into
//! them; as a file of their own, both import it and neither imports the other.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use ringgate::client::Client;

use super::protocol::Live;
use crate::cli::{LoadRate, RpcMode};
use crate::report::{ConnectStats, RequestStats};
use crate::target::Target;

/// What every thread of a worker needs to know.
pub(super) struct RunCfg {
    pub(super) mode: RpcMode,
    pub(super) rate: LoadRate,
    pub(super) total_conns: u64,
    pub(super) window: usize,
    pub(super) warmup_ns: u64,
    pub(super) end_ns: u64,
    pub(super) timeout_ns: u64,
    pub(super) payload: Vec<u8>,
    pub(super) endpoint: String,
    pub(super) target: Target,
    pub(super) connect_timeout: Duration,
    pub(super) lanes: usize,
    pub(super) worker_index: usize,
    pub(super) run_id: String,
}

/// Start and stop, shared by a worker's threads.
pub(super) struct Control {
    /// CLOCK_MONOTONIC ns of the schedule's start (0: not yet).
    pub(super) start: AtomicU64,
    pub(super) stop: Arc<AtomicBool>,
}

/// One thread's state (single-threaded: Cells and RefCells).
pub(super) struct ThreadState {
    pub(super) connect: RefCell<ConnectStats>,
    pub(super) connect_hist: RefCell<Histogram<u64>>,
    pub(super) requests: RefCell<RequestStats>,
    pub(super) latency: RefCell<Histogram<u64>>,
    pub(super) service: RefCell<Histogram<u64>>,
    pub(super) send_lag: RefCell<Histogram<u64>>,
    pub(super) interval: RefCell<Histogram<u64>>,
    pub(super) live: Cell<Live>,
    pub(super) next: Cell<usize>,
    pub(super) finished: Cell<bool>,
    /// Connections whose run is over, kept open until the process exits (closing them
    /// early would put the gateway's close work inside the others' measurements).
    pub(super) parked: RefCell<Vec<Client>>,
}

impl ThreadState {
    pub(super) fn bump(&self, f: impl FnOnce(&mut Live)) {
        let mut l = self.live.get();
        f(&mut l);
        self.live.set(l);
    }
}

/// An established connection waiting for the start.
pub(super) struct Ready {
    pub(super) client: Client,
    pub(super) guid: [u8; 16],
    pub(super) g: u64,
}
