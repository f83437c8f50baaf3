//! Shopping helpers over the HTTP API: products, carts, orders.

use reqwest::Method;
use serde_json::{json, Value};

use super::app::{Reply, TestApp};

impl TestApp {
    /// Creates a product with `stock` units (as the admin).
    pub async fn create_product(&self, admin: &str, sku: &str, price: i64, stock: i64) {
        self.post(
            "/api/v1/products",
            json!({"sku": sku, "name": format!("Product {sku}"), "price": price, "currency": "USD", "initial_stock": stock}),
            Some(admin),
        )
        .await
        .assert_status(201);
    }

    /// A new cart of `token`'s holding `lines`; returns its id.
    pub async fn cart_with(&self, token: &str, lines: &[(&str, i64)]) -> String {
        let cart = self.post("/api/v1/carts", json!({}), Some(token)).await;
        cart.assert_status(201);
        let id = cart.body["id"].as_str().expect("cart id").to_owned();
        for (sku, quantity) in lines {
            self.post(
                &format!("/api/v1/carts/{id}/items"),
                json!({"sku": sku, "quantity": quantity}),
                Some(token),
            )
            .await
            .assert_status(200);
        }
        id
    }

    pub async fn checkout(&self, token: &str, cart: &str, payment: &str) -> Reply {
        self.post(
            &format!("/api/v1/carts/{cart}/checkout"),
            json!({"payment": {"token": payment}}),
            Some(token),
        )
        .await
    }

    /// `POST /orders` with `lines`, paid with `payment`.
    pub async fn place_order(&self, token: &str, lines: &[(&str, i64)], payment: &str) -> Reply {
        let items: Vec<Value> = lines
            .iter()
            .map(|(sku, q)| json!({"sku": sku, "quantity": q}))
            .collect();
        self.post(
            "/api/v1/orders",
            json!({"items": items, "payment": {"provider": "sandbox", "token": payment}}),
            Some(token),
        )
        .await
    }

    /// Stock of `sku`: (on_hand, reserved).
    pub async fn stock(&self, admin: &str, sku: &str) -> (i64, i64) {
        let reply = self
            .get(&format!("/api/v1/inventory/{sku}"), Some(admin))
            .await;
        reply.assert_status(200);
        (
            reply.body["on_hand"].as_i64().unwrap(),
            reply.body["reserved"].as_i64().unwrap(),
        )
    }

    pub async fn put(&self, path: &str, body: Value, token: Option<&str>) -> Reply {
        self.call(Method::PUT, path, Some(body), token).await
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> Reply {
        self.call(Method::DELETE, path, None, token).await
    }
}

/// The id of the order in a checkout reply (201 body, or error details).
pub fn order_id_of(reply: &Reply) -> String {
    reply.body["id"]
        .as_str()
        .or_else(|| reply.body["order_id"].as_str())
        .or_else(|| reply.body["error"]["details"]["order_id"].as_str())
        .unwrap_or_else(|| panic!("no order id in {}", reply.text))
        .to_owned()
}
