//! The push API (docs/DESIGN.md §5): HTTP + JSON on the admin listener for services
//! without a backend link — publish to topics, push to a session, a user or everyone,
//! change a
//! session's subscriptions and roles, kick it, inspect it. Like AWS API Gateway's
//! `@connections`.
//!
//! Why it is only a translator: every route resolves its target through the push hub
//! and posts to the shards' push inboxes, exactly as a link action does; nothing here
//! touches a shard's state or its message path. Errors name what was wrong: 400 (the
//! field), 401 (the token), 404 (the session, user or route; or the API is off), 413
//! (the body), 503 (a shard is too far behind to take more publishes: retry later).

use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::proto::push_api::{
    json_object, percent_decode, BodyError, BodyKind, Publish, PushRequest,
};

use crate::push::frame::push_frame;
use crate::push::{Hub, Loc, PublishError, PushMsg, SessionInfo, Target};
use crate::session::CLOSE_KICKED;

use super::http::Request;

// The bodies are checked against the hub's own bounds.
const _: () = assert!(
    crate::proto::push_api::MAX_TOPIC_BYTES == crate::push::MAX_TOPIC_BYTES
        && crate::proto::push_api::MAX_KEY_BYTES == crate::push::MAX_KEY_BYTES
);

/// How long `GET /v1/sessions/{id}` waits for the shards' reports.
const INSPECT_WAIT: Duration = Duration::from_secs(1);

/// The push API's configuration and the hub it posts through.
#[derive(Debug)]
pub struct PushApi {
    pub hub: Arc<Hub>,
    /// `[admin] token`; none = the API is off.
    pub token: Option<String>,
}

/// A status and a JSON body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

fn answer(status: u16, body: Value) -> Answer {
    Answer { status, body }
}

fn error(status: u16, msg: impl Into<String>) -> Answer {
    answer(status, json!({ "error": msg.into() }))
}

/// A refused body: 400, naming the field when one was wrong.
fn refused(e: BodyError) -> Answer {
    match &e {
        BodyError::Field { field, .. } => {
            answer(400, json!({ "error": e.to_string(), "field": field }))
        }
        BodyError::NotJson(_) | BodyError::NotObject => error(400, e.to_string()),
    }
}

impl PushApi {
    /// The hub's counters, in Prometheus text (appended to `/metrics`).
    pub fn metrics(&self) -> String {
        let mut out = format!(
            "# HELP ringgate_publishes_total Topic publishes accepted (all sources).\n# TYPE ringgate_publishes_total counter\nringgate_publishes_total {}\n# HELP ringgate_publishes_refused_total Publishes refused because a shard was too far behind.\n# TYPE ringgate_publishes_refused_total counter\nringgate_publishes_refused_total {}\n# HELP ringgate_push_inbox_queued Push messages waiting in a shard's inbox.\n# TYPE ringgate_push_inbox_queued gauge\n",
            self.hub.publishes(),
            self.hub.refused()
        );
        for s in 0..self.hub.shards() {
            out.push_str(&format!(
                "ringgate_push_inbox_queued{{shard=\"{s}\"}} {}\n",
                self.hub.queued(s as u16)
            ));
        }
        out
    }

    /// Answers one request whose path starts with `/v1/`.
    pub fn handle(&self, req: &Request) -> Answer {
        let Some(token) = &self.token else {
            return error(404, "the push API is off: set [admin] token to turn it on");
        };
        if !authorized(req.authorization.as_deref(), token) {
            return error(401, "missing or wrong bearer token");
        }
        let segs: Vec<String> = req
            .path
            .trim_start_matches('/')
            .split('/')
            .map(percent_decode)
            .collect();
        let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
        match (req.method.as_str(), segs.as_slice()) {
            ("GET", ["v1", "sessions", id]) => self.inspect(id),
            (_, ["v1", "sessions", _]) => error(405, "use GET"),
            ("POST", rest) => match json_object(&req.body) {
                Ok(body) => self.post(rest, &body),
                Err(e) => refused(e),
            },
            (_, ["v1", ..]) if req.method != "POST" => error(405, "use POST"),
            _ => error(404, format!("no such route: {}", req.path)),
        }
    }

    fn post(&self, route: &[&str], body: &Value) -> Answer {
        match route {
            ["v1", "publish"] => self.publish(BodyKind::Publish, body),
            ["v1", "publish", "batch"] => self.publish(BodyKind::PublishBatch, body),
            ["v1", "broadcast"] => match PushRequest::from_json(BodyKind::Broadcast, body) {
                Ok(PushRequest::Broadcast(p)) => match self.hub.broadcast(p.binary, &p.bytes) {
                    Ok(shards) => answer(202, json!({ "shards": shards })),
                    Err(e) => error(503, e.to_string()),
                },
                Ok(other) => unreachable!("a broadcast body parsed as {other:?}"),
                Err(e) => refused(e),
            },
            ["v1", "sessions", id, action] => match BodyKind::session_action(action) {
                Some(kind) => self.to_connections(Target::Session(id), kind, body, "session"),
                None => error(404, format!("no such action: {action}")),
            },
            ["v1", "users", id, "push"] => {
                self.to_connections(Target::Account(id), BodyKind::Push, body, "user")
            }
            _ => error(404, "no such route"),
        }
    }

    /// Publishes each item (all are checked before any is sent).
    fn publish(&self, kind: BodyKind, body: &Value) -> Answer {
        let items: Vec<Publish> = match PushRequest::from_json(kind, body) {
            Ok(PushRequest::Publish(items)) => items,
            Ok(other) => unreachable!("a publish body parsed as {other:?}"),
            Err(e) => return refused(e),
        };
        let mut shards = 0;
        for (i, p) in items.iter().enumerate() {
            match self.hub.publish(
                &p.topic,
                p.key.as_deref(),
                p.payload.binary,
                &p.payload.bytes,
            ) {
                Ok(n) => shards += n,
                Err(e @ PublishError::Behind { .. }) => {
                    // The ones before it went out; this one and those after did not.
                    return answer(503, json!({ "error": e.to_string(), "published": i }));
                }
                Err(e) => return error(400, e.to_string()),
            }
        }
        answer(
            202,
            json!({ "published": items.len(), "shard_deliveries": shards }),
        )
    }

    /// A route addressing every connection of a session or a user (its body is
    /// checked before the target is looked up).
    fn to_connections(
        &self,
        target: Target<'_>,
        kind: BodyKind,
        body: &Value,
        what: &str,
    ) -> Answer {
        let request = match PushRequest::from_json(kind, body) {
            Ok(r) => r,
            Err(e) => return refused(e),
        };
        let msg: Box<dyn Fn(Loc) -> PushMsg> = match request {
            PushRequest::Push(p) => {
                let frame = push_frame(self.hub.next_push_id(), p.binary, &p.bytes);
                Box::new(move |l| PushMsg::Deliver {
                    to: l.at,
                    frame: frame.clone(),
                    then: None,
                })
            }
            PushRequest::Subscribe { topics, on } => {
                let topics: Vec<Arc<str>> = topics.iter().map(|t| Arc::from(t.as_str())).collect();
                Box::new(move |l| PushMsg::Subscribe {
                    to: l.at,
                    topics: topics.clone(),
                    on,
                })
            }
            PushRequest::Roles { add, remove } => Box::new(move |l| PushMsg::Roles {
                to: l.at,
                add: add.clone(),
                remove: remove.clone(),
            }),
            PushRequest::Kick { reason } => Box::new(move |l| PushMsg::Close {
                to: l.at,
                code: CLOSE_KICKED,
                reason: reason.clone(),
            }),
            other @ (PushRequest::Publish(_) | PushRequest::Broadcast(_)) => {
                unreachable!("a {kind:?} body parsed as {other:?}")
            }
        };
        let locs = self.hub.locate(target);
        if locs.is_empty() {
            let id = match target {
                Target::Session(id) | Target::Account(id) => id,
            };
            return error(404, format!("unknown {what}: no open connection of {id:?}"));
        }
        for &l in &locs {
            self.hub.post(l.shard, msg(l));
        }
        answer(202, json!({ "connections": locs.len() }))
    }

    /// `GET /v1/sessions/{id}`: what each shard holding one of its connections says.
    fn inspect(&self, id: &str) -> Answer {
        let locs = self.hub.locate(Target::Session(id));
        let mut waiting = Vec::new();
        for l in locs {
            let (tx, rx) = sync_channel::<Option<SessionInfo>>(1);
            self.hub.post(
                l.shard,
                PushMsg::Inspect {
                    to: l.at,
                    reply: tx,
                },
            );
            waiting.push(rx);
        }
        let deadline = Instant::now() + INSPECT_WAIT;
        let mut found = Vec::new();
        for rx in waiting {
            let left = deadline.saturating_duration_since(Instant::now());
            if let Ok(Some(info)) = rx.recv_timeout(left) {
                found.push(info);
            }
        }
        if found.is_empty() {
            return error(
                404,
                format!("unknown session: no open connection of {id:?}"),
            );
        }
        answer(200, json!({ "session_id": id, "connections": found }))
    }
}

/// Constant-time comparison of `Authorization: Bearer <token>` with the token.
fn authorized(header: Option<&str>, token: &str) -> bool {
    let Some(given) = header.and_then(|h| {
        h.strip_prefix("Bearer ")
            .or_else(|| h.strip_prefix("bearer "))
    }) else {
        return false;
    };
    let (a, b) = (given.trim().as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_bearer_token_is_accepted() {
        assert!(authorized(Some("Bearer s3cret"), "s3cret"));
        assert!(!authorized(Some("Bearer s3cre"), "s3cret"));
        assert!(!authorized(Some("s3cret"), "s3cret"));
        assert!(!authorized(None, "s3cret"));
    }

    #[test]
    fn a_wrong_field_is_a_400_naming_it_and_a_wrong_body_a_400_without_one() {
        let a = refused(
            PushRequest::from_json(BodyKind::PublishBatch, &json!({"items": [{"payload": 1}]}))
                .unwrap_err(),
        );
        assert_eq!(a.status, 400);
        assert_eq!(a.body["field"], "items[0].topic");
        assert_eq!(a.body["error"], "items[0].topic: required, a string");
        let a = refused(json_object(b"[]").unwrap_err());
        assert_eq!(a.status, 400);
        assert_eq!(a.body["error"], "the body must be a JSON object");
        assert!(a.body.get("field").is_none());
    }
}
