//! The calls awaiting a reply. Its own file because it is the one structure every
//! other part touches (placing a call, a reply, a timeout, a lost connection) and it
//! is tested on its own: a late reply must never land on a reused slot.

use std::time::Instant;

use crate::upstream::Done;

/// A call waiting for its reply: where the answer goes, and by when.
pub(super) struct Pending {
    pub(super) on_done: Done,
    pub(super) deadline: Instant,
}

/// The calls awaiting replies: a slot table. A call id is `generation << 32 | slot`, so
/// placing and completing a call are two array accesses, and a reply that comes after
/// its call timed out (and the slot was reused) does not match the slot's new
/// generation. (A slot would have to be reused 2^32 times between a call and its late
/// reply to be confused.)
#[derive(Default)]
pub(super) struct Calls {
    slots: Vec<Slot>,
    free: Vec<u32>,
    live: usize,
}

#[derive(Default)]
struct Slot {
    generation: u32,
    pending: Option<Pending>,
}

impl Calls {
    pub(super) fn len(&self) -> usize {
        self.live
    }

    pub(super) fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Files `p`; returns its (never 0) call id.
    pub(super) fn insert(&mut self, p: Pending) -> u64 {
        let i = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot::default());
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[i as usize];
        // Generations start at 1, so no call id is 0 (0 marks events).
        slot.generation = slot.generation.wrapping_add(1).max(1);
        slot.pending = Some(p);
        self.live += 1;
        (u64::from(slot.generation) << 32) | u64::from(i)
    }

    /// Takes the call with id `call`, if it is still waiting.
    pub(super) fn remove(&mut self, call: u64) -> Option<Pending> {
        let i = (call & 0xffff_ffff) as usize;
        let slot = self.slots.get_mut(i)?;
        if u64::from(slot.generation) != call >> 32 {
            return None;
        }
        let p = slot.pending.take()?;
        self.free.push(i as u32);
        self.live -= 1;
        Some(p)
    }

    /// Takes every call whose deadline is at or before `now`.
    pub(super) fn expire(&mut self, now: Instant) -> Vec<Pending> {
        let mut out = Vec::new();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if slot.pending.as_ref().is_some_and(|p| p.deadline <= now) {
                out.extend(slot.pending.take());
                self.free.push(i as u32);
            }
        }
        self.live -= out.len();
        out
    }

    /// Takes every call.
    pub(super) fn drain(&mut self) -> Vec<Pending> {
        let out: Vec<Pending> = self
            .slots
            .iter_mut()
            .filter_map(|s| s.pending.take())
            .collect();
        *self = Calls::default();
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn pending(deadline: Instant) -> Pending {
        Pending {
            on_done: Done::Callback(Box::new(|_| {})),
            deadline,
        }
    }

    #[test]
    fn a_reused_call_slot_does_not_take_the_late_reply_of_its_previous_call() {
        let now = Instant::now();
        let mut calls = Calls::default();
        let first = calls.insert(pending(now));
        assert_ne!(first, 0, "0 marks events");
        assert!(calls.remove(first).is_some());
        let second = calls.insert(pending(now));
        assert_eq!(second & 0xffff_ffff, first & 0xffff_ffff, "same slot");
        assert!(
            calls.remove(first).is_none(),
            "the late reply matches nothing"
        );
        assert_eq!(calls.len(), 1);
        assert!(calls.remove(second).is_some());
        assert!(calls.remove(second).is_none(), "answered once");
        assert!(calls.is_empty());
        assert!(calls.remove(u64::MAX).is_none(), "an id never issued");
    }

    #[test]
    fn expire_takes_only_calls_past_their_deadline_and_frees_their_slots() {
        let now = Instant::now();
        let later = now + Duration::from_secs(5);
        let mut calls = Calls::default();
        let due = calls.insert(pending(now));
        let not_due = calls.insert(pending(later));
        assert_eq!(calls.expire(now).len(), 1);
        assert_eq!(calls.len(), 1);
        assert!(calls.remove(due).is_none());
        assert!(calls.remove(not_due).is_some());
        assert_eq!(calls.drain().len(), 0);
    }
}
