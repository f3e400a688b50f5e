//! The link task: the link's life across connections. It dials, serves, and after a
//! failure answers every call in flight, forgets the connection and redials with
//! backoff (logging dial failures at a bounded rate), until the link is retired.

use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use crate::upstream::{BackendError, LinkFailure};

use super::conn::LinkEnd;
use super::inner::Inner;
use super::state::Phase;

/// First and longest wait before redialing a failed link. The longest wait is also the
/// longest a restarted backend waits for its links: kept short (a dial is one connect
/// per shard).
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// While dials keep failing, one log line per this period (with the count).
const DIAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// The link's life: dial, serve, and after a failure redial with backoff.
pub(super) async fn run(link: Rc<Inner>) {
    let mut backoff = BACKOFF_MIN;
    let ws_url = link.url.display();
    // Dial failures since the link was last up, and when one was last logged.
    let mut failed_dials = 0u64;
    let mut dial_logged: Option<Instant> = None;
    loop {
        if link.retired.get() {
            break;
        }
        link.st.borrow_mut().phase = Phase::Connecting;
        match link.dial().await {
            Ok((stream, rest, tls)) => {
                backoff = BACKOFF_MIN;
                failed_dials = 0;
                dial_logged = None;
                {
                    let mut st = link.st.borrow_mut();
                    st.phase = Phase::Up;
                    link.metrics.link_up.fetch_add(1, Relaxed);
                    link.metrics.link_connects.fetch_add(1, Relaxed);
                }
                tracing::info!(shard = link.settings.shard, service = %link.service, url = %ws_url, "backend link up");
                link.announce_every_session();
                link.wake_writer();
                let end = link.serve(stream, rest, tls).await;
                if matches!(end, LinkEnd::Retired) {
                    link.tear_down(LinkFailure::Retired);
                    break;
                }
                tracing::warn!(shard = link.settings.shard, service = %link.service, url = %ws_url, reason = %end, "backend link lost; calls in flight answered 60, redialing");
                link.tear_down(LinkFailure::Lost);
            }
            Err(e) => {
                failed_dials += 1;
                let now = crate::rt::clock::refresh();
                if dial_logged.is_none_or(|t| now.saturating_duration_since(t) >= DIAL_LOG_EVERY) {
                    dial_logged = Some(now);
                    tracing::warn!(shard = link.settings.shard, service = %link.service, url = %ws_url, error = %e, failed_dials, retry_in_ms = backoff.as_millis() as u64, "backend link dial failed; requests answer 60 until it is up");
                }
                link.tear_down(LinkFailure::Down);
            }
        }
        let _ = monoio::time::timeout(backoff, link.wake.notified()).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
    link.tear_down(LinkFailure::Retired);
}

impl Inner {
    /// Ends the current connection's life: every call in flight fails with `why`,
    /// announcements and unsent bytes are forgotten, and new calls fail fast until the
    /// next dial.
    fn tear_down(&self, why: LinkFailure) {
        let calls = {
            let mut st = self.st.borrow_mut();
            if st.phase == Phase::Up {
                self.metrics.link_up.fetch_sub(1, Relaxed);
            }
            st.phase = Phase::Down;
            st.wbuf = Vec::new();
            st.sent = 0;
            st.sessions.clear();
            st.calls.drain()
        };
        self.close_raw_clients();
        for p in calls {
            p.on_done.run(Err(BackendError::Link(why.clone())));
        }
    }
}
