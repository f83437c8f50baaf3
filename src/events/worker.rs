//! The loop shared by webhook deliveries and notifications: take due rows
//! under a lease (see [`crate::db::leases`]), work on each in a task of its
//! own, at most `concurrency` at once, and look again when woken or every
//! `poll_interval`.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures_util::future::BoxFuture;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;

use super::Stop;
use crate::db::leases::LeasedTable;
use crate::db::Database;

/// What to do with one due row of a leased table.
pub trait Queue: Send + Sync + 'static {
    /// The table whose due rows it works on.
    const TABLE: LeasedTable;

    /// One attempt at the row `id`, recorded under `token`. An error leaves
    /// the row leased: it is tried again once the lease runs out.
    fn attempt<'a>(&'a self, id: &'a str, token: &'a str) -> BoxFuture<'a, anyhow::Result<()>>;
}

#[derive(Debug, Clone, Copy)]
pub struct WorkerConfig {
    pub concurrency: usize,
    pub poll_interval: Duration,
    /// How long a taken row stays taken: longer than one attempt can last.
    pub lease: Duration,
}

/// Starts the worker; notifying the returned handle makes it look at once.
/// The task ends after a stop, once its attempts in flight have finished.
pub fn spawn<Q: Queue>(
    queue: Arc<Q>,
    db: Database,
    config: WorkerConfig,
    stop: Stop,
) -> (Arc<Notify>, JoinHandle<()>) {
    let table = Q::TABLE;
    let wake = Arc::new(Notify::new());
    let woken = wake.clone();
    let task = tokio::spawn(async move {
        let concurrency = config.concurrency.max(1);
        let slots = Arc::new(Semaphore::new(concurrency));
        let lease = chrono::Duration::from_std(config.lease).unwrap_or(chrono::Duration::MAX);
        let mut failures = 0u32;
        while !stop.requested() {
            let first = tokio::select! {
                slot = slots.clone().acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => return,
                },
                _ = stop.requested_now() => break,
            };
            if stop.requested() {
                break;
            }
            let limit = 1 + slots.available_permits() as i64;
            let token = format!("{}-{}", table.name(), uuid::Uuid::now_v7());
            let now = Utc::now().naive_utc();
            match claim(&db, table, limit, &token, now + lease, now).await {
                Ok(ids) if ids.is_empty() => {
                    failures = 0;
                    drop(first);
                    tokio::select! {
                        _ = tokio::time::timeout(config.poll_interval, woken.notified()) => {}
                        _ = stop.requested_now() => {}
                    }
                }
                Ok(ids) => {
                    failures = 0;
                    let mut first = Some(first);
                    for id in ids {
                        // Only this loop takes slots, so the ones counted are there.
                        let Some(slot) = first
                            .take()
                            .or_else(|| slots.clone().try_acquire_owned().ok())
                        else {
                            break;
                        };
                        let (queue, token) = (queue.clone(), token.clone());
                        tokio::spawn(async move {
                            if let Err(e) = queue.attempt(&id, &token).await {
                                tracing::warn!(queue = table.name(), row.id = %id, error = %e, "attempt could not run; tried again when its lease runs out");
                            }
                            drop(slot);
                        });
                    }
                }
                Err(e) => {
                    drop(first);
                    failures = failures.saturating_add(1);
                    tracing::warn!(queue = table.name(), error = %e, "cannot take due work; retrying");
                    let pause = config.poll_interval * failures.min(20);
                    stop.sleep(pause.min(Duration::from_secs(5))).await;
                }
            }
        }
        // Wait for the attempts in flight.
        let _ = slots.acquire_many(concurrency as u32).await;
    });
    (wake, task)
}

/// Takes due rows of `table` on a connection held only for the statement.
async fn claim(
    db: &Database,
    table: LeasedTable,
    limit: i64,
    token: &str,
    until: chrono::NaiveDateTime,
    now: chrono::NaiveDateTime,
) -> anyhow::Result<Vec<String>> {
    let mut conn = db.conn().await?;
    Ok(table.claim_due(&mut conn, limit, token, until, now).await?)
}

/// Runs `record` (writing an attempt's outcome) up to five times over about
/// three seconds: an outcome that cannot be written leaves the row to be
/// tried again when its lease runs out, which would send it twice.
pub async fn record_outcome<F, Fut>(mut record: F) -> anyhow::Result<bool>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let mut tries = 0u64;
    loop {
        match record().await {
            Ok(recorded) => return Ok(recorded),
            Err(e) if tries < 4 => {
                tries += 1;
                tracing::debug!(error = %e, tries, "cannot record an attempt's outcome yet; retrying");
                tokio::time::sleep(Duration::from_millis(300 * tries)).await;
            }
            Err(e) => return Err(e),
        }
    }
}
