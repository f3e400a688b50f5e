//! The NATS text protocol as the `nats` target's subscribers and publisher speak it: the
//! subscriber's `CONNECT` and `SUB` lines, a streaming parser for what the server sends
//! (`MSG subject sid [reply] len\r\n<payload>\r\n`, `PING`, `INFO`, `+OK`, `-ERR`) that
//! carries a partial line or payload over to the next WebSocket frame, and the
//! publisher's pipelined `PUB` lines.
//!
//! Why it exists: NATS's WebSocket listener puts its text protocol inside frames without
//! regard to message boundaries (several messages share a frame, one may span two), so
//! the subscriber must parse a byte stream, not frames.

/// The subject every subscriber listens on and the publisher publishes to.
pub const SUBJECT: &str = "bench";

/// What a subscriber sends once connected (the PING's PONG tells it the SUB is in).
pub fn subscribe_lines() -> Vec<u8> {
    format!("CONNECT {{\"verbose\":false,\"pedantic\":false}}\r\nSUB {SUBJECT} 1\r\nPING\r\n")
        .into_bytes()
}

/// One published message, pipelined after the others.
pub fn encode_pub(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(format!("PUB {SUBJECT} {}\r\n", payload.len()).as_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

/// What the parser found besides messages.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Control {
    /// PINGs to answer with PONG.
    pub pings: u32,
    /// PONGs (the answer to the subscriber's own PING: its SUB has been processed).
    pub pongs: u32,
    /// -ERR lines seen.
    pub errors: u32,
}

/// A streaming parser of server → client NATS protocol.
#[derive(Debug, Default)]
pub struct Parser {
    buf: Vec<u8>,
}

impl Parser {
    /// Feeds `data` (one frame's payload, or one read); calls `on_msg` with each complete
    /// message's payload; keeps whatever is incomplete for the next call.
    pub fn feed(&mut self, data: &[u8], mut on_msg: impl FnMut(&[u8])) -> Control {
        let mut ctl = Control::default();
        if self.buf.is_empty() {
            let used = parse(data, &mut on_msg, &mut ctl);
            self.buf.extend_from_slice(&data[used..]);
        } else {
            self.buf.extend_from_slice(data);
            let used = parse(&self.buf, &mut on_msg, &mut ctl);
            self.buf.drain(..used);
        }
        ctl
    }

    /// Bytes held back (an incomplete line or payload).
    #[cfg(test)]
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

/// Parses the complete items at the start of `data`; returns how many bytes they took.
fn parse(data: &[u8], on_msg: &mut impl FnMut(&[u8]), ctl: &mut Control) -> usize {
    let mut at = 0;
    while at < data.len() {
        let rest = &data[at..];
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
            break;
        };
        let line = &rest[..eol];
        if let Some(args) = line.strip_prefix(b"MSG ") {
            let len = args
                .rsplit(|&b| b == b' ')
                .next()
                .and_then(|n| std::str::from_utf8(n).ok()?.parse::<usize>().ok());
            let Some(len) = len else {
                ctl.errors += 1;
                at += eol + 2;
                continue;
            };
            let end = eol + 2 + len + 2;
            if rest.len() < end {
                break;
            }
            on_msg(&rest[eol + 2..eol + 2 + len]);
            at += end;
            continue;
        }
        if line == b"PING" {
            ctl.pings += 1;
        } else if line == b"PONG" {
            ctl.pongs += 1;
        } else if line.starts_with(b"-ERR") {
            ctl.errors += 1;
        }
        at += eol + 2;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nats_messages_split_across_frames_are_parsed_whole() {
        let mut stream = Vec::new();
        stream.extend_from_slice(b"INFO {\"server_id\":\"x\"}\r\n+OK\r\n");
        stream.extend_from_slice(b"MSG bench 1 5\r\nhello\r\n");
        stream.extend_from_slice(b"PING\r\n");
        stream.extend_from_slice(b"MSG bench 1 reply.to 7\r\nwo\r\nrld\r\n");
        stream.extend_from_slice(b"MSG bench 1 0\r\n\r\n");
        // Every way of cutting the stream in two gives the same messages.
        for cut in 0..=stream.len() {
            let mut p = Parser::default();
            let mut got: Vec<Vec<u8>> = Vec::new();
            let a = p.feed(&stream[..cut], |m| got.push(m.to_vec()));
            let b = p.feed(&stream[cut..], |m| got.push(m.to_vec()));
            assert_eq!(
                got,
                vec![b"hello".to_vec(), b"wo\r\nrld".to_vec(), Vec::new()],
                "cut at {cut}"
            );
            assert_eq!(a.pings + b.pings, 1, "cut at {cut}");
            assert_eq!(p.pending(), 0);
        }
    }

    #[test]
    fn a_pub_line_carries_the_payload_length() {
        let mut out = Vec::new();
        encode_pub(&mut out, b"abc");
        assert_eq!(out, b"PUB bench 3\r\nabc\r\n");
    }
}
