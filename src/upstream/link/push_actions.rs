//! The backend's push-plane actions (docs/LINK.md): PUBLISH to a topic, BROADCAST to
//! every session; SUBSCRIBE,
//! UNSUBSCRIBE, PUSH, ROLES, KICK, SHORTCUT, SHORTCUT_REVOKE and CALL_CLIENT addressed to a session announced on this link, a
//! session id or an account, wherever those sessions live.
//!
//! Why here and this way: the link is only a pipe — an action is resolved to shards
//! and table places (`push::Hub`) and posted to each shard's push inbox, like a push
//! from the admin API. One shortcut: a subscription change for a session of this very
//! shard is applied at once, so a backend that subscribes a session and then publishes
//! in the same breath reaches it.

use std::sync::Arc;

use bytes::Bytes;

use crate::proto::bannou::{flags, ResponseCode};
use crate::proto::link::{Addr, FromBackend, ToBackend};
use crate::push::frame::push_frame;
use crate::push::{ClientCall, Loc, PushMsg, Target};

use super::inner::Inner;
use super::state::Phase;

impl Inner {
    /// Carries out one push-plane action (any action but REPLY, SEND and CLOSE).
    pub(super) fn on_push_action(&self, action: FromBackend) {
        let hub = &self.plane.hub;
        match action {
            FromBackend::Publish {
                flags: f,
                topic,
                key,
                payload,
            } => {
                if let Err(e) =
                    hub.publish(&topic, key.as_deref(), f & flags::BINARY != 0, &payload)
                {
                    tracing::warn!(service = %self.service, topic = %topic, error = %e, "PUBLISH refused");
                }
            }
            FromBackend::Subscribe { addr, topic } => self.subscribe(&addr, &topic, true),
            FromBackend::Unsubscribe { addr, topic } => self.subscribe(&addr, &topic, false),
            FromBackend::Push {
                addr,
                flags: f,
                payload,
            } => {
                let locs = self.locate(&addr);
                if !locs.is_empty() {
                    let frame = push_frame((self.push_ids)(), f & flags::BINARY != 0, &payload);
                    for l in locs {
                        hub.post(
                            l.shard,
                            PushMsg::Deliver {
                                to: l.at,
                                frame: frame.clone(),
                                then: None,
                            },
                        );
                    }
                }
            }
            FromBackend::Broadcast { flags: f, payload } => {
                if let Err(e) = hub.broadcast(f & flags::BINARY != 0, &payload) {
                    tracing::warn!(service = %self.service, error = %e, "BROADCAST refused");
                }
            }
            FromBackend::Roles { addr, add, remove } => {
                for l in self.locate(&addr) {
                    hub.post(
                        l.shard,
                        PushMsg::Roles {
                            to: l.at,
                            add: add.clone(),
                            remove: remove.clone(),
                        },
                    );
                }
            }
            FromBackend::Kick { addr, code, reason } => {
                let reason = String::from_utf8_lossy(&reason).into_owned();
                for l in self.locate(&addr) {
                    hub.post(
                        l.shard,
                        PushMsg::Close {
                            to: l.at,
                            code,
                            reason: reason.clone(),
                        },
                    );
                }
            }
            FromBackend::Shortcut {
                addr,
                name,
                target,
                expires_unix_ms,
                payload,
            } => {
                for l in self.locate(&addr) {
                    hub.post(
                        l.shard,
                        PushMsg::Shortcut {
                            to: l.at,
                            name: name.clone(),
                            target: target.clone(),
                            expires_unix_ms,
                            payload: payload.clone(),
                        },
                    );
                }
            }
            FromBackend::ShortcutRevoke { addr, name } => {
                for l in self.locate(&addr) {
                    hub.post(
                        l.shard,
                        PushMsg::ShortcutRevoke {
                            to: l.at,
                            name: name.clone(),
                        },
                    );
                }
            }
            FromBackend::CallClient {
                addr,
                call,
                timeout_ms,
                flags: _,
                payload,
            } => {
                let reply_to = ClientCall {
                    origin: self.plane.shard,
                    service: self.service.clone(),
                    call,
                };
                // A call has one answer: the session's first connection gets it.
                match self.locate(&addr).first() {
                    Some(l) => hub.post(
                        l.shard,
                        PushMsg::CallClient {
                            to: l.at,
                            reply_to,
                            timeout_ms,
                            payload,
                        },
                    ),
                    None => self.plane.answer_call(
                        reply_to,
                        ResponseCode::ClientNotFound.as_u8(),
                        Bytes::new(),
                    ),
                }
            }
            // REPLY, SEND and CLOSE are `actions`'s.
            other => {
                tracing::debug!(service = %self.service, kind = %format_args!("{:#04x}", other.kind()), "not a push-plane action; dropped")
            }
        }
    }

    /// A client's answer to CALL_CLIENT `call` (or the gateway's 60 or 31): sent as
    /// CLIENT_ANSWER if the link is up (a link that went down lost the call with it).
    pub(super) fn client_answer(&self, call: u64, code: u8, payload: &[u8]) {
        let msg = ToBackend::ClientAnswer {
            call,
            code,
            payload,
        };
        let mut st = self.st.borrow_mut();
        if st.phase != Phase::Up || msg.check().is_err() {
            return;
        }
        st.put_message(&msg);
        drop(st);
        self.wake_writer();
    }

    /// Subscribes (or unsubscribes) every connection `addr` names to `topic`: at once
    /// on this shard, through their inbox on others.
    fn subscribe(&self, addr: &Addr, topic: &str, on: bool) {
        let topic: Arc<str> = topic.into();
        for l in self.locate(addr) {
            if l.shard == self.plane.shard {
                if let Some(c) = self.plane.sessions.get(l.at) {
                    if on {
                        self.plane.subscribe(&c, &topic);
                    } else {
                        self.plane.unsubscribe(&c, &topic);
                    }
                }
            } else {
                self.plane.hub.post(
                    l.shard,
                    PushMsg::Subscribe {
                        to: l.at,
                        topics: vec![topic.clone()],
                        on,
                    },
                );
            }
        }
    }

    /// Where the connections `addr` names are (none: logged, the action is dropped).
    fn locate(&self, addr: &Addr) -> Vec<Loc> {
        let locs = match addr {
            Addr::Link(n) => self
                .session(*n)
                .map(|c| vec![self.plane.loc(c.at())])
                .unwrap_or_default(),
            Addr::Session(id) => self.plane.hub.locate(Target::Session(id)),
            Addr::Account(id) => self.plane.hub.locate(Target::Account(id)),
        };
        if locs.is_empty() {
            tracing::debug!(service = %self.service, ?addr, "action for no open session; dropped");
        }
        locs
    }
}
