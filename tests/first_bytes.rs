//! The first bytes of a connection, on real sockets: the capability manifest waits for
//! the client's answer to the upgrade's ping (so it never lands in the same read as the
//! `101`, which Bannou's Node SDK mishandles), and bytes a client sends with its upgrade
//! request are decoded at once instead of waiting for its next packet.

mod common;

use std::time::{Duration, Instant};

use common::*;
use ringgate::proto::ws::{self, Message};

const MASK: Option<[u8; 4]> = Some([1, 2, 3, 4]);

#[test]
fn the_manifest_follows_the_clients_pong_and_never_arrives_with_the_101() {
    let backend = Backend::start();
    let g = gateway(config(&backend, "", ""));
    let mut c = RawClient::upgrade(g.addr, &user_token(&["user"]), b"");
    assert!(
        matches!(c.next(Duration::from_secs(2)), Some(Message::Ping(_))),
        "the 101 is followed by a ping"
    );
    assert!(
        c.next(Duration::from_millis(300)).is_none(),
        "nothing else until the client answers"
    );
    c.send(&ws::pong_frame(b"", MASK));
    let m = c
        .next(Duration::from_secs(2))
        .expect("the manifest after the pong");
    assert!(is_manifest(&m), "{m:?}");
}

#[test]
fn a_client_that_never_answers_the_ping_gets_the_manifest_one_to_three_seconds_later() {
    let backend = Backend::start();
    let g = gateway(config(&backend, "", ""));
    let start = Instant::now();
    let mut c = RawClient::upgrade(g.addr, &user_token(&["user"]), b"");
    assert!(matches!(
        c.next(Duration::from_secs(2)),
        Some(Message::Ping(_))
    ));
    let m = c.next(Duration::from_secs(3)).expect("the manifest, late");
    assert!(is_manifest(&m), "{m:?}");
    assert!(
        start.elapsed() < Duration::from_millis(2500),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn with_manifest_after_pong_off_the_manifest_comes_with_the_101() {
    let backend = Backend::start();
    let g = gateway(config(&backend, "manifest_after_pong = false", ""));
    let mut c = RawClient::upgrade(g.addr, &user_token(&["user"]), b"");
    let m = c.next(Duration::from_secs(2)).expect("a first message");
    assert!(is_manifest(&m), "no ping first: {m:?}");
}

#[test]
fn a_frame_sent_with_the_upgrade_request_is_answered_without_another_packet() {
    let backend = Backend::start();
    let g = gateway(config(&backend, "", ""));
    let mut c = RawClient::upgrade(
        g.addr,
        &user_token(&["user"]),
        &ws::ping_frame(b"early", MASK),
    );
    let mut got = Vec::new();
    while let Some(m) = c.next(Duration::from_secs(2)) {
        let pong = matches!(&m, Message::Pong(p) if &p[..] == b"early");
        got.push(m);
        if pong {
            break;
        }
    }
    assert!(
        matches!(got.last(), Some(Message::Pong(p)) if &p[..] == b"early"),
        "the early ping is answered: {got:?}"
    );
    let manifest = got
        .iter()
        .position(is_manifest)
        .expect("and the manifest sent");
    assert_eq!(
        manifest,
        got.len() - 2,
        "the manifest goes out first: {got:?}"
    );
}

#[test]
fn garbage_sent_with_the_upgrade_request_is_refused_at_once_with_1002() {
    let backend = Backend::start();
    let g = gateway(config(&backend, "", ""));
    // An unmasked frame from a client is a protocol error.
    let mut c = RawClient::upgrade(g.addr, &user_token(&["user"]), &ws::ping_frame(b"x", None));
    let mut close = None;
    while let Some(m) = c.next(Duration::from_secs(2)) {
        if let Message::Close(f) = m {
            close = Some(f.map(|f| f.code));
            break;
        }
    }
    assert_eq!(close, Some(Some(1002)));
}
