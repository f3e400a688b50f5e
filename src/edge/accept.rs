//! The shard's accept loop.
//!
//! Why apart: the one place connections enter a shard; it hands each to its own
//! handshake task (`edge::handshake`) so a slow client never holds up the next.

use std::rc::Rc;
use std::time::Duration;

use monoio::net::TcpListener;

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
                Ok((stream, _peer)) => {
                    fd_limit_logged = false;
                    if ctx.draining.get() {
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    spawn_isolated("connection handshake", handshake::serve(ctx.clone(), stream));
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
