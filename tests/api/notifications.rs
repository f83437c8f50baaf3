//! Customer notifications: sent after the order moves, retried on failure,
//! never in the saga's way.

use std::time::Duration;

use orderflow::config::{NotifierKind, SmtpTls};
use serde_json::json;

use crate::both_backends;
use crate::support::process::eventually;
use crate::support::shop::order_id_of;
use crate::support::smtp::SmtpServer;
use crate::support::{Backend, TestApp};

const DEADLINE: Duration = Duration::from_secs(30);

async fn statuses(app: &TestApp, order: &str) -> Vec<(String, String, i32)> {
    let db = app.database().await;
    let mut conn = db.conn().await.unwrap();
    orderflow::db::notifications::for_order(&mut conn, order)
        .await
        .unwrap()
        .into_iter()
        .map(|n| (n.kind, n.status, n.attempts))
        .collect()
}

async fn smtp_notifications_are_retried_until_the_server_takes_them(backend: Backend) {
    let smtp = SmtpServer::start(2).await;
    let port = smtp.port;
    let app = TestApp::spawn_with(backend, |s| {
        s.notifications.notifier = NotifierKind::Smtp;
        s.notifications.smtp.host = Some("127.0.0.1".to_owned());
        s.notifications.smtp.port = port;
        s.notifications.smtp.tls = SmtpTls::None;
        s.notifications.from = "Shop <shop@example.com>".to_owned();
    })
    .await;
    let admin = app.admin_token().await;
    app.create_product(&admin, "MAIL-1", 2500, 10).await;
    let email = format!("buyer-{}@example.com", uuid::Uuid::new_v4().simple());
    let customer = app
        .register(&email, crate::support::app::PASSWORD, "Buyer")
        .await
        .body["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    // The saga does not wait for mail: the order is paid at once.
    let order = order_id_of(
        app.place_order(&customer, &[("MAIL-1", 1)], "tok_ok")
            .await
            .assert_status(201),
    );

    eventually(
        "the confirmation is accepted on the third try",
        DEADLINE,
        || async { smtp.accepted().len() == 1 },
    )
    .await;
    assert_eq!(smtp.refused(), 2);
    let mail = &smtp.accepted()[0];
    assert_eq!(mail.to, [format!("<{email}>")]);
    assert_eq!(mail.from, "<shop@example.com>");
    assert!(
        mail.data
            .contains(&format!("Subject: Your order {order} is confirmed")),
        "{}",
        mail.data
    );
    assert!(mail.data.contains("25.00 USD"), "{}", mail.data);
    eventually("the notification is recorded as sent", DEADLINE, || async {
        statuses(&app, &order).await
            == [("order_confirmation".to_owned(), "succeeded".to_owned(), 3)]
    })
    .await;

    app.post(
        &format!("/api/v1/orders/{order}/ship"),
        json!({"carrier": "UPS", "tracking_number": "1Z999"}),
        Some(&admin),
    )
    .await
    .assert_status(200);
    eventually("the shipping notice is sent", DEADLINE, || async {
        smtp.accepted().len() == 2
    })
    .await;
    let shipped = &smtp.accepted()[1];
    assert!(
        shipped.data.contains("has shipped") && shipped.data.contains("1Z999"),
        "{}",
        shipped.data
    );
    let metrics = app.get("/metrics", None).await.text;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("notifications_total{") && l.contains("outcome=\"failed\"")),
        "{metrics}"
    );
}

async fn the_log_notifier_sends_confirmation_and_refund_notices(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    app.create_product(&admin, "LOG-1", 1000, 10).await;
    let customer = app.customer_token().await;
    let order = order_id_of(
        app.place_order(&customer, &[("LOG-1", 1)], "tok_ok")
            .await
            .assert_status(201),
    );
    app.post(
        &format!("/api/v1/orders/{order}/refunds"),
        json!({"amount": 400, "reason": "damaged"}),
        Some(&admin),
    )
    .await
    .assert_status(201);
    eventually(
        "confirmation and refund notices are sent",
        DEADLINE,
        || async {
            let mut got = statuses(&app, &order).await;
            got.sort();
            got == [
                ("order_confirmation".to_owned(), "succeeded".to_owned(), 1),
                ("refund".to_owned(), "succeeded".to_owned(), 1),
            ]
        },
    )
    .await;
}

both_backends!(
    smtp_notifications_are_retried_until_the_server_takes_them,
    the_log_notifier_sends_confirmation_and_refund_notices
);
