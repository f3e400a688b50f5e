//! The command line: one subcommand per scenario or built-in service.
//!
//! Why it exists: the flags are the harness's user interface (and, for worker
//! processes, its internal protocol: hidden `--worker-*` flags), so they live in one
//! place that `--help` documents. Options shared by every client scenario (where the
//! gateway is, how to authenticate, how to split over processes) are flattened groups.

use std::path::PathBuf;
use std::str::FromStr;

use clap::{Args, Parser, Subcommand};

/// Load-testing harness for the ringgate WebSocket gateway (Bannou Connect v1).
#[derive(Debug, Parser)]
#[command(name = "ringgate-bench", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the built-in HTTP/1.1 keep-alive echo service (the gateway's default backend).
    EchoBackend(EchoArgs),
    /// Hold N authenticated idle connections; report the gateway's RSS and CPU per
    /// connection.
    Idle(IdleArgs),
}

#[derive(Debug, Args)]
pub struct EchoArgs {
    /// Address to listen on (one SO_REUSEPORT socket per thread).
    #[arg(long, default_value = "127.0.0.1:5001")]
    pub listen: String,
    /// Threads (one monoio runtime each); default: one per core.
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Where the gateway is and how to authenticate to it.
#[derive(Debug, Clone, Args)]
pub struct GatewayArgs {
    /// Gateway address: `host:port` or `ws://host:port/path` (default: the config's
    /// `server.listen` and `server.path`, else 127.0.0.1:8080/connect).
    #[arg(long, value_name = "ADDR|URL")]
    pub gateway: Option<String>,
    /// The gateway's config file: its HS256 secret, listen address and upgrade path are
    /// read from it (RINGGATE_* environment overrides apply, as for the gateway).
    #[arg(long, value_name = "FILE")]
    pub gateway_config: Option<PathBuf>,
    /// HS256 secret to sign tokens with (overrides the config's `auth.hs256_secret`;
    /// the variable is not RINGGATE_* because the gateway config loader owns that prefix).
    #[arg(long, env = "RG_BENCH_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
}

/// How many worker processes to spread connections over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Procs {
    /// Enough for the descriptor and port limits (see `spawn::plan`).
    Auto,
    Fixed(usize),
}

impl FromStr for Procs {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "auto" {
            return Ok(Procs::Auto);
        }
        match s.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(Procs::Fixed(n)),
            _ => Err(format!("expected `auto` or a positive number, got `{s}`")),
        }
    }
}

/// Hidden flags a parent passes to the worker processes it spawns.
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// This process is worker number I (source address 127.0.0.(2+I)).
    #[arg(long, hide = true)]
    pub worker_index: Option<usize>,
    /// Global index of this worker's first connection (names users uniquely).
    #[arg(long, hide = true, default_value_t = 0)]
    pub worker_first: usize,
    /// Run id shared by all workers of one run (makes session ids unique).
    #[arg(long, hide = true, default_value = "")]
    pub run_id: String,
}

#[derive(Debug, Clone, Args)]
pub struct IdleArgs {
    /// Connections to open and hold.
    #[arg(long)]
    pub conns: usize,
    /// Seconds to hold them idle once all are connected.
    #[arg(long, default_value_t = 10)]
    pub hold: u64,
    /// Worker processes (`auto`: enough for RLIMIT_NOFILE and the ephemeral ports;
    /// each binds its sockets to its own source address 127.0.0.(2+i)).
    #[arg(long, default_value = "auto")]
    pub procs: Procs,
    #[command(flatten)]
    pub gateway: GatewayArgs,
    /// The gateway's pid: sample its RSS and CPU before, during and after.
    #[arg(long)]
    pub gateway_pid: Option<u32>,
    /// Write the report as JSON here.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Connection attempts in flight per worker process during the ramp.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Time allowed for TCP connect + upgrade + manifest, per attempt.
    #[arg(long, default_value_t = 10_000)]
    pub connect_timeout_ms: u64,
    /// Seconds to let the gateway settle after the last connection before sampling RSS.
    #[arg(long, default_value_t = 2)]
    pub settle: u64,
    #[command(flatten)]
    pub worker: WorkerArgs,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn procs_parse() {
        assert_eq!("auto".parse::<Procs>(), Ok(Procs::Auto));
        assert_eq!("3".parse::<Procs>(), Ok(Procs::Fixed(3)));
        assert!("0".parse::<Procs>().is_err());
        assert!("x".parse::<Procs>().is_err());
    }
}
