//! orderflow's load benches, outside the engine: the `orderflow-bench` load
//! generator (its binary), the baseline checkout engine it measures
//! orderflow against ([`baseline`], served by the `orderflow-bench-engine`
//! binary), how the bench starts an engine on a fresh database
//! ([`engine`]), and the invariant audit run after every bench
//! ([`invariants`]).
//! docs/benchmarks.md says how to run them.

pub mod baseline;
pub mod engine;
pub mod invariants;
