//! The shard's accept loop.
//!
//! Why apart: the one place connections enter a shard; it asks the shared admission
//! limits (`crate::admission`) about each and hands it to its own handshake task
//! (`edge::handshake`) — to be upgraded, or refused once its request has arrived — so
//! a slow client never holds up the next.

use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::net::TcpListener;

use crate::admission::Refusal;
use crate::rt::sys;
use crate::rt::task::spawn_isolated;
use crate::shard::ShardCtx;

use super::handshake;

/// Accepts connections on the shard's listener until the shard drains, each served by
/// a task of its own; past the process's file descriptor limit, says so once and waits.
pub async fn accept_loop(ctx: Rc<ShardCtx>, listener: TcpListener) {
    let mut fd_limit_logged = false;
    loop {
        monoio::select! {
            r = listener.accept() => match r {
                Ok((stream, peer)) => {
                    fd_limit_logged = false;
                    if ctx.draining.get() {
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    match ctx.admission.admit(peer.ip()) {
                        Ok(permit) => {
                            let lowat = ctx.config.server.send_lowat_bytes;
                            if lowat > 0 {
                                sys::set_notsent_lowat(stream.as_raw_fd(), lowat);
                            }
                            spawn_isolated(
                                "connection handshake",
                                handshake::serve(ctx.clone(), stream, permit),
                            );
                        }
                        Err(why) => {
                            log_refusal(&ctx, why, peer.ip());
                            spawn_isolated("refused connection", handshake::refuse(ctx.clone(), stream, why));
                        }
                    }
                }
                Err(e) => {
                    let limit = matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE));
                    if limit {
                        if !fd_limit_logged {
                            tracing::error!(
                                shard = ctx.id,
                                open = ctx.plane.sessions.len(),
                                nofile = sys::nofile_limit(),
                                "file descriptor limit reached (RLIMIT_NOFILE); new connections wait until some close — raise LimitNOFILE or run more processes"
                            );
                            fd_limit_logged = true;
                        }
                    } else {
                        tracing::warn!(shard = ctx.id, error = %e, "accept failed");
                    }
                    monoio::time::sleep(Duration::from_millis(if limit { 100 } else { 10 })).await;
                }
            },
            _ = ctx.stop_accept.notified() => break,
        }
    }
    tracing::debug!(shard = ctx.id, "listener closed");
}

/// Logs a refused connection, at most once a second per shard (with how many went
/// unlogged since): under a flood, the counters say how many, the log says that it
/// happens and from where.
fn log_refusal(ctx: &ShardCtx, why: Refusal, source: IpAddr) {
    if let Some(unlogged) = ctx.refusals_log.admit(Instant::now()) {
        tracing::warn!(
            shard = ctx.id,
            status = why.status(),
            reason = why.message(),
            source = %source,
            unlogged,
            "connection refused before its upgrade (server.max_connections, max_connections_per_ip or upgrade_rate_per_ip)"
        );
    }
}
