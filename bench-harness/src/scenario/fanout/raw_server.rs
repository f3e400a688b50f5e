//! The raw fan-out limit probe's server (`ringgate-bench fanout-raw-server`): accepts
//! subscriber sockets (greeting each with an empty length-prefixed message, so the
//! subscriber knows it was accepted) and one publisher socket; every read from the
//! publisher is a batch of length-prefixed messages, written as they came, in one
//! `send` per subscriber (what a socket does not take waits in its own buffer and goes
//! first next time). After each batch it answers the publisher with 8 bytes: how long
//! writing that batch to every subscriber took, in ns.
//!
//! Why it exists: the ceiling the targets are read against — the same bytes to the
//! same sockets with no protocol, no framing and no per-subscriber bookkeeping beyond a
//! write buffer, on one thread, like a one-shard gateway.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Instant;

use crate::cli::FanoutRawServerArgs;

struct SubConn {
    stream: TcpStream,
    pending: Vec<u8>,
}

impl SubConn {
    /// Writes what is pending, then `batch`; keeps what the socket did not take.
    /// False when the socket failed.
    fn send(&mut self, batch: &[u8]) -> bool {
        if self.pending.is_empty() {
            match write_nowait(&self.stream, batch) {
                Ok(n) => self.pending.extend_from_slice(&batch[n..]),
                Err(_) => return false,
            }
            return true;
        }
        self.pending.extend_from_slice(batch);
        self.flush()
    }

    fn flush(&mut self) -> bool {
        if self.pending.is_empty() {
            return true;
        }
        match write_nowait(&self.stream, &self.pending) {
            Ok(n) => {
                self.pending.drain(..n);
                true
            }
            Err(_) => false,
        }
    }
}

fn write_nowait(s: &TcpStream, data: &[u8]) -> io::Result<usize> {
    // SAFETY: send reads at most data.len() bytes from a live slice.
    let n = unsafe {
        libc::send(
            s.as_raw_fd(),
            data.as_ptr().cast(),
            data.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if n >= 0 {
        return Ok(n as usize);
    }
    let e = io::Error::last_os_error();
    if e.kind() == io::ErrorKind::WouldBlock {
        Ok(0)
    } else {
        Err(e)
    }
}

/// Complete length-prefixed messages at the start of `buf`: their byte length.
fn complete_prefix(buf: &[u8]) -> usize {
    let mut at = 0;
    while buf.len() >= at + 4 {
        let len = u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
        if buf.len() < at + 4 + len {
            break;
        }
        at += 4 + len;
    }
    at
}

pub fn run(args: &FanoutRawServerArgs) -> anyhow::Result<()> {
    crate::spawn::raise_nofile();
    let subs_l = listen(&args.listen)?;
    let pub_l = listen(&args.publish_listen)?;
    eprintln!(
        "fanout-raw-server: subscribers on {}, publisher on {}",
        args.listen, args.publish_listen
    );
    let mut subs: Vec<SubConn> = Vec::new();
    let mut publisher: Option<TcpStream> = None;
    let mut inbuf: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        let waiting = subs.iter().any(|s| !s.pending.is_empty());
        let mut fds = vec![
            libc::pollfd {
                fd: subs_l.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: pub_l.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        if let Some(p) = &publisher {
            fds.push(libc::pollfd {
                fd: p.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        // SAFETY: poll reads and writes fds.len() live pollfd entries.
        unsafe {
            libc::poll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                if waiting { 1 } else { 100 },
            )
        };
        // New subscribers: greet each with an empty message.
        while let Ok((s, _)) = subs_l.accept() {
            s.set_nonblocking(true)?;
            let _ = s.set_nodelay(true);
            let mut c = SubConn {
                stream: s,
                pending: Vec::new(),
            };
            if c.send(&0u32.to_be_bytes()) {
                subs.push(c);
            }
        }
        if let Ok((p, _)) = pub_l.accept() {
            p.set_nonblocking(true)?;
            let _ = p.set_nodelay(true);
            inbuf.clear();
            publisher = Some(p);
        }
        if waiting {
            subs.retain_mut(SubConn::flush);
        }
        let Some(p) = publisher.as_mut() else {
            continue;
        };
        match p.read(&mut chunk) {
            Ok(0) => {
                publisher = None;
                continue;
            }
            Ok(n) => inbuf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(_) => {
                publisher = None;
                continue;
            }
        }
        let whole = complete_prefix(&inbuf);
        if whole == 0 {
            continue;
        }
        let t0 = Instant::now();
        let batch = &inbuf[..whole];
        subs.retain_mut(|s| s.send(batch));
        let ns = t0.elapsed().as_nanos() as u64;
        inbuf.drain(..whole);
        let _ = p.write_all(&ns.to_be_bytes());
    }
}

fn listen(addr: &str) -> anyhow::Result<TcpListener> {
    let addr: std::net::SocketAddr = addr.parse()?;
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(4096)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_whole_length_prefixed_messages_make_a_batch() {
        let mut b = Vec::new();
        b.extend_from_slice(&3u32.to_be_bytes());
        b.extend_from_slice(b"abc");
        b.extend_from_slice(&5u32.to_be_bytes());
        b.extend_from_slice(b"de");
        assert_eq!(complete_prefix(&b), 7);
        assert_eq!(complete_prefix(&b[..6]), 0);
    }
}
