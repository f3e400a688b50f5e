//! The shard's once-a-second sweep over its sessions.
//!
//! Why one sweep and no per-connection timers: a timer per connection costs memory and
//! wakeups for every idle client; one pass a second sends pings to idle clients, drops
//! those that stay silent, closes sessions whose token expired (4001) and sends the
//! manifest to a client that never answered the upgrade's ping.

use std::rc::Rc;
use std::time::Duration;

use crate::rt::clock;
use crate::rt::task::unix_now;
use crate::shard::ShardCtx;

use super::manifest;

/// Once a second: server pings to idle clients, the pong deadline, session expiry.
pub async fn sweep(ctx: Rc<ShardCtx>) {
    let idle = ctx.config.server.idle_ping_secs as u32;
    let pong = ctx.config.server.pong_timeout_secs as u32;
    loop {
        monoio::time::sleep(Duration::from_secs(1)).await;
        if ctx.draining.get() {
            return;
        }
        clock::refresh();
        let now = ctx.now_secs();
        let unix = unix_now().as_secs();
        for c in ctx.plane.sessions.all() {
            if c.manifest_overdue(now) && !c.closing() {
                manifest::send(&ctx, &c, "initial");
            }
            c.on_tick(now, unix, idle, pong);
        }
    }
}
