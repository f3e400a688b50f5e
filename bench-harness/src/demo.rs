//! `demo`: the README's first command. By default the NPC world: an `npc-world` of 1000
//! NPCs and a gateway in front of it on the embedded defaults' addresses and secret
//! (plus the npc service), 2000 observers watching 20 NPCs each (a tenth of them slow
//! readers) for 10 s, the `observers` table, both stopped. With `--rpc`: the built-in
//! echo backend and a gateway on its embedded defaults, an RPC load, the `rpc` table.
//!
//! Why it exists: someone evaluating ringgate should see it carry real load in one
//! command, with nothing to configure: the users' own test (observers of NPCs) by
//! default, and request latency with `--rpc`. Each runs through its scenario's own
//! entry point, parsed from the command line a user would type, so the demo cannot
//! drift from the scenarios' flags. The RPC demo's children are stopped by pid (SIGTERM,
//! then SIGKILL after a grace) on every path out, including errors and Ctrl-C of the run
//! (the children see the same SIGINT); the NPC demo's gateway is `observers`' own.

use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;

use crate::cli::{Cli, DemoArgs};
use crate::gateway::http_status;

/// Where the embedded defaults put things (configs/default.toml).
const ECHO_ADDR: &str = "127.0.0.1:5001";
const GATEWAY_ADDR: &str = "127.0.0.1:8080";
const ADMIN_ADDR: &str = "127.0.0.1:9090";

/// A child process stopped by pid when dropped.
struct Stoppable {
    name: &'static str,
    child: Child,
}

impl Stoppable {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM by pid; SIGKILL if it is still running after `grace`.
    fn stop(&mut self, grace: Duration) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        // SAFETY: plain syscall on our own, not yet reaped, child's pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "demo: {} (pid {}) ignored SIGTERM; killing it",
            self.name,
            self.pid()
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(st)) => Some(st.to_string()),
            _ => None,
        }
    }
}

impl Drop for Stoppable {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(7));
    }
}

fn accepts(addr: &str) -> bool {
    addr.parse::<SocketAddr>()
        .ok()
        .is_some_and(|a| TcpStream::connect_timeout(&a, Duration::from_millis(200)).is_ok())
}

pub fn run(args: &DemoArgs) -> anyhow::Result<ExitCode> {
    if !args.rpc {
        return run_npc(args);
    }
    for (addr, what) in [
        (ECHO_ADDR, "the echo backend"),
        (GATEWAY_ADDR, "the gateway"),
        (ADMIN_ADDR, "the gateway's admin"),
    ] {
        if accepts(addr) {
            bail!("{addr} (for {what}) is already in use: stop whatever listens there first");
        }
    }
    let me = std::env::current_exe().context("locating ringgate-bench")?;
    // The given binary, else `ringgate` next to this one, else this binary's `gateway`
    // subcommand: `cargo run --release -p ringgate-bench -- demo` works on a fresh checkout.
    let (gateway_bin, gateway_args) = crate::gateway::command(args.gateway_bin.as_deref())?;

    eprintln!("demo: starting the echo backend on {ECHO_ADDR}");
    let mut echo = Stoppable {
        name: "echo-backend",
        child: Command::new(&me)
            .args(["echo-backend", "--listen", ECHO_ADDR])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the echo backend")?,
    };
    wait_for("echo backend", &mut echo, || accepts(ECHO_ADDR))?;

    eprintln!(
        "demo: starting {} {} on its embedded defaults (ws://{GATEWAY_ADDR}/connect, admin {ADMIN_ADDR})",
        gateway_bin.display(),
        gateway_args.join(" ")
    );
    let mut gw = Stoppable {
        name: "ringgate",
        child: Command::new(&gateway_bin)
            .args(&gateway_args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", gateway_bin.display()))?,
    };
    let admin: SocketAddr = ADMIN_ADDR.parse().expect("valid address");
    wait_for("gateway", &mut gw, || {
        http_status(admin, "/readyz") == Some(200)
    })?;
    eprintln!(
        "demo: gateway ready (pid {}); {} clients, rate {}/s, {} s",
        gw.pid(),
        args.conns,
        args.rate,
        rpc_duration(args)
    );

    let code = run_rpc(args, gw.pid());

    gw.stop(Duration::from_secs(7));
    echo.stop(Duration::from_secs(2));
    eprintln!("demo: stopped the gateway and the echo backend");
    code
}

/// Polls `ready` for up to 10 s, failing early if the child exits.
fn wait_for(
    what: &str,
    child: &mut Stoppable,
    mut ready: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(st) = child.exited() {
            bail!("the {what} exited during startup with {st}");
        }
        if ready() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the {what} was not ready after 10 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `rpc` command line the demo runs (against the embedded defaults: the gateway's
/// address, upgrade path and dev secret all come from them).
pub fn rpc_argv(args: &DemoArgs, gateway_pid: u32) -> Vec<String> {
    let mut v: Vec<String> = [
        "ringgate-bench",
        "rpc",
        "--mode",
        "bannou",
        "--gateway",
        GATEWAY_ADDR,
    ]
    .map(String::from)
    .to_vec();
    v.extend([
        format!("--conns={}", args.conns),
        format!("--rate={}", args.rate),
        format!("--duration={}", rpc_duration(args)),
        format!("--gateway-pid={gateway_pid}"),
    ]);
    if let Some(p) = &args.json {
        v.push(format!("--json={}", p.display()));
    }
    v
}

fn rpc_duration(args: &DemoArgs) -> u64 {
    args.duration.unwrap_or(20)
}

/// The `observers` command line of the NPC demo: the embedded defaults' addresses and
/// secret, the world started in-process.
pub fn observers_argv(args: &DemoArgs) -> Vec<String> {
    let mut v: Vec<String> = [
        "ringgate-bench",
        "observers",
        "--listen",
        GATEWAY_ADDR,
        "--admin-listen",
        ADMIN_ADDR,
        "--npcs=1000",
        "--watch=20",
        "--slow-share=0.1",
        "--warmup=1",
    ]
    .map(String::from)
    .to_vec();
    v.extend([
        format!("--observers={}", args.conns),
        format!("--duration={}", args.duration.unwrap_or(10)),
    ]);
    if let Some(b) = &args.gateway_bin {
        v.push(format!("--gateway-bin={}", b.display()));
    }
    if let Some(p) = &args.json {
        v.push(format!("--json={}", p.display()));
    }
    v
}

/// The NPC demo: `observers` as `observers_argv` says (it starts the world and the
/// gateway, and stops the gateway, itself).
fn run_npc(args: &DemoArgs) -> anyhow::Result<ExitCode> {
    for (addr, what) in [
        (GATEWAY_ADDR, "the gateway"),
        (ADMIN_ADDR, "the gateway's admin"),
    ] {
        if accepts(addr) {
            bail!("{addr} (for {what}) is already in use: stop whatever listens there first");
        }
    }
    eprintln!(
        "demo: an NPC world (1000 NPCs) behind a gateway on ws://{GATEWAY_ADDR}/connect, \
         {} observers x 20 NPCs, {} s (`demo --rpc`: the RPC demo)",
        args.conns,
        args.duration.unwrap_or(10)
    );
    let cli = Cli::try_parse_from(observers_argv(args)).context("demo's observers flags")?;
    match cli.into_command() {
        crate::cli::Command::Observers(o) => crate::scenario::observers::run(&o),
        _ => unreachable!("observers_argv names the observers subcommand"),
    }
}

/// Runs the RPC load through the `rpc` scenario's own entry point, parsed from the same
/// command line a user would type (so the demo cannot drift from `rpc`'s flags).
fn run_rpc(args: &DemoArgs, gateway_pid: u32) -> anyhow::Result<ExitCode> {
    let cli = Cli::try_parse_from(rpc_argv(args, gateway_pid)).context("demo's rpc flags")?;
    match cli.into_command() {
        // THE call into the rpc scenario (single call site).
        crate::cli::Command::Rpc(rpc) => crate::scenario::rpc::run(&rpc),
        _ => unreachable!("rpc_argv names the rpc subcommand"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo_args(rpc: bool) -> DemoArgs {
        DemoArgs {
            rpc,
            duration: None,
            conns: 2000,
            rate: "10000".into(),
            gateway_bin: None,
            json: Some("out/demo.json".into()),
        }
    }

    #[test]
    fn rpc_command_line_parses() {
        let argv = rpc_argv(&demo_args(true), 42);
        assert!(argv.contains(&"--conns=2000".to_string()));
        assert!(argv.contains(&"--duration=20".to_string()));
        let cli = Cli::try_parse_from(&argv).unwrap();
        assert!(matches!(cli.into_command(), crate::cli::Command::Rpc(_)));
    }

    #[test]
    fn the_default_demo_is_2000_observers_of_the_npc_world_for_10_s() {
        let argv = observers_argv(&demo_args(false));
        let cli = Cli::try_parse_from(&argv).unwrap();
        let crate::cli::Command::Observers(o) = cli.into_command() else {
            panic!("not observers: {argv:?}");
        };
        assert_eq!((o.observers, o.watch, o.npcs), (2000, 20, 1000));
        assert_eq!((o.duration, o.slow_share), (10.0, 0.1));
        assert_eq!(
            (o.listen.as_str(), o.admin_listen.as_str()),
            (GATEWAY_ADDR, ADMIN_ADDR)
        );
        assert!(
            o.gateway.gateway.is_none() && o.world.is_none(),
            "it starts both"
        );
        assert_eq!(o.json, Some("out/demo.json".into()));
    }
}
