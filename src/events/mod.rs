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

use tokio::sync::{watch, Mutex, Notify};
use tokio::task::JoinHandle;

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

/// Asked of every loop of the pipeline between two pieces of work, so that a
/// graceful stop never cuts a database call or a delivery in half.
#[derive(Clone)]
pub struct Stop(watch::Receiver<bool>);

impl Stop {
    /// True once a stop was requested, or the pipeline's handle is gone.
    pub fn requested(&self) -> bool {
        *self.0.borrow() || self.0.has_changed().is_err()
    }

    /// Resolves once a stop is requested.
    pub async fn requested_now(&self) {
        let mut rx = self.0.clone();
        let _ = rx.wait_for(|stop| *stop).await;
    }

    /// Sleeps `duration`; false when a stop cut it short.
    pub async fn sleep(&self, duration: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(duration) => !self.requested(),
            _ = self.requested_now() => false,
        }
    }
}

/// Handles on the running pipeline.
#[derive(Clone)]
pub struct Events {
    webhooks: Arc<Notify>,
    stop: Arc<watch::Sender<bool>>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
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
        let (stop_tx, stop_rx) = watch::channel(false);
        let stop = Stop(stop_rx);
        let mut tasks = Vec::new();
        let bus = bus::Bus::new(redis, owner, settings.events.stream_max_len);
        tasks.push(relay::spawn(
            db.clone(),
            bus.clone(),
            &settings.events,
            stop.clone(),
        ));

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
        let (webhooks, task) = worker::spawn(
            Arc::new(webhook_queue),
            db.clone(),
            WorkerConfig {
                concurrency: w.concurrency,
                poll_interval: Duration::from_millis(w.poll_interval_ms),
                // Loading, one bounded POST, recording (retried): well within.
                lease: timeout + Duration::from_secs(60),
            },
            stop.clone(),
        );

        let n = &settings.notifications;
        let smtp_timeout = Duration::from_millis(n.smtp.timeout_ms);
        let notifier = notify::notifier_from_settings(n)?;
        tasks.push(task);
        let (notifications, task) = worker::spawn(
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
            db.clone(),
            WorkerConfig {
                concurrency: 4,
                poll_interval: Duration::from_millis(w.poll_interval_ms),
                lease: smtp_timeout * 3 + Duration::from_secs(60),
            },
            stop.clone(),
        );
        tasks.push(task);

        tasks.push(dispatch::spawn(
            db,
            bus,
            Duration::from_millis(settings.events.relay_interval_ms),
            dispatch::Wakers {
                webhooks: webhooks.clone(),
                notifications,
            },
            stop,
        ));
        Ok(Events {
            webhooks,
            stop: Arc::new(stop_tx),
            tasks: Arc::new(Mutex::new(tasks)),
        })
    }

    /// Asks every loop to stop taking work (what is in flight goes on).
    pub fn request_stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Stops the pipeline gracefully: no new work is taken, attempts in
    /// flight finish and are recorded (so a deploy does not send them again),
    /// waiting at most `timeout`.
    pub async fn shutdown(&self, timeout: Duration) {
        self.request_stop();
        let tasks: Vec<_> = self.tasks.lock().await.drain(..).collect();
        if tokio::time::timeout(timeout, futures_util::future::join_all(tasks))
            .await
            .is_err()
        {
            tracing::warn!("event delivery still busy at shutdown; unfinished attempts are retried after the restart");
        }
    }

    /// Makes the delivery worker look for due deliveries now (after a replay).
    pub fn wake_deliveries(&self) {
        self.webhooks.notify_one();
    }
}
