//! Sessions: who a connection is (identity, roles, GUID key), what the rest of its
//! shard may do to it (queue frames, ask it to close: [`ConnShared`]), its outbox, and
//! the shard's table of them.
//!
//! # Layout
//! - `handle`: [`Session`] and [`ConnShared`], the handle every task of the shard holds.
//! - `outbox`: [`Outbox`], the bytes queued for one client, bounded and coalesced.
//! - `place`: [`SessionRef`], a connection's place in its shard's table.
//! - `table`: [`SessionTable`], the shard's sessions by slot.
//! - `env`: [`SessionEnv`], what every handle of a shard shares (metrics, the
//!   reconnection key and window).
//! - `parked`: a session outliving its connection (parked, superseded, ended).
//!
//! The close codes the gateway itself decides are here too; the connection task
//! (`edge::conn`) carries them out.

mod env;
mod handle;
pub mod outbox;
mod parked;
mod place;
mod table;

pub use env::{ResumeStore, SessionEnv};
#[cfg(test)]
pub(crate) use handle::tests_support;
pub use handle::{CloseRequest, ConnShared, Queued, Session, Timers};
pub use outbox::{Flush, Outbox};
pub use place::SessionRef;
pub use table::SessionTable;

/// Close code for a client that fell too far behind (reconnectable in Bannou's SDKs).
pub const CLOSE_OVERLOADED: u16 = 1013;
/// Close code for a session whose token expired.
pub const CLOSE_SESSION_EXPIRED: u16 = 4001;
/// Close code for a session a backend or the push API kicked (Bannou's SDKs report
/// it as Kicked and do not resume).
pub const CLOSE_KICKED: u16 = 4002;
