//! `https://` backends and `wss://` links on real sockets: the gateway dials them over
//! TLS verified against `tls.ca_file` (a test CA), with the URL's host as SNI and the
//! name the certificate must hold. The backends are the plain test backends behind a
//! TLS terminator (`common::tls::TlsFront`, rustls on std threads), so they behave
//! exactly as over plain TCP: calls, keep-alive and pipelining, a 1 MiB answer, a link
//! call and a push. A certificate for another name or from another CA fails the
//! connect: the call answers 60 and the log says why. A `ca_file` that cannot be read
//! stops the start naming `tls.ca_file`, but only when some service needs it.

mod common;

use std::path::Path;
use std::time::Duration;

use common::link::LinkBackend;
use common::process::GatewayProcess;
use common::tls::{ca_section, TestPki, TlsFront};
use common::*;
use ringgate::client::Incoming;
use ringgate::proto::bannou::flags;
use ringgate::{Config, Gateway};

/// One shard (so one client's calls share its pool), the `[backend]` lines `backend`,
/// the services `services` (TOML), verified against `ca`.
fn config_text(backend: &str, services: &str, ca: &Path) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
path = "/connect"
shards = 1
admin_listen = "127.0.0.1:0"
max_message_bytes = 65536
max_outbox_bytes = 67108864
[auth]
hs256_secret = "{SECRET}"
[backend]
request_timeout_ms = 3000
connect_timeout_ms = 1000
{backend}
{services}
{tls}
"#,
        tls = ca_section(ca)
    )
}

/// A service `name` at `url` with `endpoints` (callable by role `user`).
fn service(name: &str, key: &str, url: &str, endpoints: &[&str]) -> String {
    let eps: Vec<String> = endpoints
        .iter()
        .map(|p| format!("{{ path = \"{p}\", roles = [\"user\"] }}"))
        .collect();
    format!(
        "[[services]]\nname = \"{name}\"\n{key} = \"{url}\"\nendpoints = [ {} ]\n",
        eps.join(", ")
    )
}

const HTTP_PATHS: &[&str] = &["/echo", "/big/1048576", "/status/404", "/delay/10"];

fn big_body(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

#[test]
fn an_https_backend_verified_against_ca_file_answers_calls_on_one_kept_alive_connection() {
    let backend = Backend::start();
    let pki = TestPki::new();
    let front = TlsFront::start(backend.addr, &pki.leaf("backend", "backend"));
    let url = format!("https://localhost:{}", front.addr.port());
    let text = config_text(
        "",
        &service("account", "url", &url, HTTP_PATHS),
        &pki.ca_file(),
    );
    let g = gateway(Config::from_toml_str(&text, &[]).unwrap());
    run(async {
        let (mut c, m) = connect(&g, &user_token(&["user"])).await;
        for i in 0..5 {
            let body = format!("{{\"n\":{i}}}");
            let (h, got) = c
                .call(m.guid("/echo").unwrap(), body.as_bytes())
                .await
                .unwrap();
            assert_eq!((h.code, &got[..]), (0, body.as_bytes()));
        }
        let (h, got) = c.call(m.guid("/status/404").unwrap(), b"{}").await.unwrap();
        assert_eq!(h.code, 51, "a 404 maps as over plain HTTP");
        assert!(got.is_empty());
        // 1 MiB, far past rustls' 64 KiB send and 16 KiB record sizes, arrives whole.
        let (h, got) = c
            .call(m.guid("/big/1048576").unwrap(), b"{}")
            .await
            .unwrap();
        assert_eq!(h.code, 0);
        assert_eq!(got.len(), 1 << 20);
        assert!(got[..] == big_body(1 << 20)[..], "every byte, in order");
        let (h, got) = c.call(m.guid("/echo").unwrap(), b"after").await.unwrap();
        assert_eq!((h.code, &got[..]), (0, &b"after"[..]));
    });
    assert_eq!(
        *front.sni.lock().unwrap(),
        vec![Some("localhost".to_string())],
        "one TLS connection, kept alive, that named its host"
    );
    assert_eq!(backend.connections(), 1);
    assert_eq!(backend.seen("/echo").len(), 6);
    assert_eq!(
        backend.seen("/echo")[0].header("host"),
        Some(&*format!("localhost:{}", front.addr.port()))
    );
    assert!(front.errors().is_empty(), "{:?}", front.errors());
    drop(g);
}

#[test]
fn pipelined_calls_to_an_https_backend_are_all_answered_with_a_large_one_among_them() {
    let backend = Backend::start();
    let pki = TestPki::new();
    let front = TlsFront::start_slow(
        backend.addr,
        &pki.leaf("backend", "backend"),
        Duration::from_millis(300),
    );
    let url = format!("https://localhost:{}", front.addr.port());
    let text = config_text(
        "pipeline_depth = 128\nmax_conns_per_shard = 1",
        &service("account", "url", &url, HTTP_PATHS),
        &pki.ca_file(),
    );
    let g = gateway(Config::from_toml_str(&text, &[]).unwrap());
    run(async {
        let (mut c, m) = connect(&g, &user_token(&["user"])).await;
        for round in 0..2 {
            // 80 × 60 KB of requests on one connection: more than the socket's buffers
            // and rustls' 64 KiB send buffer take, so the lane's writer waits for the
            // socket with encrypted bytes left in rustls.
            let mut ids = std::collections::HashMap::new();
            for i in 0..81 {
                let (path, body) = if i == 40 {
                    ("/big/1048576", "{}".to_string())
                } else {
                    let pad = "x".repeat(60_000);
                    (
                        "/echo",
                        format!("{{\"round\":{round},\"i\":{i},\"pad\":\"{pad}\"}}"),
                    )
                };
                let id = c.queue_request(0, 0, 0, m.guid(path).unwrap(), body.as_bytes());
                ids.insert(id, (path, body));
            }
            c.flush().await.unwrap();
            while !ids.is_empty() {
                let Incoming::Response(h, got) = c.next().await.unwrap() else {
                    continue;
                };
                let (path, body) = ids.remove(&h.message_id).expect("each answered once");
                assert_eq!(h.code, 0, "{path}");
                if path == "/echo" {
                    assert!(got[..] == *body.as_bytes(), "the echo, whole");
                } else {
                    assert!(got[..] == big_body(1 << 20)[..], "the 1 MiB answer, whole");
                }
            }
        }
    });
    assert_eq!(
        front.handshakes(),
        1,
        "one TLS connection (max_conns_per_shard), kept alive"
    );
    assert_eq!(backend.seen("/echo").len(), 160);
    assert!(front.errors().is_empty(), "{:?}", front.errors());
    drop(g);
}

#[test]
fn a_wss_link_carries_a_call_and_a_push_verified_against_ca_file() {
    let backend = LinkBackend::start();
    let pki = TestPki::new();
    let front = TlsFront::start_slow(
        backend.addr,
        &pki.leaf("link", "link"),
        Duration::from_millis(300),
    );
    let url = format!("wss://localhost:{}/link", front.addr.port());
    let text = config_text(
        "",
        &service("game", "link", &url, &["/echo", "/push"]),
        &pki.ca_file(),
    );
    let g = gateway(Config::from_toml_str(&text, &[]).unwrap());
    run(async {
        let (mut c, m) = connect(&g, &user_token(&["user"])).await;
        // The link dials at start; a call may come before it is up (it waits, bounded
        // by its deadline).
        let (h, got) = c.call(m.guid("/echo").unwrap(), b"over wss").await.unwrap();
        assert_eq!((h.code, &got[..]), (0, &b"over wss"[..]));
        let (h, pushed, code) =
            common::link::push_through(&mut c, &m, b"{\"eventName\":\"npc.moved\"}").await;
        assert_eq!(code, 0);
        assert_ne!(h.flags & flags::EVENT, 0);
        assert_eq!(&pushed[..], b"{\"eventName\":\"npc.moved\"}");
        // 200 calls of 30 KB in one burst, 6 MB both ways through the link's TLS
        // session: more than the socket's buffers and rustls' 64 KiB send buffer take,
        // so the link's writer waits for the socket with bytes left in rustls.
        let mut ids = std::collections::HashMap::new();
        for i in 0..200u8 {
            let body = vec![b'a' + i % 26; 30_000];
            let id = c.queue_request(0, 0, 0, m.guid("/echo").unwrap(), &body);
            ids.insert(id, body);
        }
        c.flush().await.unwrap();
        while !ids.is_empty() {
            let Incoming::Response(h, got) = c.next().await.unwrap() else {
                continue;
            };
            let body = ids.remove(&h.message_id).expect("each answered once");
            assert_eq!(h.code, 0);
            assert!(got[..] == body[..], "the echo, whole");
        }
    });
    assert_eq!(
        *front.sni.lock().unwrap(),
        vec![Some("localhost".to_string())]
    );
    assert_eq!(backend.shards.lock().unwrap().as_slice(), ["0"]);
    assert!(front.errors().is_empty(), "{:?}", front.errors());
    drop(g);
}

#[test]
fn a_backend_certificate_for_another_name_or_from_another_ca_answers_60_and_the_log_says_why() {
    let backend = Backend::start();
    let link_backend = LinkBackend::start();
    let pki = TestPki::new();
    let stranger = TestPki::named("stranger CA");
    // Signed by the trusted CA, but for another name.
    let wrong_name = TlsFront::start(
        backend.addr,
        &pki.leaf_for("other", "other", &["other.example"]),
    );
    // For localhost, but signed by a CA the gateway does not trust.
    let wrong_ca = TlsFront::start(backend.addr, &stranger.leaf("backend", "backend"));
    let wrong_ca_link = TlsFront::start(link_backend.addr, &stranger.leaf("link", "link"));
    let services = [
        service(
            "wrongname",
            "url",
            &format!("https://localhost:{}", wrong_name.addr.port()),
            &["/wrongname/echo"],
        ),
        service(
            "wrongca",
            "url",
            &format!("https://localhost:{}", wrong_ca.addr.port()),
            &["/wrongca/echo"],
        ),
        service(
            "wrongcalink",
            "link",
            &format!("wss://localhost:{}/link", wrong_ca_link.addr.port()),
            &["/echo"],
        ),
    ]
    .join("\n");
    let text = config_text("", &services, &pki.ca_file());
    let path = pki.dir.path().join("gateway.toml");
    std::fs::write(&path, &text).unwrap();
    let mut gw = GatewayProcess::start(&path);
    let addr = gw.wait_listening();
    let dial_failed = gw.wait_log("backend link dial failed");
    assert!(
        dial_failed.contains("wrongcalink") && dial_failed.contains("UnknownIssuer"),
        "{dial_failed}"
    );
    run(async {
        let (mut c, m) = connect_at(addr, &user_token(&["user"]), Default::default()).await;
        for path in ["/wrongname/echo", "/wrongca/echo", "/echo"] {
            let (h, _) = c.call(m.guid(path).unwrap(), b"{}").await.unwrap();
            assert_eq!(h.code, 60, "{path}");
        }
    });
    // One line per failing service (the link's calls too, answered 60 while it is down).
    let (mut name, mut ca) = (None, None);
    while name.is_none() || ca.is_none() {
        let line = gw.wait_log("backend call failed");
        if line.contains("service=wrongname ") {
            name = Some(line);
        } else if line.contains("service=wrongca ") {
            ca = Some(line);
        }
    }
    let (name, ca) = (name.unwrap(), ca.unwrap());
    assert!(
        name.contains("service=wrongname")
            && name.contains("TLS handshake with localhost failed")
            && name.contains("certificate not valid for name \"localhost\""),
        "{name}"
    );
    assert!(
        ca.contains("service=wrongca")
            && ca.contains("TLS handshake with localhost failed")
            && ca.contains("UnknownIssuer"),
        "{ca}"
    );
    // The gateway told each backend why it hung up (a fatal alert).
    // (Each front's thread records it when it reads it, which may be after the log
    // line above: waited for.)
    for front in [&wrong_name, &wrong_ca, &wrong_ca_link] {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !front.errors().iter().any(|e| e.contains("alert"))
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        let errors = front.errors();
        assert!(errors.iter().any(|e| e.contains("alert")), "{errors:?}");
    }
    assert_eq!(
        backend.requests.lock().unwrap().len(),
        0,
        "nothing reached it"
    );
}

#[test]
fn an_unreadable_ca_file_stops_the_start_naming_the_key() {
    let backend = Backend::start();
    let missing = Path::new("/nonexistent/ringgate-test-ca.pem");
    let https = config_text(
        "",
        &service("account", "url", "https://localhost:1", &["/echo"]),
        missing,
    );
    let e = Gateway::start(Config::from_toml_str(&https, &[]).unwrap())
        .err()
        .expect("start refused");
    let text = e.to_string();
    assert!(
        text.contains("tls.ca_file") && text.contains("ringgate-test-ca.pem"),
        "{text}"
    );
    let wss = config_text(
        "",
        &service("game", "link", "wss://localhost:1/link", &["/echo"]),
        missing,
    );
    let e = Gateway::start(Config::from_toml_str(&wss, &[]).unwrap())
        .err()
        .expect("start refused");
    assert!(e.to_string().contains("tls.ca_file"), "{e}");
    // A plain config that names it reads it too (a typo shows at the start, not at the
    // reload that first needs it).
    let plain = config_text(
        "",
        &service("account", "url", &backend.url(), &["/echo"]),
        missing,
    );
    let e = Gateway::start(Config::from_toml_str(&plain, &[]).unwrap())
        .err()
        .expect("start refused");
    assert!(e.to_string().contains("tls.ca_file"), "{e}");
}

#[test]
fn a_reload_that_brings_the_first_https_service_builds_the_client_config_then() {
    let backend = Backend::start();
    let pki = TestPki::new();
    let front = TlsFront::start(backend.addr, &pki.leaf("backend", "backend"));
    let plain = config_text(
        "",
        &service("account", "url", &backend.url(), &["/echo"]),
        &pki.ca_file(),
    );
    let g = gateway(Config::from_toml_str(&plain, &[]).unwrap());
    let https = config_text(
        "",
        &service(
            "account",
            "url",
            &format!("https://localhost:{}", front.addr.port()),
            &["/echo"],
        ),
        &pki.ca_file(),
    );
    g.reload(Config::from_toml_str(&https, &[]).unwrap());
    run(async {
        let (mut c, m) = connect(&g, &user_token(&["user"])).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        // The shard applies the update between events: asked until it went over TLS.
        while front.handshakes() == 0 {
            let (h, got) = c.call(m.guid("/echo").unwrap(), b"hi").await.unwrap();
            assert_eq!((h.code, &got[..]), (0, &b"hi"[..]));
            assert!(std::time::Instant::now() < deadline, "never went over TLS");
            monoio::time::sleep(Duration::from_millis(10)).await;
        }
        let (h, got) = c.call(m.guid("/echo").unwrap(), b"tls").await.unwrap();
        assert_eq!((h.code, &got[..]), (0, &b"tls"[..]));
    });
    drop(g);
}
