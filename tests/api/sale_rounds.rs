//! Two engine processes on one PostgreSQL database run several flash sales
//! in a row, each buyer's whole flow (cart, line, checkout with the sandbox
//! provider) on one of them: every round sells each unit once, every refusal
//! is truthful, and no task starves the pools.
//!
//! The pools are small and their wait is short, so a task that keeps a
//! connection while it awaits something else (an actor, a provider, Redis,
//! a timer or a second connection) shows as requests that wait out the pool
//! and as units left unsold, not as a slow sale (issue 15, "Pool
//! starvation": the stall came in half the runs, hence the rounds).

use serde_json::json;

use crate::checkout_load::{call, database, engine_with, settle_accepted, token_of, Tally};
use crate::support::app::{http_client, read, Reply, ADMIN_EMAIL, ADMIN_PASSWORD, PASSWORD};
use crate::support::backends::TestDatabase;
use crate::support::process::EngineProcess;
use crate::support::shop::order_id_of;
use crate::support::Backend;

const ROUNDS: usize = 4;
/// Units per round; three buyers per unit.
const UNITS: i64 = 30;
const BUYERS: usize = 3 * UNITS as usize;
/// deadpool's words for a request that waited out the pool.
const POOL_TIMEOUT: &str = "waiting for a slot to become available";

/// What one buyer's flow came to.
enum Flow {
    /// The checkout answered (any status).
    CheckedOut(Reply),
    /// The cart or its line was refused with 503 and `Retry-After`.
    Unavailable(String),
    /// The cart or its line failed otherwise.
    Failed(String),
}

/// One buyer: a cart, one unit of `sku`, the checkout; all on `engine`.
async fn buy(client: &reqwest::Client, engine: &EngineProcess, token: &str, sku: &str) -> Flow {
    let cart = call(client, engine.url("/api/v1/carts"), json!({}), Some(token)).await;
    if cart.status != 201 {
        return refused("cart", &cart);
    }
    let id = cart.body["id"].as_str().expect("cart id").to_owned();
    let line = call(
        client,
        engine.url(&format!("/api/v1/carts/{id}/items")),
        json!({"sku": sku, "quantity": 1}),
        Some(token),
    )
    .await;
    if line.status != 200 {
        return refused("line", &line);
    }
    Flow::CheckedOut(
        call(
            client,
            engine.url(&format!("/api/v1/carts/{id}/checkout")),
            json!({"payment": {"token": "tok_ok"}}),
            Some(token),
        )
        .await,
    )
}

fn refused(what: &str, reply: &Reply) -> Flow {
    let text = format!("{what}: {} {}", reply.status, reply.text);
    if reply.status == 503 && reply.header("retry-after").is_some() {
        Flow::Unavailable(text)
    } else {
        Flow::Failed(text)
    }
}

/// Sorts checkout answers: paid, `out_of_stock`, 503 with `Retry-After`
/// (counted apart, allowed), anything else (202s are settled afterwards).
fn sort_out(flows: Vec<Flow>) -> (Tally, Vec<String>) {
    let mut t = Tally::default();
    let mut unavailable = Vec::new();
    for flow in flows {
        match flow {
            Flow::CheckedOut(r) => match (r.status.as_u16(), r.body["status"].as_str()) {
                (201, Some("paid")) => t.paid.push(order_id_of(&r)),
                (409, _) if r.error_code() == "out_of_stock" => t.out_of_stock += 1,
                (503, _) if r.header("retry-after").is_some() => {
                    unavailable.push(format!("checkout: {}", r.text))
                }
                _ => t.other.push(format!("{} {}", r.status, r.text)),
            },
            Flow::Unavailable(text) => unavailable.push(text),
            Flow::Failed(text) => t.other.push(text),
        }
    }
    (t, unavailable)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engines_sell_every_unit_once_round_after_round() {
    let test_db = TestDatabase::create(Backend::Postgres).await;
    let workdir = tempfile::tempdir().unwrap();
    let client = http_client();
    let env = [
        // Small pools and a short wait: starvation fails the test.
        ("ORDERFLOW__DATABASE__POOL_SIZE", "4"),
        ("ORDERFLOW__DATABASE__CONNECT_TIMEOUT_MS", "2000"),
        // The sandbox provider keeps its ledger in each engine's memory:
        // sagas stay with the engine that started them.
        ("ORDERFLOW__SAGAS__LEASE_TTL_S", "60"),
    ];
    let engines = [
        engine_with(&test_db.url, workdir.path(), &env),
        engine_with(&test_db.url, workdir.path(), &env),
    ];
    let admin = token_of(
        call(
            &client,
            engines[0].url("/api/v1/auth/login"),
            json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}),
            None,
        )
        .await,
    )
    .await;
    let mut tokens = Vec::with_capacity(BUYERS);
    for n in 0..BUYERS {
        let email = format!(
            "round-buyer-{n}-{}@example.com",
            uuid::Uuid::new_v4().simple()
        );
        let registered = call(
            &client,
            engines[n % 2].url("/api/v1/auth/register"),
            json!({"email": email, "password": PASSWORD, "name": "Buyer"}),
            None,
        )
        .await;
        tokens.push(token_of(registered).await);
    }
    let db = database(&test_db.url);
    let status_of = async |order: &str| -> String {
        let path = match order.strip_prefix("saga:") {
            Some(order) => format!("/api/v1/sagas/{order}"),
            None => format!("/api/v1/orders/{order}"),
        };
        let response = client
            .get(engines[0].url(&path))
            .bearer_auth(&admin)
            .send()
            .await
            .expect("order");
        let reply = read(response).await;
        match order.strip_prefix("saga:") {
            Some(_) => reply.text,
            None => reply.body["status"].as_str().unwrap_or("").to_owned(),
        }
    };

    for round in 0..ROUNDS {
        let sku = format!("ROUND-{round}");
        call(
            &client,
            engines[round % 2].url("/api/v1/products"),
            json!({"sku": sku, "name": "Flash", "price": 4900, "currency": "USD", "initial_stock": UNITS}),
            Some(&admin),
        )
        .await
        .assert_status(201);
        let rush = tokens
            .iter()
            .enumerate()
            .map(|(n, token)| buy(&client, &engines[n % 2], token, &sku));
        let (mut t, unavailable) = sort_out(futures_util::future::join_all(rush).await);
        let accepted = t.other.iter().filter(|o| o.starts_with("202")).count();
        settle_accepted(&mut t, &status_of).await;
        eprintln!(
            "round {round}: {} paid, {} out of stock, {} unavailable, {accepted} answered 202",
            t.paid.len(),
            t.out_of_stock,
            unavailable.len()
        );
        assert!(
            t.other.is_empty(),
            "round {round}: only paid, out_of_stock or 503 with Retry-After; {} others, first: {:?}",
            t.other.len(),
            t.other.first()
        );
        assert_eq!(
            t.paid.len() as i64,
            UNITS,
            "round {round}: every unit sold once; {} refused out of stock, {} unavailable: {:?}",
            t.out_of_stock,
            unavailable.len(),
            unavailable.first()
        );
        assert_eq!(
            t.out_of_stock + unavailable.len(),
            BUYERS - UNITS as usize,
            "round {round}: every other buyer was refused"
        );

        // The database agrees: the paid orders hold the units, the stock
        // is sold out with nothing left reserved, and the ledger says so.
        let mut conn = db.conn().await.unwrap();
        let paid: Vec<String> = orderflow::db::orders::statuses(&mut conn)
            .await
            .unwrap()
            .into_iter()
            .filter(|(_, status)| status == "paid")
            .map(|(id, _)| id)
            .collect();
        let sold: i64 = orderflow::db::orders::items_of(&mut conn, &paid)
            .await
            .unwrap()
            .iter()
            .filter(|item| item.sku == sku)
            .map(|item| item.quantity)
            .sum();
        assert_eq!(sold, UNITS, "round {round}: paid orders hold every unit");
        drop(conn);
        let state = orderflow::inventory::batch::load(&db, &sku)
            .await
            .expect("stock");
        let levels = state.stock.levels();
        assert_eq!((levels.on_hand, levels.reserved), (0, 0), "round {round}");
        let mut conn = db.conn().await.unwrap();
        assert_eq!(
            orderflow::db::inventory::ledger_totals(&mut conn, &sku)
                .await
                .unwrap(),
            (0, 0),
            "round {round}: the ledger agrees with the counters"
        );
        for order in &t.paid {
            let reply = status_of(order).await;
            assert_eq!(reply, "paid", "order {order}");
        }
    }

    let mut conn = db.conn().await.unwrap();
    let running = orderflow::db::sagas::list(&mut conn, Some("running"), None, None, 10)
        .await
        .unwrap();
    assert!(running.is_empty(), "every saga finished: {running:?}");
    drop(conn);
    for engine in engines {
        let (_, stdout, stderr) = engine.terminate_and_collect();
        let starved: Vec<&String> = stdout
            .iter()
            .chain(&stderr)
            .filter(|line| line.contains(POOL_TIMEOUT))
            .collect();
        assert!(
            starved.is_empty(),
            "{} waits ran out the pool, first: {:?}",
            starved.len(),
            starved.first()
        );
    }
}
