//! Running a saga: load the order once, decide the next step, run it, and
//! record its outcome with every effect of it, the step's record (attempts,
//! timings, error) and the lease's renewal in one transaction; then decide
//! again from the order as that transaction left it, held in memory (a
//! recorded refund or restock reloads it). Nothing is written before a step
//! runs.
//!
//! A transient failure is retried with exponential backoff up to
//! `sagas.max_step_attempts`, the attempts counted in memory; then the saga
//! parks, writing the step's record: unfinished, visible as `stuck`,
//! resumable by an operator (and at the next start-up). The lease is taken
//! when the drive starts, renewed by every recorded step, before every retry,
//! and while a slow step runs, and given back by the record of the last
//! step; a process that lost its lease (it stalled past the TTL and another
//! took over) stops at once. Every write is guarded by the order's version,
//! so an order moved by another process is reloaded, never overwritten.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::Instrument;

use chrono::Utc;
use serde_json::json;

use super::steps::{StepError, StepResult};
use super::{audit_row, event_payload, unexpected, Actor, Loaded, Orders, OrdersError, Placed};
use crate::db::orders::{OrderChange, StepRecord};
use crate::db::outbox::NewOutboxRow;
use crate::db::pipeline::{Admit, OrderWrite, Refusal};
use crate::db::sagas as sagas_db;
use crate::db::DbError;
use crate::domain::order::{next_step, OrderProgress, Outcome, SagaState, Step};

/// How a run of the saga ended in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriveEnd {
    /// Nothing left to do.
    Finished,
    /// A step kept failing; the saga waits for an operator or a restart.
    Parked,
    /// Another process holds the saga's lease.
    NotOwner,
}

impl Orders {
    /// [`Orders::drive`], tried again with backoff while the database is
    /// unreachable or saturated: the saga is resumable from any point, so a
    /// busy pool delays it rather than leaving it to the lease's expiry.
    pub(super) async fn drive_patiently(
        &self,
        order_id: &str,
        unpark: bool,
        mut placed: Option<Box<Placed>>,
    ) -> Result<DriveEnd, OrdersError> {
        let mut backoff = self.inner.policy.backoff.max(Duration::from_millis(10));
        let mut tries = 1;
        loop {
            match self.drive(order_id, unpark, placed.take()).await {
                Err(OrdersError::Db(e))
                    if e.is_unavailable() && tries < self.inner.policy.max_attempts =>
                {
                    tracing::warn!(order.id = order_id, error = %e, "database busy; the saga will go on shortly");
                    tokio::time::sleep(backoff).await;
                    backoff = backoff.saturating_mul(2);
                    tries += 1;
                }
                other => return other,
            }
        }
    }

    /// Drives the saga of `order_id`. `placed` is the order as this
    /// process just placed it, with the lease its placement took: used
    /// while that lease has most of its life left, instead of a claim and a
    /// read.
    pub(super) async fn drive(
        &self,
        order_id: &str,
        unpark: bool,
        placed: Option<Box<Placed>>,
    ) -> Result<DriveEnd, OrdersError> {
        let fresh_for = (self.inner.policy.lease_ttl / 3)
            .to_std()
            .unwrap_or(Duration::ZERO);
        let placed =
            placed.filter(|p| !unpark && p.loaded.row.id == order_id && p.at.elapsed() < fresh_for);
        // The first step may have run before this drive (in a process that
        // died, or before a park): its payment calls look their key up
        // first. Not so for an order this drive has just placed.
        let mut may_have_run = placed.is_none();
        let mut loaded = match placed {
            Some(placed) => {
                #[cfg(debug_assertions)]
                self.check_advanced(&placed.loaded).await;
                placed.loaded
            }
            None => {
                if !self.claim(order_id, unpark).await? {
                    return Ok(DriveEnd::NotOwner);
                }
                self.load(order_id).await?.ok_or(OrdersError::NotFound)?
            }
        };
        // Whether this drive knows it holds the lease: after its claim, the
        // placement's hand-over, or its own record. A reload (the order
        // moved, a park did not happen) may mean another process took the
        // saga: the lease is claimed again before the next step runs.
        let mut leased = true;
        loop {
            let Some(step) = next_step(&loaded.progress) else {
                self.finish(order_id).await?;
                return Ok(DriveEnd::Finished);
            };
            if !leased {
                if !self.claim(order_id, false).await? {
                    return Ok(DriveEnd::NotOwner);
                }
                leased = true;
            }
            match self.run_step(&loaded, &step, may_have_run).await? {
                StepEnd::End(end) => return Ok(end),
                StepEnd::Released => return Ok(DriveEnd::Finished),
                StepEnd::Recorded(next) => {
                    loaded = match next {
                        Some(next) => *next,
                        None => self.load(order_id).await?.ok_or(OrdersError::NotFound)?,
                    };
                    // The step just recorded is done; the next one is new.
                    may_have_run = false;
                }
                StepEnd::Reloaded(next) => {
                    loaded = match next {
                        Some(next) => *next,
                        None => self.load(order_id).await?.ok_or(OrdersError::NotFound)?,
                    };
                    // The next step may be the one just attempted.
                    may_have_run = true;
                    leased = false;
                }
            }
        }
    }

    /// Takes or renews this process's lease on the saga.
    async fn claim(&self, order_id: &str, unpark: bool) -> Result<bool, OrdersError> {
        let now = Utc::now().naive_utc();
        let mut conn = self.inner.db.conn().await?;
        Ok(sagas_db::claim(
            &mut conn,
            order_id,
            &self.inner.owner,
            now,
            now + self.inner.policy.lease_ttl,
            unpark,
        )
        .await?)
    }

    async fn finish(&self, order_id: &str) -> Result<(), OrdersError> {
        let mut conn = self.inner.db.conn().await?;
        sagas_db::release(&mut conn, order_id, &self.inner.owner).await?;
        Ok(())
    }

    /// Runs one step to an outcome, retrying transient failures, and
    /// records it.
    async fn run_step(
        &self,
        loaded: &Loaded,
        step: &Step,
        may_have_run: bool,
    ) -> Result<StepEnd, OrdersError> {
        let order_id = loaded.row.id.as_str();
        let name = step.name();
        let step_label = name.map(|n| n.as_str()).unwrap_or("bookkeeping");
        let ref_id = match step {
            Step::RefundPayment { refund_id, .. } => refund_id.clone(),
            Step::RestockInventory {
                refund_id: Some(id),
            } => id.clone(),
            _ => String::new(),
        };
        let mut record = name.map(|name| StepRecord {
            name: name.as_str().to_owned(),
            kind: if name.is_compensation() {
                "compensation"
            } else {
                "step"
            },
            ref_id,
            status: "failed",
            attempts: 0,
            error: None,
            started_at: Utc::now().naive_utc(),
        });
        let mut backoff = self.inner.policy.backoff;
        let mut fresh: Option<Loaded> = None;
        for attempt_index in 0..self.inner.policy.max_attempts {
            let attempt = attempt_index as i32 + 1;
            if attempt_index > 0 {
                if !self.claim(order_id, false).await? {
                    return Ok(StepEnd::End(DriveEnd::NotOwner));
                }
                // A command may have moved the order while we waited.
                let reloaded = self.load(order_id).await?.ok_or(OrdersError::NotFound)?;
                if next_step(&reloaded.progress).as_ref() != Some(step) {
                    return Ok(StepEnd::Reloaded(Some(Box::new(reloaded))));
                }
                fresh = Some(reloaded);
            }
            let current = fresh.as_ref().unwrap_or(loaded);
            if let Some(record) = &mut record {
                record.attempts = attempt;
            }
            let span =
                tracing::info_span!("saga_step", order.id = order_id, step = step_label, attempt);
            let started = Instant::now();
            // The lease is renewed while the step runs, so a slow provider
            // call never lets another process start the same step. The step
            // itself is never cut short (a database call dropped halfway is
            // not safe on SQLite): if the lease is lost anyway, recording the
            // outcome fails and this process stops there.
            let heartbeat = self.spawn_heartbeat(order_id);
            let result = self
                .execute(current, step, may_have_run || attempt_index > 0)
                .instrument(span)
                .await;
            heartbeat.stop().await;
            metrics::histogram!("saga_step_duration_seconds", "step" => step_label)
                .record(started.elapsed().as_secs_f64());
            match result {
                Ok(result) => return self.record(current, step, record, result).await,
                Err(StepError::Transient(message)) => {
                    tracing::warn!(order.id = order_id, step = step_label, attempt, error = %message, "saga step failed; will retry");
                    if let Some(record) = &mut record {
                        record.error = Some(message);
                    }
                    metrics::counter!("saga_step_failures_total", "step" => step_label)
                        .increment(1);
                    if attempt_index + 1 < self.inner.policy.max_attempts {
                        tokio::time::sleep(backoff).await;
                        backoff = backoff.saturating_mul(2);
                    }
                }
                Err(StepError::Db(e)) => return Err(e.into()),
            }
        }
        // Park, unless a command (say a cancel from another process) moved
        // the order meanwhile: then the saga has other work to try first.
        let latest = self.load(order_id).await?.ok_or(OrdersError::NotFound)?;
        if next_step(&latest.progress).as_ref() != Some(step) {
            return Ok(StepEnd::Reloaded(Some(Box::new(latest))));
        }
        let mut conn = self.inner.db.conn().await?;
        let now = Utc::now().naive_utc();
        let owner = &self.inner.owner;
        if !sagas_db::park(
            &mut conn,
            order_id,
            owner,
            latest.row.version,
            record.as_ref(),
            now,
        )
        .await?
        {
            return Ok(StepEnd::Reloaded(None));
        }
        tracing::error!(
            order.id = order_id,
            step = step_label,
            "saga step kept failing; the saga is parked"
        );
        metrics::counter!("sagas_stuck_total").increment(1);
        Ok(StepEnd::End(DriveEnd::Parked))
    }

    /// Renews the saga's lease every third of its lifetime until stopped,
    /// or until it is no longer this process's. A failed renewal is tried
    /// again (the lease has two thirds of its life left to absorb it).
    fn spawn_heartbeat(&self, order_id: &str) -> Heartbeat {
        let ttl = self.inner.policy.lease_ttl;
        let every = (ttl / 3)
            .to_std()
            .unwrap_or(Duration::from_secs(1))
            .max(Duration::from_millis(100));
        let stop = Arc::new(tokio::sync::Notify::new());
        let (this, id, stopped) = (self.clone(), order_id.to_owned(), stop.clone());
        let task = tokio::spawn(async move {
            loop {
                // Waiting is safe to cut short; a renewal is not (a database
                // call dropped halfway is not safe on SQLite), so it always
                // runs to its end before the stop is seen.
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    () = stopped.notified() => return,
                }
                let now = Utc::now().naive_utc();
                let renewed = async {
                    let mut conn = this.inner.db.conn().await?;
                    let owner = &this.inner.owner;
                    Ok::<_, DbError>(sagas_db::renew(&mut conn, &id, owner, now + ttl).await?)
                }
                .await;
                match renewed {
                    Ok(true) => {}
                    Ok(false) => return,
                    Err(e) => {
                        tracing::warn!(order.id = %id, error = %e, "could not renew the saga lease; trying again");
                    }
                }
            }
        });
        Heartbeat {
            stop,
            task: Some(task),
        }
    }

    /// Writes a step's outcome, all its effects and the step's record in one
    /// transaction, renewing the lease, or giving it back if the saga has
    /// nothing left to do. If the order moved meanwhile (a command from
    /// another process), the same outcome is applied to the fresh progress:
    /// the effect happened and must be recorded.
    async fn record(
        &self,
        loaded: &Loaded,
        step: &Step,
        record: Option<StepRecord>,
        result: StepResult,
    ) -> Result<StepEnd, OrdersError> {
        let order_id = loaded.row.id.as_str();
        let mut fresh: Option<Loaded> = None;
        for _ in 0..5 {
            let base = fresh.as_ref().unwrap_or(loaded);
            let before = base.progress.saga_state();
            let now = Utc::now().naive_utc();
            // A step that needs nothing but the order's state (confirming a
            // paid order) is decided here and recorded with this one.
            let first = base.progress.apply(step, &result.outcome);
            let follow = next_step(&first.progress)
                .filter(|next| *next == Step::ConfirmOrder)
                .map(|next| {
                    let applied = first.progress.apply(&next, &Outcome::Done);
                    (next, applied)
                });
            let mut change = self.change_for(base, now);
            change.lease = Some(self.inner.owner.clone());
            let last = follow.as_ref().map_or(step, |(next, _)| next);
            let progress = follow
                .as_ref()
                .map_or(&first.progress, |(_, applied)| &applied.progress)
                .clone();
            self.set_progress(&mut change, &progress, now);
            change.saga.current_step = last.name().map(|n| n.as_str().to_owned());
            let done = next_step(&progress).is_none();
            if done {
                change.saga.lease_owner = Some(None);
                change.saga.lease_expires_at = Some(None);
            } else {
                change.saga.lease_expires_at = Some(Some(now + self.inner.policy.lease_ttl));
            }
            // A business refusal (decline, no stock) is a step that failed;
            // its compensations follow.
            let status = match result.outcome {
                Outcome::Done | Outcome::RefundOpened(_) => "succeeded",
                // Not this step's own work: it runs again afterwards.
                Outcome::PaymentFound(_) => "failed",
                _ => "failed",
            };
            change.steps.extend(record.clone().map(|r| StepRecord {
                status,
                error: result.note.clone(),
                ..r
            }));
            if let Some(name) = follow.as_ref().and_then(|(next, _)| next.name()) {
                change.steps.push(StepRecord {
                    name: name.as_str().to_owned(),
                    kind: "step",
                    ref_id: String::new(),
                    status: "succeeded",
                    attempts: 1,
                    error: None,
                    started_at: now,
                });
            }
            change.payment_ref = result.payment_ref.clone();
            change.payment = result.payment.clone();
            change.new_refund = result.new_refund.clone();
            change.refund_update = result.refund_update.clone();
            change.restocked = result.restocked.clone();
            let mut stages = vec![(base.progress.status, &first, result.data.clone())];
            if let Some((_, applied)) = &follow {
                stages.push((first.progress.status, applied, json!({})));
            }
            for (from, applied, data) in stages {
                let to = applied.progress.status;
                for event in &applied.events {
                    change.audit.push(audit_row(
                        order_id,
                        event.name,
                        from,
                        to,
                        &Actor::System,
                        data.clone(),
                        now,
                    ));
                    if event.public {
                        change.outbox.push(NewOutboxRow::new(
                            event.name,
                            order_id,
                            &event_payload(&base.row, to, data.clone()),
                            now,
                        ));
                    }
                }
                if to != from && applied.events.is_empty() {
                    change.audit.push(audit_row(
                        order_id,
                        "order.status_changed",
                        from,
                        to,
                        &Actor::System,
                        json!({}),
                        now,
                    ));
                }
            }
            let write = OrderWrite::Change(Box::new(change.clone()));
            match self.write_order(write, Admit::Always).await? {
                Ok(()) => {
                    let after = progress.saga_state();
                    if before == SagaState::Running && after != before {
                        let outcome = after.as_str();
                        metrics::counter!("sagas_finished_total", "state" => outcome).increment(1);
                    }
                    if done {
                        return Ok(StepEnd::Released);
                    }
                    let next = advanced(base, &change, progress);
                    #[cfg(debug_assertions)]
                    if let Some(next) = &next {
                        self.check_advanced(next).await;
                    }
                    return Ok(StepEnd::Recorded(next.map(Box::new)));
                }
                Err(Refusal::OrderChanged { .. }) => {
                    // A command (from another process) moved the order. If
                    // the same step is still next, record its outcome on the
                    // fresh state; if not, drop it: every step finds its own
                    // unrecorded effects again (payment lookups, the stock
                    // ledger), so the next decision reconciles it.
                    let reloaded = self.load(order_id).await?.ok_or(OrdersError::NotFound)?;
                    if next_step(&reloaded.progress).as_ref() != Some(step) {
                        return Ok(StepEnd::Reloaded(Some(Box::new(reloaded))));
                    }
                    fresh = Some(reloaded);
                }
                Err(Refusal::LeaseLost { .. }) => {
                    tracing::warn!(
                        order.id = order_id,
                        "lost the saga's lease before recording a step"
                    );
                    return Ok(StepEnd::End(DriveEnd::NotOwner));
                }
                // Saga steps carry no idempotency key, nor a cart.
                Err(refusal) => return Err(unexpected(refusal)),
            }
        }
        Err(OrdersError::Unavailable(
            "the order kept changing while a step was recorded".to_owned(),
        ))
    }

    /// Debug builds (every test) check that the order held in memory (after
    /// a recorded step, or as placed) is the order as stored, unless another
    /// process moved it since.
    #[cfg(debug_assertions)]
    async fn check_advanced(&self, next: &Loaded) {
        let Ok(Some(stored)) = self.load(&next.row.id).await else {
            return;
        };
        if stored.row.version == next.row.version {
            assert_eq!(stored.progress, next.progress, "the saga's order in memory");
            assert_eq!(stored.row.payment_ref, next.row.payment_ref);
            assert_eq!(stored.row.status, next.row.status);
            assert_eq!(stored.refunds.len(), next.refunds.len());
            let skus = |l: &Loaded| -> Vec<(String, i64)> {
                l.items
                    .iter()
                    .map(|i| (i.sku.clone(), i.quantity))
                    .collect()
            };
            assert_eq!(skus(&stored), skus(next), "the order's lines, in SKU order");
        }
    }
}

/// How a step ended, for the drive loop.
enum StepEnd {
    /// Stop driving.
    End(DriveEnd),
    /// This drive recorded the step (and so renewed its lease): decide
    /// again on this order, or on a reload (`None`).
    Recorded(Option<Box<Loaded>>),
    /// The step's outcome was not recorded by this drive (the order moved,
    /// or the park did not happen): decide again on this fresh order, or on
    /// a reload (`None`), after claiming the lease again.
    Reloaded(Option<Box<Loaded>>),
    /// The last step was recorded and the lease given back with it.
    Released,
}

/// The order as `change`, just committed on top of `base`, left it, when
/// that can be known without a read: the order row's columns and version
/// move, and nothing the step did touched refunds or items (those reload).
fn advanced(base: &Loaded, change: &OrderChange, progress: OrderProgress) -> Option<Loaded> {
    if change.new_refund.is_some() || change.refund_update.is_some() || !change.restocked.is_empty()
    {
        return None;
    }
    let mut row = base.row.clone();
    let p = &change.progress;
    row.status.clone_from(&p.status);
    row.payment_status.clone_from(&p.payment_status);
    row.stock_state.clone_from(&p.stock_state);
    row.authorized = p.authorized;
    row.captured = p.captured;
    row.refunded = p.refunded;
    row.cancel_requested = p.cancel_requested;
    row.capture_requested = p.capture_requested;
    row.updated_at = p.updated_at;
    row.version = change.expected_version + 1;
    if let Some(reference) = &change.payment_ref {
        row.payment_ref = Some(reference.clone());
    }
    Some(Loaded {
        row,
        progress,
        refunds: base.refunds.clone(),
        items: base.items.clone(),
    })
}

/// Stops a lease heartbeat when the step is done.
struct Heartbeat {
    stop: Arc<tokio::sync::Notify>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Heartbeat {
    /// Stops renewing and waits for a renewal in flight, so none lands
    /// after the step's outcome is recorded and the lease given back.
    async fn stop(mut self) {
        // `notify_one` keeps a permit if the task is not waiting right now.
        self.stop.notify_one();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.stop.notify_one();
    }
}
