//! The built-in backends: the servers the harness loads or puts behind the gateway.
//!
//! Why it exists: benchmarks must measure the gateway, not its backend, so the backends
//! are built like the gateway (thread-per-core monoio, one SO_REUSEPORT listener per
//! thread) and cost as little per message as they can. The files:
//! * `http_echo`: the HTTP/1.1 echo, the backend of the gateway's default config;
//! * `ws_echo`: `ws-echo`, the plain WebSocket echo (the "no gateway" baseline);
//! * `link_echo`: the same echo over the backend link (docs/LINK.md);
//! * `ws_conn`: the WebSocket connection loop `ws_echo` and `link_echo` run on;
//! * `npc_world`: `npc-world`, the NPC world over the backend link (the `observers`
//!   scenario's backend);
//! * `link_upgrade`: how a link backend accepts the link's upgrade;
//! * `test_gateway` (tests only): the gateway's end of a link, to drive link backends;
//! * `listen`: the listeners and accept threads every server (and the probe server)
//!   shares.
//!
//! The servers import only the shared files (`listen`, `ws_conn`, `link_upgrade`), never
//! each other; this file composes them into the `echo-backend` command: the HTTP echo,
//! and with `--link-listen` the link echo in the same process, on threads of its own, so
//! one backend serves both of the gateway's paths to a service.

pub mod http_echo;
pub mod link_echo;
mod link_upgrade;
pub mod listen;
pub mod npc_world;
#[cfg(test)]
mod test_gateway;
pub mod ws_conn;
pub mod ws_echo;

use std::net::SocketAddr;

use crate::cli::EchoArgs;

/// `ringgate-bench echo-backend`.
pub fn run_echo_backend(args: &EchoArgs) -> anyhow::Result<()> {
    let addr: SocketAddr = args.listen.parse()?;
    let link_addr: Option<SocketAddr> = args.link_listen.as_deref().map(str::parse).transpose()?;
    // Bind every listener before serving, so a bad address fails fast and the service
    // is fully up when the messages below are printed.
    let listeners = listen::bind_listeners(addr, args.threads)?;
    let link_listeners = match link_addr {
        Some(a) => listen::bind_listeners(a, args.threads)?,
        None => Vec::new(),
    };
    eprintln!(
        "echo-backend listening on http://{addr} ({} threads)",
        listeners.len()
    );
    if let Some(a) = link_addr {
        eprintln!(
            "echo-backend serving the link on ws://{a} (subprotocol {}, {} threads)",
            ringgate::proto::link::SUBPROTOCOL,
            link_listeners.len()
        );
    }
    let mut handles = listen::spawn_accept_threads("echo", listeners, |stream, _| async move {
        let _ = http_echo::serve_conn(stream).await;
    })?;
    handles.extend(listen::spawn_accept_threads(
        "echo-link",
        link_listeners,
        |stream, rbuf| async move {
            let _ = link_echo::serve_conn(stream, rbuf).await;
        },
    )?);
    listen::join_threads("echo-backend", handles)
}
