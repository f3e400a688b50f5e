//! One backend connection (a lane): its writer and reader tasks, and the states that
//! decide whether it takes new calls.
//!
//! Why apart: how a connection writes its calls (as many as fit in one `sendmsg`),
//! reads the answers and hands them out in request order, drains after a caller gave
//! up, and fails what is left when it ends, is the I/O half of the pool; which lane a
//! call goes to is the pool's. A lane reaches the pool that owns it only through
//! [`LanePool`], which the pool implements. The caller's side of a call on a lane
//! ([`Waiting`]) is here too: dropping it abandons the call on its lane.
//!
//! An `https://` lane's reads and writes go through its TLS session (`tls::Wire`): the
//! writer counts what rustls took as written and waits for writability while rustls
//! still holds encrypted bytes; the reader copies out all that rustls decrypted.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;
use monoio::net::TcpStream;

use super::call::{Call, CallState, Failure};
use crate::proto::http1::{Http1Error, Response, ResponseParser};
use crate::rt::sys::{self, Nb, MAX_IOVECS};
use crate::tls::{TlsSession, Wire};
use crate::upstream::BackendError;

/// Read buffer growth step; it grows as needed for large bodies.
const READ_CHUNK: usize = 16 * 1024;
/// Reads per readiness wake-up before the reader lets other tasks run.
const READS_PER_WAKEUP: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LaneState {
    /// Takes new calls.
    Open,
    /// A written call was abandoned: no new calls; closed when no live call
    /// is left.
    Draining,
    /// Shut down; the reader is failing what is left and removing the lane.
    Closed,
}

/// Why a lane was shut down from outside its reader.
#[derive(Debug)]
pub(super) enum LaneEnd {
    /// By the pool, with no live call on it (idle cap, drained, pool dropped).
    Retired,
    /// The backend's last response closes the connection: calls behind it
    /// were never processed.
    BackendClosing,
    /// The writer failed.
    WriteError(io::Error),
}

/// Why the reader stopped.
enum ReadEnd {
    /// `shutdown` was called (see the lane's `end`).
    Shutdown,
    Eof,
    Io(io::Error),
    Protocol(Http1Error),
}

/// The pool, as its lanes see it: what a lane tells the pool that owns it. The pool
/// implements it, so that this file needs nothing of the pool's.
pub(super) trait LanePool {
    /// A lane left `Open`: it no longer counts against the connection cap.
    fn lane_left_open(&self);
    /// An open lane just became idle (it may be one idle lane too many).
    fn lane_idle(&self, lane: &Lane);
    /// A lane's reader ended: the pool forgets the lane.
    fn lane_ended(&self, lane: &Lane);
}

/// One backend connection.
pub(super) struct Lane {
    stream: TcpStream,
    fd: RawFd,
    /// An `https://` backend's TLS session (its handshake done), used by both tasks.
    tls: RefCell<Option<Box<TlsSession>>>,
    pool: Weak<dyn LanePool>,
    /// Calls in request order: `calls[..written]` are fully written, then
    /// `write_off` bytes of `calls[written]`, then the unwritten rest.
    pub(super) calls: RefCell<VecDeque<Rc<Call>>>,
    written: Cell<usize>,
    write_off: Cell<usize>,
    pub(super) state: Cell<LaneState>,
    /// Responses received (a lane with any is a "reused" connection).
    pub(super) answered: Cell<u64>,
    writer: RefCell<Option<Waker>>,
    end: RefCell<Option<LaneEnd>>,
}

impl Lane {
    /// A lane of `pool`'s, open, on a connected `stream` (through `tls`, whose handshake
    /// is done, for an `https://` backend); its tasks are not started yet
    /// ([`read_loop`], [`write_loop`]).
    pub(super) fn new(
        stream: TcpStream,
        tls: Option<Box<TlsSession>>,
        pool: Weak<dyn LanePool>,
    ) -> Lane {
        Lane {
            fd: stream.as_raw_fd(),
            stream,
            tls: RefCell::new(tls),
            pool,
            calls: RefCell::new(VecDeque::new()),
            written: Cell::new(0),
            write_off: Cell::new(0),
            state: Cell::new(LaneState::Open),
            answered: Cell::new(0),
            writer: RefCell::new(None),
            end: RefCell::new(None),
        }
    }

    /// Runs `f` on the lane's descriptor, through its TLS session if it has one.
    fn with_wire<R>(&self, f: impl FnOnce(&mut Wire<'_>) -> R) -> R {
        let mut tls = self.tls.borrow_mut();
        f(&mut Wire::new(self.fd, tls.as_deref_mut()))
    }

    fn has_tls(&self) -> bool {
        self.tls.borrow().is_some()
    }

    pub(super) fn is_idle(&self) -> bool {
        self.state.get() == LaneState::Open && self.calls.borrow().is_empty()
    }

    /// Open and holding fewer than `depth` calls.
    pub(super) fn has_room(&self, depth: usize) -> bool {
        self.state.get() == LaneState::Open && self.calls.borrow().len() < depth
    }

    pub(super) fn has_unsent(&self) -> bool {
        self.written.get() < self.calls.borrow().len()
    }

    pub(super) fn submit(&self, call: Rc<Call>) {
        self.calls.borrow_mut().push_back(call);
        self.wake_writer();
    }

    fn wake_writer(&self) {
        if let Some(w) = self.writer.borrow_mut().take() {
            w.wake();
        }
    }

    /// Stops taking new calls.
    fn leave_open(&self, to: LaneState) {
        if self.state.get() == LaneState::Open {
            if let Some(pool) = self.pool.upgrade() {
                pool.lane_left_open();
            }
        }
        self.state.set(to);
    }

    /// Closes the connection; the reader wakes up (EOF), fails what is
    /// left and removes the lane.
    pub(super) fn shutdown(&self, why: LaneEnd) {
        if self.state.get() == LaneState::Closed {
            return;
        }
        self.leave_open(LaneState::Closed);
        self.end.borrow_mut().get_or_insert(why);
        // (With TLS, close_notify first: the backend sees an orderly end, not a
        // truncation.)
        if let Ok(mut tls) = self.tls.try_borrow_mut() {
            if let Some(t) = tls.as_deref_mut() {
                t.close_notify(self.fd);
            }
        }
        sys::shutdown(self.fd);
        self.wake_writer();
    }

    /// The caller of `call` gave up, or its deadline passed.
    pub(super) fn abandon(&self, call: &Rc<Call>) {
        let mut calls = self.calls.borrow_mut();
        let Some(i) = calls.iter().position(|c| Rc::ptr_eq(c, call)) else {
            return; // already answered or failed
        };
        let w = self.written.get();
        if i > w || (i == w && self.write_off.get() == 0) {
            // Not a byte of it was written: forget it.
            calls.remove(i);
            return;
        }
        drop(calls);
        // Its response will still come: let this connection finish what it
        // owes and take nothing new.
        if self.state.get() == LaneState::Open {
            self.leave_open(LaneState::Draining);
        }
        self.retire_if_drained();
    }

    fn retire_if_drained(&self) {
        if self.state.get() == LaneState::Draining
            && !self.calls.borrow().iter().any(|c| c.is_live())
        {
            self.shutdown(LaneEnd::Retired);
        }
    }

    /// Writes unwritten calls, as many per `sendmsg` as the iovec limit
    /// allows. `Ok(true)`: all written (with TLS: and nothing left encrypted in
    /// rustls); `Ok(false)`: the socket is full.
    fn flush(&self) -> io::Result<bool> {
        loop {
            if self.state.get() == LaneState::Closed {
                return Ok(true);
            }
            let calls = self.calls.borrow();
            let first = self.written.get();
            if first >= calls.len() {
                return self.with_wire(|w| w.drain());
            }
            let mut slices: [&[u8]; MAX_IOVECS] = [&[]; MAX_IOVECS];
            let mut n = 0;
            let mut skip = self.write_off.get();
            for c in calls.range(first..) {
                if n + 2 > MAX_IOVECS {
                    break;
                }
                let (head, body) = (&c.head[..], &c.body[..]);
                if skip < head.len() {
                    slices[n] = &head[skip..];
                    n += 1;
                    if !body.is_empty() {
                        slices[n] = body;
                        n += 1;
                    }
                } else {
                    slices[n] = &body[skip - head.len()..];
                    n += 1;
                }
                skip = 0;
            }
            let mut sent = match self.with_wire(|w| w.send_vectored(&slices[..n]))? {
                Nb::Done(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "backend accepted no bytes",
                    ))
                }
                Nb::Done(k) => k,
                Nb::WouldBlock => return Ok(false),
            };
            let (mut w, mut off) = (first, self.write_off.get());
            while sent > 0 {
                let left = calls[w].len() - off;
                if sent >= left {
                    sent -= left;
                    w += 1;
                    off = 0;
                } else {
                    off += sent;
                    sent = 0;
                }
            }
            self.written.set(w);
            self.write_off.set(off);
        }
    }

    /// Completes every call whose response is complete in `buf`.
    fn deliver(
        &self,
        buf: &mut BytesMut,
        parser: &mut Option<ResponseParser>,
        max_body: usize,
    ) -> Result<(), Http1Error> {
        while !buf.is_empty() && self.state.get() != LaneState::Closed {
            let Some(call) = self.calls.borrow().front().cloned() else {
                return Err(Http1Error::Unsolicited);
            };
            let p = parser.get_or_insert_with(|| {
                ResponseParser::new(max_body).head_request(call.head_request)
            });
            let Some(resp) = p.parse(buf)? else {
                return Ok(());
            };
            *parser = None;
            self.calls.borrow_mut().pop_front();
            self.answered.set(self.answered.get() + 1);
            // An early answer (before the request was fully written) ends the
            // connection: the rest of the request cannot be sent any more.
            let was_written = self.written.get() > 0;
            if was_written {
                self.written.set(self.written.get() - 1);
            } else {
                self.write_off.set(0);
            }
            let keep_alive = resp.keep_alive && was_written;
            call.complete(Ok(resp));
            if !keep_alive {
                self.shutdown(LaneEnd::BackendClosing);
                return Ok(());
            }
            if self.calls.borrow().is_empty() {
                match self.state.get() {
                    LaneState::Draining => self.retire_if_drained(),
                    LaneState::Open => {
                        if let Some(pool) = self.pool.upgrade() {
                            pool.lane_idle(self);
                        }
                    }
                    LaneState::Closed => {}
                }
            } else {
                self.retire_if_drained();
            }
        }
        Ok(())
    }

    /// The reader stopped: fail every call left, say why, and leave the pool.
    fn finish(
        &self,
        why: ReadEnd,
        buf: &mut BytesMut,
        parser: Option<ResponseParser>,
        max_body: usize,
    ) {
        self.shutdown(LaneEnd::Retired);
        let end = self.end.borrow_mut().take();
        let calls: Vec<Rc<Call>> = self.calls.borrow_mut().drain(..).collect();
        let (written, partial) = (self.written.get(), self.write_off.get() > 0);
        self.written.set(0);
        self.write_off.set(0);
        let mut parser = parser;
        for (i, call) in calls.iter().enumerate() {
            let sent = i < written || (i == written && partial);
            let result = if !sent {
                Err(Failure::Unprocessed(BackendError::Io(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "backend connection closed before the request was written",
                ))))
            } else {
                match (&why, &end) {
                    (_, Some(LaneEnd::BackendClosing)) => Err(Failure::Unprocessed(
                        BackendError::Protocol(Http1Error::ConnectionClosed),
                    )),
                    (_, Some(LaneEnd::WriteError(e))) => Err(io_failure(e, false)),
                    (ReadEnd::Eof, _) if i == 0 => {
                        let mut p = parser.take().unwrap_or_else(|| {
                            ResponseParser::new(max_body).head_request(call.head_request)
                        });
                        match p.parse_eof(buf) {
                            Ok(resp) => Ok(resp),
                            Err(Http1Error::ConnectionClosed) => Err(Failure::Stale(
                                BackendError::Protocol(Http1Error::ConnectionClosed),
                            )),
                            Err(e) => Err(Failure::Fatal(BackendError::Protocol(e))),
                        }
                    }
                    (ReadEnd::Eof, _) => Err(Failure::Stale(BackendError::Protocol(
                        Http1Error::ConnectionClosed,
                    ))),
                    (ReadEnd::Io(e), _) => {
                        let started = i == 0 && (parser.is_some() || !buf.is_empty());
                        Err(io_failure(e, started))
                    }
                    (ReadEnd::Protocol(e), _) => {
                        Err(Failure::Fatal(BackendError::Protocol(e.clone())))
                    }
                    (ReadEnd::Shutdown, _) => {
                        Err(Failure::Fatal(BackendError::Io(io::Error::new(
                            io::ErrorKind::ConnectionAborted,
                            "backend connection closed by the gateway",
                        ))))
                    }
                }
            };
            call.complete(result);
        }
        if let Some(pool) = self.pool.upgrade() {
            pool.lane_ended(self);
        }
    }
}

/// The caller's side of a [`Call`]; dropping it early abandons the call.
pub(super) struct Waiting {
    pub(super) lane: Rc<Lane>,
    pub(super) call: Rc<Call>,
}

impl Future for Waiting {
    type Output = Result<Response, Failure>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut st = self.call.state.borrow_mut();
        match &mut *st {
            CallState::Waiting(w) => {
                if !w.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *w = Some(cx.waker().clone());
                }
                Poll::Pending
            }
            CallState::Done(_) => match std::mem::replace(&mut *st, CallState::Taken) {
                CallState::Done(r) => Poll::Ready(r),
                _ => unreachable!("matched Done above"),
            },
            CallState::Taken | CallState::Abandoned | CallState::Detached(_) => {
                unreachable!("a Waiting is polled until Ready and only then dropped")
            }
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let waiting = matches!(*self.call.state.borrow(), CallState::Waiting(_));
        if waiting {
            *self.call.state.borrow_mut() = CallState::Abandoned;
            self.lane.abandon(&self.call);
        }
    }
}

/// A lane's I/O error as a call failure: a dead connection before any
/// response byte is `Stale` (maybe retried), anything else is final.
fn io_failure(e: &io::Error, response_started: bool) -> Failure {
    let err = BackendError::Io(io::Error::new(e.kind(), e.to_string()));
    if !response_started && is_dead_connection(e) {
        Failure::Stale(err)
    } else {
        Failure::Fatal(err)
    }
}

/// Writes whatever calls are queued on `lane`, until the lane closes.
pub(super) async fn write_loop(lane: Rc<Lane>) {
    loop {
        poll_fn(|cx| {
            if lane.state.get() == LaneState::Closed || lane.has_unsent() {
                Poll::Ready(())
            } else {
                *lane.writer.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
        // Until all is written: with TLS that includes what rustls holds encrypted,
        // which no unsent call shows.
        loop {
            if lane.state.get() == LaneState::Closed {
                return;
            }
            match lane.flush() {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => {
                    lane.shutdown(LaneEnd::WriteError(e));
                    return;
                }
            }
            if let Err(e) = lane.stream.writable(false).await {
                lane.shutdown(LaneEnd::WriteError(e));
                return;
            }
        }
    }
}

/// Reads responses on `lane` and completes its calls, until the lane ends.
pub(super) async fn read_loop(lane: Rc<Lane>, max_body: usize) {
    let mut buf = BytesMut::new();
    let mut parser: Option<ResponseParser> = None;
    let tls = lane.has_tls();
    // With TLS, plaintext may have come with the handshake's last flight: read once
    // before the first wait.
    let mut ready = tls;
    let why = loop {
        if lane.state.get() == LaneState::Closed {
            break ReadEnd::Shutdown;
        }
        if !std::mem::take(&mut ready) {
            if let Err(e) = lane.stream.readable(false).await {
                break ReadEnd::Io(e);
            }
        }
        if lane.state.get() == LaneState::Closed {
            break ReadEnd::Shutdown;
        }
        crate::rt::clock::refresh();
        let mut stop = None;
        for _ in 0..READS_PER_WAKEUP {
            if buf.capacity() - buf.len() < READ_CHUNK / 2 {
                buf.reserve(READ_CHUNK);
            }
            let spare = buf.capacity() - buf.len();
            match lane.with_wire(|w| w.recv_into(&mut buf)) {
                Ok(Nb::Done(0)) => {
                    stop = Some(ReadEnd::Eof);
                    break;
                }
                // A short read drained the socket: asking again would only say EAGAIN.
                // (Not with TLS: one read there is at most one TLS buffer's worth.)
                Ok(Nb::Done(n)) if n < spare && !tls => break,
                Ok(Nb::Done(_)) => {}
                Ok(Nb::WouldBlock) => break,
                Err(e) => {
                    stop = Some(ReadEnd::Io(e));
                    break;
                }
            }
        }
        if let Err(e) = lane.deliver(&mut buf, &mut parser, max_body) {
            break ReadEnd::Protocol(e);
        }
        if let Some(why) = stop {
            break why;
        }
        if buf.is_empty() && lane.calls.borrow().is_empty() {
            // Hold no buffer while idle.
            buf = BytesMut::new();
        }
    };
    lane.finish(why, &mut buf, parser, max_body);
}

/// Errors that mean the peer had already closed/reset the connection.
fn is_dead_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::NotConnected
            | io::ErrorKind::UnexpectedEof
    )
}
