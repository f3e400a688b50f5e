//! Counters and histograms for `/metrics`, rendered in the Prometheus text format.
//!
//! Why this shape: shards bump plain relaxed atomics in structures they alone write
//! (one `ShardMetrics` per shard, one `ServiceMetrics` per service per shard), so the
//! per-message path never shares a cache line with another core and never locks. The
//! admin thread reads and sums them when scraped. The only lock guards the list of
//! per-service blocks, taken when a shard (re)builds its service table, not per request.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use crate::proto::bannou::ResponseCode;

/// Outcomes of an upgrade attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeResult {
    Ok,
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    UpgradeRequired,
    TooLarge,
    Timeout,
    Closed,
    /// 503: the gateway is shutting down.
    Draining,
    /// 503: what the upgrade asks for cannot be served now (a raw route whose link is
    /// down, a resume that lost its session to a race or could not reach its shard).
    Unavailable,
    /// 503: `server.max_connections` reached.
    MaxConnections,
    /// 503: `server.max_connections_per_ip` reached for the client's address.
    MaxConnectionsPerIp,
    /// 429: the client's address upgrades faster than `server.upgrade_rate_per_ip`.
    UpgradeRate,
    /// The TLS handshake failed (a bad or unsupported ClientHello, no common protocol
    /// or ALPN, the peer's alert).
    TlsFailed,
}

impl HandshakeResult {
    pub const ALL: [HandshakeResult; 16] = [
        HandshakeResult::Ok,
        HandshakeResult::BadRequest,
        HandshakeResult::Unauthorized,
        HandshakeResult::Forbidden,
        HandshakeResult::NotFound,
        HandshakeResult::MethodNotAllowed,
        HandshakeResult::UpgradeRequired,
        HandshakeResult::TooLarge,
        HandshakeResult::Timeout,
        HandshakeResult::Closed,
        HandshakeResult::Draining,
        HandshakeResult::Unavailable,
        HandshakeResult::MaxConnections,
        HandshakeResult::MaxConnectionsPerIp,
        HandshakeResult::UpgradeRate,
        HandshakeResult::TlsFailed,
    ];
    pub fn label(self) -> &'static str {
        match self {
            HandshakeResult::Ok => "ok",
            HandshakeResult::BadRequest => "bad_request",
            HandshakeResult::Unauthorized => "unauthorized",
            HandshakeResult::Forbidden => "forbidden",
            HandshakeResult::NotFound => "not_found",
            HandshakeResult::MethodNotAllowed => "method_not_allowed",
            HandshakeResult::UpgradeRequired => "upgrade_required",
            HandshakeResult::TooLarge => "too_large",
            HandshakeResult::Timeout => "timeout",
            HandshakeResult::Closed => "closed_early",
            HandshakeResult::Draining => "draining",
            HandshakeResult::Unavailable => "unavailable",
            HandshakeResult::MaxConnections => "max_connections",
            HandshakeResult::MaxConnectionsPerIp => "max_connections_per_ip",
            HandshakeResult::UpgradeRate => "upgrade_rate",
            HandshakeResult::TlsFailed => "tls_failed",
        }
    }
    /// The result an HTTP error status stands for.
    pub fn from_status(status: u16) -> HandshakeResult {
        match status {
            401 => HandshakeResult::Unauthorized,
            403 => HandshakeResult::Forbidden,
            404 => HandshakeResult::NotFound,
            405 => HandshakeResult::MethodNotAllowed,
            426 => HandshakeResult::UpgradeRequired,
            431 => HandshakeResult::TooLarge,
            503 => HandshakeResult::Unavailable,
            _ => HandshakeResult::BadRequest,
        }
    }
    fn index(self) -> usize {
        Self::ALL.iter().position(|r| *r == self).expect("listed")
    }
}

/// Per-shard connection and traffic counters.
#[derive(Debug, Default)]
pub struct ShardMetrics {
    pub connections_open: AtomicI64,
    pub connections_total: AtomicU64,
    handshakes: [AtomicU64; HandshakeResult::ALL.len()],
    pub frames_in: AtomicU64,
    pub frames_out: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Connections closed because their outbox passed `server.max_outbox_bytes`.
    pub outbox_overflows: AtomicU64,
    /// Connections closed for a WebSocket protocol violation.
    pub protocol_errors: AtomicU64,
    /// Read-gate ticks spent with read batching engaged (`crate::shard::gate`).
    pub read_batching_ticks: AtomicU64,
    /// Unsent keyed topic messages replaced by a newer one (per-key conflation).
    pub conflated: AtomicU64,
    /// Topic messages queued for subscribers.
    pub topic_deliveries: AtomicU64,
    /// Pushes to a session, a user or everyone (and peer messages) queued.
    pub pushes: AtomicU64,
    /// Topic subscriptions on this shard now.
    pub subscriptions: AtomicI64,
    /// Sessions whose client is away, kept for their reconnection window, now.
    pub sessions_parked: AtomicI64,
    /// Sessions resumed by a new connection (a reconnection token).
    pub resumes: AtomicU64,
    /// Resuming connections accepted by another shard and handed to the session's.
    pub resume_handovers: AtomicU64,
    /// Reconnection tokens refused (unknown, used, expired or ended session): 401.
    pub resumes_refused: AtomicU64,
    /// Parked sessions whose window ran out before their client came back.
    pub resume_windows_expired: AtomicU64,
    /// Events dropped (oldest first) from sessions whose client was away too long or
    /// missed too much (`server.resume_buffer_bytes`).
    pub resume_events_lost: AtomicU64,
    /// Client messages past their connection's rate (`server.rate_limit_*`): requests
    /// answered 12, and raw-route messages, whose connection is closed (1008).
    pub rate_limited: AtomicU64,
    /// Connections dropped because a ping went unanswered (`server.pong_timeout_secs`).
    pub pong_timeouts: AtomicU64,
    /// Connections closed 1001 for completing no message in `server.idle_timeout_secs`.
    pub idle_timeouts: AtomicU64,
    /// Connections closed 4001 because their session's JWT expired (`exp` + leeway).
    pub sessions_expired: AtomicU64,
}

impl ShardMetrics {
    pub fn handshake(&self, r: HandshakeResult) {
        self.handshakes[r.index()].fetch_add(1, Relaxed);
    }
}

/// Adds `n` to a counter that only its own shard's thread writes (every per-message
/// counter here): a plain relaxed load and store instead of a locked read-modify-write,
/// which is ~20 cycles and a store-buffer drain each, several times per request. The
/// admin thread reads it a moment later; a second writer would lose counts, never
/// memory safety.
#[inline]
pub fn bump(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
}

/// Upper bounds (seconds) of the backend latency histogram buckets.
pub const LATENCY_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// The same bounds in microseconds (a test keeps the two in step).
const LATENCY_BUCKETS_US: [u64; 15] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000, 30_000_000,
];

/// Per-service (per shard) request counters and backend latency.
#[derive(Debug, Default)]
pub struct ServiceMetrics {
    responses: [AtomicU64; 19],
    latency_buckets: [AtomicU64; 16],
    latency_sum_us: AtomicU64,
    /// Set for a service reached over the backend link (its link metrics are rendered).
    pub link: std::sync::atomic::AtomicBool,
    /// Shards whose link to the service is up now (0 or 1 per shard block).
    pub link_up: AtomicU64,
    /// Link connections established.
    pub link_connects: AtomicU64,
    /// Replies that arrived after their call timed out (dropped).
    pub link_late_replies: AtomicU64,
}

impl ServiceMetrics {
    /// Counts one request answered with `code`.
    pub fn response(&self, code: ResponseCode) {
        bump(&self.responses[code.index()], 1);
    }
    /// Records one backend round trip, in whole microseconds (the unit of
    /// `crate::rt::clock::recent_us`, which times requests).
    pub fn latency_us(&self, us: u64) {
        // Whole microseconds against the bounds in microseconds (every bound is one).
        let i = LATENCY_BUCKETS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(LATENCY_BUCKETS_US.len());
        bump(&self.latency_buckets[i], 1);
        bump(&self.latency_sum_us, us);
    }
}

/// What the admission limits (`crate::admission`) hold, shared by every shard.
#[derive(Debug, Default)]
pub struct AdmissionGauges {
    /// Client connections from their accept to their close, handshakes in progress
    /// included: the count `server.max_connections` bounds (the admission's own
    /// counter, not a copy).
    pub held: AtomicU64,
    /// Source addresses (IPv6: /64 prefixes) the per-address limits track now.
    pub sources: AtomicI64,
}

/// A per-service block: (shard, service name, counters).
type ServiceBlock = (usize, Arc<str>, Arc<ServiceMetrics>);

/// Every metric of the process.
#[derive(Debug, Default)]
pub struct Metrics {
    pub shards: Vec<Arc<ShardMetrics>>,
    /// Written by every shard (one atomic add per accept and per close).
    pub admission: AdmissionGauges,
    services: Mutex<Vec<ServiceBlock>>,
}

impl Metrics {
    pub fn new(shards: usize) -> Metrics {
        Metrics {
            shards: (0..shards).map(|_| Arc::default()).collect(),
            admission: AdmissionGauges::default(),
            services: Mutex::default(),
        }
    }

    /// The block of `service` on `shard`, created on first use.
    pub fn service(&self, shard: usize, service: &Arc<str>) -> Arc<ServiceMetrics> {
        let mut list = self.services.lock().expect("metrics lock");
        if let Some((_, _, m)) = list
            .iter()
            .find(|(s, n, _)| *s == shard && **n == **service)
        {
            return m.clone();
        }
        let m = Arc::new(ServiceMetrics::default());
        list.push((shard, service.clone(), m.clone()));
        m
    }

    /// Sum of open connections over all shards.
    pub fn connections_open(&self) -> i64 {
        self.shards
            .iter()
            .map(|s| s.connections_open.load(Relaxed))
            .sum()
    }

    /// The Prometheus text exposition of everything.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let sum =
            |f: &dyn Fn(&ShardMetrics) -> u64| -> u64 { self.shards.iter().map(|s| f(s)).sum() };
        let _ = writeln!(
            out,
            "# HELP ringgate_connections_open Client WebSocket connections open now."
        );
        let _ = writeln!(out, "# TYPE ringgate_connections_open gauge");
        let _ = writeln!(out, "ringgate_connections_open {}", self.connections_open());
        let counters: [(&str, &str, u64); 19] = [
            (
                "ringgate_connections_total",
                "Client WebSocket connections upgraded since start.",
                sum(&|s| s.connections_total.load(Relaxed)),
            ),
            (
                "ringgate_frames_in_total",
                "WebSocket frames received from clients.",
                sum(&|s| s.frames_in.load(Relaxed)),
            ),
            (
                "ringgate_frames_out_total",
                "WebSocket frames sent to clients.",
                sum(&|s| s.frames_out.load(Relaxed)),
            ),
            (
                "ringgate_bytes_in_total",
                "Bytes received from clients (after the upgrade).",
                sum(&|s| s.bytes_in.load(Relaxed)),
            ),
            (
                "ringgate_bytes_out_total",
                "Bytes sent to clients (after the upgrade).",
                sum(&|s| s.bytes_out.load(Relaxed)),
            ),
            (
                "ringgate_outbox_overflow_total",
                "Clients closed because they read too slowly.",
                sum(&|s| s.outbox_overflows.load(Relaxed)),
            ),
            (
                "ringgate_protocol_errors_total",
                "Clients closed for a WebSocket protocol violation.",
                sum(&|s| s.protocol_errors.load(Relaxed)),
            ),
            (
                "ringgate_topic_deliveries_total",
                "Topic messages queued for subscribers.",
                sum(&|s| s.topic_deliveries.load(Relaxed)),
            ),
            (
                "ringgate_pushes_total",
                "Pushes to a session, a user or everyone, and peer messages, queued for clients.",
                sum(&|s| s.pushes.load(Relaxed)),
            ),
            (
                "ringgate_resumes_total",
                "Sessions resumed by a new connection with their reconnection token.",
                sum(&|s| s.resumes.load(Relaxed)),
            ),
            (
                "ringgate_resume_handovers_total",
                "Resuming connections accepted by one shard and handed to the shard holding their session.",
                sum(&|s| s.resume_handovers.load(Relaxed)),
            ),
            (
                "ringgate_resumes_refused_total",
                "Reconnection tokens refused with 401 (unknown, used, or their session ended).",
                sum(&|s| s.resumes_refused.load(Relaxed)),
            ),
            (
                "ringgate_resume_windows_expired_total",
                "Sessions ended because their client did not come back within server.reconnect_window_secs.",
                sum(&|s| s.resume_windows_expired.load(Relaxed)),
            ),
            (
                "ringgate_resume_events_lost_total",
                "Events dropped, oldest first, from sessions whose client was away (server.resume_buffer_bytes).",
                sum(&|s| s.resume_events_lost.load(Relaxed)),
            ),
            (
                "ringgate_rate_limited_total",
                "Client messages past their connection's server.rate_limit_per_sec and burst: requests answered code 12, raw-route messages closing their connection with 1008.",
                sum(&|s| s.rate_limited.load(Relaxed)),
            ),
            (
                "ringgate_pong_timeouts_total",
                "Clients dropped because they answered no ping within server.pong_timeout_secs.",
                sum(&|s| s.pong_timeouts.load(Relaxed)),
            ),
            (
                "ringgate_idle_timeouts_total",
                "Clients closed (1001) for completing no message, pongs included, in server.idle_timeout_secs.",
                sum(&|s| s.idle_timeouts.load(Relaxed)),
            ),
            (
                "ringgate_sessions_expired_total",
                "Clients closed with 4001, after a disconnect notice, because their JWT expired (exp + auth.leeway_secs).",
                sum(&|s| s.sessions_expired.load(Relaxed)),
            ),
            (
                "ringgate_read_batching_ticks_total",
                "Ticks (server.read_batch_tick_us) a busy shard spent reading each client at most once per tick.",
                sum(&|s| s.read_batching_ticks.load(Relaxed)),
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP ringgate_conflated_total Unsent keyed topic messages replaced by a newer one with the same key, per shard.\n# TYPE ringgate_conflated_total counter"
        );
        for (i, s) in self.shards.iter().enumerate() {
            let _ = writeln!(
                out,
                "ringgate_conflated_total{{shard=\"{i}\"}} {}",
                s.conflated.load(Relaxed)
            );
        }
        let subs: i64 = self
            .shards
            .iter()
            .map(|s| s.subscriptions.load(Relaxed))
            .sum();
        let parked: i64 = self
            .shards
            .iter()
            .map(|s| s.sessions_parked.load(Relaxed))
            .sum();
        let _ = writeln!(
            out,
            "# HELP ringgate_sessions_parked Sessions whose client is away, kept for their reconnection window.\n# TYPE ringgate_sessions_parked gauge\nringgate_sessions_parked {parked}"
        );
        let _ = writeln!(
            out,
            "# HELP ringgate_connections_admitted Client connections held now, from accept to close, handshakes in progress included (what server.max_connections bounds).\n# TYPE ringgate_connections_admitted gauge\nringgate_connections_admitted {}",
            self.admission.held.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP ringgate_source_addresses Source addresses (IPv6: /64 prefixes) tracked for the per-address limits now.\n# TYPE ringgate_source_addresses gauge\nringgate_source_addresses {}",
            self.admission.sources.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP ringgate_subscriptions Topic subscriptions now.\n# TYPE ringgate_subscriptions gauge\nringgate_subscriptions {subs}"
        );
        let _ = writeln!(
            out,
            "# HELP ringgate_handshakes_total Upgrade attempts by result."
        );
        let _ = writeln!(out, "# TYPE ringgate_handshakes_total counter");
        for r in HandshakeResult::ALL {
            let v = sum(&|s| s.handshakes[r.index()].load(Relaxed));
            let _ = writeln!(
                out,
                "ringgate_handshakes_total{{result=\"{}\"}} {v}",
                r.label()
            );
        }

        // Per service, summed over shards.
        let list = self.services.lock().expect("metrics lock");
        let mut names: Vec<&Arc<str>> = list.iter().map(|(_, n, _)| n).collect();
        names.sort();
        names.dedup();
        let _ = writeln!(
            out,
            "# HELP ringgate_requests_total Client requests by service and response code."
        );
        let _ = writeln!(out, "# TYPE ringgate_requests_total counter");
        for name in &names {
            for code in ResponseCode::ALL {
                let v: u64 = list
                    .iter()
                    .filter(|(_, n, _)| n == *name)
                    .map(|(_, _, m)| m.responses[code.index()].load(Relaxed))
                    .sum();
                if v > 0 {
                    let _ = writeln!(
                        out,
                        "ringgate_requests_total{{service=\"{name}\",code=\"{}\"}} {v}",
                        code.as_u8()
                    );
                }
            }
        }
        let _ = writeln!(
            out,
            "# HELP ringgate_backend_latency_seconds Backend HTTP round trip."
        );
        let _ = writeln!(out, "# TYPE ringgate_backend_latency_seconds histogram");
        for name in &names {
            let blocks: Vec<&Arc<ServiceMetrics>> = list
                .iter()
                .filter(|(_, n, _)| n == *name)
                .map(|(_, _, m)| m)
                .collect();
            let mut cumulative = 0u64;
            for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
                cumulative += blocks
                    .iter()
                    .map(|m| m.latency_buckets[i].load(Relaxed))
                    .sum::<u64>();
                let _ = writeln!(
                    out,
                    "ringgate_backend_latency_seconds_bucket{{service=\"{name}\",le=\"{le}\"}} {cumulative}"
                );
            }
            cumulative += blocks
                .iter()
                .map(|m| m.latency_buckets[LATENCY_BUCKETS.len()].load(Relaxed))
                .sum::<u64>();
            let sum_us: u64 = blocks.iter().map(|m| m.latency_sum_us.load(Relaxed)).sum();
            let _ = writeln!(
                out,
                "ringgate_backend_latency_seconds_bucket{{service=\"{name}\",le=\"+Inf\"}} {cumulative}"
            );
            let _ = writeln!(
                out,
                "ringgate_backend_latency_seconds_sum{{service=\"{name}\"}} {}",
                sum_us as f64 / 1e6
            );
            let _ = writeln!(
                out,
                "ringgate_backend_latency_seconds_count{{service=\"{name}\"}} {cumulative}"
            );
        }
        let links: Vec<&&Arc<str>> = names
            .iter()
            .filter(|name| {
                list.iter()
                    .any(|(_, n, m)| n == **name && m.link.load(Relaxed))
            })
            .collect();
        for (metric, kind, help, get) in [
            (
                "ringgate_link_up",
                "gauge",
                "Shards whose backend link to the service is up.",
                (|m: &ServiceMetrics| m.link_up.load(Relaxed)) as fn(&ServiceMetrics) -> u64,
            ),
            (
                "ringgate_link_connects_total",
                "counter",
                "Backend link connections established.",
                |m| m.link_connects.load(Relaxed),
            ),
            (
                "ringgate_link_late_replies_total",
                "counter",
                "Link replies that came after their call timed out (dropped).",
                |m| m.link_late_replies.load(Relaxed),
            ),
        ] {
            if links.is_empty() {
                break;
            }
            let _ = writeln!(out, "# HELP {metric} {help}");
            let _ = writeln!(out, "# TYPE {metric} {kind}");
            for name in &links {
                let v: u64 = list
                    .iter()
                    .filter(|(_, n, _)| n == **name)
                    .map(|(_, _, m)| get(m))
                    .sum();
                let _ = writeln!(out, "{metric}{{service=\"{name}\"}} {v}");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_counters_are_summed_over_shards() {
        let m = Metrics::new(2);
        let name: Arc<str> = "account".into();
        m.service(0, &name).response(ResponseCode::Ok);
        m.service(1, &name).response(ResponseCode::Ok);
        m.service(1, &name).response(ResponseCode::InternalError);
        let text = m.render();
        assert!(
            text.contains("ringgate_requests_total{service=\"account\",code=\"0\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("ringgate_requests_total{service=\"account\",code=\"60\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn latency_bounds_in_microseconds_are_the_bounds_in_seconds() {
        for (s, us) in LATENCY_BUCKETS.iter().zip(LATENCY_BUCKETS_US) {
            assert_eq!((s * 1e6).round() as u64, us);
        }
        // A round trip exactly on a bound counts in that bound's bucket.
        let m = Metrics::new(1);
        let name: Arc<str> = "s".into();
        m.service(0, &name).latency_us(500);
        assert!(m
            .render()
            .contains("ringgate_backend_latency_seconds_bucket{service=\"s\",le=\"0.0005\"} 1"));
    }

    #[test]
    fn latency_histogram_is_cumulative() {
        let m = Metrics::new(1);
        let name: Arc<str> = "s".into();
        let b = m.service(0, &name);
        b.latency_us(300);
        b.latency_us(3_000);
        b.latency_us(60_000_000);
        let text = m.render();
        assert!(
            text.contains("ringgate_backend_latency_seconds_bucket{service=\"s\",le=\"0.0005\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("ringgate_backend_latency_seconds_bucket{service=\"s\",le=\"0.005\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("ringgate_backend_latency_seconds_bucket{service=\"s\",le=\"30\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("ringgate_backend_latency_seconds_bucket{service=\"s\",le=\"+Inf\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("ringgate_backend_latency_seconds_count{service=\"s\"} 3"),
            "{text}"
        );
    }

    #[test]
    fn connection_and_handshake_counters_render() {
        let m = Metrics::new(2);
        m.shards[0].connections_open.fetch_add(2, Relaxed);
        m.shards[1].connections_open.fetch_add(1, Relaxed);
        m.shards[1].handshake(HandshakeResult::Unauthorized);
        let text = m.render();
        assert!(text.contains("ringgate_connections_open 3"), "{text}");
        assert!(
            text.contains("ringgate_handshakes_total{result=\"unauthorized\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("ringgate_handshakes_total{result=\"ok\"} 0"),
            "{text}"
        );
    }
}
