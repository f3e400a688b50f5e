//! One shard's drain at shutdown (SIGTERM, `Gateway::shutdown`): its clients are sent
//! away a few at a time over `server.drain_window_ms`, each with a disconnect notice
//! carrying its reconnection token and then close 1001, and each only once its
//! requests in flight have been answered.
//!
//! Why spread: every client told to go at the same moment reconnects at the same
//! moment, and the instance taking over (or this one's successor on the same port)
//! meets a reconnect storm of the whole population — handshakes, JWT checks,
//! manifests — on top of its own load. Evenly spaced closes turn that into a stream
//! (docs/DESIGN.md §7). The listeners are closed first (`ShardCtx::stop_accept`,
//! `/readyz` 503), so on a shared port the kernel already sends the reconnections to
//! the other process. Why wait for requests in flight: the answer to a request a
//! client sent before the drain reached it is not lost; the connection stops being
//! read when its turn comes, and its calls finish or time out (60) before the close.

use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::proto::frame::CLOSE_GOING_AWAY;
use crate::session::ConnShared;
use crate::shard::ShardCtx;

/// How often the drain looks at what is due and what has finished.
const TICK: Duration = Duration::from_millis(10);

/// Sends the shard's clients away over the drain window, then waits (up to
/// `shutdown_grace_ms`) for their connections to end.
pub async fn drain(ctx: &Rc<ShardCtx>) {
    let clients = live(ctx);
    let window = Duration::from_millis(ctx.config.server.drain_window_ms);
    tracing::info!(
        shard = ctx.id,
        connections = clients.len(),
        window_ms = window.as_millis() as u64,
        "draining"
    );
    let start = Instant::now();
    let n = clients.len();
    let mut next = 0;
    // Clients whose turn came, waiting for their requests in flight.
    let mut finishing: Vec<Rc<ConnShared>> = Vec::new();
    while next < n || !finishing.is_empty() {
        let elapsed = start.elapsed();
        while next < n && due(next, n, window) <= elapsed {
            let c = &clients[next];
            next += 1;
            c.stop_reading();
            finishing.push(c.clone());
        }
        finishing.retain(|c| {
            if c.is_gone() || c.is_parked() || c.is_superseded() || c.closing() {
                return false; // ended (or was closed) meanwhile
            }
            if c.inflight() > 0 {
                return true;
            }
            send_away(c);
            false
        });
        if next < n || !finishing.is_empty() {
            monoio::time::sleep(TICK).await;
        }
    }
    let grace = Duration::from_millis(ctx.config.server.shutdown_grace_ms);
    let drained = monoio::time::timeout(grace, async {
        while !live(ctx).is_empty() {
            ctx.plane.sessions.removed().await;
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            shard = ctx.id,
            left = live(ctx).len(),
            "shutdown grace period over; dropping the remaining connections"
        );
    }
}

/// When (from the start of the drain) client `i` of `n` is sent away: evenly over the
/// window, the first at once.
fn due(i: usize, n: usize, window: Duration) -> Duration {
    window.mul_f64(i as f64 / n as f64)
}

/// The shard's connected clients (parked sessions have none).
fn live(ctx: &ShardCtx) -> Vec<Rc<ConnShared>> {
    ctx.plane
        .sessions
        .all()
        .into_iter()
        .filter(|c| !c.is_parked() && !c.is_gone())
        .collect()
}

/// The disconnect notice (with the reconnection token, if the session is resumable)
/// and close 1001.
fn send_away(c: &ConnShared) {
    if !c.is_raw() {
        // (A raw route's client speaks no Bannou: it gets the close alone.)
        // ("server_shutdown": the reason Bannou's TypeScript SDK reports as
        // ServerShutdown.)
        c.send_frame(c.disconnect_notice("server_shutdown"));
    }
    c.request_close(CLOSE_GOING_AWAY, "server shutdown");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_are_spread_evenly_over_the_window_the_first_at_once() {
        let w = Duration::from_secs(10);
        assert_eq!(due(0, 4, w), Duration::ZERO);
        assert_eq!(due(1, 4, w), Duration::from_millis(2500));
        assert_eq!(due(3, 4, w), Duration::from_millis(7500));
        assert_eq!(due(0, 1, w), Duration::ZERO, "one client goes at once");
        assert_eq!(
            due(5, 10, Duration::ZERO),
            Duration::ZERO,
            "no window: all at once"
        );
    }
}
