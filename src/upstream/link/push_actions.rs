//! The backend's push-plane actions (docs/LINK.md): PUBLISH to a topic; SUBSCRIBE,
//! UNSUBSCRIBE, PUSH, ROLES and KICK addressed to a session announced on this link, a
//! session id or an account, wherever those sessions live.
//!
//! Why here and this way: the link is only a pipe — an action is resolved to shards
//! and table places (`push::Hub`) and posted to each shard's push inbox, like a push
//! from the admin API. One shortcut: a subscription change for a session of this very
//! shard is applied at once, so a backend that subscribes a session and then publishes
//! in the same breath reaches it.

use std::sync::Arc;

use crate::proto::bannou::flags;
use crate::proto::link::{Addr, FromBackend};
use crate::push::frame::push_frame;
use crate::push::{Loc, PushMsg, Target};

use super::inner::Inner;

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
            other => {
                tracing::debug!(service = %self.service, kind = %format_args!("{:#04x}", other.kind()), "action not carried out yet; dropped")
            }
        }
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
