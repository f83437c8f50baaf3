//! The write pipeline, below the actors: write-sets queued together share one
//! transaction; a refused write-set (a guard that no longer holds, a
//! reservation row already there, an external event seen before, a cart at
//! another version, an order moved on, an idempotency key taken over)
//! leaves nothing behind while its batch-mates commit; a
//! write-set that fails for another reason fails alone; statements are split
//! under the bind-parameter limits.

use chrono::{Duration, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use orderflow::db::carts::{self as carts_db, CartItemRow, CartRow, CartWrite, LineWrite};
use orderflow::db::events::NewEventRow;
use orderflow::db::idempotency::Binding;
use orderflow::db::inventory::{self as inventory_db, NewMovementRow, ReservationRow, StockWrite};
use orderflow::db::orders::{
    self as orders_db, KeyBinding, NewOrder, OrderChange, OrderItemRow, OrderRow, ProgressColumns,
    SagaColumns, SagaRow,
};
use orderflow::db::outbox::NewOutboxRow;
use orderflow::db::pipeline::{Admit, OrderWrite, Refusal, WriteError, WriteSet};
use orderflow::db::sagas as sagas_db;
use orderflow::db::schema::write_batches;
use orderflow::db::users::{self, NewUserRow};
use orderflow::db::Database;
use orderflow::with_conn;
use uuid::Uuid;

use crate::inventory_store::{create_sku, database};
use crate::support::Backend;

async fn create_user(db: &Database) -> String {
    let now = Utc::now().naive_utc();
    let id = Uuid::now_v7().to_string();
    let email = format!("{id}@example.com");
    let row = NewUserRow {
        id: &id,
        email: &email,
        name: "Pat",
        password_hash: "not-a-hash",
        role: "customer",
        created_at: now,
        updated_at: now,
    };
    users::insert(&mut db.conn().await.unwrap(), &row)
        .await
        .unwrap();
    id
}

fn new_cart(user_id: &str) -> CartRow {
    let now = Utc::now().naive_utc();
    CartRow {
        id: Uuid::now_v7().to_string(),
        user_id: user_id.to_owned(),
        status: "open".to_owned(),
        currency: "USD".to_owned(),
        order_id: None,
        version: 1,
        created_at: now,
        updated_at: now,
    }
}

/// A hold of `quantity` on `sku`, as a SKU actor writes it.
fn hold(sku: &str, quantity: i64) -> StockWrite {
    let now = Utc::now().naive_utc();
    let order_id = Uuid::now_v7().to_string();
    StockWrite {
        reserved_delta: quantity,
        inserted: vec![ReservationRow {
            id: Uuid::now_v7().to_string(),
            sku: sku.to_owned(),
            order_id: order_id.clone(),
            quantity,
            expires_at: now + Duration::minutes(15),
            created_at: now,
        }],
        movements: vec![movement(sku, 0, quantity)],
        events: vec![NewOutboxRow::new(
            "inventory.reserved",
            sku,
            &serde_json::json!({ "sku": sku, "order_id": order_id }),
            now,
        )],
        ..StockWrite::new(sku)
    }
}

fn movement(sku: &str, on_hand: i64, reserved: i64) -> NewMovementRow {
    NewMovementRow {
        id: Uuid::now_v7().to_string(),
        sku: sku.to_owned(),
        kind: "reserve".to_owned(),
        on_hand_delta: on_hand,
        reserved_delta: reserved,
        order_id: None,
        note: None,
        created_at: Utc::now().naive_utc(),
    }
}

fn line(cart: &CartRow, version: i64, sku: &str, quantity: i64) -> WriteSet {
    WriteSet::cart(CartWrite::Line {
        cart_id: cart.id.clone(),
        version,
        change: LineWrite::Put(CartItemRow {
            cart_id: cart.id.clone(),
            sku: sku.to_owned(),
            name: "Widget".to_owned(),
            quantity,
            unit_price: 1999,
        }),
    })
}

async fn levels(db: &Database, sku: &str) -> (i64, i64, usize) {
    let mut conn = db.conn().await.unwrap();
    let (row, holds) = inventory_db::load(&mut conn, sku).await.unwrap().unwrap();
    (row.on_hand, row.reserved, holds.len())
}

async fn batches(db: &Database) -> i64 {
    let mut conn = db.conn().await.unwrap();
    with_conn!(&mut conn, |c| write_batches::table
        .count()
        .get_result::<i64>(c)
        .await)
    .unwrap()
}

async fn reserved_events(db: &Database, sku: &str) -> usize {
    let mut conn = db.conn().await.unwrap();
    orderflow::db::outbox::payloads_for(&mut conn, "inventory.reserved", sku)
        .await
        .unwrap()
        .len()
}

async fn refused_write_sets_leave_nothing_and_their_batch_mates_commit(backend: Backend) {
    let (store, _guard) = database(backend).await;
    let (db, pipeline) = (&store.db, &store.pipeline);
    create_sku(db, "plenty", 5).await;
    create_sku(db, "scarce", 1).await;
    create_sku(db, "other", 5).await;
    let user = create_user(db).await;
    let cart = new_cart(&user);
    pipeline
        .write(WriteSet::cart(CartWrite::Create(cart.clone())), Admit::New)
        .await
        .unwrap();
    let before = batches(db).await;

    // A hold whose reservation row exists already (another process wrote
    // it): refused, and its counter delta with it.
    let taken = hold("other", 1);
    pipeline
        .write(WriteSet::stock(taken.clone()), Admit::New)
        .await
        .unwrap();
    let mut again = hold("other", 1);
    again.inserted = taken.inserted.clone();

    let answers = pipeline
        .write_together(
            vec![
                WriteSet::stock(hold("plenty", 2)),
                // More than there is: the guarded delta refuses it.
                WriteSet::stock(hold("scarce", 3)),
                WriteSet::stock(again),
                // A stale version: another writer moved the cart on.
                line(&cart, 7, "plenty", 1),
            ],
            Admit::New,
        )
        .await;

    let plenty = answers[0].as_ref().expect("the valid hold commits");
    assert_eq!((plenty.stock[0].on_hand, plenty.stock[0].reserved), (5, 2));
    assert_eq!(
        answers[1].as_ref().unwrap_err(),
        &WriteError::Refused(Refusal::StockChanged {
            sku: "scarce".to_owned()
        })
    );
    assert_eq!(
        answers[2].as_ref().unwrap_err(),
        &WriteError::Refused(Refusal::StockChanged {
            sku: "other".to_owned()
        })
    );
    assert_eq!(
        answers[3].as_ref().unwrap_err(),
        &WriteError::Refused(Refusal::CartChanged {
            cart_id: cart.id.clone()
        })
    );

    // The committed one is all there; the refused ones left nothing.
    assert_eq!(levels(db, "plenty").await, (5, 2, 1));
    assert_eq!(reserved_events(db, "plenty").await, 1);
    assert_eq!(levels(db, "scarce").await, (1, 0, 0));
    assert_eq!(reserved_events(db, "scarce").await, 0);
    assert_eq!(levels(db, "other").await, (5, 1, 1));
    assert_eq!(reserved_events(db, "other").await, 1);
    let mut conn = db.conn().await.unwrap();
    let (row, items) = carts_db::load(&mut conn, &cart.id).await.unwrap().unwrap();
    assert_eq!((row.version, items.len()), (1, 0));
    drop(conn);
    // One write for the first hold, then one commit for the batch (the
    // refusals were rolled back and the batch run again without them).
    assert_eq!(batches(db).await, before + 2);

    // The right version goes through and moves the cart on.
    pipeline
        .write(line(&cart, 1, "plenty", 2), Admit::New)
        .await
        .unwrap();
    let mut conn = db.conn().await.unwrap();
    let (row, items) = carts_db::load(&mut conn, &cart.id).await.unwrap().unwrap();
    assert_eq!((row.version, items[0].quantity), (2, 2));
}

async fn an_external_event_seen_before_refuses_only_its_own_change(backend: Backend) {
    let (store, _guard) = database(backend).await;
    let (db, pipeline) = (&store.db, &store.pipeline);
    create_sku(db, "stoq-1", 5).await;
    create_sku(db, "stoq-2", 5).await;
    let event = |external_id: &str| NewEventRow {
        id: Uuid::now_v7().to_string(),
        source: "stoq".to_owned(),
        external_id: Some(external_id.to_owned()),
        name: "stock.received".to_owned(),
        user_id: None,
        properties: "{}".to_owned(),
        occurred_at: Utc::now().naive_utc(),
        received_at: Utc::now().naive_utc(),
    };
    let restock = |sku: &str, external_id: &str| {
        WriteSet::stock(StockWrite {
            on_hand_delta: 3,
            movements: vec![movement(sku, 3, 0)],
            external_event: Some(event(external_id)),
            ..StockWrite::new(sku)
        })
    };
    pipeline
        .write(restock("stoq-1", "delivery-1"), Admit::Always)
        .await
        .unwrap();
    let answers = pipeline
        .write_together(
            vec![
                restock("stoq-1", "delivery-1"),
                restock("stoq-2", "delivery-2"),
            ],
            Admit::Always,
        )
        .await;
    assert_eq!(
        answers[0].as_ref().unwrap_err(),
        &WriteError::Refused(Refusal::DuplicateEvent)
    );
    assert!(answers[1].is_ok());
    assert_eq!(levels(db, "stoq-1").await, (8, 0, 0));
    assert_eq!(levels(db, "stoq-2").await, (8, 0, 0));
}

async fn a_failing_write_set_fails_alone(backend: Backend) {
    let (store, _guard) = database(backend).await;
    let (db, pipeline) = (&store.db, &store.pipeline);
    create_sku(db, "fine", 5).await;
    let user = create_user(db).await;
    let good = new_cart(&user);
    // No such user: the foreign key fails the statement, not a guard.
    let bad = new_cart(&Uuid::now_v7().to_string());
    let answers = pipeline
        .write_together(
            vec![
                WriteSet::cart(CartWrite::Create(good.clone())),
                WriteSet::cart(CartWrite::Create(bad.clone())),
                WriteSet::stock(hold("fine", 1)),
            ],
            Admit::New,
        )
        .await;
    assert!(answers[0].is_ok(), "{:?}", answers[0]);
    assert!(
        matches!(answers[1], Err(WriteError::Failed(_))),
        "{:?}",
        answers[1]
    );
    assert!(answers[2].is_ok(), "{:?}", answers[2]);
    let mut conn = db.conn().await.unwrap();
    assert!(carts_db::load(&mut conn, &good.id).await.unwrap().is_some());
    assert!(carts_db::load(&mut conn, &bad.id).await.unwrap().is_none());
    drop(conn);
    assert_eq!(levels(db, "fine").await, (5, 1, 1));
}

async fn many_write_sets_share_one_transaction_and_large_ones_are_split(backend: Backend) {
    let (store, _guard) = database(backend).await;
    let (db, pipeline) = (&store.db, &store.pipeline);
    let user = create_user(db).await;
    create_sku(db, "bulk", 100_000).await;
    let before = batches(db).await;

    let carts: Vec<CartRow> = (0..200).map(|_| new_cart(&user)).collect();
    let answers = pipeline
        .write_together(
            carts
                .iter()
                .map(|c| WriteSet::cart(CartWrite::Create(c.clone())))
                .collect(),
            Admit::New,
        )
        .await;
    assert!(answers.iter().all(Result::is_ok));
    assert_eq!(batches(db).await, before + 1, "200 carts, one transaction");

    // More movement rows than one PostgreSQL statement may bind (8 columns
    // each: 8,191 rows at most).
    let rows = 10_000;
    let write = StockWrite {
        on_hand_delta: rows,
        movements: (0..rows).map(|_| movement("bulk", 1, 0)).collect(),
        ..StockWrite::new("bulk")
    };
    let receipt = pipeline
        .write(WriteSet::stock(write), Admit::Always)
        .await
        .unwrap();
    assert_eq!(receipt.stock[0].on_hand, 100_000 + rows);
    let mut conn = db.conn().await.unwrap();
    let totals = inventory_db::ledger_totals(&mut conn, "bulk")
        .await
        .unwrap();
    assert_eq!(totals, (100_000 + rows, 0));
}

/// A pending order placed by `user`, checking out `cart` read at `version`.
fn placement(user: &str, cart: Option<(&CartRow, i64)>) -> NewOrder {
    let now = Utc::now().naive_utc();
    let id = Uuid::now_v7().to_string();
    let order = OrderRow {
        id: id.clone(),
        user_id: user.to_owned(),
        cart_id: cart.map(|(c, _)| c.id.clone()),
        status: "pending".to_owned(),
        currency: "USD".to_owned(),
        total: 1999,
        payment_provider: "sandbox".to_owned(),
        payment_token: "tok_visa".to_owned(),
        payment_ref: None,
        capture_mode: "automatic".to_owned(),
        payment_status: "none".to_owned(),
        authorized: 0,
        captured: 0,
        refunded: 0,
        stock_state: "none".to_owned(),
        cancel_requested: false,
        capture_requested: false,
        carrier: None,
        tracking_number: None,
        version: 1,
        created_at: now,
        updated_at: now,
    };
    NewOrder {
        items: vec![OrderItemRow {
            order_id: id.clone(),
            sku: "plenty".to_owned(),
            name: "Widget".to_owned(),
            quantity: 1,
            unit_price: 1999,
            line_total: 1999,
            restocked: 0,
        }],
        cart: cart.map(|(c, version)| (c.id.clone(), version)),
        audit: Vec::new(),
        outbox: vec![NewOutboxRow::new(
            "order.created",
            &id,
            &serde_json::json!({ "order_id": id }),
            now,
        )],
        saga: SagaRow {
            order_id: id.clone(),
            state: "running".to_owned(),
            current_step: None,
            parked: false,
            lease_owner: None,
            lease_expires_at: None,
            started_at: now,
            updated_at: now,
            finished_at: None,
        },
        payments: Vec::new(),
        taken: Vec::new(),
        idempotency: None,
        order,
    }
}

/// `order` cancelled by its owner, from the version `expected`.
fn cancel(order: &OrderRow, expected: i64) -> OrderChange {
    let now = Utc::now().naive_utc();
    OrderChange {
        order_id: order.id.clone(),
        expected_version: expected,
        progress: ProgressColumns {
            status: "cancelled".to_owned(),
            payment_status: order.payment_status.clone(),
            stock_state: order.stock_state.clone(),
            authorized: 0,
            captured: 0,
            refunded: 0,
            cancel_requested: true,
            capture_requested: false,
            updated_at: now,
        },
        payment_ref: None,
        shipping: None,
        payment: None,
        new_refund: None,
        refund_update: None,
        restocked: Vec::new(),
        audit: Vec::new(),
        outbox: vec![NewOutboxRow::new(
            "order.cancelled",
            &order.id,
            &serde_json::json!({ "order_id": order.id }),
            now,
        )],
        saga: SagaColumns {
            state: "compensated".to_owned(),
            current_step: None,
            parked: false,
            updated_at: now,
            finished_at: Some(Some(now)),
            lease_owner: None,
            lease_expires_at: None,
        },
        steps: Vec::new(),
        lease: None,
        idempotency: None,
    }
}

async fn order_state(db: &Database, id: &str) -> Option<(String, i64)> {
    let mut conn = db.conn().await.unwrap();
    orders_db::find(&mut conn, id)
        .await
        .unwrap()
        .map(|o| (o.status, o.version))
}

async fn order_events(db: &Database, id: &str) -> usize {
    let mut conn = db.conn().await.unwrap();
    let created = orderflow::db::outbox::payloads_for(&mut conn, "order.created", id)
        .await
        .unwrap();
    let cancelled = orderflow::db::outbox::payloads_for(&mut conn, "order.cancelled", id)
        .await
        .unwrap();
    created.len() + cancelled.len()
}

async fn refused_order_writes_leave_nothing_and_their_batch_mates_commit(backend: Backend) {
    let (store, _guard) = database(backend).await;
    let (db, pipeline) = (&store.db, &store.pipeline);
    create_sku(db, "plenty", 5).await;
    let user = create_user(db).await;
    let cart = new_cart(&user);
    pipeline
        .write(WriteSet::cart(CartWrite::Create(cart.clone())), Admit::New)
        .await
        .unwrap();
    let moved = placement(&user, None);
    let keyed = placement(&user, None);
    for placed in [&moved, &keyed] {
        pipeline
            .write(
                WriteSet::order(OrderWrite::Place(Box::new(placed.clone()))),
                Admit::New,
            )
            .await
            .unwrap();
    }
    let before = batches(db).await;

    // A change whose key another request took over.
    let mut lost_key = cancel(&keyed.order, 1);
    lost_key.idempotency = Some(KeyBinding {
        key: Binding {
            user_id: user.clone(),
            key: "never-claimed".to_owned(),
            token: Uuid::now_v7().to_string(),
        },
        resource_type: "order",
        resource_id: keyed.order.id.clone(),
    });
    // A checkout of a cart read at a version it has left.
    let stale_cart = placement(&user, Some((&cart, 9)));
    let fine = placement(&user, None);
    let answers = pipeline
        .write_together(
            vec![
                // The order moved on since its actor read it.
                WriteSet::order(OrderWrite::Change(Box::new(cancel(&moved.order, 4)))),
                WriteSet::order(OrderWrite::Change(Box::new(lost_key))),
                WriteSet::order(OrderWrite::Place(Box::new(stale_cart.clone()))),
                WriteSet::order(OrderWrite::Place(Box::new(fine.clone()))),
                WriteSet::stock(hold("plenty", 2)),
            ],
            Admit::New,
        )
        .await;

    assert_eq!(
        answers[0].as_ref().unwrap_err(),
        &WriteError::Refused(Refusal::OrderChanged {
            order_id: moved.order.id.clone()
        })
    );
    assert_eq!(
        answers[1].as_ref().unwrap_err(),
        &WriteError::Refused(Refusal::KeyLost)
    );
    assert_eq!(
        answers[2].as_ref().unwrap_err(),
        &WriteError::Refused(Refusal::CartChanged {
            cart_id: cart.id.clone()
        })
    );
    assert!(answers[3].is_ok(), "{:?}", answers[3]);
    assert!(answers[4].is_ok(), "{:?}", answers[4]);

    // The refused ones left nothing: the orders are where they were, with
    // no event of the change; the checkout of the stale cart is nowhere.
    for placed in [&moved, &keyed] {
        let state = order_state(db, &placed.order.id).await;
        assert_eq!(state, Some(("pending".to_owned(), 1)));
        assert_eq!(order_events(db, &placed.order.id).await, 1);
    }
    assert_eq!(order_state(db, &stale_cart.order.id).await, None);
    assert_eq!(order_events(db, &stale_cart.order.id).await, 0);
    let mut conn = db.conn().await.unwrap();
    let (row, _) = carts_db::load(&mut conn, &cart.id).await.unwrap().unwrap();
    assert_eq!((row.status.as_str(), row.version), ("open", 1));
    let saga = sagas_db::find(&mut conn, &stale_cart.order.id)
        .await
        .unwrap();
    assert!(saga.is_none());
    drop(conn);
    // Their batch-mates are all there, in one commit.
    assert_eq!(
        order_state(db, &fine.order.id).await,
        Some(("pending".to_owned(), 1))
    );
    assert_eq!(order_events(db, &fine.order.id).await, 1);
    assert_eq!(levels(db, "plenty").await, (5, 2, 1));
    assert_eq!(batches(db).await, before + 1);

    // From the version the order is at, the change goes through.
    pipeline
        .write(
            WriteSet::order(OrderWrite::Change(Box::new(cancel(&moved.order, 1)))),
            Admit::Always,
        )
        .await
        .unwrap();
    assert_eq!(
        order_state(db, &moved.order.id).await,
        Some(("cancelled".to_owned(), 2))
    );
    assert_eq!(order_events(db, &moved.order.id).await, 2);
}

crate::both_backends!(
    refused_write_sets_leave_nothing_and_their_batch_mates_commit,
    refused_order_writes_leave_nothing_and_their_batch_mates_commit,
    an_external_event_seen_before_refuses_only_its_own_change,
    a_failing_write_set_fails_alone,
    many_write_sets_share_one_transaction_and_large_ones_are_split
);
