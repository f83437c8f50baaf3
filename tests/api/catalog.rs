//! Products and admin inventory over HTTP.

use reqwest::Method;
use serde_json::json;

use crate::backend_test;
use crate::support::TestApp;

async fn create(app: &TestApp, token: &str, sku: &str, stock: i64) -> crate::support::app::Reply {
    app.post(
        "/api/v1/products",
        json!({"sku": sku, "name": format!("Product {sku}"), "price": 1999, "currency": "USD", "initial_stock": stock}),
        Some(token),
    )
    .await
}

backend_test! {
    async fn admin_creates_a_product_with_stock_and_anyone_reads_it(app) {
        let admin = app.admin_token().await;
        let created = create(&app, &admin, "tee-red-m", 50).await;
        created.assert_status(201);
        assert_eq!(created.body["sku"], "tee-red-m");
        assert_eq!(created.body["price"], 1999);
        assert_eq!(created.body["currency"], "USD");
        assert_eq!(created.body["active"], true);
        assert_eq!(created.body["availability"], json!({"on_hand": 50, "reserved": 0, "available": 50}));

        let read = app.get("/api/v1/products/tee-red-m", None).await;
        read.assert_status(200);
        assert_eq!(read.body["availability"]["available"], 50);
        create(&app, &admin, "tee-red-m", 1).await.assert_error(409, "conflict");
    }
}

backend_test! {
    async fn only_admins_write_the_catalog(app) {
        let customer = app.customer_token().await;
        create(&app, &customer, "nope-1", 1).await.assert_error(403, "forbidden");
        app.post("/api/v1/products", json!({"sku": "nope-2", "name": "N", "price": 1, "currency": "USD"}), None)
            .await
            .assert_error(401, "unauthorized");
        app.call(Method::PATCH, "/api/v1/products/nope-1", Some(json!({"price": 1})), Some(&customer))
            .await
            .assert_error(403, "forbidden");
        app.post("/api/v1/inventory/nope-1/restock", json!({"quantity": 1}), Some(&customer))
            .await
            .assert_error(403, "forbidden");
        app.get("/api/v1/inventory/nope-1", Some(&customer)).await.assert_error(403, "forbidden");
    }
}

backend_test! {
    async fn invalid_products_are_422_naming_each_field(app) {
        let admin = app.admin_token().await;
        let reply = app
            .post(
                "/api/v1/products",
                json!({"sku": "bad sku!", "name": "", "price": -1, "currency": "usd", "initial_stock": -3}),
                Some(&admin),
            )
            .await;
        reply.assert_error(422, "validation_failed");
        for field in ["sku", "name", "price", "currency", "initial_stock"] {
            assert!(reply.body["error"]["details"]["fields"][field].is_string(), "{field}: {}", reply.text);
        }
        let huge = app
            .post("/api/v1/products", json!({"sku": "huge", "name": "H", "price": 1_000_000_000_001_i64, "currency": "USD"}), Some(&admin))
            .await;
        huge.assert_error(422, "validation_failed");
        app.get("/api/v1/products/huge", None).await.assert_error(404, "not_found");
    }
}

backend_test! {
    async fn a_price_change_is_visible_at_once(app) {
        let admin = app.admin_token().await;
        create(&app, &admin, "mug", 3).await.assert_status(201);
        app.get("/api/v1/products/mug", None).await.assert_status(200);
        let patched = app.call(Method::PATCH, "/api/v1/products/mug", Some(json!({"price": 2500, "description": "Big"})), Some(&admin)).await;
        patched.assert_status(200);
        assert_eq!(patched.body["price"], 2500);
        let read = app.get("/api/v1/products/mug", None).await;
        assert_eq!(read.body["price"], 2500);
        assert_eq!(read.body["description"], "Big");
        let cleared = app.call(Method::PATCH, "/api/v1/products/mug", Some(json!({"description": null})), Some(&admin)).await;
        assert!(cleared.body["description"].is_null(), "{}", cleared.text);
        app.call(Method::PATCH, "/api/v1/products/mug", Some(json!({})), Some(&admin)).await.assert_error(422, "validation_failed");
        app.call(Method::PATCH, "/api/v1/products/ghost", Some(json!({"price": 1})), Some(&admin)).await.assert_error(404, "not_found");
    }
}

backend_test! {
    async fn listing_pages_through_active_products(app) {
        let admin = app.admin_token().await;
        for sku in ["a-1", "a-2", "a-3", "a-4", "a-5"] {
            create(&app, &admin, sku, 1).await.assert_status(201);
        }
        app.call(Method::PATCH, "/api/v1/products/a-3", Some(json!({"active": false})), Some(&admin)).await.assert_status(200);
        let mut seen = Vec::new();
        let mut path = "/api/v1/products?limit=2".to_owned();
        loop {
            let page = app.get(&path, None).await;
            page.assert_status(200);
            seen.extend(page.body["items"].as_array().unwrap().iter().map(|p| p["sku"].as_str().unwrap().to_owned()));
            match page.body["next_cursor"].as_str() {
                Some(cursor) => path = format!("/api/v1/products?limit=2&cursor={cursor}"),
                None => break,
            }
        }
        assert_eq!(seen, ["a-1", "a-2", "a-4", "a-5"], "inactive products are hidden from the public");
        let all = app.get("/api/v1/products?limit=10", Some(&admin)).await;
        assert_eq!(all.body["items"].as_array().unwrap().len(), 5, "admins see inactive ones too");
        app.get("/api/v1/products?cursor=bad%20cursor", None).await.assert_error(400, "invalid_query");
    }
}

backend_test! {
    async fn restock_and_adjust_move_stock_through_the_ledger(app) {
        let admin = app.admin_token().await;
        create(&app, &admin, "bolt", 60).await.assert_status(201);
        let before = app.get("/api/v1/inventory/bolt", Some(&admin)).await;
        before.assert_status(200);
        assert_eq!(before.body["on_hand"], 60);
        assert_eq!(before.body["reservations"], json!([]));

        let restocked = app.post("/api/v1/inventory/bolt/restock", json!({"quantity": 10, "note": "delivery 42"}), Some(&admin)).await;
        restocked.assert_status(200);
        assert_eq!(restocked.body["on_hand"], 70);
        assert_eq!(restocked.body["available"], 70);
        assert!(restocked.body["version"].as_i64().unwrap() > before.body["version"].as_i64().unwrap());

        let adjusted = app.post("/api/v1/inventory/bolt/adjust", json!({"delta": -5, "reason": "damaged"}), Some(&admin)).await;
        adjusted.assert_status(200);
        assert_eq!(adjusted.body["on_hand"], 65);

        let too_far = app.post("/api/v1/inventory/bolt/adjust", json!({"delta": -66, "reason": "count"}), Some(&admin)).await;
        too_far.assert_error(409, "conflict");
        assert_eq!(too_far.body["error"]["details"]["on_hand"], 65);

        app.post("/api/v1/inventory/bolt/adjust", json!({"delta": 0, "reason": "x"}), Some(&admin)).await.assert_error(422, "validation_failed");
        app.post("/api/v1/inventory/bolt/adjust", json!({"delta": 1, "reason": " "}), Some(&admin)).await.assert_error(422, "validation_failed");
        app.post("/api/v1/inventory/bolt/restock", json!({"quantity": 0}), Some(&admin)).await.assert_error(422, "validation_failed");
        app.post("/api/v1/inventory/ghost/restock", json!({"quantity": 1}), Some(&admin)).await.assert_error(404, "not_found");
        // Refused changes changed nothing.
        assert_eq!(app.get("/api/v1/inventory/bolt", Some(&admin)).await.body["on_hand"], 65);

        let db = app.database().await;
        let mut conn = db.conn().await.unwrap();
        assert_eq!(orderflow::db::inventory::ledger_totals(&mut conn, "bolt").await.unwrap(), (65, 0));
        let events = orderflow::db::outbox::payloads_for(&mut conn, "inventory.restocked", "bolt").await.unwrap();
        assert_eq!(events.len(), 2, "restock and adjust each emit inventory.restocked: {events:?}");
    }
}

backend_test! {
    async fn cached_product_reads_show_every_write_at_once(app) {
        let admin = app.admin_token().await;
        create(&app, &admin, "cached", 10).await.assert_status(201);
        assert_eq!(app.get("/api/v1/products/cached", None).await.body["name"], "Product cached");

        // Change the row behind the engine's back: a cached read cannot see it,
        // which proves reads are served from the cache.
        let db = app.database().await;
        let mut conn = db.conn().await.unwrap();
        orderflow::with_conn!(&mut conn, |c| {
            use diesel_async::RunQueryDsl;
            diesel::sql_query("UPDATE products SET name = 'Changed behind its back' WHERE sku = 'cached'")
                .execute(c)
                .await
        })
        .unwrap();
        assert_eq!(app.get("/api/v1/products/cached", None).await.body["name"], "Product cached");
        if let Some(prefix) = app.redis_prefix() {
            let client = redis::Client::open(crate::support::backends::redis_url()).unwrap();
            let mut redis = client.get_multiplexed_async_connection().await.unwrap();
            let cached: Option<String> = redis::cmd("GET").arg(format!("{prefix}:product:cached")).query_async(&mut redis).await.unwrap();
            assert!(cached.is_some(), "with Redis configured the document lives in Redis");
        }

        // Every write through the engine is visible on the very next read.
        app.post("/api/v1/inventory/cached/restock", json!({"quantity": 5}), Some(&admin)).await.assert_status(200);
        let read = app.get("/api/v1/products/cached", None).await;
        assert_eq!(read.body["availability"]["on_hand"], 15);
        assert_eq!(read.body["name"], "Changed behind its back", "the restock invalidated the document");
        app.post("/api/v1/inventory/cached/adjust", json!({"delta": -3, "reason": "count"}), Some(&admin)).await.assert_status(200);
        assert_eq!(app.get("/api/v1/products/cached", None).await.body["availability"]["on_hand"], 12);
        app.call(Method::PATCH, "/api/v1/products/cached", Some(json!({"price": 4242})), Some(&admin)).await.assert_status(200);
        let read = app.get("/api/v1/products/cached", None).await;
        assert_eq!(read.body["price"], 4242);
        assert_eq!(read.body["availability"]["on_hand"], 12);
    }
}
