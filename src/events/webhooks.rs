//! Webhook delivery: the signed request of api.md and the worker's attempt.
//!
//! `POST url` with body `{id, type, created_at, data}` and headers
//! `X-Orderflow-Event-Id`, `X-Orderflow-Event-Type` and
//! `X-Orderflow-Signature: t=<unix>,v1=<hex hmac_sha256(secret, t + "." + body)>`.
//! A 2xx within `webhooks.timeout_ms` is success; anything else (another
//! status, a timeout, a refused connection, a redirect) is a failed attempt.

use std::time::Duration;

use chrono::Utc;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::retry::RetryPolicy;
use super::worker::{record_outcome, Queue};
use crate::db::leases::{LeasedTable, Settled};
use crate::db::outbox::OutboxEvent;
use crate::db::webhooks::{self, DeliveryRow, WebhookRow};
use crate::db::{outbox, Database};

pub const SIGNATURE_HEADER: &str = "X-Orderflow-Signature";
pub const EVENT_ID_HEADER: &str = "X-Orderflow-Event-Id";
pub const EVENT_TYPE_HEADER: &str = "X-Orderflow-Event-Type";

/// `t=<unix>,v1=<hex hmac_sha256(secret, "<unix>.<body>")>`.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// The body every endpoint receives for `event`.
pub fn body(event: &OutboxEvent) -> Vec<u8> {
    let data: serde_json::Value =
        serde_json::from_str(&event.payload).unwrap_or(serde_json::Value::Null);
    serde_json::to_vec(&serde_json::json!({
        "id": event.id,
        "type": event.event_type,
        "created_at": event.created_at.format(super::bus::TIME_FORMAT).to_string(),
        "data": data,
    }))
    .expect("a JSON value serializes")
}

pub struct WebhookQueue {
    db: Database,
    policy: RetryPolicy,
    timeout: Duration,
    /// For endpoints on this machine: no proxy.
    direct: reqwest::Client,
    /// For the rest: the environment's proxy, if any.
    proxied: reqwest::Client,
}

impl WebhookQueue {
    pub fn new(db: Database, policy: RetryPolicy, timeout: Duration) -> anyhow::Result<Self> {
        let builder = || {
            reqwest::Client::builder()
                .timeout(timeout)
                .connect_timeout(timeout)
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("orderflow-webhooks/", env!("CARGO_PKG_VERSION")))
        };
        Ok(WebhookQueue {
            db,
            policy,
            timeout,
            direct: builder().no_proxy().build()?,
            proxied: builder().build()?,
        })
    }

    async fn deliver(&self, id: &str, token: &str) -> anyhow::Result<()> {
        let mut conn = self.db.conn().await?;
        let Some(delivery) = webhooks::find_delivery(&mut conn, id).await? else {
            return Ok(()); // its endpoint was deleted, and the delivery with it
        };
        if !matches!(delivery.status.as_str(), "pending" | "failed") {
            return Ok(()); // settled meanwhile
        }
        let endpoint = webhooks::find(&mut conn, &delivery.webhook_id).await?;
        let event = outbox::find(&mut conn, &delivery.event_id).await?;
        drop(conn);
        let attempts = delivery.attempts as u32 + 1;
        let (settled, status_code, error) = match (&endpoint, &event) {
            (Some(endpoint), Some(event)) => {
                let started = std::time::Instant::now();
                let (succeeded, status_code, error) = self.send(endpoint, event).await;
                metrics::histogram!("webhook_delivery_seconds")
                    .record(started.elapsed().as_secs_f64());
                let settled = if succeeded {
                    Settled::Succeeded
                } else {
                    self.policy.after_failure(attempts, Utc::now().naive_utc())
                };
                (settled, status_code, error)
            }
            // Nothing to send any more: a dead letter, never retried.
            _ => (
                Settled::Dead,
                None,
                Some("the endpoint or the event no longer exists".to_owned()),
            ),
        };
        let recorded = record_outcome(|| async {
            let mut conn = self.db.conn().await?;
            Ok(webhooks::settle(
                &mut conn,
                id,
                token,
                settled,
                status_code,
                error.as_deref(),
                Utc::now().naive_utc(),
            )
            .await?)
        })
        .await?;
        if !recorded {
            tracing::info!(
                delivery.id = id,
                "delivery lease lost (replayed or expired); outcome not recorded"
            );
            return Ok(());
        }
        metrics::counter!("webhook_deliveries_total", "outcome" => settled.status()).increment(1);
        log_outcome(
            &delivery,
            endpoint.as_ref(),
            settled,
            attempts,
            status_code,
            error.as_deref(),
        );
        Ok(())
    }

    /// One POST: (2xx, status, error text).
    async fn send(
        &self,
        endpoint: &WebhookRow,
        event: &OutboxEvent,
    ) -> (bool, Option<i32>, Option<String>) {
        let body = body(event);
        let signed = signature(&endpoint.secret, Utc::now().timestamp(), &body);
        let client = match reqwest::Url::parse(&endpoint.url) {
            Ok(url) if crate::outbound::is_loopback(&url) => &self.direct,
            _ => &self.proxied,
        };
        let result = client
            .post(&endpoint.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(EVENT_ID_HEADER, &event.id)
            .header(EVENT_TYPE_HEADER, &event.event_type)
            .header(SIGNATURE_HEADER, signed)
            .body(body)
            .send()
            .await;
        match result {
            Ok(response) if response.status().is_success() => {
                (true, Some(i32::from(response.status().as_u16())), None)
            }
            Ok(response) => {
                let status = response.status();
                (
                    false,
                    Some(i32::from(status.as_u16())),
                    Some(format!("answered {status}")),
                )
            }
            Err(e) if e.is_timeout() => (
                false,
                None,
                Some(format!("no answer within {} ms", self.timeout.as_millis())),
            ),
            Err(e) => (false, None, Some(describe(&e))),
        }
    }
}

fn describe(e: &reqwest::Error) -> String {
    use std::error::Error;
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text.chars().take(500).collect()
}

fn log_outcome(
    delivery: &DeliveryRow,
    endpoint: Option<&WebhookRow>,
    settled: Settled,
    attempts: u32,
    status_code: Option<i32>,
    error: Option<&str>,
) {
    let url = endpoint.map_or("", |e| e.url.as_str());
    match settled {
        Settled::Succeeded => {
            tracing::debug!(delivery.id = %delivery.id, event.id = %delivery.event_id, attempts, "webhook delivered")
        }
        Settled::Failed(next) => {
            tracing::info!(delivery.id = %delivery.id, webhook.url = %url, attempts, ?status_code, error, next_attempt_at = %next, "webhook delivery failed; will retry")
        }
        Settled::Dead => {
            tracing::warn!(delivery.id = %delivery.id, webhook.url = %url, attempts, ?status_code, error, "webhook delivery dead after its last attempt")
        }
    }
}

impl Queue for WebhookQueue {
    const TABLE: LeasedTable = LeasedTable::WebhookDeliveries;

    fn attempt<'a>(&'a self, id: &'a str, token: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        self.deliver(id, token).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Reference value from Python:
        // hmac.new(b"whsec_test", b"1700000000.{}", hashlib.sha256).hexdigest()
        let signed = signature("whsec_test", 1_700_000_000, b"{}");
        assert_eq!(
            signed,
            "t=1700000000,v1=35495024f4ef3f94e5a93e22221544c4b75e9a42300cd965ab81cb85cd994e91"
        );
        assert_ne!(signature("whsec_other", 1_700_000_000, b"{}"), signed);
        assert_ne!(signature("whsec_test", 1_700_000_001, b"{}"), signed);
    }
}
