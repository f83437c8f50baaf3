//! Two engine processes on one PostgreSQL database, each with its own actor
//! for the same SKU, half the buyers on each: every unit is sold once.
//!
//! The engines are child processes: this test binary run again with
//! `two_processes::rush_worker`, which makes its share of one-unit
//! reservation attempts at once and prints `WON` or `REFUSED` for each.

use std::time::Duration;

use orderflow::cache::ProductCache;
use orderflow::catalog::Catalog;
use orderflow::domain::inventory::Sku;
use orderflow::domain::product::NewProduct;
use uuid::Uuid;

use crate::support::actors::ActorEngine;
use crate::support::backends::TestDatabase;
use crate::support::Backend;

const WORKER_DB: &str = "ORDERFLOW_RUSH_WORKER_DATABASE_URL";
/// A directory where each worker announces it is ready and waits for `go`.
const WORKER_BARRIER: &str = "ORDERFLOW_RUSH_WORKER_BARRIER";
const SKU: &str = "shared-hot";
const STOCK: i64 = 50;
const ATTEMPTS_PER_PROCESS: usize = 100;

/// The child process of the two-process test, not a test of its own: without
/// `ORDERFLOW_RUSH_WORKER_DATABASE_URL` it does nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "child process of two_engine_processes_sell_each_unit_once; run by it"]
async fn rush_worker() {
    let Ok(url) = std::env::var(WORKER_DB) else {
        return;
    };
    let engine = ActorEngine::start(&url, |_| {}).await;
    let sku = Sku::parse(SKU).expect("sku");
    // Warm up (start and load the SKU's actor), say so, then wait for the
    // other process: both rush at the same moment.
    engine.inventory.snapshot(&sku).await.expect("warm-up");
    let barrier = std::path::PathBuf::from(std::env::var(WORKER_BARRIER).expect("barrier dir"));
    std::fs::write(barrier.join(format!("ready-{}", std::process::id())), b"").expect("ready file");
    while !barrier.join("go").exists() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!();
    let tries =
        (0..ATTEMPTS_PER_PROCESS).map(|_| engine.inventory.reserve(&sku, Uuid::now_v7(), 1));
    for result in futures_util::future::join_all(tries).await {
        match result {
            Ok(_) => println!("WON"),
            Err(orderflow::inventory::InventoryError::OutOfStock { .. }) => println!("REFUSED"),
            Err(e) => println!("ERROR {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engine_processes_sell_each_unit_once() {
    let test_db = TestDatabase::create(Backend::Postgres).await;
    let engine = ActorEngine::start(&test_db.url, |_| {}).await;
    let new = NewProduct::parse(SKU, "Shared", None, 100, "USD", Some(STOCK)).expect("product");
    Catalog::new(
        engine.db.clone(),
        ProductCache::new(None, Duration::from_secs(1)),
    )
    .create(&new)
    .await
    .expect("create");

    let barrier = tempfile::tempdir().expect("barrier dir");
    let spawn = || {
        crate::support::process::worker_process("two_processes::rush_worker")
            .env(WORKER_DB, &test_db.url)
            .env(WORKER_BARRIER, barrier.path())
            .spawn()
            .expect("spawning an engine process")
    };
    let (first, second) = (spawn(), spawn());
    crate::support::process::eventually(
        "both engine processes are ready",
        Duration::from_secs(60),
        || async {
            std::fs::read_dir(barrier.path())
                .map(|d| d.count())
                .unwrap_or(0)
                >= 2
        },
    )
    .await;
    std::fs::write(barrier.path().join("go"), b"").expect("go file");
    let outputs = tokio::task::spawn_blocking(move || {
        [first, second].map(|child| {
            let output = child.wait_with_output().expect("engine output");
            assert!(
                output.status.success(),
                "an engine process failed: {:?}",
                output.status
            );
            String::from_utf8_lossy(&output.stdout).into_owned()
        })
    })
    .await
    .expect("join");

    // libtest starts its own line ("test ... ") before the worker's output,
    // so a word is counted wherever it ends a line.
    let count = |out: &str, word: &str| {
        out.lines()
            .filter(|l| l.split_whitespace().last() == Some(word))
            .count()
    };
    let won: Vec<usize> = outputs.iter().map(|o| count(o, "WON")).collect();
    let refused: usize = outputs.iter().map(|o| count(o, "REFUSED")).sum();
    let errors: Vec<&str> = outputs
        .iter()
        .flat_map(|o| o.lines().filter(|l| l.contains("ERROR ")))
        .collect();
    assert!(
        errors.is_empty(),
        "contention is never an error: {errors:?}"
    );
    assert_eq!(
        won.iter().sum::<usize>() as i64,
        STOCK,
        "each process won {won:?}"
    );
    assert_eq!(
        refused,
        2 * ATTEMPTS_PER_PROCESS - STOCK as usize,
        "every other attempt was refused"
    );

    let state = orderflow::inventory::batch::load(&engine.db, SKU)
        .await
        .expect("state");
    let levels = state.stock.levels();
    assert_eq!((levels.on_hand, levels.reserved), (STOCK, STOCK));
    let mut conn = engine.db.conn().await.unwrap();
    assert_eq!(
        orderflow::db::inventory::ledger_totals(&mut conn, SKU)
            .await
            .unwrap(),
        (STOCK, STOCK)
    );
}
