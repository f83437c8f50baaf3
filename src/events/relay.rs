//! The outbox relay: publishes committed outbox rows, oldest first, to the
//! bus and marks them published. A failed publish (Redis down) marks nothing,
//! so the rows are taken again on the next round: an outage delays events and
//! never loses them. Rows published long ago and never dispatched are
//! published again (see [`crate::db::outbox::publish_pending`]).

use std::time::Duration;

use chrono::Utc;

use tokio::task::JoinHandle;

use super::bus::Bus;
use super::Stop;
use crate::config::EventSettings;
use crate::db::{outbox, Database};

pub fn spawn(db: Database, bus: Bus, settings: &EventSettings, stop: Stop) -> JoinHandle<()> {
    let interval = Duration::from_millis(settings.relay_interval_ms);
    let batch = i64::from(settings.relay_batch);
    let redispatch_after = chrono::Duration::seconds(settings.redispatch_after_s as i64);
    tokio::spawn(async move {
        let mut failures = 0u32;
        while !stop.requested() {
            let now = Utc::now().naive_utc();
            let result = match db.conn().await {
                Ok(mut conn) => {
                    let published =
                        outbox::publish_pending(&mut conn, batch, redispatch_after, now, &bus)
                            .await
                            .map_err(anyhow::Error::from);
                    record_lag(&mut conn).await;
                    published
                }
                Err(e) => Err(e.into()),
            };
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

/// `outbox_lag_seconds`: the age of the oldest event not yet published;
/// `events_dispatch_lag_seconds`: of the oldest published but not yet turned
/// into deliveries. 0 when none waits.
async fn record_lag(conn: &mut crate::db::DbConn) {
    let age = |oldest: Option<chrono::NaiveDateTime>| {
        oldest
            .map(|at| (Utc::now().naive_utc() - at).num_milliseconds().max(0) as f64 / 1000.0)
            .unwrap_or(0.0)
    };
    match outbox::oldest_unpublished(conn).await {
        Ok(oldest) => metrics::gauge!("outbox_lag_seconds").set(age(oldest)),
        Err(e) => tracing::debug!(error = %e, "cannot read the outbox lag"),
    }
    match outbox::oldest_undispatched(conn).await {
        Ok(oldest) => metrics::gauge!("events_dispatch_lag_seconds").set(age(oldest)),
        Err(e) => tracing::debug!(error = %e, "cannot read the dispatch lag"),
    }
}
