//! The built-in HTTP/1.1 echo service: the backend of the gateway's default config
//! (service `echo` at 127.0.0.1:5001, endpoints `/echo` and `/echo/public`).
//!
//! Why it exists: RPC benchmarks must measure the gateway, not the backend. This one is
//! thread-per-core on monoio (one SO_REUSEPORT listener per thread, from `listen`), keeps
//! connections alive, answers pipelined requests in order with one write per batch,
//! echoes the body of any request with one (POST, PUT, ...) and answers `{}` to GET/HEAD.
//! `echo-backend` runs it (beside the link echo with `--link-listen`; see `backends`).

use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

/// Largest request head accepted (431 beyond).
const MAX_HEAD: usize = 16 * 1024;
/// Largest request body accepted (413 beyond).
const MAX_BODY: usize = 64 * 1024 * 1024;

/// One HTTP/1.1 connection: requests answered in order until either side closes.
pub(super) async fn serve_conn(mut stream: TcpStream) -> std::io::Result<()> {
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

/// Parses the request at the front of `buf` with `httparse` (SIMD scanning: this runs
/// once per request on the same core as the gateway under test, so it must be cheap).
fn parse(buf: &[u8]) -> Parse {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Parse::Bad(431),
        Ok(httparse::Status::Partial) => return Parse::Partial,
        Err(httparse::Error::TooManyHeaders) => return Parse::Bad(431),
        Err(httparse::Error::Version) => {
            // An HTTP version we do not speak (505), or no version at all (400).
            let line_end = buf.iter().position(|&b| b == b'\r').unwrap_or(buf.len());
            let has_version = buf[..line_end].windows(6).any(|w| w == b" HTTP/");
            return Parse::Bad(if has_version { 505 } else { 400 });
        }
        Err(_) => return Parse::Bad(400),
    };
    let http10 = req.version == Some(0);
    let mut close = http10;
    let mut body_len = 0usize;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            match std::str::from_utf8(h.value)
                .ok()
                .map(|v| v.trim().parse::<usize>())
            {
                Some(Ok(n)) if n <= MAX_BODY => body_len = n,
                Some(Ok(_)) => return Parse::Bad(413),
                _ => return Parse::Bad(400),
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // The gateway always sends Content-Length; chunked uploads are not needed.
            return Parse::Bad(411);
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',').map(|t| t.trim_ascii()) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && http10 {
                    close = false;
                }
            }
        }
    }
    if buf.len() < head_len + body_len {
        return Parse::Partial;
    }
    let method = req.method.unwrap_or("");
    Parse::Request(Request {
        head_len,
        body_len,
        get: method == "GET" || method == "HEAD",
        head: method == "HEAD",
        close,
    })
}

fn respond(out: &mut Vec<u8>, r: &Request, body: &[u8]) {
    let body: &[u8] = if r.get { b"{}" } else { body };
    out.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ");
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = body.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
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
    use crate::backends::listen::{accept_loop, bind_std};
    use monoio::net::ListenerOpts;

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
        std::thread::spawn(move || {
            accept_loop(l, |s, _| async move {
                let _ = serve_conn(s).await;
            })
        });
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
