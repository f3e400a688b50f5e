//! The open-loop request schedule (with coordinated-omission correction) and the precise
//! per-thread timer that paces it.
//!
//! Why it exists: a load generator that sends the next request only when it gets around
//! to it ("closed loop") backs off exactly when the server stalls, so the stall hides
//! from its percentiles (coordinated omission). Here every request has an *intended*
//! send time fixed in advance by the rate alone: the run's k-th request (over all
//! connections) is due at `k / R` seconds after the start, and connection `g` of `C`
//! sends requests `k = g, g + C, g + 2C, ...`, so the total rate R is split evenly and
//! the connections are phased apart. Latency is measured from that intended time, so a
//! sender that falls behind (a stalled connection, a busy thread) turns its lateness
//! into measured latency instead of silently sending less.
//!
//! The timer: monoio's timer wheel has a resolution of one millisecond (deadlines are
//! rounded up), which would add 0–1 ms of harness lateness to every request measured
//! from its intended time. [`Pacer`] is a nanosecond timer on one `timerfd` per thread
//! (CLOCK_MONOTONIC, absolute deadlines), waking the tasks whose deadlines have passed.
//!
//! The runtime: [`client_runtime`] builds the monoio runtime every load-generating
//! thread runs on (io_uring with cooperative task running; see there why).

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::future::Future;
use std::io;
use std::os::fd::{FromRawFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// CLOCK_MONOTONIC in nanoseconds (the clock of [`Pacer`] and of every latency here).
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into a live local.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Wall-clock nanoseconds since the Unix epoch (shared across processes: the `go` time).
pub fn unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The monoio runtime of a load-generating thread (`rpc`'s workers, `probe`).
pub type ClientRuntime = monoio::FusionRuntime<
    monoio::time::TimeDriver<monoio::IoUringDriver>,
    monoio::time::TimeDriver<monoio::LegacyDriver>,
>;

/// A runtime for a load-generating thread: monoio with its timer, io_uring set up with
/// `IORING_SETUP_COOP_TASKRUN` when the kernel has it (5.19+; else the default setup).
///
/// Why: by default io_uring interrupts a task that is running in user space (an
/// inter-processor interrupt) as soon as a completion arrives for it. On loopback the
/// server under test would pay for that: its `send` wakes the client's pending read, and
/// waking a busy client costs an IPI in the server's send path (on a VM, an exit each).
/// A real client sits on another host, so that cost is an artefact of the harness. With
/// cooperative task running the client picks completions up at its next
/// `io_uring_enter`, which monoio makes on every turn of its loop. Every client of the
/// harness (`rpc` and the probes) runs this way, so comparisons between them stay fair;
/// the servers (`ws-echo`, `probe-server`, the gateway) keep the default setup.
pub fn client_runtime() -> io::Result<ClientRuntime> {
    let mut urb = io_uring::IoUring::builder();
    urb.setup_coop_taskrun();
    let coop = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .uring_builder(urb)
        .build();
    match coop {
        Ok(rt) => Ok(rt),
        Err(_) => monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .enable_timer()
            .build(),
    }
}

/// The intended send times of one connection's requests, as offsets from the run's start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    /// Total requests per second over all connections.
    rate: f64,
    /// Connections in the whole run (all threads and processes).
    conns: u64,
    /// This connection's global index, `0..conns`.
    conn: u64,
}

impl Schedule {
    pub fn new(rate_per_sec: f64, conns: u64, conn: u64) -> Schedule {
        assert!(rate_per_sec > 0.0 && conns > 0 && conn < conns);
        Schedule {
            rate: rate_per_sec,
            conns,
            conn,
        }
    }

    /// Offset (ns after the start) of this connection's `j`-th request: the run's request
    /// `k = conn + j * conns`, due at `k / rate` seconds.
    pub fn offset_ns(&self, j: u64) -> u64 {
        let k = self.conn + j * self.conns;
        (k as f64 * 1e9 / self.rate).round() as u64
    }

    /// Time between two requests of this connection, ns.
    #[cfg(test)]
    pub fn interval_ns(&self) -> f64 {
        self.conns as f64 * 1e9 / self.rate
    }
}

/// Walks a [`Schedule`] up to an end offset, handing out the requests whose time has come.
#[derive(Debug, Clone)]
pub struct Due {
    sched: Schedule,
    next_j: u64,
    end_ns: u64,
}

impl Due {
    /// Requests with intended offsets in `[0, end_ns)`.
    pub fn new(sched: Schedule, end_ns: u64) -> Due {
        Due {
            sched,
            next_j: 0,
            end_ns,
        }
    }

    /// Intended offset of the next request, or `None` when the schedule is over.
    pub fn peek(&self) -> Option<u64> {
        let t = self.sched.offset_ns(self.next_j);
        (t < self.end_ns).then_some(t)
    }

    /// The next request if it is due at `now_off` (ns after the start): `(j, intended)`.
    /// After a stall, calling this repeatedly yields every overdue request with its
    /// *original* intended time — the lateness becomes measured latency.
    pub fn next_due(&mut self, now_off: u64) -> Option<(u64, u64)> {
        let t = self.peek()?;
        if t > now_off {
            return None;
        }
        let j = self.next_j;
        self.next_j += 1;
        Some((j, t))
    }
}

// ---------------------------------------------------------------------------------
// Pacer: a nanosecond timer on a timerfd, one per monoio thread.

struct PacerState {
    /// `(deadline, token)`; entries of dropped sleeps stay until they expire (lazy delete).
    heap: BinaryHeap<Reverse<(u64, u64)>>,
    wakers: HashMap<u64, Waker>,
    next_token: u64,
    /// The deadline the timerfd is armed for (0: disarmed).
    armed: u64,
}

/// Wakes tasks at CLOCK_MONOTONIC deadlines with nanosecond resolution. Single-threaded:
/// create one per monoio runtime and spawn [`Pacer::drive`] on it.
pub struct Pacer {
    tfd: RawFd,
    /// The timerfd adopted by monoio for readiness (it owns and closes the descriptor).
    io: monoio::net::TcpStream,
    state: RefCell<PacerState>,
}

impl Pacer {
    pub fn new() -> io::Result<Rc<Pacer>> {
        // SAFETY: plain syscall; the descriptor is checked and then owned by `io`.
        let tfd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if tfd < 0 {
            return Err(io::Error::last_os_error());
        }
        // monoio only needs a pollable descriptor; it never issues socket calls on it
        // beyond readiness (and close on drop).
        // SAFETY: `tfd` is a fresh descriptor owned by nothing else.
        let std_stream = unsafe { std::net::TcpStream::from_raw_fd(tfd) };
        let io = monoio::net::TcpStream::from_std(std_stream)?;
        Ok(Rc::new(Pacer {
            tfd,
            io,
            state: RefCell::new(PacerState {
                heap: BinaryHeap::new(),
                wakers: HashMap::new(),
                next_token: 1,
                armed: 0,
            }),
        }))
    }

    /// A future that completes once CLOCK_MONOTONIC reaches `deadline_ns`.
    pub fn sleep_until(self: &Rc<Self>, deadline_ns: u64) -> Sleep {
        Sleep {
            pacer: self.clone(),
            deadline: deadline_ns,
            token: None,
        }
    }

    fn arm(&self, deadline: u64) {
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (deadline / 1_000_000_000) as libc::time_t,
                tv_nsec: (deadline % 1_000_000_000) as libc::c_long,
            },
        };
        // SAFETY: valid descriptor and itimerspec; a zero it_value disarms.
        unsafe {
            libc::timerfd_settime(
                self.tfd,
                libc::TFD_TIMER_ABSTIME,
                &spec,
                std::ptr::null_mut(),
            )
        };
    }

    /// Fires the expired deadlines; runs for the life of the runtime.
    pub async fn drive(self: Rc<Self>) {
        loop {
            if self.io.readable(false).await.is_err() {
                return;
            }
            let mut buf = [0u8; 8];
            // SAFETY: reads at most 8 bytes into a live buffer (EAGAIN if not expired).
            unsafe { libc::read(self.tfd, buf.as_mut_ptr().cast(), 8) };
            let now = mono_ns();
            let mut fire = Vec::new();
            {
                let mut st = self.state.borrow_mut();
                while let Some(&Reverse((due, token))) = st.heap.peek() {
                    if due > now {
                        break;
                    }
                    st.heap.pop();
                    if let Some(w) = st.wakers.remove(&token) {
                        fire.push(w);
                    }
                }
                let next = st.heap.peek().map_or(0, |Reverse((d, _))| *d);
                st.armed = next;
                self.arm(next);
            }
            for w in fire {
                w.wake();
            }
        }
    }
}

/// See [`Pacer::sleep_until`].
pub struct Sleep {
    pacer: Rc<Pacer>,
    deadline: u64,
    token: Option<u64>,
}

impl Future for Sleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if mono_ns() >= self.deadline {
            if let Some(t) = self.token.take() {
                self.pacer.state.borrow_mut().wakers.remove(&t);
            }
            return Poll::Ready(());
        }
        let deadline = self.deadline;
        let pacer = self.pacer.clone();
        let mut st = pacer.state.borrow_mut();
        let token = match self.token {
            Some(t) => t,
            None => {
                let t = st.next_token;
                st.next_token += 1;
                st.heap.push(Reverse((deadline, t)));
                if st.armed == 0 || deadline < st.armed {
                    st.armed = deadline;
                    pacer.arm(deadline);
                }
                self.token = Some(t);
                t
            }
        };
        st.wakers.insert(token, cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(t) = self.token {
            self.pacer.state.borrow_mut().wakers.remove(&t);
        }
    }
}

/// Which of two futures finished first.
pub enum Race<A> {
    First(A),
    Second,
}

/// Polls `a` then `b`; returns the first to finish (dropping the other). `a` is polled
/// first, so a ready `a` wins a tie.
pub async fn race<A: Future, B: Future>(a: A, b: B) -> Race<A::Output> {
    let mut a = std::pin::pin!(a);
    let mut b = std::pin::pin!(b);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = a.as_mut().poll(cx) {
            return Poll::Ready(Race::First(v));
        }
        if b.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Race::Second);
        }
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intended_times_are_exact_for_the_rate() {
        // 20,000/s over 100 connections: the run's k-th request at k * 50 µs.
        let s = Schedule::new(20_000.0, 100, 3);
        assert_eq!(s.offset_ns(0), 150_000);
        assert_eq!(s.offset_ns(5), 25_150_000); // k = 503
        assert_eq!(s.interval_ns(), 5_000_000.0);
        // Every k appears exactly once over all connections, at exactly k / R.
        let mut all: Vec<u64> = (0..100)
            .flat_map(|g| {
                let s = Schedule::new(20_000.0, 100, g);
                (0..50).map(move |j| s.offset_ns(j))
            })
            .collect();
        all.sort_unstable();
        let want: Vec<u64> = (0..5_000).map(|k| k * 50_000).collect();
        assert_eq!(all, want);
        // A rate that does not divide a second: 3/s, 1 connection.
        let s = Schedule::new(3.0, 1, 0);
        assert_eq!(
            (0..4).map(|j| s.offset_ns(j)).collect::<Vec<_>>(),
            vec![0, 333_333_333, 666_666_667, 1_000_000_000]
        );
    }

    #[test]
    fn request_counts_match_rate_times_duration() {
        // 200/s over 4 connections for 1 s: exactly 200 requests in [0, 1 s).
        let total: usize = (0..4)
            .map(|g| {
                let mut d = Due::new(Schedule::new(200.0, 4, g), 1_000_000_000);
                std::iter::from_fn(|| d.next_due(u64::MAX)).count()
            })
            .sum();
        assert_eq!(total, 200);
    }

    #[test]
    fn a_stalled_sender_keeps_the_intended_times() {
        // 1,000/s on one connection; the server answers in 100 µs.
        let mut due = Due::new(Schedule::new(1_000.0, 1, 0), 1_000_000_000);
        let service = 100_000;
        let mut corrected = Vec::new();
        let mut naive = Vec::new();
        let mut now = 0;
        // 10 requests on time.
        while now < 10_000_000 {
            while let Some((_, intended)) = due.next_due(now) {
                corrected.push(now + service - intended);
                naive.push(service);
            }
            now += 1_000_000;
        }
        assert_eq!(corrected, vec![service; 10]);
        // The sender stalls for 100 ms (a blocked thread, a full socket buffer). When it
        // resumes, the 100 overdue requests come out with their ORIGINAL times.
        now = 110_000_000;
        let mut burst = Vec::new();
        while let Some((j, intended)) = due.next_due(now) {
            burst.push((j, intended));
            // Sent back to back at `now`, each answered `service` later.
            corrected.push(now + service - intended);
            naive.push(service);
        }
        assert_eq!(burst.len(), 101); // j = 10 ..= 110
        assert_eq!(burst[0], (10, 10_000_000));
        assert_eq!(burst[100], (110, 110_000_000));
        // The stall shows up as latency: the first overdue request waited 100 ms.
        assert_eq!(corrected[10], 100_000_000 + service);
        assert_eq!(*corrected.last().unwrap(), service);
        // Measured from the actual send (coordinated omission), it would not show at all.
        assert!(naive.iter().all(|&l| l == service));
        // Nothing is due before its time.
        assert_eq!(due.next_due(now), None);
        assert_eq!(due.peek(), Some(111_000_000));
    }

    #[test]
    fn schedule_ends_at_the_end_offset() {
        let mut d = Due::new(Schedule::new(10.0, 1, 0), 250_000_000);
        assert_eq!(d.next_due(u64::MAX), Some((0, 0)));
        assert_eq!(d.next_due(u64::MAX), Some((1, 100_000_000)));
        assert_eq!(d.next_due(u64::MAX), Some((2, 200_000_000)));
        assert_eq!(d.next_due(u64::MAX), None);
        assert_eq!(d.peek(), None);
    }

    #[test]
    fn pacer_wakes_at_the_deadline() {
        let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        rt.block_on(async {
            let p = Pacer::new().unwrap();
            monoio::spawn(p.clone().drive());
            let mut lags = Vec::new();
            for i in 0..20u64 {
                let due = mono_ns() + 200_000 + i * 10_000;
                p.sleep_until(due).await;
                let now = mono_ns();
                assert!(now >= due);
                lags.push(now - due);
            }
            // A dropped sleep does not fire anything later.
            let far = mono_ns() + 50_000_000;
            let won = race(async {}, p.sleep_until(far)).await;
            assert!(matches!(won, Race::First(())));
            lags.sort_unstable();
            // Far below monoio's 1 ms wheel, even on a loaded machine (median).
            assert!(lags[10] < 900_000, "median pacer lag {} ns", lags[10]);
        });
    }
}
