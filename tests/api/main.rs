//! Integration tests: one binary for the whole suite. Each test spawns the
//! engine with its own database; `backend_test!` runs a test on both
//! PostgreSQL and SQLite.

mod support;

mod access_matrix;
mod analytics;
mod auth;
mod baseline;
mod cache;
mod catalog;
mod checkout;
mod checkout_load;
mod crash;
mod db_outages;
mod errors;
mod event_outages;
mod hostile;
mod idempotency;
mod inventory;
mod inventory_store;
mod notifications;
mod ops;
mod order_lifecycle;
mod outbox_relay;
mod overload;
mod paypal;
mod pipeline;
mod processes;
mod sale_rounds;
mod stoq;
mod two_processes;
mod users;
mod webhooks;
mod write_limits;
