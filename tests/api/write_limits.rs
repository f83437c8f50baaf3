//! Rate limits on writes, per user and per client IP: 429 `rate_limited`
//! with `Retry-After`, nothing changed. On PostgreSQL the tests run with
//! Redis (shared budgets), on SQLite with the in-process limiter.

use serde_json::json;

use crate::both_backends;
use crate::support::app::PASSWORD;
use crate::support::{Backend, TestApp};

fn product(sku: &str) -> serde_json::Value {
    json!({"sku": sku, "name": sku, "price": 100, "currency": "USD"})
}

async fn product_count(app: &TestApp) -> usize {
    let reply = app.get("/api/v1/products?limit=200", None).await;
    reply.assert_status(200);
    reply.body["items"].as_array().expect("items").len()
}

async fn writes_are_limited_per_user(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| {
        s.rate_limits.writes_per_user = 3;
        s.rate_limits.writes_window_s = 60;
    })
    .await;
    let admin = app.admin_token().await;
    for i in 0..3 {
        app.post(
            "/api/v1/products",
            product(&format!("RL-{i}")),
            Some(&admin),
        )
        .await
        .assert_status(201);
    }
    let limited = app
        .post("/api/v1/products", product("RL-3"), Some(&admin))
        .await;
    limited.assert_error(429, "rate_limited");
    let retry_after: u64 = limited
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(
        limited.body["error"]["details"]["retry_after_s"],
        retry_after
    );
    // Refused before the handler: nothing was created.
    assert_eq!(product_count(&app).await, 3);
    app.get("/api/v1/products/RL-3", None)
        .await
        .assert_error(404, "not_found");
    // Reads are not limited; another user has a budget of its own.
    for _ in 0..5 {
        app.get("/api/v1/users/me", Some(&admin))
            .await
            .assert_status(200);
    }
    let alice = app.customer_token().await;
    app.post("/api/v1/carts", json!({}), Some(&alice))
        .await
        .assert_status(201);
}

async fn writes_are_limited_per_ip(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| {
        s.rate_limits.writes_per_ip = 4;
        s.rate_limits.writes_window_s = 60;
    })
    .await;
    // Registration is a write too: one address cannot create accounts
    // without end.
    for i in 0..4 {
        app.register(&format!("ip-{i}@example.com"), PASSWORD, "Ip")
            .await
            .assert_status(201);
    }
    app.register("ip-4@example.com", PASSWORD, "Ip")
        .await
        .assert_error(429, "rate_limited");
    app.login("ip-4@example.com", PASSWORD)
        .await
        .assert_error(429, "rate_limited");
    // Reads go on.
    app.get("/api/v1/products", None).await.assert_status(200);
}

/// Many concurrent writes cannot overrun the budget.
async fn concurrent_writes_stay_within_the_budget(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| {
        s.rate_limits.writes_per_user = 5;
        s.rate_limits.writes_window_s = 3600;
    })
    .await;
    let admin = app.admin_token().await;
    let writes = (0..20).map(|i| {
        let app = &app;
        let admin = admin.clone();
        async move {
            app.post("/api/v1/products", product(&format!("C-{i}")), Some(&admin))
                .await
        }
    });
    let replies = futures_util::future::join_all(writes).await;
    let created = replies.iter().filter(|r| r.status == 201).count();
    let limited = replies.iter().filter(|r| r.status == 429).count();
    assert_eq!((created, limited), (5, 15));
    assert_eq!(product_count(&app).await, 5);
}

both_backends!(
    writes_are_limited_per_user,
    writes_are_limited_per_ip,
    concurrent_writes_stay_within_the_budget
);
