//! Per-entity actors. So far: the group-commit batch logic of the inventory
//! SKU actor (`sku_batch`), written as plain async code so it can be tested
//! and benchmarked without an actor runtime. The actor registry, the SKU actor
//! itself and supervision are the next step of the inventory work; this module
//! will stay the only one that names the actor framework.

pub mod sku_batch;
