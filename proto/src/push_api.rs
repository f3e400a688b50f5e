//! The push API's request parsing (docs/DESIGN.md §5): a `POST /v1/...` body, as
//! bytes, to the typed request its route takes, or to an error naming what was wrong
//! (the field, for a 400 with `"field"`); and the `%XX` decoding of a path segment.
//!
//! Why here and not in `ringgate::admin::push_api`: parsing a body needs nothing but
//! `serde_json` and `base64`, no hub, socket or thread, and untrusted bytes deserve a
//! fuzzer (`fuzz/fuzz_targets/push_api_body.rs`), which builds `ringgate-proto` alone.
//! The admin side keeps the routing, the answers and the posting to the shards.

use base64::Engine;
use serde_json::Value;

pub use crate::link::{
    MAX_CLOSE_REASON as MAX_REASON_BYTES, MAX_KEY as MAX_KEY_BYTES, MAX_TOPIC as MAX_TOPIC_BYTES,
};

/// What a `POST` route's body must hold (the route decides which, the body is then
/// checked for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BodyKind {
    /// `/v1/publish`: `topic`, optional `key`, a payload.
    Publish,
    /// `/v1/publish/batch`: `items`, an array of publishes (all checked before any is
    /// sent).
    PublishBatch,
    /// `/v1/broadcast`: a payload.
    Broadcast,
    /// `/v1/sessions/{id}/push`, `/v1/users/{id}/push`: a payload.
    Push,
    /// `/v1/sessions/{id}/subscribe`: `topics`.
    Subscribe,
    /// `/v1/sessions/{id}/unsubscribe`: `topics`.
    Unsubscribe,
    /// `/v1/sessions/{id}/roles`: `add` and/or `remove`.
    Roles,
    /// `/v1/sessions/{id}/kick`: optional `reason`.
    Kick,
}

impl BodyKind {
    /// Every kind (for tests and the fuzz target).
    pub const ALL: [BodyKind; 8] = [
        BodyKind::Publish,
        BodyKind::PublishBatch,
        BodyKind::Broadcast,
        BodyKind::Push,
        BodyKind::Subscribe,
        BodyKind::Unsubscribe,
        BodyKind::Roles,
        BodyKind::Kick,
    ];

    /// The kind of `/v1/sessions/{id}/{action}`, if the action is one.
    pub fn session_action(action: &str) -> Option<BodyKind> {
        Some(match action {
            "push" => BodyKind::Push,
            "subscribe" => BodyKind::Subscribe,
            "unsubscribe" => BodyKind::Unsubscribe,
            "roles" => BodyKind::Roles,
            "kick" => BodyKind::Kick,
            _ => return None,
        })
    }
}

/// A message's bytes: `payload` (any JSON, sent as its compact text) or
/// `payload_base64` (binary).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    pub bytes: Vec<u8>,
    pub binary: bool,
}

/// One publish: a topic of 1 to [`MAX_TOPIC_BYTES`] bytes, a conflation key of at most
/// [`MAX_KEY_BYTES`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub topic: String,
    pub key: Option<String>,
    pub payload: Payload,
}

/// A checked body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushRequest {
    /// [`BodyKind::Publish`] (one) or [`BodyKind::PublishBatch`] (the items, in order).
    Publish(Vec<Publish>),
    Broadcast(Payload),
    Push(Payload),
    /// `on`: subscribe (true) or unsubscribe. Topics are non-empty strings of 1 to
    /// [`MAX_TOPIC_BYTES`] bytes; there is at least one.
    Subscribe {
        topics: Vec<String>,
        on: bool,
    },
    /// Non-empty role names; at least one in `add` or `remove`.
    Roles {
        add: Vec<String>,
        remove: Vec<String>,
    },
    /// The close reason: at most [`MAX_REASON_BYTES`] bytes, "kicked" when none is
    /// given.
    Kick {
        reason: String,
    },
}

/// Why a body was refused (every one is a 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    #[error("the body must be a JSON object")]
    NotObject,
    /// `field` is the path the client wrote: `topic`, `items[2].payload`, ...
    #[error("{field}: {why}")]
    Field { field: String, why: String },
}

fn bad_field(field: &str, why: &str) -> BodyError {
    BodyError::Field {
        field: field.to_string(),
        why: why.to_string(),
    }
}

/// The body of a `kind` route, checked.
pub fn parse_body(kind: BodyKind, body: &[u8]) -> Result<PushRequest, BodyError> {
    PushRequest::from_json(kind, &json_object(body)?)
}

/// A body as the JSON object every `POST` route takes (checked before the route is:
/// a route that does not exist answers 404 only for a JSON object).
pub fn json_object(body: &[u8]) -> Result<Value, BodyError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| BodyError::NotJson(e.to_string()))?;
    if v.is_object() {
        Ok(v)
    } else {
        Err(BodyError::NotObject)
    }
}

impl PushRequest {
    /// Checks a JSON body for a `kind` route; the first wrong field is named.
    pub fn from_json(kind: BodyKind, body: &Value) -> Result<PushRequest, BodyError> {
        let same = |f: &str| f.to_string();
        Ok(match kind {
            BodyKind::Publish => PushRequest::Publish(vec![publish(body, &same)?]),
            BodyKind::PublishBatch => match body.get("items").and_then(Value::as_array) {
                Some(items) => PushRequest::Publish(
                    items
                        .iter()
                        .enumerate()
                        .map(|(i, item)| publish(item, &|f: &str| format!("items[{i}].{f}")))
                        .collect::<Result<_, _>>()?,
                ),
                None => return Err(bad_field("items", "must be an array of publishes")),
            },
            BodyKind::Broadcast => PushRequest::Broadcast(payload(body, &same)?),
            BodyKind::Push => PushRequest::Push(payload(body, &same)?),
            BodyKind::Subscribe | BodyKind::Unsubscribe => {
                let topics = strings(body, "topics")?;
                if let Some(t) = topics
                    .iter()
                    .find(|t| t.is_empty() || t.len() > MAX_TOPIC_BYTES)
                {
                    return Err(bad_field(
                        "topics",
                        &format!("{t:?}: a topic is 1 to 255 bytes"),
                    ));
                }
                PushRequest::Subscribe {
                    topics,
                    on: kind == BodyKind::Subscribe,
                }
            }
            BodyKind::Roles => {
                let add = optional_strings(body, "add")?;
                let remove = optional_strings(body, "remove")?;
                if add.is_empty() && remove.is_empty() {
                    return Err(bad_field("add", "add or remove at least one role"));
                }
                PushRequest::Roles { add, remove }
            }
            BodyKind::Kick => PushRequest::Kick {
                reason: match body.get("reason") {
                    None | Some(Value::Null) => "kicked".to_string(),
                    Some(Value::String(r)) if r.len() <= MAX_REASON_BYTES => r.clone(),
                    Some(_) => return Err(bad_field("reason", "a string of at most 123 bytes")),
                },
            },
        })
    }
}

/// One publish; `at` turns a field name into the path the client wrote.
fn publish(item: &Value, at: &dyn Fn(&str) -> String) -> Result<Publish, BodyError> {
    let Some(topic) = item.get("topic").and_then(Value::as_str) else {
        return Err(bad_field(&at("topic"), "required, a string"));
    };
    if topic.is_empty() || topic.len() > MAX_TOPIC_BYTES {
        return Err(bad_field(&at("topic"), "1 to 255 bytes"));
    }
    let key = match item.get("key") {
        None | Some(Value::Null) => None,
        Some(Value::String(k)) if k.len() <= MAX_KEY_BYTES => Some(k.clone()),
        Some(_) => return Err(bad_field(&at("key"), "a string of at most 255 bytes")),
    };
    Ok(Publish {
        topic: topic.to_string(),
        key,
        payload: payload(item, at)?,
    })
}

/// `payload` (any JSON, sent as its compact text) or `payload_base64` (binary).
fn payload(v: &Value, at: &dyn Fn(&str) -> String) -> Result<Payload, BodyError> {
    match (v.get("payload"), v.get("payload_base64")) {
        (Some(_), Some(_)) => Err(bad_field(
            &at("payload"),
            "give payload or payload_base64, not both",
        )),
        (Some(p), None) => Ok(Payload {
            bytes: serde_json::to_vec(p).expect("a Value serializes"),
            binary: false,
        }),
        (None, Some(Value::String(b))) => base64::engine::general_purpose::STANDARD
            .decode(b)
            .map(|bytes| Payload {
                bytes,
                binary: true,
            })
            .map_err(|e| bad_field(&at("payload_base64"), &format!("not base64: {e}"))),
        (None, Some(_)) => Err(bad_field(&at("payload_base64"), "must be a base64 string")),
        (None, None) => Err(bad_field(
            &at("payload"),
            "required (or payload_base64 for binary)",
        )),
    }
}

fn strings(v: &Value, field: &str) -> Result<Vec<String>, BodyError> {
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

fn optional_strings(v: &Value, field: &str) -> Result<Vec<String>, BodyError> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) if a.is_empty() => Ok(Vec::new()),
        Some(_) => strings(v, field),
    }
}

/// Decodes `%XX` escapes in a path segment (a session id may hold any character); a
/// `%` not followed by two hex digits stays as it is, and bytes that are not UTF-8
/// after decoding become U+FFFD.
pub fn percent_decode(s: &str) -> String {
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

    fn field_of(kind: BodyKind, body: &str) -> String {
        match parse_body(kind, body.as_bytes()) {
            Err(BodyError::Field { field, .. }) => field,
            other => panic!("{kind:?} {body}: {other:?}"),
        }
    }

    #[test]
    fn a_body_must_be_a_json_object() {
        for kind in BodyKind::ALL {
            assert!(matches!(
                parse_body(kind, b"{\"topic\":"),
                Err(BodyError::NotJson(_))
            ));
            assert!(matches!(parse_body(kind, b""), Err(BodyError::NotJson(_))));
            assert_eq!(parse_body(kind, b"[1]"), Err(BodyError::NotObject));
            assert_eq!(parse_body(kind, b"null"), Err(BodyError::NotObject));
        }
        let e = parse_body(BodyKind::Push, b"nope").unwrap_err();
        assert!(e.to_string().starts_with("the body is not JSON: "), "{e}");
    }

    #[test]
    fn a_json_payloads_numbers_reach_clients_as_the_same_numbers() {
        // serde_json's default float parsing is approximate; with `float_roundtrip`
        // the re-encoded payload holds the very number the service sent.
        for n in [
            "0.30000000000000004",
            "1.7976931348623157e308",
            "2.2250738585072014e-308",
            "123456789.12345679",
        ] {
            let body = format!("{{\"payload\": {{\"x\": {n}}}}}");
            let Ok(PushRequest::Push(p)) = parse_body(BodyKind::Push, body.as_bytes()) else {
                panic!("{body}");
            };
            let back: Value = serde_json::from_slice(&p.bytes).unwrap();
            let want: f64 = n.parse().unwrap();
            assert_eq!(
                back["x"].as_f64(),
                Some(want),
                "{n} -> {}",
                String::from_utf8_lossy(&p.bytes)
            );
        }
    }

    #[test]
    fn a_payload_is_json_or_base64_never_both_and_errors_name_the_field() {
        assert_eq!(
            parse_body(BodyKind::Push, br#"{"payload": {"a": 1}}"#),
            Ok(PushRequest::Push(Payload {
                bytes: b"{\"a\":1}".to_vec(),
                binary: false
            }))
        );
        assert_eq!(
            parse_body(BodyKind::Broadcast, br#"{"payload_base64": "AAE="}"#),
            Ok(PushRequest::Broadcast(Payload {
                bytes: vec![0, 1],
                binary: true
            }))
        );
        assert_eq!(
            field_of(
                BodyKind::Push,
                r#"{"payload": 1, "payload_base64": "AA=="}"#
            ),
            "payload"
        );
        assert_eq!(field_of(BodyKind::Push, "{}"), "payload");
        assert_eq!(
            field_of(BodyKind::Push, r#"{"payload_base64": "not base64!"}"#),
            "payload_base64"
        );
        assert_eq!(
            field_of(BodyKind::Push, r#"{"payload_base64": 7}"#),
            "payload_base64"
        );
        // A JSON null is a payload like any other.
        assert_eq!(
            parse_body(BodyKind::Push, br#"{"payload": null}"#),
            Ok(PushRequest::Push(Payload {
                bytes: b"null".to_vec(),
                binary: false
            }))
        );
    }

    #[test]
    fn a_publish_needs_a_topic_of_1_to_255_bytes_and_a_key_of_at_most_255() {
        assert_eq!(
            parse_body(
                BodyKind::Publish,
                br#"{"topic": "t", "key": "k", "payload": 1}"#
            ),
            Ok(PushRequest::Publish(vec![Publish {
                topic: "t".into(),
                key: Some("k".into()),
                payload: Payload {
                    bytes: b"1".to_vec(),
                    binary: false
                },
            }]))
        );
        assert_eq!(field_of(BodyKind::Publish, r#"{"payload": 1}"#), "topic");
        assert_eq!(
            field_of(BodyKind::Publish, r#"{"topic": "", "payload": 1}"#),
            "topic"
        );
        let long = "x".repeat(MAX_TOPIC_BYTES + 1);
        assert_eq!(
            field_of(
                BodyKind::Publish,
                &format!(r#"{{"topic": "{long}", "payload": 1}}"#)
            ),
            "topic"
        );
        assert_eq!(
            field_of(
                BodyKind::Publish,
                &format!(r#"{{"topic": "t", "key": "{long}", "payload": 1}}"#)
            ),
            "key"
        );
        assert_eq!(
            field_of(
                BodyKind::Publish,
                r#"{"topic": "t", "key": 1, "payload": 1}"#
            ),
            "key"
        );
        assert_eq!(field_of(BodyKind::Publish, r#"{"topic": "t"}"#), "payload");
        let longest = "x".repeat(MAX_TOPIC_BYTES);
        assert!(parse_body(
            BodyKind::Publish,
            format!(r#"{{"topic": "{longest}", "key": "{longest}", "payload": 1}}"#).as_bytes()
        )
        .is_ok());
    }

    #[test]
    fn a_batch_names_the_first_wrong_item_by_its_index() {
        assert_eq!(
            field_of(
                BodyKind::PublishBatch,
                r#"{"items": [{"topic": "t", "payload": 1}, {"payload": 2}]}"#
            ),
            "items[1].topic"
        );
        assert_eq!(
            field_of(
                BodyKind::PublishBatch,
                r#"{"items": [{"topic": "t"}, {"payload": 2}]}"#
            ),
            "items[0].payload"
        );
        assert_eq!(
            field_of(BodyKind::PublishBatch, r#"{"items": {}}"#),
            "items"
        );
        assert_eq!(field_of(BodyKind::PublishBatch, "{}"), "items");
        assert_eq!(
            parse_body(BodyKind::PublishBatch, br#"{"items": []}"#),
            Ok(PushRequest::Publish(Vec::new()))
        );
        let e = parse_body(BodyKind::PublishBatch, br#"{"items": [{"topic": 1}]}"#).unwrap_err();
        assert_eq!(e.to_string(), "items[0].topic: required, a string");
    }

    #[test]
    fn subscribe_and_unsubscribe_need_non_empty_topics_of_at_most_255_bytes() {
        assert_eq!(
            parse_body(BodyKind::Unsubscribe, br#"{"topics": ["a", "b"]}"#),
            Ok(PushRequest::Subscribe {
                topics: vec!["a".into(), "b".into()],
                on: false
            })
        );
        for bad in [
            "{}",
            r#"{"topics": []}"#,
            r#"{"topics": "a"}"#,
            r#"{"topics": ["a", ""]}"#,
            r#"{"topics": ["a", 1]}"#,
        ] {
            assert_eq!(field_of(BodyKind::Subscribe, bad), "topics", "{bad}");
        }
        let long = "x".repeat(MAX_TOPIC_BYTES + 1);
        assert_eq!(
            field_of(BodyKind::Subscribe, &format!(r#"{{"topics": ["{long}"]}}"#)),
            "topics"
        );
    }

    #[test]
    fn roles_need_at_least_one_name_to_add_or_remove() {
        assert_eq!(
            parse_body(BodyKind::Roles, br#"{"add": ["vip"], "remove": null}"#),
            Ok(PushRequest::Roles {
                add: vec!["vip".into()],
                remove: Vec::new()
            })
        );
        assert_eq!(field_of(BodyKind::Roles, "{}"), "add");
        assert_eq!(
            field_of(BodyKind::Roles, r#"{"add": [], "remove": []}"#),
            "add"
        );
        assert_eq!(field_of(BodyKind::Roles, r#"{"add": "vip"}"#), "add");
        assert_eq!(
            field_of(BodyKind::Roles, r#"{"add": ["a"], "remove": [""]}"#),
            "remove"
        );
    }

    #[test]
    fn a_kick_reason_defaults_to_kicked_and_is_at_most_123_bytes() {
        assert_eq!(
            parse_body(BodyKind::Kick, b"{}"),
            Ok(PushRequest::Kick {
                reason: "kicked".into()
            })
        );
        let longest = "r".repeat(MAX_REASON_BYTES);
        assert_eq!(
            parse_body(
                BodyKind::Kick,
                format!(r#"{{"reason": "{longest}"}}"#).as_bytes()
            ),
            Ok(PushRequest::Kick { reason: longest })
        );
        let long = "r".repeat(MAX_REASON_BYTES + 1);
        assert_eq!(
            field_of(BodyKind::Kick, &format!(r#"{{"reason": "{long}"}}"#)),
            "reason"
        );
        assert_eq!(field_of(BodyKind::Kick, r#"{"reason": 4002}"#), "reason");
    }

    #[test]
    fn session_actions_map_to_their_body_kinds() {
        assert_eq!(BodyKind::session_action("push"), Some(BodyKind::Push));
        assert_eq!(BodyKind::session_action("kick"), Some(BodyKind::Kick));
        assert_eq!(BodyKind::session_action("publish"), None);
    }

    #[test]
    fn path_segments_are_percent_decoded() {
        assert_eq!(percent_decode("a%2Fb%20c"), "a/b c");
        assert_eq!(percent_decode("50%"), "50%");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%41"), "A");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("é%é"), "é%é", "never cuts a character");
        assert_eq!(percent_decode("%ff"), "\u{fffd}");
    }
}
