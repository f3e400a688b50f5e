//! Just enough HTTP/1.1 for the admin listener: read one request (head with httparse,
//! a `Content-Length` body up to a bound) from a blocking socket, write one response,
//! keep the connection for the next.
//!
//! Why by hand: the admin listener serves probes, a scraper and the push API on plain
//! threads; an HTTP server crate would bring its own runtime for a few routes, and the
//! gateway already parses heads with httparse.

use std::io::{self, Read, Write};
use std::net::TcpStream;

/// Largest request head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// One request.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    /// The path without its query.
    pub path: String,
    pub authorization: Option<String>,
    pub body: Vec<u8>,
    /// The client asked to close after this request (or speaks HTTP/1.0).
    pub close: bool,
}

/// Why no request could be read.
#[derive(Debug)]
pub enum ReadError {
    /// The client closed (or went quiet) between requests: nothing to answer.
    Gone,
    /// The request is malformed (answer 400 and close).
    Bad(&'static str),
    /// The body is over the bound (answer 413 and close).
    TooLarge(usize),
    Io(io::Error),
}

/// Reads one request from `conn`; `buf` keeps bytes that came after it (pipelining).
pub fn read_request(
    conn: &mut TcpStream,
    buf: &mut Vec<u8>,
    max_body: usize,
) -> Result<Request, ReadError> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(buf) {
            Ok(httparse::Status::Complete(head_len)) => {
                let method = req.method.unwrap_or("").to_string();
                let path = req
                    .path
                    .unwrap_or("")
                    .split('?')
                    .next()
                    .unwrap_or("")
                    .to_string();
                let mut len = 0usize;
                let mut close = req.version == Some(0);
                let mut authorization = None;
                for h in req.headers.iter() {
                    let v = std::str::from_utf8(h.value).unwrap_or("").trim();
                    if h.name.eq_ignore_ascii_case("content-length") {
                        len = v
                            .parse()
                            .map_err(|_| ReadError::Bad("bad Content-Length"))?;
                    } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                        return Err(ReadError::Bad(
                            "chunked bodies are not accepted: send Content-Length",
                        ));
                    } else if h.name.eq_ignore_ascii_case("connection") {
                        close = v.eq_ignore_ascii_case("close");
                    } else if h.name.eq_ignore_ascii_case("authorization") {
                        authorization = Some(v.to_string());
                    }
                }
                if len > max_body {
                    return Err(ReadError::TooLarge(len));
                }
                while buf.len() < head_len + len {
                    read_more(conn, buf)?;
                }
                let body = buf[head_len..head_len + len].to_vec();
                buf.drain(..head_len + len);
                return Ok(Request {
                    method,
                    path,
                    authorization,
                    body,
                    close,
                });
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => read_more(conn, buf)?,
            Ok(httparse::Status::Partial) => return Err(ReadError::Bad("request head too large")),
            Err(_) => return Err(ReadError::Bad("malformed request")),
        }
    }
}

fn read_more(conn: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), ReadError> {
    let mut chunk = [0u8; 8192];
    match conn.read(&mut chunk) {
        Ok(0) => Err(ReadError::Gone),
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(())
        }
        Err(e)
            if buf.is_empty()
                && matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
        {
            Err(ReadError::Gone)
        }
        Err(e) => Err(ReadError::Io(e)),
    }
}

/// Writes one response.
pub fn respond(
    conn: &mut TcpStream,
    status: u16,
    ctype: &str,
    body: &[u8],
    close: bool,
    extra: &str,
) -> io::Result<()> {
    let reason = match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    };
    let conn_hdr = if close { "close" } else { "keep-alive" };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: {conn_hdr}\r\n{extra}\r\n",
        body.len()
    );
    let mut out = Vec::with_capacity(head.len() + body.len());
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(body);
    conn.write_all(&out)
}
