//! Webhooks as a user meets them: register an endpoint, make orders, receive
//! signed events; retries with backoff, dead letters and replay; the admin
//! API's refusals.

use std::collections::HashMap;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::process::eventually;
use crate::support::receiver::Receiver;
use crate::support::shop::order_id_of;
use crate::support::{Backend, TestApp};
use crate::{backend_test, both_backends};

const DEADLINE: Duration = Duration::from_secs(30);

pub async fn register(app: &TestApp, admin: &str, url: &str, events: &[&str]) -> (String, String) {
    let reply = app
        .post(
            "/api/v1/webhooks",
            json!({"url": url, "events": events}),
            Some(admin),
        )
        .await;
    reply.assert_status(201);
    let id = reply.body["id"].as_str().expect("id").to_owned();
    let secret = reply.body["secret"].as_str().expect("secret").to_owned();
    (id, secret)
}

pub async fn deliveries(
    app: &TestApp,
    admin: &str,
    webhook: &str,
    status: Option<&str>,
) -> Vec<Value> {
    let path = match status {
        Some(s) => format!("/api/v1/webhooks/{webhook}/deliveries?status={s}&limit=200"),
        None => format!("/api/v1/webhooks/{webhook}/deliveries?limit=200"),
    };
    let reply = app.get(&path, Some(admin)).await;
    reply.assert_status(200);
    reply.body["items"].as_array().expect("items").clone()
}

backend_test! {
    async fn a_registered_endpoint_receives_signed_order_events(app) {
        let receiver = Receiver::start(&[], 200).await;
        let admin = app.admin_token().await;
        let (webhook, secret) = register(&app, &admin, &receiver.url, &["order.created", "order.paid"]).await;
        assert!(secret.starts_with("whsec_"), "{secret}");
        app.create_product(&admin, "HOOK-1", 1500, 10).await;
        let customer = app.customer_token().await;
        let order = order_id_of(app.place_order(&customer, &[("HOOK-1", 2)], "tok_ok").await.assert_status(201));

        eventually("order.created and order.paid arrive", DEADLINE, || async {
            receiver.accepted().len() >= 2
        })
        .await;
        let received = receiver.received();
        let types: Vec<String> = received.iter().map(|r| r.json()["type"].as_str().unwrap().to_owned()).collect();
        assert_eq!(types.iter().filter(|t| *t == "order.created").count(), 1, "{types:?}");
        assert_eq!(types.iter().filter(|t| *t == "order.paid").count(), 1, "{types:?}");
        assert_eq!(received.len(), 2, "only the subscribed types: {types:?}");
        for r in &received {
            assert!(r.signature_verifies(&secret), "signature of {:?}", r.headers);
            assert!(!r.signature_verifies("whsec_someone-else"));
            let body = r.json();
            assert_eq!(body["id"].as_str().unwrap(), r.event_id());
            assert_eq!(r.headers["x-orderflow-event-type"], body["type"].as_str().unwrap());
            assert_eq!(r.headers["content-type"], "application/json");
            assert_eq!(body["data"]["order_id"], order.as_str());
            assert!(body["created_at"].as_str().unwrap().ends_with('Z'), "{body}");
        }
        let paid = received.iter().find(|r| r.json()["type"] == "order.paid").unwrap().json();
        assert_eq!(paid["data"]["status"], "paid");
        assert_eq!(paid["data"]["total"], 3000);

        eventually("both deliveries are recorded as succeeded", DEADLINE, || async {
            deliveries(&app, &admin, &webhook, Some("succeeded")).await.len() == 2
        })
        .await;
        for d in deliveries(&app, &admin, &webhook, None).await {
            assert_eq!(d["status"], "succeeded");
            assert_eq!(d["attempts"], 1);
            assert_eq!(d["last_status_code"], 200);
            assert!(d["delivered_at"].is_string());
        }
        let listed = app.get("/api/v1/webhooks", Some(&admin)).await;
        listed.assert_status(200);
        assert_eq!(listed.body["items"][0]["id"], webhook.as_str());
        assert_eq!(listed.body["items"][0]["events"], json!(["order.created", "order.paid"]));
        assert!(listed.body["items"][0].get("secret").is_none(), "the secret is shown once");
    }
}

backend_test! {
    async fn a_star_endpoint_receives_inventory_events_including_low_stock(app) {
        let receiver = Receiver::start(&[], 204).await;
        let admin = app.admin_token().await;
        register(&app, &admin, &receiver.url, &["*"]).await;
        // 6 on hand, threshold 5: selling 2 crosses it.
        app.create_product(&admin, "LOW-1", 100, 6).await;
        let customer = app.customer_token().await;
        app.place_order(&customer, &[("LOW-1", 2)], "tok_ok").await.assert_status(201);
        let wanted = ["order.created", "inventory.reserved", "order.paid", "inventory.low_stock"];
        eventually("every kind of event arrives", DEADLINE, || async {
            let types: Vec<String> = receiver.accepted().iter().map(|r| r.json()["type"].as_str().unwrap().to_owned()).collect();
            wanted.iter().all(|w| types.iter().any(|t| t == w))
        })
        .await;
        let low = receiver
            .received()
            .into_iter()
            .find(|r| r.json()["type"] == "inventory.low_stock")
            .unwrap()
            .json();
        assert_eq!(low["data"], json!({"sku": "LOW-1", "available": 4, "threshold": 5}));
    }
}

async fn fails_three_times_then_succeeds(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let receiver = Receiver::start(&[500, 502, 503], 200).await;
    let admin = app.admin_token().await;
    let (webhook, secret) = register(&app, &admin, &receiver.url, &["order.created"]).await;
    app.create_product(&admin, "RETRY-1", 100, 10).await;
    let customer = app.customer_token().await;
    app.place_order(&customer, &[("RETRY-1", 1)], "tok_ok")
        .await
        .assert_status(201);

    eventually("the fourth try succeeds", DEADLINE, || async {
        deliveries(&app, &admin, &webhook, Some("succeeded"))
            .await
            .len()
            == 1
    })
    .await;
    let delivery = &deliveries(&app, &admin, &webhook, None).await[0];
    assert_eq!(delivery["attempts"], 4);
    assert_eq!(delivery["last_status_code"], 200);
    let received = receiver.received();
    assert_eq!(
        received.iter().map(|r| r.answered).collect::<Vec<_>>(),
        [500, 502, 503, 200]
    );
    let ids: Vec<String> = received.iter().map(|r| r.event_id()).collect();
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "every try carries the same event id: {ids:?}"
    );
    assert!(received.iter().all(|r| r.signature_verifies(&secret)));
    // The same body every time; only the signature's timestamp may differ.
    assert!(received.iter().all(|r| r.body == received[0].body));
}

async fn always_failing_ends_dead_and_replay_delivers(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| s.webhooks.max_attempts = 3).await;
    let receiver = Receiver::start(&[], 500).await;
    let admin = app.admin_token().await;
    let (webhook, _) = register(&app, &admin, &receiver.url, &["order.created"]).await;
    app.create_product(&admin, "DEAD-1", 100, 10).await;
    let customer = app.customer_token().await;
    app.place_order(&customer, &[("DEAD-1", 1)], "tok_ok")
        .await
        .assert_status(201);

    eventually(
        "the delivery is dead after max_attempts",
        DEADLINE,
        || async { deliveries(&app, &admin, &webhook, Some("dead")).await.len() == 1 },
    )
    .await;
    let dead = deliveries(&app, &admin, &webhook, Some("dead"))
        .await
        .remove(0);
    assert_eq!(dead["attempts"], 3);
    assert_eq!(dead["last_status_code"], 500);
    assert_eq!(dead["next_attempt_at"], Value::Null);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.received().len(), 3, "no attempt after dead");
    let metrics = app.get("/metrics", None).await.text;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("webhook_deliveries_total{outcome=\"dead\"}")),
        "{metrics}"
    );

    receiver.set_default_status(200);
    let id = dead["id"].as_str().unwrap();
    let replay = app
        .post(
            &format!("/api/v1/webhooks/deliveries/{id}/replay"),
            json!({}),
            Some(&admin),
        )
        .await;
    replay.assert_status(202);
    assert_eq!(replay.body["status"], "pending");
    assert_eq!(replay.body["attempts"], 0);
    eventually("the replay is delivered", DEADLINE, || async {
        deliveries(&app, &admin, &webhook, Some("succeeded"))
            .await
            .len()
            == 1
    })
    .await;
    let accepted = receiver.accepted();
    assert_eq!(accepted.len(), 1, "delivered once");
    assert_eq!(accepted[0].event_id(), dead["event_id"].as_str().unwrap());
    let after = deliveries(&app, &admin, &webhook, None).await;
    assert_eq!(after.len(), 1);
    assert_eq!(after[0]["attempts"], 1);
}

both_backends!(
    fails_three_times_then_succeeds,
    always_failing_ends_dead_and_replay_delivers
);

backend_test! {
    async fn registration_refuses_bad_input_and_non_admins(app) {
        let admin = app.admin_token().await;
        let customer = app.customer_token().await;
        for (body, field) in [
            (json!({"url": "ftp://example.com/x", "events": ["*"]}), "url"),
            (json!({"url": "file:///etc/passwd", "events": ["*"]}), "url"),
            (json!({"url": "not a url", "events": ["*"]}), "url"),
            (json!({"url": "https://u:p@example.com/", "events": ["*"]}), "url"),
            (json!({"url": "https://example.com/", "events": []}), "events"),
            (json!({"url": "https://example.com/", "events": ["order.exploded"]}), "events"),
            (json!({"url": "https://example.com/", "events": ["*"], "secret": "short"}), "secret"),
        ] {
            let reply = app.post("/api/v1/webhooks", body.clone(), Some(&admin)).await;
            reply.assert_error(422, "validation_failed");
            assert!(reply.body["error"]["details"]["fields"][field].is_string(), "{body}: {}", reply.text);
        }
        app.post("/api/v1/webhooks", json!({"url": "https://example.com/", "events": ["*"], "extra": 1}), Some(&admin))
            .await
            .assert_error(422, "validation_failed");
        app.post("/api/v1/webhooks", json!({"url": "https://example.com/", "events": ["*"]}), Some(&customer))
            .await
            .assert_error(403, "forbidden");
        app.get("/api/v1/webhooks", None).await.assert_error(401, "unauthorized");
        let listed = app.get("/api/v1/webhooks", Some(&admin)).await;
        assert_eq!(listed.body["items"], json!([]), "nothing was registered");

        let given = app
            .post("/api/v1/webhooks", json!({"url": "https://example.com/h", "events": ["order.paid"], "secret": "my-own-secret-0123"}), Some(&admin))
            .await;
        given.assert_status(201);
        assert_eq!(given.body["secret"], "my-own-secret-0123");
        let id = given.body["id"].as_str().unwrap();
        app.get(&format!("/api/v1/webhooks/{id}/deliveries?status=lost"), Some(&admin))
            .await
            .assert_error(400, "invalid_query");
        app.get(&format!("/api/v1/webhooks/{id}/deliveries"), Some(&admin)).await.assert_status(200);
        app.call(Method::DELETE, &format!("/api/v1/webhooks/{id}"), None, Some(&customer))
            .await
            .assert_error(403, "forbidden");
        app.call(Method::DELETE, &format!("/api/v1/webhooks/{id}"), None, Some(&admin))
            .await
            .assert_status(204);
        app.call(Method::DELETE, &format!("/api/v1/webhooks/{id}"), None, Some(&admin))
            .await
            .assert_error(404, "not_found");
        app.get(&format!("/api/v1/webhooks/{id}/deliveries"), Some(&admin))
            .await
            .assert_error(404, "not_found");
        let unknown = uuid::Uuid::now_v7();
        app.post(&format!("/api/v1/webhooks/deliveries/{unknown}/replay"), json!({}), Some(&admin))
            .await
            .assert_error(404, "not_found");
        app.post("/api/v1/webhooks/deliveries/not-an-id/replay", json!({}), Some(&admin))
            .await
            .assert_error(404, "not_found");
    }
}

backend_test! {
    async fn a_deleted_endpoint_receives_nothing_more(app) {
        let receiver = Receiver::start(&[], 200).await;
        // A second endpoint shows when the next event has gone out.
        let control = Receiver::start(&[], 200).await;
        let admin = app.admin_token().await;
        let (webhook, _) = register(&app, &admin, &receiver.url, &["order.created"]).await;
        register(&app, &admin, &control.url, &["order.created"]).await;
        app.create_product(&admin, "DEL-1", 100, 10).await;
        let customer = app.customer_token().await;
        app.place_order(&customer, &[("DEL-1", 1)], "tok_ok").await.assert_status(201);
        eventually("the first order's event arrives", DEADLINE, || async { receiver.accepted().len() == 1 }).await;
        app.call(Method::DELETE, &format!("/api/v1/webhooks/{webhook}"), None, Some(&admin))
            .await
            .assert_status(204);
        app.place_order(&customer, &[("DEL-1", 1)], "tok_ok").await.assert_status(201);
        eventually("the second order's event reaches the other endpoint", DEADLINE, || async {
            control.accepted().len() == 2
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(receiver.received().len(), 1);
    }
}

/// An entry on the stream whose event this database does not have (another
/// deployment on the same Redis prefix, a restored database) is skipped; it
/// does not hold up the events behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_stream_entry_does_not_hold_up_dispatch() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let receiver = Receiver::start(&[], 200).await;
    let admin = app.admin_token().await;
    register(&app, &admin, &receiver.url, &["*"]).await;
    let client = redis::Client::open(crate::support::backends::redis_url().as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("{}:events", app.redis_prefix().unwrap());
    let _: String = redis::cmd("XADD")
        .arg(&key)
        .arg("*")
        .arg(&[
            "id",
            &uuid::Uuid::now_v7().to_string(),
            "type",
            "order.created",
            "aggregate_id",
            "elsewhere",
        ])
        .arg(&["created_at", "2026-11-22T00:00:00.000000Z", "data", "{}"])
        .query_async(&mut conn)
        .await
        .unwrap();
    app.create_product(&admin, "FOREIGN-1", 100, 10).await;
    let customer = app.customer_token().await;
    let order = order_id_of(
        app.place_order(&customer, &[("FOREIGN-1", 1)], "tok_ok")
            .await
            .assert_status(201),
    );
    eventually("the real order's events arrive", DEADLINE, || async {
        receiver.accepted().iter().any(|r| {
            r.json()["type"] == "order.paid" && r.json()["data"]["order_id"] == order.as_str()
        })
    })
    .await;
    assert!(receiver
        .received()
        .iter()
        .all(|r| r.json()["data"]["order_id"] != "elsewhere"));
}

/// Events published to a transport that then lost them (a Redis restart
/// without persistence, a dispatcher that died) are published again from the
/// outbox once `events.redispatch_after_s` has passed.
async fn events_lost_in_transit_are_published_again(backend: Backend) {
    use diesel::prelude::*;
    use diesel_async::RunQueryDsl;
    use orderflow::db::schema::outbox;

    let app = TestApp::spawn(backend).await;
    let receiver = Receiver::start(&[], 200).await;
    let admin = app.admin_token().await;
    register(&app, &admin, &receiver.url, &["order.cancelled"]).await;
    let lost_id = uuid::Uuid::now_v7().to_string();
    let long_ago = chrono::Utc::now().naive_utc() - chrono::Duration::hours(1);
    let db = app.database().await;
    let mut conn = db.conn().await.unwrap();
    orderflow::with_conn!(&mut conn, |c| {
        diesel::insert_into(outbox::table)
            .values((
                outbox::id.eq(&lost_id),
                outbox::event_type.eq("order.cancelled"),
                outbox::aggregate_id.eq("lost-order"),
                outbox::payload.eq(json!({"order_id": "lost-order"}).to_string()),
                outbox::created_at.eq(long_ago),
                outbox::published_at.eq(Some(long_ago)),
                outbox::publish_count.eq(1),
                outbox::republish_after.eq(Some(long_ago)),
            ))
            .execute(c)
            .await
            .unwrap()
    });
    eventually("the lost event is delivered", DEADLINE, || async {
        receiver.accepted().iter().any(|r| r.event_id() == lost_id)
    })
    .await;
}

both_backends!(events_lost_in_transit_are_published_again);

/// Every delivery of every event, by event id, as the receiver saw them.
pub fn by_event(receiver: &Receiver) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for r in receiver.accepted() {
        *counts.entry(r.event_id()).or_insert(0) += 1;
    }
    counts
}

/// A graceful stop lets a delivery in flight finish and records it, so the
/// restarted engine does not send it again.
async fn a_graceful_stop_finishes_and_records_deliveries_in_flight(backend: Backend) {
    let mut app = TestApp::spawn(backend).await;
    let receiver = Receiver::start(&[], 200).await;
    let admin = app.admin_token().await;
    let (webhook, _) = register(&app, &admin, &receiver.url, &["order.created"]).await;
    app.create_product(&admin, "STOP-1", 100, 10).await;
    let customer = app.customer_token().await;
    receiver.set_delay(Duration::from_millis(600));
    app.place_order(&customer, &[("STOP-1", 1)], "tok_ok")
        .await
        .assert_status(201);
    eventually("the delivery is in flight", DEADLINE, || async {
        receiver.received().len() == 1
    })
    .await;
    let db = app.database().await;
    app.stop();
    let mut conn = db.conn().await.unwrap();
    let rows = orderflow::db::webhooks::deliveries(&mut conn, &webhook, None, None, 10)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, "succeeded", "{rows:?}");
    assert_eq!(rows[0].attempts, 1);
}

both_backends!(a_graceful_stop_finishes_and_records_deliveries_in_flight);
