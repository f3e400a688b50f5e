//! `fanout`: N subscribers on one topic, one publisher stepping its rate up until the
//! server falls behind; per step deliveries/s, publish-to-receipt latency percentiles,
//! messages lost, and the server's CPU and RSS. Targets: NATS (WebSocket listener),
//! Socket.IO v4, Pushpin (GRIP), the raw TCP fan-out limit probe, and ringgate's topic
//! endpoints (`--target`).
//!
//! Why it exists: broadcasting one message to many WebSocket clients is the other half
//! of what users pick a gateway for; this measures it the same way against ringgate and
//! the servers people would otherwise use (perf/fanout_peers.sh runs them side by side).
//!
//! The files, top down (each imports only files below it):
//! * `coordinator`: the parent: workers, publisher, steps, the rule; `output` its table
//!   and JSON; `server_usage` the server's /proc numbers; `publish` the publisher.
//! * `worker`: a worker process; `sub` one subscriber per target, over `ws` (a minimal
//!   WebSocket client on the gateway's codec) and the protocol parsers `nats` and
//!   `socketio`; `protocol` the worker ↔ parent lines.
//! * `steps` (results and the stop rule), `stamp` (the payload), `raw_server` (the
//!   limit probe's server, a subcommand of its own).

mod coordinator;
mod nats;
mod output;
mod protocol;
mod publish;
pub mod raw_server;
mod server_usage;
mod socketio;
mod stamp;
mod steps;
mod sub;
mod worker;
mod ws;

use std::process::ExitCode;
use std::time::Duration;

use crate::cli::FanoutArgs;
pub use crate::cli::FanoutTarget;

pub fn run(args: &FanoutArgs) -> anyhow::Result<ExitCode> {
    match args.worker.worker_index {
        Some(index) => worker::worker(args, index),
        None => coordinator::coordinate(args),
    }
}

fn target_name(t: FanoutTarget) -> &'static str {
    match t {
        FanoutTarget::Nats => "nats",
        FanoutTarget::Socketio => "socketio",
        FanoutTarget::Pushpin => "pushpin",
        FanoutTarget::Raw => "raw",
        FanoutTarget::Ringgate => "ringgate",
    }
}

/// Where and how this run's subscribers connect.
fn sub_cfg(args: &FanoutArgs) -> anyhow::Result<sub::SubCfg> {
    let timeout = Duration::from_millis(args.connect_timeout_ms);
    let run_id = args.worker.run_id.clone();
    if args.target == FanoutTarget::Ringgate {
        let t = crate::target::Target::resolve(&args.gateway)?;
        return Ok(sub::SubCfg {
            target: args.target,
            addr: t.addr,
            path: t.path.clone(),
            minter: Some(crate::jwt::Minter::new(&t.secret)),
            endpoint: args.endpoint.clone(),
            run_id,
            timeout,
        });
    }
    let server = args.server.as_deref().ok_or_else(|| {
        anyhow::anyhow!(
            "--server ADDR is needed for --target {}",
            target_name(args.target)
        )
    })?;
    let (addr, path) = publish::parse_url(server.strip_prefix("ws://").unwrap_or(server))?;
    let path = match args.target {
        FanoutTarget::Socketio => socketio::PATH.to_string(),
        _ => path,
    };
    Ok(sub::SubCfg {
        target: args.target,
        addr,
        path,
        minter: None,
        endpoint: args.endpoint.clone(),
        run_id,
        timeout,
    })
}
