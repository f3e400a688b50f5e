//! The URLs a config names for its services: `url = "http://…"` or `"https://…"` (HTTP
//! backends) and `link = "ws://…"` or `"wss://…"` (backend links), taken apart; the TLS
//! forms keep the host name, which the backend's certificate must hold (and which is
//! sent as SNI).
//!
//! Why in the config layer: a URL is checked when the config is loaded, so no shard
//! ever meets one it cannot parse (a shard that did used to panic); the backends above
//! take the parsed parts. Hand-written rather than the `url` crate: the accepted forms
//! are narrow (no userinfo, query or fragment; http(s) and ws(s) only) and each
//! rejection names what is wrong.

use std::net::{SocketAddr, ToSocketAddrs};

/// Resolves `host:port` (a blocking `getaddrinfo` for a name; none for an IP literal).
/// Called off the shards, where the registry is built: a shard never waits on DNS.
pub fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host:?}: {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("{host:?} resolved to no address"));
    }
    Ok(addrs)
}

/// The addresses of a configured service: its `link` URL's host when it has one, else
/// its `url`'s.
pub fn resolve_service(url: &str, link: Option<&str>) -> Result<Vec<SocketAddr>, String> {
    match link {
        Some(link) => {
            let u = LinkUrl::parse(link).map_err(|e| format!("{link:?}: {e}"))?;
            resolve(&u.host, u.port)
        }
        None => {
            let o = parse_url(url).map_err(|e| e.to_string())?;
            resolve(&o.host, o.port)
        }
    }
}

/// Why a service `url` is unusable (the message names the URL).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UrlError(pub String);

/// A service `url` taken apart: `http://host[:port][/base]` or `https://…`.
#[derive(Debug, PartialEq, Eq)]
pub struct Origin {
    /// `https://`: the connection is TLS, verified for `host`.
    pub tls: bool,
    pub authority: String,
    pub host: String,
    /// As written, else 80 (`http`) or 443 (`https`).
    pub port: u16,
    pub base_path: String,
}

/// Parses a service `url` (syntax only: nothing is resolved). The config is checked
/// with it, so a shard never meets a URL it cannot parse.
pub fn parse_url(url: &str) -> Result<Origin, UrlError> {
    let bad = |why: &str| UrlError(format!("{why}: {url:?}"));
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(bad("expected http://host[:port][/path] or https://…"));
    };
    let tls = if scheme.eq_ignore_ascii_case("https") {
        true
    } else if scheme.eq_ignore_ascii_case("http") {
        false
    } else {
        return Err(bad("only http:// and https:// are supported"));
    };
    if rest.contains(['?', '#']) {
        return Err(bad("query and fragment are not allowed in a backend URL"));
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(bad("missing host or unsupported userinfo"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| bad("unterminated IPv6 literal"))?;
        match after {
            "" => (host, None),
            p => (
                host,
                Some(p.strip_prefix(':').ok_or_else(|| bad("bad port"))?),
            ),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        None if tls => 443,
        None => 80,
        Some(digits) => match digits.parse::<u16>() {
            Ok(p) if p != 0 && digits.bytes().all(|b| b.is_ascii_digit()) => p,
            _ => return Err(bad("bad port")),
        },
    };
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'_'))
    {
        return Err(bad("bad host"));
    }
    if !path.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(bad("bad base path"));
    }
    Ok(Origin {
        tls,
        authority: authority.to_owned(),
        host: host.to_owned(),
        port,
        base_path: path.trim_end_matches('/').to_owned(),
    })
}

/// A link service's address: `ws://host[:port][/path]` or `wss://…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkUrl {
    /// `wss://`: the connection is TLS, verified for `host`.
    pub tls: bool,
    /// `host[:port]` as written (the `Host` header).
    pub authority: String,
    pub host: String,
    /// As written, else 80 (`ws`) or 443 (`wss`).
    pub port: u16,
    /// Starts with `/`.
    pub path: String,
}

/// Why a `link` URL is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkUrlError {
    #[error("must start with ws:// or wss://")]
    Scheme,
    #[error("has no host")]
    NoHost,
    #[error("has an invalid port")]
    Port,
    #[error("must not contain spaces or control characters")]
    Characters,
}

impl LinkUrl {
    /// The URL as it is dialed (the scheme written in lower case).
    pub fn display(&self) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        format!("{scheme}://{}{}", self.authority, self.path)
    }

    pub fn parse(url: &str) -> Result<LinkUrl, LinkUrlError> {
        let (scheme, rest) = url.split_once("://").ok_or(LinkUrlError::Scheme)?;
        let tls = if scheme.eq_ignore_ascii_case("wss") {
            true
        } else if scheme.eq_ignore_ascii_case("ws") {
            false
        } else {
            return Err(LinkUrlError::Scheme);
        };
        if rest.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(LinkUrlError::Characters);
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                (h, p.parse::<u16>().map_err(|_| LinkUrlError::Port)?)
            }
            _ => (authority, if tls { 443 } else { 80 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(LinkUrlError::NoHost);
        }
        Ok(LinkUrl {
            tls,
            authority: authority.to_string(),
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_urls_are_http_with_a_host_an_optional_port_and_a_base_path() {
        let o = parse_url("http://example.com:8080/api/v1/").unwrap();
        assert_eq!(
            o,
            Origin {
                tls: false,
                authority: "example.com:8080".into(),
                host: "example.com".into(),
                port: 8080,
                base_path: "/api/v1".into(),
            }
        );
        let o = parse_url("HTTP://10.0.0.1").unwrap();
        assert_eq!(
            (o.port, o.base_path.as_str(), o.authority.as_str()),
            (80, "", "10.0.0.1")
        );
        let o = parse_url("http://[::1]:9000/x").unwrap();
        assert_eq!(
            (o.host.as_str(), o.port, o.authority.as_str()),
            ("::1", 9000, "[::1]:9000")
        );
        for bad in [
            "example.com",
            "ftp://x",
            "http://",
            "http://h:0",
            "http://h:99999",
            "http://h:+80",
            "http://u@h",
            "http://h/a?b",
            "http://h/a b",
            "http://h\r\nX: y/",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
        let err = parse_url("ftp://x").unwrap_err();
        assert!(err.0.contains("http:// and https://"), "{err}");
    }

    #[test]
    fn https_service_urls_default_to_port_443_and_keep_the_host_name_for_verification() {
        let o = parse_url("https://api.example.com/v1/").unwrap();
        assert_eq!(
            o,
            Origin {
                tls: true,
                authority: "api.example.com".into(),
                host: "api.example.com".into(),
                port: 443,
                base_path: "/v1".into(),
            }
        );
        let o = parse_url("HTTPS://localhost:8443").unwrap();
        assert_eq!(
            (o.tls, o.host.as_str(), o.port, o.authority.as_str()),
            (true, "localhost", 8443, "localhost:8443")
        );
        let o = parse_url("https://[::1]").unwrap();
        assert_eq!((o.tls, o.host.as_str(), o.port), (true, "::1", 443));
        assert!(!parse_url("http://h").unwrap().tls);
        // The same rejections as http://, each named.
        for (bad, why) in [
            ("https://", "missing host"),
            ("https://h:0", "bad port"),
            ("https://u@h", "userinfo"),
            ("https://h/a?b", "query"),
            ("https://h/a b", "base path"),
            ("https://bad host", "bad host"),
        ] {
            let e = parse_url(bad).unwrap_err();
            assert!(e.0.contains(why) && e.0.contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn link_urls_need_ws_a_host_and_a_valid_port() {
        let u = LinkUrl::parse("ws://127.0.0.1:5002/link").unwrap();
        assert_eq!(
            (
                u.authority.as_str(),
                u.host.as_str(),
                u.port,
                u.path.as_str()
            ),
            ("127.0.0.1:5002", "127.0.0.1", 5002, "/link")
        );
        let u = LinkUrl::parse("ws://backend").unwrap();
        assert_eq!((u.port, u.path.as_str()), (80, "/"));
        let u = LinkUrl::parse("ws://[::1]:9/x").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 9));
        assert_eq!(LinkUrl::parse("http://a:1/"), Err(LinkUrlError::Scheme));
        assert_eq!(LinkUrl::parse("ftp://a:1/"), Err(LinkUrlError::Scheme));
        assert_eq!(LinkUrl::parse("a:1/"), Err(LinkUrlError::Scheme));
        assert_eq!(LinkUrl::parse("ws://:1/"), Err(LinkUrlError::NoHost));
        assert_eq!(LinkUrl::parse("ws://a:x/"), Err(LinkUrlError::Port));
        assert_eq!(LinkUrl::parse("ws://a b/"), Err(LinkUrlError::Characters));
        assert!(!LinkUrl::parse("ws://a/").unwrap().tls);
    }

    #[test]
    fn wss_link_urls_default_to_port_443_and_keep_the_host_name_for_verification() {
        let u = LinkUrl::parse("wss://links.example.com/link").unwrap();
        assert_eq!(
            u,
            LinkUrl {
                tls: true,
                authority: "links.example.com".into(),
                host: "links.example.com".into(),
                port: 443,
                path: "/link".into(),
            }
        );
        assert_eq!(u.display(), "wss://links.example.com/link");
        let u = LinkUrl::parse("wss://localhost:9443").unwrap();
        assert_eq!((u.tls, u.port, u.path.as_str()), (true, 9443, "/"));
        let u = LinkUrl::parse("wss://[::1]:9/x").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 9));
        assert_eq!(LinkUrl::parse("wss://:1/"), Err(LinkUrlError::NoHost));
        assert_eq!(LinkUrl::parse("wss://a:x/"), Err(LinkUrlError::Port));
        assert_eq!(LinkUrl::parse("wss://a b/"), Err(LinkUrlError::Characters));
    }
}
