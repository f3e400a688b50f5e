//! The built-in HTTP/1.1 echo service: the backend of the gateway's default config
//! (service `echo` at 127.0.0.1:5001, endpoints `/echo` and `/echo/public`).
//!
//! Why it exists: RPC benchmarks must measure the gateway, not the backend. This one is
//! thread-per-core on monoio (one SO_REUSEPORT listener per thread), keeps connections
//! alive, answers pipelined requests in order with one write per batch, echoes the body
//! of any request with one (POST, PUT, ...) and answers `{}` to GET/HEAD.

use std::net::SocketAddr;

use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::{ListenerOpts, TcpListener, TcpStream};

use crate::cli::EchoArgs;

/// Largest request head accepted (431 beyond).
const MAX_HEAD: usize = 16 * 1024;
/// Largest request body accepted (413 beyond).
const MAX_BODY: usize = 64 * 1024 * 1024;

pub fn run(args: &EchoArgs) -> anyhow::Result<()> {
    let addr: SocketAddr = args.listen.parse()?;
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let opts = ListenerOpts::new().reuse_port(true).backlog(4096);
    // Bind every listener before serving, so a bad address fails fast and the service
    // is fully up when the message below is printed.
    let mut listeners = Vec::new();
    for _ in 0..threads {
        let l = std::net::TcpListener::from(bind_std(addr, &opts)?);
        listeners.push(l);
    }
    eprintln!("echo-backend listening on http://{addr} ({threads} threads)");
    let handles: Vec<_> = listeners
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            std::thread::Builder::new()
                .name(format!("echo-{i}"))
                .spawn(move || serve_thread(l))
        })
        .collect::<Result<_, _>>()?;
    for h in handles {
        match h.join() {
            Ok(r) => r?,
            Err(_) => anyhow::bail!("echo thread panicked"),
        }
    }
    Ok(())
}

/// An SO_REUSEPORT listener as a std socket (monoio adopts it on its own thread).
pub(crate) fn bind_std(addr: SocketAddr, opts: &ListenerOpts) -> std::io::Result<socket2::Socket> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM.cloexec(), None)?;
    s.set_reuse_port(opts.reuse_port)?;
    s.set_reuse_address(opts.reuse_addr)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(opts.backlog)?;
    Ok(s)
}

fn serve_thread(l: std::net::TcpListener) -> anyhow::Result<()> {
    let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::from_std(l)?;
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    monoio::spawn(async move {
                        let _ = serve_conn(stream).await;
                    });
                }
                Err(e) if e.raw_os_error() == Some(libc::EMFILE) => {
                    // Out of descriptors: back off instead of spinning.
                    monoio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Err(_) => {}
            }
        }
    })
}

async fn serve_conn(mut stream: TcpStream) -> std::io::Result<()> {
    let mut input: Vec<u8> = Vec::with_capacity(8192);
    let mut out: Vec<u8> = Vec::with_capacity(8192);
    let mut rbuf: Vec<u8> = Vec::with_capacity(16 * 1024);
    loop {
        let mut close = false;
        let mut used = 0;
        while used < input.len() {
            match parse(&input[used..]) {
                Parse::Partial => break,
                Parse::Request(r) => {
                    let body = &input[used + r.head_len..used + r.head_len + r.body_len];
                    respond(&mut out, &r, body);
                    used += r.head_len + r.body_len;
                    if r.close {
                        close = true;
                        break;
                    }
                }
                Parse::Bad(status) => {
                    error_response(&mut out, status);
                    close = true;
                    break;
                }
            }
        }
        input.drain(..used);
        if !out.is_empty() {
            let (res, o) = stream.write_all(out).await;
            res?;
            out = o;
            out.clear();
        }
        if close {
            return Ok(());
        }
        rbuf.clear();
        let (res, b) = stream.read(rbuf).await;
        rbuf = b;
        if res? == 0 {
            return Ok(());
        }
        input.extend_from_slice(&rbuf);
    }
}

/// A complete request at the start of the buffer.
#[derive(Debug, PartialEq, Eq)]
struct Request {
    head_len: usize,
    body_len: usize,
    /// GET or HEAD: answered with `{}` (HEAD without the body).
    get: bool,
    head: bool,
    close: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum Parse {
    Partial,
    Request(Request),
    Bad(u16),
}

fn parse(buf: &[u8]) -> Parse {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        return if buf.len() > MAX_HEAD {
            Parse::Bad(431)
        } else {
            Parse::Partial
        };
    };
    let head_len = end + 4;
    let Ok(head) = std::str::from_utf8(&buf[..end]) else {
        return Parse::Bad(400);
    };
    let mut lines = head.split("\r\n");
    let mut parts = lines.next().unwrap_or("").split(' ');
    let (Some(method), Some(_path), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Parse::Bad(400);
    };
    let mut close = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        _ => return Parse::Bad(505),
    };
    let mut body_len = 0usize;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Parse::Bad(400);
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            match value.parse::<usize>() {
                Ok(n) if n <= MAX_BODY => body_len = n,
                Ok(_) => return Parse::Bad(413),
                Err(_) => return Parse::Bad(400),
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // The gateway always sends Content-Length; chunked uploads are not needed.
            return Parse::Bad(411);
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") && version == "HTTP/1.0" {
                    close = false;
                }
            }
        }
    }
    if buf.len() < head_len + body_len {
        return Parse::Partial;
    }
    Parse::Request(Request {
        head_len,
        body_len,
        get: method == "GET" || method == "HEAD",
        head: method == "HEAD",
        close,
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn respond(out: &mut Vec<u8>, r: &Request, body: &[u8]) {
    let body: &[u8] = if r.get { b"{}" } else { body };
    out.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ");
    out.extend_from_slice(body.len().to_string().as_bytes());
    if r.close {
        out.extend_from_slice(b"\r\nConnection: close");
    }
    out.extend_from_slice(b"\r\n\r\n");
    if !r.head {
        out.extend_from_slice(body);
    }
}

fn error_response(out: &mut Vec<u8>, status: u16) {
    let reason = match status {
        411 => "Length Required",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        505 => "HTTP Version Not Supported",
        _ => "Bad Request",
    };
    out.extend_from_slice(
        format!("HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(head_len: usize, body_len: usize, get: bool, close: bool) -> Parse {
        Parse::Request(Request {
            head_len,
            body_len,
            get,
            head: false,
            close,
        })
    }

    #[test]
    fn parses_post_with_body_and_pipelining() {
        let a = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
        let mut two = a.to_vec();
        two.extend_from_slice(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
        let head = a.len() - 5;
        assert_eq!(parse(&two), req(head, 5, false, false));
        assert_eq!(
            parse(&two[a.len()..]),
            req(two.len() - a.len(), 0, true, true)
        );
        assert_eq!(parse(&a[..a.len() - 1]), Parse::Partial);
        assert_eq!(parse(&a[..10]), Parse::Partial);
    }

    #[test]
    fn rejects_what_it_does_not_speak() {
        assert_eq!(parse(b"GET / HTTP/2\r\n\r\n"), Parse::Bad(505));
        assert_eq!(parse(b"GET /\r\n\r\n"), Parse::Bad(400));
        assert_eq!(
            parse(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Parse::Bad(411)
        );
        assert_eq!(parse(&vec![b'a'; MAX_HEAD + 1]), Parse::Bad(431));
        assert_eq!(
            parse(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"),
            req(42, 0, true, false)
        );
    }

    #[test]
    fn responses() {
        let mut out = Vec::new();
        respond(
            &mut out,
            &Request {
                head_len: 0,
                body_len: 2,
                get: false,
                head: false,
                close: true,
            },
            b"hi",
        );
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\
              Connection: close\r\n\r\nhi"
                .to_vec()
        );
    }

    #[test]
    fn serves_keep_alive_over_tcp() {
        use std::io::{Read, Write};
        let l = bind_std("127.0.0.1:0".parse().unwrap(), &ListenerOpts::new()).unwrap();
        let addr = l.local_addr().unwrap().as_socket().unwrap();
        let l = std::net::TcpListener::from(l);
        std::thread::spawn(move || serve_thread(l));
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(
            b"POST /echo HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\n\
              Connection: close\r\n\r\n",
        )
        .unwrap();
        let mut got = String::new();
        s.read_to_string(&mut got).unwrap();
        assert_eq!(
            got,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 3\r\n\r\nabc\
             HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\
             Connection: close\r\n\r\n{}"
        );
    }
}
