//! Carts and the checkout saga over HTTP, as a customer meets them.

use serde_json::json;

use crate::backend_test;
use crate::support::shop::order_id_of;

backend_test!(
    async fn checkout_pays_and_a_cart_is_checked_out_once(app) {
        let admin = app.admin_token().await;
        app.create_product(&admin, "TEE-1", 1999, 10).await;
        let alice = app.customer_token().await;
        let cart = app.cart_with(&alice, &[("TEE-1", 1), ("TEE-1", 2)]).await;
        // Adding to a line adds up; PUT sets; the subtotal follows.
        let reply = app.get(&format!("/api/v1/carts/{cart}"), Some(&alice)).await;
        reply.assert_status(200);
        assert_eq!(reply.body["items"][0]["quantity"], 3);
        let reply = app
            .put(&format!("/api/v1/carts/{cart}/items/TEE-1"), json!({"quantity": 2}), Some(&alice))
            .await;
        reply.assert_status(200);
        assert_eq!(reply.body["subtotal"], 3998);
        assert_eq!(reply.body["items"][0]["unit_price"], 1999);

        let paid = app.checkout(&alice, &cart, "tok_ok").await;
        paid.assert_status(201);
        let order = order_id_of(&paid);
        assert_eq!(paid.body["status"], "paid");
        assert_eq!(paid.body["total"], 3998);
        assert_eq!(paid.body["payment"]["captured"], 3998);
        assert_eq!(paid.body["payment"]["status"], "captured");
        assert_eq!(paid.header("location"), Some(format!("/api/v1/orders/{order}").as_str()));
        assert_eq!(app.stock(&admin, "TEE-1").await, (8, 0));
        assert_eq!(app.sandbox().charges(&order), 1);

        // Checked out once: a second checkout names the order; changes are refused.
        app.checkout(&alice, &cart, "tok_ok")
            .await
            .assert_error(409, "cart_checked_out");
        let again = app.checkout(&alice, &cart, "tok_ok").await;
        assert_eq!(again.body["error"]["details"]["order_id"], order.as_str());
        app.post(&format!("/api/v1/carts/{cart}/items"), json!({"sku": "TEE-1", "quantity": 1}), Some(&alice))
            .await
            .assert_error(409, "cart_checked_out");
        assert_eq!(app.sandbox().charges(&order), 1);

        // The order is the owner's and the admin's to see, nobody else's.
        app.get(&format!("/api/v1/orders/{order}"), Some(&alice)).await.assert_status(200);
        app.get(&format!("/api/v1/orders/{order}"), Some(&admin)).await.assert_status(200);
        let bob = app.customer_token().await;
        app.get(&format!("/api/v1/orders/{order}"), Some(&bob)).await.assert_error(404, "not_found");
        app.get(&format!("/api/v1/carts/{cart}"), Some(&bob)).await.assert_error(404, "not_found");
        let mine = app.get("/api/v1/orders", Some(&alice)).await;
        mine.assert_status(200);
        assert_eq!(mine.body["items"][0]["id"], order.as_str());
        let theirs = app.get("/api/v1/orders", Some(&bob)).await;
        assert_eq!(theirs.body["items"].as_array().unwrap().len(), 0);

        // The saga shows every step, in order, with its timings.
        let saga = app.get(&format!("/api/v1/sagas/{order}"), Some(&alice)).await;
        saga.assert_status(200);
        assert_eq!(saga.body["state"], "completed");
        let steps = saga.body["steps"].as_array().unwrap();
        let names: Vec<&str> = steps.iter().map(|s| s["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["reserve_inventory", "authorize_payment", "capture_payment", "commit_inventory", "confirm_order"]);
        for step in steps {
            assert_eq!(step["status"], "succeeded", "{step}");
            assert_eq!(step["attempt"], 1, "{step}");
            assert!(step["started_at"].is_string() && step["finished_at"].is_string() && step["duration_ms"].is_i64(), "{step}");
        }
        assert!(saga.body["finished_at"].is_string());
        assert!(saga.body["actor"]["live"].is_boolean());
        assert!(saga.body["actor"]["mailbox_len"].is_u64());

        // The audit trail and the outbox agree.
        let events = app.get(&format!("/api/v1/orders/{order}/events"), Some(&alice)).await;
        let types: Vec<&str> = events.body.as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(types, ["order.created", "order.paid"]);
        let db = app.database().await;
        let mut conn = db.conn().await.unwrap();
        for event in ["order.created", "order.paid"] {
            let rows = orderflow::db::outbox::payloads_for(&mut conn, event, &order).await.unwrap();
            assert_eq!(rows.len(), 1, "{event}");
        }
    }
);

backend_test!(
    async fn a_declined_payment_gives_the_stock_back(app) {
        let admin = app.admin_token().await;
        app.create_product(&admin, "MUG-1", 900, 5).await;
        let alice = app.customer_token().await;
        let cart = app.cart_with(&alice, &[("MUG-1", 2)]).await;
        let reply = app.checkout(&alice, &cart, "tok_declined").await;
        reply.assert_error(402, "payment_declined");
        let order = order_id_of(&reply);
        assert_eq!(app.stock(&admin, "MUG-1").await, (5, 0));
        let view = app.get(&format!("/api/v1/orders/{order}"), Some(&alice)).await;
        assert_eq!(view.body["status"], "payment_failed");
        assert_eq!(view.body["payment"]["status"], "failed");
        assert_eq!(app.sandbox().charges(&order), 0);

        let saga = app.get(&format!("/api/v1/sagas/{order}"), Some(&alice)).await;
        saga.assert_status(200);
        assert_eq!(saga.body["state"], "compensated");
        let steps: Vec<(&str, &str)> = saga.body["steps"].as_array().unwrap().iter()
            .map(|s| (s["name"].as_str().unwrap(), s["status"].as_str().unwrap())).collect();
        assert_eq!(steps, [("reserve_inventory", "succeeded"), ("authorize_payment", "failed")]);
        let compensations: Vec<&str> = saga.body["compensations"].as_array().unwrap().iter()
            .map(|s| s["name"].as_str().unwrap()).collect();
        assert_eq!(compensations, ["release_inventory"]);
        for step in saga.body["steps"].as_array().unwrap() {
            assert!(step["started_at"].is_string() && step["finished_at"].is_string(), "{step}");
        }
    }
);

backend_test!(
    async fn out_of_stock_names_every_short_line_and_keeps_stock(app) {
        let admin = app.admin_token().await;
        app.create_product(&admin, "A-1", 100, 1).await;
        app.create_product(&admin, "B-1", 100, 5).await;
        app.create_product(&admin, "C-1", 100, 50).await;
        let alice = app.customer_token().await;
        let reply = app.place_order(&alice, &[("C-1", 3), ("A-1", 2), ("B-1", 10)], "tok_ok").await;
        reply.assert_error(409, "out_of_stock");
        let mut items = reply.body["error"]["details"]["items"].as_array().unwrap().clone();
        items.sort_by_key(|i| i["sku"].as_str().unwrap().to_owned());
        assert_eq!(items, vec![
            json!({"sku": "A-1", "requested": 2, "available": 1}),
            json!({"sku": "B-1", "requested": 10, "available": 5}),
        ]);
        assert_eq!(app.stock(&admin, "A-1").await, (1, 0));
        assert_eq!(app.stock(&admin, "C-1").await, (50, 0));
        let order = order_id_of(&reply);
        let view = app.get(&format!("/api/v1/orders/{order}"), Some(&alice)).await;
        assert_eq!(view.body["status"], "rejected");

        // An empty cart, an unknown product, a bad quantity.
        let cart = app.cart_with(&alice, &[]).await;
        app.checkout(&alice, &cart, "tok_ok").await.assert_error(422, "empty_cart");
        app.place_order(&alice, &[], "tok_ok").await.assert_error(422, "empty_cart");
        app.post(&format!("/api/v1/carts/{cart}/items"), json!({"sku": "NOPE", "quantity": 1}), Some(&alice))
            .await
            .assert_error(422, "validation_failed");
        app.post(&format!("/api/v1/carts/{cart}/items"), json!({"sku": "A-1", "quantity": 0}), Some(&alice))
            .await
            .assert_error(422, "validation_failed");
        app.post(&format!("/api/v1/carts/{cart}/items"), json!({"sku": "A-1", "quantity": 10001}), Some(&alice))
            .await
            .assert_error(422, "validation_failed");
        app.place_order(&alice, &[("A-1", -1)], "tok_ok").await.assert_error(422, "validation_failed");
        app.delete(&format!("/api/v1/carts/{cart}/items/A-1"), Some(&alice)).await.assert_error(404, "not_found");
        app.post("/api/v1/orders", json!({"items": [{"sku": "A-1", "quantity": 1}], "payment": {"provider": "stripe", "token": "x"}}), Some(&alice))
            .await
            .assert_error(422, "validation_failed");
        app.get("/api/v1/carts/not-a-uuid", Some(&alice)).await.assert_error(404, "not_found");
        app.post("/api/v1/carts", json!({}), None).await.assert_error(401, "unauthorized");
    }
);

backend_test!(
    async fn a_timed_out_authorization_is_found_not_repeated(app) {
        let admin = app.admin_token().await;
        app.create_product(&admin, "HAT-1", 2500, 3).await;
        let alice = app.customer_token().await;
        let reply = app.place_order(&alice, &[("HAT-1", 1)], "tok_timeout").await;
        reply.assert_status(201);
        assert_eq!(reply.body["status"], "paid");
        let order = order_id_of(&reply);
        let ledger = app.sandbox().ledger();
        let mine: Vec<_> = ledger.iter().filter(|e| e.order_id == order).collect();
        assert_eq!(mine.iter().filter(|e| e.operation == orderflow::payments::Operation::Authorize).count(), 1);
        assert_eq!(app.sandbox().charges(&order), 1, "exactly one charge: {mine:?}");
    }
);

backend_test!(
    async fn a_transient_payment_error_is_retried(app) {
        let admin = app.admin_token().await;
        app.create_product(&admin, "CAP-1", 1500, 3).await;
        let alice = app.customer_token().await;
        let reply = app.place_order(&alice, &[("CAP-1", 1)], "tok_error_once").await;
        reply.assert_status(201);
        let order = order_id_of(&reply);
        assert_eq!(app.sandbox().charges(&order), 1);
        let saga = app.get(&format!("/api/v1/sagas/{order}"), Some(&admin)).await;
        let authorize = saga.body["steps"].as_array().unwrap().iter()
            .find(|s| s["name"] == "authorize_payment").unwrap().clone();
        assert_eq!(authorize["attempt"], 2);
        assert_eq!(authorize["status"], "succeeded");
    }
);

backend_test!(
    async fn respond_async_answers_202_and_the_saga_finishes(app) {
        let admin = app.admin_token().await;
        app.create_product(&admin, "ASYNC-1", 1200, 2).await;
        let alice = app.customer_token().await;
        let cart = app.cart_with(&alice, &[("ASYNC-1", 1)]).await;
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
        assert_eq!(reply.body["status"], "pending");
        let order = order_id_of(&reply);
        let location = reply.header("location").unwrap().to_owned();
        assert_eq!(location, format!("/api/v1/orders/{order}"));
        crate::support::process::eventually("the order is paid", std::time::Duration::from_secs(20), || async {
            app.get(&location, Some(&alice)).await.body["status"] == "paid"
        })
        .await;

        // Operators see sagas start and finish, and how long steps take.
        let metrics = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
        for series in ["sagas_started_total", "sagas_finished_total{state=\"completed\"}", "saga_step_duration_seconds_count{step=\"authorize_payment\"}"] {
            assert!(metrics.lines().any(|l| l.starts_with(series)), "{series} missing from /metrics");
        }
    }
);

backend_test!(
    async fn a_declined_capture_voids_the_hold_and_gives_the_stock_back(app) {
        let admin = app.admin_token().await;
        app.create_product(&admin, "VOID-1", 800, 4).await;
        let alice = app.customer_token().await;
        let reply = app.place_order(&alice, &[("VOID-1", 2)], "tok_capture_declined").await;
        reply.assert_error(402, "payment_declined");
        let order = order_id_of(&reply);
        let view = app.get(&format!("/api/v1/orders/{order}"), Some(&alice)).await;
        assert_eq!(view.body["status"], "payment_failed");
        assert_eq!(view.body["payment"]["status"], "voided");
        assert_eq!(app.stock(&admin, "VOID-1").await, (4, 0));
        let operations: Vec<_> = app.sandbox().ledger().into_iter()
            .filter(|e| e.order_id == order)
            .map(|e| e.operation)
            .collect();
        use orderflow::payments::Operation;
        assert_eq!(operations, [Operation::Authorize, Operation::Void], "the hold is released, nothing charged");
        let saga = app.get(&format!("/api/v1/sagas/{order}"), Some(&alice)).await;
        let compensations: Vec<&str> = saga.body["compensations"].as_array().unwrap().iter()
            .map(|s| s["name"].as_str().unwrap()).collect();
        assert_eq!(compensations, ["void_payment", "release_inventory"]);
    }
);

backend_test!(
    async fn concurrent_checkouts_of_one_cart_make_one_order(app) {
        let admin = app.admin_token().await;
        app.create_product(&admin, "ONCE-1", 500, 10).await;
        let alice = app.customer_token().await;
        let cart = app.cart_with(&alice, &[("ONCE-1", 1)]).await;
        let tries = (0..6).map(|_| app.checkout(&alice, &cart, "tok_ok"));
        let replies = futures_util::future::join_all(tries).await;
        let created: Vec<String> = replies.iter().filter(|r| r.status == 201).map(order_id_of).collect();
        assert_eq!(created.len(), 1, "exactly one checkout makes the order");
        for reply in replies.iter().filter(|r| r.status != 201) {
            reply.assert_error(409, "cart_checked_out");
            assert_eq!(reply.body["error"]["details"]["order_id"], created[0].as_str());
        }
        assert_eq!(app.sandbox().charges(&created[0]), 1);
        assert_eq!(app.stock(&admin, "ONCE-1").await, (9, 0));
    }
);
