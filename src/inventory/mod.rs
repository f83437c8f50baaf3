//! Inventory: one actor per SKU owns its stock and holds, behind the
//! [`Inventory`] handle the rest of the engine uses.
//!
//! The SKU actor ([`sku_actor`]) decides every operation from its in-memory
//! stock and group-commits them ([`batch`]); reservations carry an expiry,
//! released by the actor's own timer and by a sweeper that wakes actors of
//! SKUs with expired holds. Actors run on the runtime's arbiters
//! (`crate::actors`), which restart them on demand. Mailboxes are bounded: a
//! full one is an immediate [`InventoryError::Overloaded`], never a queue
//! without end and never a hang.

pub mod batch;
mod sku_actor;
pub mod stoq;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::actors::driven::{DrivenActors, SendFailure};
use crate::actors::mailbox::Mailboxes;
use crate::actors::registry::ArbiterPool;
use crate::cache::ProductCache;
use crate::config::{ActorSettings, InventorySettings, MAX_RESERVATION_TTL_S};
use crate::db::events::NewEventRow;
use crate::db::pipeline::Pipeline;
use crate::db::{inventory as inventory_db, Database};
use crate::domain::inventory::{Reservation, Sku, StockError, StockOp, StockOutcome};
use sku_actor::{SkuActor, SkuMessage, SkuReply, SkuRequest};

pub use batch::LoadError as StockLoadError;
pub use sku_actor::SkuSnapshot;

/// What an event-driven restock did.
#[derive(Debug, Clone)]
pub enum EventRestock {
    Applied(SkuSnapshot),
    /// The event had been recorded before: acknowledged, not applied again.
    Duplicate,
}

const KIND_SKU: &str = "inventory_sku";
/// Sends of one request before giving up, when actors keep stopping under it.
const SEND_ATTEMPTS: usize = 3;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InventoryError {
    #[error("no such SKU")]
    UnknownSku,
    #[error("out of stock: requested {requested}, available {available}")]
    OutOfStock { requested: i64, available: i64 },
    #[error("no reservation for order {order_id}")]
    ReservationNotFound { order_id: Uuid },
    #[error("on_hand {on_hand} + {delta} would fall below reserved {reserved}")]
    AdjustmentConflict {
        on_hand: i64,
        reserved: i64,
        delta: i64,
    },
    #[error("{field} {message}")]
    InvalidQuantity {
        field: &'static str,
        message: String,
    },
    #[error("the SKU's mailbox is full")]
    Overloaded,
    #[error("inventory unavailable: {0}")]
    Unavailable(String),
}

impl From<StockError> for InventoryError {
    fn from(e: StockError) -> Self {
        match e {
            StockError::OutOfStock {
                requested,
                available,
            } => InventoryError::OutOfStock {
                requested,
                available,
            },
            StockError::ReservationNotFound { order_id } => {
                InventoryError::ReservationNotFound { order_id }
            }
            StockError::AdjustmentConflict {
                on_hand,
                reserved,
                delta,
            } => InventoryError::AdjustmentConflict {
                on_hand,
                reserved,
                delta,
            },
            StockError::InvalidQuantity { field, message } => {
                InventoryError::InvalidQuantity { field, message }
            }
        }
    }
}

/// The engine's handle on inventory: one actor per SKU.
#[derive(Clone)]
pub struct Inventory {
    inner: Arc<InventoryInner>,
}

struct InventoryInner {
    db: Database,
    pipeline: Pipeline,
    cache: ProductCache,
    actors: DrivenActors<SkuActor>,
    mailboxes: Arc<Mailboxes>,
    idle_timeout: Duration,
    reservation_ttl: chrono::Duration,
    low_stock_threshold: i64,
}

impl Inventory {
    /// Starts the arbiters and the expiry sweeper. Must run inside an actix
    /// system (the engine's main, or a test's).
    pub fn start(
        db: Database,
        pipeline: Pipeline,
        cache: ProductCache,
        actors: &ActorSettings,
        inventory: &InventorySettings,
    ) -> Inventory {
        let pool = ArbiterPool::new(actors.arbiters());
        let handle = Inventory {
            inner: Arc::new(InventoryInner {
                db,
                pipeline,
                cache,
                actors: DrivenActors::new(KIND_SKU, pool, actors.mailbox_capacity),
                mailboxes: Mailboxes::new(actors.mailbox_capacity),
                idle_timeout: Duration::from_secs(actors.idle_timeout_s),
                // Bounded by validation; clamped here too so no setting can
                // make the duration arithmetic overflow.
                reservation_ttl: chrono::Duration::seconds(
                    inventory.reservation_ttl_s.min(MAX_RESERVATION_TTL_S) as i64,
                ),
                low_stock_threshold: inventory.low_stock_threshold,
            }),
        };
        handle.spawn_sweeper(Duration::from_millis(inventory.expiry_sweep_interval_ms));
        handle
    }

    /// Reserves `quantity` of `sku` for `order_id` until the reservation TTL.
    /// Retrying for the same order returns the existing reservation.
    pub async fn reserve(
        &self,
        sku: &Sku,
        order_id: Uuid,
        quantity: i64,
    ) -> Result<Reservation, InventoryError> {
        let op = StockOp::Reserve {
            reservation_id: Uuid::now_v7(),
            order_id,
            quantity,
            expires_at: Utc::now() + self.inner.reservation_ttl,
        };
        match self.op(sku, op).await? {
            StockOutcome::Reserved(r) | StockOutcome::AlreadyReserved(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    /// Turns the order's reservation into sold stock.
    pub async fn commit(&self, sku: &Sku, order_id: Uuid) -> Result<Reservation, InventoryError> {
        match self.op(sku, StockOp::Commit { order_id }).await? {
            StockOutcome::Committed(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    /// Releases the order's reservation; `None` if it held none.
    pub async fn release(
        &self,
        sku: &Sku,
        order_id: Uuid,
    ) -> Result<Option<Reservation>, InventoryError> {
        match self.op(sku, StockOp::Release { order_id }).await? {
            StockOutcome::Released(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    pub async fn restock(
        &self,
        sku: &Sku,
        quantity: i64,
        note: Option<String>,
    ) -> Result<SkuSnapshot, InventoryError> {
        self.op_with_snapshot(sku, StockOp::Restock { quantity, note })
            .await
    }

    /// Restocks as asked by an external event, recording the event in the
    /// same transaction: a redelivered event is acknowledged, not applied.
    pub async fn restock_for_event(
        &self,
        sku: &Sku,
        quantity: i64,
        note: Option<String>,
        event: NewEventRow,
    ) -> Result<EventRestock, InventoryError> {
        let request = SkuRequest::ExternalOp(StockOp::Restock { quantity, note }, event);
        match self.call(sku.as_str(), request, true).await? {
            Some(SkuReply::Outcome(_, Some(snapshot))) => Ok(EventRestock::Applied(snapshot)),
            Some(SkuReply::Duplicate) => Ok(EventRestock::Duplicate),
            _ => Err(InventoryError::Unavailable("unexpected reply".to_owned())),
        }
    }

    pub async fn adjust(
        &self,
        sku: &Sku,
        delta: i64,
        reason: String,
    ) -> Result<SkuSnapshot, InventoryError> {
        self.op_with_snapshot(sku, StockOp::Adjust { delta, reason })
            .await
    }

    /// The SKU as its actor last committed it.
    pub async fn snapshot(&self, sku: &Sku) -> Result<SkuSnapshot, InventoryError> {
        match self.call(sku.as_str(), SkuRequest::Get, true).await? {
            Some(SkuReply::Snapshot(s)) => Ok(s),
            _ => Err(InventoryError::Unavailable("unexpected reply".to_owned())),
        }
    }

    /// The SKU as the database has it, which every engine process writes
    /// through; not as this process's actor holds it.
    pub async fn stored(&self, sku: &Sku) -> Result<SkuSnapshot, StockLoadError> {
        let committed = batch::load(&self.inner.db, sku.as_str()).await?;
        Ok(sku_actor::snapshot_of(sku.as_str(), &committed))
    }

    /// Whether the ledger has a restock of `sku` noted `note`: restocks that
    /// must happen once (giving an order's line back) are noted uniquely.
    pub async fn restocked_with_note(
        &self,
        sku: &str,
        note: &str,
    ) -> Result<bool, crate::db::DbError> {
        let mut conn = self.inner.db.conn().await?;
        Ok(inventory_db::movement_exists(&mut conn, sku, "restock", None, Some(note)).await?)
    }

    /// Whether the ledger records `order_id`'s hold on `sku` as sold.
    pub async fn sold_to(&self, sku: &str, order_id: &str) -> Result<bool, crate::db::DbError> {
        let mut conn = self.inner.db.conn().await?;
        Ok(inventory_db::movement_exists(&mut conn, sku, "commit", Some(order_id), None).await?)
    }

    /// The arbiters the SKU actors run on, for other kinds of actors to share.
    pub fn arbiter_pool(&self) -> Arc<ArbiterPool> {
        self.inner.actors.pool()
    }

    pub fn is_live(&self, sku: &Sku) -> bool {
        self.inner.actors.is_live(sku.as_str())
    }

    /// Drops this process's actor for `sku` (for instance one that found the
    /// SKU missing just before it was created); the next use starts afresh.
    pub fn forget(&self, sku: &Sku) {
        self.inner.actors.forget(sku.as_str());
    }

    async fn op(&self, sku: &Sku, op: StockOp) -> Result<StockOutcome, InventoryError> {
        match self.call(sku.as_str(), SkuRequest::Op(op), true).await? {
            Some(SkuReply::Outcome(outcome, _)) => Ok(outcome),
            _ => Err(InventoryError::Unavailable("unexpected reply".to_owned())),
        }
    }

    /// An operation whose answer carries the state right after it, from the
    /// same batch: no second request that could fail after the change applied.
    async fn op_with_snapshot(
        &self,
        sku: &Sku,
        op: StockOp,
    ) -> Result<SkuSnapshot, InventoryError> {
        match self.call(sku.as_str(), SkuRequest::Op(op), true).await? {
            Some(SkuReply::Outcome(_, Some(snapshot))) => Ok(snapshot),
            _ => Err(InventoryError::Unavailable("unexpected reply".to_owned())),
        }
    }

    /// Sends one message to the SKU's actor (starting it if needed) and waits
    /// for the answer. A full mailbox answers at once. A message that was
    /// dropped unhandled (its actor was stopping) is sent again to a fresh
    /// actor; one that was handled is never sent twice.
    async fn call(
        &self,
        sku: &str,
        request: SkuRequest,
        wait: bool,
    ) -> Result<Option<SkuReply>, InventoryError> {
        let _depth = DepthGuard::new();
        for _ in 0..SEND_ATTEMPTS {
            let Some(slot) = self.inner.mailboxes.take(sku) else {
                metrics::counter!("actor_mailbox_rejections_total", "kind" => KIND_SKU)
                    .increment(1);
                return Err(InventoryError::Overloaded);
            };
            let (tx, rx) = oneshot::channel();
            let handled = Arc::new(AtomicBool::new(false));
            let message = SkuMessage {
                request: request.clone(),
                reply: wait.then_some(tx),
                handled: handled.clone(),
                slot,
            };
            match self
                .inner
                .actors
                .try_send(sku, self.actor_factory(sku), message)
            {
                Ok(()) if !wait => return Ok(None),
                Ok(()) => match rx.await {
                    Ok(result) => return result.map(Some),
                    Err(_) if !handled.load(Ordering::SeqCst) => {
                        self.inner.actors.forget_if_stopped(sku);
                    }
                    Err(_) => {
                        return Err(InventoryError::Unavailable(
                            "the SKU actor stopped while handling the request".to_owned(),
                        ))
                    }
                },
                Err(SendFailure::Full) => {
                    metrics::counter!("actor_mailbox_rejections_total", "kind" => KIND_SKU)
                        .increment(1);
                    return Err(InventoryError::Overloaded);
                }
                // Stopped between lookup and send: the next lookup restarts it.
                Err(SendFailure::Closed) => {}
            }
        }
        Err(InventoryError::Unavailable(
            "the SKU actor could not be reached".to_owned(),
        ))
    }

    fn actor_factory(&self, sku: &str) -> impl FnOnce() -> SkuActor + Send + 'static {
        let (sku, db, pipeline, cache) = (
            sku.to_owned(),
            self.inner.db.clone(),
            self.inner.pipeline.clone(),
            self.inner.cache.clone(),
        );
        let (idle, threshold) = (self.inner.idle_timeout, self.inner.low_stock_threshold);
        move || SkuActor::new(sku, db, pipeline, cache, idle, threshold)
    }

    /// Every interval: forget stopped actors, and hand SKUs whose reservations
    /// have expired to their actors (starting them if they are not live, e.g.
    /// after a restart), so expiry never depends on an actor being awake.
    fn spawn_sweeper(&self, interval: Duration) {
        let weak = Arc::downgrade(&self.inner);
        crate::actors::spawn_local(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let Some(inner) = weak.upgrade() else { break };
                let inventory = Inventory { inner };
                inventory.inner.actors.prune();
                if let Err(e) = inventory.sweep_expired().await {
                    tracing::warn!(error = %e, "expiry sweep failed");
                }
            }
        });
    }

    async fn sweep_expired(&self) -> Result<(), crate::db::DbError> {
        let mut conn = self.inner.db.conn().await?;
        let skus =
            inventory_db::skus_with_expired_reservations(&mut conn, Utc::now().naive_utc(), 500)
                .await?;
        drop(conn);
        for sku in skus {
            let request = SkuRequest::Op(StockOp::Expire { now: Utc::now() });
            // Fire and forget: a full mailbox means the actor is busy and
            // its own timer will get to it.
            let _ = self.call(&sku, request, false).await;
        }
        Ok(())
    }
}

fn unexpected(outcome: StockOutcome) -> InventoryError {
    InventoryError::Unavailable(format!("unexpected inventory outcome {outcome:?}"))
}

/// Counts messages sent to SKU actors and not yet answered: the mailbox
/// depth of the kind, including the message being handled.
struct DepthGuard;

static DEPTH: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

impl DepthGuard {
    fn new() -> DepthGuard {
        let depth = DEPTH.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        metrics::gauge!("actor_mailbox_depth", "kind" => KIND_SKU).set(depth as f64);
        DepthGuard
    }
}

impl Drop for DepthGuard {
    fn drop(&mut self) {
        let depth = DEPTH.fetch_sub(1, std::sync::atomic::Ordering::Relaxed) - 1;
        metrics::gauge!("actor_mailbox_depth", "kind" => KIND_SKU).set(depth as f64);
    }
}
