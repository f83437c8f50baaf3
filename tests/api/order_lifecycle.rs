//! What happens to an order after checkout: refunds, cancel, shipping,
//! manual capture, and a saga that gets stuck and is resumed.

use serde_json::json;

use crate::backend_test;
use crate::support::app::TestApp;
use crate::support::shop::order_id_of;
use crate::support::Backend;

/// A paid order of 2 × 500 for a new customer; returns (admin, customer, order).
async fn paid_order(app: &TestApp, sku: &str) -> (String, String, String) {
    let admin = app.admin_token().await;
    app.create_product(&admin, sku, 500, 10).await;
    let alice = app.customer_token().await;
    let reply = app.place_order(&alice, &[(sku, 2)], "tok_ok").await;
    reply.assert_status(201);
    (admin, alice, order_id_of(&reply))
}

backend_test!(
    async fn concurrent_refunds_never_exceed_the_capture(app) {
        let (admin, _alice, order) = paid_order(&app, "R-1").await;
        let path = format!("/api/v1/orders/{order}/refunds");
        let (first, second) = tokio::join!(
            app.post(&path, json!({"amount": 600, "reason": "damaged"}), Some(&admin)),
            app.post(&path, json!({"amount": 600}), Some(&admin)),
        );
        let mut statuses = [first.status.as_u16(), second.status.as_u16()];
        statuses.sort();
        assert_eq!(statuses, [201, 422], "{} / {}", first.text, second.text);
        let refused = if first.status == 422 { &first } else { &second };
        refused.assert_error(422, "refund_exceeds_captured");
        assert_eq!(refused.body["error"]["details"]["refundable"], 400);
        let granted = if first.status == 201 { &first } else { &second };
        assert_eq!(granted.body["status"], "succeeded");
        assert_eq!(granted.body["amount"], 600);

        let view = app.get(&format!("/api/v1/orders/{order}"), Some(&admin)).await;
        assert_eq!(view.body["payment"]["refunded"], 600);
        assert_eq!(view.body["payment"]["status"], "partially_refunded");
        app.post(&path, json!({"amount": 400, "restock": [{"sku": "R-1", "quantity": 1}]}), Some(&admin))
            .await
            .assert_status(201);
        assert_eq!(app.stock(&admin, "R-1").await, (9, 0));
        let view = app.get(&format!("/api/v1/orders/{order}"), Some(&admin)).await;
        assert_eq!(view.body["payment"]["status"], "refunded");
        assert_eq!(view.body["status"], "paid");
        let over = app.post(&path, json!({"amount": 1}), Some(&admin)).await;
        over.assert_error(422, "refund_exceeds_captured");
        assert_eq!(over.body["error"]["details"]["refundable"], 0);
        // Bad amounts and restocks change nothing.
        for body in [json!({"amount": 0}), json!({"amount": -5}), json!({"amount": 1_000_000_000_001i64}),
                     json!({"amount": 1, "restock": [{"sku": "OTHER", "quantity": 1}]})] {
            app.post(&path, body, Some(&admin)).await.assert_error(422, "validation_failed");
        }
        let customer = app.customer_token().await;
        app.post(&path, json!({"amount": 1}), Some(&customer)).await.assert_error(403, "forbidden");

        // The saga shows both refunds and the restock as compensations.
        let saga = app.get(&format!("/api/v1/sagas/{order}"), Some(&admin)).await;
        let names: Vec<&str> = saga.body["compensations"].as_array().unwrap().iter()
            .map(|s| s["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["refund_payment", "refund_payment", "restock_inventory"]);
        assert_eq!(saga.body["state"], "completed");
    }
);

backend_test!(
    async fn cancel_after_capture_refunds_in_full_and_restocks(app) {
        let (admin, alice, order) = paid_order(&app, "C-1").await;
        assert_eq!(app.stock(&admin, "C-1").await, (8, 0));
        let reply = app.post(&format!("/api/v1/orders/{order}/cancel"), json!({}), Some(&alice)).await;
        reply.assert_status(200);
        assert_eq!(reply.body["status"], "cancelled");
        assert_eq!(reply.body["payment"]["refunded"], 1000);
        assert_eq!(reply.body["payment"]["status"], "refunded");
        assert_eq!(app.stock(&admin, "C-1").await, (10, 0));
        let refunds: i64 = app.sandbox().ledger().iter()
            .filter(|e| e.order_id == order && e.operation == orderflow::payments::Operation::Refund)
            .map(|e| e.amount).sum();
        assert_eq!(refunds, 1000);
        // Cancelling again is harmless; nothing moves a cancelled order.
        app.post(&format!("/api/v1/orders/{order}/cancel"), json!({}), Some(&alice)).await.assert_status(200);
        assert_eq!(app.stock(&admin, "C-1").await, (10, 0));
        let ship = app.post(&format!("/api/v1/orders/{order}/ship"), json!({}), Some(&admin)).await;
        ship.assert_error(409, "invalid_transition");
        assert_eq!(ship.body["error"]["details"], json!({"from": "cancelled", "action": "ship"}));
        app.post(&format!("/api/v1/orders/{order}/refunds"), json!({"amount": 1}), Some(&admin))
            .await
            .assert_error(409, "invalid_transition");
        let events = app.get(&format!("/api/v1/orders/{order}/events"), Some(&alice)).await;
        let last = events.body.as_array().unwrap().last().unwrap().clone();
        assert_eq!((last["type"].as_str(), last["from_status"].as_str(), last["to_status"].as_str()),
                   (Some("order.cancelled"), Some("paid"), Some("cancelled")));
        let bob = app.customer_token().await;
        app.post(&format!("/api/v1/orders/{order}/cancel"), json!({}), Some(&bob)).await.assert_error(404, "not_found");
    }
);

backend_test!(
    async fn orders_ship_and_deliver_in_order(app) {
        let (admin, alice, order) = paid_order(&app, "S-1").await;
        let base = format!("/api/v1/orders/{order}");
        app.post(&format!("{base}/deliver"), json!({}), Some(&admin)).await.assert_error(409, "invalid_transition");
        app.post(&format!("{base}/ship"), json!({}), Some(&alice)).await.assert_error(403, "forbidden");
        let shipped = app.post(&format!("{base}/ship"), json!({"carrier": "UPS", "tracking_number": "1Z999"}), Some(&admin)).await;
        shipped.assert_status(200);
        assert_eq!(shipped.body["status"], "shipped");
        assert_eq!(shipped.body["shipping"]["carrier"], "UPS");
        app.post(&format!("{base}/ship"), json!({}), Some(&admin)).await.assert_error(409, "invalid_transition");
        app.post(&format!("{base}/cancel"), json!({}), Some(&alice)).await.assert_error(409, "invalid_transition");
        let delivered = app.post(&format!("{base}/deliver"), json!({}), Some(&admin)).await;
        delivered.assert_status(200);
        assert_eq!(delivered.body["status"], "delivered");
        // A delivered order can still be refunded.
        app.post(&format!("{base}/refunds"), json!({"amount": 100}), Some(&admin)).await.assert_status(201);
        let listed = app.get("/api/v1/orders?status=delivered", Some(&admin)).await;
        assert!(listed.body["items"].as_array().unwrap().iter().any(|o| o["id"] == order.as_str()));
        app.get("/api/v1/orders?status=lost", Some(&admin)).await.assert_error(400, "invalid_query");
        let db = app.database().await;
        let mut conn = db.conn().await.unwrap();
        for event in ["order.shipped", "order.delivered", "order.refunded"] {
            assert_eq!(orderflow::db::outbox::payloads_for(&mut conn, event, &order).await.unwrap().len(), 1, "{event}");
        }
    }
);

async fn manual_capture(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| {
        s.payments.capture = orderflow::config::CaptureMode::Manual;
    })
    .await;
    let admin = app.admin_token().await;
    app.create_product(&admin, "M-1", 700, 4).await;
    let alice = app.customer_token().await;
    let reply = app.place_order(&alice, &[("M-1", 1)], "tok_ok").await;
    reply.assert_status(201);
    assert_eq!(reply.body["status"], "authorized");
    assert_eq!(reply.body["payment"]["captured"], 0);
    let order = order_id_of(&reply);
    assert_eq!(app.sandbox().charges(&order), 0);
    let capture = format!("/api/v1/orders/{order}/capture");
    app.post(&capture, json!({}), Some(&alice))
        .await
        .assert_error(403, "forbidden");
    app.post(
        &format!("/api/v1/orders/{order}/ship"),
        json!({}),
        Some(&admin),
    )
    .await
    .assert_error(409, "invalid_transition");
    let captured = app.post(&capture, json!({}), Some(&admin)).await;
    captured.assert_status(200);
    assert_eq!(captured.body["status"], "paid");
    assert_eq!(captured.body["payment"]["captured"], 700);
    app.post(&capture, json!({}), Some(&admin))
        .await
        .assert_error(409, "invalid_transition");
    assert_eq!(app.sandbox().charges(&order), 1);

    // Cancelling an authorized order voids it and gives the stock back.
    let second = order_id_of(&app.place_order(&alice, &[("M-1", 2)], "tok_ok").await);
    assert_eq!(app.stock(&admin, "M-1").await, (1, 0));
    let cancelled = app
        .post(
            &format!("/api/v1/orders/{second}/cancel"),
            json!({}),
            Some(&alice),
        )
        .await;
    cancelled.assert_status(200);
    assert_eq!(cancelled.body["payment"]["status"], "voided");
    assert_eq!(app.stock(&admin, "M-1").await, (3, 0));
}

async fn a_stuck_saga_is_listed_and_resumed(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| {
        s.sagas.stuck_after_s = 0;
        s.sagas.max_step_attempts = 2;
    })
    .await;
    let admin = app.admin_token().await;
    app.create_product(&admin, "K-1", 300, 4).await;
    let alice = app.customer_token().await;
    app.sandbox().set_unavailable(true);
    let reply = app.place_order(&alice, &[("K-1", 1)], "tok_ok").await;
    reply.assert_status(202);
    assert_eq!(reply.body["status"], "pending");
    let order = order_id_of(&reply);
    assert_eq!(
        reply.header("location"),
        Some(format!("/api/v1/orders/{order}").as_str())
    );

    let stuck = app.get("/api/v1/sagas?state=stuck", Some(&admin)).await;
    stuck.assert_status(200);
    assert!(
        stuck.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["order_id"] == order.as_str()),
        "{}",
        stuck.text
    );
    let saga = app
        .get(&format!("/api/v1/sagas/{order}"), Some(&admin))
        .await;
    assert_eq!(saga.body["state"], "stuck");
    assert_eq!(saga.body["current_step"], "authorize_payment");
    let authorize = saga.body["steps"][1].clone();
    assert_eq!(
        (
            authorize["name"].as_str(),
            authorize["status"].as_str(),
            authorize["attempt"].as_i64()
        ),
        (Some("authorize_payment"), Some("failed"), Some(2))
    );
    assert!(
        authorize["error"].as_str().unwrap().contains("outage"),
        "{authorize}"
    );
    app.get("/api/v1/sagas?state=stuck", Some(&alice))
        .await
        .assert_error(403, "forbidden");
    app.get("/api/v1/sagas?state=weird", Some(&admin))
        .await
        .assert_error(400, "invalid_query");

    app.sandbox().set_unavailable(false);
    app.post(
        &format!("/api/v1/sagas/{order}/resume"),
        json!({}),
        Some(&admin),
    )
    .await
    .assert_status(202);
    crate::support::process::eventually(
        "the resumed saga pays the order",
        std::time::Duration::from_secs(20),
        || async {
            app.get(&format!("/api/v1/orders/{order}"), Some(&alice))
                .await
                .body["status"]
                == "paid"
        },
    )
    .await;
    let saga = app
        .get(&format!("/api/v1/sagas/{order}"), Some(&admin))
        .await;
    assert_eq!(saga.body["state"], "completed");
    // The step's record was written by the park and again with its outcome:
    // the attempts of both runs add up, and the success clears the error.
    let authorize = saga.body["steps"][1].clone();
    assert_eq!(
        (
            authorize["name"].as_str(),
            authorize["status"].as_str(),
            authorize["attempt"].as_i64()
        ),
        (Some("authorize_payment"), Some("succeeded"), Some(3)),
        "{authorize}"
    );
    assert!(authorize["error"].is_null(), "{authorize}");
    let steps = saga.body["steps"].as_array().unwrap();
    assert!(
        steps
            .iter()
            .all(|s| s["status"] == "succeeded" && !s["finished_at"].is_null()),
        "{steps:?}"
    );
    app.post(
        &format!("/api/v1/sagas/{order}/resume"),
        json!({}),
        Some(&admin),
    )
    .await
    .assert_error(409, "invalid_transition");
    assert_eq!(app.sandbox().charges(&order), 1);
}

/// Refunds queue behind one that is stuck, and never together exceed the
/// capture; resuming the saga pays them out in order.
async fn refunds_queue_behind_a_stuck_refund(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| {
        s.sagas.max_step_attempts = 2;
    })
    .await;
    let (admin, _alice, order) = paid_order(&app, "Q-1").await;
    let path = format!("/api/v1/orders/{order}/refunds");
    app.sandbox().set_unavailable(true);
    let first = app
        .post(
            &path,
            json!({"amount": 300, "restock": [{"sku": "Q-1", "quantity": 2}]}),
            Some(&admin),
        )
        .await;
    first.assert_status(201);
    assert_eq!(first.body["status"], "pending");
    // The queued refund will put both units back: none is left to restock.
    app.post(
        &path,
        json!({"amount": 10, "restock": [{"sku": "Q-1", "quantity": 1}]}),
        Some(&admin),
    )
    .await
    .assert_error(422, "validation_failed");
    let second = app.post(&path, json!({"amount": 500}), Some(&admin)).await;
    second.assert_status(201);
    assert_eq!(second.body["status"], "pending");
    let over = app.post(&path, json!({"amount": 201}), Some(&admin)).await;
    over.assert_error(422, "refund_exceeds_captured");
    assert_eq!(over.body["error"]["details"]["refundable"], 200);
    // The finished saga was reopened by the refunds: not finished any more.
    let saga = app
        .get(&format!("/api/v1/sagas/{order}"), Some(&admin))
        .await;
    assert_eq!(
        saga.body["finished_at"],
        serde_json::Value::Null,
        "{}",
        saga.text
    );
    assert_eq!(saga.body["current_step"], "refund_payment");
    // Shipping waits until the money is settled.
    app.post(
        &format!("/api/v1/orders/{order}/ship"),
        json!({}),
        Some(&admin),
    )
    .await
    .assert_error(409, "invalid_transition");

    app.sandbox().set_unavailable(false);
    app.post(
        &format!("/api/v1/sagas/{order}/resume"),
        json!({}),
        Some(&admin),
    )
    .await
    .assert_status(202);
    crate::support::process::eventually(
        "both refunds are paid out",
        std::time::Duration::from_secs(20),
        || async {
            let view = app
                .get(&format!("/api/v1/orders/{order}"), Some(&admin))
                .await;
            view.body["payment"]["status"] == "partially_refunded"
                && app
                    .get(&format!("/api/v1/sagas/{order}"), Some(&admin))
                    .await
                    .body["state"]
                    == "completed"
        },
    )
    .await;
    let refunded: Vec<i64> = app
        .sandbox()
        .ledger()
        .iter()
        .filter(|e| e.order_id == order && e.operation == orderflow::payments::Operation::Refund)
        .map(|e| e.amount)
        .collect();
    assert_eq!(refunded, [300, 500], "paid out once each, in order");
    let view = app
        .get(&format!("/api/v1/orders/{order}"), Some(&admin))
        .await;
    assert_eq!(view.body["payment"]["refunded"], 800);
    assert_eq!(
        app.stock(&admin, "Q-1").await,
        (10, 0),
        "both units back, once"
    );
}

/// Steps write nothing before they run: what the saga view shows at any
/// moment of a slow checkout is steps with their outcome, never one in
/// progress, and the saga's lease is given back with its last step.
async fn steps_are_recorded_with_their_outcome(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| {
        s.payments.sandbox_latency_ms = 400;
    })
    .await;
    let admin = app.admin_token().await;
    app.create_product(&admin, "SLOW-1", 700, 3).await;
    let alice = app.customer_token().await;
    let cart = app.cart_with(&alice, &[("SLOW-1", 1)]).await;
    let reply = app
        .client
        .post(app.url(&format!("/api/v1/carts/{cart}/checkout")))
        .bearer_auth(&alice)
        .header("Prefer", "respond-async")
        .json(&json!({"payment": {"token": "tok_ok"}}))
        .send()
        .await
        .unwrap();
    let reply = crate::support::app::read(reply).await;
    reply.assert_status(202);
    let order = order_id_of(&reply);
    let seen = std::cell::RefCell::new(std::collections::BTreeSet::new());
    crate::support::process::eventually(
        "the slow checkout pays the order",
        std::time::Duration::from_secs(20),
        || async {
            let saga = app
                .get(&format!("/api/v1/sagas/{order}"), Some(&admin))
                .await;
            for step in saga.body["steps"].as_array().unwrap() {
                assert_ne!(step["status"], "running", "{step}");
                assert!(!step["finished_at"].is_null(), "{step}");
                seen.borrow_mut()
                    .insert(step["name"].as_str().unwrap().to_owned());
            }
            saga.body["state"] == "completed"
        },
    )
    .await;
    assert!(seen.borrow().contains("authorize_payment"), "{seen:?}");
    let db = app.database().await;
    let mut conn = db.conn().await.unwrap();
    let row = orderflow::db::sagas::find(&mut conn, &order)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((row.lease_owner, row.lease_expires_at), (None, None));
    assert_eq!(app.sandbox().charges(&order), 1);
}

crate::both_backends!(
    manual_capture,
    a_stuck_saga_is_listed_and_resumed,
    refunds_queue_behind_a_stuck_refund,
    steps_are_recorded_with_their_outcome
);
