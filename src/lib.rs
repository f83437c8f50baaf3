//! orderflow: an actor-based order-processing engine.
//!
//! Module map (docs/architecture.md draws it; ADR 0003 has the rules):
//! - the HTTP shell: `http` (routes, extractors, one `ApiError`, one thin
//!   module per resource), wired by `startup` and started by `cli`;
//! - services by business area: `orders` (carts, checkout, the order actor
//!   and its saga, refunds, views), `inventory` (the SKU actor, its holds and
//!   group commit, the `Inventory` handle), `catalog` and `cache` (products and their
//!   read cache), `payments` (the provider trait, sandbox, PayPal), `events`
//!   (outbox relay, bus, webhooks, notifications, analytics), `auth`
//!   (accounts, passwords, tokens), `idempotency` (keys and stored answers),
//!   `rate_limit`, `health`;
//! - plumbing: `actors` (the actor runtime: registry, bounded mailboxes,
//!   serial and driven actors), `db` (one query layer over PostgreSQL and
//!   SQLite), `domain` (pure types and state machines), `config`
//!   (typed settings), `redis_conn`, `outbound` (rules for the engine's outbound
//!   HTTP), `telemetry` (logs and metrics).
//!
//! The load benches (generator, baseline checkout, invariant audit) are the
//! workspace's `orderflow-bench` crate, outside the engine.

pub mod actors;
pub mod auth;
pub mod cache;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod db;
pub mod domain;
pub mod events;
pub mod health;
pub mod http;
pub mod idempotency;
pub mod inventory;
pub mod orders;
pub mod outbound;
pub mod payments;
pub mod rate_limit;
pub mod redis_conn;
pub mod startup;
pub mod telemetry;
