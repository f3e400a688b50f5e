//! `ringgate-bench npc-world`: a link backend (docs/LINK.md) simulating K NPCs, the
//! backend of the `observers` scenario (the NPC world of docs/DESIGN.md §9). Each NPC
//! decides every 100–500 ms (drawn afresh per decision) and publishes its ~200-byte JSON
//! state (`npc_state`) to topic `npc.{id}`, keyed by its id, with the link action
//! PUBLISH; endpoint `/npc/watch` subscribes the calling session to the NPCs it names.
//!
//! Why it exists: topics, conflation and fan-out (docs/DESIGN.md §6) are what an NPC
//! game's observers need of the gateway, and this is the load that shows them: many
//! observers, each watching a few of many NPCs that change on their own schedule.
//!
//! How: one thread (one monoio runtime) serves every link connection (the gateway dials
//! one per shard) and runs one ticker task (every `tick`, 5 ms by default) that makes the
//! NPCs due decide; there is no task or timer per NPC. Each publish goes out on one link
//! only, the oldest live one: the gateway fans it out to its other shards itself. The
//! files: `schedule` (when each NPC decides), `world` (NPCs, links, queued publishes,
//! counters), `link` (one link connection's protocol); PUBLISH and SUBSCRIBE are the
//! library's link codec's (`FromBackend`).

mod link;
mod schedule;
mod world;

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;

use super::link_upgrade::accept_link;
use super::listen::{accept_loop, bind_listeners};
use super::ws_conn::serve_ws_with;
use crate::cli::NpcWorldArgs;
use crate::sched::unix_ns;
pub(crate) use link::WATCH_PATH;
pub use world::WorldCounters;

/// A world serving on its own thread.
pub struct Started {
    /// Where it listens (the gateway's `link` for the npc service: `ws://{addr}/`).
    pub addr: SocketAddr,
    pub counters: Arc<WorldCounters>,
    thread: JoinHandle<anyhow::Result<()>>,
}

impl Started {
    /// Waits for the world's thread (it returns only if it fails).
    pub fn join(self) -> anyhow::Result<()> {
        match self.thread.join() {
            Ok(r) => r,
            Err(_) => anyhow::bail!("npc-world thread panicked"),
        }
    }
}

/// Binds `listen` and serves a world of `npcs` NPCs on a thread of its own (ticking
/// every `tick`; `seed` makes its random choices).
pub fn start(listen: SocketAddr, npcs: u32, tick: Duration, seed: u64) -> anyhow::Result<Started> {
    if npcs == 0 {
        anyhow::bail!("an NPC world needs at least one NPC");
    }
    let l = bind_listeners(listen, Some(1))
        .with_context(|| format!("npc-world listening on {listen}"))?
        .pop()
        .expect("one listener");
    let addr = l.local_addr()?;
    let counters = Arc::new(WorldCounters::default());
    let c2 = counters.clone();
    let thread = std::thread::Builder::new()
        .name("npc-world".into())
        .spawn(move || {
            let world = Rc::new(world::World::new(npcs, unix_ns(), seed, c2));
            let ticking = Cell::new(false);
            accept_loop(l, move |stream, rbuf| {
                // The accept loop owns the runtime: the ticker starts with the first link
                // (before it there is no one to publish to).
                if !ticking.replace(true) {
                    monoio::spawn(run_ticker(world.clone(), tick));
                }
                let world = world.clone();
                async move {
                    let _ = serve_ws_with(stream, rbuf, |req, head, peer| {
                        let (from, response) = accept_link("npc-world", req, head, peer)?;
                        Ok((link::NpcLink::new(world, from), response))
                    })
                    .await;
                }
            })
        })?;
    Ok(Started {
        addr,
        counters,
        thread,
    })
}

/// The one ticker: every `tick`, the NPCs due decide and publish.
async fn run_ticker(world: Rc<world::World>, tick: Duration) {
    loop {
        monoio::time::sleep(tick).await;
        world.tick(unix_ns());
    }
}

/// `ringgate-bench npc-world`.
pub fn run(args: &NpcWorldArgs) -> anyhow::Result<()> {
    let listen: SocketAddr = args.listen.parse()?;
    let world = start(
        listen,
        args.npcs,
        Duration::from_millis(args.tick_ms.max(1)),
        args.seed,
    )?;
    eprintln!(
        "npc-world: {} NPCs on ws://{}/ (subprotocol {}; endpoint {WATCH_PATH}; tick {} ms)",
        args.npcs,
        world.addr,
        ringgate::proto::link::SUBPROTOCOL,
        args.tick_ms.max(1)
    );
    world.join()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::test_gateway::{encode, Gateway};
    use crate::npc_state::Head;
    use bytes::Bytes;
    use ringgate::proto::link::{Addr, FromBackend, ToBackend};
    use ringgate::proto::ws::Message;
    use std::time::Instant;

    fn world(npcs: u32) -> Started {
        start(
            "127.0.0.1:0".parse().unwrap(),
            npcs,
            Duration::from_millis(5),
            7,
        )
        .unwrap()
    }

    fn watch(session: u64, call: u64, body: &str) -> Vec<u8> {
        encode(ToBackend::Request {
            session,
            call,
            message_id: 1,
            flags: 0,
            path: WATCH_PATH,
            payload: body.as_bytes(),
        })
    }

    /// A link message's kind byte and the rest (skipping the publishes in between).
    fn next_not_publish(gw: &mut Gateway) -> Bytes {
        loop {
            match gw.next() {
                Some(Message::Binary(b)) if b[0] == ringgate::proto::link::kind::PUBLISH => {
                    continue
                }
                Some(Message::Binary(b)) => return b,
                other => panic!("not a binary message: {other:?}"),
            }
        }
    }

    #[test]
    fn a_watch_subscribes_the_session_to_each_npc_then_replies() {
        let w = world(50);
        let mut gw = Gateway::linked(w.addr);
        gw.send(&[watch(0x0102, 9, r#"{"npcs":[3,41]}"#)]);
        for id in [3u32, 41] {
            let b = next_not_publish(&mut gw);
            assert_eq!(
                FromBackend::decode(&b).unwrap(),
                FromBackend::Subscribe {
                    addr: Addr::Link(0x0102),
                    topic: format!("npc.{id}").into(),
                }
            );
        }
        let b = next_not_publish(&mut gw);
        match FromBackend::decode(&b).unwrap() {
            FromBackend::Reply {
                call,
                status,
                payload,
            } => assert_eq!((call, status, &payload[..]), (9, 200, &b"{}"[..])),
            other => panic!("{other:?}"),
        }
        // A bad body and an unknown path.
        gw.send(&[watch(1, 10, r#"{"npcs":[50]}"#)]);
        assert!(matches!(
            FromBackend::decode(&next_not_publish(&mut gw)).unwrap(),
            FromBackend::Reply {
                call: 10,
                status: 400,
                ..
            }
        ));
        gw.send(&[encode(ToBackend::Request {
            session: 1,
            call: 11,
            message_id: 2,
            flags: 0,
            path: "/npc/other",
            payload: b"{}",
        })]);
        assert!(matches!(
            FromBackend::decode(&next_not_publish(&mut gw)).unwrap(),
            FromBackend::Reply {
                call: 11,
                status: 404,
                ..
            }
        ));
        assert_eq!(WorldCounters::get(&w.counters.subscribes), 2);
    }

    /// A PUBLISH's topic, key and payload (its flags must say JSON).
    fn parse_publish(b: Bytes) -> (String, String, Bytes) {
        match FromBackend::decode(&b).unwrap() {
            FromBackend::Publish {
                flags: 0,
                topic,
                key: Some(key),
                payload,
            } => (topic.into(), key.into(), payload),
            other => panic!("not a JSON publish with a key: {other:?}"),
        }
    }

    #[test]
    fn every_npc_publishes_its_state_to_its_topic_on_one_link_only() {
        let w = world(20);
        let mut first = Gateway::linked(w.addr);
        let second = Gateway::linked(w.addr);
        let mut seen = vec![0u64; 20];
        let started = Instant::now();
        while seen.iter().any(|&s| s < 2) {
            assert!(started.elapsed() < Duration::from_secs(3), "{seen:?}");
            let Some(Message::Binary(b)) = first.next() else {
                panic!("the first link publishes");
            };
            let (topic, key, payload) = parse_publish(b);
            let head = Head::parse(&payload).unwrap();
            assert_eq!(topic, format!("npc.{}", head.npc));
            assert_eq!(key, head.npc.to_string());
            assert_eq!(
                head.seq,
                seen[head.npc as usize] + 1,
                "in order, none skipped"
            );
            seen[head.npc as usize] = head.seq;
            let age = crate::sched::unix_ns().saturating_sub(head.t);
            assert!(age < 1_000_000_000, "t is the decision time: {age} ns old");
        }
        // The second link got nothing but may still be used.
        let mut second = second;
        second.s.set_nonblocking(true).unwrap();
        let mut b = [0u8; 1];
        assert!(
            std::io::Read::read(&mut second.s, &mut b).is_err(),
            "nothing on the second link"
        );
        assert!(WorldCounters::get(&w.counters.published) >= 40);
    }
}
