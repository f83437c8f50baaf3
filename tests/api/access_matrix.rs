//! The access matrix: every route of the OpenAPI document, called by an
//! anonymous client, by the customer who owns the resource, by another
//! customer, and by an admin, answers the status its row gives. The test
//! reads the routes from the served document and fails for a route without
//! a row, so a new route cannot ship without deciding who may call it.
//!
//! Each call gets fresh resources (owned by the owner) where the route
//! changes state, so every caller finds the resource as its row expects. The
//! engine runs with manual capture, so that capture is possible too.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::app::{read, Reply, PASSWORD};
use crate::support::shop::order_id_of;
use crate::support::{Backend, TestApp};

const SKU: &str = "matrix-1";
const STOQ_SECRET: &str = "stoq-secret-for-the-access-matrix";

#[derive(Debug, Clone, Copy)]
enum Caller {
    Anonymous,
    Owner,
    OtherCustomer,
    Admin,
}

const CALLERS: [Caller; 4] = [
    Caller::Anonymous,
    Caller::Owner,
    Caller::OtherCustomer,
    Caller::Admin,
];

/// (method, path as the document writes it, expected status for
/// [anonymous, owner, other customer, admin]). "Owner" is the customer who
/// owns the cart, order or saga in the path; on routes without one it is
/// just a customer.
const MATRIX: &[(&str, &str, [u16; 4])] = &[
    // Operations and public reads.
    ("get", "/healthz", [200, 200, 200, 200]),
    ("get", "/readyz", [200, 200, 200, 200]),
    ("get", "/metrics", [200, 200, 200, 200]),
    ("get", "/api/versions", [200, 200, 200, 200]),
    ("get", "/api/v1/openapi.json", [200, 200, 200, 200]),
    ("get", "/api/v1/products", [200, 200, 200, 200]),
    ("get", "/api/v1/products/{sku}", [200, 200, 200, 200]),
    // Accounts.
    ("post", "/api/v1/auth/register", [201, 201, 201, 201]),
    ("post", "/api/v1/auth/login", [200, 200, 200, 200]),
    ("get", "/api/v1/users/me", [401, 200, 200, 200]),
    ("get", "/api/v1/users", [401, 403, 403, 200]),
    // Catalog and stock: admin only.
    ("post", "/api/v1/products", [401, 403, 403, 201]),
    ("patch", "/api/v1/products/{sku}", [401, 403, 403, 200]),
    ("get", "/api/v1/inventory/{sku}", [401, 403, 403, 200]),
    (
        "post",
        "/api/v1/inventory/{sku}/restock",
        [401, 403, 403, 200],
    ),
    (
        "post",
        "/api/v1/inventory/{sku}/adjust",
        [401, 403, 403, 200],
    ),
    // Carts: admins see any cart, only its owner changes it.
    ("post", "/api/v1/carts", [401, 201, 201, 201]),
    ("get", "/api/v1/carts/{id}", [401, 200, 404, 200]),
    ("post", "/api/v1/carts/{id}/items", [401, 200, 404, 404]),
    (
        "put",
        "/api/v1/carts/{id}/items/{sku}",
        [401, 200, 404, 404],
    ),
    (
        "delete",
        "/api/v1/carts/{id}/items/{sku}",
        [401, 200, 404, 404],
    ),
    ("post", "/api/v1/carts/{id}/checkout", [401, 201, 404, 404]),
    // Orders: owners and admins see them; admins run fulfilment.
    ("post", "/api/v1/orders", [401, 201, 201, 201]),
    ("get", "/api/v1/orders", [401, 200, 200, 200]),
    ("get", "/api/v1/orders/{id}", [401, 200, 404, 200]),
    ("get", "/api/v1/orders/{id}/events", [401, 200, 404, 200]),
    ("post", "/api/v1/orders/{id}/cancel", [401, 200, 404, 200]),
    ("post", "/api/v1/orders/{id}/capture", [401, 403, 403, 200]),
    ("post", "/api/v1/orders/{id}/ship", [401, 403, 403, 200]),
    ("post", "/api/v1/orders/{id}/deliver", [401, 403, 403, 200]),
    ("post", "/api/v1/orders/{id}/refunds", [401, 403, 403, 201]),
    // Sagas: the owner and admins inspect; admins list and resume. Resume
    // needs a saga that is running, stuck or failed; the order's completed
    // saga answers 409, which shows the admin got past authorisation.
    ("get", "/api/v1/sagas", [401, 403, 403, 200]),
    ("get", "/api/v1/sagas/{id}", [401, 200, 404, 200]),
    ("post", "/api/v1/sagas/{id}/resume", [401, 403, 403, 409]),
    // Webhooks: admin only.
    ("post", "/api/v1/webhooks", [401, 403, 403, 201]),
    ("get", "/api/v1/webhooks", [401, 403, 403, 200]),
    ("delete", "/api/v1/webhooks/{id}", [401, 403, 403, 204]),
    (
        "get",
        "/api/v1/webhooks/{id}/deliveries",
        [401, 403, 403, 200],
    ),
    (
        "post",
        "/api/v1/webhooks/deliveries/{delivery_id}/replay",
        [401, 403, 403, 202],
    ),
    // Analytics: anyone tracks (a token only adds the user); admins list.
    ("post", "/api/v1/events.track", [202, 202, 202, 202]),
    ("get", "/api/v1/events", [401, 403, 403, 200]),
    // Stoq authenticates by signature, not by token: a signed event is
    // accepted whoever sends it (the unsigned case is in stoq.rs).
    (
        "post",
        "/api/v1/integrations/stoq/events",
        [200, 200, 200, 200],
    ),
];

struct Fixture {
    app: TestApp,
    admin: String,
    owner: String,
    owner_email: String,
    other: String,
}

/// One call: the path with its parameters filled in, and the body.
struct Call {
    path: String,
    body: Option<Value>,
    headers: Vec<(&'static str, String)>,
}

impl Call {
    fn to(path: impl Into<String>) -> Call {
        Call {
            path: path.into(),
            body: None,
            headers: Vec::new(),
        }
    }

    fn with(mut self, body: Value) -> Call {
        self.body = Some(body);
        self
    }
}

impl Fixture {
    async fn new(backend: Backend) -> Fixture {
        let app = TestApp::spawn_with(backend, |s| {
            s.payments.capture = orderflow::config::CaptureMode::Manual;
            s.integrations.stoq.secret = Some(secrecy::SecretString::from(STOQ_SECRET));
        })
        .await;
        let admin = app.admin_token().await;
        app.create_product(&admin, SKU, 250, 1_000_000).await;
        let owner_email = format!("owner-{}@example.com", uuid::Uuid::new_v4().simple());
        let owner = app.register(&owner_email, PASSWORD, "Owner").await;
        owner.assert_status(201);
        let owner = owner.body["access_token"].as_str().unwrap().to_owned();
        let other = app.customer_token().await;
        Fixture {
            app,
            admin,
            owner,
            owner_email,
            other,
        }
    }

    fn token(&self, caller: Caller) -> Option<&str> {
        match caller {
            Caller::Anonymous => None,
            Caller::Owner => Some(&self.owner),
            Caller::OtherCustomer => Some(&self.other),
            Caller::Admin => Some(&self.admin),
        }
    }

    async fn cart(&self) -> String {
        self.app.cart_with(&self.owner, &[(SKU, 1)]).await
    }

    /// A new order of the owner's, `authorized` (manual capture), moved on
    /// by the admin through `steps` ("capture", "ship").
    async fn order(&self, steps: &[&str]) -> String {
        let placed = self
            .app
            .place_order(&self.owner, &[(SKU, 2)], "tok_ok")
            .await;
        placed.assert_status(201);
        let id = order_id_of(&placed);
        for step in steps {
            self.app
                .post(
                    &format!("/api/v1/orders/{id}/{step}"),
                    json!({}),
                    Some(&self.admin),
                )
                .await
                .assert_status(200);
        }
        id
    }

    /// A new webhook endpoint (at a port nothing listens on); its id.
    async fn webhook(&self) -> String {
        let reply = self
            .app
            .post(
                "/api/v1/webhooks",
                json!({"url": "http://127.0.0.1:9/matrix", "events": ["order.created"]}),
                Some(&self.admin),
            )
            .await;
        reply.assert_status(201);
        reply.body["id"].as_str().unwrap().to_owned()
    }

    /// A delivery of a new order's `order.created` to a new endpoint; its id.
    async fn delivery(&self) -> String {
        let webhook = self.webhook().await;
        self.order(&[]).await;
        let path = format!("/api/v1/webhooks/{webhook}/deliveries");
        for _ in 0..300 {
            let reply = self.app.get(&path, Some(&self.admin)).await;
            if let Some(id) = reply.body["items"][0]["id"].as_str() {
                return id.to_owned();
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("no delivery was made for the new order");
    }

    /// The call for `method template`, with fresh resources where it changes state.
    async fn call_for(&self, method: &str, template: &str) -> Call {
        let sku_path = template.replace("{sku}", SKU);
        match (method, template) {
            (
                "get",
                "/healthz"
                | "/readyz"
                | "/metrics"
                | "/api/versions"
                | "/api/v1/openapi.json"
                | "/api/v1/products"
                | "/api/v1/products/{sku}"
                | "/api/v1/users/me"
                | "/api/v1/users"
                | "/api/v1/inventory/{sku}"
                | "/api/v1/orders"
                | "/api/v1/sagas",
            ) => Call::to(sku_path),
            ("post", "/api/v1/auth/register") => Call::to(template).with(json!({
                "email": format!("new-{}@example.com", uuid::Uuid::new_v4().simple()),
                "password": PASSWORD,
                "name": "New",
            })),
            ("post", "/api/v1/auth/login") => {
                Call::to(template).with(json!({"email": self.owner_email, "password": PASSWORD}))
            }
            ("post", "/api/v1/products") => Call::to(template).with(json!({
                "sku": format!("m-{}", uuid::Uuid::new_v4().simple()),
                "name": "Matrix", "price": 100, "currency": "USD",
            })),
            ("patch", "/api/v1/products/{sku}") => Call::to(sku_path).with(json!({"price": 250})),
            ("post", "/api/v1/inventory/{sku}/restock") => {
                Call::to(sku_path).with(json!({"quantity": 1}))
            }
            ("post", "/api/v1/inventory/{sku}/adjust") => {
                Call::to(sku_path).with(json!({"delta": 1, "reason": "matrix"}))
            }
            ("post", "/api/v1/carts") => Call::to(template).with(json!({})),
            ("get", "/api/v1/carts/{id}") => Call::to(template.replace("{id}", &self.cart().await)),
            ("post", "/api/v1/carts/{id}/items") => {
                Call::to(template.replace("{id}", &self.cart().await))
                    .with(json!({"sku": SKU, "quantity": 1}))
            }
            ("put", "/api/v1/carts/{id}/items/{sku}") => {
                Call::to(sku_path.replace("{id}", &self.cart().await)).with(json!({"quantity": 3}))
            }
            ("delete", "/api/v1/carts/{id}/items/{sku}") => {
                Call::to(sku_path.replace("{id}", &self.cart().await))
            }
            ("post", "/api/v1/carts/{id}/checkout") => {
                Call::to(template.replace("{id}", &self.cart().await))
                    .with(json!({"payment": {"token": "tok_ok"}}))
            }
            ("post", "/api/v1/orders") => Call::to(template).with(json!({
                "items": [{"sku": SKU, "quantity": 1}],
                "payment": {"token": "tok_ok"},
            })),
            (
                "get",
                "/api/v1/orders/{id}" | "/api/v1/orders/{id}/events" | "/api/v1/sagas/{id}",
            )
            | ("post", "/api/v1/orders/{id}/cancel" | "/api/v1/orders/{id}/capture") => {
                Call::to(template.replace("{id}", &self.order(&[]).await))
            }
            ("post", "/api/v1/sagas/{id}/resume") => {
                Call::to(template.replace("{id}", &self.order(&["capture"]).await))
            }
            ("post", "/api/v1/orders/{id}/ship") => {
                Call::to(template.replace("{id}", &self.order(&["capture"]).await))
                    .with(json!({"carrier": "Matrix Post"}))
            }
            ("post", "/api/v1/orders/{id}/deliver") => {
                Call::to(template.replace("{id}", &self.order(&["capture", "ship"]).await))
            }
            ("post", "/api/v1/orders/{id}/refunds") => {
                Call::to(template.replace("{id}", &self.order(&["capture"]).await))
                    .with(json!({"amount": 100, "reason": "matrix"}))
            }
            ("post", "/api/v1/integrations/stoq/events") => {
                let body = json!({
                    "id": format!("evt-{}", uuid::Uuid::new_v4().simple()),
                    "type": "matrix.checked",
                    "occurred_at": "2026-11-22T10:00:00Z",
                    "data": {},
                });
                let mut call = Call::to(template).with(body.clone());
                call.headers
                    .push(("x-stoq-signature", sign(body.to_string().as_bytes())));
                call
            }
            ("get", "/api/v1/webhooks" | "/api/v1/events") => Call::to(template),
            ("post", "/api/v1/webhooks") => Call::to(template)
                .with(json!({"url": "http://127.0.0.1:9/matrix", "events": ["*"]})),
            ("delete", "/api/v1/webhooks/{id}") | ("get", "/api/v1/webhooks/{id}/deliveries") => {
                Call::to(template.replace("{id}", &self.webhook().await))
            }
            ("post", "/api/v1/webhooks/deliveries/{delivery_id}/replay") => {
                Call::to(template.replace("{delivery_id}", &self.delivery().await))
            }
            ("post", "/api/v1/events.track") => {
                Call::to(template).with(json!({"name": "matrix_viewed"}))
            }
            _ => panic!("the access matrix has no call for {method} {template}: add one"),
        }
    }

    async fn send(&self, method: &str, call: &Call, token: Option<&str>) -> Reply {
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let mut request = self.app.client.request(method, self.app.url(&call.path));
        if let Some(body) = &call.body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        for (name, value) in &call.headers {
            request = request.header(*name, value);
        }
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        read(request.send().await.expect("request failed")).await
    }
}

fn sign(body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(STOQ_SECRET.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// (method, path) of every operation in the served OpenAPI document.
fn documented_routes(doc: &Value) -> BTreeSet<(String, String)> {
    doc["paths"]
        .as_object()
        .expect("the document has paths")
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .expect("a path item is an object")
                .keys()
                .map(move |method| (method.clone(), path.clone()))
        })
        .collect()
}

async fn every_route_answers_each_caller_as_the_access_matrix_says(backend: Backend) {
    let f = Fixture::new(backend).await;

    let doc = f.app.get("/api/v1/openapi.json", None).await;
    doc.assert_status(200);
    let documented = documented_routes(&doc.body);
    let rows: BTreeSet<(String, String)> = MATRIX
        .iter()
        .map(|(m, p, _)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(rows.len(), MATRIX.len(), "the matrix has a route twice");
    let without_row: Vec<_> = documented.difference(&rows).collect();
    assert!(
        without_row.is_empty(),
        "documented routes without an access-matrix row: {without_row:?}"
    );
    let undocumented: Vec<_> = rows.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "access-matrix rows for routes the document does not have: {undocumented:?}"
    );

    let mut wrong = Vec::new();
    for (method, template, expected) in MATRIX {
        for (caller, expected) in CALLERS.iter().zip(expected) {
            let call = f.call_for(method, template).await;
            let reply = f.send(method, &call, f.token(*caller)).await;
            if reply.status.as_u16() != *expected {
                wrong.push(format!(
                    "{method} {template} as {caller:?}: expected {expected}, got {} {}",
                    reply.status.as_u16(),
                    reply.text.chars().take(200).collect::<String>()
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "access matrix violated:\n{}",
        wrong.join("\n")
    );
}

async fn the_openapi_document_is_served_to_anyone_as_openapi_3_json(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let reply = app.get("/api/v1/openapi.json", None).await;
    reply.assert_status(200);
    assert!(reply
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/json")));
    let doc: Value = serde_json::from_str(&reply.text).expect("the document is JSON");
    let version = doc["openapi"].as_str().expect("an openapi version");
    assert!(version.starts_with("3."), "OpenAPI 3.x, not {version}");
    assert!(doc["paths"]["/api/v1/orders/{id}"]["get"].is_object());
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["bearerFormat"],
        "JWT"
    );
}

crate::both_backends!(
    every_route_answers_each_caller_as_the_access_matrix_says,
    the_openapi_document_is_served_to_anyone_as_openapi_3_json,
);
