//! Backends: how a request leaves the gateway and how its answer comes back.
//!
//! # Layout
//! - `call`: [`Done`], where a started call's answer goes (the contract both
//!   backends keep).
//! - `error`: [`BackendError`], typed failures tagged with the side that failed and
//!   whether a retry is safe.
//! - `reply`: [`Reply`], a client request's answer turned into its response frame.
//! - `meter`: [`ServiceMeter`], a service's name, metrics, failure log and the
//!   `service_error` events its failures send to admin sessions.
//! - `service`: [`ServiceRuntime`], a service as one shard uses it.
//! - `http`: the per-shard HTTP/1.1 keep-alive pool (lanes, pipelining, limiter).
//! - `link`: the per-shard backend link (one multiplexed WebSocket per service).

mod call;
mod error;
pub mod http;
pub mod link;
mod meter;
mod reply;
mod service;

pub use call::Done;
pub use error::{BackendError, LinkFailure};
pub use meter::{Alerts, FailureLog, ServiceMeter};
pub use reply::{answer, Reply};
pub use service::{Backend, ServiceRuntime};
