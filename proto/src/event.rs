//! Server push events as Bannou's SDKs read them: the capability manifest (and later the
//! disconnect notice and other gateway events), JSON in a 31-byte push header.
//!
//! Why here and sans-IO: the JSON shape is protocol (field names and casing follow
//! Bannou's System.Text.Json output: camelCase, nulls omitted, ISO 8601 timestamps with
//! an explicit offset), and building it needs only values the caller passes in — the
//! clock reading, the event id and the session's GUIDs.

use serde::Serialize;

use super::bannou::RequestHeader;
use super::guid::format_guid;

/// Event name of the capability manifest.
pub const MANIFEST_EVENT: &str = "connect.capability-manifest";
/// Event name of the disconnect notice.
pub const DISCONNECT_EVENT: &str = "connect.disconnect-notification";

/// One callable endpoint as the manifest lists it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ApiEntry {
    /// The session's salted GUID for the endpoint, canonical string form.
    pub service_id: String,
    /// The endpoint path, e.g. `/account/get` (SDKs key endpoints by it).
    pub endpoint: String,
    /// The owning service's name.
    pub service: String,
}

impl ApiEntry {
    /// An entry for `guid` (bytes in RFC 4122 order).
    pub fn new(guid: &[u8; 16], endpoint: &str, service: &str) -> ApiEntry {
        ApiEntry {
            service_id: format_guid(guid),
            endpoint: endpoint.to_string(),
            service: service.to_string(),
        }
    }
}

/// The capability manifest event.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest<'a> {
    pub event_name: &'static str,
    pub session_id: &'a str,
    pub available_apis: &'a [ApiEntry],
    /// Increases on every change of this session's manifest.
    pub version: u64,
    pub reason: &'a str,
    pub event_id: String,
    pub timestamp: String,
    /// The GUID other clients address this connection by (peer-to-peer, flag 0x20).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_guid: Option<String>,
    /// What resumes this session after a drop (`Authorization: Reconnect <token>`),
    /// single-use; a new one comes with every manifest of the next connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reconnection_token: Option<String>,
    /// On a resume: how many events that arrived while the client was away were
    /// dropped (the oldest, past the session's buffer); absent when none were.
    #[serde(skip_serializing_if = "is_zero")]
    pub events_lost: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The disconnect notice sent before a server-initiated close (`reconnectable: false`
/// when the client should not come back with what it has: its token expired).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DisconnectNotice<'a> {
    pub event_name: &'static str,
    /// The token that resumes the session (absent when it cannot be resumed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reconnection_token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    pub reconnectable: bool,
    pub reason: &'a str,
    pub event_id: String,
    pub timestamp: String,
}

/// Encodes a push: the 31-byte push header followed by `json`.
pub fn encode_push(message_id: u64, json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(super::bannou::REQUEST_HEADER_LEN + json.len());
    out.extend_from_slice(&RequestHeader::push(message_id).encode());
    out.extend_from_slice(json);
    out
}

/// The manifest's JSON (the push payload; the gateway frames it with its push header
/// once, `push::frame::push_frame`).
pub fn manifest_json(manifest: &Manifest<'_>) -> Vec<u8> {
    serde_json::to_vec(manifest).expect("manifest serializes")
}

impl<'a> Manifest<'a> {
    /// A manifest of `apis` (event id and time given: this crate reads no clock).
    pub fn new(
        session_id: &'a str,
        available_apis: &'a [ApiEntry],
        version: u64,
        reason: &'a str,
        event_id: &[u8; 16],
        now_unix_nanos: u128,
    ) -> Manifest<'a> {
        Manifest {
            event_name: MANIFEST_EVENT,
            session_id,
            available_apis,
            version,
            reason,
            event_id: format_guid(event_id),
            timestamp: iso8601_utc(now_unix_nanos),
            peer_guid: None,
            reconnection_token: None,
            events_lost: 0,
        }
    }
}

/// Event name of a backend failure notice to admin sessions (Bannou's).
pub const SERVICE_ERROR_EVENT: &str = "service_error";

/// A backend failure, told to sessions with an admin role (Bannou's field names).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceError<'a> {
    pub event_name: &'static str,
    pub event_id: String,
    pub timestamp: String,
    /// A stable UUID of the failing service.
    pub service_id: String,
    /// The gateway instance reporting it.
    pub app_id: &'a str,
    /// What was being done: the endpoint call.
    pub operation: &'a str,
    /// The kind of failure (`timeout`, `unreachable`, `link_down`, …).
    pub error_type: &'a str,
    pub message: &'a str,
    /// `info`, `warning`, `error` or `critical`.
    pub severity: &'a str,
    /// The failing dependency: the service's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dependency: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<&'a str>,
}

/// Builds a JSON push message (header + `event` serialized).
pub fn event_message<T: Serialize>(message_id: u64, event: &T) -> Vec<u8> {
    let json = serde_json::to_vec(event).expect("events serialize");
    encode_push(message_id, &json)
}

/// What a disconnect notice says about resuming: the token and until when (Unix
/// nanoseconds) it is good.
#[derive(Debug, Clone, Copy)]
pub struct Resumable<'a> {
    pub token: &'a str,
    pub until_unix_nanos: u128,
}

/// Builds the disconnect notice push message (header + JSON), sent before a
/// server-initiated close; `resume`: how the client may resume the session (`None`:
/// it may reconnect, but starts a new session); `reconnectable`: whether it should
/// reconnect at all (not with the credentials it has: its token expired).
pub fn disconnect_message(
    message_id: u64,
    reason: &str,
    resume: Option<Resumable<'_>>,
    reconnectable: bool,
    event_id: &[u8; 16],
    now_unix_nanos: u128,
) -> Vec<u8> {
    let n = DisconnectNotice {
        event_name: DISCONNECT_EVENT,
        reconnection_token: resume.map(|r| r.token),
        expires_at: resume.map(|r| iso8601_utc(r.until_unix_nanos)),
        reconnectable,
        reason,
        event_id: format_guid(event_id),
        timestamp: iso8601_utc(now_unix_nanos),
    };
    let json = serde_json::to_vec(&n).expect("notice serializes");
    encode_push(message_id, &json)
}

/// A push message id as Bannou makes them: `(unix_ms << 16) | low 16 bits of a counter`.
pub fn push_message_id(now_unix_ms: u64, counter: u16) -> u64 {
    (now_unix_ms << 16) | counter as u64
}

/// Formats a UTC instant like .NET's round-trip `DateTimeOffset` format:
/// `2026-11-22T00:15:00.1234567+00:00`.
pub fn iso8601_utc(unix_nanos: u128) -> String {
    let secs = (unix_nanos / 1_000_000_000) as i64;
    let frac = (unix_nanos % 1_000_000_000) / 100; // 100 ns ticks, 7 digits
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:07}+00:00",
        tod / 3600,
        (tod % 3600) / 60,
        tod % 60
    )
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bannou::{ServerMessage, REQUEST_HEADER_LEN};

    #[test]
    fn timestamps_use_dotnet_round_trip_format() {
        assert_eq!(iso8601_utc(0), "1970-01-01T00:00:00.0000000+00:00");
        // 2026-11-22T00:15:00.1234567Z
        let t = 1_795_306_500u128 * 1_000_000_000 + 123_456_700;
        assert_eq!(iso8601_utc(t), "2026-11-22T00:15:00.1234567+00:00");
        // a leap day
        let leap = 1_709_164_800u128 * 1_000_000_000; // 2024-02-29T00:00:00Z
        assert_eq!(iso8601_utc(leap), "2024-02-29T00:00:00.0000000+00:00");
    }

    #[test]
    fn manifest_is_a_push_with_bannou_field_names() {
        let apis = vec![ApiEntry::new(&[0xab; 16], "/account/get", "account")];
        let msg = encode_push(
            77,
            &manifest_json(&Manifest::new("sess-1", &apis, 1, "initial", &[1; 16], 0)),
        );
        let (h, payload) = match ServerMessage::decode(&msg).unwrap() {
            ServerMessage::Push(h, p) => (h, p),
            other => panic!("{other:?}"),
        };
        assert_eq!(h.flags, 0x10);
        assert_eq!(h.channel, 0);
        assert_eq!(h.sequence, 0);
        assert_eq!(h.guid, [0; 16]);
        assert_eq!(h.message_id, 77);
        assert_eq!(payload.len(), msg.len() - REQUEST_HEADER_LEN);
        let v: serde_json::Value = serde_json::from_slice(payload).unwrap();
        assert_eq!(v["eventName"], "connect.capability-manifest");
        assert_eq!(v["sessionId"], "sess-1");
        assert_eq!(v["version"], 1);
        assert_eq!(v["reason"], "initial");
        assert_eq!(v["eventId"], "01010101-0101-0101-0101-010101010101");
        assert_eq!(v["timestamp"], "1970-01-01T00:00:00.0000000+00:00");
        let api = &v["availableApis"][0];
        assert_eq!(api["serviceId"], "abababab-abab-abab-abab-abababababab");
        assert_eq!(api["endpoint"], "/account/get");
        assert_eq!(api["service"], "account");
        assert_eq!(v["availableApis"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn push_message_ids_follow_bannous_scheme() {
        assert_eq!(push_message_id(1, 2), (1 << 16) | 2);
    }
}
