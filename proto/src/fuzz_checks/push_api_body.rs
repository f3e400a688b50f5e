//! The fuzz check of the push API's request parsing (`ringgate_proto::push_api`,
//! which `ringgate::admin::push_api` calls): for every route's body kind, arbitrary
//! bytes must never panic `parse_body`; they give a typed request or a typed error.
//! The error says the body is not JSON (exactly when serde_json says so), not an object
//! (exactly when it is other JSON), or names a field the route takes, as the API's 400
//! does (`items[i].<field>` in a batch: the first wrong item, whose own publish fails
//! the same way, after items that all pass). An accepted request holds what the body
//! said, within the API's bounds (topics of 1 to 255 bytes, keys of at most 255, a
//! reason of at most 123, non-empty names, a JSON payload's compact text or a base64
//! payload's canonical bytes). Path segments go through `percent_decode` too: it never
//! panics, never grows a segment and leaves one without `%` as it is.
use crate::push_api::{
    parse_body, percent_decode, BodyError, BodyKind, Payload, Publish, PushRequest, MAX_KEY_BYTES,
    MAX_REASON_BYTES, MAX_TOPIC_BYTES,
};
use base64::Engine;
use serde_json::Value;

const PUBLISH_FIELDS: &[&str] = &["topic", "key", "payload", "payload_base64"];
const PAYLOAD_FIELDS: &[&str] = &["payload", "payload_base64"];

/// A payload holds the body's `payload` as compact JSON or its `payload_base64`'s bytes.
fn check_payload(p: &Payload, body: &Value) {
    if p.binary {
        assert!(body.get("payload").is_none());
        let given = body["payload_base64"].as_str().expect("a base64 string");
        assert_eq!(
            base64::engine::general_purpose::STANDARD.encode(&p.bytes),
            given
        );
    } else {
        assert!(body.get("payload_base64").is_none());
        let given = body.get("payload").expect("a payload");
        assert_eq!(p.bytes, serde_json::to_vec(given).unwrap());
        // What clients get reads back as what was given (proto's serde_json has
        // `float_roundtrip`: floats are parsed exactly).
        assert_eq!(&serde_json::from_slice::<Value>(&p.bytes).unwrap(), given);
    }
}

fn check_publish(p: &Publish, item: &Value) {
    assert!((1..=MAX_TOPIC_BYTES).contains(&p.topic.len()));
    assert_eq!(item["topic"].as_str(), Some(p.topic.as_str()));
    match &p.key {
        Some(k) => {
            assert!(k.len() <= MAX_KEY_BYTES);
            assert_eq!(item["key"].as_str(), Some(k.as_str()));
        }
        None => assert!(item.get("key").is_none_or(Value::is_null)),
    }
    check_payload(&p.payload, item);
}

/// The strings an optional list held (none when absent, null or empty).
fn listed(body: &Value, field: &str) -> Vec<String> {
    match body.get(field) {
        Some(Value::Array(a)) => a
            .iter()
            .map(|s| s.as_str().expect("strings only").to_string())
            .collect(),
        None | Some(Value::Null) => Vec::new(),
        Some(other) => panic!("{field} accepted as {other}"),
    }
}

fn check_accepted(kind: BodyKind, body: &Value, req: &PushRequest) {
    match (kind, req) {
        (BodyKind::Publish, PushRequest::Publish(items)) => {
            assert_eq!(items.len(), 1);
            check_publish(&items[0], body);
        }
        (BodyKind::PublishBatch, PushRequest::Publish(items)) => {
            let given = body["items"].as_array().expect("items is an array");
            assert_eq!(items.len(), given.len());
            for (p, item) in items.iter().zip(given) {
                check_publish(p, item);
            }
        }
        (BodyKind::Broadcast, PushRequest::Broadcast(p))
        | (BodyKind::Push, PushRequest::Push(p)) => check_payload(p, body),
        (BodyKind::Subscribe | BodyKind::Unsubscribe, PushRequest::Subscribe { topics, on }) => {
            assert_eq!(*on, kind == BodyKind::Subscribe);
            assert!(!topics.is_empty());
            assert!(topics
                .iter()
                .all(|t| (1..=MAX_TOPIC_BYTES).contains(&t.len())));
            assert_eq!(*topics, listed(body, "topics"));
        }
        (BodyKind::Roles, PushRequest::Roles { add, remove }) => {
            assert!(!add.is_empty() || !remove.is_empty());
            assert!(add.iter().chain(remove).all(|r| !r.is_empty()));
            assert_eq!(*add, listed(body, "add"));
            assert_eq!(*remove, listed(body, "remove"));
        }
        (BodyKind::Kick, PushRequest::Kick { reason }) => {
            assert!(reason.len() <= MAX_REASON_BYTES);
            match body.get("reason") {
                None | Some(Value::Null) => assert_eq!(reason, "kicked"),
                Some(r) => assert_eq!(r.as_str(), Some(reason.as_str())),
            }
        }
        (kind, req) => panic!("a {kind:?} body parsed as {req:?}"),
    }
}

/// The field a refused body names is one its route takes, present when only a present
/// value can be wrong; a batch names its first wrong item.
fn check_field(kind: BodyKind, body: &Value, field: &str, why: &str) {
    let fields: &[&str] = match kind {
        BodyKind::Publish => PUBLISH_FIELDS,
        BodyKind::PublishBatch => {
            if field == "items" {
                assert!(!body["items"].is_array());
                return;
            }
            let rest = field.strip_prefix("items[").expect("items[i].<field>");
            let (i, name) = rest.split_once("].").expect("items[i].<field>");
            let i: usize = i.parse().expect("an index");
            let items = body["items"].as_array().expect("items is an array");
            assert!(i < items.len());
            assert!(PUBLISH_FIELDS.contains(&name));
            for item in &items[..i] {
                assert!(PushRequest::from_json(BodyKind::Publish, item).is_ok());
            }
            // The item on its own is refused for the same field and reason.
            assert_eq!(
                PushRequest::from_json(BodyKind::Publish, &items[i]),
                Err(BodyError::Field {
                    field: name.to_string(),
                    why: why.to_string()
                })
            );
            return;
        }
        BodyKind::Broadcast | BodyKind::Push => PAYLOAD_FIELDS,
        BodyKind::Subscribe | BodyKind::Unsubscribe => &["topics"],
        BodyKind::Roles => &["add", "remove"],
        BodyKind::Kick => &["reason"],
    };
    assert!(fields.contains(&field), "{kind:?}: {field}");
    if matches!(field, "key" | "payload_base64" | "reason" | "remove") {
        assert!(body.get(field).is_some(), "{kind:?}: {field} is absent");
    }
}

/// The check the fuzzer runs on every input (and `cargo test` on the committed corpus).
pub fn check(data: &[u8]) {
    let Some((&ctl, body)) = data.split_first() else {
        return;
    };
    let kind = BodyKind::ALL[usize::from(ctl) % BodyKind::ALL.len()];
    let json = serde_json::from_slice::<Value>(body);
    let got = parse_body(kind, body);
    match &got {
        Ok(req) => {
            let v = json.as_ref().expect("accepted bytes are JSON");
            assert!(v.is_object());
            check_accepted(kind, v, req);
        }
        Err(BodyError::NotJson(why)) => {
            assert!(json.is_err());
            assert!(!why.is_empty());
        }
        Err(BodyError::NotObject) => {
            assert!(!json.as_ref().expect("other JSON").is_object())
        }
        Err(e @ BodyError::Field { field, why }) => {
            let v = json.as_ref().expect("a field of JSON");
            assert!(v.is_object());
            assert!(!why.is_empty());
            assert_eq!(e.to_string(), format!("{field}: {why}"));
            check_field(kind, v, field, why);
        }
    }

    // The same body as the one item of a batch: accepted alike, or refused naming
    // `items[0].<the same field>`.
    if kind == BodyKind::Publish {
        if let Ok(v) = &json {
            if v.is_object() {
                let batch = serde_json::json!({ "items": [v] });
                let in_batch = PushRequest::from_json(BodyKind::PublishBatch, &batch);
                match (&got, in_batch) {
                    (Ok(one), Ok(all)) => assert_eq!(*one, all),
                    (
                        Err(BodyError::Field { field, why }),
                        Err(BodyError::Field { field: f2, why: w2 }),
                    ) => {
                        assert_eq!(f2, format!("items[0].{field}"));
                        assert_eq!(*why, w2);
                    }
                    (one, all) => panic!("alone {one:?}, in a batch {all:?}"),
                }
            }
        }
    }

    // A path segment.
    if let Ok(s) = std::str::from_utf8(body) {
        let d = percent_decode(s);
        assert!(d.len() <= s.len());
        if !s.contains('%') {
            assert_eq!(d, s);
        }
    }
}
