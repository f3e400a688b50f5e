//! The sweeper task: the link's clock. It answers calls past their deadline (no timer
//! per call) and decides whether a quiet connection is still alive (liveness pings).

use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::proto::frame::OpCode;
use crate::rt::sys;
use crate::upstream::BackendError;

use super::calls::Pending;
use super::inner::Inner;

/// Answers calls past their deadline with [`BackendError::Timeout`], and watches the
/// connection's liveness. A ping goes out when the connection has delivered nothing for
/// `idle_ping`, or when a call times out and it has delivered nothing since that call
/// was sent; if nothing at all arrives within the connect timeout after it (not even
/// the pong, which WebSocket libraries send by themselves), the backend host is taken
/// for gone (one that vanished without a reset looks like this) and the connection is
/// shut down, so the link redials instead of timing out every call (or, idle, instead
/// of holding a dead connection until the next request finds it). A slow backend that
/// answers pings keeps its link.
pub(super) async fn sweep_loop(link: Rc<Inner>) {
    let every = (link.settings.request_timeout / 10)
        .clamp(Duration::from_millis(5), Duration::from_millis(100));
    loop {
        monoio::time::sleep(every).await;
        let now = crate::rt::clock::refresh();
        link.check_liveness(now);
        let idle = link.settings.idle_ping;
        if !idle.is_zero() && now.saturating_duration_since(link.last_read.get()) >= idle {
            link.ping(now);
        }
        let expired: Vec<Pending> = {
            let mut st = link.st.borrow_mut();
            if st.calls.is_empty() {
                if link.retired.get() {
                    return;
                }
                continue;
            }
            let expired = st.calls.expire(now);
            if link.retired.get() && st.calls.is_empty() {
                // A retired link closes once its calls are settled; its reader may be
                // waiting for bytes that will never come.
                link.wake.notify();
            }
            expired
        };
        let oldest_sent = expired
            .iter()
            .map(|p| p.deadline - link.settings.request_timeout)
            .min();
        if oldest_sent.is_some_and(|sent| link.last_read.get() < sent) {
            link.ping(now);
        }
        for p in expired {
            p.on_done.run(Err(BackendError::Timeout));
        }
    }
}

impl Inner {
    /// Sends a liveness ping on the connection being served, unless one is in flight.
    fn ping(&self, now: Instant) {
        if self.conn_fd.get().is_some() && self.ping_at.get().is_none() {
            self.st.borrow_mut().put_control(OpCode::Ping, b"liveness");
            self.ping_at.set(Some(now));
            self.wake_writer();
        }
    }

    /// Settles a liveness ping: answered (anything arrived since) or overdue (the
    /// connection is shut down; its reader sees EOF and the link redials).
    fn check_liveness(&self, now: Instant) {
        let Some(sent) = self.ping_at.get() else {
            return;
        };
        if self.last_read.get() >= sent {
            self.ping_at.set(None);
        } else if now.saturating_duration_since(sent) >= self.settings.connect_timeout {
            self.ping_at.set(None);
            if let Some(fd) = self.conn_fd.get() {
                tracing::warn!(shard = self.settings.shard, service = %self.service, "backend link unresponsive: a liveness ping got no answer; closing it to redial");
                // The reader wakes with EOF and tears the connection down.
                sys::shutdown(fd);
            }
        }
    }
}
