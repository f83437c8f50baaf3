//! Backpressure: a load far beyond what the engine admits is answered at
//! once, with 503 `overloaded` and `Retry-After`, never a timeout or a 500;
//! health answers throughout; and every order acknowledged with a 2xx
//! exists and ends settled, with its stock accounted for.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::both_backends;
use crate::support::app::{read, Reply};
use crate::support::shop::order_id_of;
use crate::support::{Backend, TestApp};

const SKUS: [&str; 3] = ["LOAD-A", "LOAD-B", "LOAD-C"];
const STOCK: i64 = 60;
/// Clients sending back to back, and what each sends.
const CLIENTS: usize = 64;
const REQUESTS_PER_CLIENT: usize = 8;
const REQUESTS: usize = CLIENTS * REQUESTS_PER_CLIENT;
/// Admitted at once; the load is many times this.
const MAX_IN_FLIGHT: usize = 8;

async fn far_beyond_capacity_is_shed_not_timed_out(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| {
        s.http.max_in_flight = Some(MAX_IN_FLIGHT);
        s.actors.mailbox_capacity = 4;
    })
    .await;
    let admin = app.admin_token().await;
    for sku in SKUS {
        app.create_product(&admin, sku, 250, STOCK).await;
    }
    let customers = [app.customer_token().await, app.customer_token().await];

    // Health is polled all through the storm.
    let storming = Arc::new(AtomicBool::new(true));
    let health = {
        let (client, url, storming) = (app.client.clone(), app.url("/healthz"), storming.clone());
        tokio::spawn(async move {
            let mut answers = Vec::new();
            while storming.load(Ordering::Relaxed) {
                let status = client
                    .get(&url)
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0);
                answers.push(status);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            answers
        })
    };

    let started = Instant::now();
    let storm = (0..CLIENTS).map(|c| {
        let client = app.client.clone();
        let url = app.url("/api/v1/orders");
        let token = customers[c % 2].clone();
        tokio::spawn(async move {
            let mut replies = Vec::with_capacity(REQUESTS_PER_CLIENT);
            for i in 0..REQUESTS_PER_CLIENT {
                let body = json!({
                    "items": [{"sku": SKUS[(c + i) % SKUS.len()], "quantity": 1 + (i % 2) as i64}],
                    "payment": {"token": "tok_ok"}
                });
                let response = client
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&body)
                    .timeout(Duration::from_secs(30))
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("a request got no answer (timeout or reset): {e}"));
                replies.push(read(response).await);
            }
            replies
        })
    });
    let replies: Vec<Reply> = futures_util::future::join_all(storm)
        .await
        .into_iter()
        .flat_map(|r| r.expect("client task"))
        .collect();
    let storm_took = started.elapsed();
    storming.store(false, Ordering::Relaxed);
    let health = health.await.unwrap();

    let mut acknowledged = Vec::new();
    let mut shed = 0;
    for reply in &replies {
        match reply.status.as_u16() {
            201 | 202 => acknowledged.push(order_id_of(reply)),
            409 => {
                // Out of stock is a truthful refusal; its order is recorded.
                reply.assert_error(409, "out_of_stock");
                acknowledged.push(order_id_of(reply));
            }
            503 => {
                reply.assert_error(503, "overloaded");
                assert_eq!(reply.header("retry-after"), Some("1"), "{}", reply.text);
                shed += 1;
            }
            other => panic!("unexpected {other} under load: {}", reply.text),
        }
    }
    assert!(
        shed > 0,
        "a load {REQUESTS} deep against {MAX_IN_FLIGHT} slots sheds some"
    );
    assert!(!acknowledged.is_empty(), "and admits some");
    assert!(!health.is_empty());
    // A probe that got no answer within 5 s counts as 0.
    assert!(
        health.iter().all(|s| *s == 200),
        "/healthz must answer throughout: {health:?}"
    );
    eprintln!(
        "overload: {REQUESTS} requests in {storm_took:?}: {} acknowledged, {shed} shed; {} health probes",
        acknowledged.len(),
        health.len()
    );

    // Every acknowledged order exists and settles; stock adds up.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut sold = std::collections::HashMap::<String, i64>::new();
    for id in &acknowledged {
        let order = loop {
            let reply = app.get(&format!("/api/v1/orders/{id}"), Some(&admin)).await;
            reply.assert_status(200);
            if reply.body["status"] != "pending" || Instant::now() > deadline {
                break reply;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        match order.body["status"].as_str().unwrap() {
            "paid" => {
                let item = &order.body["items"][0];
                *sold
                    .entry(item["sku"].as_str().unwrap().to_owned())
                    .or_default() += item["quantity"].as_i64().unwrap();
                assert_eq!(app.sandbox().charges(id), 1, "order {id} charged once");
            }
            "rejected" => assert_eq!(app.sandbox().charges(id), 0),
            other => panic!("order {id} ended {other}: {}", order.text),
        }
    }
    for sku in SKUS {
        let sold = sold.get(sku).copied().unwrap_or(0);
        assert_eq!(app.stock(&admin, sku).await, (STOCK - sold, 0), "{sku}");
    }
}

/// A hot actor's mailbox is bounded: past it, 503 `overloaded` at once, and
/// the refused change did not happen.
async fn a_full_mailbox_is_503_and_changes_nothing(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| {
        s.http.max_in_flight = Some(10_000);
        s.actors.mailbox_capacity = 1;
    })
    .await;
    let admin = app.admin_token().await;
    app.create_product(&admin, "HOT-CART", 100, 1_000).await;
    let alice = app.customer_token().await;
    let cart = app.cart_with(&alice, &[]).await;
    let items = format!("/api/v1/carts/{cart}/items");
    let adds = (0..40).map(|_| {
        app.post(
            &items,
            json!({"sku": "HOT-CART", "quantity": 1}),
            Some(&alice),
        )
    });
    let replies = futures_util::future::join_all(adds).await;
    let mut added = 0;
    let mut shed = 0;
    for reply in &replies {
        match reply.status.as_u16() {
            200 => added += 1,
            503 => {
                reply.assert_error(503, "overloaded");
                assert_eq!(reply.header("retry-after"), Some("1"));
                shed += 1;
            }
            other => panic!("unexpected {other}: {}", reply.text),
        }
    }
    assert!(added > 0 && shed > 0, "added {added}, shed {shed}");
    let view = app
        .get(&format!("/api/v1/carts/{cart}"), Some(&alice))
        .await;
    view.assert_status(200);
    assert_eq!(
        view.body["items"][0]["quantity"], added,
        "every 200 counted, no 503 did"
    );
}

both_backends!(
    far_beyond_capacity_is_shed_not_timed_out,
    a_full_mailbox_is_503_and_changes_nothing
);
