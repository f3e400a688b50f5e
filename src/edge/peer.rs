//! Client-to-client messages (flag 0x20): to one peer connection by its peer GUID, or
//! to everyone by the all-FF GUID (a broadcast), as Bannou routes them
//! (`../shared/BANNOU.md` §3, docs/DESIGN.md §2).
//!
//! Why no global table: a peer GUID is the sealed `(shard, slot, generation)` of its
//! connection under the gateway-wide peer key, so any shard opens it, posts the frame
//! to the target shard's inbox, and a stale generation misses there. The recipient gets
//! the sender's frame unchanged; a sender that wants an answer (no 0x10) gets code 0
//! once it is queued for the peer, or 31 if the peer is gone — said by the target
//! shard, which is the only one that knows.

use std::rc::Rc;

use bytes::Bytes;

use crate::proto::bannou::{flags, RequestHeader, ResponseCode, ResponseHeader};
use crate::proto::guid::{format_guid, GuidTarget};
use crate::push::frame::{message_frame, response_frame};
use crate::push::{Followup, PushMsg};
use crate::session::{ConnShared, SessionRef};
use crate::shard::ShardCtx;

use super::answer::answer_error;

/// The broadcast GUID.
pub const BROADCAST_GUID: [u8; 16] = [0xFF; 16];

/// Routes a peer message or a broadcast (`header.flags` has 0x20); `message` is the
/// whole client message (header and payload).
pub fn route(ctx: &ShardCtx, shared: &Rc<ConnShared>, header: &RequestHeader, message: Bytes) {
    if header.guid == BROADCAST_GUID {
        return broadcast(ctx, shared, header, &message);
    }
    let (shard, to) = match ctx.peer_key.open(&header.guid) {
        Some(GuidTarget::Peer {
            shard,
            slot,
            generation,
        }) if (shard as usize) < ctx.plane.hub.shards() => (shard, SessionRef { slot, generation }),
        _ => {
            answer_error(shared, header, ResponseCode::ClientNotFound);
            return;
        }
    };
    let wants_answer = header.flags & flags::EVENT == 0;
    let delivered = wants_answer.then(|| {
        let body = format!(
            "{{\"Status\":\"delivered\",\"TargetPeerGuid\":\"{}\",\"OriginalMessageId\":{}}}",
            format_guid(&header.guid),
            header.message_id
        );
        response_frame(
            &ResponseHeader::answering(header, ResponseCode::Ok),
            body.as_bytes(),
        )
    });
    let missed = wants_answer.then(|| {
        response_frame(
            &ResponseHeader::answering(header, ResponseCode::ClientNotFound),
            &[],
        )
    });
    ctx.plane.hub.post(
        shard,
        PushMsg::Deliver {
            to,
            frame: message_frame(&message, &[]),
            then: Some(Followup {
                shard: ctx.id as u16,
                to: shared.at(),
                delivered,
                missed,
            }),
        },
    );
}

/// The all-FF GUID: every other session, on every shard, if the sender's roles allow
/// it (`server.broadcast_roles`), else 40. No answer on success (as in Bannou).
fn broadcast(ctx: &ShardCtx, shared: &Rc<ConnShared>, header: &RequestHeader, message: &[u8]) {
    let allowed = &ctx.config.server.broadcast_roles;
    if !shared.session.roles().iter().any(|r| allowed.contains(r)) {
        answer_error(shared, header, ResponseCode::BroadcastNotAllowed);
        return;
    }
    let frame = message_frame(message, &[]);
    for shard in 0..ctx.plane.hub.shards() {
        let except = (shard == ctx.id).then(|| shared.at());
        ctx.plane.hub.post(
            shard as u16,
            PushMsg::Broadcast {
                frame: frame.clone(),
                except,
            },
        );
    }
}
