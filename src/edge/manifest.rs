//! The capability manifest: the endpoints a session's roles permit, each under its
//! salted GUID, sent as a push event.
//!
//! Why apart: it is sent from three places (the handshake, the connection task once
//! the client answers the upgrade's ping, the sweep for a client that never does) and,
//! again whenever the registry changes what a session may call (`resend_changed`) and,
//! with the push plane, when its roles change.

use bytes::Bytes;

use crate::proto::event::{manifest_message, ApiEntry};
use crate::registry::Registry;
use crate::rt::sys;
use crate::rt::task::unix_now;
use crate::session::ConnShared;
use crate::shard::ShardCtx;

/// Queues the session's capability manifest (the endpoints its roles permit).
pub fn send(ctx: &ShardCtx, shared: &ConnShared, reason: &str) {
    let s = &shared.session;
    let reg = ctx.registry.borrow().clone();
    let minter = s.key.minter();
    let apis: Vec<ApiEntry> = callable(&reg, &s.roles)
        .map(|(id, path, service)| ApiEntry::new(&minter.endpoint_guid(id), path, service))
        .collect();
    let version = s.manifest_version.get() + 1;
    s.manifest_version.set(version);
    let msg = manifest_message(
        ctx.next_push_id(),
        &s.session_id,
        &apis,
        version,
        reason,
        &sys::random_bytes(),
        unix_now().as_nanos(),
    );
    let msg = Bytes::from(msg);
    shared.send_binary(&[], msg);
}

/// After a registry update (`old` → the shard's current one): a new manifest, with the
/// next version, to every session whose callable endpoints changed (added, removed,
/// or renamed); the GUIDs of endpoints it keeps stay the same (they derive from the
/// session key and the stable endpoint id). Sessions still owed their first manifest
/// get it as usual. Returns how many were sent.
pub fn resend_changed(ctx: &ShardCtx, old: &Registry, reason: &str) -> usize {
    let new = ctx.registry.borrow().clone();
    let mut sent = 0;
    for c in ctx.sessions.all() {
        let s = &c.session;
        if c.manifest_due() || c.is_gone() || c.closing() {
            continue;
        }
        // Compared in place (no copies, no reference counts touched): a reload walks
        // every session of the shard.
        if !callable(old, &s.roles).eq(callable(&new, &s.roles)) {
            send(ctx, &c, reason);
            sent += 1;
        }
    }
    sent
}

/// What a session with `roles` may call in `reg`, as its manifest shows it.
fn callable<'a>(
    reg: &'a Registry,
    roles: &'a [String],
) -> impl Iterator<Item = (u32, &'a str, &'a str)> + 'a {
    reg.visible(roles)
        .map(move |e| (e.id, &*e.path, &*reg.services[e.service].name))
}
