//! One link connection of the NPC world: the gateway's REQUESTs for `/npc/watch` are
//! answered with a SUBSCRIBE of the calling session to each NPC's topic, then REPLY 200
//! `{}`; and when this connection is the world's publishing link, the publishes the
//! ticker queued go out on it.
//!
//! Why it exists: this is the world's side of the link protocol (docs/LINK.md), apart
//! from the world itself (`world`): what a REQUEST means, what an answer looks like,
//! which faults close the link.
//!
//! Answers: a `/npc/watch` body that is not `{"npcs":[ids…]}` with every id below K gets
//! REPLY 400; any other path 404; an event (call 0) to `/npc/watch` subscribes without a
//! reply. OPEN is counted, CLOSED (a subscription ends with its session, in the
//! gateway) and CLIENT_ANSWER (the world calls no client) are ignored. A text message, or one the codec rejects, closes the link with 1002.

use std::fmt;
use std::io;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use ringgate::io::Outbox;
use ringgate::proto::frame::{encode_frame_into, OpCode, CLOSE_PROTOCOL_ERROR};
use ringgate::proto::link::{Addr, FromBackend, ToBackend, REPLY_PREFIX_LEN};
use ringgate::proto::ws::ProtocolError;
use serde::Deserialize;

use super::world::{World, WorldCounters};
use crate::backends::link_upgrade::Peer;
use crate::backends::ws_conn::{push_frame, Fail, WsService};
use crate::npc_state;

/// The endpoint the world serves.
pub(crate) const WATCH_PATH: &str = "/npc/watch";

/// A `/npc/watch` request's body.
#[derive(Debug, Deserialize)]
struct Watch {
    npcs: Vec<u32>,
}

/// The NPCs a `/npc/watch` body asks for, if it is well-formed and names only NPCs of
/// `0..npcs`.
pub(super) fn parse_watch(body: &[u8], npcs: u32) -> Option<Vec<u32>> {
    let w: Watch = serde_json::from_slice(body).ok()?;
    w.npcs.iter().all(|&id| id < npcs).then_some(w.npcs)
}

/// One link connection's state.
pub(super) struct NpcLink {
    id: u64,
    world: Rc<World>,
    from: Peer,
    watches: u64,
    sessions: u64,
}

impl NpcLink {
    /// A link that just came up from `from`.
    pub(super) fn new(world: Rc<World>, from: Peer) -> NpcLink {
        NpcLink {
            id: world.link_up(),
            world,
            from,
            watches: 0,
            sessions: 0,
        }
    }

    fn fail(&self, what: impl fmt::Display) -> Fail {
        let reason = what.to_string();
        eprintln!(
            "npc-world: closing the link from {} with {CLOSE_PROTOCOL_ERROR}: {reason}",
            self.from
        );
        Fail {
            code: CLOSE_PROTOCOL_ERROR,
            reason,
        }
    }
}

/// Queues one link message as a binary frame.
fn push_message(out: &mut Outbox, msg: &[u8]) {
    let mut frame = BytesMut::with_capacity(msg.len() + 4);
    encode_frame_into(&mut frame, true, OpCode::Binary, msg, None);
    out.push_bytes(frame.freeze());
}

fn reply(out: &mut Outbox, call: u64, status: u16, body: &'static [u8]) {
    let mut prefix = [0u8; REPLY_PREFIX_LEN];
    FromBackend::Reply {
        call,
        status,
        payload: Bytes::new(),
    }
    .encode(&mut &mut prefix[..]);
    push_frame(out, OpCode::Binary, &prefix, Bytes::from_static(body));
}

impl WsService for NpcLink {
    fn on_data(&mut self, opcode: OpCode, msg: Bytes, out: &mut Outbox) -> Result<(), Fail> {
        if opcode != OpCode::Binary {
            return Err(self.fail("a text message (link messages are binary)"));
        }
        match ToBackend::decode(&msg) {
            Ok(ToBackend::Request {
                session,
                call,
                path,
                payload,
                ..
            }) => {
                if path != WATCH_PATH {
                    if call != 0 {
                        reply(out, call, 404, b"");
                    }
                    return Ok(());
                }
                let Some(npcs) = parse_watch(payload, self.world.npcs()) else {
                    if call != 0 {
                        reply(out, call, 400, b"");
                    }
                    return Ok(());
                };
                let mut action = Vec::with_capacity(32);
                for id in &npcs {
                    action.clear();
                    FromBackend::Subscribe {
                        addr: Addr::Link(session),
                        topic: npc_state::topic(*id).into(),
                    }
                    .encode(&mut action);
                    push_message(out, &action);
                }
                WorldCounters::bump(&self.world.counters.subscribes, npcs.len() as u64);
                self.watches += 1;
                if call != 0 {
                    reply(out, call, 200, b"{}");
                }
                Ok(())
            }
            Ok(ToBackend::Open { .. }) => {
                self.sessions += 1;
                Ok(())
            }
            // The world makes no client calls: no answers to expect.
            Ok(ToBackend::Closed { .. })
            | Ok(ToBackend::ClientAnswer { .. })
            | Ok(ToBackend::Away { .. })
            | Ok(ToBackend::Resumed { .. })
            // (The world serves no raw routes.)
            | Ok(ToBackend::RawOpen { .. })
            | Ok(ToBackend::Message { .. }) => Ok(()),
            Err(e) => Err(self.fail(e)),
        }
    }

    fn poll_push(&mut self, cx: &mut Context<'_>, out: &mut Outbox) -> Poll<()> {
        match self.world.take_publishes(self.id, out.len(), cx.waker()) {
            Some(frames) => {
                out.push_bytes(frames);
                Poll::Ready(())
            }
            None => Poll::Pending,
        }
    }

    fn on_protocol_error(&mut self, e: &ProtocolError) {
        eprintln!(
            "npc-world: closing the link from {} with {}: {e}",
            self.from,
            e.close_code()
        );
    }

    fn on_end(&mut self, error: Option<&io::Error>) {
        self.world.link_down(self.id);
        let how = match error {
            Some(e) => format!("failed ({e})"),
            None => "closed".to_owned(),
        };
        eprintln!(
            "npc-world: link from {} {how}: {} sessions opened, {} watches",
            self.from, self.sessions, self.watches
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watch_body_names_npcs_of_the_world() {
        assert_eq!(
            parse_watch(br#"{"npcs":[0,5,999]}"#, 1000),
            Some(vec![0, 5, 999])
        );
        assert_eq!(parse_watch(br#"{"npcs":[]}"#, 1000), Some(vec![]));
        assert_eq!(parse_watch(br#"{"npcs":[1000]}"#, 1000), None);
        assert_eq!(parse_watch(br#"{"npc":[1]}"#, 1000), None);
        assert_eq!(parse_watch(b"[1,2]", 1000), None);
    }
}
