//! The outbox relay: publishes committed outbox rows, oldest first, to the
//! bus. Each round claims a batch in one short transaction (marking it
//! published, see [`crate::db::outbox::claim_pending`]), gives the connection
//! back, publishes, and only then takes a connection again if it must give
//! back what it could not publish: no connection is held while Redis is
//! awaited. A failed publish (Redis down) gives the rows back, so they are
//! taken again on the next round: an outage delays events and never loses
//! them. Rows published long ago and never dispatched are published again.

use std::time::Duration;

use chrono::Utc;

use tokio::task::JoinHandle;

use super::bus::Bus;
use super::Stop;
use crate::config::EventSettings;
use crate::db::outbox::{self, OutboxEvent, Publisher};
use crate::db::Database;

pub fn spawn(db: Database, bus: Bus, settings: &EventSettings, stop: Stop) -> JoinHandle<()> {
    let interval = Duration::from_millis(settings.relay_interval_ms);
    let batch = i64::from(settings.relay_batch);
    let redispatch_after = chrono::Duration::seconds(settings.redispatch_after_s as i64);
    tokio::spawn(async move {
        let mut failures = 0u32;
        while !stop.requested() {
            let result = publish_pending(&db, batch, redispatch_after, &bus).await;
            record_lag(&db).await;
            match result {
                Ok(published) => {
                    if failures > 0 {
                        tracing::info!(bus = bus.kind(), "the outbox relay publishes again");
                    }
                    failures = 0;
                    metrics::counter!("events_published_total", "bus" => bus.kind())
                        .increment(published as u64);
                    if published as i64 == batch {
                        continue; // more are waiting
                    }
                    stop.sleep(interval).await;
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    if failures == 1 || failures % 50 == 0 {
                        tracing::warn!(bus = bus.kind(), error = %e, failures, "the outbox relay cannot publish; events wait in the outbox");
                    }
                    metrics::counter!("events_publish_failures_total", "bus" => bus.kind())
                        .increment(1);
                    stop.sleep((interval * failures.min(25)).min(Duration::from_secs(5)))
                        .await;
                }
            }
        }
    })
}

/// One round: claims up to `limit` rows, publishes them with no connection
/// held, and gives them back if that fails. Returns how many were published.
pub async fn publish_pending(
    db: &Database,
    limit: i64,
    redispatch_after: chrono::Duration,
    publisher: &dyn Publisher,
) -> anyhow::Result<usize> {
    let now = Utc::now().naive_utc();
    let claimed = {
        let mut conn = db.conn().await?;
        outbox::claim_pending(&mut conn, limit, redispatch_after, now).await?
    };
    if claimed.is_empty() {
        return Ok(0);
    }
    let events: Vec<OutboxEvent> = claimed.iter().map(|c| c.event.clone()).collect();
    if let Err(e) = publisher.publish(&events).await {
        // If this fails too, the rows come back when their republish_after
        // has passed, as those of a relay that died mid-round do.
        let given_back = async {
            let mut conn = db.conn().await?;
            anyhow::Ok(outbox::unclaim(&mut conn, &claimed, now).await?)
        }
        .await;
        if let Err(back) = given_back {
            tracing::warn!(error = %back, events = claimed.len(), "cannot give back events that were not published; they are published again after events.redispatch_after_s");
        }
        return Err(e.context("publishing events"));
    }
    Ok(claimed.len())
}

/// `outbox_lag_seconds`: the age of the oldest event not yet published;
/// `events_dispatch_lag_seconds`: of the oldest published but not yet turned
/// into deliveries. 0 when none waits. Two short reads on a connection of
/// their own.
async fn record_lag(db: &Database) {
    let age = |oldest: Option<chrono::NaiveDateTime>| {
        oldest
            .map(|at| (Utc::now().naive_utc() - at).num_milliseconds().max(0) as f64 / 1000.0)
            .unwrap_or(0.0)
    };
    let mut conn = match db.conn().await {
        Ok(conn) => conn,
        Err(e) => {
            tracing::debug!(error = %e, "cannot read the outbox lag");
            return;
        }
    };
    match outbox::oldest_unpublished(&mut conn).await {
        Ok(oldest) => metrics::gauge!("outbox_lag_seconds").set(age(oldest)),
        Err(e) => tracing::debug!(error = %e, "cannot read the outbox lag"),
    }
    match outbox::oldest_undispatched(&mut conn).await {
        Ok(oldest) => metrics::gauge!("events_dispatch_lag_seconds").set(age(oldest)),
        Err(e) => tracing::debug!(error = %e, "cannot read the dispatch lag"),
    }
}
