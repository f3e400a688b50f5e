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
    let (soft, hard) = ringgate::server::raise_nofile_limit();
    tracing::info!(soft, hard, "file descriptor limit (RLIMIT_NOFILE)");

    // Block SIGTERM/SIGINT before any thread starts: every thread inherits the mask, so
    // the signals stay pending until the main thread takes them with sigwait below. No
    // handler runs on a shard thread and nothing can be lost in between.
    let signals = match ShutdownSignals::block() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot block SIGTERM/SIGINT: {e}");
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
    let sig = signals.wait();
    tracing::info!(
        signal = sig,
        "shutting down: no new connections, closing open ones with 1001"
    );
    if gateway.stop() {
        tracing::info!("stopped");
    } else {
        tracing::warn!("stopped; some shards did not finish within the grace period");
    }
    ExitCode::SUCCESS
}

/// SIGTERM and SIGINT, blocked in every thread and taken synchronously.
struct ShutdownSignals(libc::sigset_t);

impl ShutdownSignals {
    fn block() -> std::io::Result<ShutdownSignals> {
        // SAFETY: sigset_t is plain data initialised by sigemptyset before use; the calls
        // only read and write the set we pass.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::sigaddset(&mut set, libc::SIGINT);
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if rc != 0 {
                return Err(std::io::Error::from_raw_os_error(rc));
            }
            Ok(ShutdownSignals(set))
        }
    }

    /// Waits for one of the signals; returns its number.
    fn wait(&self) -> i32 {
        let mut sig = 0;
        loop {
            // SAFETY: sigwait reads our set and writes the signal number.
            let rc = unsafe { libc::sigwait(&self.0, &mut sig) };
            if rc == 0 {
                return sig;
            }
        }
    }
}
