//! `rpc`: C connections calling one endpoint at a constant total rate R (open loop, with
//! coordinated-omission correction) or at saturation (`--rate max`, closed loop with a
//! window of requests in flight per connection); latency percentiles, throughput, errors
//! by response code, and the gateway's CPU and RSS.
//!
//! Why it exists: RPC latency under a known load is what users decide by (docs/DESIGN.md §9).
//! Open loop means requests leave on a schedule fixed by the rate alone (`sched`), not
//! when the previous response arrives, so a slow server faces the same offered load and
//! its slowness is measured from each request's intended send time.
//!
//! Why a folder: one process is either the coordinator or one of its workers, and each
//! side has parts of its own. The files, top down (each imports only files below it):
//! * `coordinator`: the parent process: plans and spawns the workers, starts them at one
//!   instant, prints live progress, merges their results into the report
//!   (`scenario::gateway_track` samples the gateway's CPU and RSS for it); `output`
//!   writes the table, the JSON report, the interval log and the charts.
//! * `worker`: a worker process: its threads, their ramp, what it tells the parent;
//!   `conn_loop` drives one connection's requests; `state` is what those two share;
//!   `inflight` is one connection's table of requests in flight.
//! * `protocol`: the worker → parent messages; `request`: the request body and the key of
//!   an error response (the limit probe uses the body too).

mod conn_loop;
mod coordinator;
mod inflight;
mod output;
mod protocol;
mod request;
mod state;
mod worker;

use std::process::ExitCode;

use crate::cli::RpcArgs;

pub use output::chart_reports;
pub use request::{code_key, payload};

pub fn run(args: &RpcArgs) -> anyhow::Result<ExitCode> {
    match args.worker.worker_index {
        Some(index) => worker::worker(args, index),
        None => coordinator::coordinate(args),
    }
}
