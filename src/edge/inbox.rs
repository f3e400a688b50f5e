//! The shard's push inbox: applies what other threads (and this shard's own links)
//! post through the hub (`push::PushMsg`) — topic deliveries, pushes to one
//! connection, broadcasts, subscriptions, role changes, kicks, inspections.
//!
//! Why a task of its own, in the edge: pushes arrive at any rate and must not wait
//! behind control messages (or delay them); and a role change ends in a new manifest,
//! which is the edge's (`manifest`). Each message is applied between events, on the
//! shard's thread, with no lock.

use std::rc::Rc;
use std::sync::Arc;

use crate::metrics::bump;
use crate::push::{PushMsg, SessionInfo};
use crate::rt::mailbox::Mailbox;
use crate::session::{ConnShared, SessionRef};
use crate::shard::ShardCtx;
use crate::upstream::Backend;

use super::manifest;

/// Most messages applied in one turn before yielding to the shard's other tasks.
const BATCH: usize = 256;

/// Applies the shard's push inbox until the shard stops.
pub async fn run(ctx: Rc<ShardCtx>, inbox: Arc<Mailbox<PushMsg>>) {
    loop {
        let first = inbox.recv().await;
        apply(&ctx, first);
        // What else is queued goes now, in this turn: the connections woken by all of
        // it flush once, with everything that arrived together in one write.
        for _ in 1..BATCH {
            match inbox.try_recv() {
                Some(m) => apply(&ctx, m),
                None => break,
            }
        }
    }
}

/// The live connection at `at` on this shard.
fn live(ctx: &ShardCtx, at: SessionRef) -> Option<Rc<ConnShared>> {
    ctx.plane
        .sessions
        .get(at)
        .filter(|c| !c.is_gone() && !c.closing())
}

/// Applies one push message.
pub fn apply(ctx: &ShardCtx, msg: PushMsg) {
    match msg {
        PushMsg::Publish(p) => {
            ctx.plane.deliver(&p);
        }
        PushMsg::Deliver { to, frame, then } => {
            let delivered = live(ctx, to).is_some_and(|c| c.send_frame(frame));
            if delivered {
                bump(&ctx.metrics.pushes, 1);
            }
            if let Some(f) = then {
                let answer = if delivered { f.delivered } else { f.missed };
                if let Some(frame) = answer {
                    ctx.plane.hub.post(
                        f.shard,
                        PushMsg::Deliver {
                            to: f.to,
                            frame,
                            then: None,
                        },
                    );
                }
            }
        }
        PushMsg::Broadcast { frame, except } => {
            let mut n = 0;
            for c in ctx.plane.sessions.all() {
                if Some(c.at()) != except && !c.is_gone() && c.send_frame(frame.clone()) {
                    n += 1;
                }
            }
            bump(&ctx.metrics.pushes, n);
        }
        PushMsg::Subscribe { to, topics, on } => {
            if let Some(c) = live(ctx, to) {
                for t in &topics {
                    if on {
                        ctx.plane.subscribe(&c, t);
                    } else {
                        ctx.plane.unsubscribe(&c, t);
                    }
                }
            }
        }
        PushMsg::Roles { to, add, remove } => {
            if let Some(c) = live(ctx, to) {
                change_roles(ctx, &c, &add, &remove);
            }
        }
        PushMsg::Close { to, code, reason } => {
            if let Some(c) = live(ctx, to) {
                tracing::info!(shard = ctx.id, session = %c.session.session_id, code, reason = %reason, "session closed by a push");
                c.request_close(code, reason);
            }
        }
        PushMsg::Inspect { to, reply } => {
            let info = live(ctx, to).map(|c| info(ctx, &c));
            let _ = reply.try_send(info);
        }
    }
}

/// Grants and revokes roles: backends told of the session see its new roles, and a
/// new manifest goes out if what it may call changed.
pub fn change_roles(ctx: &ShardCtx, c: &Rc<ConnShared>, add: &[String], remove: &[String]) {
    let before = c.session.roles().clone();
    if !c.session.change_roles(add, remove) {
        return;
    }
    tracing::debug!(shard = ctx.id, session = %c.session.session_id, ?add, ?remove, "roles changed");
    for svc in ctx.services.borrow().iter() {
        if let Backend::Link(link) = &svc.backend {
            link.session_changed(c);
        }
    }
    manifest::resend_if_changed(ctx, c, &before, "role_changed");
}

fn info(ctx: &ShardCtx, c: &ConnShared) -> SessionInfo {
    let s = &c.session;
    SessionInfo {
        session_id: s.session_id.to_string(),
        account_id: s.account_id.as_deref().map(str::to_string),
        roles: s.roles().clone(),
        topics: ctx
            .plane
            .topics
            .borrow()
            .of_session(s.link_ref)
            .iter()
            .map(|t| t.to_string())
            .collect(),
        shard: ctx.id as u16,
        manifest_version: s.manifest_version.get(),
        outbox_bytes: c.outbox.borrow().len(),
    }
}
