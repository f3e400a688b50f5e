//! One observer: asks `/npc/watch` for its NPCs, then reads the pushes until the run is
//! over, accounting for each (`tally`): decision-to-receipt latency, sequence gaps, and
//! how the connection ended if it ended early. A slow observer handles one message,
//! then pauses, so it reads at a tenth of the rate its pushes come at; the bytes it has
//! not read back up into the gateway (its outbox is where conflation happens).
//!
//! Why it exists: this is the client side of the NPC scenario's hot path. A fast
//! observer handles every complete message of one read before it waits again, and takes
//! the clock once per message (receipt time), never per byte.

use std::rc::Rc;
use std::time::{Duration, Instant};

use ringgate::client::{Client, Incoming, Manifest, ReadOutcome};

use super::state::State;
use super::tally::{is_slow, watch_list, Seen, Watched};
use crate::conn;
use crate::npc_state::Head;
use crate::report;
use crate::scenario::rpc::code_key;
use crate::sched::{race, unix_ns, Race};

/// With nothing to read, an observer wakes this often to see the end of the run.
const TICK: Duration = Duration::from_millis(100);

/// An established connection and the GUID of `/npc/watch` in its manifest.
pub(super) struct Observer {
    pub(super) client: Client,
    pub(super) guid: [u8; 16],
    /// Its global index in the run.
    pub(super) g: u64,
}

/// How an observer's loop ended.
enum End {
    /// The run is over.
    Over,
    /// The watch was refused or never answered (its key in `WatchStats::errors`).
    WatchFailed(String),
    /// The connection ended (its cause).
    Dropped(String),
}

/// Runs observer `o` until the run is over or its connection ends.
pub(super) async fn observe(o: Observer, st: Rc<State>) {
    let Observer {
        mut client,
        guid,
        g,
    } = o;
    let cfg = &st.cfg;
    let slow = is_slow(g, cfg.slow_share);
    let npcs = watch_list(g, cfg.watch, cfg.npcs, cfg.seed);
    let mut watched = Watched::new(&npcs);
    let body = serde_json::to_vec(&serde_json::json!({ "npcs": npcs })).expect("plain JSON");
    let watch_id = client.queue_request(0, 0, 0, guid, &body);
    let watch_deadline = Instant::now() + cfg.connect_timeout;
    let mut watching = false;
    // One timer for the connection's life, set again only once it has fired: a timer
    // set and dropped per wait would cost more than the message it waits for.
    let mut tick = std::pin::pin!(monoio::time::sleep(TICK));
    let end = 'run: loop {
        // Every complete message already read.
        loop {
            let incoming = match client.try_next() {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(e) => break 'run End::Dropped(conn::drop_cause("run", &e)),
            };
            match incoming {
                Incoming::Push(_, payload) => {
                    let now = unix_ns();
                    let seen = match Head::parse(&payload) {
                        Some(h) => watched.see(h, now),
                        None if Manifest::parse(&payload).is_ok() => Seen::Manifest,
                        None => Seen::Foreign,
                    };
                    let class = if slow { &st.slow } else { &st.fast };
                    class.borrow_mut().count(seen, st.measured(now));
                    live_count(&st, seen, slow, now);
                    if slow && watching {
                        // Flush a pong the message may have followed, then pause.
                        if client.queued() > 0 {
                            if let Err(e) = client.flush().await {
                                break 'run End::Dropped(conn::drop_cause("send", &e));
                            }
                        }
                        monoio::time::sleep(cfg.slow_pause).await;
                        if st.over(unix_ns()) {
                            break 'run End::Over;
                        }
                    }
                }
                Incoming::Response(h, _) if h.message_id == watch_id && !watching => {
                    if h.code != 0 {
                        break 'run End::WatchFailed(code_key(h.code));
                    }
                    watching = true;
                    st.watch.borrow_mut().ok += 1;
                    let class = if slow { &st.slow } else { &st.fast };
                    class.borrow_mut().observers += 1;
                    st.bump(|l| l.watching += 1);
                }
                Incoming::Close(c) => {
                    break 'run End::Dropped(format!("closed_{}", c.map_or(1005, |(code, _)| code)))
                }
                // Pings are answered by the client (the pong goes out with the flush).
                _ => {}
            }
        }
        if client.queued() > 0 {
            if let Err(e) = client.flush().await {
                break End::Dropped(conn::drop_cause("send", &e));
            }
        }
        if st.over(unix_ns()) {
            break End::Over;
        }
        if !watching && Instant::now() >= watch_deadline {
            break End::WatchFailed("timeout".into());
        }
        match race(client.readable(), tick.as_mut()).await {
            Race::First(Ok(())) => match client.try_read() {
                Ok(ReadOutcome::Data(_)) | Ok(ReadOutcome::WouldBlock) => {}
                Ok(ReadOutcome::Eof) => break End::Dropped("closed_eof".into()),
                Err(e) => break End::Dropped(conn::drop_cause("run", &e)),
            },
            Race::First(Err(e)) => break End::Dropped(conn::drop_cause("run", &e)),
            Race::Second => tick.set(monoio::time::sleep(TICK)),
        }
    };
    st.npcs_seen.set(st.npcs_seen.get() + watched.seen() as u64);
    match end {
        End::Over => {}
        End::WatchFailed(key) => {
            *st.watch.borrow_mut().errors.entry(key).or_default() += 1;
        }
        End::Dropped(cause) if watching => {
            let class = if slow { "slow" } else { "fast" };
            *st.disconnects
                .borrow_mut()
                .entry(format!("{class}:{cause}"))
                .or_default() += 1;
            st.bump(|l| {
                l.watching -= 1;
                l.disconnects += 1;
            });
        }
        End::Dropped(cause) => {
            *st.watch
                .borrow_mut()
                .errors
                .entry(format!("closed:{cause}"))
                .or_default() += 1;
        }
    }
    st.parked.borrow_mut().push(client);
}

/// The live counters and the last second's histogram (from the start, warm-up
/// included).
fn live_count(st: &State, seen: Seen, slow: bool, now: u64) {
    let (latency, gap) = match seen {
        Seen::First { latency_us } => (Some(latency_us), 0),
        Seen::Next { latency_us, gap } => (Some(latency_us), gap),
        Seen::Stale => (None, 0),
        Seen::Foreign | Seen::Manifest => return,
    };
    st.bump(|l| {
        l.deliveries += 1;
        l.gaps += gap;
    });
    if let Some(us) = latency.filter(|_| st.started(now)) {
        let h = if slow {
            &st.interval_slow
        } else {
            &st.interval_fast
        };
        report::record(&mut h.borrow_mut(), us);
    }
}
