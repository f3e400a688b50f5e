//! What one connection of the link holds between tasks: its phase, the write buffer
//! (masked frames not yet sent) and how frames get into it, the calls awaiting replies,
//! and the sessions announced on it. When the connection ends (`run`'s tear-down) its
//! bytes, calls and announcements are dropped; the link itself outlives it.

use std::collections::HashMap;
use std::rc::Weak;

use crate::proto::frame::{append_masked, MaskSeq, OpCode};
use crate::proto::link::ToBackend;
use crate::session::ConnShared;

use super::calls::Calls;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Dialing: requests queue (their deadline bounds the wait).
    Connecting,
    Up,
    /// Waiting to redial: requests fail at once.
    Down,
}

pub(super) struct State {
    pub(super) phase: Phase,
    /// Masked frames not yet sent; `wbuf[sent..]` is what is left.
    pub(super) wbuf: Vec<u8>,
    pub(super) sent: usize,
    pub(super) masks: MaskSeq,
    pub(super) calls: Calls,
    /// Sessions announced (OPEN) on the current connection.
    pub(super) sessions: HashMap<u64, Weak<ConnShared>, ahash::RandomState>,
    /// Raw routes' connections announced (RAW_OPEN) on the current connection.
    pub(super) raw: HashMap<u64, Weak<ConnShared>, ahash::RandomState>,
}

impl State {
    /// Appends `msg` as one masked binary frame. `msg` must have passed `check()`.
    pub(super) fn put_message(&mut self, msg: &ToBackend<'_>) {
        let mask = self.masks.next_mask();
        append_masked(
            &mut self.wbuf,
            true,
            OpCode::Binary,
            mask,
            msg.encoded_len(),
            |out| msg.encode(out).expect("checked before"),
        );
    }

    /// Appends a masked control frame (ping, pong, close).
    pub(super) fn put_control(&mut self, opcode: OpCode, payload: &[u8]) {
        let mask = self.masks.next_mask();
        append_masked(&mut self.wbuf, true, opcode, mask, payload.len(), |out| {
            out.extend_from_slice(payload)
        });
    }
}
