//! The endpoint registry: services, their endpoints, stable endpoint ids and the roles
//! each needs — an immutable snapshot shared by every shard.
//!
//! Why a snapshot: it is read on every request (GUID → endpoint → service) and changes
//! rarely (a service deploys). Shards hold an `Arc<Registry>` and swap in a new one
//! between events when an update arrives through their mailbox, so the hot path takes
//! no lock. Ids are stable across snapshots (configured or derived from service + path),
//! which keeps every session's GUIDs valid across an update.

use std::net::SocketAddr;
use std::sync::Arc;

use ahash::AHashMap;

use crate::config::url::resolve_service;
use crate::config::{endpoint_id, Config};

/// A backend service.
#[derive(Debug, Clone)]
pub struct Service {
    pub name: Arc<str>,
    /// The HTTP base URL (empty for a link service).
    pub url: String,
    /// The backend link's `ws://` URL, for a service reached over a link.
    pub link: Option<String>,
    pub max_request_bytes: Option<usize>,
    /// Link services: announce every session at connect (`ServiceConfig::announce_all`).
    pub announce_all: bool,
    /// The service host's addresses, resolved when this snapshot was built (off the
    /// shards), or why they could not be: such a service answers 60 on every shard.
    pub addrs: Result<Arc<[SocketAddr]>, String>,
}

/// A client-callable endpoint.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub id: u32,
    /// Index into [`Registry::services`].
    pub service: usize,
    pub path: Arc<str>,
    /// Any of these roles grants access; empty = no role needed.
    pub roles: Vec<String>,
    /// What calling it does: forward to the service, or a topic action the gateway
    /// performs itself.
    pub action: Action,
}

/// What an endpoint does when called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Forward the request to the service's backend.
    Forward,
    /// Publish the caller's payload to the topic (keyed by the caller, if set).
    Publish {
        topic: Arc<str>,
        key: Option<KeyFrom>,
    },
    /// Subscribe the caller to the topic.
    Subscribe(Arc<str>),
    /// Unsubscribe the caller from the topic.
    Unsubscribe(Arc<str>),
}

/// Which of the caller's ids keys a topic endpoint's publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFrom {
    Session,
    Account,
}

impl Endpoint {
    /// Whether a session with `roles` may call this endpoint.
    pub fn permits(&self, roles: &[String]) -> bool {
        self.roles.is_empty() || self.roles.iter().any(|r| roles.contains(r))
    }
}

/// A raw route: an upgrade path whose clients speak plain WebSocket messages, relayed
/// to a link service (docs/LINK.md, "Raw routes").
#[derive(Debug, Clone)]
pub struct RawRoute {
    pub path: Arc<str>,
    /// Index into [`Registry::services`] (a link service).
    pub service: usize,
    /// Any of these roles may connect; empty = any authenticated client.
    pub roles: Vec<String>,
}

impl RawRoute {
    /// Whether a client with `roles` may connect.
    pub fn permits(&self, roles: &[String]) -> bool {
        self.roles.is_empty() || self.roles.iter().any(|r| roles.contains(r))
    }
}

/// One immutable version of the registry.
#[derive(Debug, Default)]
pub struct Registry {
    pub services: Vec<Service>,
    pub endpoints: Vec<Endpoint>,
    pub raw_routes: Vec<RawRoute>,
    by_id: AHashMap<u32, usize>,
    /// Increases with every snapshot built by one process.
    pub generation: u64,
}

impl Registry {
    /// Builds a snapshot from a validated config, resolving every service's host (a
    /// blocking lookup per name: build it off the shards).
    pub fn from_config(config: &Config, generation: u64) -> Registry {
        let mut r = Registry {
            generation,
            ..Registry::default()
        };
        for svc in &config.services {
            let service = r.services.len();
            r.services.push(Service {
                name: svc.name.as_str().into(),
                url: svc.url.clone(),
                link: svc.link.clone(),
                max_request_bytes: svc.max_request_bytes,
                announce_all: svc.announce_all,
                addrs: if svc.url.is_empty() && svc.link.is_none() {
                    // Topic endpoints only: nothing to reach.
                    Ok(Arc::from([]))
                } else {
                    resolve_service(&svc.url, svc.link.as_deref()).map(Arc::from)
                },
            });
            for route in &svc.raw_routes {
                r.raw_routes.push(RawRoute {
                    path: route.path.as_str().into(),
                    service,
                    roles: route.roles.clone(),
                });
            }
            for ep in &svc.endpoints {
                let id = endpoint_id(&svc.name, ep);
                r.by_id.insert(id, r.endpoints.len());
                r.endpoints.push(Endpoint {
                    id,
                    service,
                    path: ep.path.as_str().into(),
                    roles: ep.roles.clone(),
                    action: action_of(ep),
                });
            }
        }
        r
    }

    /// The services whose host did not resolve when this snapshot was built: their
    /// index, the service, and why.
    pub fn unresolved(&self) -> impl Iterator<Item = (usize, &Service, &str)> {
        self.services
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.addrs.as_ref().err().map(|why| (i, s, why.as_str())))
    }

    /// The endpoint with stable id `id`.
    pub fn endpoint(&self, id: u32) -> Option<&Endpoint> {
        self.endpoint_at(id).map(|(_, e)| e)
    }

    /// The endpoint with stable id `id` and its index in [`Registry::endpoints`].
    pub fn endpoint_at(&self, id: u32) -> Option<(usize, &Endpoint)> {
        self.by_id.get(&id).map(|&i| (i, &self.endpoints[i]))
    }

    /// The endpoint at `path` (a shortcut's target) and its stable id.
    pub fn endpoint_by_path(&self, path: &str) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| &*e.path == path)
    }

    /// The raw route at `path`, if there is one.
    pub fn raw_route(&self, path: &str) -> Option<&RawRoute> {
        self.raw_routes.iter().find(|r| &*r.path == path)
    }

    /// The endpoints a session with `roles` may call, in config order.
    pub fn visible<'a>(&'a self, roles: &'a [String]) -> impl Iterator<Item = &'a Endpoint> + 'a {
        self.endpoints.iter().filter(move |e| e.permits(roles))
    }
}

fn action_of(ep: &crate::config::EndpointConfig) -> Action {
    if let Some(t) = &ep.publish {
        let key = match ep.key.as_deref() {
            Some("session") => Some(KeyFrom::Session),
            Some("account") => Some(KeyFrom::Account),
            _ => None,
        };
        Action::Publish {
            topic: t.as_str().into(),
            key,
        }
    } else if let Some(t) = &ep.subscribe {
        Action::Subscribe(t.as_str().into())
    } else if let Some(t) = &ep.unsubscribe {
        Action::Unsubscribe(t.as_str().into())
    } else {
        Action::Forward
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> Registry {
        let text = r#"
[server]
listen = "127.0.0.1:0"
path = "/connect"
admin_listen = "127.0.0.1:0"
max_message_bytes = 65536
[auth]
hs256_secret = "0123456789abcdef0123456789abcdef"
[[services]]
name = "account"
url = "http://127.0.0.1:1"
endpoints = [ { path = "/account/get", roles = ["user"] }, { path = "/account/ban", roles = ["admin"] } ]
[[services]]
name = "public"
url = "http://127.0.0.1:2"
endpoints = [ { path = "/status", roles = [] } ]
"#;
        Registry::from_config(&Config::from_toml_str(text, &[]).unwrap(), 1)
    }

    fn paths(r: &Registry, roles: &[&str]) -> Vec<String> {
        let roles: Vec<String> = roles.iter().map(|s| s.to_string()).collect();
        r.visible(&roles).map(|e| e.path.to_string()).collect()
    }

    #[test]
    fn sessions_see_only_endpoints_their_roles_permit() {
        let r = registry();
        assert_eq!(paths(&r, &["user"]), ["/account/get", "/status"]);
        assert_eq!(paths(&r, &["admin"]), ["/account/ban", "/status"]);
        assert_eq!(
            paths(&r, &["user", "admin"]),
            ["/account/get", "/account/ban", "/status"]
        );
        assert_eq!(paths(&r, &["anonymous"]), ["/status"]);
    }

    #[test]
    fn endpoints_are_found_by_stable_id() {
        let r = registry();
        for ep in &r.endpoints {
            assert_eq!(r.endpoint(ep.id).unwrap().path, ep.path);
        }
        let again = registry();
        assert_eq!(r.endpoints[0].id, again.endpoints[0].id);
        assert!(r.endpoint(12345).is_none() || r.endpoints.iter().any(|e| e.id == 12345));
    }
}
