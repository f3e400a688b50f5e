//! A service URL never panics a shard: a URL that does not parse is a config error
//! naming its key, a host that does not resolve stops the start naming its key, and at
//! a later registry update the shard logs it and answers that service's calls with 60
//! while every other service goes on working.

mod common;

use std::sync::Arc;

use common::*;
use ringgate::registry::Registry;
use ringgate::Config;

fn with_service(backend: &Backend, url: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
shards = 2
[auth]
hs256_secret = "{SECRET}"
[backend]
connect_timeout_ms = 1000
[[services]]
name = "account"
url = "{ok}"
endpoints = [{{ path = "/echo", roles = ["user"] }}]
[[services]]
name = "broken"
url = "{url}"
endpoints = [{{ path = "/broken/call", roles = ["user"] }}]
"#,
        ok = backend.url()
    )
}

#[test]
fn a_service_url_that_does_not_parse_is_a_config_error_naming_its_key() {
    let backend = Backend::start();
    for url in [
        "http://bad host:80",
        "http://127.0.0.1:99999",
        "https://",
        "https://x:0",
        "ftp://x",
    ] {
        let e = Config::from_toml_str(&with_service(&backend, url), &[]).unwrap_err();
        assert!(e.to_string().contains("services[1].url"), "{url}: {e}");
    }
}

#[test]
fn a_service_host_that_does_not_resolve_stops_the_start_naming_its_key() {
    let backend = Backend::start();
    let c = Config::from_toml_str(
        &with_service(&backend, "http://no-such-host.invalid:80"),
        &[],
    )
    .unwrap();
    let e = ringgate::Gateway::start(c).err().expect("start refused");
    let text = e.to_string();
    assert!(text.contains("services[1].url"), "{text}");
    assert!(text.contains("no-such-host.invalid"), "{text}");
}

#[test]
fn a_link_host_that_does_not_resolve_stops_the_start_naming_its_key() {
    let backend = Backend::start();
    let text = with_service(&backend, &backend.url()).replace(
        &format!("name = \"broken\"\nurl = \"{}\"", backend.url()),
        "name = \"broken\"\nlink = \"ws://no-such-host.invalid:1/link\"",
    );
    assert!(text.contains("no-such-host.invalid"));
    let c = Config::from_toml_str(&text, &[]).unwrap();
    let e = ringgate::Gateway::start(c).err().expect("start refused");
    let text = e.to_string();
    assert!(text.contains("services[1].link"), "{text}");
    assert!(text.contains("no-such-host.invalid"), "{text}");
}

#[test]
fn a_host_that_stops_resolving_at_an_update_answers_60_and_the_shard_lives_on() {
    let backend = Backend::start();
    let c = Config::from_toml_str(&with_service(&backend, &backend.url()), &[]).unwrap();
    let g = gateway(c);
    let bad = Config::from_toml_str(
        &with_service(&backend, "http://no-such-host.invalid:80"),
        &[],
    )
    .unwrap();
    g.update_registry(Arc::new(Registry::from_config(&bad, 2)));
    run(async {
        // Each shard applies the update between events, soon after it is sent: a
        // connection (on whichever shard accepted it) is asked until it answers 60.
        for _ in 0..4 {
            let (mut c, m) = connect(&g, &user_token(&["user"])).await;
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            loop {
                let (h, _) = c
                    .call(m.guid("/broken/call").unwrap(), b"{}")
                    .await
                    .unwrap();
                if h.code == 60 {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "the update never applied"
                );
                monoio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            let (h, body) = c.call(m.guid("/echo").unwrap(), b"fine").await.unwrap();
            assert_eq!((h.code, &body[..]), (0, &b"fine"[..]));
        }
    });
}

#[test]
fn a_call_in_flight_when_its_service_is_replaced_is_still_answered() {
    let backend = Backend::start();
    let g = gateway(config(&backend, "", ""));
    run(async {
        let (mut c, m) = connect(&g, &user_token(&["user"])).await;
        // A 300 ms call, then an update that replaces its service's pool (its URL
        // changes) while the call is in flight.
        let id = c
            .send_request(0, 0, 0, m.guid("/delay/300").unwrap(), b"slow")
            .await
            .unwrap();
        let text = config_text(&backend, "", "").replace(
            &format!("url = \"{}\"", backend.url()),
            &format!("url = \"{}/\"", backend.url()),
        );
        let updated = Config::from_toml_str(&text, &[]).unwrap();
        g.update_registry(Arc::new(Registry::from_config(&updated, 2)));
        let (h, body) = c.response(id).await.unwrap();
        assert_eq!((h.code, &body[..]), (0, &b"slow"[..]));
    });
}
