//! Limits and abuse (docs/DESIGN.md §3): each limit refuses or closes as documented
//! and is counted in `/metrics`. Real sockets on 127.0.0.1 (and 127.0.0.x as other
//! source addresses); no timing is asserted beyond "within a few seconds".

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::*;
use ringgate::proto::frame::{encode_frame, OpCode};
use ringgate::proto::ws::Message;
use ringgate::Gateway;

/// The value of one exact series of `/metrics`, e.g.
/// `ringgate_handshakes_total{result="timeout"}` (0 when absent).
fn sample(g: &Gateway, series: &str) -> i64 {
    g.metrics
        .render()
        .lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
                .map(|v| v.parse::<f64>().unwrap() as i64)
        })
        .unwrap_or(0)
}

fn handshakes(g: &Gateway, result: &str) -> i64 {
    sample(
        g,
        &format!("ringgate_handshakes_total{{result=\"{result}\"}}"),
    )
}

fn auth_header() -> String {
    format!("Authorization: Bearer {}\r\n", user_token(&["user"]))
}

/// Waits (up to 5 s) for `cond`, for counts that change once another thread has
/// caught up (a connection closed on the gateway's side, a handshake counted).
fn eventually(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < Duration::from_secs(5), "never: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_upgrade_head_past_max_handshake_bytes_gets_431_and_is_counted() {
    let backend = Backend::start();
    let g = gateway(config(&backend, "max_handshake_bytes = 2048", ""));
    let fits = upgrade_request(
        "/connect",
        &format!("{}X-Pad: {}\r\n", auth_header(), "a".repeat(1000)),
    );
    assert!(fits.len() < 2048, "{}", fits.len());
    assert_eq!(raw_status(g.addr, &fits), 101);
    let huge = upgrade_request(
        "/connect",
        &format!("{}X-Pad: {}\r\n", auth_header(), "a".repeat(2048)),
    );
    assert_eq!(raw_status(g.addr, &huge), 431);
    eventually("the 431 is counted", || handshakes(&g, "too_large") == 1);
}

#[test]
fn a_stalled_upgrade_gets_408_after_handshake_timeout_ms_and_is_counted() {
    let backend = Backend::start();
    let g = gateway(config(&backend, "handshake_timeout_ms = 300", ""));
    let mut s = std::net::TcpStream::connect(g.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // Half a request head, then nothing (slowloris).
    s.write_all(b"GET /connect HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    assert!(
        out.starts_with(b"HTTP/1.1 408"),
        "{:?}",
        String::from_utf8_lossy(&out)
    );
    eventually("the 408 is counted", || handshakes(&g, "timeout") == 1);
}

#[test]
fn requests_past_the_connection_rate_answer_12_and_are_counted() {
    let backend = Backend::start();
    let g = gateway(config(
        &backend,
        "rate_limit_per_sec = 1\nrate_limit_burst = 3",
        "",
    ));
    let refused = run(async {
        let (mut c, m) = connect(&g, &user_token(&["user"])).await;
        let guid = m.guid("/echo").unwrap();
        let mut refused = 0;
        for _ in 0..8 {
            let (h, _) = c.call(guid, b"{}").await.unwrap();
            assert!(h.code == 0 || h.code == 12, "{}", h.code);
            refused += i64::from(h.code == 12);
        }
        refused
    });
    // Eight calls against a burst of three at one a second: some are refused
    // (however slow the machine, eight calls do not take five seconds).
    assert!(refused >= 1, "none of 8 calls was refused");
    assert_eq!(sample(&g, "ringgate_rate_limited_total"), refused);
}

#[test]
fn permessage_deflate_offered_by_a_client_is_never_negotiated() {
    let backend = Backend::start();
    let g = gateway(config(&backend, "", ""));
    let offer = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n";
    let (mut c, head) = RawClient::upgrade_with(g.addr, &format!("{}{offer}", auth_header()), b"");
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("sec-websocket-extensions"),
        "the 101 accepts an extension:\n{head}"
    );
    // The connection works uncompressed: a ping is answered.
    c.send(&encode_frame(OpCode::Ping, b"plain", Some([1, 2, 3, 4])));
    loop {
        match c.next(Duration::from_secs(5)) {
            Some(Message::Pong(p)) => {
                assert_eq!(&p[..], b"plain");
                break;
            }
            Some(_) => {}
            None => panic!("no pong"),
        }
    }
}

#[test]
fn a_compressed_frame_rsv1_is_failed_with_1002_and_counted() {
    let backend = Backend::start();
    let g = gateway(config(&backend, "", ""));
    // A client that assumes deflate was accepted sends RSV1 frames.
    let offer = "Sec-WebSocket-Extensions: permessage-deflate\r\n";
    let (mut c, _) = RawClient::upgrade_with(g.addr, &format!("{}{offer}", auth_header()), b"");
    let mut frame = encode_frame(OpCode::Binary, &[0x4b, 0x04, 0x00], Some([9, 9, 9, 9]));
    frame[0] |= 0x40; // RSV1: "this message is compressed"
    c.send(&frame);
    let close = loop {
        match c.next(Duration::from_secs(5)) {
            Some(Message::Close(f)) => break f,
            Some(_) => {}
            None => panic!("no close frame"),
        }
    };
    assert_eq!(close.map(|f| f.code), Some(1002));
    eventually("the protocol error is counted", || {
        sample(&g, "ringgate_protocol_errors_total") == 1
    });
}
