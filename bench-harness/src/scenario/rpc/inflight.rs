//! One connection's table of the requests in flight, by message id.
//!
//! Why it exists: requests are pipelined (many in flight per connection) and answered by
//! id, possibly out of order; each answer must find its send times, and the oldest
//! unanswered request decides the next timeout. A data structure with its own tests.

use std::collections::VecDeque;

/// A request in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// CLOCK_MONOTONIC ns.
    pub intended: u64,
    pub sent: u64,
    /// Inside the measured window.
    pub measured: bool,
}

/// The requests in flight on one connection, by message id (ids are sequential, so a
/// deque indexed from the oldest id).
#[derive(Debug, Default)]
pub struct Inflight {
    base: u64,
    slots: VecDeque<Option<Slot>>,
    live: usize,
}

impl Inflight {
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn push(&mut self, id: u64, slot: Slot) {
        if self.slots.is_empty() {
            self.base = id;
        }
        while self.base + (self.slots.len() as u64) < id {
            self.slots.push_back(None);
        }
        if id < self.base + self.slots.len() as u64 {
            return; // an id reused: ignore (cannot happen with Client's counter)
        }
        self.slots.push_back(Some(slot));
        self.live += 1;
    }

    fn trim(&mut self) {
        while matches!(self.slots.front(), Some(None)) {
            self.slots.pop_front();
            self.base += 1;
        }
    }

    /// Removes and returns request `id`, if it is in flight.
    pub fn take(&mut self, id: u64) -> Option<Slot> {
        let idx = id.checked_sub(self.base)? as usize;
        let s = self.slots.get_mut(idx)?.take()?;
        self.live -= 1;
        self.trim();
        Some(s)
    }

    /// The oldest request in flight.
    pub fn oldest(&self) -> Option<Slot> {
        self.slots.iter().flatten().next().copied()
    }

    /// Removes the requests sent at or before `cutoff` (ns): the timed-out ones.
    pub fn expire(&mut self, cutoff: u64) -> Vec<Slot> {
        let mut out = Vec::new();
        while let Some(Some(s)) = self.slots.front() {
            if s.sent > cutoff {
                break;
            }
            out.push(*s);
            self.slots.pop_front();
            self.base += 1;
            self.live -= 1;
            self.trim();
        }
        out
    }

    /// Everything still in flight (the connection ended).
    pub fn drain(&mut self) -> Vec<Slot> {
        let out = self.slots.drain(..).flatten().collect();
        self.live = 0;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(t: u64) -> Slot {
        Slot {
            intended: t,
            sent: t,
            measured: true,
        }
    }

    #[test]
    fn inflight_matches_out_of_order_and_expires_oldest() {
        let mut f = Inflight::default();
        for id in 1..=5 {
            f.push(id, slot(id * 10));
        }
        assert_eq!(f.len(), 5);
        assert_eq!(f.take(3), Some(slot(30)));
        assert_eq!(f.take(3), None);
        assert_eq!(f.take(1), Some(slot(10)));
        assert_eq!(f.oldest(), Some(slot(20)));
        // Timeouts: everything sent at or before 40.
        let gone = f.expire(40);
        assert_eq!(gone, vec![slot(20), slot(40)]);
        assert_eq!(f.len(), 1);
        assert_eq!(f.take(2), None); // answered after its timeout: late
        f.push(6, slot(60));
        assert_eq!(f.drain(), vec![slot(50), slot(60)]);
        assert_eq!(f.len(), 0);
        assert_eq!(f.oldest(), None);
        assert_eq!(f.take(99), None);
    }
}
