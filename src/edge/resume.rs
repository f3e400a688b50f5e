//! Resuming a session: a client presenting its reconnection token gets its session
//! back — same session id, GUIDs and peer GUID, subscriptions and shortcuts — with the
//! events that arrived while it was away, on a new connection (docs/DESIGN.md §7).
//!
//! Why the connection moves to the session and not the session to the connection: a
//! session is reached through its place in its shard (topics, the directory, peer
//! GUIDs, backends' pushes all name it), and moving that state across threads while
//! pushes keep arriving would lose or reorder some. A socket is one descriptor: the
//! shard that accepted the client hands it to the session's shard (`PushMsg::Resume`),
//! which swaps a new handle into the session's place in one step of its own thread.

use std::os::fd::AsRawFd;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use monoio::net::TcpStream;

use crate::admission::Permit;
use crate::metrics::{bump, HandshakeResult};
use crate::proto::handshake;
use crate::proto::resume::ResumePlace;
use crate::push::{Handover, PushMsg, ResumeBy};
use crate::rt::sys;
use crate::rt::task::{spawn_isolated, unix_now};
use crate::session::SessionRef;
use crate::shard::ShardCtx;
use crate::tls::{TlsSession, Wire};

use super::{conn, manifest};

/// A client's connection arriving to resume a session, with all that moves with it.
pub struct Arrival {
    pub stream: TcpStream,
    /// Its TLS session (`wss://`), handshake done.
    pub tls: Option<Box<TlsSession>>,
    /// The `101` answering its upgrade request.
    pub response: Bytes,
    /// Bytes it sent after its upgrade request.
    pub leftover: BytesMut,
    /// Its place under the admission limits.
    pub permit: Permit,
    /// What it resumes with.
    pub by: ResumeBy,
}

/// After the upgrade request of a client naming the session at `place` (its
/// reconnection token, or a bearer token with the session's id) was accepted: resumes
/// the session here if it is this shard's, else hands the connection (with its
/// admission permit) to the shard that holds it.
pub fn start(ctx: Rc<ShardCtx>, place: ResumePlace, mut a: Arrival) {
    if usize::from(place.shard) == ctx.id {
        attach(ctx, place, a);
        return;
    }
    if usize::from(place.shard) >= ctx.plane.hub.shards() {
        refuse(&ctx, a, "reconnect token names no shard of this gateway");
        return;
    }
    match sys::dup(a.stream.as_raw_fd()) {
        Ok(fd) => {
            bump(&ctx.metrics.resume_handovers, 1);
            ctx.plane.hub.post(
                place.shard,
                PushMsg::Resume(Box::new(Handover {
                    fd,
                    tls: a.tls,
                    place,
                    response: a.response,
                    leftover: a.leftover.freeze(),
                    permit: a.permit,
                    by: a.by,
                })),
            )
        }
        Err(e) => {
            tracing::warn!(shard = ctx.id, error = %e, "resume: cannot hand the connection to its session's shard");
            ctx.metrics.handshake(HandshakeResult::Unavailable);
            let resp = handshake::error_response(503, "cannot resume now");
            let mut wire = Wire::new(a.stream.as_raw_fd(), a.tls.as_deref_mut());
            let _ = wire.send_vectored(&[&resp]);
            wire.shutdown_write();
        }
    }
    // This shard's descriptor closes with `stream`; the session's shard holds its own.
}

/// A connection handed over by another shard (`PushMsg::Resume`).
pub fn adopt(ctx: &Rc<ShardCtx>, h: Handover) {
    let std = std::net::TcpStream::from(h.fd);
    match TcpStream::from_std(std) {
        Ok(stream) => attach(
            ctx.clone(),
            h.place,
            Arrival {
                stream,
                tls: h.tls,
                response: h.response,
                leftover: BytesMut::from(&h.leftover[..]),
                permit: h.permit,
                by: h.by,
            },
        ),
        Err(e) => {
            tracing::warn!(shard = ctx.id, error = %e, "resume: cannot take over a handed connection");
        }
    }
}

/// Resumes the session at `place` (on this shard) on the arriving connection, or
/// refuses it (`refuse`).
fn attach(ctx: Rc<ShardCtx>, place: ResumePlace, a: Arrival) {
    let at = SessionRef {
        slot: place.slot,
        generation: place.generation,
    };
    let unix = unix_now().as_secs();
    let old = ctx.plane.sessions.get(at);
    let why = match (&old, &a.by) {
        (None, _) => Some("its session has ended"),
        (Some(c), ResumeBy::Token) if c.session.life != place.life => {
            Some("the token was used already")
        }
        (Some(c), ResumeBy::Bearer { session_id, .. }) if c.session.session_id != *session_id => {
            Some("its session has ended")
        }
        (Some(c), _) if c.is_final() || c.is_superseded() => Some("its session has ended"),
        (Some(c), ResumeBy::Token) if c.session.expires_at().is_some_and(|exp| unix >= exp) => {
            Some("its session's token expired")
        }
        (Some(_), _) => None,
    };
    let (Some(old), None) = (old, why) else {
        refuse(&ctx, a, why.unwrap_or("unknown"));
        return;
    };
    let was_parked = old.is_parked();
    old.supersede();
    let (missed, lost) = old.take_missed();
    if was_parked {
        ctx.metrics
            .sessions_parked
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
    let session = match &a.by {
        ResumeBy::Token => old.session.successor(),
        // The new bearer token's expiry (its signature and claims were checked).
        ResumeBy::Bearer { expires_at, .. } => old.session.successor().until(*expires_at),
    };
    let new = ctx.new_handle(session);
    if ctx.plane.replace(at, &new).is_none() {
        // (Never: the session was found above, on this thread, with nothing between.)
        refuse(&ctx, a, "its session has ended");
        return;
    }
    let Arrival {
        stream,
        tls,
        response,
        leftover,
        permit,
        ..
    } = a;
    new.set_tls(tls);
    {
        let mut out = new.outbox.borrow_mut();
        out.push_bytes(response);
        out.keep_queued();
    }
    // The manifest first (a new token, and how many events were dropped), then what
    // arrived while the client was away, in order, then whatever comes next.
    manifest::send_resumed(&ctx, &new, lost);
    for frame in missed {
        new.outbox.borrow_mut().push_shared(frame);
    }
    ctx.metrics.handshake(HandshakeResult::Ok);
    bump(&ctx.metrics.resumes, 1);
    ctx.connection_resumed(&new);
    tracing::debug!(shard = ctx.id, session = %new.session.session_id, life = new.session.life, took_over = !was_parked, lost, "session resumed");
    spawn_isolated(
        "connection",
        conn::run(ctx, stream, new, leftover, None, permit),
    );
}

/// Answers an arrival whose session cannot be resumed (logged with why): 401 for a
/// reconnection token; 503 for a bearer token (it is valid, and its session ended just
/// now: connecting again starts a new one).
fn refuse(ctx: &ShardCtx, mut a: Arrival, why: &str) {
    let (status, message) = match a.by {
        ResumeBy::Token => (401, "reconnect token not valid"),
        ResumeBy::Bearer { .. } => (503, "session ended; connect again"),
    };
    tracing::info!(
        shard = ctx.id,
        reason = why,
        status,
        "upgrade refused (resume)"
    );
    ctx.metrics.handshake(HandshakeResult::from_status(status));
    bump(&ctx.metrics.resumes_refused, 1);
    let resp = handshake::error_response(status, message);
    let mut wire = Wire::new(a.stream.as_raw_fd(), a.tls.as_deref_mut());
    let _ = wire.send_vectored(&[&resp]);
    wire.shutdown_write();
}
