//! Domain events after they commit: the outbox relay, the bus (a Redis
//! Stream or an in-process channel), the dispatcher that turns events into
//! webhook deliveries and customer notifications, the workers that send
//! those with retries, and analytics tracking.
//!
//! ```text
//! change + outbox row ──(one transaction)──▶ outbox
//!        relay ──publish──▶ bus ──consumer group──▶ dispatcher
//!        dispatcher ──(one transaction)──▶ webhook_deliveries, notifications, outbox.dispatched_at
//!        workers ──lease──▶ POST / send, retried with backoff, then dead
//! ```
//!
//! Every stage is at-least-once and keyed by the event's id, so a crash or
//! an outage anywhere delays events and never loses them, and an event is
//! delivered to an endpoint twice only across a crash (with the same id).

pub mod analytics;
pub mod bus;
pub mod dispatch;
pub mod notify;
pub mod relay;
pub mod retry;
pub mod webhooks;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::config::Settings;
use crate::db::Database;
use crate::redis_conn::RedisConn;
use retry::RetryPolicy;
use worker::WorkerConfig;

/// Every domain event type of api.md, the catalogue webhooks subscribe to.
pub const EVENT_TYPES: &[&str] = &[
    "order.created",
    "order.paid",
    "order.cancelled",
    "order.shipped",
    "order.delivered",
    "order.refunded",
    "payment.failed",
    "inventory.reserved",
    "inventory.released",
    "inventory.restocked",
    "inventory.low_stock",
];

/// Handles on the running pipeline.
#[derive(Clone)]
pub struct Events {
    webhooks: Arc<Notify>,
}

impl Events {
    /// Starts the relay, the dispatcher and the workers. `owner` names this
    /// process in the stream's consumer group.
    pub fn start(
        db: Database,
        redis: Option<RedisConn>,
        settings: &Settings,
        owner: &str,
    ) -> anyhow::Result<Events> {
        let bus = bus::Bus::new(redis, owner, settings.events.stream_max_len);
        relay::spawn(db.clone(), bus.clone(), &settings.events);

        let w = &settings.webhooks;
        let timeout = Duration::from_millis(w.timeout_ms);
        let webhook_queue = webhooks::WebhookQueue::new(
            db.clone(),
            RetryPolicy {
                max_attempts: w.max_attempts,
                base: Duration::from_millis(w.backoff_base_ms),
                max: Duration::from_millis(w.backoff_max_ms),
            },
            timeout,
        )?;
        let webhooks = worker::spawn(
            Arc::new(webhook_queue),
            WorkerConfig {
                concurrency: w.concurrency,
                poll_interval: Duration::from_millis(w.poll_interval_ms),
                // Loading, one bounded POST, recording (retried): well within.
                lease: timeout + Duration::from_secs(60),
            },
        );

        let n = &settings.notifications;
        let smtp_timeout = Duration::from_millis(n.smtp.timeout_ms);
        let notifier = notify::notifier_from_settings(n)?;
        let notifications = worker::spawn(
            Arc::new(notify::NotificationQueue::new(
                db.clone(),
                notifier,
                RetryPolicy {
                    max_attempts: n.max_attempts,
                    base: Duration::from_millis(n.backoff_base_ms),
                    max: Duration::from_millis(n.backoff_max_ms),
                },
                smtp_timeout * 3,
            )),
            WorkerConfig {
                concurrency: 4,
                poll_interval: Duration::from_millis(w.poll_interval_ms),
                lease: smtp_timeout * 3 + Duration::from_secs(60),
            },
        );

        dispatch::spawn(
            db,
            bus,
            Duration::from_millis(settings.events.relay_interval_ms),
            dispatch::Wakers {
                webhooks: webhooks.clone(),
                notifications,
            },
        );
        Ok(Events { webhooks })
    }

    /// Makes the delivery worker look for due deliveries now (after a replay).
    pub fn wake_deliveries(&self) {
        self.webhooks.notify_one();
    }
}
