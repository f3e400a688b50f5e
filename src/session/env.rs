//! What every session handle of a shard shares: the shard's metrics, how its sessions
//! outlive their connections (the reconnection key and window), and the in-flight
//! bound.
//!
//! Why one `Arc` per shard and not fields per handle: an idle connection's handle must
//! stay within one allocator size class (`ConnShared`'s size test), and these values
//! are the same for every session of the shard.

use std::sync::Arc;

use crate::metrics::ShardMetrics;
use crate::proto::resume::{ResumeKey, ResumePlace};

use super::place::SessionRef;

/// Where the session a reconnection token names is kept: the interface a shared
/// store (several instances on Redis) will implement. The in-memory default is the
/// token codec itself ([`ResumeKey`]): a parked session stays in its shard's table and
/// the token names that place, so there is nothing else to store.
pub trait ResumeStore: Send + Sync + std::fmt::Debug {
    /// The token that names `place`.
    fn mint(&self, place: ResumePlace) -> String;
    /// The place `token` names, if this store issued it.
    fn find(&self, token: &str) -> Option<ResumePlace>;
}

impl ResumeStore for ResumeKey {
    fn mint(&self, place: ResumePlace) -> String {
        ResumeKey::mint(self, place)
    }

    fn find(&self, token: &str) -> Option<ResumePlace> {
        self.open(token)
    }
}

/// The per-shard settings every session handle reads.
#[derive(Debug, Default)]
pub struct SessionEnv {
    pub metrics: Arc<ShardMetrics>,
    /// The shard's number (what a reconnection token names).
    pub shard: u16,
    /// Mints reconnection tokens; `None` when sessions end with their connection
    /// (`reconnect_window_secs = 0`).
    pub resume: Option<Arc<dyn ResumeStore>>,
    /// `server.reconnect_window_secs`.
    pub window_secs: u32,
    /// `server.resume_buffer_bytes`.
    pub resume_buffer: usize,
    /// `server.max_inflight_per_connection`: a connection's requests in flight at
    /// which its reading pauses (here, not in each handle, to keep the handle small).
    pub max_inflight: u32,
}

impl SessionEnv {
    /// The token that resumes the session at `at` from its connection `life`, if
    /// sessions are resumable.
    pub fn token(&self, at: SessionRef, life: u32) -> Option<String> {
        let key = self.resume.as_ref()?;
        (at != SessionRef::NONE).then(|| {
            key.mint(ResumePlace {
                shard: self.shard,
                slot: at.slot,
                generation: at.generation,
                life,
            })
        })
    }
}
