//! The push plane (docs/DESIGN.md §6): what lets a backend or the push API reach a
//! client — one session, every session of a user, every subscriber of a topic, every
//! session — wherever it lives.
//!
//! Why a layer of its own, below the backends: pushes come from backend links (on any
//! shard), from the admin listener's push API (its own thread) and from clients (peer
//! messages, broadcasts). They share one way of finding sessions and one way of
//! crossing to the shard that holds one: the [`Hub`] (shared by every thread) resolves
//! a session id, an account id or a topic to shards and posts a [`PushMsg`] to each
//! shard's push inbox; the shard applies it between events (`edge::inbox`). No lock is
//! taken on a client's message path: the directory changes on connect, disconnect,
//! subscribe and unsubscribe only.
//!
//! # Layout
//! - `frame`: push frames (WebSocket header + Bannou push header + payload) encoded
//!   once as one `Bytes`, shared by every outbox they enter; conflation keys.
//! - `directory`: session id / account id → where their connections are; topic → which
//!   shards have subscribers.
//! - `msg`: [`PushMsg`], what a shard's push inbox receives.
//! - `hub`: [`Hub`], the inboxes and the directory, used from any thread.
//! - `topics`: a shard's subscribers per topic and topics per session.
//! - `client_calls`: calls from a backend to a client awaiting the client's answer.
//! - `shortcuts`: a session's pre-bound calls published by backends.
//! - `plane`: [`ShardPlane`], one shard's half: its session table, its topics, the hub.

mod client_calls;
mod directory;
pub mod frame;
mod hub;
mod msg;
mod plane;
mod shortcuts;
mod topics;

pub use client_calls::ClientCall;
pub use directory::Loc;
pub use hub::{Hub, PublishError, Target};
pub use msg::{Followup, Handover, PushMsg, ResumeBy, SessionInfo};
pub use plane::ShardPlane;

/// Longest topic name (bytes), as the link and the push API accept it.
pub const MAX_TOPIC_BYTES: usize = 255;
/// Longest conflation key (bytes).
pub const MAX_KEY_BYTES: usize = 255;
