//! `Idempotency-Key` (api.md, Idempotency): a retried request has its
//! effect once and gets the first answer again.

use serde_json::{json, Value};

use crate::support::app::{read, Reply};
use crate::support::shop::order_id_of;
use crate::support::{Backend, TestApp};
use crate::{backend_test, both_backends};

async fn keyed(app: &TestApp, path: &str, body: Option<Value>, token: &str, key: &str) -> Reply {
    let mut request = app
        .client
        .post(app.url(path))
        .bearer_auth(token)
        .header("Idempotency-Key", key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    read(request.send().await.expect("request failed")).await
}

/// Changes the row of idempotency key `$key` below the API, as a crash or
/// the passing of time would leave it; `$set` names columns as `k::...`.
macro_rules! update_key {
    ($db:expr, $key:expr, $set:expr) => {{
        let mut conn = $db.conn().await.unwrap();
        orderflow::with_conn!(&mut conn, |c| {
            use diesel::prelude::*;
            use diesel_async::RunQueryDsl;
            use orderflow::db::schema::idempotency_keys as k;
            diesel::update(k::table.filter(k::key.eq($key)))
                .set($set)
                .execute(c)
                .await
        })
        .unwrap()
    }};
}

fn a_second_ago() -> chrono::NaiveDateTime {
    chrono::Utc::now().naive_utc() - chrono::Duration::seconds(1)
}

fn order_body(sku: &str, quantity: i64) -> Value {
    json!({"items": [{"sku": sku, "quantity": quantity}], "payment": {"token": "tok_ok"}})
}

async fn order_count(app: &TestApp, token: &str) -> usize {
    let reply = app.get("/api/v1/orders", Some(token)).await;
    reply.assert_status(200);
    reply.body["items"].as_array().expect("items").len()
}

fn replayed(reply: &Reply) -> bool {
    reply.header("idempotent-replayed") == Some("true")
}

backend_test!(
    async fn a_checkout_sent_three_times_makes_one_order_and_one_charge(app) {
        let admin = app.admin_token().await;
        app.create_product(&admin, "IDEM-1", 1500, 10).await;
        let alice = app.customer_token().await;
        let cart = app.cart_with(&alice, &[("IDEM-1", 2)]).await;
        let path = format!("/api/v1/carts/{cart}/checkout");
        let body = json!({"payment": {"token": "tok_ok"}});

        let first = keyed(&app, &path, Some(body.clone()), &alice, "checkout-1").await;
        first.assert_status(201);
        assert!(!replayed(&first), "the first answer is not a replay");
        let order = order_id_of(&first);
        for _ in 0..2 {
            let again = keyed(&app, &path, Some(body.clone()), &alice, "checkout-1").await;
            again.assert_status(201);
            assert!(replayed(&again), "a retry is marked as replayed");
            assert_eq!(again.text, first.text, "the same answer, byte for byte");
            assert_eq!(again.header("location"), first.header("location"));
            assert_eq!(again.header("content-type"), first.header("content-type"));
        }
        assert_eq!(app.sandbox().charges(&order), 1);
        assert_eq!(order_count(&app, &alice).await, 1);
        assert_eq!(app.stock(&admin, "IDEM-1").await, (8, 0));

        // Another body under the same key is a client bug: 422, no effect.
        let other = json!({"payment": {"token": "tok_declined"}});
        keyed(&app, &path, Some(other), &alice, "checkout-1")
            .await
            .assert_error(422, "idempotency_key_reused");
        // So is the same key on another route.
        keyed(&app, "/api/v1/orders", Some(order_body("IDEM-1", 1)), &alice, "checkout-1")
            .await
            .assert_error(422, "idempotency_key_reused");
        assert_eq!(order_count(&app, &alice).await, 1);
    }
);

backend_test!(
    async fn ten_concurrent_copies_run_once(app) {
        let admin = app.admin_token().await;
        app.create_product(&admin, "IDEM-2", 700, 50).await;
        let alice = app.customer_token().await;
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let (client, url, token) = (app.client.clone(), app.url("/api/v1/orders"), alice.clone());
            tasks.push(tokio::spawn(async move {
                let response = client
                    .post(url)
                    .bearer_auth(token)
                    .header("Idempotency-Key", "burst")
                    .json(&order_body("IDEM-2", 3))
                    .send()
                    .await
                    .expect("request failed");
                read(response).await
            }));
        }
        let mut fresh = Vec::new();
        let mut replays = Vec::new();
        for task in tasks {
            let reply = task.await.unwrap();
            match reply.status.as_u16() {
                201 if replayed(&reply) => replays.push(reply),
                201 => fresh.push(reply),
                409 => assert_eq!(reply.error_code(), "idempotency_key_in_use"),
                other => panic!("unexpected {other}: {}", reply.text),
            }
        }
        assert_eq!(fresh.len(), 1, "exactly one copy runs");
        let order = order_id_of(&fresh[0]);
        for reply in &replays {
            assert_eq!(reply.text, fresh[0].text);
        }
        assert_eq!(order_count(&app, &alice).await, 1);
        assert_eq!(app.sandbox().charges(&order), 1);
        assert_eq!(app.stock(&admin, "IDEM-2").await, (47, 0));
        // Once the first has answered, every copy is a replay.
        let late = keyed(&app, "/api/v1/orders", Some(order_body("IDEM-2", 3)), &alice, "burst").await;
        late.assert_status(201);
        assert!(replayed(&late));
    }
);

backend_test!(
    async fn refusals_before_any_effect_are_not_stored_but_outcomes_are(app) {
        let admin = app.admin_token().await;
        app.create_product(&admin, "IDEM-3", 100, 1).await;
        let alice = app.customer_token().await;

        // 422 validation: nothing happened, the key stays free.
        keyed(&app, "/api/v1/orders", Some(order_body("IDEM-3", 0)), &alice, "k-1")
            .await
            .assert_error(422, "validation_failed");
        // 422 for an unknown product happens before any effect too.
        keyed(&app, "/api/v1/orders", Some(order_body("NO-SUCH", 1)), &alice, "k-1")
            .await
            .assert_error(422, "validation_failed");
        let placed = keyed(&app, "/api/v1/orders", Some(order_body("IDEM-3", 1)), &alice, "k-1").await;
        placed.assert_status(201);
        assert!(!replayed(&placed));

        // Out of stock records a rejected order: that answer is kept.
        let rejected = keyed(&app, "/api/v1/orders", Some(order_body("IDEM-3", 1)), &alice, "k-2").await;
        rejected.assert_error(409, "out_of_stock");
        let again = keyed(&app, "/api/v1/orders", Some(order_body("IDEM-3", 1)), &alice, "k-2").await;
        again.assert_error(409, "out_of_stock");
        assert!(replayed(&again));
        assert_eq!(again.text, rejected.text);

        // A declined payment is an outcome as well.
        let body = json!({"items": [{"sku": "IDEM-3", "quantity": 1}], "payment": {"token": "tok_declined"}});
        app.post("/api/v1/inventory/IDEM-3/restock", json!({"quantity": 1}), Some(&admin))
            .await
            .assert_status(200);
        let declined = keyed(&app, "/api/v1/orders", Some(body.clone()), &alice, "k-3").await;
        declined.assert_error(402, "payment_declined");
        let again = keyed(&app, "/api/v1/orders", Some(body), &alice, "k-3").await;
        again.assert_error(402, "payment_declined");
        assert!(replayed(&again));
        assert_eq!(order_count(&app, &alice).await, 3);
    }
);

backend_test!(
    async fn keys_are_scoped_per_user_and_checked(app) {
        let admin = app.admin_token().await;
        app.create_product(&admin, "IDEM-4", 100, 10).await;
        let alice = app.customer_token().await;
        let bob = app.customer_token().await;
        let a = keyed(&app, "/api/v1/orders", Some(order_body("IDEM-4", 1)), &alice, "shared").await;
        let b = keyed(&app, "/api/v1/orders", Some(order_body("IDEM-4", 1)), &bob, "shared").await;
        a.assert_status(201);
        b.assert_status(201);
        assert!(!replayed(&b), "another user's key is not mine");
        assert_ne!(order_id_of(&a), order_id_of(&b));

        for bad in ["", "has space", &"k".repeat(256)] {
            keyed(&app, "/api/v1/orders", Some(order_body("IDEM-4", 1)), &alice, bad)
                .await
                .assert_error(422, "validation_failed");
        }
        assert_eq!(order_count(&app, &alice).await, 1);
        // The longest key is fine.
        keyed(&app, "/api/v1/orders", Some(order_body("IDEM-4", 1)), &alice, &"k".repeat(255))
            .await
            .assert_status(201);
    }
);

backend_test!(
    async fn refunds_and_cancels_under_a_key_happen_once(app) {
        let admin = app.admin_token().await;
        app.create_product(&admin, "IDEM-5", 1000, 10).await;
        let alice = app.customer_token().await;
        let paid = app.place_order(&alice, &[("IDEM-5", 2)], "tok_ok").await;
        paid.assert_status(201);
        let order = order_id_of(&paid);

        let path = format!("/api/v1/orders/{order}/refunds");
        let body = json!({"amount": 500, "reason": "scratched"});
        let first = keyed(&app, &path, Some(body.clone()), &admin, "refund-1").await;
        first.assert_status(201);
        let again = keyed(&app, &path, Some(body.clone()), &admin, "refund-1").await;
        again.assert_status(201);
        assert!(replayed(&again));
        assert_eq!(again.body["id"], first.body["id"]);
        keyed(&app, &path, Some(json!({"amount": 600})), &admin, "refund-1")
            .await
            .assert_error(422, "idempotency_key_reused");
        let view = app.get(&format!("/api/v1/orders/{order}"), Some(&admin)).await;
        assert_eq!(view.body["payment"]["refunded"], 500);

        let cancel = format!("/api/v1/orders/{order}/cancel");
        let first = keyed(&app, &cancel, None, &alice, "cancel-1").await;
        first.assert_status(200);
        assert_eq!(first.body["status"], "cancelled");
        let again = keyed(&app, &cancel, None, &alice, "cancel-1").await;
        again.assert_status(200);
        assert!(replayed(&again));
        assert_eq!(again.text, first.text);
        let view = app.get(&format!("/api/v1/orders/{order}"), Some(&admin)).await;
        assert_eq!(view.body["payment"]["refunded"], 2000, "refunded in full, once");
        assert_eq!(app.stock(&admin, "IDEM-5").await, (10, 0));
    }
);

/// The process dies after the order is recorded but before its answer is:
/// the key is left running, bound to the order. A retry after the lock runs
/// out answers from that order instead of placing (and charging) again.
async fn a_crash_between_effect_and_answer_does_not_charge_twice(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    app.create_product(&admin, "IDEM-6", 900, 10).await;
    let alice = app.customer_token().await;
    let body = order_body("IDEM-6", 1);
    let first = keyed(
        &app,
        "/api/v1/orders",
        Some(body.clone()),
        &alice,
        "crash-1",
    )
    .await;
    first.assert_status(201);
    let order = order_id_of(&first);
    let alice_id = first.body["user_id"].as_str().unwrap().to_owned();

    // Put the key back as a crash leaves it: running, answer unrecorded,
    // lock out, resource bound by the order's own transaction.
    let db = app.database().await;
    update_key!(
        db,
        "crash-1",
        (
            k::state.eq("running"),
            k::response_status.eq(None::<i32>),
            k::response_body.eq(None::<String>),
            k::locked_until.eq(a_second_ago()),
        )
    );
    let row = orderflow::db::idempotency::find(&mut db.conn().await.unwrap(), &alice_id, "crash-1")
        .await
        .unwrap()
        .expect("the key's row");
    assert_eq!(
        (row.resource_type.as_deref(), row.resource_id.as_deref()),
        (Some("order"), Some(order.as_str()))
    );

    let retry = keyed(
        &app,
        "/api/v1/orders",
        Some(body.clone()),
        &alice,
        "crash-1",
    )
    .await;
    retry.assert_status(201);
    assert_eq!(
        order_id_of(&retry),
        order,
        "answered from the order, not a new one"
    );
    assert_eq!(order_count(&app, &alice).await, 1);
    assert_eq!(app.sandbox().charges(&order), 1);
    // And that answer is now the stored one.
    let again = keyed(&app, "/api/v1/orders", Some(body), &alice, "crash-1").await;
    assert!(replayed(&again));
    assert_eq!(order_id_of(&again), order);
}

/// A key whose first request is still running (lock not out) is in use;
/// expired keys are forgotten: the key can then name a new request.
async fn in_use_and_expired_keys(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| s.idempotency.purge_interval_s = 1).await;
    let admin = app.admin_token().await;
    app.create_product(&admin, "IDEM-7", 900, 10).await;
    let alice = app.customer_token().await;
    let first = keyed(
        &app,
        "/api/v1/orders",
        Some(order_body("IDEM-7", 1)),
        &alice,
        "old",
    )
    .await;
    first.assert_status(201);

    let db = app.database().await;
    // Running, lock still held: 409.
    update_key!(
        db,
        "old",
        (
            k::state.eq("running"),
            k::locked_until.eq(chrono::Utc::now().naive_utc() + chrono::Duration::seconds(60)),
        )
    );
    keyed(
        &app,
        "/api/v1/orders",
        Some(order_body("IDEM-7", 1)),
        &alice,
        "old",
    )
    .await
    .assert_error(409, "idempotency_key_in_use");

    // Past its 24 hours: purged, and the key is free for another request.
    update_key!(db, "old", k::expires_at.eq(a_second_ago()));
    crate::support::process::eventually(
        "the expired key is purged",
        std::time::Duration::from_secs(10),
        || {
            let db = db.clone();
            async move {
                let mut conn = db.conn().await.unwrap();
                let left: i64 = orderflow::with_conn!(&mut conn, |c| {
                    use diesel::prelude::*;
                    use diesel_async::RunQueryDsl;
                    use orderflow::db::schema::idempotency_keys as k;
                    k::table.count().get_result(c).await
                })
                .unwrap();
                left == 0
            }
        },
    )
    .await;
    let other = keyed(
        &app,
        "/api/v1/orders",
        Some(order_body("IDEM-7", 2)),
        &alice,
        "old",
    )
    .await;
    other.assert_status(201);
    assert!(!replayed(&other));
    assert_eq!(order_count(&app, &alice).await, 2);
}

/// The process dies after a cart's checkout placed its order, while the
/// saga is still at the provider: the key is left running, bound to the
/// order. A retry after the lock runs out takes the saga up and waits for it
/// as the first request would have: the paid order, charged once, not a 202.
async fn a_retried_cart_checkout_after_a_crash_waits_for_its_saga(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| {
        // Each provider call takes a second: the saga is still running when
        // the retry arrives; the retry may wait far longer than that.
        s.payments.sandbox_latency_ms = 1000;
        s.checkout.sync_wait_ms = 60_000;
    })
    .await;
    let admin = app.admin_token().await;
    app.create_product(&admin, "IDEM-8", 900, 10).await;
    let alice = app.customer_token().await;
    let cart = app.cart_with(&alice, &[("IDEM-8", 1)]).await;
    let path = format!("/api/v1/carts/{cart}/checkout");
    let body = json!({"payment": {"token": "tok_ok"}});
    let first = read(
        app.client
            .post(app.url(&path))
            .bearer_auth(&alice)
            .header("Idempotency-Key", "crash-cart")
            .header("Prefer", "respond-async")
            .json(&body)
            .send()
            .await
            .expect("request failed"),
    )
    .await;
    first.assert_status(202);
    let order = first.body["order_id"].as_str().unwrap().to_owned();

    // As a crash leaves the key: running, answer unrecorded, lock out; the
    // order's own transaction bound it.
    let db = app.database().await;
    update_key!(
        db,
        "crash-cart",
        (
            k::state.eq("running"),
            k::response_status.eq(None::<i32>),
            k::response_body.eq(None::<String>),
            k::locked_until.eq(a_second_ago()),
        )
    );

    let retry = keyed(&app, &path, Some(body), &alice, "crash-cart").await;
    retry.assert_status(201);
    assert_eq!(order_id_of(&retry), order, "answered from the order");
    assert_eq!(retry.body["status"], "paid");
    assert_eq!(order_count(&app, &alice).await, 1);
    assert_eq!(app.sandbox().charges(&order), 1);
}

both_backends!(
    a_crash_between_effect_and_answer_does_not_charge_twice,
    a_retried_cart_checkout_after_a_crash_waits_for_its_saga,
    in_use_and_expired_keys
);

/// The key's row, read below the API.
async fn key_row(db: &orderflow::db::Database, key: &str) -> orderflow::db::idempotency::KeyRow {
    let mut conn = db.conn().await.unwrap();
    orderflow::db::idempotency::find(&mut conn, "user-1", key)
        .await
        .unwrap()
        .expect("the key's row")
}

async fn expire_lock(db: &orderflow::db::Database, key: &str) {
    update_key!(db, key, k::locked_until.eq(a_second_ago()));
}

/// Binds `order` to the claim's key the way an effect's transaction does.
async fn bind(
    db: &orderflow::db::Database,
    binding: &orderflow::db::idempotency::Binding,
    order: &str,
) -> bool {
    let mut conn = db.conn().await.unwrap();
    orderflow::with_conn!(&mut conn, |c| {
        use diesel::prelude::*;
        use diesel_async::RunQueryDsl;
        orderflow::bind_idempotency_key!(c, binding, "order", order)
    })
    .unwrap()
}

fn run_claim(begin: orderflow::idempotency::Begin) -> orderflow::idempotency::Claim {
    match begin {
        orderflow::idempotency::Begin::Run(claim) => claim,
        other => panic!("expected to run, got {other:?}"),
    }
}

/// A request whose lock ran out while it was still at work loses its key to
/// the retry that took it over: its late effect cannot bind, its late answer
/// is not stored; the retry's are. A takeover after the effect was bound
/// answers from it. An expired key names a new request.
async fn the_token_guards_every_write_of_a_key(backend: Backend) {
    use orderflow::idempotency::{Begin, Idempotency, IdempotencyError, Resource};
    let app = TestApp::spawn(backend).await;
    let db = app.database().await;
    let mut settings = crate::support::app::test_settings().idempotency;
    settings.purge_interval_s = 3600;
    let keys = Idempotency::start(db.clone(), &settings);

    let first = run_claim(keys.begin("user-1", "slow", "print").await.unwrap());
    assert!(matches!(
        keys.begin("user-1", "slow", "print").await,
        Err(IdempotencyError::InUse)
    ));
    expire_lock(&db, "slow").await;
    let retry = run_claim(keys.begin("user-1", "slow", "print").await.unwrap());
    assert_eq!(retry.resource, None);
    assert!(
        !bind(&db, &first.binding, "order-of-the-first").await,
        "the first lost its key"
    );
    assert!(bind(&db, &retry.binding, "order-of-the-retry").await);
    keys.finish(&first.binding, 201, &[], "first's answer")
        .await;
    assert_eq!(
        key_row(&db, "slow").await.state,
        "running",
        "the first's late answer is not stored"
    );
    keys.finish(&retry.binding, 201, &[], "retry's answer")
        .await;
    match keys.begin("user-1", "slow", "print").await.unwrap() {
        Begin::Replay(answer) => assert_eq!(
            (answer.status, answer.body.as_str()),
            (201, "retry's answer")
        ),
        other => panic!("expected a replay, got {other:?}"),
    }

    // The effect happened, the answer was never recorded (a crash): the
    // takeover is told what the effect made.
    let crashed = run_claim(keys.begin("user-1", "crashed", "print").await.unwrap());
    assert!(bind(&db, &crashed.binding, "order-7").await);
    expire_lock(&db, "crashed").await;
    let resumed = run_claim(keys.begin("user-1", "crashed", "print").await.unwrap());
    assert_eq!(
        resumed.resource,
        Some(Resource::Order("order-7".to_owned()))
    );

    // A refusal without effect forgets the key; a 5xx after the effect
    // unlocks it for an immediate takeover.
    let refused = run_claim(keys.begin("user-1", "refused", "print").await.unwrap());
    keys.finish(&refused.binding, 422, &[], "{}").await;
    run_claim(
        keys.begin("user-1", "refused", "another print")
            .await
            .unwrap(),
    );
    let failed = run_claim(keys.begin("user-1", "failed", "print").await.unwrap());
    assert!(bind(&db, &failed.binding, "order-8").await);
    keys.finish(&failed.binding, 503, &[], "{}").await;
    let after = run_claim(keys.begin("user-1", "failed", "print").await.unwrap());
    assert_eq!(after.resource, Some(Resource::Order("order-8".to_owned())));

    // Expired (and not yet purged): the key is free for another request.
    keys.finish(&after.binding, 201, &[], "done").await;
    update_key!(db, "failed", k::expires_at.eq(a_second_ago()));
    let fresh = run_claim(
        keys.begin("user-1", "failed", "a new request")
            .await
            .unwrap(),
    );
    assert_eq!(fresh.resource, None);
}

/// A request slower than the lock keeps its key: the lock is renewed while
/// it runs, so a retry meanwhile is told the key is in use.
async fn a_slow_request_keeps_its_key(backend: Backend) {
    use orderflow::idempotency::{Idempotency, IdempotencyError};
    let app = TestApp::spawn(backend).await;
    let db = app.database().await;
    let mut settings = crate::support::app::test_settings().idempotency;
    settings.lock_ttl_s = 1;
    let keys = Idempotency::start(db.clone(), &settings);
    let claim = run_claim(keys.begin("user-1", "slow", "print").await.unwrap());
    let work = keys.hold_while(
        &claim.binding,
        tokio::time::sleep(std::time::Duration::from_millis(2500)),
    );
    let retry = async {
        tokio::time::sleep(std::time::Duration::from_millis(1800)).await;
        keys.begin("user-1", "slow", "print").await
    };
    let ((), retried) = tokio::join!(work, retry);
    assert!(
        matches!(retried, Err(IdempotencyError::InUse)),
        "{retried:?}"
    );
}

both_backends!(
    the_token_guards_every_write_of_a_key,
    a_slow_request_keeps_its_key
);
