//! The WebSocket connection loop of the built-in WebSocket servers, generic over a
//! [`WsService`] (what to do with the upgrade and with data messages): ws-echo
//! (`ws_echo`) and the backend link's echo (`link_echo`) are two services on it.
//!
//! Why it exists: both servers must be built like the gateway so that a comparison with
//! them measures the gateway's work, not a different I/O model: the library's sans-IO
//! codecs (`proto::handshake`, `proto::ws`) and the gateway's readiness discipline (park
//! on readiness, `recv` into the thread's one read buffer, keep bytes only for a partial
//! frame, flush a coalescing `Outbox` with one gathering `sendmsg`). The loop owns the
//! reads, the frame codec, pings, the close handshake and flushing; a service only
//! answers. Shared, so that neither server imports the other. A service may also queue
//! messages of its own between reads ([`WsService::poll_push`]: the NPC world's
//! publishes), and its upgrade may be decided with state of the caller's
//! ([`serve_ws_with`]).

use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::pin::{pin, Pin};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use monoio::net::TcpStream;
use ringgate::io::{self as sys, Nb};
use ringgate::io::{Flush, Outbox};
use ringgate::proto::frame::{encode_header, OpCode, MAX_HEADER_LEN};
use ringgate::proto::handshake::{self, HandshakeError, UpgradeRequest};
use ringgate::proto::ws::{self, Decoder, Limits, Message, ProtocolError, Role};

use super::listen::{ReadBuf, READ_CHUNK};

/// Reads per readiness wakeup before yielding to other connections.
const READS_PER_WAKEUP: usize = 8;
/// Largest message echoed (close 1009 beyond): 16 MiB of payload (the Autobahn
/// suite's largest) plus room for a link message's header around it.
const MAX_MESSAGE_BYTES: usize = (16 << 20) + 4096;
/// Stop reading while this much is queued for a client that does not read.
const OUTBOX_HIGH_WATER: usize = 4 << 20;
/// The whole upgrade request must arrive within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The request target's path (no query) once the request line is complete.
fn request_path(buf: &[u8]) -> Option<&str> {
    let end = buf.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&buf[..end]).ok()?;
    let target = line.split(' ').nth(1)?;
    Some(target.split_once('?').map_or(target, |(p, _)| p))
}

/// `parse_upgrade` with any path accepted: it compares the path with the one it is
/// given, so the path is taken from the request line first.
pub fn parse_upgrade_any_path(
    buf: &[u8],
) -> Result<Option<(UpgradeRequest, usize)>, HandshakeError> {
    match request_path(buf) {
        // An empty or non-origin-form target is rejected by the parser itself.
        Some(path) if path.starts_with('/') => handshake::parse_upgrade(buf, path),
        _ => handshake::parse_upgrade(buf, "/"),
    }
}

/// What a WebSocket server built on this module's connection loop does with an open
/// connection: answer data messages (and, if it has any, queue messages of its own). The
/// loop owns everything else (reads, the frame codec, pings, the close handshake,
/// flushing). ws-echo is one service (`ws_echo::Echo`); the backend link's echo
/// (`link_echo::LinkEcho`) and the NPC world (`npc_world`) are others.
pub(crate) trait WsService: Sized {
    /// One whole text or binary message: queue the answers on `out`. `Err` fails the
    /// connection: what is queued goes out, then a close frame with that code and reason.
    fn on_data(&mut self, opcode: OpCode, payload: Bytes, out: &mut Outbox) -> Result<(), Fail>;

    /// Messages the service sends of its own accord (not answers): queue them on `out`
    /// and return `Ready` (the loop flushes, then asks again), or return `Pending` having
    /// kept `cx`'s waker for when there are some. By default there are none.
    fn poll_push(&mut self, _cx: &mut Context<'_>, _out: &mut Outbox) -> Poll<()> {
        Poll::Pending
    }

    /// The peer broke the WebSocket protocol (the loop closes with the error's code).
    fn on_protocol_error(&mut self, _e: &ProtocolError) {}

    /// The connection is over: closed by either side (`None`) or failed.
    fn on_end(&mut self, _error: Option<&io::Error>) {}
}

/// A service that decides its upgrade from the request alone ([`serve_ws`]).
pub(crate) trait WsUpgrade: WsService {
    /// A complete upgrade request (any path; `head` is its raw bytes, for headers the
    /// parsed request does not carry): `Ok` holds the connection's state and the 101
    /// response, `Err` the response to send before closing.
    fn upgrade(
        req: &UpgradeRequest,
        head: &[u8],
        peer: Option<SocketAddr>,
    ) -> Result<(Self, Bytes), Bytes>;
}

/// A message that fails the connection: the close frame to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fail {
    pub code: u16,
    /// Cut to 123 bytes (at a character boundary) by `ws::close_frame`.
    pub reason: String,
}

/// Longest `prefix` [`push_frame`] takes.
pub(crate) const MAX_FRAME_PREFIX: usize = 16;

/// Queues one final, unmasked frame whose payload is `prefix` followed by `payload`. The
/// frame header and the prefix are built on the stack and copied into the outbox with
/// it; `payload` is queued as the `Bytes` it is (copied only when small). No allocation
/// per message.
pub(crate) fn push_frame(out: &mut Outbox, opcode: OpCode, prefix: &[u8], payload: Bytes) {
    let mut head = [0u8; MAX_HEADER_LEN + MAX_FRAME_PREFIX];
    let (frame_head, _) = head
        .split_first_chunk_mut::<MAX_HEADER_LEN>()
        .expect("head is longer than a frame header");
    let n = encode_header(frame_head, true, opcode, None, prefix.len() + payload.len());
    head[n..n + prefix.len()].copy_from_slice(prefix);
    out.push(&head[..n + prefix.len()], payload);
}

/// One WebSocket connection served by `S`: the upgrade (within [`HANDSHAKE_TIMEOUT`]),
/// then the readiness loop until either side closes.
pub(crate) async fn serve_ws<S: WsUpgrade>(stream: TcpStream, rbuf: ReadBuf) -> io::Result<()> {
    serve_ws_with(stream, rbuf, S::upgrade).await
}

/// [`serve_ws`] with the upgrade decided by `upgrade` (which may hold state of the
/// caller's, e.g. the world the connection joins), with [`WsUpgrade::upgrade`]'s contract.
pub(crate) async fn serve_ws_with<S, U>(
    stream: TcpStream,
    rbuf: ReadBuf,
    upgrade: U,
) -> io::Result<()>
where
    S: WsService,
    U: FnOnce(&UpgradeRequest, &[u8], Option<SocketAddr>) -> Result<(S, Bytes), Bytes>,
{
    let fd = stream.as_raw_fd();
    let mut outbox = Outbox::default();
    let (service, leftover) =
        match monoio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&stream, upgrade)).await {
            Ok(Ok(Ok((service, response, leftover)))) => {
                outbox.push_bytes(response);
                (service, leftover)
            }
            Ok(Ok(Err(refusal))) => {
                outbox.push_bytes(refusal);
                let _ = outbox.flush(fd);
                return Ok(());
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => return Ok(()),
        };
    let mut conn = Conn {
        fd,
        decoder: Decoder::new(
            Role::Server,
            Limits {
                max_message_bytes: MAX_MESSAGE_BYTES,
            },
        ),
        partial: None,
        outbox,
        closing: false,
        service,
    };
    if !leftover.is_empty() {
        // Frames that arrived with the upgrade request.
        let mut buf = leftover;
        conn.decode_all(&mut buf);
        if !buf.is_empty() && !conn.closing {
            conn.partial = Some(buf);
        }
    }
    let result = conn.run(&stream, &rbuf).await;
    conn.service.on_end(result.as_ref().err());
    result
}

/// Reads the upgrade request and asks `upgrade`: `Ok(Err(_))` is a refusal to send back.
async fn handshake<S, U>(
    stream: &TcpStream,
    upgrade: U,
) -> io::Result<Result<(S, Bytes, BytesMut), Bytes>>
where
    U: FnOnce(&UpgradeRequest, &[u8], Option<SocketAddr>) -> Result<(S, Bytes), Bytes>,
{
    let fd = stream.as_raw_fd();
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        if buf.len() == buf.capacity() {
            buf.reserve(4096);
        }
        match sys::recv_into(fd, &mut buf)? {
            Nb::Done(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Nb::Done(_) => {}
            Nb::WouldBlock => {
                stream.readable(false).await?;
                continue;
            }
        }
        match parse_upgrade_any_path(&buf) {
            Ok(Some((req, n))) => {
                let leftover = BytesMut::from(&buf[n..]);
                return Ok(upgrade(&req, &buf[..n], stream.peer_addr().ok())
                    .map(|(service, response)| (service, response, leftover)));
            }
            Ok(None) => {}
            Err(e) => return Ok(Err(e.response())),
        }
    }
}

struct Conn<S> {
    fd: std::os::fd::RawFd,
    decoder: Decoder,
    /// Bytes of an incomplete frame (only then does a connection own a read buffer).
    partial: Option<BytesMut>,
    outbox: Outbox,
    /// A close frame is queued: flush it, then end.
    closing: bool,
    service: S,
}

enum Wake {
    Readable(io::Result<()>),
    Writable(io::Result<()>),
    /// The service queued messages of its own.
    Pushed,
}

impl<S: WsService> Conn<S> {
    async fn run(&mut self, stream: &TcpStream, rbuf: &ReadBuf) -> io::Result<()> {
        let mut readable = pin!(stream.readable(false));
        let mut writable: Option<Pin<Box<dyn Future<Output = io::Result<()>> + '_>>> = None;
        loop {
            if writable.is_none() {
                if let (_, Flush::Blocked) = self.outbox.flush(self.fd)? {
                    writable = Some(Box::pin(stream.writable(false)));
                } else if self.closing {
                    sys::shutdown_write(self.fd);
                    return Ok(());
                }
            }
            let may_read = !self.closing && self.outbox.len() < OUTBOX_HIGH_WATER;
            let wake = poll_fn(|cx| {
                if let Some(w) = writable.as_mut() {
                    if let Poll::Ready(r) = w.as_mut().poll(cx) {
                        return Poll::Ready(Wake::Writable(r));
                    }
                }
                if may_read {
                    if let Poll::Ready(r) = readable.as_mut().poll(cx) {
                        return Poll::Ready(Wake::Readable(r));
                    }
                }
                if !self.closing && self.service.poll_push(cx, &mut self.outbox).is_ready() {
                    return Poll::Ready(Wake::Pushed);
                }
                Poll::Pending
            })
            .await;
            match wake {
                Wake::Pushed => {}
                Wake::Writable(r) => {
                    r?;
                    writable = None;
                }
                Wake::Readable(r) => {
                    r?;
                    let more = self.read_ready(rbuf)?;
                    readable.set(stream.readable(false));
                    if !more {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Reads what is there (bounded) and queues the answers; false at EOF.
    fn read_ready(&mut self, rbuf: &ReadBuf) -> io::Result<bool> {
        for _ in 0..READS_PER_WAKEUP {
            let mut own = self.partial.take();
            let from_shared = own.is_none();
            let mut shared = None;
            let buf: &mut BytesMut = match own.as_mut() {
                Some(p) => {
                    let want = self.decoder.pending_frame_len().unwrap_or(0);
                    p.reserve(want.saturating_sub(p.len()).clamp(4096, READ_CHUNK));
                    p
                }
                None => {
                    let b = shared.insert(rbuf.borrow_mut());
                    b.reserve(READ_CHUNK);
                    b
                }
            };
            let n = match sys::recv_into(self.fd, buf) {
                Ok(Nb::Done(0)) => return Ok(false),
                Ok(Nb::Done(n)) => n,
                Ok(Nb::WouldBlock) => {
                    self.partial = own;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(false),
                Err(e) => return Err(e),
            };
            self.decode_all(buf);
            if self.closing || buf.is_empty() {
                buf.clear();
            } else if from_shared {
                let mut mine = BytesMut::with_capacity(buf.len().max(1024));
                mine.extend_from_slice(buf);
                buf.clear();
                self.partial = Some(mine);
            } else {
                self.partial = own;
            }
            if self.closing || n < READ_CHUNK / 2 {
                return Ok(true);
            }
        }
        Ok(true)
    }

    /// Answers every complete message in `buf`.
    fn decode_all(&mut self, buf: &mut BytesMut) {
        while !self.closing {
            match self.decoder.decode(buf) {
                Ok(Some(msg)) => self.on_message(msg),
                Ok(None) => return,
                Err(e) => {
                    self.service.on_protocol_error(&e);
                    self.outbox.clear();
                    self.outbox
                        .push_bytes(ws::close_frame(Some((e.close_code(), "")), None));
                    self.closing = true;
                }
            }
        }
    }

    fn on_message(&mut self, msg: Message) {
        let answered = match msg {
            Message::Binary(p) => self.service.on_data(OpCode::Binary, p, &mut self.outbox),
            Message::Text(p) => self.service.on_data(OpCode::Text, p, &mut self.outbox),
            Message::Ping(p) => {
                self.outbox.push_bytes(ws::pong_frame(&p, None));
                Ok(())
            }
            Message::Pong(_) => Ok(()),
            Message::Close(frame) => {
                // Echo the client's status code (none if it sent none), then end.
                let code = frame.map(|f| f.code);
                self.outbox
                    .push_bytes(ws::close_frame(code.map(|c| (c, "")), None));
                self.closing = true;
                Ok(())
            }
        };
        if let Err(fail) = answered {
            self.outbox
                .push_bytes(ws::close_frame(Some((fail.code, &fail.reason)), None));
            self.closing = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPGRADE: &str = "GET /any/path?x=1 HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\n\r\n";

    #[test]
    fn any_path_is_accepted() {
        let (req, n) = parse_upgrade_any_path(UPGRADE.as_bytes()).unwrap().unwrap();
        assert_eq!(req.path, "/any/path");
        assert_eq!(n, UPGRADE.len());
        let root = UPGRADE.replace("/any/path?x=1", "/");
        assert!(parse_upgrade_any_path(root.as_bytes()).unwrap().is_some());
        // Incomplete, and not origin-form.
        assert_eq!(parse_upgrade_any_path(&UPGRADE.as_bytes()[..10]), Ok(None));
        assert_eq!(parse_upgrade_any_path(&UPGRADE.as_bytes()[..40]), Ok(None));
        let bad = UPGRADE.replace("/any/path?x=1", "*");
        assert!(parse_upgrade_any_path(bad.as_bytes()).is_err());
        // A bearer token is accepted (and ignored).
        let auth = UPGRADE.replace("Host: h\r\n", "Host: h\r\nAuthorization: Bearer abc\r\n");
        assert!(parse_upgrade_any_path(auth.as_bytes()).unwrap().is_some());
    }
}
