//! The actor runtime, and the only module that names the actor framework
//! (actix): the rest of the engine uses these types.
//!
//! - [`registry`]: finds or starts the actor for an id on one of a fixed set
//!   of arbiters (threads), and restarts stopped ones on demand;
//! - [`mailbox`]: bounded mailboxes per id; a full one is refused at once,
//!   never a queue without end and never a hang;
//! - [`serial`]: actors that run async jobs on their state one at a time
//!   (carts, order sagas);
//! - [`driven`]: actors driven by their own state machine, with async work
//!   that reports back (inventory SKUs, which group-commit their writes).

pub mod driven;
pub mod mailbox;
pub mod registry;
pub mod serial;

use std::future::Future;

/// Runs `task` on the current arbiter's event loop (the engine's start-up
/// thread, or a test's): for background loops that belong to the actors.
pub fn spawn_local(task: impl Future<Output = ()> + 'static) {
    actix::spawn(task);
}
