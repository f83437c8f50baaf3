//! Checkout under contention and across crashes, through the real HTTP API:
//! a flash sale in one engine and in two engine processes on one database,
//! and kill -9 of an engine with checkouts in flight.

use std::collections::HashSet;
use std::time::Duration;

use secrecy::SecretString;
use serde_json::{json, Value};

use crate::support::app::{
    http_client, read, test_settings, Reply, TestApp, ADMIN_EMAIL, ADMIN_PASSWORD, PASSWORD,
};
use crate::support::backends::TestDatabase;
use crate::support::process::{eventually, orderflow_command, EngineProcess};
use crate::support::shop::order_id_of;
use crate::support::Backend;

const HOT: &str = "FLASH-1";
const STOCK: i64 = 100;
const CUSTOMERS: usize = 30;
const CHECKOUTS_PER_CUSTOMER: usize = 10;

/// What a flash sale's checkouts answered.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub paid: Vec<String>,
    pub out_of_stock: usize,
    pub other: Vec<String>,
}

pub(crate) fn tally(replies: Vec<Reply>) -> Tally {
    let mut t = Tally::default();
    for r in replies {
        match (r.status.as_u16(), r.body["status"].as_str(), r.error_code()) {
            (201, Some("paid"), _) => t.paid.push(order_id_of(&r)),
            (409, _, "out_of_stock") => t.out_of_stock += 1,
            _ => t.other.push(format!("{} {}", r.status, r.text)),
        }
    }
    t
}

/// The outcome of a checkout answered 202 (the saga outlived the wait, which
/// a loaded test machine can cause): its order's final status.
pub(crate) async fn settle_accepted(t: &mut Tally, status_of: impl AsyncFn(&str) -> String) {
    let accepted: Vec<String> = t
        .other
        .iter()
        .filter(|o| o.starts_with("202"))
        .filter_map(|o| {
            // "202 Accepted {json}"
            let body: Value = serde_json::from_str(&o[o.find('{')?..]).ok()?;
            body["order_id"].as_str().map(str::to_owned)
        })
        .collect();
    t.other.retain(|o| !o.starts_with("202"));
    // One deadline for all of them: they settle side by side, not in turn.
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    for order in accepted {
        loop {
            match status_of(&order).await.as_str() {
                "paid" => break t.paid.push(order.clone()),
                "rejected" => break t.out_of_stock += 1,
                "pending" if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                other => {
                    let saga = status_of(&format!("saga:{order}")).await;
                    break t
                        .other
                        .push(format!("order {order} ended {other}; saga {saga}"));
                }
            }
        }
    }
}

/// Stock conservation from the ledger, and nothing left reserved.
async fn assert_stock_conserved(db: &orderflow::db::Database, sold: i64) {
    let state = orderflow::inventory::batch::load(db, HOT)
        .await
        .expect("stock");
    let levels = state.stock.levels();
    assert_eq!((levels.on_hand, levels.reserved), (STOCK - sold, 0));
    let mut conn = db.conn().await.unwrap();
    assert_eq!(
        orderflow::db::inventory::ledger_totals(&mut conn, HOT)
            .await
            .unwrap(),
        (STOCK - sold, 0),
        "the ledger agrees with the counters"
    );
}

async fn flash_sale_through_checkout(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| {
        s.checkout.sync_wait_ms = 120_000;
        // Production's retry pace (the test default is hurried), and parked
        // sagas tried again soon: a loaded test machine is a flaky provider.
        s.sagas.retry_backoff_ms = 200;
        s.sagas.retry_parked_after_s = 2;
        s.database.pool_size = Some(8);
    })
    .await;
    let admin = app.admin_token().await;
    app.create_product(&admin, HOT, 4900, STOCK).await;
    let mut carts = Vec::new();
    for _ in 0..CUSTOMERS {
        let token = app.customer_token().await;
        for _ in 0..CHECKOUTS_PER_CUSTOMER {
            carts.push((token.clone(), app.cart_with(&token, &[(HOT, 1)]).await));
        }
    }
    let rush = carts
        .iter()
        .map(|(token, cart)| app.checkout(token, cart, "tok_ok"));
    let mut t = tally(futures_util::future::join_all(rush).await);
    let status_of = async |order: &str| -> String {
        let reply = app
            .get(&format!("/api/v1/orders/{order}"), Some(&admin))
            .await;
        reply.body["status"].as_str().unwrap_or("").to_owned()
    };
    settle_accepted(&mut t, status_of).await;
    assert!(
        t.other.is_empty(),
        "only paid or out_of_stock, {} others, first: {:?}",
        t.other.len(),
        t.other.first()
    );
    if t.paid.len() as i64 != STOCK {
        let db = app.database().await;
        let mut conn = db.conn().await.unwrap();
        let mut statuses = std::collections::BTreeMap::new();
        for (_, status) in orderflow::db::orders::statuses(&mut conn).await.unwrap() {
            *statuses.entry(status).or_insert(0) += 1;
        }
        let state = orderflow::inventory::batch::load(&db, HOT)
            .await
            .expect("stock");
        panic!(
            "every unit sold, none twice: {} paid, {} refused; orders by status {statuses:?}; stock {:?} with {} reservations",
            t.paid.len(),
            t.out_of_stock,
            state.stock.levels(),
            state.stock.reservations().count()
        );
    }
    assert_eq!(
        t.out_of_stock,
        CUSTOMERS * CHECKOUTS_PER_CUSTOMER - STOCK as usize
    );
    for order in &t.paid {
        assert_eq!(app.sandbox().charges(order), 1);
    }
    assert_stock_conserved(&app.database().await, STOCK).await;
}

crate::both_backends!(flash_sale_through_checkout);

/// `orderflow serve` on `db_url`, as an operator runs it, with the test
/// environment's settings (short saga leases).
fn engine(db_url: &str, workdir: &std::path::Path) -> EngineProcess {
    engine_with(db_url, workdir, &[])
}

pub(crate) fn engine_with(
    db_url: &str,
    workdir: &std::path::Path,
    env: &[(&str, &str)],
) -> EngineProcess {
    let mut cmd = orderflow_command(workdir);
    cmd.env("ORDERFLOW_ENV", "test")
        .env("ORDERFLOW__DATABASE__URL", db_url)
        .env("ORDERFLOW__DATABASE__POOL_SIZE", "8")
        .env("ORDERFLOW__CHECKOUT__SYNC_WAIT_MS", "120000")
        .env("ORDERFLOW__SAGAS__RETRY_BACKOFF_MS", "200")
        .env("ORDERFLOW__SAGAS__RETRY_PARKED_AFTER_S", "2")
        .env("ORDERFLOW__AUTH__BOOTSTRAP_ADMIN_EMAIL", ADMIN_EMAIL)
        .env("ORDERFLOW__AUTH__BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PASSWORD);
    cmd.envs(env.iter().copied());
    EngineProcess::start(cmd)
}

pub(crate) async fn call(
    client: &reqwest::Client,
    url: String,
    body: Value,
    token: Option<&str>,
) -> Reply {
    let mut request = client.post(url).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    match request.send().await {
        Ok(response) => read(response).await,
        Err(e) => panic!("request failed: {e}"),
    }
}

pub(crate) async fn token_of(reply: Reply) -> String {
    reply.assert_status(if reply.status == 200 { 200 } else { 201 });
    reply.body["access_token"].as_str().unwrap().to_owned()
}

/// Registers customers on `engine` and gives each `per_customer` carts of one HOT unit.
async fn customers_with_carts(
    client: &reqwest::Client,
    engine: &EngineProcess,
    customers: usize,
    per_customer: usize,
) -> Vec<(String, String)> {
    let mut carts = Vec::new();
    for n in 0..customers {
        let email = format!("buyer-{n}-{}@example.com", uuid::Uuid::new_v4().simple());
        let token = token_of(
            call(
                client,
                engine.url("/api/v1/auth/register"),
                json!({"email": email, "password": PASSWORD, "name": "Buyer"}),
                None,
            )
            .await,
        )
        .await;
        for _ in 0..per_customer {
            let cart = call(client, engine.url("/api/v1/carts"), json!({}), Some(&token)).await;
            cart.assert_status(201);
            let id = cart.body["id"].as_str().unwrap().to_owned();
            call(
                client,
                engine.url(&format!("/api/v1/carts/{id}/items")),
                json!({"sku": HOT, "quantity": 1}),
                Some(&token),
            )
            .await
            .assert_status(200);
            carts.push((token.clone(), id));
        }
    }
    carts
}

async fn setup_product(client: &reqwest::Client, engine: &EngineProcess, stock: i64) -> String {
    let admin = token_of(
        call(
            client,
            engine.url("/api/v1/auth/login"),
            json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}),
            None,
        )
        .await,
    )
    .await;
    call(client, engine.url("/api/v1/products"), json!({"sku": HOT, "name": "Flash", "price": 4900, "currency": "USD", "initial_stock": stock}), Some(&admin))
        .await
        .assert_status(201);
    admin
}

pub(crate) fn database(url: &str) -> orderflow::db::Database {
    let mut settings = test_settings().database;
    settings.url = Some(SecretString::from(url.to_owned()));
    orderflow::db::Database::connect(&settings).expect("pool")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engine_processes_sell_each_unit_once_through_checkout() {
    let test_db = TestDatabase::create(Backend::Postgres).await;
    let workdir = tempfile::tempdir().unwrap();
    let client = http_client();
    // The sandbox provider lives in each engine's memory: a saga handed over
    // to the other engine mid-payment would find no authorization there. So
    // leases here outlast any stall of a loaded test machine; hand-over
    // itself is what the kill -9 test exercises.
    let long_leases = [("ORDERFLOW__SAGAS__LEASE_TTL_S", "60")];
    let first = engine_with(&test_db.url, workdir.path(), &long_leases);
    let admin = setup_product(&client, &first, STOCK).await;
    let second = engine_with(&test_db.url, workdir.path(), &long_leases);
    let carts = customers_with_carts(&client, &first, CUSTOMERS, CHECKOUTS_PER_CUSTOMER).await;
    // Half the checkouts go to each process, all at once.
    let rush = carts.iter().enumerate().map(|(n, (token, cart))| {
        let target = if n % 2 == 0 { &first } else { &second };
        call(
            &client,
            target.url(&format!("/api/v1/carts/{cart}/checkout")),
            json!({"payment": {"token": "tok_ok"}}),
            Some(token),
        )
    });
    let mut t = tally(futures_util::future::join_all(rush).await);
    let status_of = async |order: &str| -> String {
        let path = match order.strip_prefix("saga:") {
            Some(order) => format!("/api/v1/sagas/{order}"),
            None => format!("/api/v1/orders/{order}"),
        };
        let response = client
            .get(first.url(&path))
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
    settle_accepted(&mut t, status_of).await;
    assert!(
        t.other.is_empty(),
        "only paid or out_of_stock, {} others, first: {:?}",
        t.other.len(),
        t.other.first()
    );
    assert_eq!(t.paid.len() as i64, STOCK);
    assert_eq!(t.out_of_stock, carts.len() - STOCK as usize);
    let db = database(&test_db.url);
    assert_stock_conserved(&db, STOCK).await;
    let mut conn = db.conn().await.unwrap();
    let running = orderflow::db::sagas::list(&mut conn, Some("running"), None, None, 10)
        .await
        .unwrap();
    assert!(running.is_empty(), "every saga finished: {running:?}");
}

async fn kill_9_mid_checkout_loses_no_acknowledged_order(backend: Backend) {
    let test_db = TestDatabase::create(backend).await;
    let workdir = tempfile::tempdir().unwrap();
    let client = http_client();
    let stock = 100_000;
    let victim = engine(&test_db.url, workdir.path());
    setup_product(&client, &victim, stock).await;
    let carts = customers_with_carts(&client, &victim, 4, 40).await;

    // Checkouts in waves of 20; the engine is killed once 40 were acknowledged.
    // (order, HTTP status) of every checkout answered with 2xx.
    let (acked_tx, mut acked_rx) = tokio::sync::mpsc::unbounded_channel::<(String, u16)>();
    let checkouts = {
        let (client, base) = (client.clone(), victim.address.clone());
        tokio::spawn(async move {
            for wave in carts.chunks(20) {
                let sends = wave.iter().map(|(token, cart)| {
                    let request = client
                        .post(format!("{base}/api/v1/carts/{cart}/checkout"))
                        .bearer_auth(token)
                        .json(&json!({"payment": {"token": "tok_ok"}}))
                        .send();
                    async move {
                        match request.await {
                            Ok(response) => Some(read(response).await),
                            Err(_) => None, // the engine died mid-request
                        }
                    }
                });
                for reply in futures_util::future::join_all(sends)
                    .await
                    .into_iter()
                    .flatten()
                {
                    if reply.status.is_success() {
                        let _ = acked_tx.send((order_id_of(&reply), reply.status.as_u16()));
                    }
                }
            }
        })
    };
    let mut acked = Vec::new();
    while acked.len() < 40 {
        match tokio::time::timeout(Duration::from_secs(120), acked_rx.recv()).await {
            Ok(Some(order)) => acked.push(order),
            _ => panic!("checkouts stalled after {} acknowledgements", acked.len()),
        }
    }
    let pid = victim.pid();
    std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill -9");
    let _ = checkouts.await;
    while let Ok(order) = acked_rx.try_recv() {
        acked.push(order);
    }
    drop(victim);

    // A fresh engine on the same database finishes every saga.
    let restarted = engine(&test_db.url, workdir.path());
    let db = database(&test_db.url);
    eventually(
        "every saga reaches a terminal state",
        Duration::from_secs(60),
        || async {
            let mut conn = db.conn().await.unwrap();
            orderflow::db::sagas::list(&mut conn, Some("running"), None, None, 10)
                .await
                .unwrap()
                .is_empty()
        },
    )
    .await;
    let mut conn = db.conn().await.unwrap();
    let statuses: std::collections::HashMap<String, String> =
        orderflow::db::orders::statuses(&mut conn)
            .await
            .unwrap()
            .into_iter()
            .collect();
    for (order, answered) in &acked {
        let status = statuses.get(order).map(String::as_str);
        match answered {
            // Paid before the crash: still paid after it.
            201 => assert_eq!(status, Some("paid"), "acknowledged order {order}"),
            // Accepted, then the crash: there, and finished one way or the
            // other. (The in-memory sandbox forgets authorizations across a
            // restart, so such an order may end payment_failed.)
            _ => assert!(
                matches!(
                    status,
                    Some("paid" | "payment_failed" | "rejected" | "cancelled")
                ),
                "accepted order {order} is {status:?}"
            ),
        }
    }
    // No reservation is left for an order that is not pending.
    let state = orderflow::inventory::batch::load(&db, HOT)
        .await
        .expect("stock");
    let held: HashSet<String> = state
        .stock
        .reservations()
        .map(|r| r.order_id.to_string())
        .collect();
    for order in &held {
        assert_eq!(
            statuses.get(order).map(String::as_str),
            Some("pending"),
            "reservation left for {order}"
        );
    }
    // Stock conservation: what was sold is what paid orders hold.
    let paid = statuses.values().filter(|s| *s == "paid").count() as i64;
    let levels = state.stock.levels();
    assert_eq!(levels.on_hand, stock - paid);
    assert_eq!(
        orderflow::db::inventory::ledger_totals(&mut conn, HOT)
            .await
            .unwrap(),
        (levels.on_hand, levels.reserved)
    );
    drop(restarted);
}

crate::both_backends!(kill_9_mid_checkout_loses_no_acknowledged_order);
