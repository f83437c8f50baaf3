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

async fn register_from(app: &TestApp, email: &str, forwarded_for: &str) -> u16 {
    let response = app
        .client
        .post(app.url("/api/v1/auth/register"))
        .header("X-Forwarded-For", forwarded_for)
        .json(&json!({"email": email, "password": PASSWORD, "name": "Ip"}))
        .send()
        .await
        .expect("request failed");
    response.status().as_u16()
}

/// Behind a trusted proxy the budget is the forwarded client's; from
/// anywhere else the header is ignored, so it cannot buy a fresh budget.
async fn forwarded_addresses_count_only_from_trusted_proxies(backend: Backend) {
    let trusting = TestApp::spawn_with(backend, |s| {
        s.rate_limits.writes_per_ip = 2;
        s.http.trusted_proxies = "127.0.0.1, ::1".to_owned();
    })
    .await;
    assert_eq!(
        register_from(&trusting, "a1@example.com", "198.51.100.1").await,
        201
    );
    assert_eq!(
        register_from(&trusting, "a2@example.com", "198.51.100.1").await,
        201
    );
    assert_eq!(
        register_from(&trusting, "a3@example.com", "198.51.100.1").await,
        429
    );
    // Another client behind the same proxy has its own budget; a forged
    // outer hop does not change who the proxy says the client is.
    assert_eq!(
        register_from(&trusting, "b1@example.com", "6.6.6.6, 198.51.100.2").await,
        201
    );
    assert_eq!(
        register_from(&trusting, "b2@example.com", "198.51.100.2").await,
        201
    );
    assert_eq!(
        register_from(&trusting, "b3@example.com", "7.7.7.7, 198.51.100.2").await,
        429
    );

    let untrusting = TestApp::spawn_with(backend, |s| s.rate_limits.writes_per_ip = 2).await;
    assert_eq!(
        register_from(&untrusting, "c1@example.com", "198.51.100.3").await,
        201
    );
    assert_eq!(
        register_from(&untrusting, "c2@example.com", "198.51.100.4").await,
        201
    );
    assert_eq!(
        register_from(&untrusting, "c3@example.com", "198.51.100.5").await,
        429
    );
}

both_backends!(
    forwarded_addresses_count_only_from_trusted_proxies,
    writes_are_limited_per_user,
    writes_are_limited_per_ip,
    concurrent_writes_stay_within_the_budget
);
