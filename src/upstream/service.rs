//! A backend service as one shard uses it: its name, how it is reached (the shard's
//! HTTP pool or backend link for it) and its meter.
//!
//! Why apart: a client request's route ends at a [`ServiceRuntime`]; the shard builds
//! them from the registry (`shard::ShardCtx::apply_registry`). The answer path
//! (`upstream::reply`) records into its [`ServiceMeter`] only, so the backends that
//! keep replies do not depend on this file.

use std::rc::Rc;

use super::http::Pool;
use super::link::Link;
use super::meter::ServiceMeter;

/// How a shard reaches a service.
pub enum Backend {
    /// HTTP/1.1 `POST` per request over the shard's pool (`url`).
    Http(Rc<Pool>),
    /// The backend link: one multiplexed WebSocket (`link`, docs/LINK.md).
    Link(Link),
    /// The service could not be set up on this shard (its host did not resolve when the
    /// registry was built): its requests answer 60 until the next registry update; the
    /// reason was logged when it was built.
    Unavailable(Box<str>),
}

impl Backend {
    /// The failure a request to an unavailable service gets (code 60).
    pub fn unavailable(why: &str) -> super::BackendError {
        super::BackendError::InvalidUrl(why.to_string())
    }
}

/// A backend service as one shard uses it.
pub struct ServiceRuntime {
    /// The `url` or the `link` URL, as configured.
    pub url: String,
    /// The addresses it was built for (`None` when its host did not resolve).
    pub addrs: Option<std::sync::Arc<[std::net::SocketAddr]>>,
    /// A link service told of every session (`announce_all`): a change rebuilds it.
    pub announce_all: bool,
    pub backend: Backend,
    /// Its name, metrics and failure log: what a request's answer records into.
    pub meter: Rc<ServiceMeter>,
}

impl std::fmt::Debug for ServiceRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Service({} at {})", self.meter.name, self.url)
    }
}
