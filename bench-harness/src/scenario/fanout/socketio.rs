//! Socket.IO v4 over its WebSocket transport, as the `socketio` target's subscribers
//! see it: Engine.IO packets in text frames (`0{…}` open, `2` ping, `4…` a message) and
//! inside them Socket.IO packets (`0` connect, `2["event",…]` an event), so `40` is the
//! namespace connect and `42["msg","…"]` one published item.
//!
//! Why it exists: the Node server (perf/fanout_socketio.js) speaks the library's own
//! wire format; the harness needs only these few packets, parsed without a JSON library
//! on the hot path (the item is a JSON string without escapes, see `stamp`).

/// The upgrade path of a WebSocket-only client.
pub const PATH: &str = "/socket.io/?EIO=4&transport=websocket";

/// What one text frame from the server means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet<'a> {
    /// Engine.IO open (`0{"sid":…}`): answer with [`CONNECT`].
    Open,
    /// Engine.IO ping (`2`): answer with [`PONG`].
    Ping,
    /// Socket.IO connect acknowledged (`40{…}`): subscribed.
    Connected,
    /// An event (`42["name",arg,…]`): its name and the raw JSON of what follows it.
    Event { name: &'a [u8], args: &'a [u8] },
    /// Anything else (close, noop, other namespaces...).
    Other,
}

/// The client's namespace connect.
pub const CONNECT: &[u8] = b"40";
/// The client's answer to a ping.
pub const PONG: &[u8] = b"3";

/// Parses one text frame.
pub fn parse(frame: &[u8]) -> Packet<'_> {
    match frame {
        [b'0', ..] => Packet::Open,
        [b'2'] => Packet::Ping,
        [b'4', b'0', ..] => Packet::Connected,
        [b'4', b'2', rest @ ..] => {
            let Some(body) = rest.strip_prefix(b"[\"") else {
                return Packet::Other;
            };
            let Some(q) = body.iter().position(|&b| b == b'"') else {
                return Packet::Other;
            };
            let args = body[q + 1..].strip_prefix(b",").unwrap_or(&body[q + 1..]);
            Packet::Event {
                name: &body[..q],
                args,
            }
        }
        _ => Packet::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socketio_packets_are_told_apart_and_an_event_gives_its_name_and_args() {
        assert_eq!(
            parse(b"0{\"sid\":\"abc\",\"pingInterval\":25000}"),
            Packet::Open
        );
        assert_eq!(parse(b"2"), Packet::Ping);
        assert_eq!(parse(b"40{\"sid\":\"x\"}"), Packet::Connected);
        assert_eq!(
            parse(b"42[\"msg\",\"@fo t=1 s=0 q=0 xx\"]"),
            Packet::Event {
                name: b"msg",
                args: b"\"@fo t=1 s=0 q=0 xx\"]"
            }
        );
        assert_eq!(parse(b"42garbage"), Packet::Other);
        assert_eq!(parse(b"41"), Packet::Other);
        assert_eq!(parse(b""), Packet::Other);
    }
}
