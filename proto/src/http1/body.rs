//! Body framing (RFC 9112 §6): how a response's body is delimited, the Content-Length
//! value (a list of equal values allowed, nothing else), and the chunked decoder: chunk
//! sizes with extensions (ignored, but no control bytes), the CRLF after each chunk's
//! data, and trailer fields (checked, not surfaced, within `MAX_HEAD_BYTES` in all).
//! The body limit is enforced per chunk, before its data is buffered.

use bytes::{Buf, BytesMut};

use super::{Http1Error, MAX_HEAD_BYTES};

/// Largest accepted chunk-size line, including chunk extensions.
const MAX_CHUNK_LINE: usize = 4 * 1024;

/// How a response's body is delimited (RFC 9112 §6.3), decided from its head.
pub(super) enum Framing {
    None,
    Length(usize),
    Chunked,
    UntilClose,
}

/// Where the chunked decoder is: at a chunk-size line, in a chunk's data (with the
/// bytes left), at the CRLF after the data, or in the trailer section.
#[derive(Debug, Clone, Copy)]
pub(super) enum ChunkPhase {
    Size,
    Data(usize),
    DataEnd,
    Trailers,
}

/// One Content-Length value: 1 to 19 ASCII digits, within `usize`.
pub(super) fn parse_content_length(v: &[u8]) -> Result<usize, Http1Error> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return Err(Http1Error::InvalidContentLength);
    }
    let n = v
        .iter()
        .fold(0u64, |acc, &d| acc * 10 + u64::from(d - b'0'));
    usize::try_from(n).map_err(|_| Http1Error::InvalidContentLength)
}

/// Advance the chunked decoder; `Ok(true)` once the last chunk and the
/// trailer section have been consumed.
pub(super) fn parse_chunked(
    buf: &mut BytesMut,
    body: &mut BytesMut,
    phase: &mut ChunkPhase,
    trailer_bytes: &mut usize,
    max_body: usize,
) -> Result<bool, Http1Error> {
    loop {
        match *phase {
            ChunkPhase::Size => {
                let Some(nl) = buf.iter().take(MAX_CHUNK_LINE).position(|&b| b == b'\n') else {
                    if buf.len() >= MAX_CHUNK_LINE {
                        return Err(Http1Error::InvalidChunk("chunk size line too long"));
                    }
                    return Ok(false);
                };
                let size = parse_chunk_size(&buf[..nl])?;
                buf.advance(nl + 1);
                if size == 0 {
                    *phase = ChunkPhase::Trailers;
                } else {
                    if size > max_body.saturating_sub(body.len()) {
                        return Err(Http1Error::BodyTooLarge { limit: max_body });
                    }
                    body.reserve(size);
                    *phase = ChunkPhase::Data(size);
                }
            }
            ChunkPhase::Data(remaining) => {
                let n = remaining.min(buf.len());
                if n == 0 {
                    return Ok(false);
                }
                body.extend_from_slice(&buf[..n]);
                buf.advance(n);
                *phase = if n == remaining {
                    ChunkPhase::DataEnd
                } else {
                    ChunkPhase::Data(remaining - n)
                };
            }
            ChunkPhase::DataEnd => match buf.first().copied() {
                None => return Ok(false),
                Some(b'\r') => match buf.get(1).copied() {
                    None => return Ok(false),
                    Some(b'\n') => {
                        buf.advance(2);
                        *phase = ChunkPhase::Size;
                    }
                    Some(_) => {
                        return Err(Http1Error::InvalidChunk("missing CRLF after chunk data"))
                    }
                },
                Some(_) => return Err(Http1Error::InvalidChunk("missing CRLF after chunk data")),
            },
            ChunkPhase::Trailers => {
                let room = MAX_HEAD_BYTES - *trailer_bytes;
                let Some(nl) = buf.iter().take(room).position(|&b| b == b'\n') else {
                    if buf.len() >= room {
                        return Err(Http1Error::HeadTooLarge);
                    }
                    return Ok(false);
                };
                let line = &buf[..nl];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.is_empty() {
                    buf.advance(nl + 1);
                    return Ok(true);
                }
                // Trailer fields are not surfaced; they only must be sane.
                if !line.contains(&b':') || line.iter().any(|&b| b == b'\r' || b == 0) {
                    return Err(Http1Error::InvalidChunk("malformed trailer field"));
                }
                buf.advance(nl + 1);
                *trailer_bytes += nl + 1;
            }
        }
    }
}

/// Parse `chunk-size [ BWS ; chunk-ext ] CRLF` (without the LF).
fn parse_chunk_size(line: &[u8]) -> Result<usize, Http1Error> {
    let line = line.strip_suffix(b"\r").ok_or(Http1Error::InvalidChunk(
        "chunk size line not terminated by CRLF",
    ))?;
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(Http1Error::InvalidChunk("missing chunk size"));
    }
    let mut size: usize = 0;
    for &b in &line[..digits] {
        let d = (b as char).to_digit(16).unwrap_or(0) as usize;
        size = size
            .checked_mul(16)
            .and_then(|s| s.checked_add(d))
            .ok_or(Http1Error::InvalidChunk("chunk size overflows"))?;
    }
    let rest = line[digits..].trim_ascii_start();
    if !rest.is_empty() && rest[0] != b';' {
        return Err(Http1Error::InvalidChunk("garbage after chunk size"));
    }
    // Chunk extensions are ignored, but must not smuggle control bytes.
    if rest.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(Http1Error::InvalidChunk(
            "control character in chunk extension",
        ));
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::response::tests::{parse_all, parse_bytewise};

    #[test]
    fn chunked_with_extensions_and_trailers() {
        let input = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
            5;name=value;q=\"x\"\r\nhello\r\n1 ; ext\r\n,\r\nB\r\n 0123456789\r\n0;last\r\n\
            X-Checksum: abc\r\nX-Other: 1\r\n\r\nNEXT";
        let (r, rest) = parse_all(input, 1024).unwrap().unwrap();
        assert_eq!(
            (r.status, &r.body[..], r.keep_alive),
            (200, &b"hello, 0123456789"[..], true)
        );
        assert_eq!(rest, b"NEXT");
        assert_eq!(parse_bytewise(input, 1024), (r, b"NEXT".to_vec()));
    }

    #[test]
    fn chunked_rejects_malformed() {
        let pre = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        for (body, why) in [
            ("zz\r\n", "missing chunk size"),
            ("5x\r\n", "garbage after chunk size"),
            ("3\r\nabcX", "missing CRLF after chunk data"),
            ("3\nabc", "chunk size line not terminated by CRLF"),
            ("fffffffffffffffffffff\r\n", "chunk size overflows"),
        ] {
            let input = format!("{pre}{body}");
            assert_eq!(
                parse_all(input.as_bytes(), usize::MAX),
                Err(Http1Error::InvalidChunk(why)),
                "{body:?}"
            );
        }
        let long = format!("{pre}1;{}", "e".repeat(MAX_CHUNK_LINE));
        assert!(matches!(
            parse_all(long.as_bytes(), 1024),
            Err(Http1Error::InvalidChunk(_))
        ));
        let bad_te = "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
        assert_eq!(
            parse_all(bad_te.as_bytes(), 1024),
            Err(Http1Error::UnsupportedTransferEncoding)
        );
        let bad_te = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n";
        assert_eq!(
            parse_all(bad_te.as_bytes(), 1024),
            Err(Http1Error::UnsupportedTransferEncoding)
        );
    }

    #[test]
    fn content_length_validation() {
        let r = parse_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok", 1024)
            .unwrap()
            .unwrap();
        assert_eq!(&r.0.body[..], b"ok");
        for bad in ["2, 3", "-1", "+2", "0x2", "", "99999999999999999999999"] {
            let input = format!("HTTP/1.1 200 OK\r\nContent-Length: {bad}\r\n\r\n");
            assert_eq!(
                parse_all(input.as_bytes(), 1024),
                Err(Http1Error::InvalidContentLength),
                "{bad:?}"
            );
        }
        let dup = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok";
        assert_eq!(parse_all(dup, 1024), Err(Http1Error::InvalidContentLength));
    }
}
