//! Running a saga: decide the next step from the persisted progress, record
//! that it starts, run it, and record its outcome with every effect of it in
//! one transaction; repeat until nothing is left to do.
//!
//! A transient failure is retried with exponential backoff up to
//! `sagas.max_step_attempts`; then the saga parks: unfinished, visible as
//! `stuck`, resumable by an operator (and at the next start-up). The lease on
//! the saga is renewed before every attempt; a process that lost its lease
//! (it stalled past the TTL and another took over) stops at once.

use std::time::Instant;

use chrono::Utc;
use serde_json::json;

use super::steps::{StepError, StepResult};
use super::{audit_row, event_payload, Actor, Loaded, Orders, OrdersError};
use crate::db::orders::{self as orders_db, ChangeError, StepFinish};
use crate::db::outbox::NewOutboxRow;
use crate::db::sagas as sagas_db;
use crate::domain::order::{next_step, Outcome, SagaState, Step};

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
    pub(super) async fn drive(
        &self,
        order_id: &str,
        unpark: bool,
    ) -> Result<DriveEnd, OrdersError> {
        if !self.claim(order_id, unpark).await? {
            return Ok(DriveEnd::NotOwner);
        }
        loop {
            let loaded = self.load(order_id).await?.ok_or(OrdersError::NotFound)?;
            let Some(step) = next_step(&loaded.progress) else {
                self.finish(order_id).await?;
                return Ok(DriveEnd::Finished);
            };
            match self.run_step(&loaded, &step).await? {
                Some(end) => return Ok(end),
                None => continue,
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

    /// Runs one step to an outcome, retrying transient failures. `None`
    /// means the outcome is recorded and the saga goes on.
    async fn run_step(
        &self,
        loaded: &Loaded,
        step: &Step,
    ) -> Result<Option<DriveEnd>, OrdersError> {
        let order_id = loaded.row.id.as_str();
        let name = step.name();
        let ref_id = match step {
            Step::RefundPayment { refund_id, .. } => refund_id.clone(),
            Step::RestockInventory {
                refund_id: Some(id),
            } => id.clone(),
            _ => String::new(),
        };
        let max_attempts = self.inner.policy.max_attempts;
        let mut backoff = self.inner.policy.backoff;
        for _ in 0..max_attempts {
            if !self.claim(order_id, false).await? {
                return Ok(Some(DriveEnd::NotOwner));
            }
            let now = Utc::now().naive_utc();
            let (step_id, attempt) = match name {
                Some(name) => {
                    let kind = if name.is_compensation() {
                        "compensation"
                    } else {
                        "step"
                    };
                    let mut conn = self.inner.db.conn().await?;
                    let (id, attempt) = sagas_db::begin_step(
                        &mut conn,
                        order_id,
                        name.as_str(),
                        kind,
                        &ref_id,
                        now,
                    )
                    .await?;
                    (Some(id), attempt)
                }
                None => (None, 1),
            };
            let span = tracing::info_span!(
                "saga_step",
                order.id = order_id,
                step = name.map(|n| n.as_str()).unwrap_or("bookkeeping"),
                attempt
            );
            let started = Instant::now();
            let result = {
                let _entered = span.enter();
                self.execute(loaded, step, attempt).await
            };
            let step_label = name.map(|n| n.as_str()).unwrap_or("bookkeeping");
            metrics::histogram!("saga_step_duration_seconds", "step" => step_label)
                .record(started.elapsed().as_secs_f64());
            match result {
                Ok(result) => {
                    self.record(loaded, step, step_id, result).await?;
                    return Ok(None);
                }
                Err(StepError::Transient(message)) => {
                    tracing::warn!(order.id = order_id, step = step_label, attempt, error = %message, "saga step failed; will retry");
                    if let Some(id) = &step_id {
                        let mut conn = self.inner.db.conn().await?;
                        sagas_db::fail_attempt(&mut conn, id, &message, Utc::now().naive_utc())
                            .await?;
                    }
                    metrics::counter!("saga_step_failures_total", "step" => step_label)
                        .increment(1);
                    tokio::time::sleep(backoff).await;
                    backoff = backoff.saturating_mul(2);
                }
                Err(StepError::Db(e)) => return Err(e.into()),
            }
        }
        tracing::error!(order.id = order_id, step = ?name, "saga step kept failing; the saga is parked");
        metrics::counter!("sagas_stuck_total").increment(1);
        let mut conn = self.inner.db.conn().await?;
        sagas_db::park(&mut conn, order_id, &self.inner.owner).await?;
        Ok(Some(DriveEnd::Parked))
    }

    /// Writes a step's outcome and all its effects in one transaction. If
    /// the order moved meanwhile (a command from another process), the same
    /// outcome is applied to the fresh progress: the effect happened and
    /// must be recorded.
    async fn record(
        &self,
        loaded: &Loaded,
        step: &Step,
        step_id: Option<String>,
        result: StepResult,
    ) -> Result<(), OrdersError> {
        let order_id = loaded.row.id.as_str();
        let mut fresh: Option<Loaded> = None;
        for _ in 0..5 {
            let base = fresh.as_ref().unwrap_or(loaded);
            let before = base.progress.saga_state();
            let applied = base.progress.apply(step, &result.outcome);
            let now = Utc::now().naive_utc();
            let mut change = self.change_for(base, now);
            self.set_progress(&mut change, &applied.progress, now);
            change.saga.current_step = step.name().map(|n| n.as_str().to_owned());
            // A business refusal (decline, no stock) is a step that failed;
            // its compensations follow.
            let status = match result.outcome {
                Outcome::Done | Outcome::RefundOpened(_) => "succeeded",
                _ => "failed",
            };
            change.step = step_id.clone().map(|id| StepFinish {
                step_id: id,
                status,
                error: result.note.clone(),
            });
            change.payment_ref = result.payment_ref.clone();
            change.payment = result.payment.clone();
            change.new_refund = result.new_refund.clone();
            change.refund_update = result.refund_update.clone();
            change.restocked = result.restocked.clone();
            let status_changed = applied.progress.status != base.progress.status;
            for event in &applied.events {
                let data = result.data.clone();
                change.audit.push(audit_row(
                    order_id,
                    event.name,
                    base.progress.status,
                    applied.progress.status,
                    &Actor::System,
                    data.clone(),
                    now,
                ));
                if event.public {
                    change.outbox.push(NewOutboxRow::new(
                        event.name,
                        order_id,
                        &event_payload(&base.row, applied.progress.status, data),
                        now,
                    ));
                }
            }
            if status_changed && applied.events.is_empty() {
                change.audit.push(audit_row(
                    order_id,
                    "order.status_changed",
                    base.progress.status,
                    applied.progress.status,
                    &Actor::System,
                    json!({}),
                    now,
                ));
            }
            let mut conn = self.inner.db.conn().await?;
            match orders_db::commit_change(&mut conn, &change).await {
                Ok(()) => {
                    let after = applied.progress.saga_state();
                    if before == SagaState::Running && after != before {
                        let outcome = after.as_str();
                        metrics::counter!("sagas_finished_total", "state" => outcome).increment(1);
                    }
                    return Ok(());
                }
                Err(ChangeError::Stale) => {
                    fresh = Some(self.load(order_id).await?.ok_or(OrdersError::NotFound)?);
                }
                Err(ChangeError::Query(e)) => return Err(e.into()),
            }
        }
        Err(OrdersError::Unavailable(
            "the order kept changing while a step was recorded".to_owned(),
        ))
    }
}
