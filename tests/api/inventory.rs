//! Inventory through its actors: no oversell under concurrency, in one engine
//! and in two engines on one database; expiry; restart.

use std::time::Duration;

use chrono::Utc;
use orderflow::actors::{Inventory, InventoryError};
use orderflow::catalog::Catalog;
use orderflow::db::inventory::ledger_totals;
use orderflow::db::Database;
use orderflow::domain::inventory::Sku;
use orderflow::domain::product::NewProduct;
use uuid::Uuid;

use crate::support::actors::ActorEngine;
use crate::support::backends::TestDatabase;
use crate::support::process::eventually;
use crate::support::Backend;

async fn create_sku(db: &Database, sku: &str, stock: i64) -> Sku {
    let new = NewProduct::parse(sku, "Flash item", None, 999, "USD", Some(stock)).unwrap();
    let cache = orderflow::cache::ProductCache::new(None, std::time::Duration::from_secs(30));
    Catalog::new(db.clone(), cache).create(&new).await.unwrap();
    new.sku
}

/// Attempts `attempts` one-unit reservations at once; returns (won, refused).
async fn rush(inventory: &Inventory, sku: &Sku, attempts: usize) -> (usize, usize) {
    let tries = (0..attempts).map(|_| inventory.reserve(sku, Uuid::now_v7(), 1));
    let results = futures_util::future::join_all(tries).await;
    let won = results.iter().filter(|r| r.is_ok()).count();
    let refused = results
        .iter()
        .filter(|r| {
            matches!(
                r,
                Err(InventoryError::OutOfStock {
                    requested: 1,
                    available: 0
                })
            )
        })
        .count();
    assert_eq!(
        won + refused,
        attempts,
        "every attempt is a win or a truthful refusal: {results:?}"
    );
    (won, refused)
}

async fn assert_conserved(db: &Database, sku: &Sku, on_hand: i64, reserved: i64) {
    let state = orderflow::actors::sku_batch::load(db, sku.as_str())
        .await
        .unwrap();
    let levels = state.stock.levels();
    assert_eq!((levels.on_hand, levels.reserved), (on_hand, reserved));
    assert_eq!(
        state.stock.reservations().map(|r| r.quantity).sum::<i64>(),
        reserved,
        "no phantom reservation"
    );
    let mut conn = db.conn().await.unwrap();
    assert_eq!(
        ledger_totals(&mut conn, sku.as_str()).await.unwrap(),
        (on_hand, reserved),
        "the ledger balances"
    );
}

async fn two_hundred_buyers_for_fifty_units_get_exactly_fifty(backend: Backend) {
    let test_db = TestDatabase::create(backend).await;
    let engine = ActorEngine::start(&test_db.url, |_| {}).await;
    let sku = create_sku(&engine.db, "flash-50", 50).await;
    let (won, refused) = rush(&engine.inventory, &sku, 200).await;
    assert_eq!((won, refused), (50, 150));
    assert_conserved(&engine.db, &sku, 50, 50).await;
}

async fn reservations_left_past_expiry_are_released_by_the_actor(backend: Backend) {
    let test_db = TestDatabase::create(backend).await;
    let engine = ActorEngine::start(&test_db.url, |s| {
        s.inventory.reservation_ttl_s = 1;
        s.inventory.expiry_sweep_interval_ms = 200;
    })
    .await;
    let sku = create_sku(&engine.db, "expiring", 5).await;
    for _ in 0..3 {
        engine
            .inventory
            .reserve(&sku, Uuid::now_v7(), 1)
            .await
            .unwrap();
    }
    assert_eq!(
        engine
            .inventory
            .snapshot(&sku)
            .await
            .unwrap()
            .levels
            .available(),
        2
    );
    eventually(
        "expired reservations are released",
        Duration::from_secs(20),
        || async {
            engine
                .inventory
                .snapshot(&sku)
                .await
                .unwrap()
                .levels
                .available()
                == 5
        },
    )
    .await;
    assert_conserved(&engine.db, &sku, 5, 0).await;
}

async fn a_restart_keeps_committed_reservations_and_invents_none(backend: Backend) {
    let test_db = TestDatabase::create(backend).await;
    let sku;
    let kept: Vec<Uuid>;
    {
        let engine = ActorEngine::start(&test_db.url, |_| {}).await;
        sku = create_sku(&engine.db, "durable", 10).await;
        kept = (0..4).map(|_| Uuid::now_v7()).collect();
        for order in &kept {
            engine.inventory.reserve(&sku, *order, 2).await.unwrap();
        }
        // The engine goes away with its actors' memory.
    }
    let engine = ActorEngine::start(&test_db.url, |_| {}).await;
    let snapshot = engine.inventory.snapshot(&sku).await.unwrap();
    let mut orders: Vec<Uuid> = snapshot.reservations.iter().map(|r| r.order_id).collect();
    orders.sort();
    let mut expected = kept.clone();
    expected.sort();
    assert_eq!(orders, expected);
    // Retrying a reservation after the restart does not reserve twice.
    engine.inventory.reserve(&sku, kept[0], 2).await.unwrap();
    assert_conserved(&engine.db, &sku, 10, 8).await;
    // Commit one and release one, across the restart.
    engine.inventory.commit(&sku, kept[1]).await.unwrap();
    engine.inventory.release(&sku, kept[2]).await.unwrap();
    assert_conserved(&engine.db, &sku, 8, 4).await;
}

async fn unknown_sku_is_unknown(backend: Backend) {
    let test_db = TestDatabase::create(backend).await;
    let engine = ActorEngine::start(&test_db.url, |_| {}).await;
    let sku = Sku::parse("no-such-sku").unwrap();
    assert_eq!(
        engine.inventory.reserve(&sku, Uuid::now_v7(), 1).await,
        Err(InventoryError::UnknownSku)
    );
}

macro_rules! both_backends {
    ($($name:ident),*) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() { super::$name(crate::support::Backend::Postgres).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() { super::$name(crate::support::Backend::Sqlite).await }
        }
    )*};
}

both_backends!(
    two_hundred_buyers_for_fifty_units_get_exactly_fifty,
    reservations_left_past_expiry_are_released_by_the_actor,
    a_restart_keeps_committed_reservations_and_invents_none,
    unknown_sku_is_unknown
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engines_on_one_postgres_database_sell_each_unit_once() {
    let test_db = TestDatabase::create(Backend::Postgres).await;
    let first = ActorEngine::start(&test_db.url, |_| {}).await;
    let second = ActorEngine::start(&test_db.url, |_| {}).await;
    let sku = create_sku(&first.db, "shared-50", 50).await;
    // Both engines have their own actor for the SKU; only the database's
    // guarded updates stand between them and an oversell.
    let ((won_a, _), (won_b, _)) = tokio::join!(
        rush(&first.inventory, &sku, 100),
        rush(&second.inventory, &sku, 100)
    );
    assert_eq!(won_a + won_b, 50, "first sold {won_a}, second {won_b}");
    assert_conserved(&first.db, &sku, 50, 50).await;
    let _ = Utc::now();
}
