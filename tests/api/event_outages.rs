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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_consumers_holding_nothing_are_pruned_from_the_stream_group() {
    use orderflow::config::RedisSettings;
    use orderflow::db::outbox::{OutboxEvent, Publisher};
    use orderflow::events::bus::{Bus, GROUP};
    use orderflow::redis_conn::RedisConn;

    let test_redis = TestRedis::create().await;
    let settings = RedisSettings {
        url: Some(SecretString::from(test_redis.url.clone())),
        key_prefix: test_redis.prefix.clone(),
        connect_timeout_ms: 2000,
        response_timeout_ms: 2000,
    };
    let bus = Bus::new(RedisConn::from_settings(&settings).unwrap(), "me", 1000);
    // The first read makes the group.
    bus.receive(10, Duration::from_millis(10)).await.unwrap();
    let event = OutboxEvent {
        id: uuid::Uuid::now_v7().to_string(),
        event_type: "order.created".to_owned(),
        aggregate_id: "o".to_owned(),
        payload: "{}".to_owned(),
        created_at: chrono::Utc::now().naive_utc(),
    };
    bus.publish(std::slice::from_ref(&event)).await.unwrap();
    let client = redis::Client::open(test_redis.url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("{}:events", test_redis.prefix);
    // "holder" takes the entry and never acknowledges it; "ghost" holds nothing.
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg(&["GROUP", GROUP, "holder", "COUNT", "1", "STREAMS", &key, ">"])
        .query_async(&mut conn)
        .await
        .unwrap();
    // "me" too, whatever the Redis version's rule for making consumers on reads.
    for name in ["ghost", "me"] {
        let _: i64 = redis::cmd("XGROUP")
            .arg(&["CREATECONSUMER", &key, GROUP, name])
            .query_async(&mut conn)
            .await
            .unwrap();
    }

    assert_eq!(bus.prune_consumers(Duration::ZERO).await.unwrap(), 1);
    let reply: redis::streams::StreamInfoConsumersReply = redis::cmd("XINFO")
        .arg(&["CONSUMERS", &key, GROUP])
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut names: Vec<String> = reply.consumers.into_iter().map(|c| c.name).collect();
    names.sort();
    assert_eq!(
        names,
        ["holder", "me"],
        "the one holding an entry and this process stay"
    );
    assert_eq!(
        bus.prune_consumers(Duration::from_secs(3600))
            .await
            .unwrap(),
        0,
        "nobody has been idle for an hour"
    );
}
