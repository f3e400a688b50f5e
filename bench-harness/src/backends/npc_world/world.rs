//! The NPC world's state on its one thread: the NPCs (their decision counters and
//! random streams), their schedule, the live link connections, and the publishes not
//! yet handed to a connection. [`World::tick`] is the one ticker's work: every NPC due
//! decides (a fresh made-up state, `t` = now) and its state becomes a PUBLISH queued for
//! the publishing link, which is woken to send it.
//!
//! Why it exists: the gateway dials one link per shard and fans a publish out to every
//! shard itself, so each publish goes out on exactly one link (the oldest live one);
//! the choice, the queue and the counters are shared by the ticker and every link
//! connection, and live here, apart from the connection's protocol handling (`link`).

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Waker;

use bytes::{Bytes, BytesMut};
use ringgate::proto::frame::{encode_frame_into, OpCode};
use ringgate::proto::link::FromBackend;

use super::schedule::Schedule;
use crate::npc_state::{self, NpcState};
use crate::rng::Rng;

/// Publishes queued while the publishing link's outbox holds more than this are dropped
/// (counted): a gateway that stops reading must not grow the world's memory.
pub(super) const MAX_QUEUED_BYTES: usize = 16 << 20;

/// The world's counters, readable from other threads (the observers scenario reports
/// them).
#[derive(Debug, Default)]
pub struct WorldCounters {
    /// NPC decisions made.
    pub decisions: AtomicU64,
    /// Decisions sent as PUBLISH.
    pub published: AtomicU64,
    /// Decisions made while no link was up (not sent).
    pub unlinked: AtomicU64,
    /// Decisions dropped because the publishing link was not being read.
    pub dropped: AtomicU64,
    /// SUBSCRIBE actions sent.
    pub subscribes: AtomicU64,
    /// Link connections up now.
    pub links: AtomicU64,
}

impl WorldCounters {
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    pub(super) fn bump(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

/// One link connection as the world sees it.
struct LinkSlot {
    id: u64,
    /// Its task's waker, kept while it waits for publishes.
    waker: Option<Waker>,
}

/// The NPC world (one thread's; `Rc`-shared by the ticker and the link connections).
pub(super) struct World {
    npcs: u32,
    seqs: RefCell<Vec<u64>>,
    rng: RefCell<Rng>,
    schedule: RefCell<Schedule>,
    /// Live links, oldest first: the first one publishes.
    links: RefCell<Vec<LinkSlot>>,
    next_link: Cell<u64>,
    /// Whole PUBLISH frames not yet taken by the publishing link.
    pending: RefCell<BytesMut>,
    /// Scratch for one link message.
    scratch: RefCell<Vec<u8>>,
    due: RefCell<Vec<u32>>,
    pub(super) counters: Arc<WorldCounters>,
}

impl World {
    /// `npcs` NPCs whose first decisions fall within 500 ms of `now_ns` (unix ns).
    pub(super) fn new(npcs: u32, now_ns: u64, seed: u64, counters: Arc<WorldCounters>) -> World {
        World {
            npcs,
            seqs: RefCell::new(vec![0; npcs as usize]),
            rng: RefCell::new(Rng::new(seed ^ 0x5EED)),
            schedule: RefCell::new(Schedule::new(npcs, now_ns, seed)),
            links: RefCell::default(),
            next_link: Cell::new(1),
            pending: RefCell::default(),
            scratch: RefCell::default(),
            due: RefCell::default(),
            counters,
        }
    }

    pub(super) fn npcs(&self) -> u32 {
        self.npcs
    }

    /// A new live link; returns its id.
    pub(super) fn link_up(&self) -> u64 {
        let id = self.next_link.get();
        self.next_link.set(id + 1);
        self.links.borrow_mut().push(LinkSlot { id, waker: None });
        WorldCounters::bump(&self.counters.links, 1);
        id
    }

    /// Link `id` is gone; the next oldest publishes (woken in case publishes wait).
    pub(super) fn link_down(&self, id: u64) {
        let mut links = self.links.borrow_mut();
        links.retain(|l| l.id != id);
        self.counters.links.fetch_sub(1, Ordering::Relaxed);
        if let Some(w) = links.first_mut().and_then(|l| l.waker.take()) {
            w.wake();
        }
    }

    /// Every NPC due at `now_ns` (unix ns) decides; their PUBLISHes are queued for the
    /// publishing link, which is woken. Returns how many decided.
    pub(super) fn tick(&self, now_ns: u64) -> usize {
        let mut due = self.due.borrow_mut();
        self.schedule.borrow_mut().take_due(now_ns, &mut due);
        if due.is_empty() {
            return 0;
        }
        let c = &self.counters;
        WorldCounters::bump(&c.decisions, due.len() as u64);
        let mut seqs = self.seqs.borrow_mut();
        let mut rng = self.rng.borrow_mut();
        let mut links = self.links.borrow_mut();
        if links.is_empty() {
            for &id in due.iter() {
                seqs[id as usize] += 1;
            }
            WorldCounters::bump(&c.unlinked, due.len() as u64);
            return due.len();
        }
        let mut pending = self.pending.borrow_mut();
        let mut msg = self.scratch.borrow_mut();
        for &id in due.iter() {
            let seq = &mut seqs[id as usize];
            *seq += 1;
            let state = NpcState::made_up(id, *seq, now_ns, rng.next_u64(), self.npcs);
            msg.clear();
            FromBackend::Publish {
                flags: 0,
                topic: npc_state::topic(id).into(),
                key: Some(id.to_string().into()),
                payload: state.to_json().into(),
            }
            .encode(&mut *msg);
            encode_frame_into(&mut pending, true, OpCode::Binary, &msg, None);
        }
        if let Some(w) = links[0].waker.take() {
            w.wake();
        }
        due.len()
    }

    /// For link `id`: the publishes to send if it is the publishing link and any wait
    /// (`None` otherwise, with `waker` kept to be woken when some do). Publishes that
    /// would go behind `queued` bytes past [`MAX_QUEUED_BYTES`] are dropped, counted.
    pub(super) fn take_publishes(&self, id: u64, queued: usize, waker: &Waker) -> Option<Bytes> {
        let mut links = self.links.borrow_mut();
        let publisher = links.first().map(|l| l.id) == Some(id);
        let mut pending = self.pending.borrow_mut();
        if publisher && !pending.is_empty() {
            let frames = pending.split().freeze();
            if queued > MAX_QUEUED_BYTES {
                let n = count_frames(&frames);
                WorldCounters::bump(&self.counters.dropped, n);
                return None;
            }
            WorldCounters::bump(&self.counters.published, count_frames(&frames));
            return Some(frames);
        }
        if let Some(slot) = links.iter_mut().find(|l| l.id == id) {
            match &slot.waker {
                Some(w) if w.will_wake(waker) => {}
                _ => slot.waker = Some(waker.clone()),
            }
        }
        None
    }
}

/// How many WebSocket frames `buf` holds (whole unmasked frames, as `tick` writes them).
fn count_frames(buf: &[u8]) -> u64 {
    let mut n = 0;
    let mut at = 0;
    while at < buf.len() {
        match ringgate::proto::frame::parse_header(&buf[at..]) {
            Ok(Some((h, hl))) => {
                at += hl + h.payload_len as usize;
                n += 1;
            }
            _ => break,
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Wake;

    struct Flag(std::sync::atomic::AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    fn waker() -> (Arc<Flag>, Waker) {
        let f = Arc::new(Flag(std::sync::atomic::AtomicBool::new(false)));
        (f.clone(), Waker::from(f))
    }

    #[test]
    fn publishes_go_to_the_oldest_link_only_and_wake_it() {
        let w = World::new(100, 0, 1, Arc::default());
        let (a, b) = (w.link_up(), w.link_up());
        let (fa, wa) = waker();
        let (_, wb) = waker();
        assert!(w.take_publishes(a, 0, &wa).is_none());
        assert!(w.take_publishes(b, 0, &wb).is_none());
        let n = w.tick(500_000_000) as u64;
        assert_eq!(n, 100, "every NPC decides within the first 500 ms");
        assert!(fa.0.load(Ordering::SeqCst), "the publisher is woken");
        assert!(w.take_publishes(b, 0, &wb).is_none(), "not the publisher");
        let frames = w.take_publishes(a, 0, &wa).unwrap();
        assert_eq!(count_frames(&frames), n);
        assert_eq!(WorldCounters::get(&w.counters.published), n);
        // The publisher goes: the other one takes over.
        w.link_down(a);
        w.tick(2_000_000_000);
        assert!(w.take_publishes(b, 0, &wb).is_some());
    }

    #[test]
    fn without_a_link_decisions_are_counted_not_queued() {
        let w = World::new(10, 0, 1, Arc::default());
        w.tick(1_000_000_000);
        assert_eq!(WorldCounters::get(&w.counters.unlinked), 10);
        let id = w.link_up();
        let (_, wk) = waker();
        assert!(w.take_publishes(id, 0, &wk).is_none());
    }

    #[test]
    fn a_publisher_that_is_not_read_drops_publishes() {
        let w = World::new(10, 0, 1, Arc::default());
        let id = w.link_up();
        w.tick(1_000_000_000);
        let (_, wk) = waker();
        assert!(w.take_publishes(id, MAX_QUEUED_BYTES + 1, &wk).is_none());
        assert_eq!(WorldCounters::get(&w.counters.dropped), 10);
    }
}
