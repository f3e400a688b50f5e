//! A Bannou Connect v1 client on monoio: the upgrade (with the token by header, query or
//! subprotocol), the manifest, requests and responses, pushes, pings and close.
//!
//! Why in the library: the integration tests and the bench harness must speak the
//! protocol through ONE client (no second copy to drift). It is built on the same
//! sans-IO codecs as the server (client role: masked frames out, unmasked frames in),
//! and like a server connection it parks on readiness, so thousands of idle simulated
//! clients hold no read buffers.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use bytes::{Bytes, BytesMut};
use monoio::net::TcpStream;

use crate::proto::bannou::{RequestHeader, ResponseHeader, ServerMessage};
use crate::proto::event::MANIFEST_EVENT;
use crate::proto::frame::OpCode;
use crate::proto::guid::parse_guid;
use crate::proto::ws::{self, Decoder, Limits, Message, ProtocolError, Role};
use crate::sys::{self, Nb};

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
}

/// A message from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    Response(ResponseHeader, Bytes),
    Push(RequestHeader, Bytes),
    Text(Bytes),
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
    buf: BytesMut,
    decoder: Decoder,
    mask_seed: u64,
    next_message_id: u64,
    /// Reads in a row that found data without waiting (see `fill`).
    eager_reads: u32,
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

    /// Performs the upgrade on an already connected stream.
    pub async fn upgrade(
        stream: TcpStream,
        addr: SocketAddr,
        opts: &ConnectOptions,
    ) -> Result<Client, ClientError> {
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
            decoder: Decoder::new(
                Role::Client,
                Limits {
                    max_message_bytes: opts.max_message_bytes.unwrap_or(16 << 20),
                },
            ),
            mask_seed: u64::from_le_bytes(sys::random_bytes()) | 1,
            next_message_id: 1,
            eager_reads: 0,
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
                            if !client.fill().await? {
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
                    if !client.fill().await? {
                        return Err(ClientError::BadHandshake(
                            "connection closed during the upgrade".into(),
                        ));
                    }
                }
                Err(e) => return Err(ClientError::BadHandshake(e.to_string())),
            }
        }
    }

    /// Reads more bytes into the buffer; false at EOF.
    async fn fill(&mut self) -> Result<bool, ClientError> {
        let fd = self.stream.as_raw_fd();
        // A socket that always has data would let this task run forever without
        // returning to the runtime, starving the other connections of its thread.
        if self.eager_reads >= 16 {
            self.eager_reads = 0;
            yield_now().await;
        }
        loop {
            self.buf.reserve(16 * 1024);
            match sys::recv_into(fd, &mut self.buf) {
                Ok(Nb::Done(0)) => return Ok(false),
                Ok(Nb::Done(_)) => {
                    self.eager_reads += 1;
                    return Ok(true);
                }
                Ok(Nb::WouldBlock) => {
                    self.eager_reads = 0;
                    if self.buf.is_empty() {
                        // Hold no buffer while parked with nothing pending.
                        self.buf = BytesMut::new();
                    }
                    self.stream.readable(false).await?
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Writes all of `data`.
    pub async fn write_all(&mut self, mut data: &[u8]) -> Result<(), ClientError> {
        let fd = self.stream.as_raw_fd();
        while !data.is_empty() {
            match sys::send_vectored(fd, &[data])? {
                Nb::Done(n) => data = &data[n..],
                Nb::WouldBlock => self.stream.writable(false).await?,
            }
        }
        Ok(())
    }

    fn next_mask(&mut self) -> [u8; 4] {
        let mut x = self.mask_seed;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.mask_seed = x;
        (x as u32).to_le_bytes()
    }

    /// Sends one masked frame.
    pub async fn send_frame(
        &mut self,
        opcode: OpCode,
        payload: &[u8],
        fin: bool,
    ) -> Result<(), ClientError> {
        let mask = self.next_mask();
        let mut out = BytesMut::with_capacity(payload.len() + 14);
        crate::proto::frame::encode_frame_into(&mut out, fin, opcode, payload, Some(mask));
        self.write_all(&out).await
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

    /// Sends a request with the given header fields; returns its message id.
    pub async fn send_request(
        &mut self,
        flags: u8,
        channel: u16,
        sequence: u32,
        guid: [u8; 16],
        payload: &[u8],
    ) -> Result<u64, ClientError> {
        let message_id = self.next_message_id();
        let h = RequestHeader {
            flags,
            channel,
            sequence,
            guid,
            message_id,
        };
        let mut msg = Vec::with_capacity(31 + payload.len());
        msg.extend_from_slice(&h.encode());
        msg.extend_from_slice(payload);
        self.send_binary(&msg).await?;
        Ok(message_id)
    }

    /// The next message from the server (pings are answered, and returned too).
    pub async fn next(&mut self) -> Result<Incoming, ClientError> {
        loop {
            if let Some(msg) = self.decoder.decode(&mut self.buf)? {
                return Ok(match msg {
                    Message::Binary(b) => match ServerMessage::decode(&b) {
                        Ok(ServerMessage::Response(h, _)) => Incoming::Response(
                            h,
                            b.slice(crate::proto::bannou::RESPONSE_HEADER_LEN..),
                        ),
                        Ok(ServerMessage::Push(h, _)) => {
                            Incoming::Push(h, b.slice(crate::proto::bannou::REQUEST_HEADER_LEN..))
                        }
                        Err(e) => return Err(ClientError::Unexpected(e.to_string())),
                    },
                    Message::Text(t) => Incoming::Text(t),
                    Message::Ping(p) => {
                        let mask = self.next_mask();
                        let pong = ws::pong_frame(&p, Some(mask));
                        self.write_all(&pong).await?;
                        Incoming::Ping(p)
                    }
                    Message::Pong(p) => Incoming::Pong(p),
                    Message::Close(c) => Incoming::Close(
                        c.map(|c| (c.code, String::from_utf8_lossy(&c.reason).into_owned())),
                    ),
                });
            }
            if !self.fill().await? {
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
        let mask = self.next_mask();
        let frame = ws::close_frame(Some((code, "")), Some(mask));
        self.write_all(&frame).await?;
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

/// Returns to the runtime once, letting other tasks of the thread run.
async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}
