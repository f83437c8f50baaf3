//! Inventory through its actors: no oversell under concurrency, in one engine
//! and in two engines on one database; expiry; restart.

use std::time::Duration;

use orderflow::catalog::Catalog;
use orderflow::db::inventory::ledger_totals;
use orderflow::db::Database;
use orderflow::domain::inventory::Sku;
use orderflow::domain::product::NewProduct;
use orderflow::inventory::{Inventory, InventoryError};
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
    let state = orderflow::inventory::batch::load(db, sku.as_str())
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
    // The sweeper is as good as off: the actor's own timer must do it.
    let engine = ActorEngine::start(&test_db.url, |s| {
        s.inventory.reservation_ttl_s = 1;
        s.inventory.expiry_sweep_interval_ms = 3_600_000;
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
    let mut conn = engine.db.conn().await.unwrap();
    let released = orderflow::db::outbox::payloads_for(&mut conn, "inventory.released", "expiring")
        .await
        .unwrap();
    assert!(
        !released.is_empty() && released.iter().all(|p| p.contains("\"expired\"")),
        "{released:?}"
    );
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

async fn expired_reservations_of_a_stopped_actor_are_released_by_the_sweeper(backend: Backend) {
    let test_db = TestDatabase::create(backend).await;
    let sku;
    {
        // Reserve, then let the engine go before the reservations expire.
        let engine = ActorEngine::start(&test_db.url, |s| s.inventory.reservation_ttl_s = 1).await;
        sku = create_sku(&engine.db, "swept", 4).await;
        engine
            .inventory
            .reserve(&sku, Uuid::now_v7(), 2)
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // A new engine never touches the SKU; only its sweeper can find it.
    let engine =
        ActorEngine::start(&test_db.url, |s| s.inventory.expiry_sweep_interval_ms = 100).await;
    eventually(
        "the sweeper wakes the SKU and releases",
        Duration::from_secs(20),
        || async {
            let state = orderflow::inventory::batch::load(&engine.db, sku.as_str())
                .await
                .unwrap();
            state.stock.levels().reserved == 0
        },
    )
    .await;
    assert_conserved(&engine.db, &sku, 4, 0).await;
}

async fn a_sku_looked_for_before_it_exists_works_once_created(backend: Backend) {
    let test_db = TestDatabase::create(backend).await;
    let engine = ActorEngine::start(&test_db.url, |_| {}).await;
    let sku = Sku::parse("late-sku").unwrap();
    assert_eq!(
        engine.inventory.reserve(&sku, Uuid::now_v7(), 1).await,
        Err(InventoryError::UnknownSku)
    );
    create_sku(&engine.db, "late-sku", 3).await;
    // As the HTTP create handler does: drop the actor that saw it missing.
    engine.inventory.forget(&sku);
    engine
        .inventory
        .reserve(&sku, Uuid::now_v7(), 1)
        .await
        .unwrap();
    // Without that (another process created it), the actor that saw it
    // missing lets go within a tick.
    let later = Sku::parse("later-sku").unwrap();
    assert_eq!(
        engine.inventory.reserve(&later, Uuid::now_v7(), 1).await,
        Err(InventoryError::UnknownSku)
    );
    create_sku(&engine.db, "later-sku", 3).await;
    eventually(
        "a missing SKU is not remembered",
        Duration::from_secs(10),
        || async {
            engine
                .inventory
                .reserve(&later, Uuid::now_v7(), 1)
                .await
                .is_ok()
        },
    )
    .await;
}

async fn a_retried_reservation_with_another_quantity_is_refused(backend: Backend) {
    let test_db = TestDatabase::create(backend).await;
    let engine = ActorEngine::start(&test_db.url, |_| {}).await;
    let sku = create_sku(&engine.db, "retry-qty", 10).await;
    let order = Uuid::now_v7();
    let first = engine.inventory.reserve(&sku, order, 2).await.unwrap();
    assert_eq!(
        engine.inventory.reserve(&sku, order, 2).await.unwrap(),
        first,
        "same request, same reservation"
    );
    assert!(matches!(
        engine.inventory.reserve(&sku, order, 3).await,
        Err(InventoryError::InvalidQuantity {
            field: "quantity",
            ..
        })
    ));
    assert_conserved(&engine.db, &sku, 10, 2).await;
}

crate::both_backends!(
    two_hundred_buyers_for_fifty_units_get_exactly_fifty,
    reservations_left_past_expiry_are_released_by_the_actor,
    a_restart_keeps_committed_reservations_and_invents_none,
    unknown_sku_is_unknown,
    expired_reservations_of_a_stopped_actor_are_released_by_the_sweeper,
    a_sku_looked_for_before_it_exists_works_once_created,
    a_retried_reservation_with_another_quantity_is_refused
);

/// Only the first batch write fails (a trigger on the ledger raises once; a
/// sequence counts, because sequences survive the rollback). Callers queued
/// behind the failed write must be answered after the reload, with nothing
/// else arriving to wake the actor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_queued_behind_a_failed_write_are_answered_after_the_reload() {
    let test_db = TestDatabase::create(Backend::Postgres).await;
    let engine = ActorEngine::start(&test_db.url, |_| {}).await;
    let sku = create_sku(&engine.db, "fails-once", 100).await;
    let mut conn = engine.db.conn().await.unwrap();
    orderflow::with_conn!(&mut conn, |c| {
        use diesel_async::SimpleAsyncConnection;
        c.batch_execute(
            "CREATE SEQUENCE fail_once_seq;
             CREATE FUNCTION fail_once() RETURNS trigger AS $$
             BEGIN
               IF nextval('fail_once_seq') = 1 THEN RAISE EXCEPTION 'injected write failure'; END IF;
               RETURN NEW;
             END $$ LANGUAGE plpgsql;
             CREATE TRIGGER fail_once BEFORE INSERT ON inventory_movements FOR EACH ROW EXECUTE FUNCTION fail_once();",
        )
        .await
    })
    .unwrap();
    drop(conn);

    let callers = (0..30).map(|_| engine.inventory.reserve(&sku, Uuid::now_v7(), 1));
    let results = tokio::time::timeout(
        Duration::from_secs(20),
        futures_util::future::join_all(callers),
    )
    .await
    .expect("every caller is answered; none waits for a message that never comes");
    let failed = results
        .iter()
        .filter(|r| matches!(r, Err(InventoryError::Unavailable(_))))
        .count();
    let reserved = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(failed + reserved, 30, "{results:?}");
    assert!(failed >= 1, "the injected failure hit the first batch");
    assert!(
        reserved >= 1,
        "the queued callers were served after the reload: {results:?}"
    );
    assert_conserved(&engine.db, &sku, 100, reserved as i64).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_answers_every_waiting_caller_and_the_actor_recovers() {
    use crate::support::backends::{postgres_admin_url, with_search_path};
    use crate::support::proxy::TcpProxy;
    let test_db = TestDatabase::create(Backend::Postgres).await;
    let schema = test_db
        .url
        .rsplit("search_path%3D")
        .next()
        .unwrap()
        .to_owned();
    let admin = postgres_admin_url();
    let (scheme_user, rest) = admin.split_once('@').expect("admin URL has user@host");
    let (host_port, tail) = rest.split_once('/').expect("admin URL has a database");
    let proxy = TcpProxy::start(host_port.to_owned()).await;
    let via_proxy = with_search_path(
        &format!("{scheme_user}@127.0.0.1:{}/{tail}", proxy.port),
        &schema,
    );

    let engine = ActorEngine::start(&via_proxy, |s| s.database.connect_timeout_ms = 500).await;
    let sku = create_sku(&engine.db, "outage", 100).await;
    engine
        .inventory
        .reserve(&sku, Uuid::now_v7(), 1)
        .await
        .unwrap();

    proxy.go_down();
    let during = (0..20).map(|_| engine.inventory.reserve(&sku, Uuid::now_v7(), 1));
    let results = tokio::time::timeout(
        Duration::from_secs(60),
        futures_util::future::join_all(during),
    )
    .await
    .expect("every caller gets an answer during the outage; none hangs");
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Err(InventoryError::Unavailable(_)))),
        "{results:?}"
    );

    proxy.come_back();
    eventually(
        "the actor reloads and serves again",
        Duration::from_secs(30),
        || async {
            engine
                .inventory
                .reserve(&sku, Uuid::now_v7(), 1)
                .await
                .is_ok()
        },
    )
    .await;
    let state = orderflow::inventory::batch::load(&engine.db, sku.as_str())
        .await
        .unwrap();
    let reserved = state.stock.levels().reserved;
    assert_conserved(&engine.db, &sku, 100, reserved).await;
}

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
}
