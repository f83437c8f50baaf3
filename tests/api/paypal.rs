//! The PayPal provider against a local stub of PayPal's v2 API: in-memory
//! orders, authorizations, captures and refunds; OAuth with Basic auth and
//! bearer tokens; `PayPal-Request-Id` replays; a log of every effect.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::http::Method;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use orderflow::config::PaypalSettings;
use orderflow::payments::paypal::PaypalProvider;
use orderflow::payments::{
    Operation, PaymentError, PaymentProvider, PaymentRequest, PaymentResult,
};
use secrecy::SecretString;
use serde_json::{json, Value};

const CLIENT_ID: &str = "stub-client";
const CLIENT_SECRET: &str = "stub-secret-Zq9";
/// `Basic base64("stub-client:stub-secret-Zq9")`.
const BASIC: &str = "Basic c3R1Yi1jbGllbnQ6c3R1Yi1zZWNyZXQtWnE5";
const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Default)]
struct State {
    tokens: Vec<String>,
    oauth_calls: usize,
    /// Order id → (outcome: "ok", "DENIED" or a 422 issue, authorization).
    orders: HashMap<String, (&'static str, Option<String>)>,
    /// Authorization, capture or refund id → status.
    statuses: HashMap<String, &'static str>,
    /// Stored answers by `PayPal-Request-Id`.
    replies: HashMap<String, (u16, Value)>,
    /// Every effect, e.g. `capture CAP-3 19.99 USD`.
    effects: Vec<String>,
    next_id: u32,
    /// Knobs: sleep after the next effect; fail the next API call.
    sleep_once: Option<Duration>,
    fail_once: Option<u16>,
    echo_secrets: bool,
}

impl State {
    fn new_id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}-{}", self.next_id)
    }

    /// A POST seen for the first time.
    fn act(&mut self, segments: &[&str], body: &Value) -> (u16, Value) {
        let (value, currency) = (&body["amount"]["value"], &body["amount"]["currency_code"]);
        let amount = || format!("{} {}", value.as_str().unwrap(), currency.as_str().unwrap());
        match segments {
            ["v2", "checkout", "orders", order, "authorize"] => {
                let Some(&(outcome, ref existing)) = self.orders.get(*order) else {
                    return not_found();
                };
                if existing.is_some() {
                    return unprocessable("ORDER_ALREADY_AUTHORIZED");
                }
                if outcome != "ok" && outcome != "DENIED" {
                    return unprocessable(outcome);
                }
                let id = self.new_id("AUTH");
                let status = if outcome == "ok" { "CREATED" } else { "DENIED" };
                self.statuses.insert(id.clone(), status);
                self.orders.get_mut(*order).unwrap().1 = Some(id.clone());
                if status == "CREATED" {
                    self.effects.push(format!("authorize {id}"));
                }
                (201, self.order_json(order))
            }
            ["v2", "payments", "authorizations", auth, op @ ("capture" | "void")] => {
                match self.statuses.get(*auth) {
                    None => return not_found(),
                    Some(&"CREATED") => {}
                    Some(_) => return unprocessable("AUTHORIZATION_ALREADY_CAPTURED"),
                }
                if *op == "void" {
                    self.statuses.insert(auth.to_string(), "VOIDED");
                    self.effects.push(format!("void {auth}"));
                    return (200, json!({"id": auth, "status": "VOIDED"}));
                }
                assert_eq!(body["final_capture"], json!(true));
                let id = self.new_id("CAP");
                self.statuses.insert(auth.to_string(), "CAPTURED");
                self.statuses.insert(id.clone(), "COMPLETED");
                self.effects.push(format!("capture {id} {}", amount()));
                (
                    201,
                    json!({"id": id, "status": "COMPLETED", "amount": body["amount"]}),
                )
            }
            ["v2", "payments", "captures", capture, "refund"] => {
                if self.statuses.get(*capture) != Some(&"COMPLETED") {
                    return unprocessable("CAPTURE_FULLY_REFUNDED");
                }
                let id = self.new_id("REF");
                self.statuses.insert(capture.to_string(), "REFUNDED");
                self.statuses.insert(id.clone(), "COMPLETED");
                self.effects.push(format!("refund {id} {}", amount()));
                (201, json!({"id": id, "status": "COMPLETED"}))
            }
            _ => not_found(),
        }
    }

    fn read(&self, segments: &[&str]) -> (u16, Value) {
        match segments {
            ["v2", "checkout", "orders", order] if self.orders.contains_key(*order) => {
                (200, self.order_json(order))
            }
            ["v2", "payments", "authorizations" | "captures", id] => match self.statuses.get(*id) {
                Some(status) => (200, json!({"id": id, "status": status})),
                None => not_found(),
            },
            _ => not_found(),
        }
    }

    fn order_json(&self, order: &str) -> Value {
        let authorizations: Vec<Value> = (self.orders[order].1.iter())
            .map(|id| json!({"id": id, "status": self.statuses[id]}))
            .collect();
        json!({"id": order, "status": "APPROVED",
               "purchase_units": [{"payments": {"authorizations": authorizations}}]})
    }
}

fn not_found() -> (u16, Value) {
    (404, json!({"name": "RESOURCE_NOT_FOUND"}))
}

fn unprocessable(issue: &str) -> (u16, Value) {
    (
        422,
        json!({"name": "UNPROCESSABLE_ENTITY", "details": [{"issue": issue}]}),
    )
}

fn respond((status, body): (u16, Value)) -> HttpResponse {
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap()).json(body)
}

async fn handle(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<Mutex<State>>,
) -> HttpResponse {
    let header = |name: &str| {
        let value = req.headers().get(name).and_then(|v| v.to_str().ok());
        value.unwrap_or("").to_owned()
    };
    let segments: Vec<&str> = req.path().trim_matches('/').split('/').collect();
    let (sleep, answer) = {
        let mut s = state.lock().unwrap();
        if segments == ["v1", "oauth2", "token"] {
            s.oauth_calls += 1;
            if header("authorization") != BASIC || &body[..] != b"grant_type=client_credentials" {
                return respond((401, json!({"error": "invalid_client"})));
            }
            let token = s.new_id("access-token");
            s.tokens.push(token.clone());
            return respond((200, json!({"access_token": token, "expires_in": 32400})));
        }
        let bearer = header("authorization");
        if !s.tokens.iter().any(|t| bearer == format!("Bearer {t}")) {
            return respond((401, json!({"name": "AUTHENTICATION_FAILURE"})));
        }
        if let Some(status) = s.fail_once.take() {
            let token = bearer.trim_start_matches("Bearer ");
            let details = if s.echo_secrets {
                json!([{"issue": CLIENT_SECRET}, {"issue": token}])
            } else {
                json!([])
            };
            let body = json!({"name": "STUB_FAILURE", "message": bearer, "details": details});
            return respond((status, body));
        }
        if req.method() == Method::GET {
            (None, s.read(&segments))
        } else {
            let request_id = header("paypal-request-id");
            assert!(!request_id.is_empty(), "a POST without PayPal-Request-Id");
            if let Some(stored) = s.replies.get(&request_id) {
                return respond(stored.clone());
            }
            let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let answer = s.act(&segments, &body);
            s.replies.insert(request_id, answer.clone());
            (s.sleep_once.take(), answer)
        }
    };
    if let Some(pause) = sleep {
        actix_web::rt::time::sleep(pause).await;
    }
    respond(answer)
}

struct Stub {
    base: String,
    state: Arc<Mutex<State>>,
    handle: ServerHandle,
}

impl Stub {
    fn start() -> Stub {
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let data = web::Data::from(shared);
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(data.clone())
                        .default_service(web::to(handle))
                })
                .workers(1)
                .disable_signals()
                .shutdown_timeout(0)
                .bind(("127.0.0.1", 0))
                .unwrap();
                let port = server.addrs()[0].port();
                let server = server.run();
                tx.send((port, server.handle())).unwrap();
                server.await
            })
        });
        let (port, handle) = rx.recv().unwrap();
        Stub {
            base: format!("http://127.0.0.1:{port}"),
            state,
            handle,
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().unwrap())
    }

    fn add_order(&self, id: &str, outcome: &'static str) {
        self.with(|s| s.orders.insert(id.to_owned(), (outcome, None)));
    }

    fn effects(&self, kind: &str) -> usize {
        self.with(|s| s.effects.iter().filter(|e| e.starts_with(kind)).count())
    }

    fn has_effect(&self, effect: &str) -> bool {
        self.with(|s| s.effects.iter().any(|e| e == effect))
    }

    fn provider(&self, timeout: Duration) -> PaypalProvider {
        PaypalProvider::new(&settings(&self.base, CLIENT_SECRET), timeout).unwrap()
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        // The stop command is sent when `stop` is called; no need to await.
        drop(self.handle.stop(false));
    }
}

fn settings(base: &str, secret: &str) -> PaypalSettings {
    PaypalSettings {
        base_url: Some(base.to_owned()),
        client_id: Some(CLIENT_ID.to_owned()),
        client_secret: Some(SecretString::from(secret)),
    }
}

fn req(operation: Operation, key: &str, token: &str, reference: Option<&str>) -> PaymentRequest {
    PaymentRequest {
        operation,
        idempotency_key: key.to_owned(),
        order_id: "order-1".to_owned(),
        token: token.to_owned(),
        amount: 1999,
        currency: "USD".to_owned(),
        reference: reference.map(str::to_owned),
    }
}

async fn authorize(paypal: &PaypalProvider, key: &str, order: &str) -> String {
    approved(
        paypal
            .execute(&req(Operation::Authorize, key, order, None))
            .await,
    )
}

fn approved(result: Result<PaymentResult, PaymentError>) -> String {
    match result {
        Ok(PaymentResult::Approved { reference }) => reference,
        other => panic!("expected an approval, got {other:?}"),
    }
}

#[tokio::test]
async fn authorize_capture_refund_with_exact_amounts() {
    let stub = Stub::start();
    let paypal = stub.provider(TIMEOUT);
    let cases = [
        ("ORDER-USD", 1999, "USD", "19.99"),
        ("ORDER-JPY", 500, "JPY", "500"),
    ];
    for (order, amount, currency, value) in cases {
        stub.add_order(order, "ok");
        let mut r = req(Operation::Authorize, &format!("{order}:auth"), order, None);
        (r.amount, r.currency) = (amount, currency.to_owned());
        let auth = approved(paypal.execute(&r).await);
        assert_eq!(stub.with(|s| s.orders[order].1.clone()), Some(auth.clone()));

        (r.operation, r.idempotency_key) = (Operation::Capture, format!("{order}:capture"));
        r.reference = Some(auth);
        let capture = approved(paypal.execute(&r).await);
        assert!(stub.has_effect(&format!("capture {capture} {value} {currency}")));

        (r.operation, r.idempotency_key) = (Operation::Refund, format!("{order}:refund"));
        r.reference = Some(capture);
        let refund = approved(paypal.execute(&r).await);
        assert!(stub.has_effect(&format!("refund {refund} {value} {currency}")));
    }
    assert_eq!(stub.effects(""), 6);
}

#[tokio::test]
async fn declined_authorizations_are_declined() {
    let stub = Stub::start();
    let paypal = stub.provider(TIMEOUT);
    for (order, outcome) in [
        ("ORDER-DECLINED", "INSTRUMENT_DECLINED"),
        ("ORDER-UNAPPROVED", "ORDER_NOT_APPROVED"),
        ("ORDER-DENIED", "DENIED"),
    ] {
        stub.add_order(order, outcome);
        match paypal
            .execute(&req(Operation::Authorize, order, order, None))
            .await
        {
            Ok(PaymentResult::Declined { reason }) => assert!(reason.contains(outcome), "{reason}"),
            other => panic!("{order}: expected a decline, got {other:?}"),
        }
    }
    assert_eq!(stub.effects("authorize"), 0);
}

#[tokio::test]
async fn the_same_key_captures_once() {
    let stub = Stub::start();
    let paypal = stub.provider(TIMEOUT);
    stub.add_order("ORDER-1", "ok");
    let auth = authorize(&paypal, "o1:auth", "ORDER-1").await;
    let capture = req(Operation::Capture, "o1:capture", "ORDER-1", Some(&auth));
    let first = approved(paypal.execute(&capture).await);
    assert_eq!(approved(paypal.execute(&capture).await), first);
    assert_eq!(stub.effects("capture"), 1);

    // A different key is a second capture, which PayPal refuses.
    let other = req(Operation::Capture, "o1:capture-2", "ORDER-1", Some(&auth));
    let err = paypal.execute(&other).await.unwrap_err();
    assert!(matches!(err, PaymentError::Permanent(_)), "{err:?}");
    assert_eq!(stub.effects("capture"), 1);
}

#[tokio::test]
async fn the_token_is_cached_and_renewed_after_a_401() {
    let stub = Stub::start();
    let paypal = stub.provider(TIMEOUT);
    stub.add_order("ORDER-1", "ok");
    let auth = authorize(&paypal, "k:auth", "ORDER-1").await;
    let capture = req(Operation::Capture, "k:capture", "ORDER-1", Some(&auth));
    let capture_id = approved(paypal.execute(&capture).await);
    assert!(paypal.lookup(&capture).await.unwrap().is_some());
    assert_eq!(stub.with(|s| s.oauth_calls), 1);

    // PayPal revokes the token: the next call gets a 401, renews, succeeds.
    stub.with(|s| s.tokens.clear());
    let refund = req(Operation::Refund, "k:refund", "ORDER-1", Some(&capture_id));
    approved(paypal.execute(&refund).await);
    assert_eq!(stub.with(|s| s.oauth_calls), 2);
    assert_eq!(stub.effects("refund"), 1);
}

#[tokio::test]
async fn a_timeout_is_resolved_by_lookup() {
    let stub = Stub::start();
    let paypal = stub.provider(Duration::from_millis(300));
    stub.add_order("ORDER-SLOW", "ok");
    stub.add_order("ORDER-UNTOUCHED", "ok");
    stub.with(|s| s.sleep_once = Some(Duration::from_secs(2)));

    let slow = req(Operation::Authorize, "slow:auth", "ORDER-SLOW", None);
    assert_eq!(paypal.execute(&slow).await, Err(PaymentError::Timeout));
    let auth = stub.with(|s| s.orders["ORDER-SLOW"].1.clone()).unwrap();
    let found = paypal.lookup(&slow).await;
    assert_eq!(found, Ok(Some(PaymentResult::Approved { reference: auth })));

    for order in ["ORDER-UNTOUCHED", "ORDER-UNKNOWN"] {
        let never = req(Operation::Authorize, "u:auth", order, None);
        assert_eq!(paypal.lookup(&never).await, Ok(None));
    }
    assert_eq!(stub.effects("authorize"), 1);
}

#[tokio::test]
async fn lookup_finds_captures_voids_and_refunds_without_new_effects() {
    let stub = Stub::start();
    let paypal = stub.provider(TIMEOUT);
    let found = |r: Result<Option<PaymentResult>, PaymentError>| approved(r.map(Option::unwrap));
    stub.add_order("ORDER-A", "ok");
    stub.add_order("ORDER-B", "ok");
    let auth = authorize(&paypal, "a:auth", "ORDER-A").await;
    let capture = req(Operation::Capture, "a:capture", "ORDER-A", Some(&auth));
    assert_eq!(paypal.lookup(&capture).await, Ok(None));
    let capture_id = approved(paypal.execute(&capture).await);
    assert_eq!(found(paypal.lookup(&capture).await), capture_id);

    let refund = req(Operation::Refund, "a:refund", "ORDER-A", Some(&capture_id));
    assert_eq!(paypal.lookup(&refund).await, Ok(None));
    let refund_id = approved(paypal.execute(&refund).await);
    assert_eq!(found(paypal.lookup(&refund).await), refund_id);
    assert_eq!((stub.effects("capture"), stub.effects("refund")), (1, 1));

    let auth_b = authorize(&paypal, "b:auth", "ORDER-B").await;
    let void = req(Operation::Void, "b:void", "ORDER-B", Some(&auth_b));
    assert_eq!(paypal.lookup(&void).await, Ok(None));
    assert_eq!(approved(paypal.execute(&void).await), auth_b);
    assert_eq!(found(paypal.lookup(&void).await), auth_b);
    assert_eq!(stub.effects("void"), 1);
}

#[tokio::test]
async fn errors_are_transient_or_permanent_by_status() {
    let stub = Stub::start();
    let paypal = stub.provider(TIMEOUT);
    stub.add_order("ORDER-1", "ok");
    let r = req(Operation::Authorize, "e:auth", "ORDER-1", None);
    for (status, transient) in [
        (500, true),
        (503, true),
        (429, true),
        (400, false),
        (404, false),
    ] {
        stub.with(|s| s.fail_once = Some(status));
        let err = paypal.execute(&r).await.unwrap_err();
        let kind_ok = match err {
            PaymentError::Transient(_) => transient,
            PaymentError::Permanent(_) => !transient,
            PaymentError::Timeout => false,
        };
        assert!(kind_ok, "{status}: {err:?}");
    }
    assert_eq!(stub.effects(""), 0);

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let nowhere = PaypalProvider::new(&settings(&base, CLIENT_SECRET), TIMEOUT).unwrap();
    let err = nowhere.execute(&r).await.unwrap_err();
    assert!(matches!(err, PaymentError::Transient(_)), "{err:?}");
}

#[tokio::test]
async fn secrets_never_reach_error_messages() {
    let stub = Stub::start();
    let paypal = stub.provider(TIMEOUT);
    stub.add_order("ORDER-1", "ok");
    stub.with(|s| (s.fail_once, s.echo_secrets) = (Some(400), true));
    let r = req(Operation::Authorize, "s:auth", "ORDER-1", None);
    let err = paypal.execute(&r).await.unwrap_err();
    let token = stub.with(|s| s.tokens[0].clone());

    let wrong = PaypalProvider::new(&settings(&stub.base, "wrong-secret-Pq7"), TIMEOUT).unwrap();
    let refused = wrong.execute(&r).await.unwrap_err();
    assert!(matches!(refused, PaymentError::Permanent(_)), "{refused:?}");
    for text in [
        err.to_string(),
        format!("{err:?}"),
        refused.to_string(),
        format!("{paypal:?}"),
    ] {
        assert!(
            !text.contains(CLIENT_SECRET) && !text.contains(&token),
            "{text}"
        );
        assert!(!text.contains("wrong-secret-Pq7"), "{text}");
    }
}

#[test]
fn the_constructor_needs_complete_http_settings() {
    let good = settings("https://api-m.sandbox.paypal.com", CLIENT_SECRET);
    assert!(PaypalProvider::new(&good, TIMEOUT).is_ok());
    let edits: [fn(&mut PaypalSettings); 5] = [
        |s| s.base_url = None,
        |s| s.client_id = None,
        |s| s.client_secret = None,
        |s| s.base_url = Some("ftp://paypal.example".to_owned()),
        |s| s.base_url = Some("not a url".to_owned()),
    ];
    for edit in edits {
        let mut broken = good.clone();
        edit(&mut broken);
        assert!(PaypalProvider::new(&broken, TIMEOUT).is_err(), "{broken:?}");
    }
}

/// The whole checkout saga with the PayPal provider: authorize, capture and
/// a refund go to (the stub of) PayPal, once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkout_and_refund_through_paypal() {
    let stub = Stub::start();
    stub.add_order("PAYPAL-ORDER-1", "ok");
    stub.add_order("PAYPAL-ORDER-2", "INSTRUMENT_DECLINED");
    let base = stub.base.clone();
    let app = crate::support::TestApp::spawn_with(crate::support::Backend::Sqlite, move |s| {
        s.payments.provider = orderflow::config::PaymentProviderKind::Paypal;
        s.payments.paypal = settings(&base, CLIENT_SECRET);
    })
    .await;
    let admin = app.admin_token().await;
    app.create_product(&admin, "PP-1", 1999, 5).await;
    let alice = app.customer_token().await;
    let paid = app
        .place_order(&alice, &[("PP-1", 2)], "PAYPAL-ORDER-1")
        .await;
    // The provider the client names must be the one the engine uses.
    assert_eq!(paid.status, 422, "{}", paid.text);
    let items = json!([{"sku": "PP-1", "quantity": 2}]);
    let paid = app
        .post(
            "/api/v1/orders",
            json!({"items": items, "payment": {"provider": "paypal", "token": "PAYPAL-ORDER-1"}}),
            Some(&alice),
        )
        .await;
    paid.assert_status(201);
    assert_eq!(paid.body["status"], "paid");
    assert_eq!(paid.body["payment"]["provider"], "paypal");
    assert_eq!((stub.effects("authorize"), stub.effects("capture")), (1, 1));
    assert!(stub.with(|s| s
        .effects
        .iter()
        .any(|e| e.starts_with("capture") && e.ends_with("39.98 USD"))));
    let order = crate::support::shop::order_id_of(&paid);
    app.post(
        &format!("/api/v1/orders/{order}/refunds"),
        json!({"amount": 1999}),
        Some(&admin),
    )
    .await
    .assert_status(201);
    assert!(stub.with(|s| s
        .effects
        .iter()
        .any(|e| e.starts_with("refund") && e.ends_with("19.99 USD"))));

    let declined = app
        .post(
            "/api/v1/orders",
            json!({"items": items, "payment": {"provider": "paypal", "token": "PAYPAL-ORDER-2"}}),
            Some(&alice),
        )
        .await;
    declined.assert_error(402, "payment_declined");
    assert_eq!(app.stock(&admin, "PP-1").await, (3, 0));
}
