//! The shard's table of its sessions: where the sweep, the drain and (with the push
//! plane) pushes by session find a connection.
//!
//! Why generational: a slot is reused once its connection ends, so a handle kept
//! elsewhere (a peer GUID carries `(shard, slot, generation)`) must not reach the
//! session that took the slot after it. Each insert gets the next generation; a lookup
//! with a stale one misses. Shard-local (`RefCell`): only the shard's own thread
//! touches it, between events.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use slab::Slab;

use crate::rt::notify::LocalNotify;

use super::place::SessionRef;
use super::ConnShared;

/// The sessions of one shard.
#[derive(Debug, Default)]
pub struct SessionTable {
    slots: RefCell<Slab<(u32, Rc<ConnShared>)>>,
    next_generation: Cell<u32>,
    changed: LocalNotify,
}

impl SessionTable {
    /// Adds a session; its reference is valid until it is removed.
    pub fn insert(&self, conn: Rc<ConnShared>) -> SessionRef {
        let generation = self.next_generation.get().wrapping_add(1);
        self.next_generation.set(generation);
        let slot = self.slots.borrow_mut().insert((generation, conn.clone())) as u32;
        let at = SessionRef { slot, generation };
        conn.at.set(at);
        at
    }

    /// Removes the session `r` names (if it is still there); true if it was.
    pub fn remove(&self, r: SessionRef) -> bool {
        let mut slots = self.slots.borrow_mut();
        match slots.get(r.slot as usize) {
            Some((g, _)) if *g == r.generation => {
                slots.remove(r.slot as usize);
                drop(slots);
                self.changed.notify();
                true
            }
            _ => false,
        }
    }

    /// Puts `conn` in the place of the session `r` names (a resume: the same place,
    /// so the same peer GUID and reconnection tokens); returns the handle it replaced.
    pub fn replace(&self, r: SessionRef, conn: Rc<ConnShared>) -> Option<Rc<ConnShared>> {
        let mut slots = self.slots.borrow_mut();
        match slots.get_mut(r.slot as usize) {
            Some((g, c)) if *g == r.generation => {
                conn.at.set(r);
                Some(std::mem::replace(c, conn))
            }
            _ => None,
        }
    }

    /// The session `r` names, unless it has ended (or its slot went to another).
    pub fn get(&self, r: SessionRef) -> Option<Rc<ConnShared>> {
        match self.slots.borrow().get(r.slot as usize) {
            Some((g, c)) if *g == r.generation => Some(c.clone()),
            _ => None,
        }
    }

    pub fn len(&self) -> usize {
        self.slots.borrow().len()
    }

    #[allow(dead_code)] // (a public `len` comes with an `is_empty`)
    pub fn is_empty(&self) -> bool {
        self.slots.borrow().is_empty()
    }

    /// Every session now (a copy of the handles: walking it may add or remove some).
    pub fn all(&self) -> Vec<Rc<ConnShared>> {
        self.slots
            .borrow()
            .iter()
            .map(|(_, (_, c))| c.clone())
            .collect()
    }

    /// Wakes whoever waits in [`SessionTable::removed`] without removing anything (a
    /// connection ended and its session was parked: the shutdown drain counts live
    /// connections).
    pub fn touch(&self) {
        self.changed.notify();
    }

    /// Waits until a session is removed (or [`SessionTable::touch`]ed).
    pub async fn removed(&self) {
        self.changed.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::handle::tests_support::shared;

    #[test]
    fn a_stale_reference_misses_the_session_that_reused_its_slot() {
        let t = SessionTable::default();
        let a = t.insert(Rc::new(shared(4096)));
        assert!(t.get(a).is_some());
        assert!(t.remove(a));
        let b = t.insert(Rc::new(shared(4096)));
        assert_eq!(a.slot, b.slot, "the slot is reused");
        assert!(
            t.get(a).is_none(),
            "the old reference does not reach the new session"
        );
        assert!(!t.remove(a), "nor remove it");
        assert!(t.get(b).is_some());
        assert_eq!(t.len(), 1);
    }
}
