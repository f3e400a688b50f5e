//! Opening a link: the HTTP/1.1 upgrade request ringgate sends to a link backend and
//! the check of the backend's answer (a `101` with the right accept key **and** the
//! `ringgate-link.v1` subprotocol). Apart from the message codec because it is the
//! one place the link speaks HTTP, and fails with its own error ([`UpgradeError`]).

use super::SUBPROTOCOL;

/// The upgrade request ringgate sends to open a link (`key`: the base64
/// `Sec-WebSocket-Key`; `host`: the URL's `host:port`).
pub fn upgrade_request(host: &str, path: &str, key: &str, shard: usize) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: {SUBPROTOCOL}\r\nX-Ringgate-Shard: {shard}\r\n\r\n"
    )
}

/// Why a backend's answer to the link upgrade was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpgradeError {
    #[error("malformed upgrade response: {0}")]
    Malformed(String),
    #[error("upgrade response head larger than {0} bytes")]
    TooLarge(usize),
    #[error("backend answered HTTP {0} instead of 101 Switching Protocols")]
    Status(u16),
    #[error("missing or wrong Sec-WebSocket-Accept")]
    BadAccept,
    #[error("backend did not select subprotocol {SUBPROTOCOL} (got {0:?})")]
    NoSubprotocol(Option<String>),
}

/// Largest upgrade response head accepted.
pub const MAX_UPGRADE_RESPONSE: usize = 8 * 1024;

/// Checks the backend's answer to [`upgrade_request`] in `buf`: `Ok(None)` while the
/// head is incomplete, `Ok(Some(n))` once a valid `101` head of `n` bytes is there
/// (frames may follow it in `buf`).
pub fn check_upgrade_response(buf: &[u8], key: &str) -> Result<Option<usize>, UpgradeError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let n = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_UPGRADE_RESPONSE => {
            return Err(UpgradeError::TooLarge(MAX_UPGRADE_RESPONSE))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(UpgradeError::Malformed(e.to_string())),
    };
    let status = resp.code.unwrap_or(0);
    if status != 101 {
        return Err(UpgradeError::Status(status));
    }
    let header = |name: &str| {
        resp.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let want = crate::handshake::accept_key(key);
    if header("sec-websocket-accept").map(<[u8]>::trim_ascii) != Some(want.as_bytes()) {
        return Err(UpgradeError::BadAccept);
    }
    match header("sec-websocket-protocol").map(<[u8]>::trim_ascii) {
        Some(p) if p == SUBPROTOCOL.as_bytes() => Ok(Some(n)),
        other => Err(UpgradeError::NoSubprotocol(
            other.map(|p| String::from_utf8_lossy(p).into_owned()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
    const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

    #[test]
    fn the_upgrade_request_offers_the_link_subprotocol_and_names_the_shard() {
        let r = upgrade_request("127.0.0.1:5002", "/link", KEY, 3);
        assert!(r.starts_with("GET /link HTTP/1.1\r\nHost: 127.0.0.1:5002\r\n"));
        assert!(r.contains("\r\nSec-WebSocket-Protocol: ringgate-link.v1\r\n"));
        assert!(r.contains("\r\nX-Ringgate-Shard: 3\r\n"));
        assert!(r.ends_with("\r\n\r\n"));
    }

    #[test]
    fn a_101_with_accept_and_subprotocol_is_taken_and_frames_behind_it_are_left() {
        let head = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {ACCEPT}\r\nSec-WebSocket-Protocol: ringgate-link.v1\r\n\r\n"
        );
        let mut buf = head.clone().into_bytes();
        buf.extend_from_slice(&[0x82, 0]);
        assert_eq!(check_upgrade_response(&buf, KEY), Ok(Some(head.len())));
        assert_eq!(check_upgrade_response(&buf[..20], KEY), Ok(None));
    }

    #[test]
    fn an_upgrade_without_the_subprotocol_or_with_a_wrong_accept_is_refused() {
        let no_proto =
            format!("HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: {ACCEPT}\r\n\r\n");
        assert_eq!(
            check_upgrade_response(no_proto.as_bytes(), KEY),
            Err(UpgradeError::NoSubprotocol(None))
        );
        let bad = "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: x\r\n\
                   Sec-WebSocket-Protocol: ringgate-link.v1\r\n\r\n";
        assert_eq!(
            check_upgrade_response(bad.as_bytes(), KEY),
            Err(UpgradeError::BadAccept)
        );
        assert_eq!(
            check_upgrade_response(b"HTTP/1.1 404 Not Found\r\n\r\n", KEY),
            Err(UpgradeError::Status(404))
        );
        let mut endless = b"HTTP/1.1 101 Switching Protocols\r\nX-Pad: ".to_vec();
        endless.resize(MAX_UPGRADE_RESPONSE + 1, b'a');
        assert_eq!(
            check_upgrade_response(&endless, KEY),
            Err(UpgradeError::TooLarge(MAX_UPGRADE_RESPONSE))
        );
        assert!(matches!(
            check_upgrade_response(b"\x00\x01garbage\r\n\r\n", KEY),
            Err(UpgradeError::Malformed(_))
        ));
    }
}
