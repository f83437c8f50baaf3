//! Customer notifications: order confirmation (`order.paid`), shipping
//! (`order.shipped`) and refund (`order.refunded`). The dispatcher records
//! one per event; this worker renders and sends it through a [`Notifier`],
//! retried like webhook deliveries. Nothing here runs inside the saga, so a
//! failing mail server never holds an order up.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use secrecy::ExposeSecret;

use super::retry::RetryPolicy;
use super::worker::{record_outcome, Queue};
use crate::config::{NotificationSettings, NotifierKind, SmtpTls};
use crate::db::leases::{LeasedTable, Settled};
use crate::db::notifications::{self, NotificationRow};
use crate::db::outbox::OutboxEvent;
use crate::db::{outbox, Database};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotificationKind {
    OrderConfirmation,
    Shipping,
    Refund,
}

impl NotificationKind {
    pub fn for_event(event_type: &str) -> Option<NotificationKind> {
        match event_type {
            "order.paid" => Some(NotificationKind::OrderConfirmation),
            "order.shipped" => Some(NotificationKind::Shipping),
            "order.refunded" => Some(NotificationKind::Refund),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            NotificationKind::OrderConfirmation => "order_confirmation",
            NotificationKind::Shipping => "shipping",
            NotificationKind::Refund => "refund",
        }
    }

    fn parse(value: &str) -> Option<NotificationKind> {
        [Self::OrderConfirmation, Self::Shipping, Self::Refund]
            .into_iter()
            .find(|k| k.as_str() == value)
    }
}

/// A rendered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub to: String,
    pub subject: String,
    pub body: String,
}

/// Why a message was not sent; the text is recorded on the notification.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotifyError(pub String);

/// Where notifications go.
pub trait Notifier: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn send<'a>(&'a self, message: &'a Message) -> BoxFuture<'a, Result<(), NotifyError>>;
}

/// The default: each notification is a log line.
pub struct LogNotifier;

impl Notifier for LogNotifier {
    fn name(&self) -> &'static str {
        "log"
    }

    fn send<'a>(&'a self, message: &'a Message) -> BoxFuture<'a, Result<(), NotifyError>> {
        tracing::info!(to = %message.to, subject = %message.subject, body = %message.body, "notification");
        futures_util::future::ready(Ok(())).boxed()
    }
}

/// Mail through an SMTP relay (`notifications.smtp`).
pub struct SmtpNotifier {
    transport: lettre::AsyncSmtpTransport<lettre::Tokio1Executor>,
    from: lettre::message::Mailbox,
}

impl SmtpNotifier {
    pub fn new(settings: &NotificationSettings) -> anyhow::Result<SmtpNotifier> {
        use lettre::transport::smtp::authentication::Credentials;
        use lettre::transport::smtp::client::{Tls, TlsParameters};
        let smtp = &settings.smtp;
        let host = smtp
            .host
            .clone()
            .ok_or_else(|| anyhow::anyhow!("notifications.smtp.host is not set"))?;
        let tls = match smtp.tls {
            SmtpTls::None => Tls::None,
            SmtpTls::Starttls => Tls::Required(TlsParameters::new(host.clone())?),
            SmtpTls::Tls => Tls::Wrapper(TlsParameters::new(host.clone())?),
        };
        let mut builder =
            lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::builder_dangerous(&host)
                .port(smtp.port)
                .tls(tls)
                .timeout(Some(Duration::from_millis(smtp.timeout_ms)));
        if let (Some(user), Some(password)) = (&smtp.username, &smtp.password) {
            builder = builder.credentials(Credentials::new(
                user.clone(),
                password.expose_secret().to_owned(),
            ));
        }
        Ok(SmtpNotifier {
            transport: builder.build(),
            from: settings.from.parse()?,
        })
    }
}

impl Notifier for SmtpNotifier {
    fn name(&self) -> &'static str {
        "smtp"
    }

    fn send<'a>(&'a self, message: &'a Message) -> BoxFuture<'a, Result<(), NotifyError>> {
        use lettre::AsyncTransport;
        async move {
            let to = message
                .to
                .parse::<lettre::message::Mailbox>()
                .map_err(|e| NotifyError(format!("bad recipient address: {e}")))?;
            let email = lettre::Message::builder()
                .from(self.from.clone())
                .to(to)
                .subject(&message.subject)
                .header(lettre::message::header::ContentType::TEXT_PLAIN)
                .body(message.body.clone())
                .map_err(|e| NotifyError(format!("cannot build the message: {e}")))?;
            self.transport
                .send(email)
                .await
                .map(drop)
                .map_err(|e| NotifyError(format!("SMTP: {e}")))
        }
        .boxed()
    }
}

pub fn notifier_from_settings(
    settings: &NotificationSettings,
) -> anyhow::Result<Arc<dyn Notifier>> {
    Ok(match settings.notifier {
        NotifierKind::Log => Arc::new(LogNotifier),
        NotifierKind::Smtp => Arc::new(SmtpNotifier::new(settings)?),
    })
}

/// The message for a notification of `kind` about `event`.
pub fn render(kind: NotificationKind, to: &str, event: &OutboxEvent) -> Message {
    let payload: serde_json::Value = serde_json::from_str(&event.payload).unwrap_or_default();
    let order = payload["order_id"].as_str().unwrap_or(&event.aggregate_id);
    let currency = payload["currency"].as_str().unwrap_or("");
    let money = |minor: i64| format!("{}.{:02} {currency}", minor / 100, minor % 100);
    let (subject, body) = match kind {
        NotificationKind::OrderConfirmation => (
            format!("Your order {order} is confirmed"),
            format!(
                "Thank you for your order.\n\nOrder: {order}\nTotal: {}\n\nWe will tell you when it ships.\n",
                money(payload["total"].as_i64().unwrap_or(0))
            ),
        ),
        NotificationKind::Shipping => {
            let data = &payload["data"];
            (
                format!("Your order {order} has shipped"),
                format!(
                    "Your order {order} is on its way.\n\nCarrier: {}\nTracking number: {}\n",
                    data["carrier"].as_str().unwrap_or("-"),
                    data["tracking_number"].as_str().unwrap_or("-"),
                ),
            )
        }
        NotificationKind::Refund => {
            let amount = payload["data"]["amount"].as_i64();
            (
                format!("A refund for order {order}"),
                match amount {
                    Some(amount) => format!(
                        "We have refunded {} for order {order}.\nIt may take a few days to appear on your statement.\n",
                        money(amount)
                    ),
                    None => format!(
                        "We have refunded a payment for order {order}.\nIt may take a few days to appear on your statement.\n"
                    ),
                },
            )
        }
    };
    Message {
        to: to.to_owned(),
        subject,
        body,
    }
}

pub struct NotificationQueue {
    db: Database,
    notifier: Arc<dyn Notifier>,
    policy: RetryPolicy,
    send_timeout: Duration,
}

impl NotificationQueue {
    /// `send_timeout` bounds one whole send (lettre's own timeout is per
    /// SMTP command).
    pub fn new(
        db: Database,
        notifier: Arc<dyn Notifier>,
        policy: RetryPolicy,
        send_timeout: Duration,
    ) -> Self {
        NotificationQueue {
            db,
            notifier,
            policy,
            send_timeout,
        }
    }

    async fn send(&self, id: &str, token: &str) -> anyhow::Result<()> {
        let mut conn = self.db.conn().await?;
        let Some(row) = notifications::find(&mut conn, id).await? else {
            return Ok(());
        };
        if !matches!(row.status.as_str(), "pending" | "failed") {
            return Ok(()); // settled meanwhile
        }
        let event = outbox::find(&mut conn, &row.event_id).await?;
        drop(conn);
        let result = match (NotificationKind::parse(&row.kind), event) {
            (Some(kind), Some(event)) => {
                let message = render(kind, &row.recipient, &event);
                // Bounded well inside the lease (see `Events::start`).
                match tokio::time::timeout(self.send_timeout, self.notifier.send(&message)).await {
                    Ok(result) => result,
                    Err(_) => Err(NotifyError(format!(
                        "not sent within {} ms",
                        self.send_timeout.as_millis()
                    ))),
                }
            }
            _ => Err(NotifyError(format!(
                "unknown kind `{}` or event gone",
                row.kind
            ))),
        };
        self.settle(&row, token, result).await
    }

    async fn settle(
        &self,
        row: &NotificationRow,
        token: &str,
        result: Result<(), NotifyError>,
    ) -> anyhow::Result<()> {
        let now = Utc::now().naive_utc();
        let attempts = row.attempts as u32 + 1;
        let (settled, error) = match &result {
            Ok(()) => (Settled::Succeeded, None),
            Err(e) => (
                self.policy.after_failure(attempts, now),
                Some(e.0.chars().take(500).collect::<String>()),
            ),
        };
        let recorded = record_outcome(|| async {
            let mut conn = self.db.conn().await?;
            Ok(
                notifications::settle(&mut conn, &row.id, token, settled, error.as_deref(), now)
                    .await?,
            )
        })
        .await?;
        if !recorded {
            return Ok(());
        }
        metrics::counter!("notifications_total", "kind" => NotificationKind::parse(&row.kind).map_or("unknown", |k| k.as_str()), "outcome" => settled.status(), "notifier" => self.notifier.name()).increment(1);
        match settled {
            Settled::Succeeded => {
                tracing::debug!(notification.id = %row.id, kind = %row.kind, "notification sent")
            }
            Settled::Failed(next) => {
                tracing::info!(notification.id = %row.id, kind = %row.kind, attempts, error, next_attempt_at = %next, "notification failed; will retry")
            }
            Settled::Dead => {
                tracing::warn!(notification.id = %row.id, kind = %row.kind, attempts, error, "notification dead after its last attempt")
            }
        }
        Ok(())
    }
}

impl Queue for NotificationQueue {
    const TABLE: LeasedTable = LeasedTable::Notifications;

    fn attempt<'a>(&'a self, id: &'a str, token: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        self.send(id, token).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(event_type: &str, payload: serde_json::Value) -> OutboxEvent {
        OutboxEvent {
            id: "e1".into(),
            event_type: event_type.into(),
            aggregate_id: "o1".into(),
            payload: payload.to_string(),
            created_at: Utc::now().naive_utc(),
        }
    }

    #[test]
    fn messages_name_the_order_and_what_happened() {
        let paid = event(
            "order.paid",
            serde_json::json!({"order_id": "o1", "total": 12345, "currency": "EUR"}),
        );
        let m = render(NotificationKind::OrderConfirmation, "a@example.com", &paid);
        assert_eq!(m.to, "a@example.com");
        assert!(m.subject.contains("o1"));
        assert!(m.body.contains("123.45 EUR"), "{}", m.body);

        let shipped = event(
            "order.shipped",
            serde_json::json!({"order_id": "o1", "data": {"carrier": "UPS", "tracking_number": "1Z9"}}),
        );
        let m = render(NotificationKind::Shipping, "a@example.com", &shipped);
        assert!(
            m.body.contains("UPS") && m.body.contains("1Z9"),
            "{}",
            m.body
        );

        let refunded = event(
            "order.refunded",
            serde_json::json!({"order_id": "o1", "currency": "USD", "data": {"amount": 500}}),
        );
        let m = render(NotificationKind::Refund, "a@example.com", &refunded);
        assert!(m.body.contains("5.00 USD"), "{}", m.body);
    }

    #[test]
    fn only_paid_shipped_and_refunded_orders_notify() {
        assert_eq!(
            NotificationKind::for_event("order.paid"),
            Some(NotificationKind::OrderConfirmation)
        );
        assert_eq!(
            NotificationKind::for_event("order.shipped"),
            Some(NotificationKind::Shipping)
        );
        assert_eq!(
            NotificationKind::for_event("order.refunded"),
            Some(NotificationKind::Refund)
        );
        for other in [
            "order.created",
            "order.cancelled",
            "inventory.reserved",
            "payment.failed",
        ] {
            assert_eq!(NotificationKind::for_event(other), None);
        }
        for kind in [
            NotificationKind::OrderConfirmation,
            NotificationKind::Shipping,
            NotificationKind::Refund,
        ] {
            assert_eq!(NotificationKind::parse(kind.as_str()), Some(kind));
        }
    }
}
