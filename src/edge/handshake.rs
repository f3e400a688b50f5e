//! The upgrade: read and check the HTTP request, authenticate it, build the session,
//! and queue the `101` (and the ping the manifest waits on, or the manifest).
//!
//! Why its own task and file: the handshake holds a timer (`handshake_timeout_ms`) and
//! parse state a parked connection must not keep, so it runs as a short task of its
//! own and hands the upgraded connection to `edge::conn`. Everything that can refuse a
//! client (404/405/400/426/431, 403 origin, 401 token, 503 draining, 408 too slow, and
//! the admission limits' 503 and 429) answers here, before any session exists.

use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use monoio::net::TcpStream;

use crate::admission::{Permit, Refusal};
use crate::auth::Identity;
use crate::metrics::{bump, HandshakeResult};
use crate::proto::guid::SessionKey;
use crate::proto::handshake::{
    self, parse_upgrade_for, Credential, HandshakeError, UpgradeRequest,
};
use crate::proto::resume::ResumePlace;
use crate::proto::ws;
use crate::push::{PushMsg, ResumeBy, Target};
use crate::rt::sys::{self, Nb};
use crate::rt::task::{spawn_isolated, unix_now};
use crate::session::{ConnShared, Session};
use crate::shard::ShardCtx;
use crate::tls::{TlsSession, Wire};

use super::raw::{self, RawRoute};
use super::{conn, resume};

/// Why a handshake ended without an upgrade.
enum HandshakeFail {
    /// Answer with this HTTP error response.
    Reject(HandshakeResult, Bytes),
    /// The peer went away or the socket failed: nothing to answer.
    Gone,
    /// The TLS handshake failed (rustls sent the peer its alert).
    Tls,
}

/// How long a connection refused by the admission limits may take to send its request
/// head before it is answered anyway (at most `handshake_timeout_ms`).
const REFUSE_WAIT: Duration = Duration::from_secs(1);

/// Answers a connection the admission limits refused (`why`) with 503 or 429, once
/// its request head has arrived (or `REFUSE_WAIT` passed): answering and closing with
/// the request unread would reset the connection, and the client could lose the
/// answer. Nothing of the request is parsed or kept; the wait is short, and holds no
/// place under the limits.
pub async fn refuse(ctx: Rc<ShardCtx>, stream: TcpStream, why: Refusal) {
    let wait = REFUSE_WAIT.min(Duration::from_millis(
        ctx.config.server.handshake_timeout_ms,
    ));
    let max_head = ctx.config.server.max_handshake_bytes;
    let Ok(mut tls) = new_tls(&ctx) else {
        return;
    };
    let waited = monoio::time::timeout(wait, async {
        if let Some(t) = tls.as_deref_mut() {
            crate::tls::handshake(t, &stream).await?;
        }
        skip_head(&stream, tls.as_deref_mut(), max_head).await;
        std::io::Result::Ok(())
    })
    .await;
    ctx.metrics.handshake(why.result());
    if matches!(waited, Ok(Err(_))) {
        return; // (The TLS handshake failed: nothing can be answered.)
    }
    let response = handshake::error_response(why.status(), why.message());
    answer(stream.as_raw_fd(), tls.as_deref_mut(), &response);
}

/// A new connection's TLS session if the listener serves TLS; `Err` (logged) if
/// rustls cannot make one.
fn new_tls(ctx: &ShardCtx) -> Result<Option<Box<TlsSession>>, ()> {
    let Some(config) = &ctx.tls else {
        return Ok(None);
    };
    match TlsSession::server(config) {
        Ok(t) => Ok(Some(Box::new(t))),
        Err(e) => {
            tracing::warn!(shard = ctx.id, error = %e, "TLS session not created");
            Err(())
        }
    }
}

/// Writes an HTTP answer (through TLS, if any) and ends what the gateway sends.
fn answer(fd: RawFd, tls: Option<&mut TlsSession>, response: &[u8]) {
    let mut wire = Wire::new(fd, tls);
    let _ = wire.send_vectored(&[response]);
    wire.shutdown_write();
}

/// Reads and drops bytes until the end of a request head (an empty line), the end of
/// the stream, or `max` bytes.
async fn skip_head(stream: &TcpStream, mut tls: Option<&mut TlsSession>, max: usize) {
    let fd = stream.as_raw_fd();
    let mut buf = BytesMut::with_capacity(512);
    let mut seen = 0;
    // The last bytes of the previous read, so that an empty line split between two
    // reads is found.
    let mut tail = [0u8; 3];
    while seen < max {
        buf.clear();
        match Wire::new(fd, tls.as_deref_mut()).recv_into(&mut buf) {
            Ok(Nb::Done(0)) | Err(_) => return,
            Ok(Nb::Done(n)) => seen += n,
            Ok(Nb::WouldBlock) => {
                if stream.readable(false).await.is_err() {
                    return;
                }
                continue;
            }
        }
        let mut window = tail.to_vec();
        window.extend_from_slice(&buf);
        if window.windows(4).any(|w| w == b"\r\n\r\n") {
            return;
        }
        let k = window.len();
        tail.copy_from_slice(&window[k - 3..]);
    }
}

/// Serves one accepted connection to its end; `permit` is its place under the
/// admission limits, held as long as the connection (handed on with it). With TLS,
/// the TLS handshake comes first, within the same `handshake_timeout_ms`.
pub async fn serve(ctx: Rc<ShardCtx>, stream: TcpStream, permit: Permit) {
    let fd = stream.as_raw_fd();
    let Ok(mut tls) = new_tls(&ctx) else {
        return;
    };
    let timeout = Duration::from_millis(ctx.config.server.handshake_timeout_ms);
    let done = monoio::time::timeout(timeout, async {
        if let Some(t) = tls.as_deref_mut() {
            if let Err(e) = crate::tls::handshake(t, &stream).await {
                tracing::debug!(shard = ctx.id, error = %e, "TLS handshake failed");
                return Err(HandshakeFail::Tls);
            }
        }
        handshake(&ctx, &stream, tls.as_deref_mut()).await
    })
    .await;
    let upgraded = match done {
        Ok(Ok(v)) => v,
        Ok(Err(HandshakeFail::Reject(result, response))) => {
            ctx.metrics.handshake(result);
            answer(fd, tls.as_deref_mut(), &response);
            return;
        }
        Ok(Err(HandshakeFail::Gone)) => {
            ctx.metrics.handshake(HandshakeResult::Closed);
            return;
        }
        Ok(Err(HandshakeFail::Tls)) => {
            ctx.metrics.handshake(HandshakeResult::TlsFailed);
            return;
        }
        Err(_) => {
            ctx.metrics.handshake(HandshakeResult::Timeout);
            let resp = handshake::error_response(408, "handshake timed out");
            let _ = Wire::new(fd, tls.as_deref_mut()).send_vectored(&[&resp]);
            return;
        }
    };
    match upgraded {
        Upgraded::New(shared, leftover, sid_claimed) => {
            ctx.metrics.handshake(HandshakeResult::Ok);
            if sid_claimed {
                supersede_same_session(&ctx, &shared);
            }
            shared.set_tls(tls);
            ctx.add_session(shared.clone());
            // The session runs as a task of its own: this handshake task (with its
            // timer and parse state) ends here, so a parked idle connection holds
            // only what `session` needs.
            spawn_isolated(
                "connection",
                conn::run(ctx, stream, shared, leftover, None, permit),
            );
        }
        Upgraded::Raw(shared, leftover, route) => {
            ctx.metrics.handshake(HandshakeResult::Ok);
            shared.set_tls(tls);
            // (If the link went down since the check, the close (1011) is queued: the
            // task writes it and ends.)
            raw::open(&ctx, &shared, &route);
            spawn_isolated(
                "raw connection",
                conn::run(ctx, stream, shared, leftover, Some(Rc::new(route)), permit),
            );
        }
        Upgraded::Resume {
            place,
            response,
            leftover,
            by,
        } => resume::start(
            ctx,
            place,
            resume::Arrival {
                stream,
                tls,
                response,
                leftover,
                permit,
                by,
            },
        ),
    }
}

/// What a handshake that succeeded leads to.
enum Upgraded {
    /// A new session, with the bytes that came after the upgrade request and whether
    /// its token named its session id (`sid`; a generated one is new by construction).
    New(Rc<ConnShared>, BytesMut, bool),
    /// A client of a raw route (plain WebSocket messages relayed to its link service).
    Raw(Rc<ConnShared>, BytesMut, RawRoute),
    /// A reconnection token naming `place`: the session is resumed there
    /// (`edge::resume`), its `101` being `response`.
    Resume {
        place: ResumePlace,
        response: Bytes,
        leftover: BytesMut,
        by: ResumeBy,
    },
}

/// Where the session `sid` is, if it exists and sessions are resumable (with the
/// reconnection window off, a same-`sid` connection starts a new session:
/// `supersede_same_session`).
fn bearer_place(ctx: &ShardCtx, sid: &str) -> Option<ResumePlace> {
    if ctx.config.server.reconnect_window_secs == 0 {
        return None;
    }
    let loc = ctx
        .plane
        .hub
        .locate(Target::Session(sid))
        .into_iter()
        .next()?;
    Some(ResumePlace {
        shard: loc.shard,
        slot: loc.at.slot,
        generation: loc.at.generation,
        // (Not checked for a bearer resume: `ResumeBy::Bearer` names the session.)
        life: 0,
    })
}

/// A client connecting with a token for a session id that has a connection already
/// (the same `sid` twice): the older connections close with 1000 "New connection
/// established", as in Bannou, and their sessions end (the newer one is a new session;
/// resuming one takes its reconnection token).
fn supersede_same_session(ctx: &ShardCtx, shared: &ConnShared) {
    let hub = &ctx.plane.hub;
    for loc in hub.locate(Target::Session(&shared.session.session_id)) {
        hub.post(
            loc.shard,
            PushMsg::Close {
                to: loc.at,
                code: crate::proto::frame::CLOSE_NORMAL,
                reason: "New connection established".into(),
            },
        );
    }
}

/// Reads and checks the upgrade, authenticates, and queues the 101 and the ping the
/// manifest waits on (or, with `manifest_after_pong` off, the manifest).
async fn handshake(
    ctx: &Rc<ShardCtx>,
    stream: &TcpStream,
    mut tls: Option<&mut TlsSession>,
) -> Result<Upgraded, HandshakeFail> {
    let fd = stream.as_raw_fd();
    let max_head = ctx.config.server.max_handshake_bytes;
    let mut buf = BytesMut::with_capacity(1024);
    let (req, consumed) = loop {
        match Wire::new(fd, tls.as_deref_mut())
            .recv_into(&mut buf)
            .map_err(|_| HandshakeFail::Gone)?
        {
            Nb::Done(0) => return Err(HandshakeFail::Gone),
            Nb::Done(_) => {}
            Nb::WouldBlock => {
                stream
                    .readable(false)
                    .await
                    .map_err(|_| HandshakeFail::Gone)?;
                continue;
            }
        }
        let serves =
            |p: &str| p == ctx.config.server.path || ctx.registry.borrow().raw_route(p).is_some();
        match parse_upgrade_for(&buf, serves, max_head) {
            Ok(Some(done)) => break done,
            Ok(None) => {
                if buf.capacity() == buf.len() {
                    let room = (max_head + 1).saturating_sub(buf.len());
                    buf.reserve(room.clamp(1, 4096));
                }
            }
            Err(e) => return Err(reject(&e)),
        }
    };
    let leftover = BytesMut::from(&buf[consumed..]);
    drop(buf);

    if ctx.draining.get() {
        return Err(HandshakeFail::Reject(
            HandshakeResult::Draining,
            handshake::error_response(503, "server is shutting down"),
        ));
    }
    let origins = &ctx.config.auth.origins;
    if !origins.is_empty() {
        if let Some(origin) = &req.origin {
            if !origins.iter().any(|o| o == origin) {
                tracing::info!(shard = ctx.id, origin = %origin, "upgrade refused: origin not allowed");
                return Err(HandshakeFail::Reject(
                    HandshakeResult::Forbidden,
                    handshake::error_response(403, "origin not allowed"),
                ));
            }
        }
    }
    if req.path != ctx.config.server.path {
        return raw_upgrade(ctx, &req, leftover);
    }
    if let Some(Credential::Reconnect(token)) = &req.credential {
        let Some(place) = ctx.plane.hub.find_resumable(token) else {
            bump(&ctx.metrics.resumes_refused, 1);
            return Err(unauthorized(ctx, "reconnect token not recognised"));
        };
        return Ok(Upgraded::Resume {
            place,
            response: handshake::switching_protocols(&req),
            leftover,
            by: ResumeBy::Token,
        });
    }
    let identity = authenticate(ctx, &req)?;
    let sid_claimed = identity.session_id.is_some() && !identity.anonymous;
    if let Some(sid) = identity.session_id.as_deref().filter(|_| sid_claimed) {
        // A bearer token naming a session that exists (parked, or still connected):
        // Bannou's SDKs reconnect this way, and get what arrived while they were away.
        if let Some(place) = bearer_place(ctx, sid) {
            return Ok(Upgraded::Resume {
                place,
                response: handshake::switching_protocols(&req),
                leftover,
                by: ResumeBy::Bearer {
                    session_id: sid.into(),
                    expires_at: identity.expires_at,
                },
            });
        }
    }
    let session = new_session(ctx, identity);
    // The idle timers and the manifest's fallback count from now, not from the
    // thread's last clock reading.
    let shared = ctx.new_handle(session);
    let mut out = shared.outbox.borrow_mut();
    out.push_bytes(handshake::switching_protocols(&req));
    let after_pong = ctx.config.server.manifest_after_pong;
    if after_pong {
        // The manifest follows the client's answer (`Conn::consume`), so it cannot
        // arrive in the same read as the 101 (see `ServerConfig::manifest_after_pong`).
        out.push_bytes(ws::ping_frame(b"", None));
    }
    // However the connection ends from here on, the client gets its 101 first.
    out.keep_queued();
    drop(out);
    // (Without `after_pong` the manifest goes out as soon as the connection task has
    // its place in the shard's table, which its peer GUID names: `conn::run`.)
    Ok(Upgraded::New(shared, leftover, sid_claimed))
}

/// The upgrade of a raw route's client: authenticated as any client, refused (403)
/// without one of the route's roles and (503) while its service's link is down; no
/// manifest (and so no ping for it) follows the `101`.
fn raw_upgrade(
    ctx: &Rc<ShardCtx>,
    req: &UpgradeRequest,
    leftover: BytesMut,
) -> Result<Upgraded, HandshakeFail> {
    let route = ctx.registry.borrow().raw_route(&req.path).cloned();
    let Some(route) = route else {
        return Err(reject(&HandshakeError::NotFound));
    };
    // (A reconnect token gets 401 from `authenticate`: raw connections are not
    // resumed.)
    let identity = authenticate(ctx, req)?;
    let session = new_session(ctx, identity);
    if !route.permits(&session.roles()) {
        tracing::info!(shard = ctx.id, route = %route.path, "upgrade refused: 403 (roles)");
        return Err(HandshakeFail::Reject(
            HandshakeResult::Forbidden,
            handshake::error_response(403, "not permitted on this route"),
        ));
    }
    let service = ctx.registry.borrow().services[route.service].name.clone();
    if !raw::link(ctx, &service).is_some_and(|l| l.is_up()) {
        tracing::info!(shard = ctx.id, route = %route.path, service = %service, "upgrade refused: 503 (the route's backend link is down)");
        return Err(HandshakeFail::Reject(
            HandshakeResult::Unavailable,
            handshake::error_response(503, "service unavailable"),
        ));
    }
    let shared = ctx.new_handle(session);
    shared.mark_raw();
    {
        let mut out = shared.outbox.borrow_mut();
        out.push_bytes(handshake::switching_protocols(req));
        out.keep_queued();
    }
    Ok(Upgraded::Raw(
        shared,
        leftover,
        RawRoute {
            path: route.path.clone(),
            service,
        },
    ))
}

fn reject(e: &HandshakeError) -> HandshakeFail {
    HandshakeFail::Reject(HandshakeResult::from_status(e.status()), e.response())
}

fn unauthorized(ctx: &ShardCtx, why: &str) -> HandshakeFail {
    tracing::info!(shard = ctx.id, reason = why, "upgrade refused: 401");
    HandshakeFail::Reject(
        HandshakeResult::Unauthorized,
        handshake::error_response(401, "invalid or missing token"),
    )
}

fn authenticate(ctx: &ShardCtx, req: &UpgradeRequest) -> Result<Identity, HandshakeFail> {
    match &req.credential {
        Some(Credential::Bearer(token)) => ctx
            .auth
            .verify(token, unix_now().as_secs())
            .map_err(|e| unauthorized(ctx, e.as_str())),
        // (On the main path resumes are handled before this: `handshake`. A raw
        // route's connection is not resumed.)
        Some(Credential::Reconnect(_)) => Err(unauthorized(
            ctx,
            "a reconnect token where none is accepted (raw routes are not resumed)",
        )),
        None => ctx
            .auth
            .anonymous(sys::random_uuid())
            .ok_or_else(|| unauthorized(ctx, "no token")),
    }
}

fn new_session(ctx: &ShardCtx, id: Identity) -> Session {
    let session_id = id.session_id.unwrap_or_else(sys::random_uuid);
    let mut roles = id.roles;
    if id.anonymous && !roles.iter().any(|r| r == "anonymous") {
        roles.push("anonymous".to_string());
    }
    let key = SessionKey::derive(&ctx.guid_secret, &session_id);
    Session::new(
        session_id.into(),
        id.account_id.map(Into::into),
        roles,
        key,
        ctx.next_link_ref(),
        id.expires_at,
    )
}
