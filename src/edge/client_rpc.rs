//! Service → client RPC (`../shared/BANNOU.md` §3): a backend's request to a client,
//! sent as a request frame; the client's response frame (0x40, same message id) goes
//! back to that backend as CLIENT_ANSWER on its link. No answer within the timeout:
//! the backend is told 60; the client gone: 31.
//!
//! Why in the edge: the request goes out on the client's connection and the answer
//! comes in on it, through the dispatch (`client_answered`), so both ends of the call
//! are the connection's shard's; the origin link may be on another shard, reached
//! through the hub.

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;

use crate::proto::bannou::RESPONSE_HEADER_LEN;
use crate::proto::bannou::{flags, RequestHeader, ResponseCode, ResponseHeader};
use crate::push::frame::message_frame;
use crate::push::ClientCall;
use crate::rt::task::spawn_isolated;
use crate::session::{ConnShared, SessionRef};
use crate::shard::ShardCtx;
use crate::upstream::Backend;

/// Sends a backend's request to the client at `to` and waits (a timer task) for its
/// answer.
pub fn call_client(
    ctx: &Rc<ShardCtx>,
    to: SessionRef,
    reply_to: ClientCall,
    timeout_ms: u32,
    payload: Bytes,
) {
    let Some(c) = ctx
        .plane
        .sessions
        .get(to)
        // A client that is away (its session parked) cannot answer: 31 at once.
        .filter(|c| !c.is_gone() && !c.closing() && !c.is_parked())
    else {
        ctx.plane
            .answer_call(reply_to, ResponseCode::ClientNotFound.as_u8(), Bytes::new());
        return;
    };
    let message_id = ctx.next_push_id();
    let head = RequestHeader {
        // As Bannou sends it: flag 0x01, channel 0, sequence 0, no GUID.
        flags: flags::BINARY,
        channel: 0,
        sequence: 0,
        guid: [0; 16],
        message_id,
    };
    let session = c.session.link_ref;
    ctx.plane
        .client_calls
        .borrow_mut()
        .insert(session, message_id, reply_to);
    c.send_frame(message_frame(&head.encode(), &payload));
    let ctx = ctx.clone();
    spawn_isolated("client call timeout", async move {
        monoio::time::sleep(Duration::from_millis(timeout_ms.max(1) as u64)).await;
        let gone = ctx
            .plane
            .client_calls
            .borrow_mut()
            .take(session, message_id);
        if let Some(call) = gone {
            ctx.plane
                .answer_call(call, ResponseCode::InternalError.as_u8(), Bytes::new());
        }
    });
}

/// A response frame (flag 0x40) from a client: if it answers a backend's call, the
/// answer goes back to that backend and this returns true; otherwise false (the
/// dispatch answers it as a bad request, as before).
pub fn client_answered(ctx: &ShardCtx, shared: &ConnShared, message: &Bytes) -> bool {
    let Ok(h) = ResponseHeader::decode(message) else {
        return false;
    };
    let call = ctx
        .plane
        .client_calls
        .borrow_mut()
        .take(shared.session.link_ref, h.message_id);
    match call {
        Some(call) => {
            ctx.plane
                .answer_call(call, h.code, message.slice(RESPONSE_HEADER_LEN..));
            true
        }
        None => false,
    }
}

/// A client's answer arrived for a call made by this shard's link to `service`.
pub fn deliver_answer(ctx: &ShardCtx, service: &str, call: u64, code: u8, payload: &[u8]) {
    let services = ctx.services.borrow();
    let link = services.iter().find_map(|s| match &s.backend {
        Backend::Link(l) if &*s.meter.name == service => Some(l.clone()),
        _ => None,
    });
    drop(services);
    match link {
        Some(l) => l.client_answer(call, code, payload),
        None => {
            tracing::debug!(
                shard = ctx.id,
                service,
                call,
                "client answer for a service no longer linked; dropped"
            )
        }
    }
}
