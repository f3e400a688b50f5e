//! The link's upgrade as a link backend sees it (docs/LINK.md, "Connection"): the
//! subprotocol `ringgate-link.v1` must be offered and is selected in the 101; anything
//! else is refused with 400 and a line on stderr saying why. Also the dialing gateway as
//! log lines name it ([`Peer`]: its address and its `X-Ringgate-Shard`).
//!
//! Why it exists: every built-in link backend (the echo, the NPC world) accepts the link
//! the same way; the servers may not import each other, so the shared part lives here.

use std::fmt;
use std::net::SocketAddr;

use bytes::Bytes;
use ringgate::proto::handshake::{self, UpgradeRequest, BEARER_PROTOCOL_PREFIX};
use ringgate::proto::link::SUBPROTOCOL;

/// The header ringgate names the dialing shard with.
pub(super) const SHARD_HEADER: &str = "X-Ringgate-Shard";

/// The dialing gateway as the log lines name it.
pub(super) struct Peer {
    pub(super) addr: Option<SocketAddr>,
    pub(super) shard: Option<String>,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            Some(a) => write!(f, "{a}")?,
            None => f.write_str("?")?,
        }
        match &self.shard {
            Some(s) => write!(f, " (shard {s})"),
            None => Ok(()),
        }
    }
}

/// Accepts a link upgrade for the backend `who` (its name in log lines): the dialing
/// peer and the 101 selecting the link subprotocol, or the 400 to send back (logged).
pub(super) fn accept_link(
    who: &str,
    req: &UpgradeRequest,
    head: &[u8],
    peer: Option<SocketAddr>,
) -> Result<(Peer, Bytes), Bytes> {
    let from = Peer {
        addr: peer,
        shard: header(head, SHARD_HEADER).map(str::to_owned),
    };
    if !req.protocols.iter().any(|p| p == SUBPROTOCOL) {
        eprintln!(
            "{who}: refused an upgrade from {from}: Sec-WebSocket-Protocol does not \
             offer {SUBPROTOCOL} (offered: {:?})",
            offered(req)
        );
        return Err(handshake::error_response(
            400,
            &format!("Sec-WebSocket-Protocol must offer {SUBPROTOCOL}"),
        ));
    }
    // `switching_protocols` selects the first offered protocol; make it this one.
    let selected = UpgradeRequest {
        protocols: vec![SUBPROTOCOL.to_owned()],
        token_protocol: None,
        ..req.clone()
    };
    eprintln!("{who}: link up from {from}");
    Ok((from, handshake::switching_protocols(&selected)))
}

/// The offered subprotocols fit for a log line (token-carrying `bearer.` entries left out).
fn offered(req: &UpgradeRequest) -> Vec<&str> {
    req.protocols
        .iter()
        .filter(|p| {
            !p.get(..BEARER_PROTOCOL_PREFIX.len())
                .is_some_and(|s| s.eq_ignore_ascii_case(BEARER_PROTOCOL_PREFIX))
        })
        .map(String::as_str)
        .collect()
}

/// A header's value in a complete request head (which `parse_upgrade` has accepted).
fn header<'h>(head: &'h [u8], name: &str) -> Option<&'h str> {
    let mut headers = [httparse::EMPTY_HEADER; handshake::MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    req.parse(head).ok()?;
    let value = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))?
        .value;
    std::str::from_utf8(value).ok().map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shard_header_names_the_link_in_log_lines() {
        let head = format!(
            "GET /link HTTP/1.1\r\nHost: h\r\nX-Ringgate-Shard: 3\r\n\
             Sec-WebSocket-Protocol: {SUBPROTOCOL}\r\n\r\n"
        );
        assert_eq!(header(head.as_bytes(), SHARD_HEADER), Some("3"));
        assert_eq!(header(head.as_bytes(), "X-Missing"), None);
        let peer = Peer {
            addr: Some("127.0.0.1:9".parse().unwrap()),
            shard: Some("3".into()),
        };
        assert_eq!(peer.to_string(), "127.0.0.1:9 (shard 3)");
    }
}
