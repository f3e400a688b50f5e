//! Per-shard HTTP/1.1 connection pool for backend services, with pipelining.
//!
//! Why this exists: every client binary request that the gateway forwards
//! becomes an HTTP/1.1 request to a backend service. Opening a TCP
//! connection per request would dominate latency, and sharing connections
//! across shards would need locks, so each shard (thread) owns one [`Pool`]
//! per backend service: `!Send`, `Rc`-shared within the shard, no
//! cross-thread synchronisation anywhere.
//!
//! Why pipelining: on loopback the cost of a forwarded request is mostly the
//! kernel's per-`sendmsg`/`recv` work on both ends. One request per connection
//! at a time means one write and one read per request on the gateway AND on
//! the backend. With `pipeline_depth > 1`, the requests started in one
//! scheduler round share one connection (an idle one first), whose writer
//! sends them in one gathering `sendmsg`, so a burst of requests costs the
//! backend one read and one write (docs/DESIGN.md §1, write coalescing); the next
//! round's batch starts on another idle connection, and once every allowed
//! connection is busy, further requests are queued behind the ones in flight.
//! `pipeline_depth = 1` (the default) never pipelines: an idle or new
//! connection per request. HTTP/1.1 requires servers to answer pipelined
//! requests in order; the cost is head-of-line blocking behind a slow request
//! of the same batch (or, once all are busy, of the same connection).
//!
//! Shape: a connection is a [`Lane`](lane::Lane) with two tasks. The writer
//! wakes when calls are queued and writes all of them (head and body `Bytes` as
//! iovecs, the body never copied) with non-blocking `sendmsg`; the reader waits
//! for readability, reads what is there and completes calls in FIFO order with
//! [`ResponseParser`](crate::proto::http1::ResponseParser). Because a reader is
//! always waiting, a connection the backend closes while idle is noticed and
//! dropped at once, with no probe per request.
//!
//! Guarantees:
//! - open connections per shard are capped; calls beyond `max_conns ×
//!   depth` wait FIFO for a slot, bounded by the request timeout
//!   ([`BackendError::Saturated`](super::BackendError::Saturated)): awaited calls
//!   in the slot queue, started calls in the pool's queue of
//!   [`Pending`](call::Pending) calls (no task or timer each);
//! - a request that never reached the backend (not yet written, or queued
//!   behind a response that said `Connection: close`) is retried once on
//!   another connection; so is one whose *reused* connection turned out dead
//!   before any byte of its response arrived (EOF / reset). A request on a
//!   fresh connection is never retried;
//! - one deadline covers waiting + connect + write + read. A call that
//!   times out after it was written leaves its connection "draining": no
//!   new calls go there, its other calls still get their responses, and it
//!   is closed once none is left, so a late response is never handed to
//!   another request. A draining connection no longer counts against the
//!   cap (so a hung backend cannot starve the pool of slots); it is closed
//!   at the latest when its last call's deadline passes.
//!
//! Requires a monoio runtime built with `enable_timer()`. A pool belongs to
//! the runtime that first used it (its connections' tasks run there).
//!
//! # Layout
//! - `pool`: [`Pool`], its settings and request type, and its state: request head
//!   encoding, lane choice, connects, placing started calls, the feeder of queued
//!   ones, the deadline sweeper.
//! - `lane`: one connection: its writer and reader tasks, its states (open,
//!   draining, closed), and an awaited call's side of it (`Waiting`).
//! - `call`: one call's lifecycle: `Call` and its states, how an attempt failed and
//!   whether it may be retried, a started call's slot and retry (`Detached`) and
//!   its place in the pool's queue (`Pending`).
//! - `limiter`: the call slots, a FIFO semaphore (`Limiter`).
//! - `test_server` (tests only): the canned backend the pool's tests talk to.
//!
//! Imports go one way: `pool` uses `lane`, `call` and `limiter`; `lane` uses
//! `call`; `call` and `limiter` use none of the others. A lane and a started call
//! reach the pool that owns them through a trait the pool implements
//! (`lane::LanePool`, `call::CallPool`).

mod call;
mod lane;
mod limiter;
mod pool;
#[cfg(test)]
mod test_server;

pub use pool::{BackendRequest, BackendSettings, Pool};
