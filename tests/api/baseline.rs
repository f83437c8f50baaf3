//! The load benches' parts that run inside the engine (the orderflow-bench
//! crate's own tests run its binaries): the baseline checkout engine answers
//! as orderflow does and never oversells; the invariant audit passes on a
//! real shop and names each invariant it finds broken; the engine's own
//! binary says where the baseline went.

use std::sync::Arc;

use diesel_async::SimpleAsyncConnection;
use orderflow::config::Settings;
use orderflow::db::DbConn;
use orderflow::orders::CheckoutEngines;
use orderflow_bench::baseline::{Baseline, BASELINE};
use orderflow_bench::invariants;
use serde_json::{json, Value};

use crate::both_backends;
use crate::support::app::TestApp;
use crate::support::process::{orderflow_command, run_to_completion};
use crate::support::shop::order_id_of;
use crate::support::Backend;

fn baseline(settings: &mut Settings) {
    settings.checkout.engine = BASELINE.to_owned();
}

async fn spawn_baseline(backend: Backend, customize: impl FnOnce(&mut Settings)) -> TestApp {
    let engines: CheckoutEngines = vec![(BASELINE, Arc::new(Baseline))];
    TestApp::spawn_with_engines(
        backend,
        |s| {
            baseline(s);
            customize(s);
        },
        engines,
    )
    .await
}

async fn status_of(app: &TestApp, token: &str, order: &str) -> Value {
    app.get(&format!("/api/v1/orders/{order}"), Some(token))
        .await
        .body
}

async fn baseline_checkout_answers_like_orderflow(backend: Backend) {
    let app = spawn_baseline(backend, |_| {}).await;
    let admin = app.admin_token().await;
    let alice = app.customer_token().await;
    app.create_product(&admin, "BASE-1", 1500, 3).await;

    let cart = app.cart_with(&alice, &[("BASE-1", 2)]).await;
    let paid = app.checkout(&alice, &cart, "tok_ok").await;
    paid.assert_status(201);
    assert_eq!(paid.body["status"], "paid");
    assert_eq!(paid.body["total"], 3000);
    assert_eq!(paid.body["payment"]["captured"], 3000);
    assert!(paid.header("Location").is_some());
    let paid_id = order_id_of(&paid);
    assert_eq!(app.stock(&admin, "BASE-1").await, (1, 0));
    assert_eq!(app.sandbox().charges(&paid_id), 1);
    app.checkout(&alice, &cart, "tok_ok")
        .await
        .assert_error(409, "cart_checked_out");
    // The cart's actor was told: the cart reads as checked out.
    let seen = app
        .get(&format!("/api/v1/carts/{cart}"), Some(&alice))
        .await;
    assert_eq!(seen.body["status"], "checked_out");
    assert_eq!(seen.body["order_id"], paid_id.as_str());

    // Declined: recorded as payment_failed, no stock taken.
    let cart = app.cart_with(&alice, &[("BASE-1", 1)]).await;
    let declined = app.checkout(&alice, &cart, "tok_declined").await;
    declined.assert_error(402, "payment_declined");
    let declined_id = declined.body["error"]["details"]["order_id"]
        .as_str()
        .expect("the declined order is named")
        .to_owned();
    assert_eq!(
        status_of(&app, &alice, &declined_id).await["status"],
        "payment_failed"
    );
    assert_eq!(app.stock(&admin, "BASE-1").await, (1, 0));

    // Short: 409 with the shortfall, recorded as rejected.
    let cart = app.cart_with(&alice, &[("BASE-1", 2)]).await;
    let short = app.checkout(&alice, &cart, "tok_ok").await;
    short.assert_error(409, "out_of_stock");
    assert_eq!(
        short.body["error"]["details"]["items"],
        json!([{"sku": "BASE-1", "requested": 2, "available": 1}])
    );
    let short_id = short.body["error"]["details"]["order_id"]
        .as_str()
        .expect("the rejected order is named")
        .to_owned();
    assert_eq!(
        status_of(&app, &alice, &short_id).await["status"],
        "rejected"
    );

    // An empty cart and someone else's cart are refused as by orderflow.
    let empty = app.cart_with(&alice, &[]).await;
    app.checkout(&alice, &empty, "tok_ok")
        .await
        .assert_error(422, "empty_cart");
    let bob = app.customer_token().await;
    let cart = app.cart_with(&alice, &[("BASE-1", 1)]).await;
    app.checkout(&bob, &cart, "tok_ok")
        .await
        .assert_error(404, "not_found");

    // A double click: two checkouts of one cart at once pay once.
    app.create_product(&admin, "BASE-2", 500, 10).await;
    let cart = app.cart_with(&alice, &[("BASE-2", 1)]).await;
    let (first, second) = tokio::join!(
        app.checkout(&alice, &cart, "tok_ok"),
        app.checkout(&alice, &cart, "tok_ok")
    );
    let mut codes = [first.status.as_u16(), second.status.as_u16()];
    codes.sort();
    assert_eq!(codes, [201, 409], "{} / {}", first.text, second.text);
    let winner = if first.status == 201 { &first } else { &second };
    let loser = if first.status == 201 { &second } else { &first };
    assert_eq!(loser.error_code(), "cart_checked_out");
    let double_id = order_id_of(winner);
    let charges: usize = app
        .sandbox()
        .ledger()
        .iter()
        .filter(|e| e.operation == orderflow::payments::Operation::Capture && e.amount == 500)
        .count();
    assert_eq!(charges, 1, "one capture for the double click");
    // A provider that fails once is tried again under the same key.
    let cart = app.cart_with(&alice, &[("BASE-2", 1)]).await;
    let flaky = app.checkout(&alice, &cart, "tok_error_once").await;
    flaky.assert_status(201);
    let flaky_id = order_id_of(&flaky);
    assert_eq!(app.sandbox().charges(&flaky_id), 1);

    // Later commands run through the usual saga: cancel refunds, restocks.
    let cancelled = app
        .post(
            &format!("/api/v1/orders/{paid_id}/cancel"),
            json!({}),
            Some(&alice),
        )
        .await;
    cancelled.assert_status(200);
    assert_eq!(cancelled.body["status"], "cancelled");
    assert_eq!(cancelled.body["payment"]["refunded"], 3000);
    assert_eq!(app.stock(&admin, "BASE-1").await, (3, 0));

    let acknowledged = [paid_id, declined_id, short_id, double_id, flaky_id];
    let audit = invariants::check(&app.database().await, &acknowledged)
        .await
        .unwrap();
    assert!(audit.passed(), "{:#?}", audit.violations);
    assert_eq!((audit.orders, audit.unsettled), (5, 0));
}

async fn baseline_flash_sale_sells_the_stock_once(backend: Backend) {
    const STOCK: i64 = 10;
    let app = spawn_baseline(backend, |s| {
        s.database.pool_size = Some(8);
    })
    .await;
    let admin = app.admin_token().await;
    app.create_product(&admin, "HOT-1", 900, STOCK).await;
    let mut carts = Vec::new();
    for _ in 0..8 {
        let token = app.customer_token().await;
        for _ in 0..4 {
            carts.push((token.clone(), app.cart_with(&token, &[("HOT-1", 1)]).await));
        }
    }
    let replies = futures_util::future::join_all(
        carts
            .iter()
            .map(|(token, cart)| app.checkout(token, cart, "tok_ok")),
    )
    .await;
    let mut paid = Vec::new();
    let mut acknowledged = Vec::new();
    for reply in &replies {
        match (reply.status.as_u16(), reply.error_code()) {
            (201, _) => {
                paid.push(order_id_of(reply));
                acknowledged.push(order_id_of(reply));
            }
            (409, "out_of_stock") => acknowledged.push(
                reply.body["error"]["details"]["order_id"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            ),
            _ => panic!("unexpected answer {} {}", reply.status, reply.text),
        }
    }
    assert_eq!(paid.len() as i64, STOCK, "the stock sells exactly once");
    assert_eq!(app.stock(&admin, "HOT-1").await, (0, 0));
    for order in &paid {
        assert_eq!(app.sandbox().charges(order), 1);
    }
    let audit = invariants::check(&app.database().await, &acknowledged)
        .await
        .unwrap();
    assert!(audit.passed(), "{:#?}", audit.violations);
    assert_eq!(audit.statuses.get("paid"), Some(&(STOCK as usize)));
}

/// Runs `sql` on the app's database.
async fn execute(app: &TestApp, sql: &str) {
    let db = app.database().await;
    let mut conn = db.conn().await.unwrap();
    match &mut conn {
        DbConn::Postgres(c) => c.batch_execute(sql).await.unwrap(),
        DbConn::Sqlite(c) => c.batch_execute(sql).await.unwrap(),
    }
}

/// The invariants broken after `corrupt`, restored by `restore`.
async fn broken_by(
    app: &TestApp,
    acknowledged: &[String],
    corrupt: &str,
    restore: &str,
) -> Vec<String> {
    execute(app, corrupt).await;
    let audit = invariants::check(&app.database().await, acknowledged)
        .await
        .unwrap();
    execute(app, restore).await;
    let mut names: Vec<String> = audit
        .violations
        .iter()
        .map(|v| v.invariant.to_owned())
        .collect();
    names.dedup();
    names
}

async fn the_audit_names_each_broken_invariant(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let alice = app.customer_token().await;
    app.create_product(&admin, "AUD-1", 1000, 5).await;
    let cart = app.cart_with(&alice, &[("AUD-1", 2)]).await;
    let reply = app.checkout(&alice, &cart, "tok_ok").await;
    reply.assert_status(201);
    let order = order_id_of(&reply);
    let acknowledged = vec![order.clone()];
    let db = app.database().await;
    assert!(invariants::running_sagas(&db).await.unwrap() == 0);
    let clean = invariants::check(&db, &acknowledged).await.unwrap();
    assert!(clean.passed(), "{:#?}", clean.violations);
    assert_eq!((clean.orders, clean.skus), (1, 1));

    assert_eq!(
        broken_by(
            &app,
            &acknowledged,
            "UPDATE inventory SET on_hand = on_hand - 1 WHERE sku = 'AUD-1'",
            "UPDATE inventory SET on_hand = on_hand + 1 WHERE sku = 'AUD-1'",
        )
        .await,
        ["stock_conservation"]
    );
    // Oversold stock cannot even be written (the schema's CHECK refuses
    // it); the audit's own oversell check is unit-tested in invariants.rs.
    let second_capture = format!(
        "INSERT INTO payments (id, order_id, operation, idempotency_key, amount, status, provider_ref, created_at) \
         VALUES ('p-dup', '{order}', 'capture', 'dup', 2000, 'succeeded', 'x', CURRENT_TIMESTAMP)"
    );
    assert_eq!(
        broken_by(
            &app,
            &acknowledged,
            &second_capture,
            "DELETE FROM payments WHERE id = 'p-dup'"
        )
        .await,
        ["one_capture"]
    );
    // (refunded > captured is refused by the schema's CHECK; a refund paid
    // out but not counted on the order is not.)
    let uncounted_refund = format!(
        "INSERT INTO payments (id, order_id, operation, idempotency_key, amount, status, provider_ref, created_at) \
         VALUES ('p-ref', '{order}', 'refund', 'ref', 500, 'succeeded', 'x', CURRENT_TIMESTAMP)"
    );
    assert_eq!(
        broken_by(
            &app,
            &acknowledged,
            &uncounted_refund,
            "DELETE FROM payments WHERE id = 'p-ref'"
        )
        .await,
        ["refunds_within_captures"]
    );
    let leftover = format!(
        "INSERT INTO reservations (id, sku, order_id, quantity, expires_at, created_at) \
         VALUES ('r-left', 'AUD-1', '{order}', 1, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
    );
    let names = broken_by(
        &app,
        &acknowledged,
        &leftover,
        "DELETE FROM reservations WHERE id = 'r-left'",
    )
    .await;
    assert!(
        names.contains(&"no_reservation_for_finished_order".to_owned()),
        "{names:?}"
    );
    let names = broken_by(
        &app,
        &[order.clone(), uuid::Uuid::now_v7().to_string()],
        "SELECT 1",
        "SELECT 1",
    )
    .await;
    assert_eq!(names, ["acknowledged_order_present"]);
    let after = invariants::check(&db, &acknowledged).await.unwrap();
    assert!(after.passed(), "restored: {:#?}", after.violations);
}

both_backends!(
    baseline_checkout_answers_like_orderflow,
    baseline_flash_sale_sells_the_stock_once,
    the_audit_names_each_broken_invariant,
);

/// The engine's own binary has no baseline: asked for it, it says where it
/// went instead of starting.
#[test]
fn the_engine_binary_says_where_the_baseline_went() {
    let dir = tempfile::tempdir().unwrap();
    for how in [vec!["serve", "--engine", "baseline"], vec!["serve"]] {
        let mut cmd = orderflow_command(dir.path());
        cmd.args(&how)
            .env("ORDERFLOW__CHECKOUT__ENGINE", "baseline");
        let (status, _stdout, stderr) = run_to_completion(cmd);
        assert_eq!(status.code(), Some(1), "{how:?}: {stderr}");
        assert!(
            stderr.contains("orderflow-bench-engine") && stderr.contains("docs/benchmarks.md"),
            "{how:?}: {stderr}"
        );
    }
}
