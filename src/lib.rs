//! orderflow: an actor-based order-processing engine.
//!
//! Module map: `config` (typed settings), `domain` (pure types and rules),
//! `db` (one query layer over PostgreSQL and SQLite), `auth` (passwords,
//! tokens, accounts), `idempotency`, `rate_limit`, `redis_conn`, `health`, `telemetry`,
//! `http` (the REST shell) and `startup` (wiring). See docs/architecture.md.

pub mod actors;
pub mod auth;
pub mod cache;
pub mod carts;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod db;
pub mod domain;
pub mod events;
pub mod health;
pub mod http;
pub mod idempotency;
pub mod invariants;
pub mod orders;
pub mod outbound;
pub mod payments;
pub mod rate_limit;
pub mod redis_conn;
pub mod startup;
pub mod telemetry;
