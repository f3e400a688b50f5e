//! Helpers for the push-plane tests (`tests/push.rs`, `tests/peers.rs`,
//! `tests/link_push.rs`): a keep-alive client of the push API on the admin listener,
//! clients placed on known shards, and waiting for pushes with a timeout.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::Bytes;
use ringgate::client::{Client, Incoming, Manifest};
use ringgate::proto::bannou::{RequestHeader, ResponseHeader};
use ringgate::Gateway;
use serde_json::Value;

use super::{connect, token, unix_now};

/// The `[admin] token` of the push-plane configs.
pub const ADMIN_TOKEN: &str = "push-api-test-token-0123456789";

/// A gateway config with two shards, broadcasts for role `admin`, the push API on, a
/// topic-endpoint service and, if given, `services` (more `[[services]]` text);
/// `extra_server` lines go into `[server]`, `extra_admin` into `[admin]`.
pub fn push_config_text(extra_server: &str, extra_admin: &str, services: &str) -> String {
    // Sessions end with their connections here (`place` closes the extra ones it
    // opens), unless a test asks for a reconnection window.
    let window = if extra_server.contains("reconnect_window_secs") {
        ""
    } else {
        "reconnect_window_secs = 0"
    };
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
path = "/connect"
shards = 2
admin_listen = "127.0.0.1:0"
max_message_bytes = 65536
shutdown_grace_ms = 1000
drain_window_ms = 400
broadcast_roles = ["admin"]
{window}
{extra_server}
[auth]
hs256_secret = "{secret}"
[admin]
token = "{ADMIN_TOKEN}"
{extra_admin}
[[services]]
name = "topics"
endpoints = [
  {{ path = "/t/watch", subscribe = "t" }},
  {{ path = "/t/pub", publish = "t" }},
  {{ path = "/t/pubkey", publish = "t", key = "session" }},
  {{ path = "/t/unwatch", unsubscribe = "t" }},
  {{ path = "/marker/watch", subscribe = "marker" }},
  {{ path = "/vip/watch", subscribe = "vip", roles = ["vip"] }},
]
{services}
"#,
        secret = super::SECRET
    )
}

/// Starts a gateway on [`push_config_text`].
pub fn push_gateway(extra_server: &str, extra_admin: &str, services: &str) -> Gateway {
    let text = push_config_text(extra_server, extra_admin, services);
    super::gateway(ringgate::Config::from_toml_str(&text, &[]).expect("push test config"))
}

/// A token for account `acct` with session id `sid` and `roles`, for an hour.
pub fn session_token(acct: &str, sid: &str, roles: &[&str]) -> String {
    token(acct, roles, Some(sid), unix_now() + 3600)
}

/// A push API client on one keep-alive connection.
pub struct Api {
    stream: TcpStream,
    buf: Vec<u8>,
    /// The bearer token sent (none: no `Authorization` header).
    pub token: Option<String>,
}

impl Api {
    pub fn new(addr: SocketAddr) -> Api {
        Self::with_token(addr, Some(ADMIN_TOKEN))
    }

    pub fn with_token(addr: SocketAddr, token: Option<&str>) -> Api {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_nodelay(true).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        Api {
            stream,
            buf: Vec::new(),
            token: token.map(str::to_string),
        }
    }

    /// One request on this connection; the status and the body as JSON (`Null` if it
    /// is not JSON).
    pub fn call(&mut self, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
        let auth = self
            .token
            .as_ref()
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let mut req = head.into_bytes();
        req.extend_from_slice(body);
        self.stream.write_all(&req).unwrap();
        self.read_response()
    }

    pub fn post(&mut self, path: &str, body: &Value) -> (u16, Value) {
        self.call("POST", path, body.to_string().as_bytes())
    }

    pub fn get(&mut self, path: &str) -> (u16, Value) {
        self.call("GET", path, b"")
    }

    fn read_response(&mut self) -> (u16, Value) {
        let mut chunk = [0u8; 16384];
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut r = httparse::Response::new(&mut headers);
            if let Ok(httparse::Status::Complete(n)) = r.parse(&self.buf) {
                let status = r.code.unwrap();
                let len = r
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .map(|h| {
                        std::str::from_utf8(h.value)
                            .unwrap()
                            .trim()
                            .parse()
                            .unwrap()
                    })
                    .unwrap_or(0usize);
                if self.buf.len() >= n + len {
                    let body = serde_json::from_slice(&self.buf[n..n + len]).unwrap_or(Value::Null);
                    self.buf.drain(..n + len);
                    return (status, body);
                }
            }
            match self.stream.read(&mut chunk) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Ok(0) | Err(_) => panic!(
                    "no complete push API response; got {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// `POST /v1/publish` of a JSON payload; asserts 202.
    pub fn publish(&mut self, topic: &str, key: Option<&str>, payload: &Value) {
        let mut body = serde_json::json!({ "topic": topic, "payload": payload });
        if let Some(k) = key {
            body["key"] = k.into();
        }
        let (status, answer) = self.post("/v1/publish", &body);
        assert_eq!(status, 202, "{answer}");
    }

    /// The shard holding session `sid` (its only connection).
    pub fn shard_of(&mut self, sid: &str) -> u16 {
        let (status, body) = self.get(&format!("/v1/sessions/{sid}"));
        assert_eq!(status, 200, "{body}");
        body["connections"][0]["shard"].as_u64().unwrap() as u16
    }

    /// The topics session `sid` is subscribed to (after every push message posted to
    /// its shard before this call was applied: the inspection queues behind them).
    pub fn topics_of(&mut self, sid: &str) -> Vec<String> {
        let (status, body) = self.get(&format!("/v1/sessions/{sid}"));
        assert_eq!(status, 200, "{body}");
        body["connections"][0]["topics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect()
    }
}

/// A connected client and what is known of it.
pub struct Placed {
    pub client: Client,
    pub manifest: Manifest,
    pub sid: String,
    pub shard: u16,
}

/// Connects clients (session ids `{prefix}-{i}`, account `acct`, `roles`) until `per_shard`
/// of them sit on each of the gateway's two shards, asking the push API where each
/// landed (the kernel spreads connections over the shards' listeners). Returns them
/// sorted by shard: `[shard 0 ..., shard 1 ...]`; extra ones are closed.
pub async fn place(
    g: &Gateway,
    api: &mut Api,
    prefix: &str,
    acct: &str,
    roles: &[&str],
    per_shard: usize,
) -> Vec<Placed> {
    let mut on: [Vec<Placed>; 2] = [Vec::new(), Vec::new()];
    for i in 0..200 {
        if on.iter().all(|v| v.len() >= per_shard) {
            break;
        }
        let sid = format!("{prefix}-{i}");
        let (client, manifest) = connect(g, &session_token(acct, &sid, roles)).await;
        let shard = api.shard_of(&sid);
        let slot = &mut on[shard as usize];
        if slot.len() < per_shard {
            slot.push(Placed {
                client,
                manifest,
                sid,
                shard,
            });
        } else {
            let mut c = client;
            let _ = c.close(1000).await;
        }
    }
    assert!(
        on.iter().all(|v| v.len() >= per_shard),
        "the kernel never put {per_shard} connections on each shard"
    );
    let [a, b] = on;
    a.into_iter().chain(b).collect()
}

/// Calls a topic (or any) endpoint of the manifest and asserts code 0.
pub async fn call_ok(c: &mut Client, m: &Manifest, endpoint: &str, payload: &[u8]) {
    let guid = m
        .guid(endpoint)
        .unwrap_or_else(|| panic!("{endpoint} not in the manifest"));
    let (h, _) = c.call(guid, payload).await.unwrap();
    assert_eq!(h.code, 0, "{endpoint} answered {}", h.code);
}

/// What a client receives, pings answered and skipped.
#[derive(Debug)]
pub enum Got {
    Push(RequestHeader, Bytes),
    Response(ResponseHeader, Bytes),
    Close(Option<(u16, String)>),
}

/// The next push, response or close within `within`; `None` if nothing came.
pub async fn next_within(c: &mut Client, within: Duration) -> Option<Got> {
    let deadline = std::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match monoio::time::timeout(left, c.next()).await {
            Err(_) => return None,
            Ok(Ok(Incoming::Push(h, p))) => return Some(Got::Push(h, p)),
            Ok(Ok(Incoming::Response(h, p))) => return Some(Got::Response(h, p)),
            Ok(Ok(Incoming::Close(c))) => return Some(Got::Close(c)),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("connection failed: {e}"),
        }
    }
}

/// The next push within 5 s (panics on anything else).
pub async fn push(c: &mut Client) -> (RequestHeader, Bytes) {
    match next_within(c, Duration::from_secs(5)).await {
        Some(Got::Push(h, p)) => (h, p),
        other => panic!("expected a push, got {other:?}"),
    }
}

/// The next push's payload as JSON.
pub async fn push_json(c: &mut Client) -> Value {
    let (_, p) = push(c).await;
    serde_json::from_slice(&p).unwrap_or_else(|_| panic!("not JSON: {p:?}"))
}

/// The next response within 5 s (panics on anything else).
pub async fn response(c: &mut Client) -> (ResponseHeader, Bytes) {
    match next_within(c, Duration::from_secs(5)).await {
        Some(Got::Response(h, p)) => (h, p),
        other => panic!("expected a response, got {other:?}"),
    }
}

/// The close frame within 5 s, skipping pushes (panics on anything else).
pub async fn close_frame(c: &mut Client) -> Option<(u16, String)> {
    loop {
        match next_within(c, Duration::from_secs(5)).await {
            Some(Got::Close(cl)) => return cl,
            Some(Got::Push(..)) => {}
            other => panic!("expected a close, got {other:?}"),
        }
    }
}

/// Asserts the next thing `c` receives is the marker push `{"marker": n}` (so nothing
/// sent to it before the marker came: pushes reach a shard's inbox, and a client's
/// outbox, in the order they were posted).
pub async fn expect_marker(c: &mut Client, n: u64, who: &str) {
    match next_within(c, Duration::from_secs(5)).await {
        Some(Got::Push(_, p)) => {
            let v: Value = serde_json::from_slice(&p).unwrap_or(Value::Null);
            assert_eq!(
                v,
                serde_json::json!({ "marker": n }),
                "{who} got something before the marker"
            );
        }
        other => panic!("{who}: expected the marker, got {other:?}"),
    }
}

/// The Prometheus sample `name` (summed over its label sets) from `/metrics`.
pub fn metric(g: &Gateway, name: &str) -> u64 {
    let text = g.metrics.render();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64)
        .sum()
}
