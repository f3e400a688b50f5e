//! A minimal WebSocket client for the peers' subscribers (NATS, Socket.IO, Pushpin): the
//! upgrade on a connected socket, then frames decoded with the gateway's own decoder
//! (`ringgate::proto::ws`, client role) and masked frames sent with its encoder; plain
//! non-blocking `recv`/`send` on the socket, waiting on the runtime only when it would
//! block. Also the raw probe's reads (`read_more`), which need no framing.
//!
//! Why it exists: `ringgate::client` speaks Bannou on top of WebSocket and rejects a
//! binary frame that is not a Bannou message, which is all NATS sends; the peers need
//! the frames themselves. Nothing here is new protocol code: the codec is the gateway's.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use bytes::BytesMut;
use monoio::net::TcpStream;
use ringgate::io::{recv_into, Nb};
use ringgate::proto::frame::{encode_frame_into, MaskSeq, OpCode};
use ringgate::proto::ws::{Decoder, Limits, Message, Role};

/// Bytes asked of one read.
const READ_CHUNK: usize = 16 * 1024;

/// A connected socket with its read buffer.
pub struct Socket {
    pub stream: TcpStream,
    pub buf: BytesMut,
}

impl Socket {
    pub fn new(stream: TcpStream) -> Socket {
        Socket {
            stream,
            buf: BytesMut::with_capacity(4096),
        }
    }

    /// Reads what the socket holds (waiting for it if nothing is there): false at EOF.
    /// An empty buffer is freed before it waits (an idle subscriber holds none).
    pub async fn read_more(&mut self) -> io::Result<bool> {
        loop {
            self.buf.reserve(READ_CHUNK);
            match recv_into(self.stream.as_raw_fd(), &mut self.buf)? {
                Nb::Done(0) => return Ok(false),
                Nb::Done(_) => return Ok(true),
                Nb::WouldBlock => {
                    if self.buf.is_empty() {
                        self.buf = BytesMut::new();
                    }
                    self.stream.readable(false).await?
                }
            }
        }
    }

    /// Writes all of `data`.
    pub async fn write_all(&mut self, mut data: &[u8]) -> io::Result<()> {
        let fd = self.stream.as_raw_fd();
        while !data.is_empty() {
            // SAFETY: send reads at most data.len() bytes from a live slice.
            let n = unsafe {
                libc::send(
                    fd,
                    data.as_ptr().cast(),
                    data.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            if n >= 0 {
                data = &data[n as usize..];
                continue;
            }
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock {
                self.stream.writable(false).await?;
            } else {
                return Err(e);
            }
        }
        Ok(())
    }
}

/// A WebSocket client connection.
pub struct Ws {
    pub sock: Socket,
    decoder: Decoder,
    masks: MaskSeq,
    out: BytesMut,
}

/// Why an upgrade failed: `stage:reason` like `conn::Failure`.
pub fn upgrade_failure(reason: impl Into<String>) -> crate::conn::Failure {
    crate::conn::Failure {
        stage: "upgrade",
        reason: reason.into(),
        retryable: false,
    }
}

impl Ws {
    /// Sends the upgrade for `path` and reads the 101.
    pub async fn upgrade(
        stream: TcpStream,
        addr: SocketAddr,
        path: &str,
    ) -> Result<Ws, crate::conn::Failure> {
        let mut sock = Socket::new(stream);
        let seed = crate::sched::mono_ns() ^ (sock.stream.as_raw_fd() as u64).rotate_left(32);
        let key_bytes: [u8; 16] = (u128::from(seed) * 0x9E37_79B9_7F4A_7C15).to_le_bytes();
        use base64::Engine as _;
        let key = base64::engine::general_purpose::STANDARD.encode(key_bytes);
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        let io_fail = |e: io::Error| upgrade_failure(format!("io_{:?}", e.kind()).to_lowercase());
        sock.write_all(req.as_bytes()).await.map_err(io_fail)?;
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(&sock.buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let status = resp.code.unwrap_or(0);
                    if status != 101 {
                        return Err(upgrade_failure(format!("http_{status}")));
                    }
                    let accept = resp
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"))
                        .map(|h| h.value.to_vec());
                    if accept.as_deref()
                        != Some(ringgate::proto::handshake::accept_key(&key).as_bytes())
                    {
                        return Err(upgrade_failure("bad_accept"));
                    }
                    let _ = sock.buf.split_to(n);
                    return Ok(Ws {
                        sock,
                        decoder: Decoder::new(
                            Role::Client,
                            Limits {
                                max_message_bytes: 16 << 20,
                            },
                        ),
                        masks: MaskSeq::new(seed),
                        out: BytesMut::new(),
                    });
                }
                Ok(httparse::Status::Partial) => {
                    if !sock.read_more().await.map_err(io_fail)? {
                        return Err(upgrade_failure("closed"));
                    }
                }
                Err(_) => return Err(upgrade_failure("bad_response")),
            }
        }
    }

    /// The next whole message already read, if any.
    pub fn try_next(&mut self) -> io::Result<Option<Message>> {
        self.decoder
            .decode(&mut self.sock.buf)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
    }

    /// Queues one masked frame; [`Ws::flush`] sends what is queued.
    pub fn queue(&mut self, opcode: OpCode, payload: &[u8]) {
        let mask = self.masks.next_mask();
        encode_frame_into(&mut self.out, true, opcode, payload, Some(mask));
    }

    pub async fn flush(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut self.out);
        let r = self.sock.write_all(&out).await;
        self.out = out;
        self.out.clear();
        r
    }
}
