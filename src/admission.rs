//! Admission: whether a connection the kernel handed a shard may go on to its upgrade.
//! The global cap (`server.max_connections`), the cap per source address
//! (`max_connections_per_ip`) and the upgrade rate per source address
//! (`upgrade_rate_per_ip`, `upgrade_burst_per_ip`); docs/DESIGN.md §3.
//!
//! Why shared by the shards and not per shard: the kernel spreads connections over the
//! shards' listeners by a hash of the addresses, so a per-shard cap would be N times
//! looser for one address, and by an amount that depends on the hash. One atomic
//! counter (in `Metrics`, where `/metrics` reads it) and one concurrent map keyed by
//! address (dashmap, one locked entry per accept and per close) give every shard the
//! same answer, and neither is on the message path.
//!
//! What is counted: a connection from its accept to its close — handshakes in
//! progress too, not only upgraded connections — because every one of them holds a
//! descriptor and memory, and connections that never finish their handshake
//! (slowloris) are what a per-address cap is for. A connection's place is its
//! [`Permit`], released when it drops (with the handshake that failed); a resuming
//! connection handed to another shard takes its permit along. The connection task
//! keeps it as a [`HeldPermit`] (the source key without the pointer) and gives it
//! back when it ends. Parked sessions hold no socket and count for nothing here.
//!
//! The per-address table cannot grow without bound: an address's entry goes when its
//! last connection closes and its rate bucket has refilled (a full bucket is the same
//! as a new one), and a pass at most once a second ([`Admission::prune`]) removes
//! entries whose bucket refilled after their last close. Exempt sources (and all
//! addresses when both per-address limits are off) are never entered.
//!
//! A reload replaces the limits ([`Admission::set_limits`]) for the connections that
//! come next. Connections held stay: a cap lowered below what is held refuses new ones
//! until enough have closed. Tracking follows the connection, not the limits: one
//! admitted while its address was untracked (exempt, or both per-address limits off)
//! is not counted for its address even once tracking starts, and one admitted tracked
//! gives its place back to its address's entry whatever the limits are by then.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;

use crate::config::net::IpNet;
use crate::config::ServerConfig;
use crate::metrics::{HandshakeResult, Metrics};
use crate::proto::ratelimit::{Rate, TokenBucket};

/// The limits, from `[server]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// 0 = none.
    pub max_connections: u64,
    /// 0 = none.
    pub max_per_ip: u32,
    /// `per_sec` 0 = none.
    pub rate: Rate,
    pub exempt: Vec<IpNet>,
}

impl Limits {
    /// `base` with the keys [`Limits::from_config`] reads taken from `from`: the
    /// `[server]` a reload puts in force (the rest of it waits for a restart).
    pub fn with_limits_of(base: &ServerConfig, from: &ServerConfig) -> ServerConfig {
        ServerConfig {
            max_connections: from.max_connections,
            max_connections_per_ip: from.max_connections_per_ip,
            upgrade_rate_per_ip: from.upgrade_rate_per_ip,
            upgrade_burst_per_ip: from.upgrade_burst_per_ip,
            per_ip_exempt: from.per_ip_exempt.clone(),
            ..base.clone()
        }
    }

    /// The limits `server` configures (it was validated: its prefixes parse).
    pub fn from_config(server: &ServerConfig) -> Limits {
        Limits {
            max_connections: server.max_connections,
            max_per_ip: server.max_connections_per_ip,
            rate: Rate {
                per_sec: server.upgrade_rate_per_ip,
                burst: server.upgrade_burst_per_ip,
            },
            exempt: server.per_ip_exempt_nets().unwrap_or_default(),
        }
    }
}

/// Why a connection was refused before its upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `server.max_connections` connections are held: 503.
    MaxConnections,
    /// `server.max_connections_per_ip` connections from this address are held: 503.
    MaxConnectionsPerIp,
    /// This address upgrades faster than `server.upgrade_rate_per_ip`: 429.
    UpgradeRate,
}

impl Refusal {
    /// The HTTP status: 503 for the caps (the gateway is full, for everyone or for
    /// this address), 429 for the rate (this client goes too fast).
    pub fn status(self) -> u16 {
        match self {
            Refusal::MaxConnections | Refusal::MaxConnectionsPerIp => 503,
            Refusal::UpgradeRate => 429,
        }
    }

    /// The response body.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::MaxConnections => "too many connections",
            Refusal::MaxConnectionsPerIp => "too many connections from this address",
            Refusal::UpgradeRate => "too many connection attempts from this address",
        }
    }

    /// How it is counted in `ringgate_handshakes_total`.
    pub fn result(self) -> HandshakeResult {
        match self {
            Refusal::MaxConnections => HandshakeResult::MaxConnections,
            Refusal::MaxConnectionsPerIp => HandshakeResult::MaxConnectionsPerIp,
            Refusal::UpgradeRate => HandshakeResult::UpgradeRate,
        }
    }
}

/// A source as the per-address limits see it: an IPv4 address, or an IPv6 /64 (one
/// host is commonly given a whole /64, so its addresses are one source).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceKey {
    V4(u32),
    V6(u64),
}

impl SourceKey {
    fn of(ip: IpAddr) -> SourceKey {
        match ip.to_canonical() {
            IpAddr::V4(a) => SourceKey::V4(a.into()),
            IpAddr::V6(a) => SourceKey::V6((u128::from(a) >> 64) as u64),
        }
    }
}

/// One source address's connections and upgrade bucket.
#[derive(Debug)]
struct Source {
    conns: u32,
    bucket: TokenBucket,
}

/// The admission state all shards share.
#[derive(Debug)]
pub struct Admission {
    /// Replaced whole by a reload; read once per accept and per close.
    limits: RwLock<Arc<Limits>>,
    per_ip: DashMap<SourceKey, Source>,
    /// Holds the global count (`held`) and the table's size (`sources`).
    metrics: Arc<Metrics>,
    /// The clock of the rate buckets (milliseconds since this instant), shared by
    /// every shard.
    epoch: Instant,
    /// When the table was last pruned (ms since `epoch`).
    pruned_ms: AtomicU64,
}

/// A connection's place under the limits; dropping it gives the place back.
pub struct Permit {
    /// `None` once the place went to a [`HeldPermit`] (`Permit::into_held`): its
    /// holder gives it back, not this.
    admission: Option<Arc<Admission>>,
    /// `None`: the source is exempt (or no per-address limit is on).
    source: Option<SourceKey>,
}

/// A [`Permit`] without its `Arc<Admission>`: the source key alone, for the holder
/// that keeps the place for the connection's whole life, the connection task
/// (`edge::conn`), which reaches the admission through its shard
/// (`ShardCtx::admission`, the same one on every shard of a gateway).
///
/// Why: every idle connection's task holds its place for hours, and the task's bytes
/// are the largest part of an idle connection's cost (perf/idle_rss.sh); the pointer
/// is 8 of them, in every task, to reach what the shard already holds. The handshake
/// and a resume's handover keep the whole `Permit`, which gives its place back by
/// itself however they end.
///
/// Not `Clone`, no `Drop`: its one holder gives it back with
/// [`Admission::give_back`], exactly once (the connection task's drop).
#[must_use = "a held place is given back with Admission::give_back, or never freed"]
#[derive(Debug)]
pub struct HeldPermit {
    source: Option<SourceKey>,
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit")
            .field("source", &self.source)
            .finish()
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(a) = self.admission.take() {
            a.release(self.source, a.now_ms());
        }
    }
}

impl Permit {
    /// The place as its source key alone (see [`HeldPermit`]), to be given back to
    /// `admission` — the one that gave this permit.
    pub fn into_held(mut self, admission: &Admission) -> HeldPermit {
        let own = self.admission.take();
        debug_assert!(
            own.as_deref().is_some_and(|a| std::ptr::eq(a, admission)),
            "a permit is given back to the admission that gave it"
        );
        HeldPermit {
            source: self.source,
        }
    }
}

impl Admission {
    pub fn new(limits: Limits, metrics: Arc<Metrics>) -> Admission {
        Admission {
            limits: RwLock::new(Arc::new(limits)),
            per_ip: DashMap::new(),
            metrics,
            epoch: Instant::now(),
            pruned_ms: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The limits in force.
    pub fn limits(&self) -> Arc<Limits> {
        self.limits
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Puts `limits` in force for the connections that come next (a reload; see the
    /// module doc for the connections already held). Returns whether they differ
    /// from the limits they replace.
    pub fn set_limits(&self, limits: Limits) -> bool {
        let mut current = self.limits.write().unwrap_or_else(|e| e.into_inner());
        if **current == limits {
            return false;
        }
        *current = Arc::new(limits);
        true
    }

    /// Admits a connection from `ip`, or says why not.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Permit, Refusal> {
        self.admit_at(ip, self.now_ms())
    }

    /// [`Admission::admit`] at `now_ms` (milliseconds of the admission's clock).
    fn admit_at(self: &Arc<Self>, ip: IpAddr, now_ms: u64) -> Result<Permit, Refusal> {
        let l = self.limits();
        let tracked = (l.max_per_ip > 0 || l.rate.per_sec > 0)
            && !l.exempt.iter().any(|net| net.contains(ip));
        let source = tracked.then(|| SourceKey::of(ip));
        if let Some(key) = source {
            match self.per_ip.entry(key) {
                Entry::Occupied(mut e) => {
                    let s = e.get_mut();
                    // Every attempt takes a token, even one the cap then refuses.
                    if !s.bucket.try_take(l.rate, now_ms) {
                        return Err(Refusal::UpgradeRate);
                    }
                    if l.max_per_ip > 0 && s.conns >= l.max_per_ip {
                        return Err(Refusal::MaxConnectionsPerIp);
                    }
                    s.conns += 1;
                }
                Entry::Vacant(e) => {
                    let mut bucket = TokenBucket::new(l.rate, now_ms);
                    // (A new bucket is full: `upgrade_burst_per_ip` ≥ 1 is validated.)
                    if !bucket.try_take(l.rate, now_ms) {
                        return Err(Refusal::UpgradeRate);
                    }
                    e.insert(Source { conns: 1, bucket });
                    self.metrics
                        .admission
                        .sources
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let held = self.metrics.admission.held.fetch_add(1, Ordering::Relaxed) + 1;
        if l.max_connections > 0 && held > l.max_connections {
            self.release(source, now_ms);
            return Err(Refusal::MaxConnections);
        }
        Ok(Permit {
            admission: Some(self.clone()),
            source,
        })
    }

    /// Gives back the place of a connection that ended (see [`HeldPermit`]).
    pub fn give_back(&self, held: HeldPermit) {
        self.release(held.source, self.now_ms());
    }

    /// A connection admitted from `source` ended (or was refused after all).
    fn release(&self, source: Option<SourceKey>, now_ms: u64) {
        self.metrics.admission.held.fetch_sub(1, Ordering::Relaxed);
        let Some(key) = source else {
            return;
        };
        if let Entry::Occupied(mut e) = self.per_ip.entry(key) {
            let s = e.get_mut();
            s.conns = s.conns.saturating_sub(1);
            if s.conns == 0 && s.bucket.is_full(self.limits().rate, now_ms) {
                e.remove();
                self.metrics
                    .admission
                    .sources
                    .fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Forgets the sources with no connection whose bucket has refilled since, at most
    /// once a second whichever shard asks (each shard's sweep does, every second).
    pub fn prune(&self) {
        self.prune_at(self.now_ms());
    }

    fn prune_at(&self, now_ms: u64) {
        let last = self.pruned_ms.load(Ordering::Relaxed);
        if now_ms < last + 1000
            || self
                .pruned_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let rate = self.limits().rate;
        let mut removed = 0;
        self.per_ip.retain(|_, s| {
            let keep = s.conns > 0 || !s.bucket.is_full(rate, now_ms);
            removed += i64::from(!keep);
            keep
        });
        if removed > 0 {
            self.metrics
                .admission
                .sources
                .fetch_sub(removed, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(max: u64, per_ip: u32, per_sec: u32, burst: u32) -> Arc<Admission> {
        Arc::new(Admission::new(
            Limits {
                exempt: vec![IpNet::parse("127.0.0.0/8").unwrap()],
                ..limits(max, per_ip, per_sec, burst)
            },
            Arc::new(Metrics::new(1)),
        ))
    }

    /// The limits, no source exempt.
    fn limits(max: u64, per_ip: u32, per_sec: u32, burst: u32) -> Limits {
        Limits {
            max_connections: max,
            max_per_ip: per_ip,
            rate: Rate { per_sec, burst },
            exempt: vec![],
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn held(a: &Admission) -> u64 {
        a.metrics.admission.held.load(Ordering::Relaxed)
    }

    fn sources(a: &Admission) -> i64 {
        a.metrics.admission.sources.load(Ordering::Relaxed)
    }

    #[test]
    fn the_global_cap_counts_every_source_and_frees_a_place_when_a_permit_drops() {
        let a = admission(2, 0, 0, 0);
        let p1 = a.admit_at(ip("10.0.0.1"), 0).unwrap();
        let _p2 = a.admit_at(ip("127.0.0.1"), 0).unwrap();
        assert_eq!(
            a.admit_at(ip("10.0.0.2"), 0).unwrap_err(),
            Refusal::MaxConnections
        );
        assert_eq!(held(&a), 2, "a refusal holds nothing");
        drop(p1);
        assert_eq!(held(&a), 1);
        assert!(a.admit_at(ip("10.0.0.2"), 0).is_ok());
        assert_eq!(sources(&a), 0, "no per-address limit: nothing tracked");
    }

    #[test]
    fn the_per_address_cap_counts_each_address_apart_and_ipv6_per_64() {
        let a = admission(0, 2, 0, 0);
        let _x = [
            a.admit_at(ip("10.0.0.1"), 0).unwrap(),
            a.admit_at(ip("10.0.0.1"), 0).unwrap(),
        ];
        assert_eq!(
            a.admit_at(ip("10.0.0.1"), 0).unwrap_err(),
            Refusal::MaxConnectionsPerIp
        );
        assert_eq!(
            a.admit_at(ip("::ffff:10.0.0.1"), 0).unwrap_err(),
            Refusal::MaxConnectionsPerIp,
            "an IPv4-mapped address is its IPv4 address"
        );
        assert!(a.admit_at(ip("10.0.0.2"), 0).is_ok());
        let _y = [
            a.admit_at(ip("2001:db8:0:1::1"), 0).unwrap(),
            a.admit_at(ip("2001:db8:0:1::ffff"), 0).unwrap(),
        ];
        assert_eq!(
            a.admit_at(ip("2001:db8:0:1:8000::7"), 0).unwrap_err(),
            Refusal::MaxConnectionsPerIp,
            "one /64 is one source"
        );
        assert!(a.admit_at(ip("2001:db8:0:2::1"), 0).is_ok());
    }

    #[test]
    fn exempt_sources_pass_the_per_address_limits_but_count_globally() {
        let a = admission(0, 1, 1, 1);
        let _p: Vec<_> = (0..10)
            .map(|_| a.admit_at(ip("127.0.0.9"), 0).unwrap())
            .collect();
        assert_eq!(held(&a), 10);
        assert_eq!(sources(&a), 0);
    }

    #[test]
    fn upgrades_past_the_rate_are_refused_until_tokens_refill() {
        let a = admission(0, 0, 10, 3);
        for _ in 0..3 {
            drop(a.admit_at(ip("10.0.0.1"), 0).unwrap());
        }
        assert_eq!(
            a.admit_at(ip("10.0.0.1"), 0).unwrap_err(),
            Refusal::UpgradeRate,
            "closing a connection does not give its token back"
        );
        assert!(a.admit_at(ip("10.0.0.2"), 0).is_ok(), "another address");
        assert!(
            a.admit_at(ip("10.0.0.1"), 100).is_ok(),
            "one token per 100 ms"
        );
    }

    #[test]
    fn an_address_is_forgotten_once_its_last_connection_closed_and_its_bucket_refilled() {
        // No rate: the entry goes with the last connection.
        let a = admission(0, 5, 0, 0);
        let p = a.admit_at(ip("10.0.0.1"), 0).unwrap();
        assert_eq!(sources(&a), 1);
        drop(p);
        assert_eq!(sources(&a), 0);
        assert!(a.per_ip.is_empty());

        // A rate: kept while its bucket is short (else closing and reconnecting would
        // reset it), then pruned.
        let a = admission(0, 5, 10, 2);
        let p = a.admit_at(ip("10.0.0.1"), 0).unwrap();
        drop(p);
        assert_eq!(sources(&a), 1, "the bucket lacks a token");
        a.prune_at(50);
        assert_eq!(sources(&a), 1, "not refilled yet (and not a second since)");
        a.prune_at(1000);
        assert_eq!(sources(&a), 0);
        assert!(a.per_ip.is_empty());
        // A refused attempt on an address with no connection leaves an entry that the
        // prune removes too.
        let a = admission(0, 5, 1, 1);
        drop(a.admit_at(ip("10.0.0.3"), 0).unwrap());
        assert_eq!(
            a.admit_at(ip("10.0.0.3"), 10).unwrap_err(),
            Refusal::UpgradeRate
        );
        a.prune_at(1500);
        assert_eq!(sources(&a), 0);
    }

    #[test]
    fn a_global_refusal_gives_the_address_its_place_back() {
        let a = admission(1, 1, 0, 0);
        let _p = a.admit_at(ip("10.0.0.1"), 0).unwrap();
        assert_eq!(
            a.admit_at(ip("10.0.0.2"), 0).unwrap_err(),
            Refusal::MaxConnections
        );
        assert_eq!(sources(&a), 1, "10.0.0.2 was not kept");
        assert_eq!(held(&a), 1);
    }

    #[test]
    fn a_held_permit_keeps_its_place_until_given_back_once() {
        let a = admission(2, 1, 0, 0);
        let held_place = a.admit_at(ip("10.0.0.1"), 0).unwrap().into_held(&a);
        assert_eq!(
            held(&a),
            1,
            "turning a permit into its key gives nothing back"
        );
        assert_eq!(sources(&a), 1);
        assert_eq!(
            a.admit_at(ip("10.0.0.1"), 0).unwrap_err(),
            Refusal::MaxConnectionsPerIp
        );
        let exempt = a.admit_at(ip("127.0.0.1"), 0).unwrap().into_held(&a);
        assert_eq!(held(&a), 2);
        a.give_back(held_place);
        assert_eq!(held(&a), 1);
        assert_eq!(sources(&a), 0, "its address's last place");
        a.give_back(exempt);
        assert_eq!(held(&a), 0);
        assert_eq!(Arc::strong_count(&a), 1, "the held places keep no pointer");
    }

    #[test]
    fn a_lowered_cap_refuses_new_connections_and_keeps_those_held() {
        let a = admission(0, 0, 0, 0);
        let mut held_now: Vec<_> = (0..3)
            .map(|i| a.admit_at(ip(&format!("10.0.0.{i}")), 0).unwrap())
            .collect();
        assert!(a.set_limits(limits(2, 0, 0, 0)), "the limits changed");
        assert!(!a.set_limits(limits(2, 0, 0, 0)), "the same limits again");
        assert_eq!(held(&a), 3, "nobody is closed");
        assert_eq!(
            a.admit_at(ip("10.0.0.9"), 0).unwrap_err(),
            Refusal::MaxConnections
        );
        held_now.truncate(1);
        assert!(a.admit_at(ip("10.0.0.9"), 0).is_ok(), "below the new cap");
    }

    #[test]
    fn per_address_limits_turned_on_by_a_reload_count_the_connections_admitted_after() {
        let a = admission(0, 0, 0, 0);
        let before: Vec<_> = (0..2)
            .map(|_| a.admit_at(ip("10.0.0.1"), 0).unwrap())
            .collect();
        assert_eq!(sources(&a), 0, "untracked");
        a.set_limits(limits(0, 1, 0, 0));
        let after = a.admit_at(ip("10.0.0.1"), 0).unwrap();
        assert_eq!(
            a.admit_at(ip("10.0.0.1"), 0).unwrap_err(),
            Refusal::MaxConnectionsPerIp
        );
        drop(before);
        assert_eq!(sources(&a), 1, "the untracked ones leave its entry alone");
        // Off again: the tracked one still gives its place back to its entry.
        a.set_limits(limits(0, 0, 0, 0));
        drop(after);
        assert_eq!(sources(&a), 0);
        assert_eq!(held(&a), 0);
    }

    #[test]
    fn a_reloaded_rate_applies_to_the_buckets_already_kept() {
        let a = admission(0, 0, 10, 5);
        for _ in 0..2 {
            drop(a.admit_at(ip("10.0.0.1"), 0).unwrap());
        }
        // Three tokens left, but the new burst is one and the rate one a second.
        a.set_limits(limits(0, 0, 1, 1));
        assert!(a.admit_at(ip("10.0.0.1"), 0).is_ok());
        assert_eq!(
            a.admit_at(ip("10.0.0.1"), 1).unwrap_err(),
            Refusal::UpgradeRate
        );
        assert!(a.admit_at(ip("10.0.0.1"), 1001).is_ok(), "one a second");
    }

    #[test]
    fn a_held_permit_is_the_source_key_alone() {
        // What every idle connection's task keeps (`edge::conn::Task`, as an Option).
        assert!(std::mem::size_of::<HeldPermit>() <= 16);
        assert!(std::mem::size_of::<Option<HeldPermit>>() <= 16);
    }
}
