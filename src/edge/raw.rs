//! Raw routes at the edge (seed 003, docs/LINK.md "Raw routes"): an upgrade path of
//! its own where clients speak plain WebSocket messages — text or binary, no Bannou
//! header — each relayed to the route's link service as a MESSAGE event, with RAW_OPEN
//! and CLOSED around them; the backend answers with SEND and CLOSE.
//!
//! Why the same connection task as Bannou clients (`edge::conn`), with a route: the
//! upgrade, authentication, framing, backpressure, rate limit, pings and close are
//! the same; only what a message becomes differs. One connection per user per route:
//! a newer one replaces the older (the seed's rule: a player plays one game from one
//! device), which the gateway-wide map in the hub enforces across shards.

use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;

use crate::push::PushMsg;
use crate::session::ConnShared;
use crate::shard::ShardCtx;
use crate::upstream::link::Link;
use crate::upstream::Backend;

/// The raw route a connection came in on.
#[derive(Debug, Clone)]
pub struct RawRoute {
    pub path: Arc<str>,
    /// The link service its messages go to.
    pub service: Arc<str>,
}

/// Close code for a raw route's client whose backend cannot take its messages.
const CLOSE_UNAVAILABLE: u16 = 1011;

/// This shard's link to `service`, if the service is a link service.
pub fn link(ctx: &ShardCtx, service: &str) -> Option<Link> {
    let i = ctx
        .registry
        .borrow()
        .services
        .iter()
        .position(|s| &*s.name == service)?;
    match &ctx.services.borrow().get(i)?.backend {
        Backend::Link(l) => Some(l.clone()),
        _ => None,
    }
}

/// A raw route's client was upgraded: it takes its place in the shard (no directory
/// entry: pushes by session or user are Bannou frames, not for it), the backend is
/// told (RAW_OPEN), and an older connection of the same user on the route is closed.
/// If the backend's link went down meanwhile, the client is closed (1011).
pub fn open(ctx: &ShardCtx, c: &Rc<ConnShared>, route: &RawRoute) {
    ctx.add_raw(c.clone());
    let told = link(ctx, &route.service).is_some_and(|l| l.raw_opened(c, &route.path));
    if !told {
        c.request_final_close(CLOSE_UNAVAILABLE, "service unavailable");
        return;
    }
    let hub = &ctx.plane.hub;
    let me = ctx.plane.loc(c.at());
    if let Some(older) = hub.directory.claim_raw(&route.path, user(c), me) {
        hub.post(
            older.shard,
            PushMsg::Close {
                to: older.at,
                code: crate::proto::frame::CLOSE_NORMAL,
                reason: "replaced by a newer connection".into(),
            },
        );
    }
}

/// A raw route's client sent a message: it goes to the backend as MESSAGE. False if
/// the backend cannot take it now (its link is down): the client is closed (1011).
pub fn message(
    ctx: &ShardCtx,
    c: &ConnShared,
    route: &RawRoute,
    binary: bool,
    payload: &Bytes,
) -> bool {
    let sent = link(ctx, &route.service)
        .is_some_and(|l| l.raw_message(c.session.link_ref, binary, payload));
    if !sent {
        c.request_final_close(CLOSE_UNAVAILABLE, "service unavailable");
    }
    sent
}

/// A raw route's connection ended: it gives up its claim on the route.
pub fn closed(ctx: &ShardCtx, c: &ConnShared, route: &RawRoute) {
    ctx.plane
        .hub
        .directory
        .release_raw(&route.path, user(c), ctx.plane.loc(c.at()));
}

/// Who "one connection per user" counts: the account, else the session id.
fn user(c: &ConnShared) -> &str {
    let s = &c.session;
    s.account_id.as_deref().unwrap_or(&s.session_id)
}
