//! One connection of the link, from its dial to its end: connect, the TLS handshake
//! (`wss://`), upgrade (subprotocol `ringgate-link.v1`), then the reader loop, which decodes WebSocket messages and hands
//! each link message to `actions`, and the reasons a connection ends ([`LinkEnd`]),
//! with the close frame each one sends.

use std::cell::Cell;
use std::io;
use std::os::fd::AsRawFd;
use std::rc::Rc;

use bytes::BytesMut;
use monoio::net::TcpStream;

use crate::proto::frame::{close_payload, OpCode, CLOSE_NORMAL, CLOSE_PROTOCOL_ERROR};
use crate::proto::link::{self as wire, FromBackend, LinkError, ReplyMsg, UpgradeError};
use crate::proto::ws::{self, Decoder, Limits, Message, Role};
use crate::rt::sys::{self, Nb};
use crate::tls::{TlsSession, Wire};

use super::inner::{Inner, READ_CHUNK};
use super::writer::write_loop;

/// Reads per readiness wakeup before other tasks run.
const READS_PER_WAKEUP: usize = 8;

/// Why a link connection ended (logged).
#[derive(Debug, thiserror::Error)]
pub(super) enum LinkEnd {
    #[error("connect failed: {0}")]
    Connect(io::Error),
    #[error("connect timed out")]
    ConnectTimeout,
    #[error("TLS handshake with {host} failed: {error}")]
    Tls { host: String, error: io::Error },
    #[error("upgrade refused: {0}")]
    Upgrade(#[from] UpgradeError),
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    #[error("backend closed the connection")]
    Eof,
    #[error("backend closed the link (close code {0:?})")]
    Closed(Option<u16>),
    #[error("WebSocket protocol error: {0}")]
    Ws(#[from] ws::ProtocolError),
    #[error("bad action from backend: {0}")]
    Action(#[from] LinkError),
    #[error("text message from backend (link messages are binary)")]
    Text,
    #[error("link retired by a registry update")]
    Retired,
}

impl LinkEnd {
    /// The close frame ringgate sends on the way out, if the connection still takes one:
    /// the decoder's code for a WebSocket violation, 1002 for a bad link message, 1000
    /// for an orderly end (retired, or answering the backend's close).
    fn close_frame(&self) -> Option<(u16, &'static str)> {
        match self {
            LinkEnd::Ws(e) => Some((e.close_code(), "")),
            LinkEnd::Action(_) | LinkEnd::Text => Some((CLOSE_PROTOCOL_ERROR, "bad link message")),
            LinkEnd::Retired | LinkEnd::Closed(_) => Some((CLOSE_NORMAL, "")),
            _ => None,
        }
    }
}

impl Inner {
    /// Handles one message from the backend.
    fn on_message(&self, msg: Message) -> Result<(), LinkEnd> {
        match msg {
            // REPLY, most of what a link carries, is decoded on its own.
            Message::Binary(b) => match ReplyMsg::decode(&b) {
                Some(reply) => self.on_reply(reply?),
                None => self.on_action(FromBackend::decode(&b)?),
            },
            Message::Text(_) => return Err(LinkEnd::Text),
            Message::Ping(p) => {
                self.st.borrow_mut().put_control(OpCode::Pong, &p);
                self.wake_writer();
            }
            Message::Pong(_) => {}
            Message::Close(c) => return Err(LinkEnd::Closed(c.map(|c| c.code))),
        }
        Ok(())
    }

    /// Dials and upgrades one connection (after its TLS handshake, for `wss://`, within
    /// the connect timeout); the bytes read past the 101 and the TLS session are
    /// returned.
    pub(super) async fn dial(&self) -> Result<Dialed, LinkEnd> {
        let mut last = LinkEnd::ConnectTimeout;
        for &addr in &self.addrs {
            let stream = match monoio::time::timeout(
                self.settings.connect_timeout,
                TcpStream::connect_addr(addr),
            )
            .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    last = LinkEnd::Connect(e);
                    continue;
                }
                Err(_) => {
                    last = LinkEnd::ConnectTimeout;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let mut tls = self.tls_handshake(&stream).await?;
            let upgrade = self.upgrade(&stream, tls.as_deref_mut());
            return match monoio::time::timeout(self.settings.connect_timeout, upgrade).await {
                Ok(Ok(rest)) => Ok((stream, rest, tls)),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(LinkEnd::Upgrade(UpgradeError::Malformed(
                    "no complete answer within the connect timeout".into(),
                ))),
            };
        }
        Err(last)
    }

    /// For a `wss://` link, the TLS handshake on a connection just made, within the
    /// connect timeout: a certificate not signed by a trusted CA or not for the host
    /// fails the dial, saying why.
    async fn tls_handshake(&self, stream: &TcpStream) -> Result<Option<Box<TlsSession>>, LinkEnd> {
        let Some(config) = &self.tls else {
            return Ok(None);
        };
        let host = &self.url.host;
        crate::tls::connect(config, host, stream, self.settings.connect_timeout)
            .await
            .map(Some)
            .map_err(|error| LinkEnd::Tls {
                host: host.clone(),
                error,
            })
    }

    async fn upgrade(
        &self,
        stream: &TcpStream,
        mut tls: Option<&mut TlsSession>,
    ) -> Result<BytesMut, LinkEnd> {
        let key_bytes: [u8; 16] = sys::random_bytes();
        let key = base64_key(&key_bytes);
        let req = wire::upgrade_request(
            &self.url.authority,
            &self.url.path,
            &key,
            self.settings.shard,
        );
        let fd = stream.as_raw_fd();
        let mut out = req.as_bytes();
        // All of it, and with TLS until rustls holds nothing unsent.
        loop {
            let mut wire = Wire::new(fd, tls.as_deref_mut());
            if !out.is_empty() {
                if let Nb::Done(n) = wire.send_vectored(&[out])? {
                    out = &out[n..];
                }
            }
            if out.is_empty() && wire.drain()? {
                break;
            }
            stream.writable(false).await?;
        }
        let mut buf = BytesMut::with_capacity(1024);
        loop {
            buf.reserve(1024);
            match Wire::new(fd, tls.as_deref_mut()).recv_into(&mut buf)? {
                Nb::Done(0) => return Err(LinkEnd::Eof),
                Nb::Done(_) => {}
                Nb::WouldBlock => {
                    stream.readable(false).await?;
                    continue;
                }
            }
            if let Some(n) = wire::check_upgrade_response(&buf, &key)? {
                let _ = buf.split_to(n);
                return Ok(buf);
            }
        }
    }

    /// Serves one established connection (through `tls`, for `wss://`) until it fails
    /// or the link retires.
    pub(super) async fn serve(
        self: &Rc<Self>,
        stream: TcpStream,
        mut rbuf: BytesMut,
        tls: Option<Box<TlsSession>>,
    ) -> LinkEnd {
        let stream = Rc::new(stream);
        let fd = stream.as_raw_fd();
        let is_tls = tls.is_some();
        *self.conn_tls.borrow_mut() = tls;
        self.conn_fd.set(Some(fd));
        self.last_read.set(crate::rt::clock::refresh());
        self.ping_at.set(None);
        let dead = Rc::new(Cell::new(false));
        crate::rt::task::spawn_isolated(
            "backend link writer",
            write_loop(self.clone(), stream.clone(), dead.clone()),
        );
        let mut decoder = Decoder::new(
            Role::Client,
            Limits {
                max_message_bytes: self.settings.max_message_bytes,
            },
        );
        let end = 'serve: loop {
            // Messages already buffered (also what followed the 101).
            loop {
                match decoder.decode(&mut rbuf) {
                    Ok(Some(msg)) => {
                        if let Err(e) = self.on_message(msg) {
                            break 'serve e;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => break 'serve LinkEnd::Ws(e),
                }
            }
            if self.retired.get() && self.st.borrow().calls.is_empty() {
                break LinkEnd::Retired;
            }
            if dead.get() {
                break LinkEnd::Eof;
            }
            monoio::select! {
                r = stream.readable(false) => {
                    if let Err(e) = r {
                        break LinkEnd::Io(e);
                    }
                }
                _ = self.wake.notified() => continue,
            }
            self.last_read.set(crate::rt::clock::refresh());
            for _ in 0..READS_PER_WAKEUP {
                if rbuf.capacity() - rbuf.len() < READ_CHUNK / 2 {
                    rbuf.reserve(READ_CHUNK);
                }
                let spare = rbuf.capacity() - rbuf.len();
                let read = {
                    let mut tls = self.conn_tls.borrow_mut();
                    Wire::new(fd, tls.as_deref_mut()).recv_into(&mut rbuf)
                };
                match read {
                    Ok(Nb::Done(0)) => break 'serve LinkEnd::Eof,
                    // (Not with TLS: one read there is at most one TLS buffer's worth.)
                    Ok(Nb::Done(n)) if n < spare && !is_tls => break,
                    Ok(Nb::Done(_)) => {}
                    Ok(Nb::WouldBlock) => break,
                    Err(e) => break 'serve LinkEnd::Io(e),
                }
            }
        };
        if let Some((code, reason)) = end.close_frame() {
            self.st
                .borrow_mut()
                .put_control(OpCode::Close, &close_payload(code, reason));
            let _ = self.flush(fd);
        }
        if let Some(mut t) = self.conn_tls.borrow_mut().take() {
            t.close_notify(fd);
        }
        self.conn_fd.set(None);
        dead.set(true);
        self.wake_writer();
        // A writer waiting for writability wakes with an error and lets the stream go.
        sys::shutdown(fd);
        end
    }
}

/// A dialed connection: its stream, the bytes read past the 101, its TLS session.
pub(super) type Dialed = (TcpStream, BytesMut, Option<Box<TlsSession>>);

fn base64_key(b: &[u8; 16]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}
