//! The shard's once-a-second sweep over its sessions.
//!
//! Why one sweep and no per-connection timers: a timer per connection costs memory and
//! wakeups for every idle client; one pass a second sends pings to idle clients, drops
//! those that stay silent, closes sessions whose token expired (4001), sends the
//! manifest to a client that never answered the upgrade's ping, and ends parked
//! sessions whose reconnection window ran out; and it lets the shared admission
//! limits forget source addresses with nothing left to count (`Admission::prune`).

use std::rc::Rc;
use std::time::Duration;

use crate::metrics::bump;
use crate::rt::clock;
use crate::rt::task::unix_now;
use crate::session::Timers;
use crate::shard::ShardCtx;

use super::manifest;

/// Once a second: server pings to idle clients, the pong deadline, session expiry.
pub async fn sweep(ctx: Rc<ShardCtx>) {
    let s = &ctx.config.server;
    let timers = Timers {
        idle_ping: s.idle_ping_secs as u32,
        pong_timeout: s.pong_timeout_secs as u32,
        idle_timeout: s.idle_timeout_secs as u32,
    };
    loop {
        monoio::time::sleep(Duration::from_secs(1)).await;
        if ctx.draining.get() {
            return;
        }
        clock::refresh();
        // (Once a second over all shards, whichever comes first.)
        ctx.admission.prune();
        let now = ctx.now_secs();
        let unix = unix_now().as_secs();
        let window = ctx.config.server.reconnect_window_secs;
        for c in ctx.plane.sessions.all() {
            if let Some(since) = c.parked_since() {
                let expired = c.session.expires_at().is_some_and(|exp| unix >= exp);
                let over = now.saturating_sub(since) >= window;
                if over || expired || c.is_final() {
                    if over {
                        bump(&ctx.metrics.resume_windows_expired, 1);
                    }
                    tracing::debug!(shard = ctx.id, session = %c.session.session_id, window_over = over, expired, "parked session ended");
                    ctx.end_parked(&c);
                }
                continue;
            }
            if c.manifest_overdue(now) && !c.closing() {
                manifest::send(&ctx, &c, "initial");
            }
            c.on_tick(now, unix, timers);
        }
    }
}
