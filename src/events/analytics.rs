//! Analytics events (`POST /events.track`): accepted into a bounded buffer
//! and written to the `events` table in batches by one writer task. A full
//! buffer refuses (the handler answers 503 with `Retry-After`) instead of
//! growing; a failed write is retried with the batch kept, so an accepted
//! event is lost only if the process dies before its batch is written (at
//! most `analytics.flush_interval_ms` of events, or longer while the database
//! is down). A graceful stop writes what is buffered.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Mutex, Notify};
use tokio::task::JoinHandle;

use crate::config::AnalyticsSettings;
use crate::db::events::{self, NewEventRow};
use crate::db::{Database, DbError};

/// Where `events.track` rows come from in the `events` table.
pub const SOURCE: &str = "api";

#[derive(Debug, PartialEq, Eq)]
pub enum TrackError {
    /// The buffer is full: shed.
    Full,
    /// The engine is stopping.
    Closed,
}

#[derive(Clone)]
pub struct Analytics {
    tx: mpsc::Sender<NewEventRow>,
    closing: Arc<Notify>,
    writer: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl Analytics {
    pub fn start(db: Database, settings: &AnalyticsSettings) -> Analytics {
        let (tx, rx) = mpsc::channel(settings.buffer_capacity);
        let closing = Arc::new(Notify::new());
        let writer = tokio::spawn(write_batches(
            db,
            rx,
            settings.batch_size,
            Duration::from_millis(settings.flush_interval_ms),
            closing.clone(),
        ));
        Analytics {
            tx,
            closing,
            writer: Arc::new(Mutex::new(Some(writer))),
        }
    }

    /// Buffers an event for writing.
    pub fn track(&self, row: NewEventRow) -> Result<(), TrackError> {
        match self.tx.try_send(row) {
            Ok(()) => {
                metrics::counter!("analytics_events_total", "outcome" => "accepted").increment(1);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                metrics::counter!("analytics_events_total", "outcome" => "dropped").increment(1);
                Err(TrackError::Full)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(TrackError::Closed),
        }
    }

    /// Stops accepting, writes what is buffered, and waits up to `timeout`.
    pub async fn shutdown(&self, timeout: Duration) {
        self.closing.notify_one();
        let Some(writer) = self.writer.lock().await.take() else {
            return;
        };
        if tokio::time::timeout(timeout, writer).await.is_err() {
            tracing::error!("analytics events still buffered at shutdown were not written");
        }
    }
}

async fn write_batches(
    db: Database,
    mut rx: mpsc::Receiver<NewEventRow>,
    batch_size: usize,
    flush_interval: Duration,
    closing: Arc<Notify>,
) {
    let mut batch = Vec::with_capacity(batch_size);
    let mut closed = false;
    loop {
        if closed {
            // Stopping: drain what is buffered, then end.
            if rx.recv_many(&mut batch, batch_size).await == 0 {
                return;
            }
        } else {
            tokio::select! {
                received = rx.recv_many(&mut batch, batch_size) => {
                    if received == 0 {
                        return;
                    }
                }
                _ = closing.notified() => {
                    rx.close();
                    closed = true;
                    continue;
                }
            }
        }
        // Fill the batch for a moment: fewer, larger writes under load. A
        // stop cuts the wait short.
        let deadline = tokio::time::Instant::now() + flush_interval;
        while batch.len() < batch_size && !closed {
            let room = batch_size - batch.len();
            tokio::select! {
                received = tokio::time::timeout_at(deadline, rx.recv_many(&mut batch, room)) => {
                    if !matches!(received, Ok(n) if n > 0) {
                        break;
                    }
                }
                _ = closing.notified() => {
                    rx.close();
                    closed = true;
                }
            }
        }
        write(&db, &batch).await;
        batch.clear();
    }
}

/// Writes the batch, retrying while the database is unavailable. A batch
/// the database refuses outright is written row by row, so that one row it
/// cannot take does not hold the others (that row is logged and dropped).
async fn write(db: &Database, batch: &[NewEventRow]) {
    let mut failures = 0u32;
    loop {
        let result = match db.conn().await {
            Ok(mut conn) => events::insert_batch(&mut conn, batch)
                .await
                .map_err(DbError::from),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                metrics::counter!("analytics_events_written_total").increment(batch.len() as u64);
                return;
            }
            Err(e) if !e.is_unavailable() && batch.len() > 1 => {
                tracing::warn!(error = %e, events = batch.len(), "an analytics batch was refused; writing it row by row");
                for row in batch {
                    Box::pin(write(db, std::slice::from_ref(row))).await;
                }
                return;
            }
            Err(e) if !e.is_unavailable() => {
                tracing::error!(error = %e, event.id = %batch[0].id, event.name = %batch[0].name, "the database refused an analytics event; dropped");
                metrics::counter!("analytics_events_total", "outcome" => "refused").increment(1);
                return;
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                tracing::warn!(error = %e, events = batch.len(), failures, "cannot write analytics events; retrying");
                tokio::time::sleep(Duration::from_millis(100 * u64::from(failures.min(50)))).await;
            }
        }
    }
}
