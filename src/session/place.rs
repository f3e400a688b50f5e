//! [`SessionRef`]: where a connection sits in its shard's table (slot + generation).
//!
//! Why a file of its own: the handle (`handle`) records its place and the table
//! (`table`) hands places out; both need the type, and neither should import the other
//! for it.

/// Where a session sits in its shard's table, valid only for that session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionRef {
    pub slot: u32,
    pub generation: u32,
}

impl SessionRef {
    /// Names no session (a handle not yet in a table).
    pub const NONE: SessionRef = SessionRef {
        slot: u32::MAX,
        generation: 0,
    };
}
