//! The backend link's echo (`ringgate-bench echo-backend --link-listen ADDR`): a link
//! backend (docs/LINK.md) that answers every request with its own payload.
//!
//! Why it exists: the gateway's side of the link needs a backend to be tested and
//! measured against, and `perf/peers.sh` compares the link with the HTTP path on the same
//! echo (`ringgate-link` next to `ringgate`). In those runs it shares the gateway's core,
//! so it is built to cost as little per message as it can: ws-echo's connection loop
//! (`ws_conn`: readiness, the thread's one read buffer, every answer of a read batch in
//! one coalescing write), the library's link codec, and a REPLY that is a frame
//! header and a 7-byte prefix built on the stack, followed by the request's payload as
//! the `Bytes` it arrived in (copied into the outbox only when small).
//!
//! What it does:
//! * the upgrade (any path) must offer `Sec-WebSocket-Protocol: ringgate-link.v1`, which
//!   the 101 selects; without it the answer is 400, and a line on stderr says why;
//! * REQUEST with call ≠ 0 → REPLY {call, status 200, the request's payload}; call 0 (an
//!   event) → nothing;
//! * OPEN and CLOSED keep the link's set of live sessions (each logged at debug level;
//!   a repeated OPEN or a CLOSED for an unknown session warns: the gateway broke the
//!   protocol's promise);
//! * a text message, or a binary one the codec rejects, closes the link with 1002 (after
//!   the replies already queued) and a line on stderr naming the fault;
//! * one line on stderr when a link comes up and when it goes down (one link per gateway
//!   shard, so these are rare).

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::net::SocketAddr;

use bytes::{Buf, Bytes};
use ringgate::io::Outbox;
use ringgate::proto::frame::{OpCode, CLOSE_PROTOCOL_ERROR};
use ringgate::proto::handshake::UpgradeRequest;
use ringgate::proto::link::{FromBackend, ToBackend, REPLY_PREFIX_LEN};
use ringgate::proto::ws::ProtocolError;

use super::link_upgrade::{accept_link, Peer};
use super::listen::ReadBuf;
use super::ws_conn::{push_frame, serve_ws, Fail, WsService, WsUpgrade};

/// One link connection.
pub(crate) async fn serve_conn(stream: monoio::net::TcpStream, rbuf: ReadBuf) -> io::Result<()> {
    serve_ws::<LinkEcho>(stream, rbuf).await
}

/// One link connection's state.
pub(crate) struct LinkEcho {
    /// Who dialed, for the log lines.
    from: Peer,
    /// Sessions announced by OPEN and not yet CLOSED.
    sessions: HashSet<u64>,
    replies: u64,
    events: u64,
}

impl WsUpgrade for LinkEcho {
    fn upgrade(
        req: &UpgradeRequest,
        head: &[u8],
        peer: Option<SocketAddr>,
    ) -> Result<(Self, Bytes), Bytes> {
        let (from, response) = accept_link("link-echo", req, head, peer)?;
        let link = LinkEcho {
            from,
            sessions: HashSet::new(),
            replies: 0,
            events: 0,
        };
        Ok((link, response))
    }
}

impl WsService for LinkEcho {
    fn on_data(&mut self, opcode: OpCode, mut msg: Bytes, out: &mut Outbox) -> Result<(), Fail> {
        if opcode != OpCode::Binary {
            return Err(self.fail("a text message (link messages are binary)"));
        }
        let (call, payload_len) = match ToBackend::decode(&msg) {
            Ok(ToBackend::Request { call: 0, .. }) => {
                self.events += 1;
                return Ok(());
            }
            Ok(ToBackend::Request { call, payload, .. }) => (call, payload.len()),
            Ok(ToBackend::Open {
                session,
                session_id,
                account_id,
                roles,
            }) => {
                if !self.sessions.insert(session) {
                    tracing::warn!(from = %self.from, session, "link OPEN for a session already open");
                }
                tracing::debug!(
                    from = %self.from, session, session_id, account_id, roles,
                    live = self.sessions.len(), "link OPEN"
                );
                return Ok(());
            }
            Ok(ToBackend::Closed { session }) => {
                if !self.sessions.remove(&session) {
                    tracing::warn!(from = %self.from, session, "link CLOSED for a session not open");
                }
                tracing::debug!(from = %self.from, session, live = self.sessions.len(), "link CLOSED");
                return Ok(());
            }
            Ok(ToBackend::Away { session }) | Ok(ToBackend::Resumed { session }) => {
                // (Sent only to `announce_all` services: a session's client went away
                // or came back; the session stays open either way.)
                tracing::debug!(from = %self.from, session, "link AWAY/RESUMED");
                return Ok(());
            }
            Ok(ToBackend::RawOpen { session, path, .. }) => {
                self.sessions.insert(session);
                tracing::debug!(from = %self.from, session, path, "link RAW_OPEN");
                return Ok(());
            }
            Ok(ToBackend::Message {
                session,
                flags,
                payload,
            }) => {
                // A raw route's message comes back as it came (text or binary): the
                // echo a WebSocket conformance suite expects.
                let payload_len = payload.len();
                let mut prefix = Vec::with_capacity(10);
                FromBackend::Send {
                    session,
                    flags,
                    payload: Bytes::new(),
                }
                .encode(&mut prefix);
                msg.advance(msg.len() - payload_len);
                push_frame(out, OpCode::Binary, &prefix, msg);
                self.replies += 1;
                return Ok(());
            }
            Ok(ToBackend::ClientAnswer { call, code, .. }) => {
                // The echo backend makes no client calls (CALL_CLIENT).
                tracing::warn!(from = %self.from, call, code, "link CLIENT_ANSWER for a call never made");
                return Ok(());
            }
            Err(e) => return Err(self.fail(e)),
        };
        self.replies += 1;
        let mut prefix = [0u8; REPLY_PREFIX_LEN];
        FromBackend::Reply {
            call,
            status: 200,
            payload: Bytes::new(),
        }
        .encode(&mut &mut prefix[..]);
        // A REQUEST's payload is the message's tail: the reply carries those bytes as
        // they are (no copy, no reference count change).
        msg.advance(msg.len() - payload_len);
        push_frame(out, OpCode::Binary, &prefix, msg);
        Ok(())
    }

    fn on_protocol_error(&mut self, e: &ProtocolError) {
        eprintln!(
            "link-echo: closing the link from {} with {}: {e}",
            self.from,
            e.close_code()
        );
    }

    fn on_end(&mut self, error: Option<&io::Error>) {
        let how = match error {
            Some(e) => format!("failed ({e})"),
            None => "closed".to_owned(),
        };
        eprintln!(
            "link-echo: link from {} {how}: {} replies, {} events, {} sessions still open",
            self.from,
            self.replies,
            self.events,
            self.sessions.len()
        );
    }
}

impl LinkEcho {
    /// A fault of the gateway's: logged, and the link closed with 1002 naming it.
    fn fail(&self, what: impl fmt::Display) -> Fail {
        let reason = what.to_string();
        eprintln!(
            "link-echo: closing the link from {} with {CLOSE_PROTOCOL_ERROR}: {reason}",
            self.from
        );
        Fail {
            code: CLOSE_PROTOCOL_ERROR,
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::test_gateway::{encode, serve_ephemeral, Gateway, KEY};
    use bytes::BytesMut;
    use ringgate::proto::frame::encode_frame_into;
    use ringgate::proto::handshake;
    use ringgate::proto::link::{LinkError, SUBPROTOCOL};
    use std::io::{Read, Write};
    use std::time::Duration;

    /// A link echo on an ephemeral port of 127.0.0.1, on its own thread.
    fn start() -> SocketAddr {
        serve_ephemeral(|s, b| async move {
            let _ = serve_conn(s, b).await;
        })
    }

    fn request(call: u64, payload: &[u8]) -> Vec<u8> {
        encode(ToBackend::Request {
            session: 1,
            call,
            message_id: call.wrapping_add(1000),
            flags: 0,
            path: "/echo",
            payload,
        })
    }

    fn open(session: u64) -> Vec<u8> {
        encode(ToBackend::Open {
            session,
            session_id: "sid",
            account_id: "acct",
            roles: "user",
        })
    }

    #[test]
    fn an_upgrade_without_the_link_subprotocol_is_refused() {
        let addr = start();
        for offered in [
            None,
            Some("bannou.v1"),
            Some("ringgate-link.v2, bearer.tok"),
        ] {
            let (mut gw, head) = Gateway::connect(addr, offered);
            assert!(head.starts_with("HTTP/1.1 400 "), "{offered:?}: {head}");
            let mut body = String::new();
            gw.s.read_to_string(&mut body).unwrap();
            assert!(body.contains(SUBPROTOCOL), "{body}");
        }
    }

    #[test]
    fn the_upgrade_selects_the_link_subprotocol_wherever_it_is_offered() {
        let addr = start();
        for offered in [SUBPROTOCOL, "bannou.v1, ringgate-link.v1"] {
            let (_gw, head) = Gateway::connect(addr, Some(offered));
            assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
            assert!(
                head.contains(&format!(
                    "Sec-WebSocket-Accept: {}\r\n",
                    handshake::accept_key(KEY)
                )),
                "{head}"
            );
            let protocols: Vec<&str> = head
                .lines()
                .filter_map(|l| l.strip_prefix("Sec-WebSocket-Protocol: "))
                .collect();
            assert_eq!(protocols, [SUBPROTOCOL], "{head}");
        }
    }

    #[test]
    fn a_request_is_answered_with_a_reply_of_its_call_id_and_payload() {
        let mut gw = Gateway::linked(start());
        gw.send(&[open(1), request(7, b"{\"a\":1}")]);
        assert_eq!(gw.reply(), (7, 200, Bytes::from_static(b"{\"a\":1}")));
        gw.send(&[request(u64::MAX, b"")]);
        assert_eq!(gw.reply(), (u64::MAX, 200, Bytes::new()));
        // A payload large enough to be queued by reference, sent in two parts.
        let big: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let mut frame = BytesMut::new();
        encode_frame_into(
            &mut frame,
            true,
            OpCode::Binary,
            &request(8, &big),
            Some([1, 2, 3, 4]),
        );
        gw.s.write_all(&frame[..70_000]).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        gw.s.write_all(&frame[70_000..]).unwrap();
        assert_eq!(gw.reply(), (8, 200, Bytes::from(big)));
    }

    #[test]
    fn every_request_of_one_write_is_answered_in_order() {
        let mut gw = Gateway::linked(start());
        let payload = [b'x'; 64];
        let mut msgs = vec![open(1)];
        msgs.extend((1..=2000u64).map(|call| request(call, &payload)));
        gw.send(&msgs);
        for call in 1..=2000u64 {
            assert_eq!(gw.reply(), (call, 200, Bytes::copy_from_slice(&payload)));
        }
    }

    #[test]
    fn events_and_session_notices_get_no_reply() {
        let mut gw = Gateway::linked(start());
        gw.send(&[
            open(5),
            request(0, b"an event"),
            encode(ToBackend::Closed { session: 5 }),
            // A CLOSED for a session never opened is logged, not fatal.
            encode(ToBackend::Closed { session: 6 }),
            request(9, b"after"),
        ]);
        // The first answer is the request's: nothing came before it.
        assert_eq!(gw.reply(), (9, 200, Bytes::from_static(b"after")));
    }

    #[test]
    fn a_malformed_message_closes_the_link_with_1002_after_the_replies_before_it() {
        let mut gw = Gateway::linked(start());
        gw.send(&[request(1, b"ok"), vec![0x7f, 1, 2, 3], request(2, b"never")]);
        assert_eq!(gw.reply(), (1, 200, Bytes::from_static(b"ok")));
        let close = gw.close_frame();
        assert_eq!(close.code, 1002);
        assert_eq!(
            close.reason,
            LinkError::UnknownKind(0x7f).to_string().as_bytes()
        );

        // A truncated request, and an action kind (the wrong direction).
        for garbage in [
            request(3, b"")[..10].to_vec(),
            vec![0x81, 0, 0, 0, 1, 0, 200],
        ] {
            let mut gw = Gateway::linked(start());
            gw.send(&[garbage]);
            assert_eq!(gw.close_frame().code, 1002);
        }
    }

    #[test]
    fn a_text_message_closes_the_link_with_1002() {
        let mut gw = Gateway::linked(start());
        let mut out = BytesMut::new();
        encode_frame_into(&mut out, true, OpCode::Text, b"{}", Some([1, 2, 3, 4]));
        gw.s.write_all(&out).unwrap();
        assert_eq!(gw.close_frame().code, 1002);
    }
}
