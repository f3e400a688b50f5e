//! The body of one shard thread: its tasks (accept, sweep, the read gate's ticker),
//! its mailbox loop, and, at shutdown, its drain (`server::drain`).
//!
//! Why here, at the top: it starts tasks of every layer below (the edge's accept loop
//! and sweep, the shard's gate) on the thread `server` made for it.

use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use monoio::net::TcpListener;

use crate::edge::{accept, inbox, manifest, sweep};

use super::drain;
use crate::rt::mailbox::Mailbox;
use crate::shard::{gate, ShardCtx, ShardMsg};

/// The shard's main task: accepts, sweeps timers, obeys its mailbox; returns once a
/// shutdown has drained (or the grace period ran out).
pub async fn run(
    ctx: Rc<ShardCtx>,
    listener: TcpListener,
    mailbox: Arc<Mailbox<ShardMsg>>,
    ready: Arc<AtomicUsize>,
) {
    monoio::spawn(sweep::sweep(ctx.clone()));
    let pushes = ctx.plane.hub.inbox(ctx.id);
    monoio::spawn(inbox::run(ctx.clone(), pushes));
    monoio::spawn(accept::accept_loop(ctx.clone(), listener));
    let tick = ctx.config.server.read_batch_tick_us;
    if tick > 0 {
        monoio::spawn(gate::run(
            ctx.read_gate.clone(),
            Duration::from_micros(tick),
            ctx.metrics.clone(),
        ));
    }
    ready.fetch_add(1, Ordering::SeqCst);
    loop {
        match mailbox.recv().await {
            ShardMsg::Shutdown => break,
            ShardMsg::Registry(reg) => {
                tracing::info!(
                    shard = ctx.id,
                    generation = reg.generation,
                    "registry updated"
                );
                let old = ctx.registry.borrow().clone();
                ctx.apply_registry(reg);
                let sent = manifest::resend_changed(&ctx, &old, "capabilities_updated").await;
                if sent > 0 {
                    tracing::info!(shard = ctx.id, sessions = sent, "new manifests sent");
                }
            }
        }
    }
    ready.fetch_sub(1, Ordering::SeqCst);
    ctx.draining.set(true);
    ctx.stop_accept.notify();
    drain::drain(&ctx).await;
}
