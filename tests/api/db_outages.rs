//! PostgreSQL ends the engine's connections under load (`pg_terminate_backend`,
//! SQLSTATE 57P01 "terminating connection due to administrator command", as a
//! fast shutdown or a failover does): every answer is a 2xx, a 4xx or 503
//! `unavailable` with `Retry-After`, never a 500, and every order that was
//! acknowledged is there afterwards.
//!
//! Only the engine's own connections are ended: they carry an
//! `application_name` of their own. The shared server is never restarted.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use diesel_async::{AsyncConnection, AsyncPgConnection};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use crate::support::app::Reply;
use crate::support::backends::postgres_admin_url;
use crate::support::shop::order_id_of;
use crate::support::{Backend, TestApp};

const SKUS: [&str; 3] = ["KILL-1", "KILL-2", "KILL-3"];
const BUYERS: usize = 8;
/// Rounds of `pg_terminate_backend` while the buyers shop.
const KILLS: usize = 12;

/// Ends every connection named `application_name`, except the caller's own;
/// returns how many it ended.
async fn terminate_backends(admin: &mut AsyncPgConnection, application_name: &str) -> i64 {
    use diesel_async::RunQueryDsl;
    diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(&format!(
        "(SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE application_name = '{application_name}' AND pid <> pg_backend_pid())"
    )))
    .get_result(admin)
    .await
    .expect("pg_terminate_backend")
}

/// 503s answered, for the report.
static UNAVAILABLE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// What one request answered, for the report of a failure.
fn describe(what: &str, reply: &Reply) -> String {
    format!("{what}: {} {}", reply.status, reply.text)
}

/// A 2xx, a 4xx, or 503 `unavailable` with `Retry-After`; anything else is
/// returned as a failure.
fn check(what: &str, reply: &Reply) -> Option<String> {
    let status = reply.status.as_u16();
    if status == 503 {
        UNAVAILABLE.fetch_add(1, Ordering::SeqCst);
    }
    match status {
        200..=299 | 400..=499 => None,
        503 if reply.error_code() == "unavailable" && reply.header("retry-after").is_some() => None,
        _ => Some(describe(what, reply)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_database_connections_are_503_never_500() {
    let tag = format!("orderflow_kill_{}", uuid::Uuid::new_v4().simple());
    let app = TestApp::spawn_with(Backend::Postgres, |s| {
        let url = s.database.url.as_ref().expect("a database url");
        let tagged = format!("{}&application_name={tag}", url.expose_secret());
        s.database.url = Some(SecretString::from(tagged));
        s.database.pool_size = Some(8);
        // The saga outlives an outage of a second or two instead of parking.
        s.sagas.retry_backoff_ms = 100;
        s.checkout.sync_wait_ms = 10_000;
    })
    .await;
    let admin = app.admin_token().await;
    for sku in SKUS {
        app.create_product(&admin, sku, 1500, 1_000_000).await;
    }
    let mut buyers = Vec::new();
    for _ in 0..BUYERS {
        let token = app.customer_token().await;
        let cart = app.cart_with(&token, &[]).await;
        buyers.push((token, cart));
    }
    let mut killer_conn = AsyncPgConnection::establish(&postgres_admin_url())
        .await
        .expect("an admin connection");
    // The engine's pooled connections carry the tag: ending them is the
    // first outage, and the test would prove nothing if none were found.
    let mut ended = terminate_backends(&mut killer_conn, &tag).await;
    assert!(ended > 0, "no connection is named {tag}");

    let app = Arc::new(app);
    let done = Arc::new(AtomicBool::new(false));
    let shoppers: Vec<_> = buyers
        .into_iter()
        .enumerate()
        .map(|(n, (token, cart))| {
            let (app, done) = (app.clone(), done.clone());
            tokio::spawn(async move {
                let mut failures = Vec::new();
                let mut acknowledged = Vec::new();
                let mut answers = 0usize;
                let mut round = 0usize;
                // At least a few rounds each, and on until the kills are over.
                while round < 3 || !done.load(Ordering::SeqCst) {
                    let sku = SKUS[(n + round) % SKUS.len()];
                    let line = app
                        .post(
                            &format!("/api/v1/carts/{cart}/items"),
                            json!({"sku": sku, "quantity": 1}),
                            Some(&token),
                        )
                        .await;
                    failures.extend(check("add a cart line", &line));
                    let products = app.get("/api/v1/products?limit=20", Some(&token)).await;
                    failures.extend(check("list products", &products));
                    let placed = app.place_order(&token, &[(sku, 1)], "tok_ok").await;
                    failures.extend(check("place an order", &placed));
                    if matches!(placed.status.as_u16(), 201 | 202) {
                        acknowledged.push((order_id_of(&placed), placed.status.as_u16()));
                    }
                    answers += 3;
                    round += 1;
                }
                (failures, acknowledged, answers)
            })
        })
        .collect();
    for _ in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(100)).await;
        ended += terminate_backends(&mut killer_conn, &tag).await;
    }
    done.store(true, Ordering::SeqCst);

    let mut failures = Vec::new();
    let mut acknowledged = Vec::new();
    let mut answers = 0;
    for shopper in shoppers {
        let (f, a, n) = shopper.await.expect("a shopper");
        failures.extend(f);
        acknowledged.extend(a);
        answers += n;
    }
    assert!(
        failures.is_empty(),
        "{} of {answers} answers were neither 2xx, 4xx nor 503 unavailable with Retry-After: {failures:#?}",
        failures.len()
    );
    assert!(!acknowledged.is_empty(), "no order was acknowledged");
    eprintln!(
        "{answers} answers ({} of them 503), {} orders acknowledged, {ended} connections ended",
        UNAVAILABLE.load(Ordering::SeqCst),
        acknowledged.len()
    );

    // Every acknowledged order is there; one answered paid is still paid.
    for (order, answered) in &acknowledged {
        let mut reply = app
            .get(&format!("/api/v1/orders/{order}"), Some(&admin))
            .await;
        for _ in 0..50 {
            if reply.status != 503 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            reply = app
                .get(&format!("/api/v1/orders/{order}"), Some(&admin))
                .await;
        }
        reply.assert_status(200);
        if *answered == 201 {
            assert_eq!(
                reply.body["status"], "paid",
                "order {order}: {}",
                reply.text
            );
        }
    }
}
