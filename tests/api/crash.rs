//! kill -9 in the middle of reservations: nothing acknowledged is lost and
//! nothing unacknowledged is invented.
//!
//! The engine under test is a child process: this test binary run again with
//! `crash::crash_worker`, which reserves in a loop and prints `ACK <order>`
//! only after a reservation was acknowledged. The parent kills it with SIGKILL
//! mid-stream, starts a fresh engine on the same database and checks.

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use orderflow::cache::ProductCache;
use orderflow::catalog::Catalog;
use orderflow::db::inventory::ledger_totals;
use orderflow::domain::inventory::Sku;
use orderflow::domain::product::NewProduct;
use uuid::Uuid;

use crate::support::actors::ActorEngine;
use crate::support::backends::TestDatabase;
use crate::support::Backend;

const WORKER_DB: &str = "ORDERFLOW_CRASH_WORKER_DATABASE_URL";
const SKU: &str = "crash-sku";
const STOCK: i64 = 1_000_000;
const ACKS_BEFORE_KILL: usize = 300;

/// The child process of the crash tests, not a test of its own: without
/// `ORDERFLOW_CRASH_WORKER_DATABASE_URL` it does nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "child process of the kill -9 tests; run by them"]
async fn crash_worker() {
    let Ok(url) = std::env::var(WORKER_DB) else {
        return;
    };
    let engine = ActorEngine::start(&url, |_| {}).await;
    let sku = Sku::parse(SKU).expect("sku");
    println!();
    loop {
        let orders: Vec<Uuid> = (0..25).map(|_| Uuid::now_v7()).collect();
        let tries = orders
            .iter()
            .map(|order| engine.inventory.reserve(&sku, *order, 1));
        let results = futures_util::future::join_all(tries).await;
        for (order, result) in orders.iter().zip(results) {
            if result.is_ok() {
                println!("ACK {order}");
            }
        }
    }
}

async fn kill_9_mid_reservations_loses_nothing_and_invents_nothing(backend: Backend) {
    let test_db = TestDatabase::create(backend).await;
    {
        let engine = ActorEngine::start(&test_db.url, |_| {}).await;
        let new = NewProduct::parse(SKU, "Crash", None, 100, "USD", Some(STOCK)).expect("product");
        Catalog::new(
            engine.db.clone(),
            ProductCache::new(None, Duration::from_secs(1)),
        )
        .create(&new)
        .await
        .expect("create");
    }

    let mut child = crate::support::process::worker_process("crash::crash_worker")
        .env(WORKER_DB, &test_db.url)
        .spawn()
        .expect("spawning the worker");
    let stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut acked = Vec::new();
        let mut lines = BufReader::new(stdout).lines();
        let mut killed = false;
        let started = Instant::now();
        while let Some(Ok(line)) = lines.next() {
            // libtest may put its own "test ... " before the first line.
            if let Some(order) = line.split("ACK ").nth(1) {
                acked.push(Uuid::parse_str(order.trim()).expect("order id"));
            }
            if !killed && acked.len() >= ACKS_BEFORE_KILL {
                // SIGKILL, with reservations in flight.
                child.kill().expect("kill -9");
                killed = true;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "the worker stalled"
            );
        }
        let _ = child.wait();
        assert!(killed, "the worker ended before it was killed");
        acked
    });
    // Everything printed before the kill is read to EOF.
    let acked = tokio::task::spawn_blocking(move || reader.join().expect("reader"))
        .await
        .expect("join");
    assert!(acked.len() >= ACKS_BEFORE_KILL);

    let engine = ActorEngine::start(&test_db.url, |_| {}).await;
    let sku = Sku::parse(SKU).unwrap();
    let snapshot = engine
        .inventory
        .snapshot(&sku)
        .await
        .expect("snapshot after restart");
    let held: std::collections::HashSet<Uuid> =
        snapshot.reservations.iter().map(|r| r.order_id).collect();
    let lost: Vec<&Uuid> = acked.iter().filter(|o| !held.contains(o)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged reservations were lost: {lost:?}",
        lost.len()
    );
    // Counters agree with the rows (no phantom reservation) and the ledger.
    let reserved: i64 = snapshot.reservations.iter().map(|r| r.quantity).sum();
    assert_eq!(snapshot.levels.reserved, reserved);
    assert_eq!(snapshot.levels.on_hand, STOCK);
    let mut conn = engine.db.conn().await.unwrap();
    assert_eq!(
        ledger_totals(&mut conn, SKU).await.unwrap(),
        (STOCK, reserved)
    );
    // Reservations the worker never acknowledged may exist (committed just
    // before the kill); they are real and consistent, not phantoms.
    assert!(held.len() >= acked.len());
}

crate::both_backends!(kill_9_mid_reservations_loses_nothing_and_invents_nothing);
