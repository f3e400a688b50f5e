//! What an `observers` run starts around itself: the NPC world (in this process, on a
//! thread of its own) unless `--world` names a running one, and the gateway (a child
//! process, as `rpc --spawn-gateway` starts it) with a config written for the run unless
//! `--gateway` / `--gateway-config` name a running one. The config routes
//! `/npc/watch` (role `user`, as the harness's tokens carry) to the world's link:
//!
//! ```toml
//! [[services]]
//! name = "npc"
//! link = "ws://127.0.0.1:PORT/"
//! endpoints = [ { path = "/npc/watch", roles = ["user"] } ]
//! ```
//!
//! Why it exists: one command should run the whole NPC benchmark (the demo is that
//! command); what it starts, and the config it writes, are kept apart from running the
//! observers.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use ringgate::config::DEV_HS256_SECRET;

use crate::backends::npc_world::{self, WorldCounters, WATCH_PATH};
use crate::cli::ObserversArgs;
use crate::gateway::SpawnedGateway;
use crate::target::{self, Target};

/// How often the world started here ticks.
const WORLD_TICK: Duration = Duration::from_millis(5);

/// The world and gateway of a run.
pub(super) struct Setup {
    pub(super) world: SocketAddr,
    /// The world's counters, when it runs in this process.
    pub(super) counters: Option<std::sync::Arc<WorldCounters>>,
    pub(super) target: Target,
    pub(super) gateway: Option<SpawnedGateway>,
    /// The config written for the gateway, removed at the end.
    config: Option<PathBuf>,
}

impl Drop for Setup {
    fn drop(&mut self) {
        if let Some(p) = &self.config {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// The gateway config of a run: `[server]` and `[auth]` keys it names, the rest from the
/// embedded defaults, and the npc service on the world's link.
pub(super) fn gateway_toml(
    listen: &str,
    admin: &str,
    shards: usize,
    secret: &str,
    world: SocketAddr,
) -> String {
    format!(
        r#"# Written by `ringgate-bench observers` for one run.
[server]
listen = "{listen}"
admin_listen = "{admin}"
shards = {shards}

[auth]
hs256_secret = "{secret}"

[[services]]
name = "npc"
link = "ws://{world}/"
endpoints = [ {{ path = "{WATCH_PATH}", roles = ["user"] }} ]
"#
    )
}

/// Starts what the run needs (see the file's doc).
pub(super) fn start(args: &ObserversArgs) -> anyhow::Result<Setup> {
    let (world, counters) = match &args.world {
        Some(a) => (
            a.parse::<SocketAddr>()
                .with_context(|| format!("--world {a}"))?,
            None,
        ),
        None => {
            let listen: SocketAddr = args
                .world_listen
                .parse()
                .with_context(|| format!("--world-listen {}", args.world_listen))?;
            let w = npc_world::start(listen, args.npcs, WORLD_TICK, 1)?;
            eprintln!(
                "observers: npc-world with {} NPCs on ws://{}/",
                args.npcs, w.addr
            );
            let (addr, counters) = (w.addr, w.counters.clone());
            // Its thread serves until this process exits.
            std::mem::forget(w);
            (addr, Some(counters))
        }
    };
    let g = &args.gateway;
    if g.gateway.is_some() || g.gateway_config.is_some() {
        return Ok(Setup {
            world,
            counters,
            target: Target::resolve(g)?,
            gateway: None,
            config: None,
        });
    }
    let secret = g
        .secret
        .clone()
        .unwrap_or_else(|| DEV_HS256_SECRET.to_owned());
    let path = std::env::temp_dir().join(format!("ringgate-observers-{}.toml", std::process::id()));
    std::fs::write(
        &path,
        gateway_toml(
            &args.listen,
            &args.admin_listen,
            args.shards,
            &secret,
            world,
        ),
    )
    .with_context(|| format!("writing {}", path.display()))?;
    let mut setup = Setup {
        world,
        counters,
        target: Target {
            addr: target::parse_gateway(&args.listen, "/connect")?.0,
            path: "/connect".into(),
            secret,
            tls: None,
            ca_file: None,
        },
        gateway: None,
        config: Some(path.clone()),
    };
    let gw = SpawnedGateway::start(
        &path,
        args.gateway_bin.as_deref(),
        args.gateway_log.as_deref(),
        Duration::from_secs(20),
    )?;
    eprintln!(
        "observers: gateway {} pid {} ready on ws://{}/connect (admin http://{})",
        gw.command, gw.pid, args.listen, gw.admin
    );
    setup.gateway = Some(gw);
    Ok(setup)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_written_config_routes_the_watch_to_the_world_link() {
        let toml = gateway_toml(
            "127.0.0.1:8080",
            "127.0.0.1:9090",
            2,
            DEV_HS256_SECRET,
            "127.0.0.1:5005".parse().unwrap(),
        );
        let cfg = ringgate::Config::from_toml_str(&toml, &[]).expect("a valid config");
        assert_eq!(cfg.server.listen, "127.0.0.1:8080");
        assert_eq!(cfg.server.shards, 2);
        assert_eq!(cfg.services.len(), 1);
        assert!(toml.contains(r#"link = "ws://127.0.0.1:5005/""#), "{toml}");
        assert!(
            toml.contains(r#"path = "/npc/watch", roles = ["user"]"#),
            "{toml}"
        );
    }
}
