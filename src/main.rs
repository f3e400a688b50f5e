//! The `ringgate` binary: parse the command line, load the config, run the gateway
//! until SIGTERM/SIGINT, drain, exit.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use ringgate::Config;

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
        .with_writer(std::io::stderr)
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
    match ringgate::server::run_until_signalled(config, args.config.as_deref()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("cannot start: {e}");
            ExitCode::FAILURE
        }
    }
}
