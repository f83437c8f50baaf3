//! The inventory store below the actors: the guarded group-commit write keeps
//! I1 and I2 even when two writers (two engine processes) hold stale views.

use chrono::{Duration, Utc};
use orderflow::db::inventory::{ledger_totals, NewMovementRow};
use orderflow::db::pipeline::Pipeline;
use orderflow::db::products::{self, NewProductRow};
use orderflow::db::Database;
use orderflow::domain::inventory::{StockError, StockOp, StockOutcome};
use orderflow::inventory::batch::{self, LoadError};
use secrecy::SecretString;
use uuid::Uuid;

use crate::support::app::test_settings;
use crate::support::backends::TestDatabase;
use crate::support::Backend;

/// A database, and a write pipeline on it, as one engine process has.
pub(crate) struct Store {
    pub db: Database,
    pub pipeline: Pipeline,
}

pub(crate) async fn database(backend: Backend) -> (Store, TestDatabase) {
    let test_db = TestDatabase::create(backend).await;
    let mut settings = test_settings();
    settings.database.url = Some(SecretString::from(test_db.url.clone()));
    let db = Database::connect(&settings.database).expect("pool");
    db.migrate().await.expect("migrations");
    let pipeline = Pipeline::start(db.clone(), &settings.pipeline);
    (Store { db, pipeline }, test_db)
}

pub(crate) async fn create_sku(db: &Database, sku: &str, stock: i64) {
    let now = Utc::now().naive_utc();
    let product = NewProductRow {
        sku,
        name: "Widget",
        description: None,
        price: 1999,
        currency: "USD",
        active: true,
        created_at: now,
        updated_at: now,
    };
    let initial = NewMovementRow {
        id: Uuid::now_v7().to_string(),
        sku: sku.to_owned(),
        kind: "initial".to_owned(),
        on_hand_delta: stock,
        reserved_delta: 0,
        order_id: None,
        note: None,
        created_at: now,
    };
    let mut conn = db.conn().await.unwrap();
    products::create_with_stock(&mut conn, &product, stock, Some(&initial))
        .await
        .unwrap();
}

fn reserve(quantity: i64) -> StockOp {
    StockOp::Reserve {
        reservation_id: Uuid::now_v7(),
        order_id: Uuid::now_v7(),
        quantity,
        expires_at: Utc::now() + Duration::minutes(15),
    }
}

async fn stale_writers_cannot_oversell(backend: Backend) {
    let (Store { db, pipeline }, _guard) = database(backend).await;
    create_sku(&db, "hot-1", 3).await;

    // Two "processes" load the same state, then both try to take 2 of 3 units.
    let first = batch::load(&db, "hot-1").await.unwrap();
    let second = first.clone();
    let (after_first, results) = batch::run(&db, &pipeline, "hot-1", first, &[reserve(2)], 0, None)
        .await
        .unwrap();
    assert!(matches!(results[0], Ok(StockOutcome::Reserved(_))));
    assert_eq!(after_first.stock.levels().available(), 1);

    // The stale writer's plan passes locally but the guarded write refuses it;
    // it reloads and answers truthfully.
    let (after_second, results) = batch::run(
        &db,
        &pipeline,
        "hot-1",
        second,
        &[reserve(2), reserve(1)],
        0,
        None,
    )
    .await
    .unwrap();
    assert!(
        matches!(
            results[0],
            Err(StockError::OutOfStock {
                requested: 2,
                available: 1
            })
        ),
        "{results:?}"
    );
    assert!(
        matches!(results[1], Ok(StockOutcome::Reserved(_))),
        "{results:?}"
    );
    assert_eq!(after_second.stock.levels().available(), 0);

    // I1 in the database, I2 in the ledger.
    let reloaded = batch::load(&db, "hot-1").await.unwrap();
    let levels = reloaded.stock.levels();
    assert_eq!((levels.on_hand, levels.reserved), (3, 3));
    let mut conn = db.conn().await.unwrap();
    assert_eq!(
        ledger_totals(&mut conn, "hot-1").await.unwrap(),
        (levels.on_hand, levels.reserved)
    );
}

async fn commit_release_and_expiry_are_persisted(backend: Backend) {
    let (Store { db, pipeline }, _guard) = database(backend).await;
    create_sku(&db, "sku-2", 10).await;
    let state = batch::load(&db, "sku-2").await.unwrap();
    let (kept, released) = (reserve(4), reserve(3));
    let order = |op: &StockOp| match op {
        StockOp::Reserve { order_id, .. } => *order_id,
        _ => unreachable!(),
    };
    let expiring = StockOp::Reserve {
        reservation_id: Uuid::now_v7(),
        order_id: Uuid::now_v7(),
        quantity: 2,
        expires_at: Utc::now() - Duration::seconds(1),
    };
    // First batch: the reservations exist in the database afterwards...
    let (state, results) = batch::run(
        &db,
        &pipeline,
        "sku-2",
        state,
        &[kept.clone(), released.clone(), expiring],
        0,
        None,
    )
    .await
    .unwrap();
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    // ...so the second batch deletes real rows (and checks how many went).
    let ops = [
        StockOp::Commit {
            order_id: order(&kept),
        },
        StockOp::Release {
            order_id: order(&released),
        },
        StockOp::Expire { now: Utc::now() },
        StockOp::Restock {
            quantity: 5,
            note: Some("delivery".into()),
        },
        StockOp::Adjust {
            delta: -1,
            reason: "damaged".into(),
        },
    ];
    let (_, results) = batch::run(&db, &pipeline, "sku-2", state, &ops, 0, None)
        .await
        .unwrap();
    assert!(results.iter().all(Result::is_ok), "{results:?}");

    let reloaded = batch::load(&db, "sku-2").await.unwrap();
    let levels = reloaded.stock.levels();
    // 10 - 4 sold + 5 restocked - 1 adjusted; nothing left reserved.
    assert_eq!((levels.on_hand, levels.reserved), (10, 0));
    assert_eq!(reloaded.stock.reservations().count(), 0);
    let mut conn = db.conn().await.unwrap();
    assert_eq!(ledger_totals(&mut conn, "sku-2").await.unwrap(), (10, 0));
}

async fn unknown_sku_is_reported(backend: Backend) {
    let (Store { db, .. }, _guard) = database(backend).await;
    assert!(matches!(
        batch::load(&db, "nope").await,
        Err(LoadError::UnknownSku)
    ));
}

crate::both_backends!(
    stale_writers_cannot_oversell,
    commit_release_and_expiry_are_persisted,
    unknown_sku_is_reported
);
