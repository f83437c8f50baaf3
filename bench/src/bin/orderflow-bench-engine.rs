//! The orderflow engine as the load benches start it: the engine's own
//! command line (`serve`, `migrate`, `user create`), with one more checkout
//! engine to choose with `serve --engine baseline` (or
//! `checkout.engine = "baseline"`): the one-transaction baseline that
//! orderflow is measured against. Production refuses it.

use std::process::ExitCode;
use std::sync::Arc;

use orderflow::orders::CheckoutEngines;
use orderflow_bench::baseline::{Baseline, BASELINE};

#[actix_web::main]
async fn main() -> ExitCode {
    // As the engine's own binary does, so that memory figures compare.
    orderflow::startup::return_large_blocks_to_the_os();
    let engines: CheckoutEngines = vec![(BASELINE, Arc::new(Baseline))];
    match orderflow::cli::run_with(&engines).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("orderflow-bench-engine: {e:#}");
            ExitCode::FAILURE
        }
    }
}
