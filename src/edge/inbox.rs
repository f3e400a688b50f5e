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
use crate::rt::task::yield_now;
use crate::session::{ConnShared, Queued, SessionRef};
use crate::shard::ShardCtx;
use crate::upstream::Backend;

use super::{client_rpc, manifest};

/// Most messages applied in one turn before yielding to the shard's other tasks.
const BATCH: usize = 256;

/// Applies the shard's push inbox until the shard stops.
///
/// Everything waiting (up to `BATCH` messages) is applied in one turn: topic messages
/// and broadcasts are queued into the outboxes, and the clients that had nothing else
/// queued are then written to from here, once each (`ConnShared::flush_now`) — so a
/// message that arrives alone is written straight out, and a burst leaves in one write
/// per client, with no connection task woken for either. Then the task yields,
/// whatever is left: a publisher faster than the shard must not starve the writes that
/// would catch up with it (an `.await` on a mailbox that is never empty does not
/// yield).
pub async fn run(ctx: Rc<ShardCtx>, inbox: Arc<Mailbox<PushMsg>>) {
    let hub = ctx.plane.hub.clone();
    let mut flush: Vec<Rc<ConnShared>> = Vec::new();
    loop {
        let first = inbox.recv().await;
        apply(&ctx, first, &mut flush);
        let mut n = 1;
        while n < BATCH {
            match inbox.try_recv() {
                Some(m) => apply(&ctx, m, &mut flush),
                None => break,
            }
            n += 1;
        }
        hub.applied(ctx.id, n);
        for c in flush.drain(..) {
            c.flush_now();
        }
        if n == BATCH {
            yield_now().await;
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

/// Applies one push message; clients to write to at the end of the batch go to
/// `flush` (see `run`).
pub fn apply(ctx: &Rc<ShardCtx>, msg: PushMsg, flush: &mut Vec<Rc<ConnShared>>) {
    match msg {
        PushMsg::Publish(p) => {
            ctx.plane.deliver(&p, flush);
        }
        PushMsg::Deliver { to, frame, then } => {
            // A peer message (`then`) reaches a connected client only: the sender of
            // one to a client that is away gets 31 at once, not a late delivery.
            let target = live(ctx, to).filter(|c| then.is_none() || !c.is_parked());
            let refused = then.is_some() && target.as_ref().is_some_and(|c| c.busy());
            let delivered = !refused && target.is_some_and(|c| c.send_frame(frame));
            if delivered {
                bump(&ctx.metrics.pushes, 1);
            }
            if let Some(f) = then {
                let answer = if delivered {
                    f.delivered
                } else if refused {
                    f.refused
                } else {
                    f.missed
                };
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
                if Some(c.at()) == except || c.is_raw() {
                    continue;
                }
                match c.queue_pushed(frame.clone(), None) {
                    Queued::No => {}
                    Queued::Yes => n += 1,
                    Queued::FlushLater => {
                        n += 1;
                        flush.push(c);
                    }
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
                c.request_final_close(code, reason);
            }
        }
        PushMsg::Shortcut {
            to,
            name,
            target,
            expires_unix_ms,
            payload,
        } => {
            if let Some(c) = live(ctx, to) {
                let published = ctx.plane.shortcuts.borrow_mut().publish(
                    c.session.link_ref,
                    &name,
                    &target,
                    payload,
                    expires_unix_ms,
                );
                match published {
                    Ok(_) if !c.manifest_due() => manifest::send(ctx, &c, "shortcut_published"),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(shard = ctx.id, session = %c.session.session_id, shortcut = %name, error = %e, "shortcut refused")
                    }
                }
            }
        }
        PushMsg::ShortcutRevoke { to, name } => {
            if let Some(c) = live(ctx, to) {
                let revoked = ctx
                    .plane
                    .shortcuts
                    .borrow_mut()
                    .revoke(c.session.link_ref, &name);
                if revoked && !c.manifest_due() {
                    manifest::send(ctx, &c, "shortcut_revoked");
                }
            }
        }
        PushMsg::CallClient {
            to,
            reply_to,
            timeout_ms,
            payload,
        } => client_rpc::call_client(ctx, to, reply_to, timeout_ms, payload),
        PushMsg::ClientAnswer {
            service,
            call,
            code,
            payload,
        } => client_rpc::deliver_answer(ctx, &service, call, code, &payload),
        PushMsg::Resume(h) => super::resume::adopt(ctx, *h),
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
        manifest_version: s.manifest_version.get().into(),
        outbox_bytes: c.outbox.borrow().len(),
        connected: !c.is_parked(),
    }
}
