//! A Bannou Connect v1 client on monoio: the upgrade (with the token by header, query or
//! subprotocol), the manifest, requests and responses, pushes, pings and close.
//!
//! Why in the library: the integration tests and the bench harness must speak the
//! protocol through ONE client (no second copy to drift). It is built on the same
//! sans-IO codecs as the server (client role: masked frames out, unmasked frames in),
//! and like a server connection it parks on readiness, so thousands of idle simulated
//! clients hold no read buffers.
//!
//! Two ways to drive it:
//!
//! * **One message at a time** (`send_request`, `call`, `next`, `response`): each send
//!   is a syscall and each `next` reads until a message is complete. Simple, and what
//!   the integration tests use.
//! * **Batched** (`queue_request` / `queue_frame`, `flush` or `flush_batched`,
//!   `readable`, `try_read`, `try_next`): frames are encoded (and masked in place)
//!   straight into the client's write buffer without a syscall; `flush` writes the whole
//!   buffer with one `send` when the socket takes it, `flush_batched` hands it to the
//!   runtime as one owned-buffer write (on io_uring, submitted with every other
//!   connection's writes of the thread in one `io_uring_enter`). On the read side one
//!   `try_read` takes whatever the socket holds and `try_next` decodes only what is
//!   already buffered. A load generator sends everything that is due in one write and
//!   handles every response of one read before it waits again. Why: one small frame per
//!   syscall caps a single core at ~150k messages/s (docs/DESIGN.md §1 measures the same for
//!   the server side), far below what the gateway is asked to do, so a harness that did
//!   that would measure itself.
//!
//! Pings are answered in both modes: `try_next` queues the pong in the write buffer
//! (it goes out with the next `flush`), `next` queues it and flushes at once. Frames
//! in the write buffer are always whole, so a pong never splits a request. The
//! direct writes (`write_all`, and so `send_frame`/`send_request`) flush what is
//! queued first, keeping the order in which frames were handed over.
//!
//! Memory: `fill_once` (and so `next`) frees an empty read buffer and an empty write
//! buffer before it parks; a batched caller does the same with `release_buffers` before
//! a long wait. Between flushes the write buffer keeps its capacity, so a busy client
//! encodes without allocating.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use bytes::{Bytes, BytesMut};
use monoio::io::AsyncWriteRentExt;
use monoio::net::TcpStream;

use crate::proto::bannou::{RequestHeader, ResponseHeader, ServerMessage, REQUEST_HEADER_LEN};
use crate::proto::event::MANIFEST_EVENT;
use crate::proto::frame::{append_masked, close_payload, MaskSeq, OpCode};
use crate::proto::guid::parse_guid;
use crate::proto::ws::{Decoder, Limits, Message, ProtocolError, Role};
use crate::rt::sys::{self, Nb};
use crate::tls::{TlsSession, Wire};

/// Bytes reserved in the read buffer for one read.
const READ_CHUNK: usize = 16 * 1024;
/// A write buffer that grew past this is freed after its flush (a burst of large
/// messages does not pin its peak).
const MAX_KEPT_WRITE_BUF: usize = 256 * 1024;

/// What one non-blocking read found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOutcome {
    /// This many bytes were added to the read buffer.
    Data(usize),
    /// Nothing to read now.
    WouldBlock,
    /// The server closed its side.
    Eof,
}

/// Where the client puts its token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TokenVia {
    /// `Authorization: Bearer <token>`.
    #[default]
    Header,
    /// `?token=<token>` on the upgrade path.
    Query,
    /// A `Sec-WebSocket-Protocol` entry `bearer.<token>` (after `bannou.v1`).
    Protocol,
}

/// How to connect.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// Upgrade path; `/connect` when empty.
    pub path: String,
    pub token: Option<String>,
    pub token_via: TokenVia,
    pub origin: Option<String>,
    /// Extra request header lines, sent as given.
    pub extra_headers: Vec<(String, String)>,
    /// Largest message accepted from the server (default 16 MiB).
    pub max_message_bytes: Option<usize>,
    /// A raw route's client: binary messages are returned as they are
    /// ([`Incoming::Binary`]), not decoded as Bannou frames.
    pub raw: bool,
    /// `wss://`: the TLS handshake is made before the upgrade.
    pub tls: Option<ClientTls>,
}

/// How a `wss://` client makes its TLS connection.
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// Roots and protocols ([`ClientTls::with_ca_file`] builds one).
    pub config: std::sync::Arc<rustls::ClientConfig>,
    /// The name the server's certificate must hold (SNI).
    pub server_name: String,
}

impl ClientTls {
    /// Verifies the server against the system's root certificates.
    pub fn system_roots(server_name: &str) -> Result<ClientTls, crate::tls::TlsError> {
        Ok(ClientTls {
            config: crate::tls::client_config(None)?,
            server_name: server_name.to_string(),
        })
    }

    /// Verifies the server against the CA certificates in `ca_file` (PEM).
    pub fn with_ca_file(
        ca_file: &std::path::Path,
        server_name: &str,
    ) -> Result<ClientTls, crate::tls::TlsError> {
        Ok(ClientTls {
            config: crate::tls::client_config(Some(ca_file))?,
            server_name: server_name.to_string(),
        })
    }
}

/// What went wrong on the client side.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("upgrade refused with HTTP {status}")]
    Rejected { status: u16, body: String },
    #[error("bad upgrade response: {0}")]
    BadHandshake(String),
    #[error("protocol error from server: {0}")]
    Protocol(#[from] ProtocolError),
    #[error("connection closed by server (code {code:?})")]
    Closed { code: Option<u16>, reason: String },
    #[error("unexpected message: {0}")]
    Unexpected(String),
    #[error("TLS: {0}")]
    Tls(String),
}

/// A message from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    Response(ResponseHeader, Bytes),
    Push(RequestHeader, Bytes),
    Text(Bytes),
    /// A binary message, as it came (raw routes: [`ConnectOptions::raw`]).
    Binary(Bytes),
    Ping(Bytes),
    Pong(Bytes),
    Close(Option<(u16, String)>),
}

/// One API of a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Api {
    pub guid: [u8; 16],
    pub endpoint: String,
    pub service: String,
}

/// A capability manifest as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub session_id: String,
    pub version: u64,
    pub reason: String,
    pub apis: Vec<Api>,
    /// The GUID other clients address this connection by (`peerGuid`; peer messages,
    /// flag 0x20), if the manifest carries one.
    pub peer_guid: Option<[u8; 16]>,
    /// The token that resumes the session after a drop (`Authorization: Reconnect`),
    /// if the gateway keeps sessions.
    pub reconnection_token: Option<String>,
    /// On a resume: events that arrived while away and were dropped (0: none).
    pub events_lost: u64,
}

impl Manifest {
    /// Parses a manifest push payload.
    pub fn parse(payload: &[u8]) -> Result<Manifest, ClientError> {
        let v: serde_json::Value = serde_json::from_slice(payload)
            .map_err(|e| ClientError::Unexpected(format!("manifest is not JSON: {e}")))?;
        if v["eventName"] != MANIFEST_EVENT {
            return Err(ClientError::Unexpected(format!(
                "expected a manifest, got event {}",
                v["eventName"]
            )));
        }
        let mut apis = Vec::new();
        for a in v["availableApis"].as_array().into_iter().flatten() {
            let guid = a["serviceId"]
                .as_str()
                .and_then(parse_guid)
                .ok_or_else(|| ClientError::Unexpected(format!("bad serviceId in {a}")))?;
            apis.push(Api {
                guid,
                endpoint: a["endpoint"].as_str().unwrap_or_default().to_string(),
                service: a["service"].as_str().unwrap_or_default().to_string(),
            });
        }
        Ok(Manifest {
            session_id: v["sessionId"].as_str().unwrap_or_default().to_string(),
            version: v["version"].as_u64().unwrap_or_default(),
            reason: v["reason"].as_str().unwrap_or_default().to_string(),
            apis,
            peer_guid: v["peerGuid"].as_str().and_then(parse_guid),
            reconnection_token: v["reconnectionToken"].as_str().map(str::to_string),
            events_lost: v["eventsLost"].as_u64().unwrap_or_default(),
        })
    }

    /// The GUID of `endpoint`, if listed.
    pub fn guid(&self, endpoint: &str) -> Option<[u8; 16]> {
        self.apis
            .iter()
            .find(|a| a.endpoint == endpoint)
            .map(|a| a.guid)
    }
}

/// A connected client.
pub struct Client {
    stream: TcpStream,
    /// Bytes read and not yet decoded.
    buf: BytesMut,
    /// Whole frames encoded and not yet written (see `flush`).
    wbuf: Vec<u8>,
    decoder: Decoder,
    masks: MaskSeq,
    next_message_id: u64,
    /// Reads in a row that found data without waiting (see `fill`).
    eager_reads: u32,
    /// Binary messages are returned undecoded (`ConnectOptions::raw`).
    raw: bool,
    /// The TLS session of a `wss://` client.
    tls: Option<Box<TlsSession>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

impl Client {
    /// Opens a TCP connection to `addr` and performs the upgrade.
    pub async fn connect(addr: SocketAddr, opts: &ConnectOptions) -> Result<Client, ClientError> {
        let stream = TcpStream::connect(addr).await?;
        let _ = stream.set_nodelay(true);
        Self::upgrade(stream, addr, opts).await
    }

    /// The TLS handshake of a `wss://` client (none for `ws://`).
    async fn tls_handshake(
        stream: &TcpStream,
        opts: &ConnectOptions,
    ) -> Result<Option<Box<TlsSession>>, ClientError> {
        let Some(t) = &opts.tls else {
            return Ok(None);
        };
        let mut tls = TlsSession::client(&t.config, &t.server_name)
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        crate::tls::handshake(&mut tls, stream)
            .await
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        Ok(Some(Box::new(tls)))
    }

    /// Performs the upgrade on an already connected stream.
    pub async fn upgrade(
        stream: TcpStream,
        addr: SocketAddr,
        opts: &ConnectOptions,
    ) -> Result<Client, ClientError> {
        let tls = Self::tls_handshake(&stream, opts).await?;
        let key_bytes: [u8; 16] = sys::random_bytes();
        let key = base64_encode(&key_bytes);
        let mut path = if opts.path.is_empty() {
            "/connect".to_string()
        } else {
            opts.path.clone()
        };
        let mut req = String::with_capacity(512);
        let mut extra = String::new();
        if let Some(t) = &opts.token {
            match opts.token_via {
                TokenVia::Header => extra.push_str(&format!("Authorization: Bearer {t}\r\n")),
                TokenVia::Query => {
                    path.push(if path.contains('?') { '&' } else { '?' });
                    path.push_str("token=");
                    path.push_str(t);
                }
                TokenVia::Protocol => extra.push_str(&format!(
                    "Sec-WebSocket-Protocol: bannou.v1, bearer.{t}\r\n"
                )),
            }
        }
        if let Some(o) = &opts.origin {
            extra.push_str(&format!("Origin: {o}\r\n"));
        }
        for (k, v) in &opts.extra_headers {
            extra.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str(&format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        ));
        let mut client = Client {
            stream,
            buf: BytesMut::with_capacity(4096),
            wbuf: Vec::new(),
            decoder: Decoder::new(
                Role::Client,
                Limits {
                    max_message_bytes: opts.max_message_bytes.unwrap_or(16 << 20),
                },
            ),
            masks: MaskSeq::new(u64::from_le_bytes(sys::random_bytes())),
            next_message_id: 1,
            eager_reads: 0,
            raw: opts.raw,
            tls,
        };
        client.write_all(req.as_bytes()).await?;
        // Read the response head.
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(&client.buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let status = resp.code.unwrap_or(0);
                    if status != 101 {
                        // Read the (small) error body for the caller.
                        let body_len = resp
                            .headers
                            .iter()
                            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                            .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
                            .unwrap_or(0usize);
                        while client.buf.len() < n + body_len {
                            if !client.fill_once().await? {
                                break;
                            }
                        }
                        let end = (n + body_len).min(client.buf.len());
                        let body = String::from_utf8_lossy(&client.buf[n..end]).into_owned();
                        return Err(ClientError::Rejected { status, body });
                    }
                    let accept = resp
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"))
                        .map(|h| h.value.to_vec());
                    let want = crate::proto::handshake::accept_key(&key);
                    if accept.as_deref() != Some(want.as_bytes()) {
                        return Err(ClientError::BadHandshake(
                            "missing or wrong Sec-WebSocket-Accept".into(),
                        ));
                    }
                    let _ = client.buf.split_to(n);
                    return Ok(client);
                }
                Ok(httparse::Status::Partial) => {
                    if client.buf.len() > 16 * 1024 {
                        return Err(ClientError::BadHandshake("response head too large".into()));
                    }
                    if !client.fill_once().await? {
                        return Err(ClientError::BadHandshake(
                            "connection closed during the upgrade".into(),
                        ));
                    }
                }
                Err(e) => return Err(ClientError::BadHandshake(e.to_string())),
            }
        }
    }

    /// Reads once, waiting for readability if nothing is there yet: false at EOF, else
    /// at least one byte was added to the read buffer. Before it parks, an empty read
    /// buffer and an empty write buffer are freed (an idle client holds neither).
    pub async fn fill_once(&mut self) -> Result<bool, ClientError> {
        // A socket that always has data would let this task run forever without
        // returning to the runtime, starving the other connections of its thread.
        if self.eager_reads >= 16 {
            self.eager_reads = 0;
            crate::rt::task::yield_now().await;
        }
        loop {
            match self.try_read()? {
                ReadOutcome::Eof => return Ok(false),
                ReadOutcome::Data(_) => {
                    self.eager_reads += 1;
                    return Ok(true);
                }
                ReadOutcome::WouldBlock => {
                    self.eager_reads = 0;
                    self.release_buffers();
                    self.stream.readable(false).await?
                }
            }
        }
    }

    /// One non-blocking read into the read buffer (up to 16 KiB): what the socket holds
    /// now, without waiting. Decode it with [`Client::try_next`].
    pub fn try_read(&mut self) -> Result<ReadOutcome, ClientError> {
        self.buf.reserve(READ_CHUNK);
        let mut wire = Wire::new(self.stream.as_raw_fd(), self.tls.as_deref_mut());
        match wire.recv_into(&mut self.buf) {
            Ok(Nb::Done(0)) => Ok(ReadOutcome::Eof),
            Ok(Nb::Done(n)) => Ok(ReadOutcome::Data(n)),
            Ok(Nb::WouldBlock) => Ok(ReadOutcome::WouldBlock),
            Err(e) => Err(e.into()),
        }
    }

    /// Waits until the socket is readable (or has hit EOF or an error), reading
    /// nothing: one io_uring poll. Race it with a timer, then [`Client::try_read`]. It
    /// borrows the client only while it waits, so the client is free again afterwards.
    pub async fn readable(&self) -> Result<(), ClientError> {
        Ok(self.stream.readable(false).await?)
    }

    /// Bytes read and not yet decoded (a partial frame, or messages `try_next` has not
    /// taken yet).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Frees the read buffer if it holds nothing and the write buffer if it is empty:
    /// call before a long wait, so an idle client holds no buffers.
    pub fn release_buffers(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > 0 {
            self.buf = BytesMut::new();
        }
        if self.wbuf.is_empty() && self.wbuf.capacity() > 0 {
            self.wbuf = Vec::new();
        }
    }

    /// Writes all of `data` (after whatever is queued, which is flushed first).
    pub async fn write_all(&mut self, mut data: &[u8]) -> Result<(), ClientError> {
        self.flush().await?;
        let fd = self.stream.as_raw_fd();
        while !data.is_empty() {
            match Wire::new(fd, self.tls.as_deref_mut()).send_vectored(&[data])? {
                Nb::Done(n) => data = &data[n..],
                Nb::WouldBlock => self.stream.writable(false).await?,
            }
        }
        self.drain_tls().await
    }

    /// Writes everything queued: one `send` when the socket takes it all, else it waits
    /// for writability and goes on. Cancel-safe: bytes not yet written stay queued (and
    /// frames stay whole on the wire, since a frame is only ever written in order).
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        let fd = self.stream.as_raw_fd();
        while !self.wbuf.is_empty() {
            match Wire::new(fd, self.tls.as_deref_mut()).send_vectored(&[&self.wbuf])? {
                Nb::Done(n) if n == self.wbuf.len() => self.wbuf.clear(),
                Nb::Done(n) => {
                    self.wbuf.drain(..n);
                }
                Nb::WouldBlock => self.stream.writable(false).await?,
            }
        }
        if self.wbuf.capacity() > MAX_KEPT_WRITE_BUF {
            self.wbuf = Vec::new();
        }
        self.drain_tls().await
    }

    /// Waits until the TLS session has written everything it encrypted (nothing to do
    /// for `ws://`).
    async fn drain_tls(&mut self) -> Result<(), ClientError> {
        let fd = self.stream.as_raw_fd();
        while !Wire::new(fd, self.tls.as_deref_mut()).drain()? {
            self.stream.writable(false).await?;
        }
        Ok(())
    }

    /// Writes everything queued as one owned-buffer write on the runtime (on io_uring a
    /// send operation, issued together with the other tasks' operations of the thread in
    /// one `io_uring_enter`) instead of a `send` call right away. Under load this is much
    /// cheaper than [`Client::flush`]: the sends of many connections leave in one burst
    /// rather than each interleaved with the task that queued it (measured with
    /// `ringgate-bench rpc --rate max` against `ws-echo`: ~1.3x the messages per
    /// second). The send happens at the runtime's next submission, not at the call. Not
    /// cancel-safe: the buffer belongs to the operation until it completes, so a
    /// `flush_batched` that is dropped unfinished leaves the stream in an unknown state
    /// (only drop it with the connection). The write buffer's memory is kept for reuse.
    pub async fn flush_batched(&mut self) -> Result<(), ClientError> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        if self.tls.is_some() {
            // (An owned-buffer write would bypass the TLS session.)
            return self.flush().await;
        }
        let (res, mut buf) = self.stream.write_all(std::mem::take(&mut self.wbuf)).await;
        buf.clear();
        if buf.capacity() <= MAX_KEPT_WRITE_BUF {
            self.wbuf = buf;
        }
        res?;
        Ok(())
    }

    /// Bytes queued for the next [`Client::flush`].
    pub fn queued(&self) -> usize {
        self.wbuf.len()
    }

    /// Appends one masked frame whose payload is `parts` concatenated: the header, then
    /// the parts copied once into the write buffer and masked there in place.
    fn encode_frame(&mut self, opcode: OpCode, fin: bool, parts: &[&[u8]]) {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let mask = self.masks.next_mask();
        append_masked(&mut self.wbuf, fin, opcode, mask, len, |out| {
            for p in parts {
                out.extend_from_slice(p);
            }
        });
    }

    /// Queues one masked frame (no syscall; see [`Client::flush`]).
    pub fn queue_frame(&mut self, opcode: OpCode, payload: &[u8], fin: bool) {
        self.encode_frame(opcode, fin, &[payload]);
    }

    /// Queues a request with the given header fields (no syscall; see
    /// [`Client::flush`]); returns its message id.
    pub fn queue_request(
        &mut self,
        flags: u8,
        channel: u16,
        sequence: u32,
        guid: [u8; 16],
        payload: &[u8],
    ) -> u64 {
        let message_id = self.next_message_id();
        let h = RequestHeader {
            flags,
            channel,
            sequence,
            guid,
            message_id,
        };
        self.encode_frame(OpCode::Binary, true, &[&h.encode(), payload]);
        message_id
    }

    /// Sends one masked frame (after whatever is queued).
    pub async fn send_frame(
        &mut self,
        opcode: OpCode,
        payload: &[u8],
        fin: bool,
    ) -> Result<(), ClientError> {
        self.queue_frame(opcode, payload, fin);
        self.flush().await
    }

    /// Sends one binary message.
    pub async fn send_binary(&mut self, msg: &[u8]) -> Result<(), ClientError> {
        self.send_frame(OpCode::Binary, msg, true).await
    }

    /// A fresh message id for a request.
    pub fn next_message_id(&mut self) -> u64 {
        let id = self.next_message_id;
        self.next_message_id += 1;
        id
    }

    /// Sends a request with the given header fields (after whatever is queued); returns
    /// its message id.
    pub async fn send_request(
        &mut self,
        flags: u8,
        channel: u16,
        sequence: u32,
        guid: [u8; 16],
        payload: &[u8],
    ) -> Result<u64, ClientError> {
        let message_id = self.queue_request(flags, channel, sequence, guid, payload);
        self.flush().await?;
        Ok(message_id)
    }

    /// The next complete message already in the read buffer, without reading or
    /// waiting: `Ok(None)` when what is buffered is not a whole message. A ping is
    /// answered by queueing the pong (it goes out with the next [`Client::flush`]) and
    /// returned too.
    pub fn try_next(&mut self) -> Result<Option<Incoming>, ClientError> {
        let Some(msg) = self.decoder.decode(&mut self.buf)? else {
            return Ok(None);
        };
        Ok(Some(match msg {
            Message::Binary(b) if self.raw => Incoming::Binary(b),
            Message::Binary(b) => match ServerMessage::decode(&b) {
                Ok(ServerMessage::Response(h, _)) => {
                    Incoming::Response(h, b.slice(crate::proto::bannou::RESPONSE_HEADER_LEN..))
                }
                Ok(ServerMessage::Push(h, _)) => Incoming::Push(h, b.slice(REQUEST_HEADER_LEN..)),
                Err(e) => return Err(ClientError::Unexpected(e.to_string())),
            },
            Message::Text(t) => Incoming::Text(t),
            Message::Ping(p) => {
                self.queue_frame(OpCode::Pong, &p, true);
                Incoming::Ping(p)
            }
            Message::Pong(p) => Incoming::Pong(p),
            Message::Close(c) => Incoming::Close(
                c.map(|c| (c.code, String::from_utf8_lossy(&c.reason).into_owned())),
            ),
        }))
    }

    /// The next message from the server (pings are answered at once, flushing whatever
    /// is queued with the pong, and returned too).
    pub async fn next(&mut self) -> Result<Incoming, ClientError> {
        loop {
            if let Some(msg) = self.try_next()? {
                if matches!(msg, Incoming::Ping(_)) {
                    self.flush().await?;
                }
                return Ok(msg);
            }
            if !self.fill_once().await? {
                return Err(ClientError::Closed {
                    code: None,
                    reason: "EOF".into(),
                });
            }
        }
    }

    /// Waits for the next capability manifest push (skipping anything else but a close).
    pub async fn manifest(&mut self) -> Result<Manifest, ClientError> {
        loop {
            match self.next().await? {
                Incoming::Push(_, payload) => {
                    let v: serde_json::Value = serde_json::from_slice(&payload).unwrap_or_default();
                    if v["eventName"] == MANIFEST_EVENT {
                        return Manifest::parse(&payload);
                    }
                }
                Incoming::Close(c) => {
                    let (code, reason) = c.unwrap_or((1005, String::new()));
                    return Err(ClientError::Closed {
                        code: Some(code),
                        reason,
                    });
                }
                _ => {}
            }
        }
    }

    /// Waits for the response to `message_id` (skipping pushes and other responses).
    pub async fn response(
        &mut self,
        message_id: u64,
    ) -> Result<(ResponseHeader, Bytes), ClientError> {
        loop {
            match self.next().await? {
                Incoming::Response(h, p) if h.message_id == message_id => return Ok((h, p)),
                Incoming::Close(c) => {
                    let (code, reason) = c.unwrap_or((1005, String::new()));
                    return Err(ClientError::Closed {
                        code: Some(code),
                        reason,
                    });
                }
                _ => {}
            }
        }
    }

    /// Calls an endpoint on channel 0 and waits for its response.
    pub async fn call(
        &mut self,
        guid: [u8; 16],
        payload: &[u8],
    ) -> Result<(ResponseHeader, Bytes), ClientError> {
        let id = self.send_request(0, 0, 0, guid, payload).await?;
        self.response(id).await
    }

    /// Sends a close frame and waits for the server's close (or EOF).
    pub async fn close(&mut self, code: u16) -> Result<Option<(u16, String)>, ClientError> {
        self.queue_frame(OpCode::Close, &close_payload(code, ""), true);
        self.flush().await?;
        loop {
            match self.next().await {
                Ok(Incoming::Close(c)) => return Ok(c),
                Ok(_) => {}
                Err(ClientError::Closed { .. }) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::bannou::{ResponseCode, ResponseHeader};
    use crate::proto::handshake;
    use crate::proto::ws::{encode_message_into, ping_frame};
    use std::io::{Read, Write};

    /// The server end of one test connection: blocking std socket, our server codec.
    struct Peer {
        s: std::net::TcpStream,
        buf: BytesMut,
        dec: Decoder,
    }

    impl Peer {
        /// One blocking read; every complete message it completes, and the byte count.
        fn read_messages(&mut self) -> (Vec<Message>, usize) {
            let mut chunk = vec![0u8; 256 * 1024];
            let n = self.s.read(&mut chunk).unwrap();
            self.buf.extend_from_slice(&chunk[..n]);
            let mut out = Vec::new();
            while let Some(m) = self.dec.decode(&mut self.buf).unwrap() {
                out.push(m);
            }
            (out, n)
        }

        fn send(&mut self, bytes: &[u8]) {
            self.s.write_all(bytes).unwrap();
        }
    }

    /// A one-connection server on 127.0.0.1: does the upgrade, then runs `script`.
    /// Join it at the end of the test: its assertions fail the test then.
    fn serve_one(
        script: impl FnOnce(Peer) + Send + 'static,
    ) -> (SocketAddr, std::thread::JoinHandle<()>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            s.set_nodelay(true).unwrap();
            let mut head = Vec::new();
            let (req, n) = loop {
                let mut c = [0u8; 1024];
                let k = s.read(&mut c).unwrap();
                head.extend_from_slice(&c[..k]);
                if let Some(r) = handshake::parse_upgrade(&head, "/connect").unwrap() {
                    break r;
                }
            };
            s.write_all(&handshake::switching_protocols(&req)).unwrap();
            let limits = Limits {
                max_message_bytes: 1 << 20,
            };
            script(Peer {
                s,
                buf: BytesMut::from(&head[n..]),
                dec: Decoder::new(Role::Server, limits),
            });
        });
        (addr, server)
    }

    fn run<F: std::future::Future>(f: F) -> F::Output {
        monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
            .block_on(f)
    }

    /// Waits for readability and reads once.
    async fn read_once(c: &mut Client) {
        c.readable().await.unwrap();
        assert_ne!(c.try_read().unwrap(), ReadOutcome::Eof);
    }

    #[test]
    fn queue_request_encodes_a_masked_frame_and_sends_nothing() {
        let (addr, server) = serve_one(|mut p| {
            // Nothing arrives until the client flushes: then exactly its one frame.
            let (msgs, _) = p.read_messages();
            assert_eq!(msgs.len(), 1);
        });
        run(async move {
            let mut c = Client::connect(addr, &ConnectOptions::default())
                .await
                .unwrap();
            let guid = [7u8; 16];
            let id = c.queue_request(0x01, 3, 9, guid, b"{\"a\":1}");
            assert_eq!(id, 1);
            assert_eq!(c.queued(), 2 + 4 + 31 + 7);
            // A server decodes it (so it is masked, and unmasks to the request).
            let mut wire = BytesMut::from(&c.wbuf[..]);
            assert_eq!(wire[1] & 0x80, 0x80, "client frames are masked");
            let mut dec = Decoder::new(Role::Server, Limits::default());
            let Some(Message::Binary(b)) = dec.decode(&mut wire).unwrap() else {
                panic!("not one binary message");
            };
            let h = RequestHeader::decode(&b).unwrap();
            assert_eq!((h.flags, h.channel, h.sequence, h.guid), (1, 3, 9, guid));
            assert_eq!(h.message_id, id);
            assert_eq!(&b[REQUEST_HEADER_LEN..], b"{\"a\":1}");
            // Queued bytes are not released; after the flush nothing is queued.
            c.release_buffers();
            assert_eq!(c.queued(), 2 + 4 + 31 + 7);
            c.flush().await.unwrap();
            assert_eq!(c.queued(), 0);
        });
        server.join().unwrap();
    }

    #[test]
    fn a_hundred_queued_requests_go_out_in_one_flush_and_come_back_through_try_next() {
        let (addr, server) = serve_one(|mut p| {
            // One flush = one send: the server's first read holds all 100 frames.
            let (msgs, _) = p.read_messages();
            assert_eq!(msgs.len(), 100, "the batch arrived in one piece");
            let mut out = BytesMut::new();
            for m in msgs {
                let Message::Binary(b) = m else { panic!() };
                let req = RequestHeader::decode(&b).unwrap();
                let mut msg = ResponseHeader::answering(&req, ResponseCode::Ok)
                    .encode()
                    .to_vec();
                msg.extend_from_slice(&b[REQUEST_HEADER_LEN..]);
                encode_message_into(&mut out, OpCode::Binary, &msg, None);
            }
            p.send(&out);
            let _ = p.read_messages();
        });
        run(async move {
            let mut c = Client::connect(addr, &ConnectOptions::default())
                .await
                .unwrap();
            let ids: Vec<u64> = (0..100u32)
                .map(|i| c.queue_request(0, 0, i, [1; 16], format!("p{i}").as_bytes()))
                .collect();
            assert_eq!(ids, (1..=100).collect::<Vec<_>>());
            c.flush().await.unwrap();
            let mut got = Vec::new();
            while got.len() < 100 {
                match c.try_next().unwrap() {
                    Some(Incoming::Response(h, p)) => got.push((h.message_id, h.sequence, p)),
                    Some(other) => panic!("{other:?}"),
                    None => read_once(&mut c).await,
                }
            }
            for (i, (id, seq, p)) in got.into_iter().enumerate() {
                assert_eq!((id, seq), (i as u64 + 1, i as u32));
                assert_eq!(p, format!("p{i}").as_bytes());
            }
            assert_eq!(c.try_next().unwrap(), None);
            assert_eq!(c.buffered(), 0);
        });
        server.join().unwrap();
    }

    #[test]
    fn try_next_answers_a_ping_by_queueing_the_pong_for_the_next_flush() {
        let (addr, server) = serve_one(|mut p| {
            p.send(&ping_frame(b"are-you-there", None));
            let mut seen = Vec::new();
            while seen.len() < 2 {
                seen.extend(p.read_messages().0);
            }
            // The pong went out with the request queued before it, after it.
            assert!(matches!(&seen[0], Message::Binary(_)), "{seen:?}");
            assert_eq!(seen[1], Message::Pong(Bytes::from_static(b"are-you-there")));
        });
        run(async move {
            let mut c = Client::connect(addr, &ConnectOptions::default())
                .await
                .unwrap();
            c.queue_request(0, 0, 0, [0; 16], b"{}");
            let before = c.queued();
            let ping = loop {
                if let Some(m) = c.try_next().unwrap() {
                    break m;
                }
                read_once(&mut c).await;
            };
            assert_eq!(ping, Incoming::Ping(Bytes::from_static(b"are-you-there")));
            assert_eq!(
                c.queued(),
                before + 2 + 4 + 13,
                "the pong is queued, not sent"
            );
            c.flush().await.unwrap();
        });
        server.join().unwrap();
    }

    #[test]
    fn try_next_leaves_a_partial_frame_for_the_next_read() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (addr, server) = serve_one(move |mut p| {
            let mut msg = ResponseHeader {
                flags: 0x40,
                channel: 0,
                sequence: 0,
                message_id: 42,
                code: 0,
            }
            .encode()
            .to_vec();
            msg.extend_from_slice(b"done");
            let mut out = BytesMut::new();
            encode_message_into(&mut out, OpCode::Binary, &msg, None);
            p.send(&out[..5]);
            rx.recv().unwrap();
            p.send(&out[5..]);
            let _ = p.read_messages();
        });
        run(async move {
            let mut c = Client::connect(addr, &ConnectOptions::default())
                .await
                .unwrap();
            while c.buffered() < 5 {
                read_once(&mut c).await;
            }
            assert_eq!(c.try_next().unwrap(), None);
            assert_eq!(c.try_read().unwrap(), ReadOutcome::WouldBlock);
            // A partial frame keeps its buffer.
            c.release_buffers();
            assert_eq!(c.buffered(), 5);
            tx.send(()).unwrap();
            let msg = loop {
                if let Some(m) = c.try_next().unwrap() {
                    break m;
                }
                read_once(&mut c).await;
            };
            let Incoming::Response(h, p) = msg else {
                panic!("{msg:?}")
            };
            assert_eq!((h.message_id, &p[..]), (42, &b"done"[..]));
        });
        server.join().unwrap();
    }

    #[test]
    fn flush_batched_writes_everything_queued_and_keeps_the_buffer() {
        let (addr, server) = serve_one(|mut p| {
            let mut n = 0;
            while n < 3 {
                n += p.read_messages().0.len();
            }
        });
        run(async move {
            let mut c = Client::connect(addr, &ConnectOptions::default())
                .await
                .unwrap();
            for i in 0..3 {
                c.queue_request(0, 0, i, [0; 16], b"{}");
            }
            c.flush_batched().await.unwrap();
            assert_eq!(c.queued(), 0);
            assert!(c.wbuf.capacity() > 0, "kept for the next batch");
            // Nothing queued: nothing to do.
            c.flush_batched().await.unwrap();
            c.release_buffers();
            assert_eq!(c.wbuf.capacity(), 0);
        });
        server.join().unwrap();
    }

    #[test]
    fn send_request_goes_out_after_the_requests_queued_before_it() {
        let (addr, server) = serve_one(|mut p| {
            let mut ids = Vec::new();
            while ids.len() < 3 {
                for m in p.read_messages().0 {
                    let Message::Binary(b) = m else { panic!() };
                    ids.push(RequestHeader::decode(&b).unwrap().sequence);
                }
            }
            assert_eq!(ids, vec![1, 2, 3]);
        });
        run(async move {
            let mut c = Client::connect(addr, &ConnectOptions::default())
                .await
                .unwrap();
            c.queue_request(0, 0, 1, [0; 16], b"");
            c.queue_request(0, 0, 2, [0; 16], b"");
            c.send_request(0, 0, 3, [0; 16], b"").await.unwrap();
            assert_eq!(c.queued(), 0);
        });
        server.join().unwrap();
    }
}
