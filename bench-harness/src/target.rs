//! Resolves which gateway to load and how to sign tokens for it, from `--gateway`,
//! `--gateway-config` and `--secret`.
//!
//! Why it exists: the harness must agree with the gateway on its address, upgrade path
//! and HS256 secret; reading them through `ringgate::Config` (the gateway's own loader,
//! with the same RINGGATE_* overrides) means there is no second parser to drift.

use std::net::{SocketAddr, ToSocketAddrs};

use anyhow::{anyhow, bail, Context};

use crate::cli::GatewayArgs;

/// The gateway under test.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// Upgrade path, e.g. `/connect`.
    pub path: String,
    /// HS256 secret for minted tokens.
    pub secret: String,
}

impl Target {
    /// `ws://addr/path`, as passed to worker processes.
    pub fn url(&self) -> String {
        format!("ws://{}{}", self.addr, self.path)
    }

    pub fn resolve(args: &GatewayArgs) -> anyhow::Result<Target> {
        let env = ringgate::Config::process_env();
        let config = match &args.gateway_config {
            Some(path) => ringgate::Config::from_file(path, &env)
                .with_context(|| format!("gateway config {}", path.display()))?,
            None => ringgate::Config::from_defaults(&env).context("embedded gateway defaults")?,
        };
        let (addr, path) = match &args.gateway {
            Some(g) => parse_gateway(g, &config.server.path)?,
            None => parse_gateway(&config.server.listen, &config.server.path)?,
        };
        let secret = match (&args.secret, &config.auth.hs256_secret) {
            (Some(s), _) | (None, Some(s)) => s.clone(),
            (None, None) => {
                bail!("no HS256 secret: pass --secret or a --gateway-config with auth.hs256_secret")
            }
        };
        Ok(Target { addr, path, secret })
    }
}

/// `host:port` or `ws://host:port[/path]` → address and path (`default_path` if none).
pub fn parse_gateway(s: &str, default_path: &str) -> anyhow::Result<(SocketAddr, String)> {
    let rest = s.strip_prefix("ws://").unwrap_or(s);
    if rest.starts_with("wss://") || rest.contains("://") {
        bail!("only ws:// gateways are supported, got `{s}`");
    }
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, default_path.to_string()),
    };
    let addr = host
        .to_socket_addrs()
        .with_context(|| format!("gateway address `{host}`"))?
        .find(|a| a.is_ipv4())
        .ok_or_else(|| anyhow!("gateway address `{host}` has no IPv4 address"))?;
    Ok((addr, if path.is_empty() { "/".into() } else { path }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_forms() {
        let (a, p) = parse_gateway("127.0.0.1:8080", "/connect").unwrap();
        assert_eq!(
            (a.to_string().as_str(), p.as_str()),
            ("127.0.0.1:8080", "/connect")
        );
        let (a, p) = parse_gateway("ws://127.0.0.1:9/x/y", "/connect").unwrap();
        assert_eq!(
            (a.to_string().as_str(), p.as_str()),
            ("127.0.0.1:9", "/x/y")
        );
        assert!(parse_gateway("wss://127.0.0.1:9/", "/").is_err());
    }

    #[test]
    fn defaults_give_the_dev_secret() {
        let t = Target::resolve(&GatewayArgs {
            gateway: None,
            gateway_config: None,
            secret: None,
        })
        .unwrap();
        assert!(t.secret.len() >= 32);
        assert_eq!(t.path, "/connect");
    }
}
