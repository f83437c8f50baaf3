//! The load benches' parts: the baseline checkout engine answers as
//! orderflow does and never oversells; the invariant audit passes on a real
//! shop and names each invariant it finds broken; and the `orderflow-bench`
//! binary runs each scenario end to end against both engines.

use std::process::Command;

use diesel_async::SimpleAsyncConnection;
use orderflow::config::{CheckoutEngine, Settings};
use orderflow::db::DbConn;
use orderflow::invariants;
use serde_json::{json, Value};

use crate::both_backends;
use crate::support::app::{TestApp, ADMIN_EMAIL, ADMIN_PASSWORD};
use crate::support::backends::postgres_admin_url;
use crate::support::shop::order_id_of;
use crate::support::Backend;

fn baseline(settings: &mut Settings) {
    settings.checkout.engine = CheckoutEngine::Baseline;
}

async fn status_of(app: &TestApp, token: &str, order: &str) -> Value {
    app.get(&format!("/api/v1/orders/{order}"), Some(token))
        .await
        .body
}

async fn baseline_checkout_answers_like_orderflow(backend: Backend) {
    let app = TestApp::spawn_with(backend, baseline).await;
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
    let app = TestApp::spawn_with(backend, |s| {
        baseline(s);
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

/// The bench binary with a fresh output directory.
fn bench(out: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_orderflow-bench"));
    cmd.env_remove("ORDERFLOW_BENCH_POSTGRES")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .args(["--no-progress", "--out"])
        .arg(out)
        .args(["--engine-bin", env!("CARGO_BIN_EXE_orderflow")]);
    cmd
}

fn report_of(out: &std::path::Path) -> Value {
    let json = std::fs::read_dir(out)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .expect("a JSON report");
    let svg = json.with_extension("svg");
    let chart = std::fs::read_to_string(&svg).expect("an SVG chart beside it");
    assert!(chart.starts_with("<svg") && chart.contains("checkout latency"));
    serde_json::from_slice(&std::fs::read(json).unwrap()).unwrap()
}

/// Each scenario, both engines, on the given database: the bench exits 0,
/// the invariants held, and the report has the figures.
fn run_scenarios(postgres: Option<String>) {
    for (scenario, extra) in [
        ("flash-sale", vec!["--stock", "15", "--customers", "6"]),
        (
            "catalog",
            vec!["--skus", "40", "--checkouts", "12", "--customers", "4"],
        ),
        (
            "mixed",
            vec!["--skus", "20", "--checkouts", "12", "--customers", "4"],
        ),
    ] {
        let out = tempfile::tempdir().unwrap();
        let mut cmd = bench(out.path());
        cmd.args([
            "--scenario",
            scenario,
            "--engine",
            "both",
            "--duration",
            "60s",
        ])
        .args(&extra);
        if let Some(url) = &postgres {
            cmd.args(["--postgres", url]);
        }
        let output = cmd.output().expect("running orderflow-bench");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{scenario}: exit {}\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.contains("orderflow ÷ baseline"), "{stdout}");
        let report = report_of(out.path());
        let runs = report["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 2);
        for run in runs {
            let engine = run["engine"].as_str().unwrap();
            assert_eq!(
                run["invariants"]["violations"],
                json!([]),
                "{scenario} {engine}"
            );
            assert!(
                run["measured"]["operations"]["checkout"]["count"]
                    .as_u64()
                    .unwrap()
                    > 0
            );
            assert!(
                run["measured"]["operations"]["checkout"]["p99_ms"]
                    .as_f64()
                    .unwrap()
                    > 0.0
            );
            assert!(run["outcome"]["acknowledged_orders"].as_u64().unwrap() > 0);
            if scenario == "flash-sale" {
                // Paid in the database, whether answered 201 or (a slow
                // saga) 202 first.
                assert_eq!(
                    run["invariants"]["statuses"]["paid"], 15,
                    "{engine} sold the stock once"
                );
                assert_eq!(run["outcome"]["sold_out"], true);
            } else {
                assert!(run["outcome"]["checkout_attempts"].as_u64().unwrap() <= 12);
            }
        }
        assert!(report["ratio"]["checkouts_per_s"].as_f64().unwrap() > 0.0);
    }
}

#[test]
fn the_bench_runs_each_scenario_on_sqlite() {
    run_scenarios(None);
}

#[test]
fn the_bench_runs_each_scenario_on_postgres() {
    run_scenarios(Some(postgres_admin_url()));
}

/// Runs the bench against `app` with `args`; returns its report.
fn bench_against(app: &TestApp, args: &[&str]) -> Value {
    let out = tempfile::tempdir().unwrap();
    let output = bench(out.path())
        .args(args)
        .args([
            "--target",
            &app.address,
            "--database-url",
            app.database_url(),
        ])
        .args([
            "--admin-email",
            ADMIN_EMAIL,
            "--admin-password",
            ADMIN_PASSWORD,
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{args:?}: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    report_of(out.path())
}

/// The bench against an engine it did not start: the invariant check reads
/// the engine's database; a bad flag is a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bench_drives_a_running_engine() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let report = bench_against(
        &app,
        &[
            "--scenario",
            "catalog",
            "--skus",
            "10",
            "--checkouts",
            "5",
            "--customers",
            "2",
        ],
    );
    assert_eq!(report["backend"], "external");
    let run = &report["runs"][0];
    assert_eq!(run["outcome"]["checkout_attempts"], 5);
    // Every order made is one a client was told about (a loaded machine
    // may refuse a flow before its checkout, with 503).
    assert_eq!(
        run["invariants"]["orders"],
        run["outcome"]["acknowledged_orders"]
    );
    assert!(run["invariants"]["orders"].as_u64().unwrap() >= 1);
    let made = run["invariants"]["orders"].clone();

    let report = bench_against(
        &app,
        &[
            "--scenario",
            "carts",
            "--skus",
            "5",
            "--checkouts",
            "6",
            "--customers",
            "2",
        ],
    );
    let run = &report["runs"][0];
    let refused = run["measured"]["operations"]["create_cart"]["errors"]
        .as_u64()
        .unwrap();
    assert_eq!(
        run["outcome"]["carts_created"].as_u64().unwrap() + refused,
        6
    );
    assert_eq!(run["measured"]["checkouts"], 0);
    assert_eq!(
        run["invariants"]["orders"], made,
        "abandoned carts make no orders"
    );

    let out = tempfile::tempdir().unwrap();
    let refused = bench(out.path())
        .args(["--scenario", "mixed", "--mix", "browse=1,steal=1"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("unknown action `steal`"));
}
