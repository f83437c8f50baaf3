//! Queries on orders, their items, payments, refunds and audit trail, and
//! the two writes the write pipeline makes of them: a new order
//! ([`write_new_order!`](crate::write_new_order)) and a change of an
//! existing one ([`write_order_change!`], guarded by the order's version).

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::idempotency::Binding;
use super::outbox::NewOutboxRow;
use super::schema::{order_events, order_items, orders, payments, refunds, saga_steps, sagas};
use super::DbConn;

mod change;
mod create;
use crate::with_conn;
pub(crate) use change::write_order_change;
pub use create::{CreateError, NewOrder};

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = orders, treat_none_as_default_value = false)]
pub struct OrderRow {
    pub id: String,
    pub user_id: String,
    pub cart_id: Option<String>,
    pub status: String,
    pub currency: String,
    pub total: i64,
    pub payment_provider: String,
    pub payment_token: String,
    pub payment_ref: Option<String>,
    pub capture_mode: String,
    pub payment_status: String,
    pub authorized: i64,
    pub captured: i64,
    pub refunded: i64,
    pub stock_state: String,
    pub cancel_requested: bool,
    pub capture_requested: bool,
    pub carrier: Option<String>,
    pub tracking_number: Option<String>,
    pub version: i64,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = order_items)]
pub struct OrderItemRow {
    pub order_id: String,
    pub sku: String,
    pub name: String,
    pub quantity: i64,
    pub unit_price: i64,
    pub line_total: i64,
    pub restocked: i64,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = refunds, treat_none_as_default_value = false)]
pub struct RefundRow {
    pub id: String,
    pub order_id: String,
    pub amount: i64,
    pub reason: Option<String>,
    pub status: String,
    /// JSON `[{"sku": .., "quantity": ..}]`.
    pub restock: String,
    pub restock_done: bool,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = order_events, treat_none_as_default_value = false)]
pub struct OrderEventRow {
    pub id: String,
    pub order_id: String,
    pub event_type: String,
    pub from_status: Option<String>,
    pub to_status: String,
    pub actor: String,
    pub data: String,
    pub created_at: NaiveDateTime,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = payments, treat_none_as_default_value = false)]
pub struct PaymentRow {
    pub id: String,
    pub order_id: String,
    pub operation: String,
    pub idempotency_key: String,
    pub amount: i64,
    pub status: String,
    pub provider_ref: Option<String>,
    pub created_at: NaiveDateTime,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = sagas, treat_none_as_default_value = false)]
pub struct SagaRow {
    pub order_id: String,
    pub state: String,
    pub current_step: Option<String>,
    pub parked: bool,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<NaiveDateTime>,
    pub started_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    pub finished_at: Option<NaiveDateTime>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = saga_steps, treat_none_as_default_value = false)]
pub struct SagaStepRow {
    pub id: String,
    pub order_id: String,
    pub name: String,
    pub kind: String,
    pub ref_id: String,
    pub status: String,
    pub attempt: i32,
    pub error: Option<String>,
    pub started_at: NaiveDateTime,
    pub finished_at: Option<NaiveDateTime>,
}

/// The order columns the saga and the commands move.
#[derive(Debug, Clone, AsChangeset)]
#[diesel(table_name = orders)]
pub struct ProgressColumns {
    pub status: String,
    pub payment_status: String,
    pub stock_state: String,
    pub authorized: i64,
    pub captured: i64,
    pub refunded: i64,
    pub cancel_requested: bool,
    pub capture_requested: bool,
    pub updated_at: NaiveDateTime,
}

/// Changes to the saga row that go with an order change. A `None` leaves
/// its column as it is (a command keeps the saga's current step and lease);
/// `Some(None)` clears it (`finished_at` of a finished saga reopened by a
/// refund; the lease of a saga whose last step was recorded).
#[derive(Debug, Clone, AsChangeset)]
#[diesel(table_name = sagas)]
pub struct SagaColumns {
    pub state: String,
    pub current_step: Option<String>,
    pub parked: bool,
    pub updated_at: NaiveDateTime,
    pub finished_at: Option<Option<NaiveDateTime>>,
    pub lease_owner: Option<Option<String>>,
    pub lease_expires_at: Option<Option<NaiveDateTime>>,
}

/// A step's record, written with the step's outcome (or with the park after
/// its last failed attempt), never before it runs: the order actor counts
/// the attempts and keeps the last error in memory meanwhile. Upserted by
/// (order, name, ref_id): a step run again (after a park, a crash, or a
/// second refund's compensation with the same ref) adds its attempts to
/// the row's and keeps the row's first start.
#[derive(Debug, Clone)]
pub struct StepRecord {
    pub name: String,
    /// `step` or `compensation`.
    pub kind: &'static str,
    pub ref_id: String,
    /// `succeeded` or `failed`.
    pub status: &'static str,
    pub attempts: i32,
    pub error: Option<String>,
    pub started_at: NaiveDateTime,
}

/// Everything that changes together when an order moves.
#[derive(Debug, Clone)]
pub struct OrderChange {
    pub order_id: String,
    pub expected_version: i64,
    pub progress: ProgressColumns,
    pub payment_ref: Option<String>,
    pub shipping: Option<(Option<String>, Option<String>)>,
    pub payment: Option<PaymentRow>,
    pub new_refund: Option<RefundRow>,
    /// (refund id, new status, restock done)
    pub refund_update: Option<(String, String, bool)>,
    /// (sku, quantity put back)
    pub restocked: Vec<(String, i64)>,
    pub audit: Vec<OrderEventRow>,
    pub outbox: Vec<NewOutboxRow>,
    pub saga: SagaColumns,
    /// The records of the steps this change finishes.
    pub steps: Vec<StepRecord>,
    /// For a saga step: the lease owner. The change applies only while the
    /// saga's lease names this owner: a lease that ran out but that nobody
    /// else took is still ours (taking it over always changes the owner).
    pub lease: Option<String>,
    /// For a command sent with an idempotency key: the key, bound in this
    /// transaction to the resource the command moved or created.
    pub idempotency: Option<KeyBinding>,
}

/// An idempotency key and the resource to bind to it: (`"order"` or
/// `"refund"`, id).
#[derive(Debug, Clone)]
pub struct KeyBinding {
    pub key: Binding,
    pub resource_type: &'static str,
    pub resource_id: String,
}

/// Why [`write_order_change!`] wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// The order moved since it was read (another process, or a retry).
    #[error("the order changed concurrently")]
    Stale,
    /// The saga's lease is no longer this process's.
    #[error("the saga's lease was lost")]
    LeaseLost,
    /// The request's idempotency key was taken over by a retry.
    #[error("the idempotency key was taken over")]
    KeyLost,
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
}

pub async fn find(conn: &mut DbConn, id: &str) -> QueryResult<Option<OrderRow>> {
    with_conn!(conn, |c| {
        orders::table
            .find(id)
            .select(OrderRow::as_select())
            .first(c)
            .await
            .optional()
    })
}

pub async fn items(conn: &mut DbConn, order_id: &str) -> QueryResult<Vec<OrderItemRow>> {
    with_conn!(conn, |c| {
        order_items::table
            .filter(order_items::order_id.eq(order_id))
            .order(order_items::sku.asc())
            .select(OrderItemRow::as_select())
            .load(c)
            .await
    })
}

/// Refunds not finished, oldest first: pending, or returned but with items
/// still to put back.
pub async fn open_refunds(conn: &mut DbConn, order_id: &str) -> QueryResult<Vec<RefundRow>> {
    with_conn!(conn, |c| {
        refunds::table
            .filter(refunds::order_id.eq(order_id))
            .filter(
                refunds::status.eq("pending").or(refunds::status
                    .eq("succeeded")
                    .and(refunds::restock_done.eq(false))),
            )
            .order(refunds::id.asc())
            .select(RefundRow::as_select())
            .load(c)
            .await
    })
}

pub async fn find_refund(conn: &mut DbConn, id: &str) -> QueryResult<Option<RefundRow>> {
    with_conn!(conn, |c| {
        refunds::table
            .find(id)
            .select(RefundRow::as_select())
            .first(c)
            .await
            .optional()
    })
}

/// The provider reference of the order's successful payment operation.
pub async fn payment_reference(
    conn: &mut DbConn,
    order_id: &str,
    operation: &str,
) -> QueryResult<Option<String>> {
    with_conn!(conn, |c| {
        payments::table
            .filter(payments::order_id.eq(order_id))
            .filter(payments::operation.eq(operation))
            .filter(payments::status.eq("succeeded"))
            .select(payments::provider_ref)
            .first::<Option<String>>(c)
            .await
            .optional()
            .map(Option::flatten)
    })
}

pub async fn payment_rows(conn: &mut DbConn, order_id: &str) -> QueryResult<Vec<PaymentRow>> {
    with_conn!(conn, |c| {
        payments::table
            .filter(payments::order_id.eq(order_id))
            .order(payments::created_at.asc())
            .select(PaymentRow::as_select())
            .load(c)
            .await
    })
}

pub async fn audit_trail(conn: &mut DbConn, order_id: &str) -> QueryResult<Vec<OrderEventRow>> {
    with_conn!(conn, |c| {
        order_events::table
            .filter(order_events::order_id.eq(order_id))
            .order(order_events::id.asc())
            .select(OrderEventRow::as_select())
            .load(c)
            .await
    })
}

/// Filters of the order listing.
#[derive(Debug, Default, Clone)]
pub struct OrderFilter {
    pub user_id: Option<String>,
    pub status: Option<String>,
    pub after: Option<String>,
}

/// Orders newest first (ids are UUIDv7, so id order is creation order).
pub async fn list(
    conn: &mut DbConn,
    filter: &OrderFilter,
    limit: i64,
) -> QueryResult<Vec<OrderRow>> {
    with_conn!(conn, |c| {
        let mut query = orders::table
            .select(OrderRow::as_select())
            .order(orders::id.desc())
            .limit(limit)
            .into_boxed();
        if let Some(user) = &filter.user_id {
            query = query.filter(orders::user_id.eq(user));
        }
        if let Some(status) = &filter.status {
            query = query.filter(orders::status.eq(status));
        }
        if let Some(after) = &filter.after {
            query = query.filter(orders::id.lt(after));
        }
        query.load(c).await
    })
}

/// Items of many orders at once, for listings.
pub async fn items_of(conn: &mut DbConn, order_ids: &[String]) -> QueryResult<Vec<OrderItemRow>> {
    with_conn!(conn, |c| {
        order_items::table
            .filter(order_items::order_id.eq_any(order_ids))
            .order((order_items::order_id.asc(), order_items::sku.asc()))
            .select(OrderItemRow::as_select())
            .load(c)
            .await
    })
}

/// The status of every order, for invariant checks in tests and benches.
pub async fn statuses(conn: &mut DbConn) -> QueryResult<Vec<(String, String)>> {
    with_conn!(conn, |c| {
        orders::table
            .select((orders::id, orders::status))
            .load(c)
            .await
    })
}
