//! Finds or starts the actor for an id.
//!
//! Actors are spread over a fixed set of arbiters (threads with their own
//! event loop) by a hash of the id, so work runs on every core and one id
//! always lands on the same thread. The registry is also the supervisor: an
//! actor that stopped (idle, or after a failure it could not recover from) is
//! replaced by a fresh one, which reloads its state from the database, the
//! next time its id is used.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use actix::{Actor, Addr, Arbiter, ArbiterHandle, Context};
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;

/// The threads actors run on. Stopped when the last handle is dropped.
pub struct ArbiterPool {
    arbiters: Vec<Arbiter>,
}

impl ArbiterPool {
    /// Must be called inside an actix system.
    pub fn new(count: usize) -> Arc<ArbiterPool> {
        Arc::new(ArbiterPool {
            arbiters: (0..count.max(1)).map(|_| Arbiter::new()).collect(),
        })
    }

    fn pick(&self, id: &str) -> ArbiterHandle {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        id.hash(&mut hasher);
        let index = (hasher.finish() % self.arbiters.len() as u64) as usize;
        self.arbiters[index].handle()
    }
}

impl Drop for ArbiterPool {
    fn drop(&mut self) {
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
    }
}

pub struct Registry<A: Actor<Context = Context<A>>> {
    kind: &'static str,
    pool: Arc<ArbiterPool>,
    actors: DashMap<String, Addr<A>>,
}

impl<A: Actor<Context = Context<A>>> Registry<A> {
    pub fn new(kind: &'static str, pool: Arc<ArbiterPool>) -> Registry<A> {
        Registry {
            kind,
            pool,
            actors: DashMap::new(),
        }
    }

    /// The live actor for `id`, or a new one built by `make` on its arbiter.
    /// Atomic per id: concurrent callers get the same actor.
    pub fn get_or_start<F>(&self, id: &str, make: F) -> Addr<A>
    where
        F: FnOnce(&mut Context<A>) -> A + Send + 'static,
    {
        if let Some(addr) = self.actors.get(id).filter(|a| a.connected()) {
            return addr.clone();
        }
        let addr = match self.actors.entry(id.to_owned()) {
            Entry::Occupied(mut slot) => {
                if slot.get().connected() {
                    slot.get().clone()
                } else {
                    let addr = A::start_in_arbiter(&self.pool.pick(id), make);
                    slot.insert(addr.clone());
                    addr
                }
            }
            Entry::Vacant(slot) => {
                let addr = A::start_in_arbiter(&self.pool.pick(id), make);
                slot.insert(addr.clone());
                addr
            }
        };
        addr
    }

    /// Forgets actors that have stopped and publishes the live count; called
    /// periodically, so the gauge lags by at most that period.
    pub fn prune(&self) {
        self.actors.retain(|_, addr| addr.connected());
        self.publish_live();
    }

    /// Forgets the actor for `id` so that the next message starts a fresh
    /// one (which loads from the database); the old one stops on its own.
    pub fn forget(&self, id: &str) {
        self.actors.remove(id);
    }

    /// Forgets the actor for `id` if it has stopped (or is stopping).
    pub fn forget_if_stopped(&self, id: &str) {
        self.actors.remove_if(id, |_, addr| !addr.connected());
    }

    pub fn pool(&self) -> Arc<ArbiterPool> {
        self.pool.clone()
    }

    pub fn is_live(&self, id: &str) -> bool {
        self.actors.get(id).is_some_and(|a| a.connected())
    }

    fn publish_live(&self) {
        let live = self.actors.iter().filter(|a| a.connected()).count();
        metrics::gauge!("actors_live", "kind" => self.kind).set(live as f64);
    }
}
