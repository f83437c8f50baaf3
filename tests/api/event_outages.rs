//! Events across outages and processes: a Redis outage delays events and
//! loses none; two engine processes on one database and one Redis deliver
//! each event once.

use std::time::Duration;

use reqwest::Method;
use secrecy::SecretString;
use serde_json::{json, Value};

use crate::support::app::{http_client, read, Reply, ADMIN_EMAIL, ADMIN_PASSWORD, PASSWORD};
use crate::support::backends::{redis_url, Backend, TestDatabase, TestRedis};
use crate::support::process::{eventually, orderflow_command, EngineProcess};
use crate::support::proxy::TcpProxy;
use crate::support::receiver::Receiver;
use crate::support::shop::order_id_of;
use crate::support::TestApp;
use crate::webhooks::{by_event, register};

const DEADLINE: Duration = Duration::from_secs(60);

fn redis_upstream() -> String {
    redis_url()
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .expect("host:port")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_delays_events_and_loses_none() {
    let proxy = TcpProxy::start(redis_upstream()).await;
    let proxied = format!("redis://127.0.0.1:{}/0", proxy.port);
    let app = TestApp::spawn_with(Backend::Postgres, |s| {
        s.redis.url = Some(SecretString::from(proxied));
        s.redis.connect_timeout_ms = 300;
        s.redis.response_timeout_ms = 300;
    })
    .await;
    let receiver = Receiver::start(&[], 200).await;
    let admin = app.admin_token().await;
    register(
        &app,
        &admin,
        &receiver.url,
        &["order.created", "order.paid"],
    )
    .await;
    app.create_product(&admin, "OUT-1", 100, 100).await;
    let customer = app.customer_token().await;

    proxy.go_down();
    let mut orders = Vec::new();
    for _ in 0..5 {
        let reply = app.place_order(&customer, &[("OUT-1", 1)], "tok_ok").await;
        orders.push(order_id_of(reply.assert_status(201)));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        receiver.received().is_empty(),
        "nothing can be published while Redis is down"
    );
    let metrics = app.get("/metrics", None).await.text;
    let lag: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("outbox_lag_seconds "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("outbox_lag_seconds: {metrics}"));
    assert!(lag > 0.5, "the outbox lags while Redis is down: {lag}");

    proxy.come_back();
    eventually(
        "every event is delivered once Redis is back",
        DEADLINE,
        || async { receiver.accepted().len() >= 10 },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let counts = by_event(&receiver);
    assert_eq!(counts.len(), 10, "{counts:?}");
    assert!(counts.values().all(|n| *n == 1), "each once: {counts:?}");
    for order in &orders {
        for kind in ["order.created", "order.paid"] {
            assert!(
                receiver.accepted().iter().any(|r| {
                    let body = r.json();
                    body["type"] == kind && body["data"]["order_id"] == order.as_str()
                }),
                "{kind} of {order}"
            );
        }
    }
}

async fn call(
    base: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
    token: Option<&str>,
) -> Reply {
    let mut request = http_client().request(method, format!("{base}{path}"));
    if let Some(body) = body {
        request = request.json(&body);
    }
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    read(request.send().await.expect("request")).await
}

fn engine(db: &TestDatabase, redis: &TestRedis, workdir: &std::path::Path) -> EngineProcess {
    let mut cmd = orderflow_command(workdir);
    cmd.env("ORDERFLOW_ENV", "test")
        .env("ORDERFLOW__DATABASE__URL", &db.url)
        .env("ORDERFLOW__REDIS__URL", &redis.url)
        .env("ORDERFLOW__REDIS__KEY_PREFIX", &redis.prefix)
        .env("ORDERFLOW__AUTH__BOOTSTRAP_ADMIN_EMAIL", ADMIN_EMAIL)
        .env("ORDERFLOW__AUTH__BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("ORDERFLOW__HTTP__WORKERS", "1");
    EngineProcess::start(cmd)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engine_processes_deliver_each_event_once() {
    let db = TestDatabase::create(Backend::Postgres).await;
    let redis = TestRedis::create().await;
    let workdir = tempfile::tempdir().unwrap();
    let first = engine(&db, &redis, workdir.path());
    let second = engine(&db, &redis, workdir.path());
    let (a, b) = (first.address.clone(), second.address.clone());

    let login = call(
        &a,
        Method::POST,
        "/api/v1/auth/login",
        Some(json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})),
        None,
    )
    .await;
    let admin = login.body["access_token"]
        .as_str()
        .expect("admin token")
        .to_owned();
    let receiver = Receiver::start(&[], 200).await;
    call(
        &a,
        Method::POST,
        "/api/v1/webhooks",
        Some(json!({"url": receiver.url, "events": ["order.created", "order.paid"]})),
        Some(&admin),
    )
    .await
    .assert_status(201);
    call(&a, Method::POST, "/api/v1/products", Some(json!({"sku": "TWO-1", "name": "Two", "price": 100, "currency": "USD", "initial_stock": 1000})), Some(&admin))
        .await
        .assert_status(201);
    let registered = call(
        &b,
        Method::POST,
        "/api/v1/auth/register",
        Some(json!({"email": "two@example.com", "password": PASSWORD, "name": "Two"})),
        None,
    )
    .await;
    let customer = registered.body["access_token"]
        .as_str()
        .expect("token")
        .to_owned();

    const ORDERS: usize = 20;
    let placements = (0..ORDERS).map(|i| {
        let base = if i % 2 == 0 { a.clone() } else { b.clone() };
        let customer = customer.clone();
        async move {
            call(&base, Method::POST, "/api/v1/orders", Some(json!({"items": [{"sku": "TWO-1", "quantity": 1}], "payment": {"provider": "sandbox", "token": "tok_ok"}})), Some(&customer)).await
        }
    });
    for reply in futures_util::future::join_all(placements).await {
        reply.assert_status(201);
    }
    eventually("every event reaches the receiver", DEADLINE, || async {
        by_event(&receiver).len() >= 2 * ORDERS
    })
    .await;
    // Both processes keep running and polling: nothing more may arrive.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let counts = by_event(&receiver);
    assert_eq!(counts.len(), 2 * ORDERS);
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    assert_eq!(
        receiver.received().len(),
        2 * ORDERS,
        "no retries were needed"
    );
    drop(first);
    drop(second);
}
