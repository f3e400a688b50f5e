//! The loop of one `rpc` connection: pipelined sends on the schedule (or the window),
//! responses matched by message id, timeouts, and the accounting of every answer.
//!
//! Why it exists: this is the hot path of the harness; it is batched so that the harness
//! is not what it measures. Each connection sends everything that is due (or every free
//! window slot) with one write and handles every response of one read before it waits
//! again, through the client's batching primitives (`Client::queue_request`, `flush` /
//! `flush_batched`, `try_next`; see `run_conn`). One frame per syscall topped out near
//! 150k requests/s on one core.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use ringgate::client::{Client, Incoming, ReadOutcome};

use super::inflight::{Inflight, Slot};
use super::request::code_key;
use super::state::{Control, Ready, RunCfg, ThreadState};
use crate::cli::{LoadRate, RpcMode};
use crate::conn;
use crate::report;
use crate::sched::{mono_ns, race, Due, Pacer, Race, Schedule};

/// A connection with nothing else to wake it wakes this often (to see the stop flag).
const TICK_NS: u64 = 100_000_000;

/// Drives one connection: pipelined sends on the schedule (or the window), responses
/// matched by message id, until the schedule is over and nothing is in flight.
///
/// Batched, like the limit probe's closed loop: each turn of the loop handles every
/// complete message already read, then queues everything that is due (open loop: each
/// request whose intended time has passed, with that intended time; closed loop: every
/// free window slot) and writes it all with one write (closed loop: `flush_batched`, one
/// io_uring send issued with the other connections' sends of the thread; open loop:
/// `flush`, a `send` right away), then waits once: for
/// readability or the connection's next deadline (the next intended send time, the
/// oldest request's timeout, the end of the closed loop, or the stop tick), and reads
/// once. The deadline is one pinned `Pacer` timer kept for the connection's life and
/// re-armed only when it has fired or an earlier deadline comes up (one that fires
/// early costs a loop turn), not a timer set and cancelled per response; with nothing
/// in flight the connection just sleeps until its next send.
pub(super) async fn run_conn(
    c: Ready,
    cfg: Arc<RunCfg>,
    ctl: Arc<Control>,
    st: Rc<ThreadState>,
    pacer: Rc<Pacer>,
    start: u64,
) {
    let Ready {
        mut client,
        guid,
        g,
    } = c;
    let mut due = match cfg.rate {
        LoadRate::PerSec(r) => Some(Due::new(Schedule::new(r, cfg.total_conns, g), cfg.end_ns)),
        LoadRate::Max => None,
    };
    let mut inflight = Inflight::default();
    let mut sending = true;
    let mut drop_cause: Option<String> = None;
    let since = |t: u64| t.saturating_sub(start);
    let mut timer = std::pin::pin!(pacer.sleep_until(start));
    let mut timer_at = start;
    timer.as_mut().await;
    'run: loop {
        if ctl.stop.load(Ordering::Relaxed) {
            return;
        }
        // Every complete message already read (they all arrived with the last read).
        let now = mono_ns();
        loop {
            let incoming = match client.try_next() {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(e) => {
                    drop_cause = Some(conn::drop_cause("run", &e));
                    break 'run;
                }
            };
            let (id, code) = match incoming {
                Incoming::Response(h, _) if cfg.mode == RpcMode::Bannou => (h.message_id, h.code),
                Incoming::Push(h, _) if cfg.mode == RpcMode::Echo => (h.message_id, 0),
                Incoming::Close(c) => {
                    drop_cause = Some(format!("run:closed_{}", c.map_or(1005, |(code, _)| code)));
                    break 'run;
                }
                // Pings are answered by the client (the pong goes out with the flush).
                _ => continue,
            };
            settle(&st, &mut inflight, id, code, now);
        }
        // Timeouts.
        let now = mono_ns();
        for s in inflight.expire(now.saturating_sub(cfg.timeout_ns)) {
            st.bump(|l| l.errors += 1);
            if s.measured {
                st.requests.borrow_mut().timeouts += 1;
            }
        }
        // Queue what is due (open loop) or fills the window (closed loop): one flush.
        while sending {
            let intended = match &mut due {
                Some(d) => match d.next_due(since(now)) {
                    Some((_, off)) => start + off,
                    None => {
                        sending = d.peek().is_some();
                        break;
                    }
                },
                None => {
                    if since(now) >= cfg.end_ns {
                        sending = false;
                        break;
                    }
                    if inflight.len() >= cfg.window {
                        break;
                    }
                    now
                }
            };
            let measured = (cfg.warmup_ns..cfg.end_ns).contains(&since(intended));
            let id = client.queue_request(0, 0, 0, guid, &cfg.payload);
            inflight.push(
                id,
                Slot {
                    intended,
                    sent: now,
                    measured,
                },
            );
            st.bump(|l| l.sent += 1);
            if measured {
                st.requests.borrow_mut().sent += 1;
                if due.is_some() {
                    report::record(
                        &mut st.send_lag.borrow_mut(),
                        now.saturating_sub(intended) / 1_000,
                    );
                }
            }
        }
        let mut batched = false;
        if client.queued() > 0 {
            // Closed loop: a window's worth per connection, handed to io_uring with the
            // other connections' batches (far cheaper at saturation). Open loop: sent
            // at once, so the actual send is the recorded one (at sane rates a
            // connection has about one request due per turn: nothing to batch), and
            // sends do not bunch into bursts at the runtime's next submission (that
            // tipped a ws-echo near its limit into long queues at 80k/s).
            let flushed = if due.is_some() {
                client.flush().await
            } else {
                batched = true;
                client.flush_batched().await
            };
            if let Err(e) = flushed {
                drop_cause = Some(conn::drop_cause("send", &e));
                break;
            }
        }
        if !sending && inflight.len() == 0 {
            break;
        }
        // The next deadline; the timer is re-armed only if it fired or is too late.
        let mut wake = now + TICK_NS;
        if sending {
            wake = wake.min(match &due {
                Some(d) => d.peek().map_or(u64::MAX, |o| start + o),
                // The window is full: a response frees it, or the loop's end.
                None => start + cfg.end_ns,
            });
        }
        if let Some(o) = inflight.oldest() {
            wake = wake.min(o.sent + cfg.timeout_ns);
        }
        if mono_ns() >= timer_at || wake < timer_at {
            timer.set(pacer.sleep_until(wake));
            timer_at = wake;
        }
        if inflight.len() == 0 {
            // Nothing to wait for but the next send: a plain sleep, holding no buffers
            // (a push or close is read with the next response).
            client.release_buffers();
            timer.as_mut().await;
            continue;
        }
        if batched {
            // The batched send completed a scheduler round later: at saturation the
            // answers to the previous batch are there by now, so read before asking for
            // readiness (saves a poll op and a wakeup per turn; costs one empty recv when
            // nothing came).
            match read_now(&mut client) {
                Ok(true) => continue,
                Ok(false) => {}
                Err(cause) => {
                    drop_cause = Some(cause);
                    break;
                }
            }
        }
        match race(client.readable(), timer.as_mut()).await {
            Race::First(Ok(())) => {
                if let Err(cause) = read_now(&mut client) {
                    drop_cause = Some(cause);
                    break;
                }
            }
            Race::First(Err(e)) => {
                drop_cause = Some(conn::drop_cause("run", &e));
                break;
            }
            Race::Second => {}
        }
    }
    if let Some(cause) = drop_cause {
        st.bump(|l| l.alive = l.alive.saturating_sub(1));
        *st.requests
            .borrow_mut()
            .conn_drops
            .entry(cause)
            .or_default() += 1;
        for s in inflight.drain() {
            st.bump(|l| l.errors += 1);
            if s.measured {
                st.requests.borrow_mut().lost += 1;
            }
        }
    }
    st.parked.borrow_mut().push(client);
}

/// One non-blocking read: whether anything came, or why the connection is over.
fn read_now(client: &mut Client) -> Result<bool, String> {
    match client.try_read() {
        Ok(ReadOutcome::Data(_)) => Ok(true),
        Ok(ReadOutcome::WouldBlock) => Ok(false),
        Ok(ReadOutcome::Eof) => Err("run:closed_eof".into()),
        Err(e) => Err(conn::drop_cause("run", &e)),
    }
}

/// Accounts for the answer (`code`, 0 = ok) to request `id`, received at `now`: latency
/// from the intended send time, service time from the actual send; an id no longer in
/// flight (it timed out) is late.
fn settle(st: &ThreadState, inflight: &mut Inflight, id: u64, code: u8, now: u64) {
    match inflight.take(id) {
        Some(s) if code == 0 => {
            st.bump(|l| l.ok += 1);
            let latency = now.saturating_sub(s.intended) / 1_000;
            report::record(&mut st.interval.borrow_mut(), latency);
            if s.measured {
                st.requests.borrow_mut().ok += 1;
                report::record(&mut st.latency.borrow_mut(), latency);
                report::record(
                    &mut st.service.borrow_mut(),
                    now.saturating_sub(s.sent) / 1_000,
                );
            }
        }
        Some(s) => {
            st.bump(|l| l.errors += 1);
            if s.measured {
                *st.requests
                    .borrow_mut()
                    .errors
                    .entry(code_key(code))
                    .or_default() += 1;
            }
        }
        None => st.requests.borrow_mut().late += 1,
    }
}
