//! Mailbox bounds, kept by the engine.
//!
//! actix's `Addr::try_send` never reports a full mailbox: it only refuses a
//! sender that parked itself, it never parks, and every `Addr` clone is a
//! sender of its own. So the bound lives here: a message takes a slot of its
//! actor before it is sent and carries it; the slot comes back when the
//! actor has handled the message (or the message is dropped), not when the
//! sender stops waiting, so callers that give up cannot inflate the bound.
//! With every slot taken, the caller is told at once (503 `overloaded`),
//! never queued without end.

use std::sync::Arc;

use dashmap::DashMap;

pub struct Mailboxes {
    capacity: usize,
    depth: DashMap<String, usize>,
}

impl Mailboxes {
    pub fn new(capacity: usize) -> Arc<Mailboxes> {
        Arc::new(Mailboxes {
            capacity: capacity.max(1),
            depth: DashMap::new(),
        })
    }

    /// A slot in `id`'s mailbox, or `None` when it is full.
    pub fn take(self: &Arc<Self>, id: &str) -> Option<Slot> {
        let mut depth = self.depth.entry(id.to_owned()).or_insert(0);
        if *depth >= self.capacity {
            return None;
        }
        *depth += 1;
        Some(Slot {
            mailboxes: self.clone(),
            id: id.to_owned(),
        })
    }

    /// Messages sent to `id` and not answered, the one being handled included.
    pub fn len(&self, id: &str) -> usize {
        self.depth.get(id).map(|n| *n).unwrap_or(0)
    }
}

/// A taken mailbox slot, carried by its message; given back on drop.
pub struct Slot {
    mailboxes: Arc<Mailboxes>,
    id: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.mailboxes.depth.remove_if_mut(&self.id, |_, n| {
            *n -= 1;
            *n == 0
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mailbox_holds_at_most_its_capacity_and_slots_come_back() {
        let boxes = Mailboxes::new(2);
        let a = boxes.take("x").expect("first");
        let b = boxes.take("x").expect("second");
        assert!(boxes.take("x").is_none(), "full");
        assert!(boxes.take("y").is_some(), "another actor has its own");
        assert_eq!(boxes.len("x"), 2);
        drop(a);
        let c = boxes.take("x").expect("a slot came back");
        drop((b, c));
        assert_eq!(boxes.len("x"), 0);
        assert!(boxes.depth.is_empty(), "no entry left behind");
    }
}
