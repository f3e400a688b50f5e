//! The capability manifest: the endpoints a session's roles permit, each under its
//! salted GUID, sent as a push event.
//!
//! Why apart: it is sent from three places (the handshake, the connection task once
//! the client answers the upgrade's ping, the sweep for a client that never does) and,
//! again whenever the registry changes what a session may call (`resend_changed`) and,
//! with the push plane, when its roles change.
//!
//! A reload's new manifests go out a batch at a time, each written to its client as
//! it is made (`resend_changed`): queued all at once they would hold every session's
//! manifest in memory together (the soak's 2,300 clients took ~6 MiB more at each
//! reload; 100k would take ~250 MiB) and keep the shard from everything else while it
//! made them.

use bytes::Bytes;

use crate::proto::event::{manifest_json, ApiEntry, Manifest};
use crate::proto::guid::format_guid;
use crate::push::frame::push_frame;
use crate::registry::Registry;
use crate::rt::sys;
use crate::rt::task::{unix_now, yield_now};
use crate::session::{ConnShared, Queued, SessionRef};
use crate::shard::ShardCtx;

/// How many sessions a reload's walk looks at before it lets the shard's other tasks
/// run (`resend_changed`).
const RESEND_BATCH: usize = 128;

/// Queues the session's capability manifest (the endpoints its roles permit).
pub fn send(ctx: &ShardCtx, shared: &ConnShared, reason: &str) {
    send_with_lost(ctx, shared, reason, 0);
}

/// The manifest a resumed session gets first, saying how many events that arrived
/// while its client was away were dropped.
pub fn send_resumed(ctx: &ShardCtx, shared: &ConnShared, events_lost: u32) {
    send_with_lost(ctx, shared, RESUMED_REASON, events_lost);
}

/// The manifest's `reason` on a resume (Bannou's Permission service sends the same).
pub const RESUMED_REASON: &str = "session_reconnected";

fn send_with_lost(ctx: &ShardCtx, shared: &ConnShared, reason: &str, events_lost: u32) {
    if let Some(frame) = frame(ctx, shared, reason, events_lost) {
        shared.send_frame(frame);
    }
}

/// The session's manifest as one complete WebSocket frame, with the next version;
/// `None` while it is parked.
fn frame(ctx: &ShardCtx, shared: &ConnShared, reason: &str, events_lost: u32) -> Option<Bytes> {
    if shared.is_parked() {
        // The client is away: the manifest of its resume will show the session as it
        // is then (a manifest kept for it would arrive after that one, and be older).
        return None;
    }
    let s = &shared.session;
    let reg = ctx.registry.borrow().clone();
    let minter = s.key.minter();
    let mut apis: Vec<ApiEntry> = callable(&reg, &s.roles())
        .map(|(id, path, service)| ApiEntry::new(&minter.endpoint_guid(id), path, service))
        .collect();
    // The session's shortcuts, as Bannou lists them: service `shortcut`, endpoint = name.
    apis.extend(
        ctx.plane
            .shortcuts
            .borrow()
            .listed(s.link_ref)
            .map(|sc| ApiEntry::new(&minter.shortcut_guid(sc.id), &sc.name, "shortcut")),
    );
    let version = s.manifest_version.get().saturating_add(1);
    s.manifest_version.set(version);
    let at = shared.at();
    let peer = (at != SessionRef::NONE).then(|| {
        ctx.peer_key
            .peer_guid(ctx.id as u16, at.slot, at.generation)
    });
    let mut m = Manifest::new(
        &s.session_id,
        &apis,
        version.into(),
        reason,
        &sys::random_bytes(),
        unix_now().as_nanos(),
    );
    m.peer_guid = peer.as_ref().map(format_guid);
    m.reconnection_token = shared.reconnection_token();
    m.events_lost = u64::from(events_lost);
    Some(push_frame(ctx.next_push_id(), false, &manifest_json(&m)))
}

/// After a registry update (`old` → the shard's current one): a new manifest, with the
/// next version, to every session whose callable endpoints changed (added, removed,
/// or renamed); the GUIDs of endpoints it keeps stay the same (they derive from the
/// session key and the stable endpoint id). Sessions still owed their first manifest
/// get it as usual. Returns how many were sent.
///
/// Each manifest is written to its client as soon as it is made, as the push inbox
/// writes (what the socket does not take waits in the outbox, its task woken), and the
/// walk yields every `RESEND_BATCH` sessions: what a reload holds at once is one
/// batch's unsent manifests, not one per session of the shard.
pub async fn resend_changed(ctx: &ShardCtx, old: &Registry, reason: &str) -> usize {
    let new = ctx.registry.borrow().clone();
    let mut sent = 0;
    for (i, c) in ctx.plane.sessions.all().into_iter().enumerate() {
        if i > 0 && i % RESEND_BATCH == 0 {
            yield_now().await;
        }
        let s = &c.session;
        if c.manifest_due() || c.is_gone() || c.closing() {
            continue;
        }
        // Compared in place (no copies, no reference counts touched): a reload walks
        // every session of the shard.
        let roles = s.roles();
        if callable(old, &roles).eq(callable(&new, &roles)) {
            continue;
        }
        drop(roles);
        let Some(frame) = frame(ctx, &c, reason, 0) else {
            continue;
        };
        if c.queue_pushed(frame, None) == Queued::FlushLater {
            c.flush_now();
        }
        sent += 1;
    }
    sent
}

/// After a role change (`before` → the session's roles now): a new manifest, with
/// the next version, if what the session may call changed. Returns whether one was
/// sent.
pub fn resend_if_changed(ctx: &ShardCtx, c: &ConnShared, before: &[String], reason: &str) -> bool {
    if c.manifest_due() || c.is_gone() || c.closing() {
        return false; // the first manifest, still owed, will show the new roles
    }
    let reg = ctx.registry.borrow().clone();
    let roles = c.session.roles();
    if callable(&reg, before).eq(callable(&reg, &roles)) {
        return false;
    }
    drop(roles);
    send(ctx, c, reason);
    true
}

/// What a session with `roles` may call in `reg`, as its manifest shows it.
fn callable<'a>(
    reg: &'a Registry,
    roles: &'a [String],
) -> impl Iterator<Item = (u32, &'a str, &'a str)> + 'a {
    reg.visible(roles)
        .map(move |e| (e.id, &*e.path, &*reg.services[e.service].name))
}
