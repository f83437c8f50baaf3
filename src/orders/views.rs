//! What clients and support staff see of orders and sagas, and the mapping
//! between order rows and the saga's [`OrderProgress`].

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Serialize;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

use super::{Loaded, Orders, OrdersError};
use crate::db::orders::{
    self as orders_db, OrderEventRow, OrderFilter, OrderItemRow, OrderRow, ProgressColumns,
    RefundRow, SagaColumns, SagaRow, SagaStepRow,
};
use crate::db::sagas as sagas_db;
use crate::domain::ids::{OrderId, UserId};
use crate::domain::order::{
    CaptureMode, OpenRefund, OrderProgress, OrderStatus, PaymentStatus, RefundStatus, SagaState,
    StepName, StockState,
};

/// The OpenAPI schema of a string that takes one of `values`.
pub fn string_enum<'a>(values: impl IntoIterator<Item = &'a str>) -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values))
        .into()
}

/// A saga's state as the API shows it: its stored state, or `stuck`.
pub fn saga_state() -> Schema {
    string_enum(SagaState::ALL.iter().map(|s| s.as_str()).chain(["stuck"]))
}

/// A saga step's status.
pub fn step_status() -> Schema {
    string_enum(["running", "succeeded", "failed"])
}

/// Which orders to list, newest first.
#[derive(Debug, Clone, Default)]
pub struct OrderQuery {
    /// Only this user's orders.
    pub owner: Option<UserId>,
    pub status: Option<OrderStatus>,
    /// Those older than this one (the page cursor).
    pub after: Option<OrderId>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ItemView {
    pub sku: String,
    pub name: String,
    pub quantity: i64,
    pub unit_price: i64,
    pub line_total: i64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PaymentView {
    pub provider: String,
    pub authorized: i64,
    pub captured: i64,
    pub refunded: i64,
    pub status: PaymentStatus,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ShippingView {
    pub carrier: Option<String>,
    pub tracking_number: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OrderView {
    #[schema(format = Uuid)]
    pub id: String,
    #[schema(value_type = String, format = Uuid)]
    pub user_id: UserId,
    pub status: OrderStatus,
    pub currency: String,
    pub items: Vec<ItemView>,
    pub total: i64,
    pub payment: PaymentView,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shipping: Option<ShippingView>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl OrderView {
    /// The view of a stored order; a column the engine cannot read is an
    /// error (500, a data fault), never a guess.
    pub fn new(row: OrderRow, items: Vec<OrderItemRow>) -> Result<OrderView, OrdersError> {
        let status = read(&row.status, OrderStatus::parse, "status")?;
        let payment_status = read(&row.payment_status, PaymentStatus::parse, "payment_status")?;
        let user_id = read(&row.user_id, UserId::parse, "user_id")?;
        let shipping =
            (row.carrier.is_some() || row.tracking_number.is_some()).then(|| ShippingView {
                carrier: row.carrier.clone(),
                tracking_number: row.tracking_number.clone(),
            });
        Ok(OrderView {
            items: items
                .into_iter()
                .map(|i| ItemView {
                    sku: i.sku,
                    name: i.name,
                    quantity: i.quantity,
                    unit_price: i.unit_price,
                    line_total: i.line_total,
                })
                .collect(),
            payment: PaymentView {
                provider: row.payment_provider,
                authorized: row.authorized,
                captured: row.captured,
                refunded: row.refunded,
                status: payment_status,
            },
            shipping,
            id: row.id,
            user_id,
            status,
            currency: row.currency,
            total: row.total,
            created_at: row.created_at.and_utc(),
            updated_at: row.updated_at.and_utc(),
        })
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RefundView {
    #[schema(format = Uuid)]
    pub id: String,
    #[schema(format = Uuid)]
    pub order_id: String,
    pub amount: i64,
    pub reason: Option<String>,
    pub status: RefundStatus,
    pub created_at: DateTime<Utc>,
}

impl TryFrom<RefundRow> for RefundView {
    type Error = OrdersError;

    fn try_from(r: RefundRow) -> Result<Self, OrdersError> {
        Ok(RefundView {
            status: read(&r.status, RefundStatus::parse, "refunds.status")?,
            id: r.id,
            order_id: r.order_id,
            amount: r.amount,
            reason: r.reason,
            created_at: r.created_at.and_utc(),
        })
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OrderEventView {
    #[schema(format = Uuid)]
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub from_status: Option<String>,
    pub to_status: String,
    /// `user:<id>`, `admin:<id>` or `system`.
    pub actor: String,
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

impl From<OrderEventRow> for OrderEventView {
    fn from(r: OrderEventRow) -> Self {
        OrderEventView {
            id: r.id,
            event_type: r.event_type,
            from_status: r.from_status,
            to_status: r.to_status,
            actor: r.actor,
            data: serde_json::from_str(&r.data).unwrap_or(serde_json::Value::Null),
            created_at: r.created_at.and_utc(),
        }
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StepView {
    #[schema(value_type = StepName)]
    pub name: String,
    #[schema(schema_with = step_status)]
    pub status: String,
    pub attempt: i32,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = Uuid)]
    pub refund_id: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ActorView {
    pub live: bool,
    pub mailbox_len: usize,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SagaView {
    #[schema(format = Uuid)]
    pub order_id: String,
    #[schema(schema_with = saga_state)]
    pub state: String,
    #[schema(value_type = Option<StepName>)]
    pub current_step: Option<String>,
    pub started_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub steps: Vec<StepView>,
    pub compensations: Vec<StepView>,
    pub actor: ActorView,
}

/// The saga's state as clients see it: `stuck` when running but not
/// advanced for `sagas.stuck_after_s`.
fn visible_state(saga: &SagaRow, stuck_before: NaiveDateTime) -> String {
    if saga.state == SagaState::Running.as_str() && saga.updated_at < stuck_before {
        "stuck".to_owned()
    } else {
        saga.state.clone()
    }
}

fn step_view(s: SagaStepRow) -> StepView {
    StepView {
        duration_ms: s
            .finished_at
            .map(|f| (f - s.started_at).num_milliseconds().max(0)),
        name: s.name,
        status: s.status,
        attempt: s.attempt,
        started_at: s.started_at.and_utc(),
        finished_at: s.finished_at.map(|f| f.and_utc()),
        refund_id: (!s.ref_id.is_empty()).then_some(s.ref_id),
        error: s.error,
    }
}

/// A stored column for a view: unreadable is a data fault, answered 500.
fn read<T>(value: &str, parse: fn(&str) -> Option<T>, column: &str) -> Result<T, OrdersError> {
    parse(value).ok_or_else(|| {
        OrdersError::from(diesel::result::Error::DeserializationError(
            format!("unreadable order column {column}: {value:?}").into(),
        ))
    })
}

fn parse<T>(value: &str, parse: fn(&str) -> Option<T>, column: &str) -> Result<T, OrdersError> {
    parse(value).ok_or_else(|| {
        OrdersError::Unavailable(format!("unreadable order column {column}: {value:?}"))
    })
}

pub(super) fn progress_of(
    row: &OrderRow,
    refunds: &[RefundRow],
) -> Result<OrderProgress, OrdersError> {
    let capture_mode = match row.capture_mode.as_str() {
        "manual" => CaptureMode::Manual,
        _ => CaptureMode::Automatic,
    };
    let open_refunds = refunds
        .iter()
        .map(|r| {
            Ok(OpenRefund {
                id: r.id.clone(),
                amount: r.amount,
                status: parse(&r.status, RefundStatus::parse, "refunds.status")?,
                restock_pending: !r.restock_done,
            })
        })
        .collect::<Result<Vec<_>, OrdersError>>()?;
    Ok(OrderProgress {
        status: parse(&row.status, OrderStatus::parse, "status")?,
        payment: parse(&row.payment_status, PaymentStatus::parse, "payment_status")?,
        stock: parse(&row.stock_state, StockState::parse, "stock_state")?,
        capture_mode,
        total: row.total,
        authorized: row.authorized,
        captured: row.captured,
        refunded: row.refunded,
        cancel_requested: row.cancel_requested,
        capture_requested: row.capture_requested,
        open_refunds,
        failed: false,
    })
}

pub(super) fn progress_columns(p: &OrderProgress, now: NaiveDateTime) -> ProgressColumns {
    ProgressColumns {
        status: p.status.as_str().to_owned(),
        payment_status: p.payment.as_str().to_owned(),
        stock_state: p.stock.as_str().to_owned(),
        authorized: p.authorized,
        captured: p.captured,
        refunded: p.refunded,
        cancel_requested: p.cancel_requested,
        capture_requested: p.capture_requested,
        updated_at: now,
    }
}

pub(super) fn saga_columns(
    p: &OrderProgress,
    current_step: Option<String>,
    now: NaiveDateTime,
) -> SagaColumns {
    let state = p.saga_state();
    SagaColumns {
        state: state.as_str().to_owned(),
        current_step,
        parked: false,
        updated_at: now,
        finished_at: Some((state != SagaState::Running).then_some(now)),
        lease_owner: None,
        lease_expires_at: None,
    }
}

impl Orders {
    pub(super) async fn load(&self, order_id: &str) -> Result<Option<Loaded>, OrdersError> {
        let mut conn = self.inner.db.conn().await?;
        let Some(row) = orders_db::find(&mut conn, order_id).await? else {
            return Ok(None);
        };
        let refunds = orders_db::open_refunds(&mut conn, order_id).await?;
        let mut items = orders_db::items(&mut conn, order_id).await?;
        // In SKU order as Rust compares (the database's collation may not):
        // the order in which the saga takes holds, here and at placement.
        items.sort_by(|a, b| a.sku.cmp(&b.sku));
        let mut progress = progress_of(&row, &refunds)?;
        if let Some(saga) = sagas_db::find(&mut conn, order_id).await? {
            progress.failed = saga.state == SagaState::Failed.as_str();
        }
        Ok(Some(Loaded {
            row,
            progress,
            refunds,
            items,
        }))
    }

    /// The order's owner, or `NotFound`.
    pub async fn owner_of(&self, order_id: &OrderId) -> Result<UserId, OrdersError> {
        let mut conn = self.inner.db.conn().await?;
        let row = orders_db::find(&mut conn, &order_id.to_string())
            .await?
            .ok_or(OrdersError::NotFound)?;
        read(&row.user_id, UserId::parse, "user_id")
    }

    pub async fn refund(&self, refund_id: &str) -> Result<RefundView, OrdersError> {
        let mut conn = self.inner.db.conn().await?;
        let row = orders_db::find_refund(&mut conn, refund_id)
            .await?
            .ok_or(OrdersError::NotFound)?;
        RefundView::try_from(row)
    }

    pub async fn view(&self, order_id: &OrderId) -> Result<OrderView, OrdersError> {
        self.view_stored(&order_id.to_string()).await
    }

    /// The view of the order stored under `order_id`.
    pub(super) async fn view_stored(&self, order_id: &str) -> Result<OrderView, OrdersError> {
        let mut conn = self.inner.db.conn().await?;
        let row = orders_db::find(&mut conn, order_id)
            .await?
            .ok_or(OrdersError::NotFound)?;
        let mut items = orders_db::items(&mut conn, order_id).await?;
        // In SKU order as Rust compares (the database's collation may not):
        // the order in which the saga takes holds, here and at placement.
        items.sort_by(|a, b| a.sku.cmp(&b.sku));
        OrderView::new(row, items)
    }

    pub async fn list(
        &self,
        query: &OrderQuery,
        limit: i64,
    ) -> Result<Vec<OrderView>, OrdersError> {
        let filter = OrderFilter {
            user_id: query.owner.map(|u| u.to_string()),
            status: query.status.map(|s| s.as_str().to_owned()),
            after: query.after.map(|o| o.to_string()),
        };
        let mut conn = self.inner.db.conn().await?;
        let rows = orders_db::list(&mut conn, &filter, limit).await?;
        let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
        let mut items: std::collections::HashMap<String, Vec<OrderItemRow>> =
            std::collections::HashMap::new();
        for item in orders_db::items_of(&mut conn, &ids).await? {
            items.entry(item.order_id.clone()).or_default().push(item);
        }
        rows.into_iter()
            .map(|row| {
                let mine = items.remove(&row.id).unwrap_or_default();
                OrderView::new(row, mine)
            })
            .collect()
    }

    pub async fn events(&self, order_id: &OrderId) -> Result<Vec<OrderEventView>, OrdersError> {
        let mut conn = self.inner.db.conn().await?;
        Ok(orders_db::audit_trail(&mut conn, &order_id.to_string())
            .await?
            .into_iter()
            .map(OrderEventView::from)
            .collect())
    }

    /// Details recorded with the order's rejection: the items short of stock.
    pub async fn rejection_details(
        &self,
        order_id: &OrderId,
    ) -> Result<serde_json::Value, OrdersError> {
        let events = self.events(order_id).await?;
        Ok(events
            .into_iter()
            .rev()
            .find(|e| e.event_type == "order.rejected")
            .map(|e| e.data)
            .unwrap_or_else(|| serde_json::json!({"items": []})))
    }

    pub async fn saga(&self, order_id: &OrderId) -> Result<SagaView, OrdersError> {
        self.saga_stored(&order_id.to_string()).await
    }

    async fn saga_stored(&self, order_id: &str) -> Result<SagaView, OrdersError> {
        let mut conn = self.inner.db.conn().await?;
        let saga = sagas_db::find(&mut conn, order_id)
            .await?
            .ok_or(OrdersError::NotFound)?;
        let rows = sagas_db::steps(&mut conn, order_id).await?;
        drop(conn);
        let (compensations, steps): (Vec<_>, Vec<_>) = rows
            .into_iter()
            .partition(|s| StepName::parse(&s.name).is_some_and(StepName::is_compensation));
        let stuck_before = (Utc::now() - self.inner.policy.stuck_after).naive_utc();
        Ok(SagaView {
            state: visible_state(&saga, stuck_before),
            order_id: saga.order_id,
            current_step: saga.current_step,
            started_at: saga.started_at.and_utc(),
            updated_at: saga.updated_at.and_utc(),
            finished_at: saga.finished_at.map(|f| f.and_utc()),
            steps: steps.into_iter().map(step_view).collect(),
            compensations: compensations.into_iter().map(step_view).collect(),
            actor: ActorView {
                live: self.inner.actors.is_live(order_id),
                mailbox_len: self.inner.actors.mailbox_len(order_id),
            },
        })
    }

    /// Sagas by state (`stuck` included), newest first.
    pub async fn sagas(
        &self,
        state: Option<&str>,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<SagaView>, OrdersError> {
        let stuck_before = (Utc::now() - self.inner.policy.stuck_after).naive_utc();
        let mut conn = self.inner.db.conn().await?;
        let rows = match state {
            Some("stuck") => {
                sagas_db::list(&mut conn, None, Some(stuck_before), after, limit).await?
            }
            other => sagas_db::list(&mut conn, other, None, after, limit).await?,
        };
        drop(conn);
        let mut views = Vec::with_capacity(rows.len());
        for row in rows {
            views.push(self.saga_stored(&row.order_id).await?);
        }
        // A running saga that is stuck is not listed as merely running.
        if state == Some("running") {
            views.retain(|v| v.state == "running");
        }
        Ok(views)
    }
}
