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

use base64::Engine;
use serde_json::{json, Value};

use crate::push::frame::push_frame;
use crate::push::{Hub, Loc, PublishError, PushMsg, SessionInfo, Target};
use crate::session::CLOSE_KICKED;

use super::http::Request;

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

fn bad_field(field: &str, why: &str) -> Answer {
    answer(
        400,
        json!({ "error": format!("{field}: {why}"), "field": field }),
    )
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
            ("POST", rest) => match json_body(&req.body) {
                Ok(body) => self.post(rest, &body),
                Err(a) => a,
            },
            (_, ["v1", ..]) if req.method != "POST" => error(405, "use POST"),
            _ => error(404, format!("no such route: {}", req.path)),
        }
    }

    fn post(&self, route: &[&str], body: &Value) -> Answer {
        match route {
            ["v1", "publish"] => self.publish(std::slice::from_ref(body), ""),
            ["v1", "publish", "batch"] => match body.get("items").and_then(Value::as_array) {
                Some(items) => self.publish(items, "items"),
                None => bad_field("items", "must be an array of publishes"),
            },
            ["v1", "broadcast"] => {
                let (payload, binary) = match payload(body, &|f: &str| f.to_string()) {
                    Ok(p) => p,
                    Err(a) => return a,
                };
                match self.hub.broadcast(binary, &payload) {
                    Ok(shards) => answer(202, json!({ "shards": shards })),
                    Err(e) => error(503, e.to_string()),
                }
            }
            ["v1", "sessions", id, action] => {
                self.to_connections(Target::Session(id), action, body, "session")
            }
            ["v1", "users", id, "push"] => {
                self.to_connections(Target::Account(id), "push", body, "user")
            }
            _ => error(404, "no such route"),
        }
    }

    /// Publishes each item (all are checked before any is sent).
    fn publish(&self, items: &[Value], prefix: &str) -> Answer {
        let mut checked = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let at = |f: &str| {
                if prefix.is_empty() {
                    f.to_string()
                } else {
                    format!("{prefix}[{i}].{f}")
                }
            };
            let Some(topic) = item.get("topic").and_then(Value::as_str) else {
                return bad_field(&at("topic"), "required, a string");
            };
            if topic.is_empty() || topic.len() > crate::push::MAX_TOPIC_BYTES {
                return bad_field(&at("topic"), "1 to 255 bytes");
            }
            let key = match item.get("key") {
                None | Some(Value::Null) => None,
                Some(Value::String(k)) if k.len() <= crate::push::MAX_KEY_BYTES => Some(k.as_str()),
                Some(_) => return bad_field(&at("key"), "a string of at most 255 bytes"),
            };
            let (payload, binary) = match payload(item, &at) {
                Ok(p) => p,
                Err(a) => return a,
            };
            checked.push((topic, key, payload, binary));
        }
        let mut shards = 0;
        for (i, (topic, key, payload, binary)) in checked.into_iter().enumerate() {
            match self.hub.publish(topic, key, binary, &payload) {
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

    /// A route addressing every connection of a session or a user.
    fn to_connections(&self, target: Target<'_>, action: &str, body: &Value, what: &str) -> Answer {
        let msg: Box<dyn Fn(Loc) -> PushMsg> = match action {
            "push" => {
                let (payload, binary) = match payload(body, &|f: &str| f.to_string()) {
                    Ok(p) => p,
                    Err(a) => return a,
                };
                let frame = push_frame(self.hub.next_push_id(), binary, &payload);
                Box::new(move |l| PushMsg::Deliver {
                    to: l.at,
                    frame: frame.clone(),
                    then: None,
                })
            }
            "subscribe" | "unsubscribe" => {
                let topics = match strings(body, "topics") {
                    Ok(t) => t,
                    Err(a) => return a,
                };
                if let Some(t) = topics
                    .iter()
                    .find(|t| t.is_empty() || t.len() > crate::push::MAX_TOPIC_BYTES)
                {
                    return bad_field("topics", &format!("{t:?}: a topic is 1 to 255 bytes"));
                }
                let topics: Vec<Arc<str>> = topics.iter().map(|t| Arc::from(t.as_str())).collect();
                let on = action == "subscribe";
                Box::new(move |l| PushMsg::Subscribe {
                    to: l.at,
                    topics: topics.clone(),
                    on,
                })
            }
            "roles" => {
                let add = match optional_strings(body, "add") {
                    Ok(v) => v,
                    Err(a) => return a,
                };
                let remove = match optional_strings(body, "remove") {
                    Ok(v) => v,
                    Err(a) => return a,
                };
                if add.is_empty() && remove.is_empty() {
                    return bad_field("add", "add or remove at least one role");
                }
                Box::new(move |l| PushMsg::Roles {
                    to: l.at,
                    add: add.clone(),
                    remove: remove.clone(),
                })
            }
            "kick" => {
                let reason = match body.get("reason") {
                    None | Some(Value::Null) => "kicked".to_string(),
                    Some(Value::String(r)) if r.len() <= 123 => r.clone(),
                    Some(_) => return bad_field("reason", "a string of at most 123 bytes"),
                };
                Box::new(move |l| PushMsg::Close {
                    to: l.at,
                    code: CLOSE_KICKED,
                    reason: reason.clone(),
                })
            }
            _ => return error(404, format!("no such action: {action}")),
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

fn json_body(body: &[u8]) -> Result<Value, Answer> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| error(400, format!("the body is not JSON: {e}")))?;
    if v.is_object() {
        Ok(v)
    } else {
        Err(error(400, "the body must be a JSON object"))
    }
}

/// `payload` (any JSON, sent as its compact text) or `payload_base64` (binary).
fn payload(v: &Value, at: &dyn Fn(&str) -> String) -> Result<(Vec<u8>, bool), Answer> {
    match (v.get("payload"), v.get("payload_base64")) {
        (Some(_), Some(_)) => Err(bad_field(
            &at("payload"),
            "give payload or payload_base64, not both",
        )),
        (Some(p), None) => Ok((serde_json::to_vec(p).expect("a Value serializes"), false)),
        (None, Some(Value::String(b))) => base64::engine::general_purpose::STANDARD
            .decode(b)
            .map(|bytes| (bytes, true))
            .map_err(|e| bad_field(&at("payload_base64"), &format!("not base64: {e}"))),
        (None, Some(_)) => Err(bad_field(&at("payload_base64"), "must be a base64 string")),
        (None, None) => Err(bad_field(
            &at("payload"),
            "required (or payload_base64 for binary)",
        )),
    }
}

fn strings(v: &Value, field: &str) -> Result<Vec<String>, Answer> {
    match v.get(field) {
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|i| {
                i.as_str()
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .ok_or_else(|| bad_field(field, "must hold non-empty strings only"))
            })
            .collect(),
        _ => Err(bad_field(field, "required, a non-empty array of strings")),
    }
}

fn optional_strings(v: &Value, field: &str) -> Result<Vec<String>, Answer> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) if a.is_empty() => Ok(Vec::new()),
        Some(_) => strings(v, field),
    }
}

/// Decodes `%XX` escapes in a path segment (a session id may hold any character).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
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
    fn path_segments_are_percent_decoded() {
        assert_eq!(percent_decode("a%2Fb%20c"), "a/b c");
        assert_eq!(percent_decode("50%"), "50%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("é%é"), "é%é", "never cuts a character");
    }

    #[test]
    fn a_payload_is_json_or_base64_never_both_and_errors_name_the_field() {
        let id = |f: &str| f.to_string();
        assert_eq!(
            payload(&json!({"payload": {"a": 1}}), &id).unwrap(),
            (b"{\"a\":1}".to_vec(), false)
        );
        assert_eq!(
            payload(&json!({"payload_base64": "AAE="}), &id).unwrap(),
            (vec![0, 1], true)
        );
        let e = payload(&json!({"payload": 1, "payload_base64": "AA=="}), &id).unwrap_err();
        assert_eq!(e.status, 400);
        let e = payload(&json!({}), &|f: &str| format!("items[2].{f}")).unwrap_err();
        assert_eq!(e.body["field"], "items[2].payload");
    }
}
