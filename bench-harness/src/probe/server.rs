//! `probe-server`: echoes the raw probe messages from the buffer they were read into;
//! a connection that opens with `GET ` is upgraded and its WebSocket frames are echoed in
//! place on the same owned-buffer I/O (`serve_ws`, `echo_frames_in_place`), the least a
//! WebSocket echo server can do.
//!
//! Why it exists: it is the other end of the limit probe, and its WebSocket mode is what
//! `rpc --mode echo` is measured against for the harness's own cost (issue 3 asks for
//! ≥ 80 % of the raw rate; `perf/peers.sh`'s `harness` row).

use std::io;
use std::net::SocketAddr;

use monoio::buf::IoBuf;
use monoio::io::AsyncWriteRentExt;
use monoio::net::TcpStream;
use ringgate::proto::frame::{apply_mask, encode_header, parse_header, OpCode, MAX_HEADER_LEN};

use super::wire::{complete_prefix, read_more, MAX_BODY, READ_BUF};
use crate::cli::ProbeServerArgs;

pub fn run_server(args: &ProbeServerArgs) -> anyhow::Result<()> {
    let addr: SocketAddr = args.listen.parse()?;
    crate::backends::listen::serve_threads(
        "probe-server",
        addr,
        args.threads,
        |stream, _| async move {
            let _ = serve_conn(stream).await;
        },
    )
}

/// One probe connection. Raw: every complete message is written back from the buffer
/// it was read into. A connection that opens with `GET ` (no raw message can: its length
/// would exceed [`MAX_BODY`]) is a WebSocket one, served by [`serve_ws`].
pub(super) async fn serve_conn(mut stream: TcpStream) -> io::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(READ_BUF);
    while buf.len() < 4 {
        if read_more(&mut stream, &mut buf).await? == 0 {
            return Ok(());
        }
    }
    if buf.starts_with(b"GET ") {
        return serve_ws(stream, buf).await;
    }
    loop {
        let n = match complete_prefix(&buf) {
            Ok(n) => n,
            Err(_) => return Ok(()),
        };
        if n > 0 {
            let (res, slice) = stream.write_all(buf.slice(..n)).await;
            buf = slice.into_inner();
            res?;
            buf.drain(..n);
        }
        if read_more(&mut stream, &mut buf).await? == 0 {
            return Ok(());
        }
    }
}

/// Longest upgrade request the WebSocket mode reads.
const MAX_UPGRADE_HEAD: usize = 16 * 1024;

/// The probe's WebSocket mode: the least a WebSocket echo server can do, on the raw
/// probe's I/O (owned-buffer io_uring reads and writes, one buffer per connection). The
/// upgrade is answered (any path), then each read's complete frames are turned into
/// their echoes in place ([`echo_frames_in_place`]) and written back with one write.
/// This is the server `rpc --mode echo` is measured against for the harness's own cost:
/// the raw probe's rate over this one's is what WebSocket framing plus the harness's
/// client cost.
async fn serve_ws(mut stream: TcpStream, mut buf: Vec<u8>) -> io::Result<()> {
    let n = loop {
        match crate::backends::ws_conn::parse_upgrade_any_path(&buf) {
            Ok(Some((req, n))) => {
                let response = ringgate::proto::handshake::switching_protocols(&req);
                let (res, _) = stream.write_all(response.to_vec()).await;
                res?;
                break n;
            }
            Ok(None) if buf.len() <= MAX_UPGRADE_HEAD => {}
            Ok(None) => return Ok(()),
            Err(e) => {
                let (res, _) = stream.write_all(e.response().to_vec()).await;
                return res.map(|_| ());
            }
        }
        if read_more(&mut stream, &mut buf).await? == 0 {
            return Ok(());
        }
    };
    buf.drain(..n);
    loop {
        let echo = echo_frames_in_place(&mut buf);
        if echo.out > 0 {
            let (res, slice) = stream.write_all(buf.slice(..echo.out)).await;
            buf = slice.into_inner();
            res?;
        }
        if let Some(code) = echo.refuse {
            let (res, _) = stream.write_all(close_frame(code).to_vec()).await;
            res?;
        }
        if echo.end {
            return Ok(());
        }
        buf.drain(..echo.consumed);
        if read_more(&mut stream, &mut buf).await? == 0 {
            return Ok(());
        }
    }
}

/// What [`echo_frames_in_place`] did with a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InPlaceEcho {
    /// Bytes of client frames taken off the start of the buffer.
    pub consumed: usize,
    /// Bytes of server frames now at the start of the buffer, to be sent.
    pub out: usize,
    /// The connection ends once they are sent (a close was echoed, or `refuse`).
    pub end: bool,
    /// A frame broke the protocol (1002) or was too big (1009): after the echoes, a
    /// close frame with this code is sent.
    pub refuse: Option<u16>,
}

/// Turns the complete client frames at the start of `buf` into the server's answers,
/// written over them from the start of `buf`: a data frame (text, binary, continuation)
/// is echoed as it came (same FIN and opcode, payload unmasked), a ping gets its pong, a
/// pong is dropped, a close is echoed and ends the connection. A server frame is four
/// bytes shorter than the client frame it answers (no mask), so the output never
/// overtakes the input. A frame without a mask or with a bad header is refused with
/// 1002, one over [`MAX_BODY`] with 1009. No allocation.
pub fn echo_frames_in_place(buf: &mut [u8]) -> InPlaceEcho {
    let (mut at, mut out) = (0, 0);
    loop {
        let (h, hlen) = match parse_header(&buf[at..]) {
            Ok(Some(v)) => v,
            Ok(None) => break,
            Err(_) => return refuse(at, out, 1002),
        };
        let Some(mask) = h.mask else {
            return refuse(at, out, 1002);
        };
        if h.payload_len > MAX_BODY as u64 {
            return refuse(at, out, 1009);
        }
        let len = h.payload_len as usize;
        if buf.len() - at < hlen + len {
            break;
        }
        let src = at + hlen;
        at = src + len;
        let opcode = match h.opcode {
            OpCode::Pong => continue,
            OpCode::Ping => OpCode::Pong,
            op => op,
        };
        let mut head = [0u8; MAX_HEADER_LEN];
        let n = encode_header(&mut head, h.fin, opcode, None, len);
        buf[out..out + n].copy_from_slice(&head[..n]);
        buf.copy_within(src..src + len, out + n);
        apply_mask(&mut buf[out + n..out + n + len], mask, 0);
        out += n + len;
        if opcode == OpCode::Close {
            return InPlaceEcho {
                consumed: at,
                out,
                end: true,
                refuse: None,
            };
        }
    }
    InPlaceEcho {
        consumed: at,
        out,
        end: false,
        refuse: None,
    }
}

/// Ends [`echo_frames_in_place`] at a frame it cannot take: the echoes before it go out,
/// then a close frame with `code`.
fn refuse(at: usize, out: usize, code: u16) -> InPlaceEcho {
    InPlaceEcho {
        consumed: at,
        out,
        end: true,
        refuse: Some(code),
    }
}

/// The close frame (unmasked) carrying `code`.
pub fn close_frame(code: u16) -> [u8; 4] {
    let c = code.to_be_bytes();
    [0x80 | OpCode::Close as u8, 2, c[0], c[1]]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_frame(fin: bool, op: OpCode, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut head = [0u8; MAX_HEADER_LEN];
        let n = encode_header(&mut head, fin, op, Some(mask), payload.len());
        let mut f = head[..n].to_vec();
        let at = f.len();
        f.extend_from_slice(payload);
        apply_mask(&mut f[at..], mask, 0);
        f
    }

    fn server_frame(fin: bool, op: OpCode, payload: &[u8]) -> Vec<u8> {
        let mut head = [0u8; MAX_HEADER_LEN];
        let n = encode_header(&mut head, fin, op, None, payload.len());
        let mut f = head[..n].to_vec();
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn in_place_echo_answers_each_frame_and_leaves_a_partial_one() {
        let big = vec![0xabu8; 300];
        let mut input = Vec::new();
        input.extend(client_frame(true, OpCode::Binary, b"hello", [1, 2, 3, 4]));
        input.extend(client_frame(false, OpCode::Text, b"frag", [5, 6, 7, 8]));
        input.extend(client_frame(true, OpCode::Ping, b"p", [9, 9, 9, 9]));
        input.extend(client_frame(true, OpCode::Pong, b"ignored", [1, 1, 1, 1]));
        input.extend(client_frame(
            true,
            OpCode::Continuation,
            b"ment",
            [2, 2, 2, 2],
        ));
        input.extend(client_frame(true, OpCode::Binary, &big, [3, 1, 4, 1]));
        let complete = input.len();
        let partial = client_frame(true, OpCode::Binary, b"later", [7, 7, 7, 7]);
        input.extend(&partial[..4]);
        let mut want = Vec::new();
        want.extend(server_frame(true, OpCode::Binary, b"hello"));
        want.extend(server_frame(false, OpCode::Text, b"frag"));
        want.extend(server_frame(true, OpCode::Pong, b"p"));
        want.extend(server_frame(true, OpCode::Continuation, b"ment"));
        want.extend(server_frame(true, OpCode::Binary, &big));
        let r = echo_frames_in_place(&mut input);
        assert_eq!(
            r,
            InPlaceEcho {
                consumed: complete,
                out: want.len(),
                end: false,
                refuse: None
            }
        );
        assert_eq!(&input[..r.out], &want[..]);
        // The partial frame's bytes are untouched behind what was consumed.
        assert_eq!(&input[complete..], &partial[..4]);
    }

    #[test]
    fn in_place_echo_echoes_a_close_and_ends() {
        let mut input = client_frame(true, OpCode::Binary, b"x", [1, 2, 3, 4]);
        input.extend(client_frame(
            true,
            OpCode::Close,
            &[0x03, 0xe8],
            [4, 3, 2, 1],
        ));
        input.extend(client_frame(true, OpCode::Binary, b"after", [1, 2, 3, 4]));
        let r = echo_frames_in_place(&mut input);
        let mut want = server_frame(true, OpCode::Binary, b"x");
        want.extend(server_frame(true, OpCode::Close, &[0x03, 0xe8]));
        assert!(r.end && r.refuse.is_none(), "{r:?}");
        assert_eq!(&input[..r.out], &want[..]);
    }

    #[test]
    fn in_place_echo_refuses_unmasked_and_oversized_frames() {
        // Echoes before the bad frame still go out.
        let mut input = client_frame(true, OpCode::Binary, b"ok", [1, 2, 3, 4]);
        input.extend(server_frame(true, OpCode::Binary, b"unmasked"));
        let r = echo_frames_in_place(&mut input);
        assert_eq!(r.refuse, Some(1002));
        assert!(r.end);
        assert_eq!(
            &input[..r.out],
            &server_frame(true, OpCode::Binary, b"ok")[..]
        );
        // Too big: refused from its header alone.
        let mut head = [0u8; MAX_HEADER_LEN];
        let n = encode_header(&mut head, true, OpCode::Binary, Some([1; 4]), MAX_BODY + 1);
        let r = echo_frames_in_place(&mut head[..n]);
        assert_eq!((r.out, r.refuse, r.end), (0, Some(1009), true));
        // A reserved opcode is a bad header.
        let mut bad = [0x83u8, 0x80, 0, 0, 0, 0];
        assert_eq!(echo_frames_in_place(&mut bad).refuse, Some(1002));
        assert_eq!(close_frame(1009), [0x88, 2, 0x03, 0xf1]);
    }
}
