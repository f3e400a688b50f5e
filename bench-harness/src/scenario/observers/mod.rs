//! `observers`: the NPC observers benchmark, the users' own test. N clients each watch S
//! NPCs (of the K of an NPC world, `backends::npc_world`) through `/npc/watch`, then
//! read the state pushes the world publishes and the gateway fans out: latency from each
//! NPC's decision to its receipt (no coordinated omission is possible: the timestamp is
//! the decision itself), deliveries per second, the states each observer never got
//! (sequence gaps: conflations) and disconnects by close code; with `--slow-share`, that
//! share of observers reads at a tenth of the speed and is reported apart.
//!
//! Why it exists: topics, conflation and fan-out (docs/DESIGN.md §6) are what an NPC
//! game's watchers need of the gateway; this measures them end to end with the load
//! such a game makes.
//!
//! Why a folder: one process is either the coordinator or one of its workers. The files,
//! top down (each imports only files below it):
//! * `coordinator`: the parent: `setup` (the world and gateway it starts), the workers,
//!   one start, live progress, the merged report; `output` writes the table, JSON and
//!   chart.
//! * `worker`: a worker process: its ramp, the start, its reports; `observer` is one
//!   observer's loop; `state` is what those two share.
//! * `protocol`: the worker → parent messages; `tally`: the per-push arithmetic and the
//!   run's choices (which NPCs, which observers are slow).

mod coordinator;
mod observer;
mod output;
mod protocol;
mod setup;
mod state;
mod tally;
mod worker;

use std::process::ExitCode;

use crate::cli::ObserversArgs;

pub fn run(args: &ObserversArgs) -> anyhow::Result<ExitCode> {
    match args.worker.worker_index {
        Some(index) => worker::worker(args, index),
        None => coordinator::coordinate(args),
    }
}
