//! One upgraded client connection, from its first frame to its close.
//!
//! Why it is shaped like this: an idle connection must cost a few hundred bytes
//! (docs/DESIGN.md §1). The task parks on readiness (an io_uring PollAdd), not on a
//! read with a buffer; when readable it reads into the shard's read buffer and decodes
//! in place, keeping bytes of its own only for a partial frame. Everything others need
//! to reach the connection sits in its session handle (`session::ConnShared`); the
//! task's own state (`Task`: decoder, partial buffer, rate bucket, ordered channel
//! queues) never leaves it, and is held once: the task is the largest part of an idle
//! connection's cost, and a test pins its size.

use std::future::{poll_fn, Future};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use monoio::net::TcpStream;

use crate::admission::{HeldPermit, Permit};
use crate::proto::bannou::{flags, ResponseCode, ResponseHeader};
use crate::proto::frame::CLOSE_NORMAL;

/// Close code for a raw route's client past its message rate (policy violation).
const CLOSE_POLICY: u16 = 1008;
use crate::proto::ratelimit::{Rate, TokenBucket};
use crate::proto::ws::{self, Decoder, Limits, Message, ProtocolError, Role};
use crate::rt::clock;
use crate::rt::sys::{self, Nb};
use crate::session::{CloseRequest, ConnShared, Flush};
use crate::shard::{ShardCtx, READ_CHUNK};

use super::dispatch::{self, Channels};
use super::manifest;
use super::raw::{self, RawRoute};

/// How long a server-initiated close waits for the client's close frame, once ours is
/// written.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// How long a server-initiated close may take to write what is queued before it (the
/// rest of a frame in flight, a disconnect notice, the close frame itself) to a client
/// that reads slowly: past it, the connection is dropped.
const CLOSE_FLUSH: Duration = Duration::from_secs(10);
/// Reads per readiness wakeup before the task yields to others.
const READS_PER_WAKEUP: usize = 8;
/// The upgraded connection's task, from the first frame to the close. `leftover`: the
/// bytes that came after the upgrade request; `permit`: the connection's place under
/// the admission limits, given back when the task ends.
/// The session is already in the shard's table (`ShardCtx::add_session`, or a resume's
/// `ShardPlane::replace`, or `raw::open`). `raw`: the raw route the client came in on
/// (its messages go to the route's backend as they are), or none (a Bannou client).
///
/// Not an `async fn`: an async fn's future keeps its arguments twice, as captured and
/// as the locals they are moved into (160 bytes in every idle connection's task, and
/// the task is the largest part of an idle connection's cost). Here they are moved
/// once, into the [`Task`] the future owns and works on in place; nothing runs before
/// the task is first polled but building it.
pub fn run(
    ctx: Rc<ShardCtx>,
    stream: TcpStream,
    shared: Rc<ConnShared>,
    leftover: BytesMut,
    raw: Option<Rc<RawRoute>>,
    permit: Permit,
) -> impl Future<Output = ()> + 'static {
    let mut task = Task {
        permit: Some(permit.into_held(&ctx.admission)),
        conn: Conn {
            fd: stream.as_raw_fd(),
            decoder: Decoder::new(
                Role::Server,
                Limits {
                    max_message_bytes: ctx.config.server.max_message_bytes,
                },
            ),
            // Bytes that came with the upgrade request (a first frame sent without
            // waiting for the 101) are decoded at once, as if a read had just stopped
            // there.
            stalled: !leftover.is_empty(),
            partial: (!leftover.is_empty()).then_some(leftover),
            bucket: TokenBucket::new(rate(&ctx), ctx.now_ms()),
            closing: None,
            close_timer: None,
            read_epoch: u32::MAX,
            gate_registered: u32::MAX,
            channels: Channels::default(),
            raw,
            ctx,
            shared,
        },
        stream,
    };
    async move {
        task.start();
        let r = task.serve().await;
        task.conn.log_end(r);
    }
}

/// The connection task's state: the socket, the task-local half ([`Conn`]) and its
/// place under the admission limits. Dropping it (the task's end, also by a panic)
/// leaves the connection's place in its shard: its session is parked for the client's
/// return or ended (`ShardCtx::connection_ended`), and its admission place given back.
struct Task {
    /// The socket, apart from `conn`: the readiness futures borrow it while `conn` is
    /// borrowed mutably.
    stream: TcpStream,
    conn: Conn,
    /// `None` once given back (by `drop`).
    permit: Option<HeldPermit>,
}

impl Task {
    /// What the task does on its first poll, before it waits for anything.
    fn start(&self) {
        let Conn { ctx, shared, .. } = &self.conn;
        shared.set_fd(self.stream.as_raw_fd());
        if !ctx.config.server.manifest_after_pong && self.conn.raw.is_none() {
            manifest::send(ctx, shared, "initial");
        }
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        // The ordered channels' waiting requests go first (they went with the
        // connection's state, before its registration, when both were locals).
        drop(std::mem::take(&mut self.conn.channels));
        let Conn {
            ctx, shared, raw, ..
        } = &self.conn;
        shared.set_fd(-1);
        shared.clear_tls();
        if let Some(route) = raw {
            raw::closed(ctx, shared, route);
        }
        ctx.connection_ended(shared);
        if let Some(p) = self.permit.take() {
            ctx.admission.give_back(p);
        }
    }
}

fn rate(ctx: &ShardCtx) -> Rate {
    Rate {
        per_sec: ctx.config.server.rate_limit_per_sec,
        burst: ctx.config.server.rate_limit_burst,
    }
}

/// What the connection is doing about closing.
#[derive(Debug, Clone, Copy)]
enum Closing {
    /// We queued a close frame; waiting for the client's until `Conn::close_timer`
    /// runs out (first the time to write it, `CLOSE_FLUSH`, then, once it is written,
    /// `CLOSE_WAIT`).
    Sent { written: bool },
    /// Flush what is queued (the close reply), then close the socket.
    FlushThenEnd,
}

/// The task-local half of a connection.
struct Conn {
    ctx: Rc<ShardCtx>,
    shared: Rc<ConnShared>,
    fd: RawFd,
    decoder: Decoder,
    /// Bytes of a frame not yet complete (only then does a connection own a buffer).
    partial: Option<BytesMut>,
    bucket: TokenBucket,
    closing: Option<Closing>,
    /// The deadline of a close we started (`Closing::Sent`): set with it, and kept
    /// here, not in `Closing`, so that an open connection's state holds a pointer for
    /// it, not a 16-byte `Instant` (and the loop no second one).
    close_timer: Option<Pin<Box<monoio::time::Sleep>>>,
    /// Complete requests wait in `partial` because the in-flight bound was reached.
    stalled: bool,
    /// The read gate's tick of the last read, and of the last wait for the next tick
    /// (see `shard::gate`).
    read_epoch: u32,
    gate_registered: u32,
    /// The ordered channels' queues (dropped, and cleared, with the task).
    channels: Channels,
    /// A raw route's connection: where its messages go (an `Rc`: a pointer in every
    /// connection's task, not two strings).
    raw: Option<Rc<RawRoute>>,
}

/// What woke the connection task.
enum Wake {
    Readable(io::Result<()>),
    Writable(io::Result<()>),
    Notified,
    Deadline,
}

/// What reading found.
enum ReadOutcome {
    /// Keep going.
    More,
    /// The peer closed its side (or the close handshake completed).
    End,
}

/// What the connection's loop waits on besides its handle's wakeup: the socket's
/// readiness (read, always armed; write, while a flush is blocked). One struct, so
/// that the wait's closure holds two pointers (to it and to the `Conn`), not one per
/// field it touches.
struct Waits<'s, R, W> {
    readable: Pin<&'s mut R>,
    writable: Option<Pin<Box<W>>>,
}

impl Task {
    /// The connection's loop, until it ends.
    async fn serve(&mut self) -> io::Result<()> {
        let mut waits = Waits {
            readable: pin!(self.stream.readable(false)),
            writable: None,
        };
        loop {
            let conn = &mut self.conn;
            // 0. Requests read before the in-flight bound stopped us.
            if conn.stalled && conn.shared.can_read() && conn.resume_buffered() {
                return Ok(());
            }
            // 1. A close asked for from outside.
            if let Some(req) = conn.shared.close.take() {
                match &req {
                    CloseRequest::Abort => return Ok(()),
                    CloseRequest::Close(code, reason) => {
                        if conn.closing.is_none() {
                            conn.begin_close(*code, reason);
                        }
                    }
                }
                // Keep the request visible so no further messages are queued.
                conn.shared.close.set(Some(req));
            }
            // 2. Flush.
            if waits.writable.is_none() {
                let (n, state) = conn.shared.flush_to(conn.fd)?;
                if n > 0 {
                    crate::metrics::bump(&conn.ctx.metrics.bytes_out, n as u64);
                }
                if state == Flush::Blocked {
                    waits.writable = Some(Box::pin(self.stream.writable(false)));
                } else if matches!(conn.closing, Some(Closing::FlushThenEnd)) {
                    conn.shared.shutdown_write(conn.fd);
                    return Ok(());
                } else if let Some(Closing::Sent { written: false }) = conn.closing {
                    // Our close frame is out: the client has CLOSE_WAIT to answer.
                    conn.closing = Some(Closing::Sent { written: true });
                    if let Some(t) = conn.close_timer.as_mut() {
                        let deadline = t.deadline().min((Instant::now() + CLOSE_WAIT).into());
                        t.as_mut().reset(deadline);
                    }
                }
            }
            // 3. Wait for something to do.
            let wake = poll_fn(|cx| self.conn.poll_wake(cx, &mut waits)).await;
            match wake {
                Wake::Notified => {}
                Wake::Writable(r) => {
                    r?;
                    waits.writable = None;
                }
                Wake::Readable(r) => {
                    r?;
                    let conn = &mut self.conn;
                    conn.read_epoch = conn.ctx.read_gate.epoch();
                    let outcome = conn.read_ready();
                    waits.readable.set(self.stream.readable(false));
                    match outcome? {
                        ReadOutcome::More => {}
                        ReadOutcome::End => return Ok(()),
                    }
                }
                Wake::Deadline => return Ok(()),
            }
        }
    }
}

impl Conn {
    /// What woke the connection, if anything did (its handle's wakeup first, then a
    /// blocked flush, then the socket's readability, then the close's deadline).
    fn poll_wake<R, W>(&mut self, cx: &mut Context<'_>, waits: &mut Waits<'_, R, W>) -> Poll<Wake>
    where
        R: Future<Output = io::Result<()>>,
        W: Future<Output = io::Result<()>>,
    {
        if self.shared.notify.poll_take(cx.waker()) {
            return Poll::Ready(Wake::Notified);
        }
        if let Some(w) = waits.writable.as_mut() {
            if let Poll::Ready(r) = w.as_mut().poll(cx) {
                return Poll::Ready(Wake::Writable(r));
            }
        }
        // Past the in-flight bound the client is not read (TCP backpressure) until a
        // request finishes and notifies; while the shard is busy, not twice in one
        // tick of the read gate.
        if self.shared.can_read()
            && self
                .ctx
                .read_gate
                .may_read(self.read_epoch, &mut self.gate_registered, cx.waker())
        {
            if let Poll::Ready(r) = waits.readable.as_mut().poll(cx) {
                return Poll::Ready(Wake::Readable(r));
            }
        }
        if let Some(t) = self.close_timer.as_mut() {
            if t.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Wake::Deadline);
            }
        }
        Poll::Pending
    }

    /// Logs how the connection's loop ended.
    fn log_end(&self, r: io::Result<()>) {
        match r {
            Ok(()) => {
                tracing::debug!(shard = self.ctx.id, session = %self.shared.session.session_id, "connection closed")
            }
            Err(e) => {
                tracing::debug!(shard = self.ctx.id, session = %self.shared.session.session_id, error = %e, "connection ended")
            }
        }
    }

    /// Starts a server-initiated close: queue the close frame, wait for the reply.
    fn begin_close(&mut self, code: u16, reason: &str) {
        self.shared
            .outbox
            .borrow_mut()
            .push_bytes(ws::close_frame(Some((code, reason)), None));
        self.closing = Some(Closing::Sent { written: false });
        self.close_timer = Some(Box::pin(monoio::time::sleep_until(
            (Instant::now() + CLOSE_FLUSH).into(),
        )));
    }

    /// Fails the connection on a protocol violation: close frame with its code, then end.
    fn fail(&mut self, e: &ProtocolError) {
        tracing::debug!(shard = self.ctx.id, error = %e, code = e.close_code(), "protocol error");
        // A client that breaks the protocol does not get its session back.
        self.shared.mark_final();
        self.ctx
            .metrics
            .protocol_errors
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if self.closing.is_none() {
            let mut out = self.shared.outbox.borrow_mut();
            out.drop_backlog();
            out.push_bytes(ws::close_frame(Some((e.close_code(), "")), None));
            drop(out);
            self.shared
                .close
                .set(Some(CloseRequest::Close(e.close_code(), "".into())));
        }
        // (Already closing: our close frame is queued, perhaps partly written; a
        // second one must not follow it. Flush what is queued and end.)
        self.closing = Some(Closing::FlushThenEnd);
        self.partial = None;
    }

    /// Reads what is there (bounded) and handles every complete message.
    fn read_ready(&mut self) -> io::Result<ReadOutcome> {
        let ctx = self.ctx.clone();
        for _ in 0..READS_PER_WAKEUP {
            // Read into the connection's partial-frame buffer if it has one, else into
            // the shard's shared read buffer.
            let mut own = self.partial.take();
            let from_shard = own.is_none();
            let mut shard_buf = None;
            let buf: &mut BytesMut = match own.as_mut() {
                Some(p) => {
                    let want = self.decoder.pending_frame_len().unwrap_or(0);
                    p.reserve(want.saturating_sub(p.len()).clamp(4096, READ_CHUNK));
                    p
                }
                None => {
                    // Room is made only once less than half a chunk is left: the
                    // messages cut from this buffer are still in flight, so making
                    // room means a new buffer, which was an allocation (and fresh
                    // memory) per read when each read carried one request.
                    let b = shard_buf.insert(ctx.read_buf.borrow_mut());
                    if b.capacity() - b.len() < READ_CHUNK / 2 {
                        b.reserve(READ_CHUNK);
                    }
                    b
                }
            };
            let n = match self.shared.recv_into(self.fd, buf) {
                Ok(Nb::Done(0)) => return Ok(ReadOutcome::End),
                Ok(Nb::Done(n)) => n,
                Ok(Nb::WouldBlock) => {
                    self.partial = own;
                    return Ok(ReadOutcome::More);
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    return Ok(ReadOutcome::End)
                }
                Err(e) => return Err(e),
            };
            crate::metrics::bump(&ctx.metrics.bytes_in, n as u64);
            if matches!(self.closing, Some(Closing::FlushThenEnd)) {
                // Failing or answering a close: whatever else arrives is discarded.
                buf.clear();
                continue;
            }
            clock::refresh();
            self.shared.last_rx.set(ctx.now_secs());
            self.shared.ping_sent.set(None);
            let end = self.consume(buf);
            // Keep only a partial frame, in a buffer of the connection's own.
            if matches!(self.closing, Some(Closing::FlushThenEnd)) || buf.is_empty() {
                buf.clear();
            } else if from_shard {
                let mut mine = BytesMut::with_capacity(buf.len().max(1024));
                mine.extend_from_slice(buf);
                buf.clear();
                self.partial = Some(mine);
            } else {
                self.partial = own;
            }
            if end {
                return Ok(ReadOutcome::End);
            }
            if self.stalled {
                // At the in-flight bound: read no further until requests finish.
                return Ok(ReadOutcome::More);
            }
            if n < READ_CHUNK / 2 {
                // A short read: the socket is most likely drained.
                return Ok(ReadOutcome::More);
            }
        }
        Ok(ReadOutcome::More)
    }

    /// Decodes and handles the complete messages at the front of `buf`, stopping early
    /// at the in-flight bound (the rest waits in the connection's own buffer; `stalled`
    /// says so). Returns true when the connection should end now.
    fn consume(&mut self, buf: &mut BytesMut) -> bool {
        if self.shared.manifest_due() && self.closing.is_none() {
            // The client answered (the upgrade's ping, or sent anything): the manifest
            // goes out now, ahead of any answer to what it sent.
            manifest::send(&self.ctx, &self.shared, "initial");
        }
        // One reading for the whole batch (the clock is refreshed per read anyway).
        let now_ms = self.ctx.now_ms();
        loop {
            if !self.shared.can_read() {
                self.stalled = !buf.is_empty();
                return false;
            }
            match self.decoder.decode(buf) {
                Ok(Some(msg)) => {
                    if self.on_message(msg, now_ms) {
                        return true;
                    }
                }
                Ok(None) => return false,
                Err(e) => {
                    buf.clear();
                    self.fail(&e);
                    return false;
                }
            }
        }
    }

    /// After a stall at the in-flight bound: handles what was already read.
    fn resume_buffered(&mut self) -> bool {
        self.stalled = false;
        let Some(mut buf) = self.partial.take() else {
            return false;
        };
        let end = self.consume(&mut buf);
        if !buf.is_empty() && !matches!(self.closing, Some(Closing::FlushThenEnd)) {
            self.partial = Some(buf);
        }
        end
    }

    /// Handles one message; returns true when the connection should end now.
    /// `now_ms`: `ShardCtx::now_ms` for the rate limiter.
    fn on_message(&mut self, msg: Message, now_ms: u64) -> bool {
        crate::metrics::bump(&self.ctx.metrics.frames_in, 1);
        // (`now_ms` / 1000 is `ShardCtx::now_secs`: the same clock.)
        self.shared.last_msg.set((now_ms / 1000) as u32);
        if let (Some(route), Message::Binary(p) | Message::Text(p)) = (&self.raw, &msg) {
            if self.closing.is_none() {
                if !self.bucket.try_take(rate(&self.ctx), now_ms) {
                    // No response code to send on a raw route: the client is closed.
                    crate::metrics::bump(&self.ctx.metrics.rate_limited, 1);
                    self.shared
                        .request_final_close(CLOSE_POLICY, "rate limit exceeded");
                } else {
                    raw::message(
                        &self.ctx,
                        &self.shared,
                        route,
                        matches!(msg, Message::Binary(_)),
                        p,
                    );
                }
            }
            return false;
        }
        match msg {
            Message::Binary(payload) => {
                if self.closing.is_none() {
                    let allowed = self.bucket.try_take(rate(&self.ctx), now_ms);
                    dispatch::handle_request(
                        &self.ctx,
                        &self.shared,
                        &mut self.channels,
                        payload,
                        allowed,
                    );
                }
                false
            }
            Message::Text(_) => {
                if self.closing.is_none() {
                    let h = ResponseHeader {
                        flags: flags::RESPONSE,
                        channel: 0,
                        sequence: 0,
                        message_id: u64::from_be_bytes(sys::random_bytes()),
                        code: ResponseCode::TextProtocolNotSupported.as_u8(),
                    };
                    self.shared.send_binary(&h.encode(), Bytes::new());
                }
                false
            }
            Message::Ping(p) => {
                self.shared.send_frame(ws::pong_frame(&p, None));
                false
            }
            Message::Pong(_) => false,
            Message::Close(frame) => match self.closing {
                // The reply to our close: done.
                Some(Closing::Sent { .. }) => true,
                Some(Closing::FlushThenEnd) => false,
                None => {
                    // Echo the client's status code (none if it sent none).
                    let code = frame.as_ref().map(|f| f.code);
                    self.shared
                        .outbox
                        .borrow_mut()
                        .push_bytes(ws::close_frame(code.map(|c| (c, "")), None));
                    self.shared.close.set(Some(CloseRequest::Close(
                        code.unwrap_or(CLOSE_NORMAL),
                        "".into(),
                    )));
                    self.closing = Some(Closing::FlushThenEnd);
                    false
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes of the task `run` returns the future of (not called: its type is
    /// enough).
    fn task_bytes<A, B, C, D, E, G, F: Future<Output = ()>>(_: fn(A, B, C, D, E, G) -> F) -> usize {
        crate::rt::task::task_bytes::<F>()
    }

    #[test]
    fn an_idle_connection_task_stays_within_its_allocator_size_class() {
        // Every idle connection holds its task: at 512 bytes or less it is one
        // 512-byte block (mimalloc); past it, 640. It was 840 (an 896-byte block) while
        // `run` was an async fn holding its arguments twice, the loop's wait closure a
        // pointer per field it touched and a close's deadline an `Instant` in `Closing`.
        let n = task_bytes(run);
        assert!(n <= 512, "{n} bytes");
    }
}
