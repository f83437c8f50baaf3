//! The inventory SKU actor: owns on_hand, reserved and the active
//! reservations of one SKU and handles its messages one at a time.
//!
//! Group commit: while one database write is in flight, arriving operations
//! queue; when it finishes, the next write applies all of them in one
//! transaction (see `batch`) and then answers each. A failed write answers
//! every waiting caller with an error and reloads the state from the database.
//! A timer releases expired reservations; an idle actor stops, and the
//! registry starts a fresh one on demand.
//!
//! Every message that is handled gets an answer: the actor never stops while
//! it has queued work or a write in flight, and when it must stop (it cannot
//! load) it answers its queue first. A message that reaches a mailbox just as
//! the actor stops is dropped *unhandled*, which the sender sees and retries
//! with a fresh actor (see `Inventory::call`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::oneshot;

use super::batch::{self, Committed, LoadError, OpResult, RunError};
use super::InventoryError;
use crate::actors::driven::{Cx, Driven};
use crate::actors::mailbox::Slot;
use crate::cache::ProductCache;
use crate::db::events::NewEventRow;
use crate::db::pipeline::{Pipeline, WriteError};
use crate::db::Database;
use crate::domain::inventory::{Reservation, StockLevels, StockOp, StockOutcome};

/// What a caller sees of one SKU.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SkuSnapshot {
    pub sku: String,
    pub levels: StockLevels,
    pub version: i64,
    pub reservations: Vec<Reservation>,
}

#[derive(Clone)]
pub(super) enum SkuRequest {
    Op(StockOp),
    /// An operation asked for by an external event, recorded with it in one
    /// transaction so that a redelivered event is not applied twice.
    ExternalOp(StockOp, NewEventRow),
    Get,
}

pub(super) enum SkuReply {
    /// The outcome, with the state right after the batch for operations
    /// whose callers want it (restock, adjust).
    Outcome(StockOutcome, Option<SkuSnapshot>),
    Snapshot(SkuSnapshot),
    /// The external event was recorded before; nothing was applied.
    Duplicate,
}

pub(super) struct Pending {
    op: StockOp,
    reply: Option<Reply>,
    event: Option<NewEventRow>,
}

pub(super) type Reply = oneshot::Sender<Result<SkuReply, InventoryError>>;

pub(super) struct SkuMessage {
    pub request: SkuRequest,
    /// `None` for fire-and-forget work such as expiry sweeps.
    pub reply: Option<Reply>,
    /// Set when the actor starts handling the message; a message dropped
    /// unhandled (its actor was stopping) is safe to send again.
    pub handled: Arc<AtomicBool>,
    /// Its place in the bounded mailbox, given back once handled (or dropped).
    pub slot: Slot,
}

enum State {
    Loading,
    Ready(Committed),
    /// The SKU does not exist; the actor answers so and stops at its next tick.
    Missing,
}

pub(super) struct SkuActor {
    sku: String,
    db: Database,
    pipeline: Pipeline,
    cache: ProductCache,
    idle_timeout: Duration,
    low_stock_threshold: i64,
    state: State,
    queue: Vec<Pending>,
    writing: bool,
    last_activity: Instant,
}

impl SkuActor {
    pub fn new(
        sku: String,
        db: Database,
        pipeline: Pipeline,
        cache: ProductCache,
        idle_timeout: Duration,
        low_stock_threshold: i64,
    ) -> SkuActor {
        SkuActor {
            sku,
            db,
            pipeline,
            cache,
            idle_timeout,
            low_stock_threshold,
            state: State::Loading,
            queue: Vec::new(),
            writing: false,
            last_activity: Instant::now(),
        }
    }

    /// Loads (or reloads) the state; no message is handled meanwhile. Then
    /// carries on with whatever queued up.
    fn load(&mut self, cx: &mut Cx<'_, Self>) {
        self.state = State::Loading;
        let (db, sku) = (self.db.clone(), self.sku.clone());
        cx.wait(async move { Work::Loaded(batch::load(&db, &sku).await) });
    }

    fn loaded(&mut self, result: Result<Committed, LoadError>, cx: &mut Cx<'_, Self>) {
        match result {
            Ok(committed) => {
                self.state = State::Ready(committed);
                self.flush(cx);
            }
            Err(LoadError::UnknownSku) => {
                self.state = State::Missing;
                self.answer_queue(|| InventoryError::UnknownSku);
            }
            Err(e) => {
                tracing::error!(sku = %self.sku, error = %e, "could not load inventory; stopping the actor");
                let cause = e.to_string();
                self.answer_queue(|| InventoryError::Unavailable(cause.clone()));
                cx.stop();
            }
        }
    }

    /// Answers every queued operation with an error.
    fn answer_queue(&mut self, error: impl Fn() -> InventoryError) {
        for p in self.queue.drain(..) {
            send(p.reply, Err(error()));
        }
    }

    /// Starts the next group commit if none is in flight.
    fn flush(&mut self, cx: &mut Cx<'_, Self>) {
        if self.writing || self.queue.is_empty() {
            return;
        }
        let State::Ready(committed) = &self.state else {
            return;
        };
        // An external event's operation is committed alone, so that a
        // duplicate refuses only itself; other operations batch together.
        let take = match self.queue.iter().position(|p| p.event.is_some()) {
            Some(0) => 1,
            Some(first_external) => first_external,
            None => self.queue.len(),
        };
        let pending: Vec<Pending> = self.queue.drain(..take).collect();
        let ops: Vec<StockOp> = pending.iter().map(|p| p.op.clone()).collect();
        let event = pending.first().and_then(|p| p.event.clone());
        let (db, sku, current) = (self.db.clone(), self.sku.clone(), committed.clone());
        let pipeline = self.pipeline.clone();
        let cache = self.cache.clone();
        let threshold = self.low_stock_threshold;
        metrics::histogram!("inventory_batch_size").record(ops.len() as f64);
        metrics::counter!("inventory_batches_total").increment(1);
        self.writing = true;
        let started = Instant::now();
        cx.spawn(async move {
            let version_before = current.version;
            let result = batch::run(
                &db,
                &pipeline,
                &sku,
                current,
                &ops,
                threshold,
                event.as_ref(),
            )
            .await;
            // Cached product documents show availability: invalidate
            // before any caller hears that the write happened.
            if matches!(&result, Ok((committed, _)) if committed.version != version_before) {
                cache.invalidate(&sku).await;
            }
            Work::Written {
                pending,
                result,
                started,
            }
        });
    }

    fn written(
        &mut self,
        pending: Vec<Pending>,
        result: Result<(Committed, Vec<OpResult>), RunError>,
        started: Instant,
        cx: &mut Cx<'_, Self>,
    ) {
        self.writing = false;
        metrics::histogram!("inventory_batch_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        match result {
            Ok((committed, results)) => {
                answer(&self.sku, pending, results, &committed);
                let stale = committed.stale_levels.is_some();
                self.state = State::Ready(committed);
                if stale {
                    // The write committed but the state could not be
                    // re-read; read it before the next batch.
                    self.load(cx);
                    return;
                }
            }
            Err(RunError::Load(LoadError::UnknownSku)) => {
                self.state = State::Missing;
                for p in pending {
                    send(p.reply, Err(InventoryError::UnknownSku));
                }
                self.answer_queue(|| InventoryError::UnknownSku);
            }
            Err(RunError::DuplicateEvent) => {
                for p in pending {
                    send(p.reply, Ok(SkuReply::Duplicate));
                }
            }
            // Turned away before anything was written: the state stands.
            Err(RunError::Write(WriteError::Overloaded)) => {
                for p in pending {
                    send(p.reply, Err(InventoryError::Overloaded));
                }
            }
            Err(e) => {
                tracing::error!(sku = %self.sku, error = %e, "inventory write failed; reloading");
                for p in pending {
                    send(p.reply, Err(InventoryError::Unavailable(e.to_string())));
                }
                self.load(cx);
                return;
            }
        }
        self.flush(cx);
    }

    fn on_tick(&mut self, cx: &mut Cx<'_, Self>) {
        match &self.state {
            // Not remembered: the SKU may be created any moment.
            State::Missing => cx.stop(),
            State::Loading => {}
            State::Ready(committed) => {
                if committed
                    .stock
                    .next_expiry()
                    .is_some_and(|at| at <= Utc::now())
                {
                    self.queue.push(Pending {
                        op: StockOp::Expire { now: Utc::now() },
                        reply: None,
                        event: None,
                    });
                }
                if !self.queue.is_empty() {
                    self.flush(cx);
                } else if !self.writing && self.last_activity.elapsed() >= self.idle_timeout {
                    cx.stop();
                }
            }
        }
    }

    fn snapshot(&self, committed: &Committed) -> SkuSnapshot {
        snapshot_of(&self.sku, committed)
    }
}

pub(super) fn snapshot_of(sku: &str, committed: &Committed) -> SkuSnapshot {
    SkuSnapshot {
        sku: sku.to_owned(),
        levels: committed
            .stale_levels
            .unwrap_or_else(|| committed.stock.levels()),
        version: committed.version,
        reservations: committed.stock.reservations().cloned().collect(),
    }
}

fn answer(sku: &str, pending: Vec<Pending>, results: Vec<OpResult>, committed: &Committed) {
    for (Pending { op, reply, .. }, result) in pending.into_iter().zip(results) {
        if let Ok(StockOutcome::Expired(expired)) = &result {
            metrics::counter!("inventory_reservations_expired_total")
                .increment(expired.len() as u64);
        }
        // Restock and adjust callers get the state after their change in the
        // same answer, so that no second request can fail after it applied.
        let wants_snapshot = matches!(op, StockOp::Restock { .. } | StockOp::Adjust { .. });
        let reply_value = result
            .map(|outcome| {
                SkuReply::Outcome(outcome, wants_snapshot.then(|| snapshot_of(sku, committed)))
            })
            .map_err(InventoryError::from);
        send(reply, reply_value);
    }
}

fn send(reply: Option<Reply>, result: Result<SkuReply, InventoryError>) {
    if let Some(reply) = reply {
        // The caller may have given up waiting; that is not an error here.
        let _ = reply.send(result);
    }
}

/// Async work of the actor, reported back to it.
pub(super) enum Work {
    Loaded(Result<Committed, LoadError>),
    Written {
        pending: Vec<Pending>,
        result: Result<(Committed, Vec<OpResult>), RunError>,
        started: Instant,
    },
}

impl Driven for SkuActor {
    type Message = SkuMessage;
    type Done = Work;
    /// How often an actor looks at its own expiries and idleness.
    const TICK: Duration = Duration::from_millis(500);

    fn started(&mut self, cx: &mut Cx<'_, Self>) {
        self.load(cx);
    }

    fn done(&mut self, work: Work, cx: &mut Cx<'_, Self>) {
        match work {
            Work::Loaded(result) => self.loaded(result, cx),
            Work::Written {
                pending,
                result,
                started,
            } => self.written(pending, result, started, cx),
        }
    }

    fn tick(&mut self, cx: &mut Cx<'_, Self>) {
        self.on_tick(cx);
    }

    /// Never stop with work in hand: every handled message gets its answer.
    fn may_stop(&self) -> bool {
        !(self.writing || (!self.queue.is_empty() && matches!(self.state, State::Ready(_))))
    }

    fn handle(&mut self, msg: SkuMessage, cx: &mut Cx<'_, Self>) {
        // Out of the mailbox: its slot is free before any answer goes out.
        drop(msg.slot);
        msg.handled.store(true, Ordering::SeqCst);
        self.last_activity = Instant::now();
        match (&self.state, msg.request) {
            (State::Missing, _) => send(msg.reply, Err(InventoryError::UnknownSku)),
            // Not reachable while loads hold the mailbox (`Cx::wait`); kept
            // as an answer rather than a silent drop.
            (State::Loading, _) => send(
                msg.reply,
                Err(InventoryError::Unavailable(
                    "inventory is reloading".to_owned(),
                )),
            ),
            (State::Ready(committed), SkuRequest::Get) => {
                let snapshot = self.snapshot(committed);
                send(msg.reply, Ok(SkuReply::Snapshot(snapshot)));
            }
            (State::Ready(_), SkuRequest::Op(op)) => {
                self.queue.push(Pending {
                    op,
                    reply: msg.reply,
                    event: None,
                });
                self.flush(cx);
            }
            (State::Ready(_), SkuRequest::ExternalOp(op, event)) => {
                self.queue.push(Pending {
                    op,
                    reply: msg.reply,
                    event: Some(event),
                });
                self.flush(cx);
            }
        }
    }
}
