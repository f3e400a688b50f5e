//! Routing a client's binary request: header checks, GUID → endpoint, channel ordering,
//! the call to the backend (HTTP pool or backend link), and the response back into the
//! client's outbox.
//!
//! Why apart from `conn`: this is the Bannou Connect request semantics (docs/DESIGN.md §2, §5) —
//! which code answers which situation, that channel 0 runs requests concurrently while
//! a channel c > 0 runs them one at a time in arrival order, and that the payload is
//! forwarded without being parsed or copied (`payload` is a slice of the client's frame).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use bytes::Bytes;

use super::answer::answer_error;
use crate::proto::bannou::{flags, MetaKind, RequestHeader, ResponseCode, REQUEST_HEADER_LEN};
use crate::proto::guid::GuidTarget;
use crate::proto::http1;
use crate::registry::Action;
use crate::rt::clock;
use crate::rt::task::spawn_isolated;
use crate::session::ConnShared;
use crate::shard::ShardCtx;
use crate::upstream::http::BackendRequest;
use crate::upstream::link::LinkRequest;
use crate::upstream::{answer, Backend, BackendError, Done, Reply, ServiceRuntime};

/// A request accepted for forwarding.
#[derive(Debug)]
pub struct Queued {
    header: RequestHeader,
    service: Rc<ServiceRuntime>,
    method: &'static str,
    /// The endpoint's path (the shard's copy, `ShardCtx::paths`), or a meta path.
    path: Rc<str>,
    /// The whole client message; the payload is `message[31..]`.
    message: Bytes,
}

/// A connection's ordered channels with a request in flight, and the requests waiting
/// behind each, in arrival order. The queues are made at the connection's first
/// ordered request (an idle connection holds none) and shared with the channels' tasks;
/// they are cleared when the connection task drops them. Eight bytes in the task.
#[derive(Default)]
pub struct Channels(Option<Rc<ChannelQueues>>);

type ChannelQueues = RefCell<Vec<(u16, VecDeque<Queued>)>>;

impl Channels {
    fn queues(&mut self) -> Rc<ChannelQueues> {
        self.0.get_or_insert_with(Rc::default).clone()
    }
}

impl Drop for Channels {
    /// The connection ended (also by a panic): the requests still waiting are dropped,
    /// and the channels' tasks find their queues gone.
    fn drop(&mut self) {
        if let Some(q) = &self.0 {
            if let Ok(mut q) = q.try_borrow_mut() {
                q.clear();
            }
        }
    }
}

/// Handles one binary message from a client. `allowed` is the rate limiter's verdict.
pub fn handle_request(
    ctx: &Rc<ShardCtx>,
    shared: &Rc<ConnShared>,
    channels: &mut Channels,
    message: Bytes,
    allowed: bool,
) {
    if message.first().is_some_and(|f| f & flags::RESPONSE != 0)
        && super::client_rpc::client_answered(ctx, shared, &message)
    {
        // A client's answer (16-byte response header) to a backend's call.
        return;
    }
    let header = match RequestHeader::decode(&message) {
        Ok(h) => h,
        Err(e) => {
            // Echo what the client sent of the header, zero-filled.
            let mut raw = [0u8; REQUEST_HEADER_LEN];
            raw[..message.len()].copy_from_slice(&message);
            let h = RequestHeader::decode(&raw).expect("full length");
            tracing::debug!(shard = ctx.id, error = %e, "bad request header");
            answer_error(
                shared,
                &RequestHeader {
                    flags: h.flags & !flags::EVENT,
                    ..h
                },
                ResponseCode::RequestError,
            );
            return;
        }
    };
    if let Err(e) = header.check_client_flags() {
        tracing::debug!(shard = ctx.id, error = %e, "bad request flags");
        let h = RequestHeader {
            flags: header.flags & !(flags::RESPONSE | flags::EVENT),
            ..header
        };
        answer_error(shared, &h, ResponseCode::RequestError);
        return;
    }
    if !allowed {
        crate::metrics::bump(&ctx.metrics.rate_limited, 1);
        answer_error(shared, &header, ResponseCode::TooManyRequests);
        return;
    }
    if header.flags & flags::CLIENT != 0 {
        // To another client (or everyone): no endpoint, no backend.
        super::peer::route(ctx, shared, &header, message);
        return;
    }
    if header.guid == super::peer::BROADCAST_GUID {
        // The broadcast GUID without 0x20 (as Bannou answers it).
        answer_error(shared, &header, ResponseCode::RequestError);
        return;
    }
    let meta = header.flags & flags::META != 0;
    if !meta && header.channel > ctx.config.server.max_channels {
        answer_error(shared, &header, ResponseCode::InvalidChannel);
        return;
    }
    let target = ctx
        .guid_cache
        .borrow_mut()
        .open(&shared.session.key, &header.guid);
    let (endpoint_id, message) = match target {
        Some(GuidTarget::Endpoint(id)) => (id, message),
        Some(GuidTarget::Shortcut(id)) => match shortcut(ctx, shared, id, &message) {
            Ok(routed) => routed,
            Err(code) => {
                answer_error(shared, &header, code);
                return;
            }
        },
        // (Peer GUIDs are sealed under the peer key: under a session's own key they
        // open to nothing. Peer messages took the branch above.)
        Some(GuidTarget::Peer { .. }) | None => {
            answer_error(shared, &header, ResponseCode::ServiceNotFound);
            return;
        }
    };
    // Borrowed, not cloned: an Arc clone and drop per request are two locked
    // instructions on the hot path. Nothing below replaces the registry (only the
    // shard's mailbox task does, between requests).
    let reg = ctx.registry.borrow();
    let Some((index, endpoint)) = reg
        .endpoint_at(endpoint_id)
        .filter(|(_, e)| e.permits(&shared.session.roles()))
    else {
        // Removed since the manifest was sent, or no longer permitted: nothing leaks.
        answer_error(shared, &header, ResponseCode::ServiceNotFound);
        return;
    };
    let service = ctx.services.borrow()[endpoint.service].clone();
    if endpoint.action != Action::Forward {
        let action = endpoint.action.clone();
        drop(reg);
        let code = super::topic::run(ctx, shared, &header, &action, &message);
        service.meter.metrics.response(code);
        return;
    }
    let payload_len = message.len() - REQUEST_HEADER_LEN;
    let is_shortcut = matches!(target, Some(GuidTarget::Shortcut(_)));
    if payload_len == 0 && header.flags & (flags::EVENT | flags::META) == 0 && !is_shortcut {
        service.meter.metrics.response(ResponseCode::RequestError);
        answer_error(shared, &header, ResponseCode::RequestError);
        return;
    }
    if let Some(max) = reg.services[endpoint.service].max_request_bytes {
        if payload_len > max {
            service
                .meter
                .metrics
                .response(ResponseCode::RequestTooLarge);
            answer_error(shared, &header, ResponseCode::RequestTooLarge);
            return;
        }
    }
    let (method, path) = if meta {
        let kind = MetaKind::from_channel(header.channel).unwrap_or(MetaKind::Info);
        (
            "GET",
            Rc::from(format!("{}/meta/{}", endpoint.path, kind.path_suffix())),
        )
    } else {
        ("POST", ctx.paths.borrow()[index].clone())
    };
    drop(reg);
    let q = Queued {
        header,
        service,
        method,
        path,
        message,
    };
    let ordered = !meta && header.channel > 0;
    shared.request_started();
    if !ordered {
        start(ctx, shared, q);
        return;
    }
    let queues = channels.queues();
    {
        let mut queues = queues.borrow_mut();
        if let Some((_, waiting)) = queues.iter_mut().find(|(c, _)| *c == header.channel) {
            waiting.push_back(q);
            return;
        }
        queues.push((header.channel, VecDeque::new()));
    }
    spawn_isolated(
        "ordered channel",
        run_channel(ctx.clone(), shared.clone(), queues, q),
    );
}

/// A shortcut invoked: its target endpoint's id and the message to forward (the
/// client's header, the bound payload), or the code that answers it: revoked 72,
/// expired 70, target gone (or no longer permitted) 71.
fn shortcut(
    ctx: &ShardCtx,
    shared: &ConnShared,
    id: u32,
    message: &Bytes,
) -> Result<(u32, Bytes), ResponseCode> {
    let shortcuts = ctx.plane.shortcuts.borrow();
    let Some(sc) = shortcuts.get(shared.session.link_ref, id) else {
        return Err(ResponseCode::ServiceNotFound);
    };
    if sc.revoked {
        return Err(ResponseCode::ShortcutRevoked);
    }
    if sc.expired(crate::rt::task::unix_now().as_millis() as u64) {
        return Err(ResponseCode::ShortcutExpired);
    }
    let reg = ctx.registry.borrow();
    let Some(target) = reg
        .endpoint_by_path(&sc.target)
        .filter(|e| e.permits(&shared.session.roles()))
    else {
        return Err(ResponseCode::ShortcutTargetNotFound);
    };
    let mut m = bytes::BytesMut::with_capacity(REQUEST_HEADER_LEN + sc.payload.len());
    m.extend_from_slice(&message[..REQUEST_HEADER_LEN]);
    m.extend_from_slice(&sc.payload);
    Ok((target.id, m.freeze()))
}

/// An unordered request (channel 0, meta): started with a callback that answers the
/// client, so it needs no task of its own (`upstream::http::Pool::start`,
/// `upstream::link::Link::start`).
fn start(ctx: &ShardCtx, shared: &Rc<ConnShared>, q: Queued) {
    let reply = Reply {
        shard: ctx.id,
        conn: shared.clone(),
        meter: q.service.meter.clone(),
        header: q.header,
        started: clock::recent_us(),
        path: q.path.clone(),
    };
    match &q.service.backend {
        // A plain value the pool keeps inside its call, the link in its call table:
        // no allocation of its own.
        Backend::Http(pool) => {
            let headers = shared.session.backend_headers();
            match backend_request(shared, &headers, &q) {
                Ok(req) => pool.start(req, Done::Reply(reply)),
                Err(e) => reply.send(Err(e)),
            }
        }
        Backend::Link(link) => link.start(shared, link_request(&q), Done::Reply(reply)),
        Backend::Unavailable(why) => reply.send(Err(Backend::unavailable(why))),
    }
}

/// An ordered channel's task: forwards `first`, then every request queued behind it on
/// its channel, one at a time, until the queue is empty.
async fn run_channel(
    ctx: Rc<ShardCtx>,
    shared: Rc<ConnShared>,
    queues: Rc<ChannelQueues>,
    first: Queued,
) {
    let channel = first.header.channel;
    let mut next = Some(first);
    while let Some(q) = next.take() {
        forward(&ctx, &shared, q).await;
        shared.request_done();
        let mut queues = queues.borrow_mut();
        let Some(i) = queues.iter().position(|(c, _)| *c == channel) else {
            break; // the connection ended and cleared its queues
        };
        match queues[i].1.pop_front() {
            Some(q) => next = Some(q),
            None => {
                queues.swap_remove(i);
            }
        }
    }
}

async fn forward(ctx: &ShardCtx, shared: &Rc<ConnShared>, q: Queued) {
    if shared.is_gone() {
        return;
    }
    let started = clock::recent_us();
    let result = match &q.service.backend {
        Backend::Http(pool) => {
            let headers = shared.session.backend_headers();
            match backend_request(shared, &headers, &q) {
                Ok(req) => pool.call(req).await,
                Err(e) => Err(e),
            }
        }
        Backend::Link(link) => link.call(shared, link_request(&q)).await,
        Backend::Unavailable(why) => Err(Backend::unavailable(why)),
    };
    answer(
        ctx.id,
        shared,
        &q.service.meter,
        &q.header,
        started,
        result,
        Some(&q.path),
    );
}

/// The link request for `q` (the payload is a slice of the client's frame).
fn link_request(q: &Queued) -> LinkRequest<'_> {
    LinkRequest {
        message_id: q.header.message_id,
        flags: q.header.flags,
        path: &q.path,
        payload: &q.message[REQUEST_HEADER_LEN..],
    }
}

/// The backend request for `q`. The session's headers were checked and encoded once, at
/// its first request, down to the correlation id's `{session id}:`; per request only
/// the message id finishes that line and the constant Content-Type/Accept lines are
/// chosen. Fails if the session's headers could not be encoded.
fn backend_request<'a>(
    shared: &ConnShared,
    headers: &'a Result<http1::HeaderBlock, http1::Http1Error>,
    q: &'a Queued,
) -> Result<BackendRequest<'a>, BackendError> {
    let block = headers
        .as_ref()
        .map_err(|e| BackendError::InvalidRequest(e.clone()))?;
    let body = q.message.slice(REQUEST_HEADER_LEN..);
    // Content-Type and Accept are constant lines, never checked per request.
    let fixed = if body.is_empty() {
        &http1::ACCEPT_JSON
    } else if q.header.flags & flags::BINARY != 0 {
        &http1::CONTENT_BINARY
    } else {
        &http1::CONTENT_JSON
    };
    Ok(BackendRequest {
        method: q.method,
        path: &q.path,
        headers: &[],
        fixed,
        block,
        tail_id: q.header.message_id,
        body,
        // One client's requests travel together (see `Pool`'s lane choice).
        affinity: std::ptr::from_ref(shared) as u64 >> 6,
    })
}
