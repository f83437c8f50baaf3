//! Hostile input on the routes that move money and stock: every bad body is
//! a 4xx with the error envelope, never a 5xx, and changes nothing.

use reqwest::Method;
use serde_json::json;

use crate::backend_test;
use crate::support::app::Reply;
use crate::support::shop::order_id_of;

/// Bodies that must be refused, each with what the refusal must be.
fn bad_order_bodies() -> Vec<(&'static str, String, u16)> {
    let line = |q: &str| {
        format!(r#"{{"items":[{{"sku":"HOST-1","quantity":{q}}}],"payment":{{"token":"tok_ok"}}}}"#)
    };
    let many_lines = format!(
        r#"{{"items":[{}],"payment":{{"token":"tok_ok"}}}}"#,
        (0..101)
            .map(|i| format!(r#"{{"sku":"S-{i}","quantity":1}}"#))
            .collect::<Vec<_>>()
            .join(",")
    );
    vec![
        ("zero quantity", line("0"), 422),
        ("negative quantity", line("-5"), 422),
        ("quantity over 10 000", line("10001"), 422),
        ("quantity past i64", line("9223372036854775808"), 422),
        ("quantity 1e30", line("1e30"), 422),
        ("fractional quantity", line("1.5"), 422),
        ("quantity as a string", line("\"1\""), 422),
        ("null quantity", line("null"), 422),
        ("unknown field", r#"{"items":[],"payment":{"token":"tok_ok"},"discount":100}"#.to_owned(), 422),
        ("unknown payment field", r#"{"items":[{"sku":"HOST-1","quantity":1}],"payment":{"token":"tok_ok","amount":1}}"#.to_owned(), 422),
        ("invalid sku", r#"{"items":[{"sku":"'; DROP TABLE orders; --","quantity":1}],"payment":{"token":"tok_ok"}}"#.to_owned(), 422),
        ("empty token", r#"{"items":[{"sku":"HOST-1","quantity":1}],"payment":{"token":""}}"#.to_owned(), 422),
        ("huge token", format!(r#"{{"items":[{{"sku":"HOST-1","quantity":1}}],"payment":{{"token":"{}"}}}}"#, "t".repeat(5000)), 422),
        ("array body", "[]".to_owned(), 422),
        ("string body", "\"order\"".to_owned(), 422),
        ("101 lines", many_lines, 422),
        ("deep nesting", format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)), 422),
        ("deep nesting in a field", format!(r#"{{"items":{}{}}}"#, "[".repeat(10_000), "]".repeat(10_000)), 422),
        ("truncated", r#"{"items":[{"sku":"HOST-1","#.to_owned(), 400),
        ("NUL bytes", "{\"items\":\u{0}}".to_owned(), 400),
    ]
}

async fn send(
    app: &crate::support::TestApp,
    method: Method,
    path: &str,
    content_type: &str,
    body: String,
    token: &str,
) -> Reply {
    let response = app
        .client
        .request(method, app.url(path))
        .bearer_auth(token)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("request failed");
    crate::support::app::read(response).await
}

fn assert_envelope(what: &str, reply: &Reply, status: u16) {
    assert_eq!(reply.status.as_u16(), status, "{what}: {}", reply.text);
    assert!(
        reply.body["error"]["code"].is_string(),
        "{what}: no envelope: {}",
        reply.text
    );
    assert!(
        reply.body["error"]["details"].is_object(),
        "{what}: {}",
        reply.text
    );
}

backend_test!(
    async fn bad_orders_and_refunds_are_refused_and_change_nothing(app) {
        let admin = app.admin_token().await;
        app.create_product(&admin, "HOST-1", 500, 10).await;
        let alice = app.customer_token().await;
        for (what, body, status) in bad_order_bodies() {
            let reply = send(&app, Method::POST, "/api/v1/orders", "application/json", body, &alice).await;
            assert_envelope(what, &reply, status);
        }
        let cart = app.cart_with(&alice, &[("HOST-1", 1)]).await;
        for (what, body, status) in [
            ("checkout without payment", "{}".to_owned(), 422),
            ("checkout with items", r#"{"payment":{"token":"tok_ok"},"items":[]}"#.to_owned(), 422),
        ] {
            let reply = send(&app, Method::POST, &format!("/api/v1/carts/{cart}/checkout"), "application/json", body, &alice).await;
            assert_envelope(what, &reply, status);
        }
        // Wrong content types, on every money route.
        for path in ["/api/v1/orders".to_owned(), format!("/api/v1/carts/{cart}/checkout")] {
            for content_type in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"] {
                let reply = send(&app, Method::POST, &path, content_type, r#"{"payment":{"token":"tok_ok"}}"#.to_owned(), &alice).await;
                assert_envelope(content_type, &reply, 415);
            }
        }
        let orders = app.get("/api/v1/orders", Some(&alice)).await;
        assert_eq!(orders.body["items"].as_array().unwrap().len(), 0, "no order was made");
        assert_eq!(app.stock(&admin, "HOST-1").await, (10, 0));

        // Refunds: amounts out of range, bad restock lines.
        let paid = app.place_order(&alice, &[("HOST-1", 2)], "tok_ok").await;
        paid.assert_status(201);
        let order = order_id_of(&paid);
        let refunds = format!("/api/v1/orders/{order}/refunds");
        for (what, body, status) in [
            ("zero amount", r#"{"amount":0}"#, 422),
            ("negative amount", r#"{"amount":-100}"#, 422),
            ("amount over 10^12", r#"{"amount":1000000000001}"#, 422),
            ("amount past i64", r#"{"amount":99999999999999999999}"#, 422),
            ("fractional amount", r#"{"amount":10.5}"#, 422),
            ("amount as a string", r#"{"amount":"100"}"#, 422),
            ("restock of another sku", r#"{"amount":100,"restock":[{"sku":"OTHER","quantity":1}]}"#, 422),
            ("restock of more than bought", r#"{"amount":100,"restock":[{"sku":"HOST-1","quantity":3}]}"#, 422),
            ("restock twice", r#"{"amount":100,"restock":[{"sku":"HOST-1","quantity":1},{"sku":"HOST-1","quantity":1}]}"#, 422),
            ("control characters in reason", "{\"amount\":100,\"reason\":\"a\\u0000b\"}", 422),
            ("more than captured", r#"{"amount":1001}"#, 422),
        ] {
            let reply = send(&app, Method::POST, &refunds, "application/json", body.to_owned(), &admin).await;
            assert_envelope(what, &reply, status);
        }
        let view = app.get(&format!("/api/v1/orders/{order}"), Some(&admin)).await;
        assert_eq!(view.body["payment"]["refunded"], 0, "no refund happened");
        assert_eq!(view.body["status"], "paid");

        // Ids that are not ids are 404, not 500.
        for path in [
            "/api/v1/orders/not-a-uuid",
            "/api/v1/orders/00000000-0000-0000-0000-000000000000",
            "/api/v1/orders/%27%20OR%201%3D1--/cancel",
            "/api/v1/sagas/..%2F..%2Fetc%2Fpasswd",
            "/api/v1/carts/%00/checkout",
        ] {
            let method = if path.ends_with("cancel") || path.ends_with("checkout") { Method::POST } else { Method::GET };
            let reply = send(&app, method, path, "application/json", r#"{"payment":{"token":"tok_ok"}}"#.to_owned(), &admin).await;
            assert!(reply.status.is_client_error(), "{path}: {}", reply.text);
            assert!(reply.body["error"]["code"].is_string(), "{path}: {}", reply.text);
        }
    }
);

backend_test!(
    async fn script_and_sql_fragments_in_order_fields_come_back_as_plain_data(app) {
        let admin = app.admin_token().await;
        app.create_product(&admin, "HOST-2", 500, 10).await;
        let alice = app.customer_token().await;
        let paid = app.place_order(&alice, &[("HOST-2", 1)], "tok_ok").await;
        let order = order_id_of(&paid);
        let carrier = "<script>alert(1)</script>";
        let tracking = "1'); DELETE FROM orders; --";
        let shipped = app
            .post(&format!("/api/v1/orders/{order}/ship"), json!({"carrier": carrier, "tracking_number": tracking}), Some(&admin))
            .await;
        shipped.assert_status(200);
        let view = app.get(&format!("/api/v1/orders/{order}"), Some(&alice)).await;
        assert_eq!(view.body["shipping"]["carrier"], carrier);
        assert_eq!(view.body["shipping"]["tracking_number"], tracking);
        assert_eq!(view.header("content-type"), Some("application/json"));
        let reason = "\" OR 1=1; <img src=x onerror=alert(1)>";
        let refund = app
            .post(&format!("/api/v1/orders/{order}/refunds"), json!({"amount": 100, "reason": reason}), Some(&admin))
            .await;
        refund.assert_status(201);
        assert_eq!(refund.body["reason"], reason);
        let all = app.get("/api/v1/orders", Some(&admin)).await;
        assert_eq!(all.body["items"].as_array().unwrap().len(), 1, "nothing was deleted");
    }
);
