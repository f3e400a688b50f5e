//! Read batching under load: while a shard's thread is busy, each client connection
//! reads at most once per tick.
//!
//! Why: at moderate rates a client sends a request every few hundred microseconds, so a
//! connection read the moment it turns readable carries one request, and its answer
//! leaves in a write of its own: about one `recv` and one `sendmsg` per request, each
//! a few microseconds of kernel work on loopback. Well below its capacity the gateway
//! then spends a whole core (peers, ringgate-link at a third of its max: 91 % of a
//! core), and near that point any noise turns into long queues and p99 tails. Once the
//! thread is busy, holding each connection to one read per tick lets requests gather:
//! more per read, more per backend write, more answers per client write, so the same
//! load costs less CPU and the queues never form. Below the threshold nothing waits;
//! engaged, a read waits at most one tick (`server.read_batch_tick_us`, 0.5 ms).
//!
//! The tick trades CPU for latency. Measured with peers.sh's setup (one shard; gateway
//! and echo backend on one core, `rpc` on the other; 100 connections, 64 B), the same
//! binary with `read_batch_tick_us` off, 0.25, 0.5, 1 or 2 ms, 2 rounds each; CPU is the
//! gateway's per request, p99 from the intended send time:
//! - ringgate-link at 150k req/s: off 5.7 µs and p99 1.1–1.7 ms; 0.25 ms 3.4–3.6 µs,
//!   p99 1.9–2.0 ms; 0.5 ms 2.9–3.7 µs, p99 2.0–2.2 ms; 2 ms 3.7 µs, p99 4.0–4.2 ms.
//! - ringgate-link at 790k req/s: p99 off 2.7–3.0 ms, 0.5 ms 3.8 ms, 2 ms 5.8 ms.
//! - ringgate-link at max (closed loop): off 1.75–1.80M, 0.5 ms 1.71M, 2 ms 1.58M req/s.
//!   A 2 ms tick caps each connection at one window of requests per tick; that cost
//!   12 %, too little for the closed-loop guard below to notice.
//! - HTTP path at 400k req/s: off 2.4 µs, p99 2.7 ms; 0.5 ms 1.9 µs, p99 3.8 ms; 2 ms
//!   1.5 µs, p99 5.7 ms.
//!
//! The shipped 0.5 ms keeps most of the saving at half of 2 ms's added latency. The
//! demo (2000 clients at 5 req/s each) never engages it. An earlier build that counted
//! waiting-for-a-CPU as busy at any load cut the demo's p99 from 1.6–3.1 to 3.9–5.5 ms,
//! hence [`ON_CPU_FLOOR`].
//!
//! Shape: [`Busy`] (sans-IO) decides from the thread's busy share and the messages it
//! read whether the gate is engaged, with hysteresis and a guard against holding back a
//! closed loop. [`ReadGate`] is the per-shard gate the connections ask before they wait
//! for readability; [`run`] is the shard's ticker task that measures the thread (time
//! on a CPU over the time it could have run, from schedstat) and opens the gate once
//! per tick. No crate does this for a monoio shard; it is ~150 lines.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, Instant};

use crate::metrics::ShardMetrics;

/// Whether the gate should be engaged, from the thread's CPU share and the messages
/// it read per window.
///
/// The gate must never cost throughput: clients that send only once answered (a
/// closed loop, as `rpc --rate max` does) read at most once per tick would wait for the
/// tick with the thread idle (peers, ringgate-link at max: 1.08M → 516k req/s with the
/// core 63 % busy). So while engaged, a window (after the first) that read fewer
/// messages per second than [`THROTTLED`] of the last window before engaging lets go,
/// and the gate stays off for [`HOLD_OFF`] windows. An open-loop load reads the same
/// number either way, so it keeps the gate. A window in which the thread spent more
/// than [`STALLED`] of the time waiting for a CPU is not judged: another thread held the
/// core (here the kernel's page reclaim takes ~90 ms of a core every 5 s), so fewer
/// messages were read for a reason that is not the gate, and letting go then held the
/// gate off for a second just when a backlog had formed.
#[derive(Debug, Clone)]
pub struct Busy {
    engaged: bool,
    /// Engage at or above this share of a core.
    on: f64,
    /// Disengage below this share (lower than `on`: batching itself lowers the share).
    off: f64,
    /// Messages read in the last window before engaging.
    before: u64,
    /// Windows left before the gate may engage again.
    hold: u32,
    /// Engaged windows so far (the first one, half before the gate, is not judged).
    judged: u32,
}

/// While engaged, a window that read less than this share of the messages of the last
/// window before engaging means the gate holds clients back.
pub const THROTTLED: f64 = 0.7;
/// Windows the gate stays off after it held clients back (1 s at the 10 ms window).
pub const HOLD_OFF: u32 = 100;
/// A window whose wait for a CPU exceeds this share of the wall time is a stall.
pub const STALLED: f64 = 0.5;

impl Busy {
    pub fn new(on: f64, off: f64) -> Busy {
        Busy {
            engaged: false,
            on,
            off: off.min(on),
            before: 0,
            hold: 0,
            judged: 0,
        }
    }

    /// Takes the share of a core the thread used over the last window (0.0–1.0), the
    /// messages it read in it (per second) and whether it was a stall (see [`STALLED`]);
    /// returns whether the gate is engaged now.
    pub fn update(&mut self, share: f64, messages: u64, stalled: bool) -> bool {
        if self.engaged {
            self.judged += 1;
            if share < self.off {
                self.engaged = false;
            } else if self.judged > 1
                && !stalled
                && (messages as f64) < THROTTLED * self.before as f64
            {
                self.engaged = false;
                self.hold = HOLD_OFF;
            }
        } else if self.hold > 0 {
            self.hold -= 1;
        } else if share >= self.on {
            self.engaged = true;
            self.before = messages;
            self.judged = 0;
        }
        self.engaged
    }
}

/// One shard's gate: while engaged, a connection that read during the current tick
/// waits for the next one before it reads again.
#[derive(Debug, Default)]
pub struct ReadGate {
    engaged: Cell<bool>,
    /// Counts ticks, wrapping: only equality matters (a tick recurs after 2^32 of them,
    /// weeks at the shortest tick, and costs a connection at most one tick's wait).
    /// `u32`, not `u64`: connections keep two of these, and the idle connection task
    /// sits just under an allocator size class.
    epoch: Cell<u32>,
    waiters: RefCell<Vec<Waker>>,
}

impl ReadGate {
    /// The current tick: a connection records it when it reads.
    pub fn epoch(&self) -> u32 {
        self.epoch.get()
    }

    /// Whether a connection whose last read was in tick `last` may read now; if not,
    /// `waker` is woken at the next tick. `registered` is the connection's own record of
    /// the tick it last left its waker for, so a connection polled again within the tick
    /// (an answer to flush) is not listed, and woken, twice.
    pub fn may_read(&self, last: u32, registered: &mut u32, waker: &Waker) -> bool {
        let epoch = self.epoch.get();
        if !self.engaged.get() || last != epoch {
            return true;
        }
        if *registered != epoch {
            *registered = epoch;
            self.waiters.borrow_mut().push(waker.clone());
        }
        false
    }

    /// A new tick: every waiting connection may read again.
    fn tick(&self, engaged: bool) {
        self.engaged.set(engaged);
        self.epoch.set(self.epoch.get().wrapping_add(1));
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for w in waiters {
            w.wake();
        }
    }
}

/// This thread's time on a CPU and time waiting for one (runnable, another task
/// running), from `/proc/thread-self/schedstat`; `None` where the kernel does not
/// keep it.
fn thread_sched() -> Option<(Duration, Duration)> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let mut fields = text.split_ascii_whitespace().map(|f| f.parse::<u64>().ok());
    let run = fields.next()??;
    let wait = fields.next()??;
    Some((Duration::from_nanos(run), Duration::from_nanos(wait)))
}

/// This thread's busy share: time on a CPU over the time it could have run (wall time
/// less the time it waited for a CPU), so that sharing a core with another busy
/// process (the bench's backend on the gateway's core) does not hide that the thread
/// itself never rests — but only for a thread on a CPU at least [`ON_CPU_FLOOR`] of
/// the wall time; below that, time on a CPU over wall time. (On an oversubscribed
/// machine a thread at half a core waits a lot, yet its clients' requests are too
/// sparse for batching to gather any: the demo, 2000 clients at 5 req/s each, only got
/// a worse p99 from the gate, 1.6–3.1 → 3.9–5.5 ms.) Without schedstat, time on a CPU
/// over wall time.
#[derive(Debug)]
struct Load {
    at: Instant,
    /// Time on a CPU so far (schedstat's, else the thread's CPU clock).
    run: Duration,
    /// Time spent waiting for a CPU so far (`None` without schedstat).
    wait: Option<Duration>,
}

impl Load {
    fn now() -> Load {
        let at = Instant::now();
        match thread_sched() {
            Some((run, wait)) => Load {
                at,
                run,
                wait: Some(wait),
            },
            None => Load {
                at,
                run: thread_cpu(),
                wait: None,
            },
        }
    }

    /// Whether the thread spent more than [`STALLED`] of the time since `before`
    /// waiting for a CPU (never, without schedstat).
    fn stalled_since(&self, before: &Load) -> bool {
        let wall = self.at.duration_since(before.at).as_secs_f64();
        self.waited_since(before)
            .is_some_and(|waited| waited > STALLED * wall)
    }

    /// Seconds spent waiting for a CPU since `before` (`None` without schedstat).
    fn waited_since(&self, before: &Load) -> Option<f64> {
        Some(self.wait?.saturating_sub(before.wait?).as_secs_f64())
    }

    fn share_since(&self, before: &Load) -> f64 {
        let wall = self.at.duration_since(before.at).as_secs_f64();
        if wall <= 0.0 {
            return 0.0;
        }
        let run = self.run.saturating_sub(before.run).as_secs_f64();
        let could = wall - self.waited_since(before).unwrap_or(0.0);
        let of_wall = (run / wall).clamp(0.0, 1.0);
        if of_wall < ON_CPU_FLOOR || could <= 0.0 {
            return of_wall;
        }
        (run / could).clamp(0.0, 1.0)
    }
}

/// CPU time this thread has used.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec we pass.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Engage at or above this busy share (measured over [`WINDOW`]; see `Load`).
pub const ENGAGE_AT: f64 = 0.8;
/// Let go below this share. Well under [`ENGAGE_AT`]: batching itself lowers the
/// share (ringgate-link at 150k req/s: about a fifth less CPU per request), and the
/// gate should not flap at every window.
pub const RELEASE_BELOW: f64 = 0.3;
/// See [`Load`]: a thread on a CPU less of the time than this is not busy.
pub const ON_CPU_FLOOR: f64 = 0.6;
/// How often the thread's CPU share is measured.
pub const WINDOW: Duration = Duration::from_millis(10);

/// The shard's ticker: while engaged, a new gate epoch every `tick`; every [`WINDOW`],
/// the thread's busy share decides whether the gate is engaged. Runs for the shard's
/// life.
pub async fn run(gate: Rc<ReadGate>, tick: Duration, metrics: Arc<ShardMetrics>) {
    let window = WINDOW.max(tick);
    let mut busy = Busy::new(ENGAGE_AT, RELEASE_BELOW);
    let mut since = Load::now();
    if since.wait.is_none() {
        tracing::info!(
            "no /proc/thread-self/schedstat: the read gate measures CPU time over wall time"
        );
    }
    let mut read_since = metrics.frames_in.load(Ordering::Relaxed);
    let mut engaged = false;
    loop {
        // Ticks matter only while engaged (an open gate lets every read through); off,
        // the ticker wakes once per window, to measure.
        monoio::time::sleep(if engaged { tick } else { window }).await;
        let wall = since.at.elapsed();
        // Off, every wake ends a window (a timer that fires a hair early still counts).
        if (!engaged || wall >= window) && !wall.is_zero() {
            let now = Load::now();
            let share = now.share_since(&since);
            let read = metrics.frames_in.load(Ordering::Relaxed);
            let was = engaged;
            // Per second: windows differ a little in length.
            let rate = read.saturating_sub(read_since) as f64 / wall.as_secs_f64();
            engaged = busy.update(share, rate as u64, now.stalled_since(&since));
            read_since = read;
            if engaged != was {
                tracing::debug!(share, engaged, "read batching gate");
            }
            since = now;
        }
        if engaged {
            crate::metrics::bump(&metrics.read_batching_ticks, 1);
        }
        gate.tick(engaged);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    #[test]
    fn busy_engages_at_the_high_mark_and_lets_go_only_below_the_low_one() {
        let mut b = Busy::new(0.8, 0.5);
        assert!(!b.update(0.79, 1000, false));
        assert!(b.update(0.8, 1000, false));
        // Batching lowers the share; it stays engaged down to the low mark.
        assert!(b.update(0.6, 1000, false));
        assert!(b.update(0.5, 950, false));
        assert!(!b.update(0.49, 1000, false));
        assert!(!b.update(0.7, 1000, false));
        assert!(b.update(0.9, 1000, false));
    }

    #[test]
    fn busy_lets_go_and_holds_off_when_engaging_cut_the_messages_read() {
        let mut b = Busy::new(0.8, 0.3);
        assert!(b.update(0.95, 10_000, false));
        // The first engaged window (half of it before the gate took hold) is not judged.
        assert!(b.update(0.7, 5_000, false));
        // A closed loop waiting on the gate: fewer messages, the thread less busy.
        assert!(!b.update(0.6, 5_000, false));
        for _ in 0..HOLD_OFF {
            assert!(!b.update(0.95, 10_000, false));
        }
        assert!(b.update(0.95, 10_000, false));
        // An open loop reads as much as before: the gate stays.
        assert!(b.update(0.5, 9_000, false));
        assert!(b.update(0.5, 7_500, false));
    }

    #[test]
    fn busy_does_not_let_go_for_a_window_in_which_the_thread_waited_for_the_cpu() {
        let mut b = Busy::new(0.8, 0.3);
        assert!(b.update(0.95, 10_000, false));
        assert!(b.update(0.9, 10_000, false));
        // Another thread held the core: fewer messages, but not the gate's doing.
        assert!(b.update(0.9, 4_000, true));
        assert!(b.update(0.9, 10_000, false));
        // Fewer messages with the CPU free: the gate holds clients back.
        assert!(!b.update(0.6, 4_000, false));
    }

    #[test]
    fn busy_share_leaves_out_the_time_spent_waiting_for_a_cpu() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let before = Load {
            at: t0,
            run: ms(100),
            wait: Some(ms(50)),
        };
        // 10 ms: 7 on a CPU, 3 waiting while another process ran: busy all the time.
        let after = Load {
            at: t0 + ms(10),
            run: ms(107),
            wait: Some(ms(53)),
        };
        assert!((after.share_since(&before) - 1.0).abs() < 1e-9);
        // 6 on a CPU, 1 waiting: 6 of the 9 it could have run.
        let after = Load {
            at: t0 + ms(10),
            run: ms(106),
            wait: Some(ms(51)),
        };
        assert!((after.share_since(&before) - 6.0 / 9.0).abs() < 1e-9);
        // 4 on a CPU, 5 waiting: under the floor, so 4 of 10, not 4 of 5.
        let after = Load {
            at: t0 + ms(10),
            run: ms(104),
            wait: Some(ms(55)),
        };
        assert!((after.share_since(&before) - 0.4).abs() < 1e-9);
        // 6 of 10 ms waiting for a CPU is a stall; 3 of 10 is not.
        let stalled = Load {
            at: t0 + ms(10),
            run: ms(104),
            wait: Some(ms(56)),
        };
        assert!(stalled.stalled_since(&before));
        let busy = Load {
            at: t0 + ms(10),
            run: ms(107),
            wait: Some(ms(53)),
        };
        assert!(!busy.stalled_since(&before));
        // Without schedstat: CPU time over wall time (7 of 10, the waiting unknown).
        let (b, a) = (
            Load {
                wait: None,
                ..before
            },
            Load {
                at: t0 + ms(10),
                run: ms(107),
                wait: None,
            },
        );
        assert!((a.share_since(&b) - 0.7).abs() < 1e-9);
    }

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn an_engaged_gate_holds_a_connection_that_read_this_tick_until_the_next() {
        let gate = ReadGate::default();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut reg = u32::MAX;
        // Not engaged: always open.
        assert!(gate.may_read(gate.epoch(), &mut reg, &waker));
        gate.tick(true);
        let read_at = gate.epoch();
        // Read this tick: held, and woken at the next tick — once, however often it
        // asks again within the tick.
        assert!(!gate.may_read(read_at, &mut reg, &waker));
        assert!(!gate.may_read(read_at, &mut reg, &waker));
        // One that last read in an earlier tick may read.
        let mut other = u32::MAX;
        assert!(gate.may_read(read_at - 1, &mut other, &waker));
        gate.tick(true);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(gate.may_read(read_at, &mut reg, &waker));
        // Disengaging wakes whoever waits and opens the gate.
        let now = gate.epoch();
        assert!(!gate.may_read(now, &mut reg, &waker));
        gate.tick(false);
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
        assert!(gate.may_read(gate.epoch(), &mut reg, &waker));
    }
}
