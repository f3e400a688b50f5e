//! Scenarios: each one drives the gateway in one way and reports what it measured.
//!
//! Why a module tree: every scenario has the same shape (a coordinator that plans and
//! spawns workers, samples the gateway and reports; workers that hold the connections),
//! so `rpc`, `connect` and `observers` slot in beside `idle` reusing `spawn`, `conn`,
//! `report` and `gateway_track`.

pub mod connect;
pub mod fanout;
pub mod fleet;
pub mod gateway_track;
pub mod idle;
pub mod observers;
pub mod rpc;
