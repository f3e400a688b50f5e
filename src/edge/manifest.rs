//! The capability manifest: the endpoints a session's roles permit, each under its
//! salted GUID, sent as a push event.
//!
//! Why apart: it is sent from three places (the handshake, the connection task once
//! the client answers the upgrade's ping, the sweep for a client that never does) and,
//! with the push plane, again whenever a session's roles or the registry change.

use bytes::Bytes;

use crate::proto::event::{manifest_message, ApiEntry};
use crate::rt::sys;
use crate::rt::task::unix_now;
use crate::session::ConnShared;
use crate::shard::ShardCtx;

/// Queues the session's capability manifest (the endpoints its roles permit).
pub fn send(ctx: &ShardCtx, shared: &ConnShared, reason: &str) {
    let s = &shared.session;
    let reg = ctx.registry.borrow().clone();
    let minter = s.key.minter();
    let apis: Vec<ApiEntry> = reg
        .visible(&s.roles)
        .map(|e| {
            ApiEntry::new(
                &minter.endpoint_guid(e.id),
                &e.path,
                &reg.services[e.service].name,
            )
        })
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
