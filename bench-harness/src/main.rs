//! `ringgate-bench`: the load-testing harness for ringgate (DESIGN.md §9).
//!
//! Why it exists: ringgate's users decide by latency percentiles and per-connection cost
//! under load they can reproduce; this binary produces that load (through the library's
//! one Bannou client), the built-in backends, and the reports.

mod cli;
mod conn;
mod echo;
mod jwt;
mod procstat;
mod report;
mod scenario;
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
    let cli = cli::Cli::parse();
    let result = match &cli.command {
        cli::Command::EchoBackend(a) => echo::run(a).map(|()| ExitCode::SUCCESS),
        cli::Command::Idle(a) => scenario::idle::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ringgate-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
