//! The outbox bound on real sockets: it is for a backlog, so one large answer reaches a
//! client that reads it, while a client that stops reading is closed cleanly.

mod common;

use common::*;

#[test]
fn one_large_answer_within_max_response_bytes_reaches_a_client_that_reads_it() {
    let backend = Backend::start();
    // max_outbox_bytes stays at its 4 MiB default; the answer is 8 MiB.
    let g = gateway(config(&backend, "", ""));
    run(async {
        let (mut c, m) = connect(&g, &user_token(&["user"])).await;
        let (h, body) = c
            .call(m.guid("/big/8388608").unwrap(), b"{}")
            .await
            .unwrap();
        assert_eq!(h.code, 0);
        assert_eq!(body.len(), 8 << 20);
        assert!(body.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
        // The connection is still open and usable.
        let (h, body) = c.call(m.guid("/echo").unwrap(), b"after").await.unwrap();
        assert_eq!((h.code, &body[..]), (0, &b"after"[..]));
    });
    assert!(g
        .metrics
        .render()
        .contains("ringgate_outbox_overflow_total 0"));
}
