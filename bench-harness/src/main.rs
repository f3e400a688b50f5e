//! `ringgate-bench`: the load-testing harness for ringgate (docs/DESIGN.md §9).
//!
//! Why it exists: ringgate's users decide by latency percentiles and per-connection cost
//! under load they can reproduce; this binary produces that load (through the library's
//! one Bannou client), the built-in backends, and the reports.

mod backends;
mod chart;
mod cli;
mod compare;
mod conn;
mod demo;
mod gateway;
mod jwt;
mod npc_state;
mod probe;
mod procstat;
mod report;
mod rng;
mod scenario;
mod sched;
mod spawn;
mod target;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let command = cli::Cli::parse().into_command();
    let result = match &command {
        cli::Command::EchoBackend(a) => backends::run_echo_backend(a).map(|()| ExitCode::SUCCESS),
        cli::Command::Idle(a) => scenario::idle::run(a),
        cli::Command::Gateway(a) => run_gateway(a),
        cli::Command::Connect(a) => scenario::connect::run(a),
        cli::Command::WsEcho(a) => backends::ws_echo::run(a).map(|()| ExitCode::SUCCESS),
        cli::Command::ProbeServer(a) => probe::run_server(a).map(|()| ExitCode::SUCCESS),
        cli::Command::Probe(a) => probe::run_client(a),
        cli::Command::Demo(a) => demo::run(a),
        cli::Command::Rpc(a) => scenario::rpc::run(a),
        cli::Command::NpcWorld(a) => backends::npc_world::run(a).map(|()| ExitCode::SUCCESS),
        cli::Command::Observers(a) => scenario::observers::run(a),
        cli::Command::Fanout(a) => scenario::fanout::run(a),
        cli::Command::FanoutRawServer(a) => {
            scenario::fanout::raw_server::run(a).map(|()| ExitCode::SUCCESS)
        }
        cli::Command::Compare(a) => compare::run(a),
        cli::Command::Chart(a) => scenario::rpc::chart_reports(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ringgate-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `ringgate-bench gateway`: the gateway library, run as the `ringgate` binary runs it.
fn run_gateway(a: &cli::ServeGatewayArgs) -> anyhow::Result<ExitCode> {
    let env = ringgate::Config::process_env();
    let config = match &a.config {
        Some(path) => ringgate::Config::from_file(path, &env)?,
        None => ringgate::Config::from_defaults(&env)?,
    };
    ringgate::server::run_until_signalled(config, None)?;
    Ok(ExitCode::SUCCESS)
}
