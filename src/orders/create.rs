//! Creating an order: validated lines, prices snapshotted, the saga row and
//! its lease, the audit trail's first entry and `order.created`, in one
//! transaction (and, for a checkout, with the cart marked checked out).

use chrono::{NaiveDateTime, Utc};
use serde_json::json;

use super::views::progress_of;
use super::{audit_row, event_payload, Actor, Loaded, Orders, OrdersError};
use crate::db::idempotency::Binding;
use crate::db::orders::{NewOrder, OrderEventRow, OrderItemRow, OrderRow, SagaRow};
use crate::db::outbox::NewOutboxRow;
use crate::db::pipeline::{Admit, OrderWrite, Refusal};
use crate::domain::ids::{OrderId, UserId};
use crate::domain::inventory::Sku;
use crate::domain::order::{
    order_total, OrderStatus, PaymentStatus, SagaState, StockState, MAX_LINES,
};
use crate::domain::FieldError;

/// How the customer pays.
#[derive(Debug, Clone)]
pub struct PaymentInput {
    pub token: String,
}

/// A line's product as the cart snapshotted it when the line was set.
#[derive(Debug, Clone)]
pub struct PricedLine {
    pub name: String,
    pub unit_price: i64,
    pub currency: String,
}

/// One line of a new order. Prices come from a cart (`priced`) or, for
/// `POST /orders`, from the catalog at the time of ordering.
#[derive(Debug, Clone)]
pub struct LineInput {
    pub sku: Sku,
    pub quantity: i64,
    pub priced: Option<PricedLine>,
}

#[derive(Debug, Clone)]
pub struct PlaceOrder {
    pub user_id: UserId,
    pub lines: Vec<LineInput>,
    pub payment: PaymentInput,
    /// The cart being checked out and the version it was read at.
    pub cart: Option<(String, i64)>,
    /// The idempotency key of the request, bound to the order as it is
    /// recorded.
    pub idempotency: Option<Binding>,
}

/// What a new order's row is made of; everything else starts empty.
#[derive(Debug, Clone)]
pub struct NewOrderRow {
    pub id: OrderId,
    pub user: UserId,
    pub cart_id: Option<String>,
    pub currency: String,
    pub total: i64,
    pub token: String,
    pub now: NaiveDateTime,
}

/// The first audit entry and the `order.created` event of a new order.
pub fn created_records(
    row: &OrderRow,
    items: &[OrderItemRow],
    actor: &Actor,
    now: NaiveDateTime,
) -> (OrderEventRow, NewOutboxRow) {
    let data = json!({
        "items": items.iter().map(|i| json!({"sku": i.sku, "quantity": i.quantity, "unit_price": i.unit_price})).collect::<Vec<_>>(),
        "cart_id": row.cart_id,
    });
    let mut audit = audit_row(
        &row.id,
        "order.created",
        OrderStatus::Pending,
        OrderStatus::Pending,
        actor,
        data.clone(),
        now,
    );
    audit.from_status = None;
    let outbox = NewOutboxRow::new(
        "order.created",
        &row.id,
        &event_payload(row, OrderStatus::Pending, data),
        now,
    );
    (audit, outbox)
}

impl Orders {
    /// A new order's row: `pending`, paid with this engine's provider under
    /// its capture mode, nothing paid or held yet.
    pub fn pending_row(&self, new: NewOrderRow) -> OrderRow {
        OrderRow {
            id: new.id.to_string(),
            user_id: new.user.to_string(),
            cart_id: new.cart_id,
            status: OrderStatus::Pending.as_str().to_owned(),
            currency: new.currency,
            total: new.total,
            payment_provider: self.inner.payments.provider.name().to_owned(),
            payment_token: new.token,
            payment_ref: None,
            capture_mode: self.inner.policy.capture_mode.as_str().to_owned(),
            payment_status: PaymentStatus::None.as_str().to_owned(),
            authorized: 0,
            captured: 0,
            refunded: 0,
            stock_state: StockState::None.as_str().to_owned(),
            cancel_requested: false,
            capture_requested: false,
            carrier: None,
            tracking_number: None,
            version: 1,
            created_at: new.now,
            updated_at: new.now,
        }
    }

    /// Validates and records a new order; its saga is then run with
    /// [`Orders::run_saga`]. Returns the order id.
    pub async fn place(&self, order: PlaceOrder) -> Result<OrderId, OrdersError> {
        if order.lines.is_empty() {
            return Err(OrdersError::EmptyCart);
        }
        if order.lines.len() > MAX_LINES {
            return Err(OrdersError::Validation(vec![FieldError::new(
                "items",
                format!("at most {MAX_LINES} lines per order"),
            )]));
        }
        let id = OrderId::generate();
        let order_id = id.to_string();
        let mut errors = Vec::new();
        let mut items = Vec::with_capacity(order.lines.len());
        let mut currency: Option<String> = None;
        let mut seen = std::collections::HashSet::new();
        for line in &order.lines {
            if !seen.insert(line.sku.clone()) {
                errors.push(FieldError::new(
                    "items",
                    format!("{} is listed more than once", line.sku),
                ));
                continue;
            }
            let (name, unit_price, line_currency) = match &line.priced {
                Some(priced) => (
                    priced.name.clone(),
                    priced.unit_price,
                    priced.currency.clone(),
                ),
                None => match self.inner.catalog.get(&line.sku).await {
                    Ok(Some(p)) if p.active => (p.name, p.price, p.currency),
                    Ok(_) => {
                        errors.push(FieldError::new(
                            "items",
                            format!("{} is not a product on sale", line.sku),
                        ));
                        continue;
                    }
                    Err(e) => return Err(OrdersError::Unavailable(e.to_string())),
                },
            };
            match &currency {
                Some(c) if *c != line_currency => errors.push(FieldError::new(
                    "items",
                    format!("{} is priced in {line_currency}, not {c}", line.sku),
                )),
                Some(_) => {}
                None => currency = Some(line_currency.clone()),
            }
            items.push(OrderItemRow {
                order_id: order_id.clone(),
                sku: line.sku.as_str().to_owned(),
                name,
                quantity: line.quantity,
                unit_price,
                line_total: unit_price.saturating_mul(line.quantity),
                restocked: 0,
            });
        }
        let total = order_total(
            &items
                .iter()
                .map(|i| (i.unit_price, i.quantity))
                .collect::<Vec<_>>(),
        )
        .map_err(|e| errors.push(e))
        .unwrap_or(0);
        if !errors.is_empty() {
            return Err(OrdersError::Validation(errors));
        }
        let currency = currency.unwrap_or_else(|| self.inner.policy.default_currency.clone());
        let now = Utc::now().naive_utc();
        // The lease below runs from this moment.
        let leased_at = std::time::Instant::now();
        let row = self.pending_row(NewOrderRow {
            id,
            user: order.user_id,
            cart_id: order.cart.as_ref().map(|(id, _)| id.clone()),
            currency,
            total,
            token: order.payment.token.clone(),
            now,
        });
        let (audit, outbox) = created_records(&row, &items, &Actor::User(order.user_id), now);
        // The order as this placement commits it, for the saga's first drive.
        let mut sorted = items.clone();
        sorted.sort_by(|a, b| a.sku.cmp(&b.sku));
        let placed = Loaded {
            progress: progress_of(&row, &[])?,
            row: row.clone(),
            refunds: Vec::new(),
            items: sorted,
        };
        let new = NewOrder {
            outbox: vec![outbox],
            saga: SagaRow {
                order_id: order_id.clone(),
                state: SagaState::Running.as_str().to_owned(),
                current_step: None,
                parked: false,
                lease_owner: Some(self.inner.owner.clone()),
                lease_expires_at: Some(now + self.inner.policy.lease_ttl),
                started_at: now,
                updated_at: now,
                finished_at: None,
            },
            order: row,
            items,
            cart: order.cart.clone(),
            audit: vec![audit],
            payments: Vec::new(),
            taken: Vec::new(),
            idempotency: order.idempotency.clone(),
        };
        match self
            .write_order(OrderWrite::Place(Box::new(new)), Admit::New)
            .await?
        {
            Ok(()) => {}
            Err(Refusal::CartChanged { .. }) => {
                return Err(OrdersError::Conflict(
                    "the cart changed while it was checked out; retry".to_owned(),
                ))
            }
            Err(Refusal::KeyLost) => return Err(OrdersError::IdempotencyKeyInUse),
            Err(refusal) => return Err(super::unexpected(refusal)),
        }
        metrics::counter!("sagas_started_total").increment(1);
        tracing::info!(order.id = %order_id, "order created");
        self.hand_over(placed, leased_at).await;
        Ok(id)
    }
}
