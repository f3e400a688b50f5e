//! The `ringgate` binary: parse the command line, load the config, run the gateway
//! until SIGTERM/SIGINT, drain, exit.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use ringgate::{Config, Gateway};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// WebSocket edge gateway for game backends (Bannou Connect v1).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Config file (TOML). Without it ringgate runs on its embedded defaults
    /// (localhost only).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Validate a config file and exit (non-zero, naming the key, if it is invalid).
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    check_config: Option<PathBuf>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    let env = Config::process_env();

    if let Some(path) = args.check_config {
        return match Config::from_file(&path, &env) {
            Ok(_) => {
                println!("{}: ok", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {e}", path.display());
                ExitCode::from(2)
            }
        };
    }
    let config = match &args.config {
        Some(path) => Config::from_file(path, &env),
        None => Config::from_defaults(&env),
    };
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    if args.config.is_none() {
        tracing::info!("no --config given: running on the embedded defaults (localhost only)");
    }
    let (soft, hard) = ringgate::server::raise_nofile_limit();
    tracing::info!(soft, hard, "file descriptor limit (RLIMIT_NOFILE)");

    // Block the signals before any thread starts so only the waiter below sees them.
    let mut signals = match signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ]) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let gateway = match Gateway::start(config) {
        Ok(g) => g,
        Err(e) => {
            tracing::error!("cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(sig) = signals.forever().next() {
        tracing::info!(
            signal = sig,
            "shutting down: no new connections, closing open ones with 1001"
        );
    }
    if gateway.stop() {
        tracing::info!("stopped");
    } else {
        tracing::warn!("stopped; some shards did not finish within the grace period");
    }
    ExitCode::SUCCESS
}
