//! The dispatcher: turns each event received from the bus into webhook
//! deliveries (one per endpoint whose filter takes it) and customer
//! notifications, records them with the event's `dispatched_at` in one
//! transaction, then acknowledges the entries and wakes the workers. A batch
//! that cannot be recorded (database down) is held and retried, never
//! acknowledged unrecorded.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{NaiveDateTime, Utc};
use tokio::sync::Notify;

use tokio::task::JoinHandle;

use super::bus::{Bus, Received};
use super::notify::NotificationKind;
use super::Stop;
use crate::db::dispatch::{self, Work};
use crate::db::notifications::NotificationRow;
use crate::db::webhooks::{self, NewDelivery};
use crate::db::{outbox, users, Database, DbError};

pub struct Wakers {
    pub webhooks: Arc<Notify>,
    pub notifications: Arc<Notify>,
}

pub fn spawn(db: Database, bus: Bus, poll: Duration, wakers: Wakers, stop: Stop) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut failures = 0u32;
        let mut pruned_at = tokio::time::Instant::now();
        while !stop.requested() {
            if pruned_at.elapsed() > Duration::from_secs(300) {
                pruned_at = tokio::time::Instant::now();
                match bus.prune_consumers(super::bus::STALE_CONSUMER).await {
                    Ok(0) => {}
                    Ok(removed) => tracing::info!(
                        removed,
                        "removed idle consumers from the event stream's group"
                    ),
                    Err(e) => {
                        tracing::debug!(error = %e, "cannot prune the event stream's consumers")
                    }
                }
            }
            let received = tokio::select! {
                received = bus.receive(256, poll) => received,
                _ = stop.requested_now() => return,
            };
            let batch = match received {
                Ok(batch) => batch,
                Err(e) => {
                    failures = failures.saturating_add(1);
                    if failures == 1 || failures % 50 == 0 {
                        tracing::warn!(bus = bus.kind(), error = %e, "cannot receive events; retrying");
                    }
                    stop.sleep((poll * failures.min(25)).min(Duration::from_secs(5)))
                        .await;
                    continue;
                }
            };
            failures = 0;
            if batch.is_empty() {
                continue;
            }
            let mut attempt = 0u32;
            loop {
                match record(&db, &batch).await {
                    Ok(()) => break,
                    Err(e) => {
                        attempt = attempt.saturating_add(1);
                        tracing::warn!(error = %e, events = batch.len(), attempt, "cannot record dispatched events; retrying");
                        if !stop
                            .sleep((poll * attempt.min(25)).min(Duration::from_secs(5)))
                            .await
                        {
                            // Not acknowledged: taken again after the restart.
                            return;
                        }
                    }
                }
            }
            metrics::counter!("events_dispatched_total").increment(batch.len() as u64);
            if let Err(e) = bus.ack(&batch).await {
                // Recorded already: a redelivery is deduplicated.
                tracing::warn!(error = %e, "cannot acknowledge dispatched events");
            }
            wakers.webhooks.notify_one();
            wakers.notifications.notify_one();
        }
    })
}

async fn record(db: &Database, batch: &[Received]) -> Result<(), DbError> {
    let now = Utc::now().naive_utc();
    let mut conn = db.conn().await?;
    let endpoints: Vec<_> = webhooks::all(&mut conn)
        .await?
        .into_iter()
        .map(|w| {
            let filter = w.event_filter();
            (w, filter)
        })
        .collect();
    // An entry whose event is not in this database (another deployment
    // sharing the Redis prefix, a database restored from a backup) is
    // skipped, not retried: it would fail forever and hold up the rest.
    let ids: Vec<String> = batch.iter().map(|r| r.event.id.clone()).collect();
    let known: HashSet<String> = outbox::existing(&mut conn, &ids)
        .await?
        .into_iter()
        .collect();
    let mut emails: HashMap<String, Option<String>> = HashMap::new();
    let mut work = Work::default();
    for received in batch {
        let event = &received.event;
        if !known.contains(&event.id) {
            tracing::warn!(event.id = %event.id, event.type = %event.event_type, "an event on the stream is not in the outbox; skipped");
            continue;
        }
        work.event_ids.push(event.id.clone());
        for (endpoint, _) in endpoints
            .iter()
            .filter(|(_, filter)| filter.iter().any(|t| t == "*" || *t == event.event_type))
        {
            work.deliveries.push(NewDelivery::due(
                &endpoint.id,
                &event.id,
                &event.event_type,
                now,
            ));
        }
        if let Some(row) = notification_for(&mut conn, &mut emails, event, now).await? {
            work.notifications.push(row);
        }
    }
    dispatch::record(&mut conn, &work, now).await?;
    Ok(())
}

/// The customer notification an event calls for, if any: order events carry
/// the customer's id, whose current address receives it.
async fn notification_for(
    conn: &mut crate::db::DbConn,
    emails: &mut HashMap<String, Option<String>>,
    event: &crate::db::outbox::OutboxEvent,
    now: NaiveDateTime,
) -> Result<Option<NotificationRow>, DbError> {
    let Some(kind) = NotificationKind::for_event(&event.event_type) else {
        return Ok(None);
    };
    let payload: serde_json::Value = serde_json::from_str(&event.payload).unwrap_or_default();
    let Some(user_id) = payload["user_id"].as_str() else {
        return Ok(None);
    };
    if !emails.contains_key(user_id) {
        let email = users::find_by_id(conn, user_id).await?.map(|u| u.email);
        emails.insert(user_id.to_owned(), email);
    }
    let Some(Some(email)) = emails.get(user_id) else {
        return Ok(None); // the customer's account is gone
    };
    Ok(Some(NotificationRow::due(
        &event.id,
        kind.as_str(),
        &event.aggregate_id,
        email,
        now,
    )))
}
