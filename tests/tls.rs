//! `wss://` on real sockets: the client listener serving TLS 1.3 and 1.2 with ALPN
//! `http/1.1` to independent clients (Python's ssl, openssl s_client), the Bannou
//! protocol over it (calls, a resume handed across shards), a certificate renewed by a
//! reload, a client that does not speak TLS, and start-up errors naming the key.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::push::*;
use common::tls::{tls_section, TestPki};
use common::*;
use ringgate::client::{Client, ClientTls, ConnectOptions};
use ringgate::{Config, Gateway};
use serde_json::Value;

/// The standard test config (two shards) serving TLS with `pki`'s leaf `name`.
fn tls_config(backend: &Backend, pki: &TestPki, name: &str, cn: &str) -> Config {
    let leaf = pki.leaf(name, cn);
    let text = format!("{}\n{}", config_text(backend, "", ""), tls_section(&leaf));
    Config::from_toml_str(&text, &[]).expect("valid config")
}

/// Runs `tests/fixtures/wss_client.py`: its one JSON line.
fn python_client(port: u16, pki: &TestPki, token: &str, version: Option<&str>) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/wss_client.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script)
        .arg(port.to_string())
        .arg(pki.ca_file())
        .arg(token);
    if let Some(v) = version {
        cmd.arg(v);
    }
    let out = cmd.output().expect("python3 runs");
    assert!(
        out.status.success(),
        "wss_client.py failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON line")
}

fn wss_options(pki: &TestPki, token: &str) -> ConnectOptions {
    ConnectOptions {
        token: Some(token.to_string()),
        tls: Some(ClientTls::with_ca_file(&pki.ca_file(), "localhost").expect("CA loads")),
        ..ConnectOptions::default()
    }
}

#[test]
fn python_ssl_upgrades_over_tls_1_3_and_1_2_with_alpn_http_1_1_and_gets_its_manifest() {
    let backend = Backend::start();
    let pki = TestPki::new();
    let g = gateway(tls_config(&backend, &pki, "leaf", "ringgate-a"));
    for version in ["1.3", "1.2"] {
        let token = token(
            "acct-py",
            &["user"],
            Some(&format!("py-{version}")),
            unix_now() + 600,
        );
        let r = python_client(g.addr.port(), &pki, &token, Some(version));
        assert_eq!(r["version"], format!("TLSv{version}"), "{r}");
        assert_eq!(r["alpn"], "http/1.1", "{r}");
        assert_eq!(r["cn"], "ringgate-a", "{r}");
        assert_eq!(r["status"], 101, "{r}");
        assert_eq!(r["session_id"], format!("py-{version}"), "{r}");
        assert_eq!(
            r["close"], 1000,
            "the close handshake completes over TLS: {r}"
        );
    }
}

/// `openssl s_client`'s output for one handshake (stdin closed at once).
fn s_client(port: u16, pki: &TestPki, args: &[&str]) -> Option<(bool, String)> {
    let out = Command::new("openssl")
        .arg("s_client")
        .arg("-connect")
        .arg(format!("127.0.0.1:{port}"))
        .args(["-servername", "localhost", "-CAfile"])
        .arg(pki.ca_file())
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some((out.status.success(), text))
}

#[test]
fn openssl_negotiates_tls_1_3_and_1_2_with_alpn_http_1_1_and_is_refused_without_http_1_1() {
    let backend = Backend::start();
    let pki = TestPki::new();
    let g = gateway(tls_config(&backend, &pki, "leaf", "ringgate-a"));
    let port = g.addr.port();
    let Some((ok, out)) = s_client(port, &pki, &["-tls1_3", "-alpn", "http/1.1"]) else {
        eprintln!("SKIPPED: no openssl binary on this machine (python_ssl_* covers TLS)");
        return;
    };
    assert!(ok, "{out}");
    assert!(out.contains("TLSv1.3"), "{out}");
    assert!(out.contains("ALPN protocol: http/1.1"), "{out}");
    assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
    let (ok, out) = s_client(port, &pki, &["-tls1_2", "-alpn", "http/1.1"]).unwrap();
    assert!(ok, "{out}");
    assert!(out.contains("TLSv1.2"), "{out}");
    assert!(out.contains("ALPN protocol: http/1.1"), "{out}");
    // A client that offers only h2 cannot upgrade to WebSocket here: refused in the
    // handshake (RFC 7301's no_application_protocol), not served.
    let (_, out) = s_client(port, &pki, &["-alpn", "h2"]).unwrap();
    assert!(out.contains("no application protocol"), "{out}");
    assert!(metric(&g, "ringgate_handshakes_total{result=\"tls_failed\"}") >= 1);
}

#[test]
fn the_bannou_client_calls_over_wss_and_resumes_on_either_shard() {
    let g = push_gateway_with("reconnect_window_secs = 30", "", "");
    let (g, pki) = g;
    let mut api = Api::new(g.admin_addr);
    let sid = "tls-resume";
    run(async {
        let opts = wss_options(&pki, &session_token("acct-t", sid, &["user"]));
        let mut c = Client::connect(g.addr, &opts).await.expect("wss upgrade");
        let first = c.manifest().await.expect("manifest over TLS");
        call_ok(&mut c, &first, "/t/watch", b"{}").await;
        let mut token = first.reconnection_token.clone().unwrap();
        let mut n = 0u64;
        // Drop and resume until a resume was handed from one shard to the other (the
        // TLS session moves with the socket) and one stayed: at least 4 rounds.
        let mut rounds = 0;
        while rounds < 4
            || metric(&g, "ringgate_resume_handovers_total") == 0
            || metric(&g, "ringgate_resumes_total") == metric(&g, "ringgate_resume_handovers_total")
        {
            rounds += 1;
            assert!(rounds <= 40, "the resumes never spread over both shards");
            drop(c);
            wait_away(&mut api, sid).await;
            api.publish("t", None, &serde_json::json!({ "n": n }));
            let mut o = wss_options(&pki, "");
            o.token = None;
            o.extra_headers = vec![("Authorization".into(), format!("Reconnect {token}"))];
            c = Client::connect(g.addr, &o).await.expect("wss resume");
            let m = c.manifest().await.expect("resume manifest");
            assert_eq!(m.session_id, sid);
            assert_eq!(m.reason, "session_reconnected");
            assert_eq!(
                push_json(&mut c).await,
                serde_json::json!({ "n": n }),
                "the missed event"
            );
            n += 1;
            token = m.reconnection_token.clone().unwrap();
        }
        call_ok(&mut c, &first, "/t/watch", b"{}").await;
    });
}

/// Waits until the push API shows `sid` parked.
async fn wait_away(api: &mut Api, sid: &str) {
    for _ in 0..500 {
        let (status, body) = api.get(&format!("/v1/sessions/{sid}"));
        if status == 200 && body["connections"][0]["connected"] == Value::Bool(false) {
            return;
        }
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{sid} never parked");
}

/// A push-plane gateway (`common::push`) serving TLS, and its PKI.
fn push_gateway_with(extra_server: &str, extra_admin: &str, services: &str) -> (Gateway, TestPki) {
    let pki = TestPki::new();
    let leaf = pki.leaf("leaf", "ringgate-push");
    let text = format!(
        "{}\n{}",
        push_config_text(extra_server, extra_admin, services),
        tls_section(&leaf)
    );
    (gateway(Config::from_toml_str(&text, &[]).unwrap()), pki)
}

#[test]
fn a_reload_serves_the_renewed_certificate_to_new_connections_and_keeps_the_open_ones() {
    let backend = Backend::start();
    let pki = TestPki::new();
    let config = tls_config(&backend, &pki, "leaf", "ringgate-a");
    let g = gateway(config.clone());
    let token = user_token(&["user"]);
    run(async {
        let mut open = Client::connect(g.addr, &wss_options(&pki, &token))
            .await
            .unwrap();
        let m = open.manifest().await.unwrap();
        // Renewed in place (same paths), then SIGHUP's reload.
        pki.leaf("leaf", "ringgate-b");
        g.reload(config.clone());
        let r = python_client(g.addr.port(), &pki, &user_token(&["user"]), None);
        assert_eq!(
            r["cn"], "ringgate-b",
            "new connections get the new certificate"
        );
        let (h, body) = open
            .call(m.guid("/echo").unwrap(), b"still here")
            .await
            .unwrap();
        assert_eq!(
            (h.code, &body[..]),
            (0, &b"still here"[..]),
            "the open connection goes on"
        );
        // A broken file at the next reload: the current certificate stays.
        std::fs::write(pki.dir.path().join("leaf.key"), "not a key").unwrap();
        g.reload(config.clone());
        let r = python_client(g.addr.port(), &pki, &user_token(&["user"]), None);
        assert_eq!(r["cn"], "ringgate-b");
    });
}

#[test]
fn a_client_speaking_plain_http_to_the_tls_listener_is_dropped_and_others_are_served() {
    let backend = Backend::start();
    let pki = TestPki::new();
    let g = gateway(tls_config(&backend, &pki, "leaf", "ringgate-a"));
    let mut s = TcpStream::connect(g.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(upgrade_request("/connect", "").as_bytes())
        .unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert!(
        !String::from_utf8_lossy(&got).contains("HTTP/1.1 101"),
        "no upgrade in plain text"
    );
    // (rustls answers a record that is not TLS with nothing or an alert; either way
    // the connection ends, within the handshake timeout at the latest.)
    assert!(metric(&g, "ringgate_handshakes_total{result=\"tls_failed\"}") >= 1);
    let r = python_client(g.addr.port(), &pki, &user_token(&["user"]), None);
    assert_eq!(r["status"], 101);
}

#[test]
fn start_up_errors_name_the_tls_key_at_fault() {
    let backend = Backend::start();
    let pki = TestPki::new();
    let good = pki.leaf("good", "good");
    let other = pki.leaf("other", "other");
    let start = |cert: &std::path::Path, key: &std::path::Path| {
        let text = format!(
            "{}\n[tls]\ncert_file = {:?}\nkey_file = {:?}\n",
            config_text(&backend, "", ""),
            cert.to_str().unwrap(),
            key.to_str().unwrap()
        );
        match Gateway::start(Config::from_toml_str(&text, &[]).unwrap()) {
            Ok(_) => panic!("started with {cert:?} and {key:?}"),
            Err(e) => e.to_string(),
        }
    };
    let missing = pki.dir.path().join("missing.pem");
    let e = start(&missing, &good.key);
    assert!(
        e.starts_with("tls.cert_file:") && e.contains("missing.pem"),
        "{e}"
    );
    let e = start(&good.cert, &missing);
    assert!(
        e.starts_with("tls.key_file:") && e.contains("missing.pem"),
        "{e}"
    );
    let e = start(&good.cert, &other.key);
    assert!(
        e.starts_with("tls.key_file:") && e.contains("does not belong"),
        "{e}"
    );
    let key_as_cert = pki.dir.path().join("key-as-cert.pem");
    std::fs::copy(&good.key, &key_as_cert).unwrap();
    let e = start(&key_as_cert, &good.key);
    assert!(
        e.starts_with("tls.cert_file:") && e.contains("no PEM certificate"),
        "{e}"
    );
    let cert_as_key = pki.dir.path().join("cert-as-key.pem");
    std::fs::copy(&good.cert, &cert_as_key).unwrap();
    let e = start(&good.cert, &cert_as_key);
    assert!(
        e.starts_with("tls.key_file:") && e.contains("no PEM private key"),
        "{e}"
    );
    // Half a pair is a config error naming the missing key.
    let text = format!(
        "{}\n[tls]\ncert_file = {:?}\n",
        config_text(&backend, "", ""),
        good.cert.to_str().unwrap()
    );
    let e = Config::from_toml_str(&text, &[]).unwrap_err().to_string();
    assert!(e.contains("tls.key_file"), "{e}");
}

#[test]
fn a_wss_client_that_never_reads_is_closed_with_1013_and_a_reading_one_gets_everything() {
    // Over TLS the bound still holds: rustls takes at most 64 KiB of encrypted bytes
    // unsent, the rest waits in the outbox, which closes the slow client at its bound.
    let pki = TestPki::new();
    let leaf = pki.leaf("leaf", "ringgate-slow");
    let text = format!(
        "{}\n{}",
        push_config_text("max_outbox_bytes = 1048576", "", ""),
        tls_section(&leaf)
    );
    let g = gateway(Config::from_toml_str(&text, &[]).unwrap());
    run(async {
        let mut good = Client::connect(
            g.addr,
            &wss_options(&pki, &session_token("a", "good", &["user"])),
        )
        .await
        .unwrap();
        let gm = good.manifest().await.unwrap();
        call_ok(&mut good, &gm, "/t/watch", b"{}").await;
        let mut slow = Client::connect(
            g.addr,
            &wss_options(&pki, &session_token("b", "slow", &["user"])),
        )
        .await
        .unwrap();
        let sm = slow.manifest().await.unwrap();
        call_ok(&mut slow, &sm, "/t/watch", b"{}").await;
        let admin = g.admin_addr;
        let publisher = std::thread::spawn(move || {
            let mut api = Api::new(admin);
            let pad = "x".repeat(32 * 1024);
            for n in 0..200u64 {
                api.publish("t", None, &serde_json::json!({ "n": n, "pad": pad }));
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        for want in 0..200u64 {
            let v = push_json(&mut good).await;
            assert_eq!(v["n"], want, "in order, none lost");
        }
        publisher.join().unwrap();
        // The slow one: what its socket held, the notice, then 1013.
        let mut notice = false;
        let close = loop {
            match next_within(&mut slow, Duration::from_secs(5)).await {
                Some(Got::Push(_, p)) => {
                    let v: Value = serde_json::from_slice(&p).unwrap();
                    if v["eventName"] == "connect.disconnect-notification" {
                        notice = true;
                    }
                }
                Some(Got::Close(c)) => break c,
                other => panic!("{other:?}"),
            }
        };
        assert!(notice, "the disconnect notice came before the close");
        assert_eq!(close.map(|c| c.0), Some(1013));
    });
    assert_eq!(metric(&g, "ringgate_outbox_overflow_total"), 1);
}

#[test]
fn a_tls_handshake_that_never_completes_is_cut_at_the_handshake_timeout() {
    let backend = Backend::start();
    let pki = TestPki::new();
    let leaf = pki.leaf("leaf", "ringgate-slowloris");
    let text = format!(
        "{}\n{}",
        config_text(&backend, "handshake_timeout_ms = 300", ""),
        tls_section(&leaf)
    );
    let g = gateway(Config::from_toml_str(&text, &[]).unwrap());
    // One sends nothing; one the first bytes of a ClientHello record and no more.
    let mut silent = TcpStream::connect(g.addr).unwrap();
    let mut partial = TcpStream::connect(g.addr).unwrap();
    partial
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .unwrap();
    let t0 = std::time::Instant::now();
    for s in [&mut silent, &mut partial] {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    }
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(3), "closed after {took:?}");
    assert_eq!(
        metric(&g, "ringgate_handshakes_total{result=\"timeout\"}"),
        2
    );
}
