//! Inbound Stoq events: signed, recorded once, applied once.

use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use crate::support::app::Reply;
use crate::support::{Backend, TestApp};

const SECRET: &str = "stoq-shared-secret-for-tests";
const PATH: &str = "/api/v1/integrations/stoq/events";

fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn send(app: &TestApp, body: &serde_json::Value, signature: Option<String>) -> Reply {
    let raw = body.to_string();
    let mut request = app
        .client
        .post(app.url(PATH))
        .header("content-type", "application/json")
        .body(raw);
    if let Some(signature) = signature {
        request = request.header("x-stoq-signature", signature);
    }
    crate::support::app::read(request.send().await.unwrap()).await
}

fn restock_event(id: &str, sku: &str, quantity: i64) -> serde_json::Value {
    json!({"id": id, "type": "stoq:restock-modal:submitted", "occurred_at": "2026-11-22T10:00:00Z", "data": {"sku": sku, "quantity": quantity}})
}

async fn app_with_stock(backend: Backend, secret: Option<&str>) -> (TestApp, String) {
    let secret = secret.map(|s| secrecy::SecretString::from(s.to_owned()));
    let app = TestApp::spawn_with(backend, move |s| s.integrations.stoq.secret = secret).await;
    let admin = app.admin_token().await;
    app.post(
        "/api/v1/products",
        json!({"sku": "stoq-1", "name": "S", "price": 100, "currency": "USD", "initial_stock": 5}),
        Some(&admin),
    )
    .await
    .assert_status(201);
    (app, admin)
}

async fn on_hand(app: &TestApp, admin: &str) -> i64 {
    app.get("/api/v1/inventory/stoq-1", Some(admin)).await.body["on_hand"]
        .as_i64()
        .unwrap()
}

async fn a_signed_restock_is_applied_once_however_often_it_is_delivered(backend: Backend) {
    let (app, admin) = app_with_stock(backend, Some(SECRET)).await;
    let event = restock_event("evt-1", "stoq-1", 7);
    let signature = sign(SECRET, event.to_string().as_bytes());
    let first = send(&app, &event, Some(signature.clone())).await;
    first.assert_status(200);
    assert_eq!(first.body, json!({"id": "evt-1", "status": "applied"}));
    assert_eq!(on_hand(&app, &admin).await, 12);

    // Redelivered, one after another and all at once.
    send(&app, &event, Some(signature.clone()))
        .await
        .assert_status(200);
    let burst = (0..6).map(|_| send(&app, &event, Some(signature.clone())));
    let replies = futures_util::future::join_all(burst).await;
    assert!(
        replies
            .iter()
            .all(|r| r.status == 200 && r.body["status"] == "duplicate"),
        "{replies:?}"
    );
    assert_eq!(on_hand(&app, &admin).await, 12, "applied exactly once");

    let db = app.database().await;
    let mut conn = db.conn().await.unwrap();
    assert_eq!(
        orderflow::db::events::count_external(&mut conn, "stoq", "evt-1")
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        orderflow::db::inventory::ledger_totals(&mut conn, "stoq-1")
            .await
            .unwrap(),
        (12, 0)
    );
}

async fn concurrent_first_deliveries_apply_once(backend: Backend) {
    let (app, admin) = app_with_stock(backend, Some(SECRET)).await;
    let event = restock_event("evt-race", "stoq-1", 3);
    let signature = sign(SECRET, event.to_string().as_bytes());
    let burst = (0..8).map(|_| send(&app, &event, Some(signature.clone())));
    let replies = futures_util::future::join_all(burst).await;
    let applied = replies
        .iter()
        .filter(|r| r.body["status"] == "applied")
        .count();
    let duplicate = replies
        .iter()
        .filter(|r| r.body["status"] == "duplicate")
        .count();
    assert_eq!((applied, duplicate), (1, 7), "{replies:?}");
    assert_eq!(on_hand(&app, &admin).await, 8);
}

async fn unsigned_or_badly_signed_events_are_401_and_change_nothing(backend: Backend) {
    let (app, admin) = app_with_stock(backend, Some(SECRET)).await;
    let event = restock_event("evt-2", "stoq-1", 100);
    send(&app, &event, None)
        .await
        .assert_error(401, "unauthorized");
    send(
        &app,
        &event,
        Some(sign("another-secret", event.to_string().as_bytes())),
    )
    .await
    .assert_error(401, "unauthorized");
    send(&app, &event, Some("sha256=not-hex".into()))
        .await
        .assert_error(401, "unauthorized");
    // A signature over other bytes does not cover these.
    let other = restock_event("evt-2", "stoq-1", 1);
    send(
        &app,
        &event,
        Some(sign(SECRET, other.to_string().as_bytes())),
    )
    .await
    .assert_error(401, "unauthorized");
    assert_eq!(on_hand(&app, &admin).await, 5);
}

async fn without_a_configured_secret_every_event_is_refused(backend: Backend) {
    let (app, admin) = app_with_stock(backend, None).await;
    let event = restock_event("evt-3", "stoq-1", 1);
    send(
        &app,
        &event,
        Some(sign(SECRET, event.to_string().as_bytes())),
    )
    .await
    .assert_error(401, "unauthorized");
    assert_eq!(on_hand(&app, &admin).await, 5);
}

async fn other_event_types_are_recorded_once_and_bad_restocks_refused(backend: Backend) {
    let (app, admin) = app_with_stock(backend, Some(SECRET)).await;
    let note = json!({"id": "evt-4", "type": "stoq:note:added", "occurred_at": "2026-11-22T10:00:00Z", "data": {"text": "hi"}});
    let signature = sign(SECRET, note.to_string().as_bytes());
    assert_eq!(
        send(&app, &note, Some(signature.clone())).await.body["status"],
        "recorded"
    );
    assert_eq!(
        send(&app, &note, Some(signature)).await.body["status"],
        "duplicate"
    );

    for (event, field) in [
        (restock_event("evt-5", "stoq-1", 0), "data.quantity"),
        (restock_event("evt-6", "no such sku!", 1), "data.sku"),
        (restock_event("evt-7", "ghost", 1), "data.sku"),
        (
            json!({"id": "evt-8", "type": "stoq:restock-modal:submitted", "occurred_at": "2026-11-22T10:00:00Z", "data": {"sku": "stoq-1"}}),
            "data",
        ),
        // `data` is an object for every type: the events view shows it as one.
        (
            json!({"id": "evt-9", "type": "stoq:note:added", "occurred_at": "2026-11-22T10:00:00Z", "data": true}),
            "data",
        ),
        (
            json!({"id": "evt-10", "type": "stoq:note:added", "occurred_at": "2026-11-22T10:00:00Z", "data": [1]}),
            "data",
        ),
    ] {
        let reply = send(
            &app,
            &event,
            Some(sign(SECRET, event.to_string().as_bytes())),
        )
        .await;
        reply.assert_error(422, "validation_failed");
        assert!(
            reply.body["error"]["details"]["fields"][field].is_string(),
            "{field}: {}",
            reply.text
        );
    }
    let malformed = "{not json";
    let reply = crate::support::app::read(
        app.client
            .post(app.url(PATH))
            .header("x-stoq-signature", sign(SECRET, malformed.as_bytes()))
            .body(malformed)
            .send()
            .await
            .unwrap(),
    )
    .await;
    reply.assert_error(400, "invalid_json");
    assert_eq!(on_hand(&app, &admin).await, 5);
    // A refused event is not recorded: a corrected redelivery is applied.
    let fixed = restock_event("evt-5", "stoq-1", 2);
    assert_eq!(
        send(
            &app,
            &fixed,
            Some(sign(SECRET, fixed.to_string().as_bytes()))
        )
        .await
        .body["status"],
        "applied"
    );
}

crate::both_backends!(
    a_signed_restock_is_applied_once_however_often_it_is_delivered,
    concurrent_first_deliveries_apply_once,
    unsigned_or_badly_signed_events_are_401_and_change_nothing,
    without_a_configured_secret_every_event_is_refused,
    other_event_types_are_recorded_once_and_bad_restocks_refused
);
