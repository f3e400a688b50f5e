//! What a shard's push inbox receives: the cross-shard half of every push.
//!
//! Why apart from `shard::ShardMsg` (control: shutdown, registry): pushes are the
//! data plane, sent from any thread at any rate, and are applied by their own task
//! (`edge::inbox`) so a burst of publishes never delays a shutdown or a registry swap,
//! and control never waits behind a burst.

use std::sync::mpsc::SyncSender;
use std::sync::Arc;

use bytes::Bytes;

use crate::session::SessionRef;

/// A topic message, encoded once, shared by every shard and subscriber it reaches.
#[derive(Debug)]
pub struct Published {
    pub topic: Arc<str>,
    /// The conflation key (`frame::conflation_key`), if the publish had one.
    pub key: Option<Bytes>,
    /// The complete push frame.
    pub frame: Bytes,
}

/// Sent back to another connection once a delivery is known to have happened or not
/// (a peer message's acknowledgement, or its 31).
#[derive(Debug, Clone)]
pub struct Followup {
    pub shard: u16,
    pub to: SessionRef,
    /// Queued for `to` when the delivery happened (none: nothing is said).
    pub delivered: Option<Bytes>,
    /// Queued for `to` when the target was gone (none: nothing is said).
    pub missed: Option<Bytes>,
    /// Queued for `to` when the target's backlog was past half its bound and the frame
    /// was refused (none: nothing is said).
    pub refused: Option<Bytes>,
}

/// What the push API reports of a session (`GET /v1/sessions/{id}`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct SessionInfo {
    pub session_id: String,
    pub account_id: Option<String>,
    pub roles: Vec<String>,
    pub topics: Vec<String>,
    pub shard: u16,
    pub manifest_version: u64,
    pub outbox_bytes: usize,
    /// Whether a client is connected now (false: the session is parked, waiting for
    /// its client to resume it within its reconnection window).
    pub connected: bool,
}

/// One push for a shard to apply.
#[derive(Debug)]
pub enum PushMsg {
    /// A topic message for this shard's subscribers.
    Publish(Arc<Published>),
    /// A complete frame for one connection (a push to a session or user, a peer
    /// message, an answer). With `then` (a peer message), a target whose backlog is
    /// past half its bound refuses it.
    Deliver {
        to: SessionRef,
        frame: Bytes,
        then: Option<Followup>,
    },
    /// A frame for every connection of the shard (but `except`).
    Broadcast {
        frame: Bytes,
        except: Option<SessionRef>,
    },
    /// Subscribes (or unsubscribes) a connection to topics.
    Subscribe {
        to: SessionRef,
        topics: Vec<Arc<str>>,
        on: bool,
    },
    /// Grants and revokes roles; a changed manifest is re-sent.
    Roles {
        to: SessionRef,
        add: Vec<String>,
        remove: Vec<String>,
    },
    /// Closes a connection with this code and reason (a kick: no resumption).
    Close {
        to: SessionRef,
        code: u16,
        reason: String,
    },
    /// Publishes (or replaces, by name) a shortcut for a connection's session; its
    /// manifest is re-sent.
    Shortcut {
        to: SessionRef,
        name: Box<str>,
        target: Box<str>,
        expires_unix_ms: u64,
        payload: Bytes,
    },
    /// Revokes a shortcut by name; the manifest is re-sent if one was listed.
    ShortcutRevoke { to: SessionRef, name: Box<str> },
    /// A backend's request to a client (service → client RPC): sent as a request frame
    /// (flags 0x01, as Bannou sends it); the client's response frame, or the timeout
    /// (60), or its absence (31), goes back to `reply_to`.
    CallClient {
        to: SessionRef,
        reply_to: super::ClientCall,
        timeout_ms: u32,
        payload: Bytes,
    },
    /// A client's answer (or 60, or 31) to a backend's call, for that backend's link
    /// on this shard.
    ClientAnswer {
        service: Arc<str>,
        call: u64,
        code: u8,
        payload: Bytes,
    },
    /// Reports on a connection (none if it has ended).
    Inspect {
        to: SessionRef,
        reply: SyncSender<Option<SessionInfo>>,
    },
    /// A client resuming a session of this shard, accepted by another shard: its
    /// connection moves here, where the session is.
    Resume(Box<Handover>),
}

/// A client connection handed to the shard holding the session it resumes.
#[derive(Debug)]
pub struct Handover {
    /// The client's socket (a duplicate; the accepting shard closed its own).
    pub fd: std::os::fd::OwnedFd,
    /// Its TLS session (`wss://`), handshake done, moving with it.
    pub tls: Option<Box<crate::tls::TlsSession>>,
    /// What the client's reconnection token names.
    pub place: crate::proto::resume::ResumePlace,
    /// The `101` answering the client's upgrade request.
    pub response: Bytes,
    /// Bytes the client sent after its upgrade request.
    pub leftover: Bytes,
    /// The connection's place under the admission limits, moving with it.
    pub permit: crate::admission::Permit,
    /// What the client resumes with.
    pub by: ResumeBy,
}

/// What a client resumes its session with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResumeBy {
    /// Its reconnection token (`Authorization: Reconnect`): the place and life it names.
    Token,
    /// A bearer token naming the session's id (`sid`), as Bannou's SDKs reconnect: the
    /// session of that id, whichever life it is in, and the new token's expiry.
    Bearer {
        session_id: Box<str>,
        expires_at: Option<u64>,
    },
}
