//! Resolves which gateway to load and how to sign tokens for it, from `--gateway`,
//! `--gateway-config`, `--secret` and, for a `wss://` gateway, `--ca-file`.
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
    /// A `wss://` gateway: how its certificate is verified (`--ca-file`, else the
    /// system's roots) and the name it must hold (the URL's host).
    pub tls: Option<ringgate::client::ClientTls>,
    /// `--ca-file`, handed on to worker processes (`worker_env`).
    pub ca_file: Option<std::path::PathBuf>,
}

impl Target {
    /// `ws://addr/path` (`wss://name:port/path` with TLS), as passed to worker processes.
    pub fn url(&self) -> String {
        match &self.tls {
            None => format!("ws://{}{}", self.addr, self.path),
            Some(t) => format!("wss://{}:{}{}", t.server_name, self.addr.port(), self.path),
        }
    }

    /// The environment worker processes need to reach the same gateway: the secret,
    /// and the CA file of a `wss://` one.
    pub fn worker_env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![("RG_BENCH_SECRET", self.secret.clone())];
        if let Some(ca) = &self.ca_file {
            env.push(("RG_BENCH_CA_FILE", ca.display().to_string()));
        }
        env
    }

    pub fn resolve(args: &GatewayArgs) -> anyhow::Result<Target> {
        let env = ringgate::Config::process_env();
        let config = match &args.gateway_config {
            Some(path) => ringgate::Config::from_file(path, &env)
                .with_context(|| format!("gateway config {}", path.display()))?,
            None => ringgate::Config::from_defaults(&env).context("embedded gateway defaults")?,
        };
        let gateway = match &args.gateway {
            Some(g) => g.clone(),
            None => config.server.listen.clone(),
        };
        let (addr, path) = parse_gateway(&gateway, &config.server.path)?;
        let tls = match gateway.strip_prefix("wss://") {
            None => None,
            Some(rest) => {
                let host = rest.split(['/', '?']).next().unwrap_or(rest);
                let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
                Some(
                    match &args.ca_file {
                        Some(ca) => ringgate::client::ClientTls::with_ca_file(ca, name),
                        None => ringgate::client::ClientTls::system_roots(name),
                    }
                    .map_err(|e| anyhow!("TLS for {gateway}: {e}"))?,
                )
            }
        };
        let secret = match (&args.secret, &config.auth.hs256_secret) {
            (Some(s), _) | (None, Some(s)) => s.clone(),
            (None, None) => {
                bail!("no HS256 secret: pass --secret or a --gateway-config with auth.hs256_secret")
            }
        };
        Ok(Target {
            addr,
            path,
            secret,
            tls,
            ca_file: args.ca_file.clone(),
        })
    }
}

/// `host:port`, `ws://host:port[/path]` or `wss://host:port[/path]` → address and path
/// (`default_path` if none).
pub fn parse_gateway(s: &str, default_path: &str) -> anyhow::Result<(SocketAddr, String)> {
    let rest = s
        .strip_prefix("ws://")
        .or_else(|| s.strip_prefix("wss://"))
        .unwrap_or(s);
    if rest.contains("://") {
        bail!("only ws:// and wss:// gateways are supported, got `{s}`");
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
        let (a, p) = parse_gateway("wss://127.0.0.1:9/x", "/connect").unwrap();
        assert_eq!((a.port(), p.as_str()), (9, "/x"));
        assert!(parse_gateway("http://127.0.0.1:9/", "/").is_err());
    }

    #[test]
    fn defaults_give_the_dev_secret() {
        let t = Target::resolve(&GatewayArgs {
            gateway: None,
            gateway_config: None,
            secret: None,
            ca_file: None,
        })
        .unwrap();
        assert!(t.secret.len() >= 32);
        assert_eq!(t.path, "/connect");
    }
}
