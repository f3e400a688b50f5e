//! The publisher, in the coordinator: connects to the target's publish side once, then
//! sends each tick's due messages as one batch — pipelined `PUB`s over TCP (NATS), one
//! HTTP POST of all the tick's items (Pushpin's `/publish/`, the Socket.IO script's
//! `/publish`, ringgate's `/v1/publish/batch` with its bearer token), or length-prefixed
//! messages on the raw probe's publish socket (which answers each batch with how long
//! writing it to every subscriber took).
//!
//! Why it exists: every server gets the same payloads at the same ticks, batched as its
//! own API is meant to be used (PEERS.md: many single-item POSTs stall Pushpin), so the
//! publish side is not what limits any of them.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

use base64::Engine as _;

use super::nats;
use super::FanoutTarget;

/// The topic (channel, room, subject) every target uses.
pub const TOPIC: &str = "bench";

/// A connected publisher.
pub struct Publisher {
    target: FanoutTarget,
    stream: TcpStream,
    addr: SocketAddr,
    path: String,
    token: Option<String>,
    buf: Vec<u8>,
    /// Raw probe: its per-batch fan-out write times (ns) not yet taken.
    raw_acks: Vec<u8>,
}

/// `http://host:port/path` or `host:port` → (address, path).
pub fn parse_url(url: &str) -> anyhow::Result<(SocketAddr, String)> {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    let addr = std::net::ToSocketAddrs::to_socket_addrs(hostport)?
        .next()
        .ok_or_else(|| anyhow::anyhow!("{hostport}: no address"))?;
    Ok((addr, path))
}

impl Publisher {
    pub fn connect(
        target: FanoutTarget,
        url: &str,
        token: Option<String>,
    ) -> anyhow::Result<Publisher> {
        let (addr, path) = parse_url(url)?;
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut p = Publisher {
            target,
            stream,
            addr,
            path,
            token,
            buf: Vec::with_capacity(64 * 1024),
            raw_acks: Vec::new(),
        };
        if target == FanoutTarget::Nats {
            // INFO first, then our CONNECT; a PING/PONG proves the server took it.
            p.stream
                .write_all(b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\nPING\r\n")?;
            let mut got = Vec::new();
            let mut chunk = [0u8; 4096];
            while !got.windows(6).any(|w| w == b"PONG\r\n") {
                let n = p.stream.read(&mut chunk)?;
                anyhow::ensure!(n > 0, "nats closed the publish connection");
                got.extend_from_slice(&chunk[..n]);
                anyhow::ensure!(got.len() < 1 << 20, "no PONG from nats");
            }
        }
        Ok(p)
    }

    /// Publishes `payloads` as one batch; returns how many the server accepted.
    pub fn publish(&mut self, payloads: &[Vec<u8>]) -> anyhow::Result<u64> {
        self.buf.clear();
        match self.target {
            FanoutTarget::Nats => {
                for p in payloads {
                    nats::encode_pub(&mut self.buf, p);
                }
                self.stream.write_all(&self.buf)?;
                self.answer_nats_pings()?;
                Ok(payloads.len() as u64)
            }
            FanoutTarget::Raw => {
                for p in payloads {
                    self.buf.extend_from_slice(&(p.len() as u32).to_be_bytes());
                    self.buf.extend_from_slice(p);
                }
                self.stream.write_all(&self.buf)?;
                Ok(payloads.len() as u64)
            }
            FanoutTarget::Pushpin | FanoutTarget::Socketio | FanoutTarget::Ringgate => {
                let body = http_body(self.target, payloads);
                // A server that closes after a response (Pushpin's publish API does)
                // gets a new connection and the same request once more.
                let status = match self.post(&body) {
                    Ok(s) => s,
                    Err(_) => {
                        self.reconnect()?;
                        self.post(&body)?
                    }
                };
                Ok(if (200..300).contains(&status) {
                    payloads.len() as u64
                } else {
                    0
                })
            }
        }
    }

    fn reconnect(&mut self) -> anyhow::Result<()> {
        let stream = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        self.stream = stream;
        Ok(())
    }

    /// Raw probe: the fan-out write times (µs) its server reported since the last call.
    pub fn take_raw_fanout_us(&mut self) -> Vec<u64> {
        if self.target != FanoutTarget::Raw {
            return Vec::new();
        }
        let mut chunk = [0u8; 4096];
        while let Ok(n) = recv_nowait(&self.stream, &mut chunk) {
            if n == 0 {
                break;
            }
            self.raw_acks.extend_from_slice(&chunk[..n]);
        }
        let whole = self.raw_acks.len() / 8 * 8;
        let out = self.raw_acks[..whole]
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().expect("8 bytes")) / 1000)
            .collect();
        self.raw_acks.drain(..whole);
        out
    }

    /// Answers the server's PINGs (it drops a client that does not), without waiting.
    fn answer_nats_pings(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 4096];
        let mut pings = 0;
        while let Ok(n) = recv_nowait(&self.stream, &mut chunk) {
            if n == 0 {
                break;
            }
            pings += chunk[..n].windows(6).filter(|w| w == b"PING\r\n").count();
        }
        for _ in 0..pings {
            self.stream.write_all(b"PONG\r\n")?;
        }
        Ok(())
    }

    /// One keep-alive POST; returns the status.
    fn post(&mut self, body: &[u8]) -> anyhow::Result<u16> {
        let auth = self
            .token
            .as_ref()
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\n\r\n",
            self.path,
            self.addr,
            body.len()
        );
        self.buf.clear();
        self.buf.extend_from_slice(head.as_bytes());
        self.buf.extend_from_slice(body);
        self.stream.write_all(&self.buf)?;
        read_response(&mut self.stream)
    }
}

/// One tick's items in the target's publish format.
pub fn http_body(target: FanoutTarget, payloads: &[Vec<u8>]) -> Vec<u8> {
    let mut b = Vec::with_capacity(payloads.len() * 300 + 16);
    b.extend_from_slice(b"{\"items\":[");
    for (i, p) in payloads.iter().enumerate() {
        if i > 0 {
            b.push(b',');
        }
        // The payload is ASCII without quotes or backslashes (`stamp`): a JSON string as is.
        match target {
            FanoutTarget::Pushpin => {
                b.extend_from_slice(b"{\"channel\":\"");
                b.extend_from_slice(TOPIC.as_bytes());
                b.extend_from_slice(b"\",\"formats\":{\"ws-message\":{\"content\":\"");
                b.extend_from_slice(p);
                b.extend_from_slice(b"\"}}}");
            }
            FanoutTarget::Ringgate => {
                b.extend_from_slice(b"{\"topic\":\"");
                b.extend_from_slice(TOPIC.as_bytes());
                b.extend_from_slice(b"\",\"payload_base64\":\"");
                b.extend_from_slice(
                    base64::engine::general_purpose::STANDARD
                        .encode(p)
                        .as_bytes(),
                );
                b.extend_from_slice(b"\"}");
            }
            _ => {
                b.push(b'"');
                b.extend_from_slice(p);
                b.push(b'"');
            }
        }
    }
    b.extend_from_slice(b"]}");
    b
}

fn recv_nowait(s: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: recv writes at most buf.len() bytes into a live buffer.
    let n = unsafe {
        libc::recv(
            s.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Reads one HTTP/1.1 response (Content-Length or chunked body); returns its status.
fn read_response(s: &mut TcpStream) -> anyhow::Result<u16> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 8192];
    loop {
        let n = s.read(&mut chunk)?;
        anyhow::ensure!(n > 0, "publish connection closed");
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        let httparse::Status::Complete(head) = resp.parse(&buf)? else {
            continue;
        };
        let status = resp.code.unwrap_or(0);
        let header = |name: &str| {
            resp.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
        };
        let chunked = header("transfer-encoding").is_some_and(|v| v.contains("chunked"));
        let len: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        loop {
            let body = &buf[head..];
            let complete = if chunked {
                body.windows(5).any(|w| w == b"0\r\n\r\n")
            } else {
                body.len() >= len
            };
            if complete {
                return Ok(status);
            }
            let n = s.read(&mut chunk)?;
            anyhow::ensure!(n > 0, "publish connection closed mid-response");
            buf.extend_from_slice(&chunk[..n]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_target_gets_the_batch_in_its_own_publish_format() {
        let items = vec![b"@fo a".to_vec(), b"@fo b".to_vec()];
        let pp: serde_json::Value =
            serde_json::from_slice(&http_body(FanoutTarget::Pushpin, &items)).unwrap();
        assert_eq!(pp["items"][1]["channel"], "bench");
        assert_eq!(pp["items"][1]["formats"]["ws-message"]["content"], "@fo b");
        let rg: serde_json::Value =
            serde_json::from_slice(&http_body(FanoutTarget::Ringgate, &items)).unwrap();
        assert_eq!(rg["items"][0]["topic"], "bench");
        assert_eq!(rg["items"][0]["payload_base64"], "QGZvIGE=");
        let sio: serde_json::Value =
            serde_json::from_slice(&http_body(FanoutTarget::Socketio, &items)).unwrap();
        assert_eq!(sio["items"][0], "@fo a");
    }
}
