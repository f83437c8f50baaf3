//! Orders, carts and the checkout saga.
//!
//! [`Checkout`] turns a cart (or a list of lines) into an order; [`Carts`]
//! holds the carts in their actors; [`Orders`] is the orders' handle. Each order has a serial actor (see
//! `actors::serial`) that runs its saga and every command on it (cancel,
//! capture, refund, ship, deliver) one at a time. The saga's decisions are
//! the pure state machine of `domain::order`; this module executes its steps
//! (`steps`), persists each one before and after it runs (`db::orders`,
//! `db::sagas`), and claims sagas through leases so that with several engine
//! processes each saga runs in one of them (`recovery`).

pub mod carts;
pub mod checkout;
mod commands;
mod create;
mod drive;
mod recovery;
mod steps;
pub mod views;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use uuid::Uuid;

use crate::actors::serial::{ActorError, SerialPool};
use crate::catalog::Catalog;
use crate::config::{CaptureMode, Settings};
use crate::db::idempotency::Binding;
use crate::db::orders::{self as orders_db, OrderChange, OrderEventRow, RefundRow};
use crate::db::pipeline::{Admit, OrderWrite, Pipeline, Refusal, WriteError, WriteSet};
use crate::db::{Database, DbError};
use crate::domain::ids::{OrderId, UserId};
use crate::domain::order::{CommandError, OrderProgress, OrderStatus};
use crate::domain::FieldError;
use crate::inventory::Inventory;
use crate::payments::Payments;

pub use carts::{CartView, Carts, LineChange};
pub use checkout::{
    choose_engine, CartCheckout, Checkout, CheckoutEngine, CheckoutEngines, CheckoutOutcome, Wait,
};
pub use create::{created_records, LineInput, NewOrderRow, PaymentInput, PlaceOrder, PricedLine};
pub use views::{OrderView, RefundView, SagaView};

const KIND_ORDER: &str = "order_saga";

#[derive(Debug, thiserror::Error)]
pub enum OrdersError {
    #[error("no such order")]
    NotFound,
    #[error("invalid input")]
    Validation(Vec<FieldError>),
    #[error("the cart is empty")]
    EmptyCart,
    #[error("the cart was checked out as order {order_id}")]
    CartCheckedOut { order_id: String },
    #[error("cannot {action} an order that is {from}")]
    InvalidTransition {
        from: OrderStatus,
        action: &'static str,
    },
    #[error("the refund exceeds what can be refunded ({refundable})")]
    RefundExceedsCaptured { refundable: i64 },
    #[error("{0}")]
    Conflict(String),
    /// The request's idempotency key was taken over by a retry of it.
    #[error("the idempotency key is in use by a retry of this request")]
    IdempotencyKeyInUse,
    #[error("the order's actor is overloaded")]
    Overloaded,
    #[error("orders unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<diesel::result::Error> for OrdersError {
    fn from(e: diesel::result::Error) -> Self {
        OrdersError::Db(DbError::Query(e))
    }
}

impl From<ActorError> for OrdersError {
    fn from(e: ActorError) -> Self {
        match e {
            ActorError::Overloaded => OrdersError::Overloaded,
            ActorError::Unavailable(m) => OrdersError::Unavailable(m),
        }
    }
}

impl From<CommandError> for OrdersError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::InvalidTransition { from, action } => {
                OrdersError::InvalidTransition { from, action }
            }
            CommandError::RefundExceedsCaptured { refundable } => {
                OrdersError::RefundExceedsCaptured { refundable }
            }
        }
    }
}

/// Saga policy, from `sagas.*` and `payments.capture`.
#[derive(Debug, Clone)]
struct Policy {
    capture_mode: CaptureMode,
    max_attempts: u32,
    backoff: Duration,
    lease_ttl: chrono::Duration,
    stuck_after: chrono::Duration,
    recovery_interval: Duration,
    retry_parked_after: chrono::Duration,
    payment_timeout: Duration,
    default_currency: String,
}

#[derive(Clone)]
pub struct Orders {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    pipeline: Pipeline,
    inventory: Inventory,
    catalog: Catalog,
    payments: Payments,
    actors: SerialPool<Held>,
    policy: Policy,
    /// This process's name on the leases it takes.
    owner: String,
}

/// Who asked for a change, for the audit trail.
#[derive(Debug, Clone)]
pub enum Actor {
    User(UserId),
    Admin(UserId),
    System,
}

impl Actor {
    fn label(&self) -> String {
        match self {
            Actor::User(id) => format!("user:{id}"),
            Actor::Admin(id) => format!("admin:{id}"),
            Actor::System => "system".to_owned(),
        }
    }
}

/// A command on an existing order.
#[derive(Debug, Clone)]
pub enum Command {
    Cancel,
    Capture,
    Ship {
        carrier: Option<String>,
        tracking_number: Option<String>,
    },
    Deliver,
    Refund {
        amount: i64,
        reason: Option<String>,
        restock: Vec<(String, i64)>,
    },
}

impl Command {
    fn name(&self) -> &'static str {
        match self {
            Command::Cancel => "cancel",
            Command::Capture => "capture",
            Command::Ship { .. } => "ship",
            Command::Deliver => "deliver",
            Command::Refund { .. } => "refund",
        }
    }
}

/// What a command produced.
#[derive(Debug)]
pub enum CommandResult {
    Order(OrderView),
    Refund(RefundView),
}

impl Orders {
    /// Starts the order actors and the recovery loop. Must run inside the
    /// actix system, like [`Inventory::start`].
    pub fn start(
        db: Database,
        pipeline: Pipeline,
        inventory: Inventory,
        catalog: Catalog,
        payments: Payments,
        settings: &Settings,
    ) -> Orders {
        let policy = Policy {
            capture_mode: settings.payments.capture,
            max_attempts: settings.sagas.max_step_attempts,
            backoff: Duration::from_millis(settings.sagas.retry_backoff_ms),
            lease_ttl: chrono::Duration::seconds(settings.sagas.lease_ttl_s as i64),
            stuck_after: chrono::Duration::seconds(settings.sagas.stuck_after_s as i64),
            recovery_interval: Duration::from_millis(settings.sagas.recovery_interval_ms),
            retry_parked_after: chrono::Duration::seconds(
                settings.sagas.retry_parked_after_s.min(i64::MAX as u64) as i64,
            ),
            payment_timeout: Duration::from_millis(settings.payments.timeout_ms),
            default_currency: settings.checkout.default_currency.clone(),
        };
        let actors = SerialPool::new(
            KIND_ORDER,
            inventory.arbiter_pool(),
            settings.actors.mailbox_capacity,
            Duration::from_secs(settings.actors.idle_timeout_s),
        );
        let orders = Orders {
            inner: Arc::new(Inner {
                db,
                pipeline,
                inventory,
                catalog,
                payments,
                actors,
                policy,
                owner: format!("orderflow-{}", Uuid::now_v7()),
            }),
        };
        orders.spawn_recovery();
        orders
    }

    /// Writes an order's placement or change through the write pipeline:
    /// `Ok(Err(refusal))` when one of its guards refused it (nothing of it
    /// was written).
    async fn write_order(
        &self,
        write: OrderWrite,
        admit: Admit,
    ) -> Result<Result<(), Refusal>, OrdersError> {
        match self
            .inner
            .pipeline
            .write(WriteSet::order(write), admit)
            .await
        {
            Ok(_) => Ok(Ok(())),
            Err(WriteError::Refused(refusal)) => Ok(Err(refusal)),
            Err(WriteError::Overloaded) => Err(OrdersError::Overloaded),
            // Unavailable as the database is: a saga's drive waits and goes on.
            Err(WriteError::Unavailable(cause)) => Err(DbError::Unavailable(cause).into()),
            Err(WriteError::Failed(cause)) => Err(DbError::Write(cause).into()),
        }
    }

    pub fn payments(&self) -> &Payments {
        &self.inner.payments
    }

    pub fn database(&self) -> &Database {
        &self.inner.db
    }

    pub fn catalog(&self) -> &Catalog {
        &self.inner.catalog
    }

    /// `payments.capture`.
    pub fn capture_mode(&self) -> CaptureMode {
        self.inner.policy.capture_mode
    }

    /// `payments.timeout_ms`: the bound on one provider call.
    pub fn payment_timeout(&self) -> Duration {
        self.inner.policy.payment_timeout
    }

    pub fn default_currency(&self) -> &str {
        &self.inner.policy.default_currency
    }

    /// Runs the order's saga in its actor until it finishes or parks.
    /// Also the "resume" of an admin when `unpark` is set.
    pub async fn run_saga(&self, order_id: &OrderId, unpark: bool) -> Result<(), OrdersError> {
        let this = self.clone();
        let id = order_id.to_string();
        self.inner
            .actors
            .run(&id.clone(), move |held: Held| {
                let (this, id) = (this.clone(), id.clone());
                async move {
                    let placed = held.0;
                    let end = this.drive_patiently(&id, unpark, placed).await;
                    (Held::default(), end.map(|_| ()))
                }
            })
            .await?
    }

    /// Hands a just-placed order to its actor, so that the saga's first
    /// drive starts from it without a claim or a read. Best effort: if the
    /// actor cannot take it (its mailbox is full), the drive reads the order.
    /// `leased_at` is when the lease the placement wrote began.
    pub(super) async fn hand_over(&self, loaded: Loaded, leased_at: std::time::Instant) {
        let id = loaded.row.id.clone();
        let placed = Placed {
            loaded,
            at: leased_at,
        };
        let handed = self
            .inner
            .actors
            .run(&id, move |_: Held| {
                let placed = placed.clone();
                async move { (Held(Some(Box::new(placed))), ()) }
            })
            .await;
        if let Err(e) = handed {
            tracing::debug!(order.id = %id, error = %e, "the new order's actor did not take it; its saga reads it");
        }
    }

    /// Runs a command in the order's actor, then the saga if the command
    /// gave it work.
    pub async fn command(
        &self,
        order_id: &OrderId,
        actor: Actor,
        command: Command,
        idempotency: Option<Binding>,
    ) -> Result<CommandResult, OrdersError> {
        let this = self.clone();
        let id = order_id.to_string();
        self.inner
            .actors
            .run(&id.clone(), move |_: Held| {
                let (this, id, actor, command, key) = (
                    this.clone(),
                    id.clone(),
                    actor.clone(),
                    command.clone(),
                    idempotency.clone(),
                );
                // A command reads the order as stored; what the actor held
                // is dropped.
                async move {
                    let result = this.apply_command(&id, &actor, command, key).await;
                    (Held::default(), result)
                }
            })
            .await?
    }

    /// An [`OrderChange`] for `loaded` that changes nothing yet.
    fn change_for(&self, loaded: &Loaded, now: chrono::NaiveDateTime) -> OrderChange {
        let mut change = OrderChange {
            order_id: loaded.row.id.clone(),
            expected_version: loaded.row.version,
            progress: views::progress_columns(&loaded.progress, now),
            payment_ref: None,
            shipping: None,
            payment: None,
            new_refund: None,
            refund_update: None,
            restocked: Vec::new(),
            audit: Vec::new(),
            outbox: Vec::new(),
            saga: views::saga_columns(&loaded.progress, None, now),
            steps: Vec::new(),
            lease: None,
            idempotency: None,
        };
        change.saga.current_step = None;
        change
    }

    fn set_progress(
        &self,
        change: &mut OrderChange,
        progress: &OrderProgress,
        now: chrono::NaiveDateTime,
    ) {
        let before = change.saga.state.clone();
        change.progress = views::progress_columns(progress, now);
        change.saga = views::saga_columns(progress, change.saga.current_step.clone(), now);
        if change.saga.state == before {
            // Still running, or still finished: when it finished stays as is.
            change.saga.finished_at = None;
        }
    }
}

/// What an order's actor holds between jobs: the order it has just placed,
/// for the saga's first drive. Any job takes it: the first drive uses it if
/// it is fresh, and every other job reads the order as stored.
#[derive(Default)]
pub(crate) struct Held(Option<Box<Placed>>);

/// An order as its placement committed it, and when its lease began.
#[derive(Clone)]
pub(crate) struct Placed {
    pub loaded: Loaded,
    pub at: std::time::Instant,
}

/// One order as the saga sees it.
#[derive(Clone)]
pub(crate) struct Loaded {
    pub row: orders_db::OrderRow,
    pub progress: OrderProgress,
    /// Refunds not finished, oldest first.
    pub refunds: Vec<RefundRow>,
    /// The order's lines, sorted by SKU.
    pub items: Vec<orders_db::OrderItemRow>,
}

/// One entry of an order's audit trail.
pub fn audit_row(
    order_id: &str,
    event_type: &str,
    from: OrderStatus,
    to: OrderStatus,
    actor: &Actor,
    data: serde_json::Value,
    now: chrono::NaiveDateTime,
) -> OrderEventRow {
    OrderEventRow {
        id: Uuid::now_v7().to_string(),
        order_id: order_id.to_owned(),
        event_type: event_type.to_owned(),
        from_status: Some(from.as_str().to_owned()),
        to_status: to.as_str().to_owned(),
        actor: actor.label(),
        data: data.to_string(),
        created_at: now,
    }
}

/// The outbox payload of an order event.
pub fn event_payload(
    row: &orders_db::OrderRow,
    status: OrderStatus,
    data: serde_json::Value,
) -> serde_json::Value {
    json!({
        "order_id": row.id,
        "user_id": row.user_id,
        "status": status.as_str(),
        "total": row.total,
        "currency": row.currency,
        "data": data,
    })
}

/// A refusal an order's write cannot meet (a saga step carries no key nor
/// cart): a fault.
fn unexpected(refusal: Refusal) -> OrdersError {
    OrdersError::Db(DbError::Write(format!("unexpected refusal: {refusal}")))
}
