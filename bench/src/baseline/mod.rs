//! The baseline checkout (`orderflow-bench-engine serve --engine baseline`):
//! what a team would write without actors, kept so the load benches can
//! measure orderflow against it on the same database in the same run
//! (docs/benchmarks.md). It plugs into the engine as a
//! [`CheckoutEngine`]; everything but the cart checkout is the engine's own.
//!
//! One database transaction per checkout: lock the cart's stock rows
//! (`SELECT ... FOR NO KEY UPDATE`; SQLite: `BEGIN IMMEDIATE`), check availability,
//! authorize and capture while holding the locks, take the stock, and write
//! the order in its final state with everything orderflow writes for it
//! (items, payment records, audit trail, outbox events, a finished saga row),
//! then commit. Rejections and declines are recorded as orders too, so the
//! API answers exactly as orderflow's does; later commands (cancel, refund,
//! ship) work on these orders through the usual saga.
//!
//! It keeps the same invariants (no oversell, one capture per order); what
//! it gives up is throughput on a contended SKU, since every checkout of it
//! holds the row lock across its payment calls.

mod tx;

use chrono::{NaiveDateTime, Utc};
use futures_util::future::BoxFuture;
use serde_json::json;
use uuid::Uuid;

use orderflow::config::CaptureMode;
use orderflow::db::carts::{CartItemRow, CartRow};
use orderflow::db::inventory::NewMovementRow;
use orderflow::db::orders::{CreateError, NewOrder, OrderItemRow, OrderRow, PaymentRow, SagaRow};
use orderflow::db::outbox::NewOutboxRow;
use orderflow::domain::ids::{OrderId, UserId};
use orderflow::domain::inventory::MovementKind;
use orderflow::domain::order::{order_total, OrderStatus, PaymentStatus, SagaState, StockState};
use orderflow::domain::FieldError;
use orderflow::orders::{
    audit_row, created_records, event_payload, Actor, CartCheckout, CheckoutEngine, NewOrderRow,
    Orders, OrdersError,
};
use orderflow::payments::{Operation, PaymentError, PaymentRequest, PaymentResult};
use tx::{LockedStock, Tx};

/// The name it is chosen by (`checkout.engine`, `serve --engine`).
pub const BASELINE: &str = "baseline";

/// The baseline checkout engine.
#[derive(Debug, Clone, Copy, Default)]
pub struct Baseline;

impl CheckoutEngine for Baseline {
    fn check_out<'a>(
        &'a self,
        orders: &'a Orders,
        checkout: CartCheckout,
    ) -> BoxFuture<'a, Result<OrderId, OrdersError>> {
        Box::pin(async move { Run { orders }.checkout_in_one_transaction(checkout).await })
    }
}

/// One checkout, with the engine's services it uses.
struct Run<'a> {
    orders: &'a Orders,
}

/// Money moved by this checkout so far: what a failed checkout gives back.
#[derive(Default)]
struct Charged {
    token: String,
    currency: String,
    rows: Vec<PaymentRow>,
}

impl Charged {
    fn push(&mut self, order: &OrderRow, row: PaymentRow) {
        self.token.clone_from(&order.payment_token);
        self.currency.clone_from(&order.currency);
        self.rows.push(row);
    }
}

/// How the payment went.
enum Charge {
    /// Authorized (and captured, with automatic capture).
    Approved {
        payments: Vec<PaymentRow>,
        reference: String,
    },
    Declined {
        payments: Vec<PaymentRow>,
        reason: String,
        /// An authorization still held: its capture was declined and the
        /// void failed too.
        held: Option<String>,
    },
}

impl Run<'_> {
    /// Checks the cart out in one transaction; returns the order id. The
    /// order is final when this returns: `paid` (`authorized` with manual
    /// capture), `rejected` (out of stock) or `payment_failed`. If the
    /// transaction fails after money moved, the money is given back (void
    /// or refund) before the error is answered.
    async fn checkout_in_one_transaction(
        &self,
        checkout: CartCheckout,
    ) -> Result<OrderId, OrdersError> {
        let conn = self.orders.database().conn().await?;
        let mut tx = Tx::begin(conn).await?;
        let mut charged = Charged::default();
        let order_id = OrderId::generate();
        let result = self
            .checkout_in(&mut tx, order_id, checkout, &mut charged)
            .await;
        let outcome = match result {
            Ok(new) => match tx.commit().await {
                Ok(()) => Ok(new),
                // A COMMIT whose answer was lost may still have happened:
                // only an order that is not there gets its money back.
                Err(e) => match self.recorded(&new.order.id).await {
                    Some(true) => Ok(new),
                    Some(false) => Err(OrdersError::from(e)),
                    None => {
                        charged.rows.clear();
                        tracing::error!(order.id = %new.order.id, error = %e, "baseline checkout: COMMIT failed and whether it happened is unknown; the payment is left as it is");
                        Err(OrdersError::from(e))
                    }
                },
            },
            Err(e) => {
                tx.rollback().await;
                Err(e)
            }
        };
        match outcome {
            Ok(new) => {
                for taken in &new.taken {
                    self.orders.catalog().invalidate(&taken.sku).await;
                }
                metrics::counter!("baseline_checkouts_total", "status" => new.order.status.clone())
                    .increment(1);
                Ok(order_id)
            }
            Err(e) => {
                self.give_back(&charged).await;
                Err(e)
            }
        }
    }

    async fn checkout_in(
        &self,
        tx: &mut Tx,
        order_id: OrderId,
        checkout: CartCheckout,
        charged: &mut Charged,
    ) -> Result<NewOrder, OrdersError> {
        let CartCheckout {
            user,
            cart_id,
            payment,
            idempotency,
        } = checkout;
        let (cart, lines) = tx
            .load_cart(&cart_id.to_string())
            .await?
            .ok_or(OrdersError::NotFound)?;
        if UserId::parse(&cart.user_id) != Some(user) {
            return Err(OrdersError::NotFound);
        }
        if let Some(order_id) = cart.order_id.clone() {
            return Err(OrdersError::CartCheckedOut { order_id });
        }
        if lines.is_empty() {
            return Err(OrdersError::EmptyCart);
        }
        let now = Utc::now().naive_utc();
        let mut new = self.new_order(order_id, user, &cart, &lines, payment.token, now)?;
        if let Some(binding) = &idempotency {
            if !tx.bind_key(binding, &new.order.id).await? {
                return Err(OrdersError::IdempotencyKeyInUse);
            }
        }
        let skus: Vec<String> = lines.iter().map(|l| l.sku.clone()).collect();
        let stock = tx.lock_stock(&skus).await?;
        let not_on_sale: Vec<FieldError> = lines
            .iter()
            .filter(|l| !stock.iter().any(|s| s.sku == l.sku && s.active))
            .map(|l| FieldError::new("items", format!("{} is no longer on sale", l.sku)))
            .collect();
        if !not_on_sale.is_empty() {
            return Err(OrdersError::Validation(not_on_sale));
        }
        let shortfalls = shortfalls(&lines, &stock);
        if !shortfalls.is_empty() {
            new.order.stock_state = StockState::Released.as_str().to_owned();
            self.final_status(
                &mut new,
                OrderStatus::Rejected,
                json!({ "items": shortfalls }),
                now,
            );
        } else {
            match self.baseline_charge(&new.order, charged).await? {
                Charge::Approved {
                    payments,
                    reference,
                } => {
                    let (status, payment_status) = match self.orders.capture_mode() {
                        CaptureMode::Automatic => (OrderStatus::Paid, PaymentStatus::Captured),
                        CaptureMode::Manual => (OrderStatus::Authorized, PaymentStatus::Authorized),
                    };
                    let order = &mut new.order;
                    order.payment_ref = Some(reference);
                    order.payment_status = payment_status.as_str().to_owned();
                    order.authorized = order.total;
                    if payment_status == PaymentStatus::Captured {
                        order.captured = order.total;
                    }
                    order.stock_state = StockState::Committed.as_str().to_owned();
                    new.payments = payments;
                    new.taken = taken(&new.order.id, &lines, now);
                    self.final_status(&mut new, status, json!({}), now);
                }
                Charge::Declined {
                    payments,
                    reason,
                    held,
                } => {
                    let order = &mut new.order;
                    order.stock_state = StockState::Released.as_str().to_owned();
                    order.payment_status = match (
                        &held,
                        payments
                            .iter()
                            .any(|p| p.operation == "void" && p.status == "succeeded"),
                    ) {
                        (_, true) => PaymentStatus::Voided,
                        _ => PaymentStatus::Failed,
                    }
                    .as_str()
                    .to_owned();
                    if let Some(reference) = held {
                        // Still held at the provider: recorded as it is.
                        order.payment_ref = Some(reference);
                        order.authorized = order.total;
                    }
                    new.payments = payments;
                    self.final_status(
                        &mut new,
                        OrderStatus::PaymentFailed,
                        json!({ "reason": reason }),
                        now,
                    );
                }
            }
        }
        match tx.write(&new).await {
            Ok(()) => Ok(new),
            Err(CreateError::CartChanged) => Err(OrdersError::Conflict(
                "the cart changed while it was checked out; retry".to_owned(),
            )),
            Err(CreateError::KeyLost) => Err(OrdersError::IdempotencyKeyInUse),
            Err(CreateError::Query(e)) => Err(e.into()),
        }
    }

    /// Whether `order_id` is in the database; `None` if that cannot be
    /// told now.
    async fn recorded(&self, order_id: &str) -> Option<bool> {
        let mut conn = self.orders.database().conn().await.ok()?;
        orderflow::db::orders::find(&mut conn, order_id)
            .await
            .ok()
            .map(|found| found.is_some())
    }

    /// Gives back money moved by a checkout whose transaction failed: the
    /// capture is refunded, or the authorization voided. A failure here is
    /// logged and counted (`baseline_give_back_failures_total`): the money
    /// then stays with the provider for an operator to return.
    async fn give_back(&self, charged: &Charged) {
        let captured = charged.rows.iter().find(|p| p.operation == "capture");
        let authorized = charged.rows.iter().find(|p| p.operation == "authorize");
        let Some(authorization) = authorized else {
            return;
        };
        let (operation, amount) = match captured {
            Some(capture) => (Operation::Refund, capture.amount),
            None => (Operation::Void, authorization.amount),
        };
        let request = PaymentRequest {
            operation,
            idempotency_key: format!("{}:{}", authorization.order_id, operation.as_str()),
            order_id: authorization.order_id.clone(),
            token: charged.token.clone(),
            amount,
            currency: charged.currency.clone(),
            reference: authorization.provider_ref.clone(),
        };
        match self.baseline_call(&request).await {
            Ok(PaymentResult::Approved { .. }) => {
                tracing::warn!(order.id = %request.order_id, operation = operation.as_str(), "baseline checkout failed after payment; the money was given back");
            }
            other => {
                metrics::counter!("baseline_give_back_failures_total").increment(1);
                tracing::error!(order.id = %request.order_id, operation = operation.as_str(), outcome = ?other.map(|_| ()), "baseline checkout failed after payment and the money could not be given back");
            }
        }
    }

    /// The order as created, before its outcome is known.
    fn new_order(
        &self,
        id: OrderId,
        user: UserId,
        cart: &CartRow,
        lines: &[CartItemRow],
        token: String,
        now: NaiveDateTime,
    ) -> Result<NewOrder, OrdersError> {
        let order_id = id.to_string();
        let priced: Vec<(i64, i64)> = lines.iter().map(|l| (l.unit_price, l.quantity)).collect();
        let total = order_total(&priced).map_err(|e| OrdersError::Validation(vec![e]))?;
        let order = self.orders.pending_row(NewOrderRow {
            id,
            user,
            cart_id: Some(cart.id.clone()),
            currency: cart.currency.clone(),
            total,
            token,
            now,
        });
        let items = lines
            .iter()
            .map(|l| OrderItemRow {
                order_id: order_id.clone(),
                sku: l.sku.clone(),
                name: l.name.clone(),
                quantity: l.quantity,
                unit_price: l.unit_price,
                line_total: l.unit_price.saturating_mul(l.quantity),
                restocked: 0,
            })
            .collect();
        Ok(NewOrder {
            saga: SagaRow {
                order_id: order_id.clone(),
                state: SagaState::Running.as_str().to_owned(),
                current_step: None,
                parked: false,
                lease_owner: None,
                lease_expires_at: None,
                started_at: now,
                updated_at: now,
                finished_at: None,
            },
            order,
            items,
            taken: Vec::new(),
            payments: Vec::new(),
            audit: Vec::new(),
            outbox: Vec::new(),
            cart: Some((cart.id.clone(), cart.version)),
            // Bound first, before the stock is locked.
            idempotency: None,
        })
    }

    /// Sets the final status and writes the trail orderflow writes for it:
    /// `order.created`, then the outcome's event.
    fn final_status(
        &self,
        new: &mut NewOrder,
        status: OrderStatus,
        data: serde_json::Value,
        now: NaiveDateTime,
    ) {
        let actor = match UserId::parse(&new.order.user_id) {
            Some(user) => Actor::User(user),
            None => Actor::System,
        };
        let (first, created) = created_records(&new.order, &new.items, &actor, now);
        let event_type = format!("order.{}", event_name(status));
        let outcome = audit_row(
            &new.order.id,
            &event_type,
            OrderStatus::Pending,
            status,
            &Actor::System,
            data.clone(),
            now,
        );
        new.order.status = status.as_str().to_owned();
        new.outbox = vec![created];
        if let Some(public) = public_event(status) {
            new.outbox.push(NewOutboxRow::new(
                public,
                &new.order.id,
                &event_payload(&new.order, status, data),
                now,
            ));
        }
        new.audit = vec![first, outcome];
        new.saga.state = match status {
            OrderStatus::Rejected | OrderStatus::PaymentFailed => SagaState::Compensated,
            _ => SagaState::Completed,
        }
        .as_str()
        .to_owned();
        new.saga.finished_at = Some(now);
    }

    /// Authorizes, then (automatic capture) captures; a declined capture
    /// voids the authorization. Every approved call is also pushed to
    /// `charged`, so that a checkout failing later can give the money back.
    async fn baseline_charge(
        &self,
        order: &OrderRow,
        charged: &mut Charged,
    ) -> Result<Charge, OrdersError> {
        let mut payments = Vec::new();
        let authorize = self.baseline_request(order, Operation::Authorize, None);
        let reference = match self.baseline_call(&authorize).await? {
            PaymentResult::Approved { reference } => {
                let row = payment_row(&authorize, "succeeded", Some(&reference));
                charged.push(order, row.clone());
                payments.push(row);
                reference
            }
            PaymentResult::Declined { reason } => {
                payments.push(payment_row(&authorize, "declined", None));
                return Ok(Charge::Declined {
                    payments,
                    reason,
                    held: None,
                });
            }
        };
        if self.orders.capture_mode() == CaptureMode::Manual {
            return Ok(Charge::Approved {
                payments,
                reference,
            });
        }
        let capture = self.baseline_request(order, Operation::Capture, Some(reference.clone()));
        match self.baseline_call(&capture).await? {
            PaymentResult::Approved { reference: r } => {
                let row = payment_row(&capture, "succeeded", Some(&r));
                charged.push(order, row.clone());
                payments.push(row);
                Ok(Charge::Approved {
                    payments,
                    reference,
                })
            }
            PaymentResult::Declined { reason } => {
                payments.push(payment_row(&capture, "declined", None));
                let void = self.baseline_request(order, Operation::Void, Some(reference.clone()));
                let held = match self.baseline_call(&void).await {
                    Ok(PaymentResult::Approved { reference: r }) => {
                        payments.push(payment_row(&void, "succeeded", Some(&r)));
                        charged.rows.clear();
                        None
                    }
                    _ => Some(reference),
                };
                Ok(Charge::Declined {
                    payments,
                    reason,
                    held,
                })
            }
        }
    }

    fn baseline_request(
        &self,
        order: &OrderRow,
        operation: Operation,
        reference: Option<String>,
    ) -> PaymentRequest {
        PaymentRequest {
            operation,
            idempotency_key: format!("{}:{}", order.id, operation.as_str()),
            order_id: order.id.clone(),
            token: order.payment_token.clone(),
            amount: order.total,
            currency: order.currency.clone(),
            reference,
        }
    }

    /// One provider call. A timeout or transient failure is looked up by
    /// its key (the call may have happened) and, if the provider has no
    /// record of it, tried once more under the same key.
    async fn baseline_call(&self, request: &PaymentRequest) -> Result<PaymentResult, OrdersError> {
        let provider = &self.orders.payments().provider;
        let timeout = self.orders.payment_timeout();
        for attempt in 1..=2 {
            let call = tokio::time::timeout(timeout, provider.execute(request));
            match call.await.unwrap_or(Err(PaymentError::Timeout)) {
                Ok(result) => return Ok(result),
                Err(PaymentError::Permanent(reason)) => {
                    return Ok(PaymentResult::Declined { reason })
                }
                Err(e) => {
                    let lookup = tokio::time::timeout(timeout, provider.lookup(request));
                    if let Ok(Ok(Some(found))) = lookup.await {
                        return Ok(found);
                    }
                    if attempt == 2 {
                        return Err(OrdersError::Unavailable(format!(
                            "payment provider: {e}; the checkout was not recorded, retry"
                        )));
                    }
                }
            }
        }
        unreachable!("the loop returns on its second attempt")
    }
}

/// The published event of a final status, as the saga publishes it.
fn public_event(status: OrderStatus) -> Option<&'static str> {
    match status {
        OrderStatus::Paid => Some("order.paid"),
        OrderStatus::PaymentFailed => Some("payment.failed"),
        _ => None,
    }
}

/// The audit trail's name of a final status.
fn event_name(status: OrderStatus) -> &'static str {
    match status {
        OrderStatus::Authorized => "authorized",
        OrderStatus::Rejected => "rejected",
        OrderStatus::PaymentFailed => "payment_failed",
        _ => "paid",
    }
}

/// The lines the locked stock cannot cover, as `out_of_stock` reports them.
fn shortfalls(lines: &[CartItemRow], stock: &[LockedStock]) -> Vec<serde_json::Value> {
    lines
        .iter()
        .filter_map(|line| {
            let available = stock
                .iter()
                .find(|s| s.sku == line.sku)
                .map_or(0, |s| (s.on_hand - s.reserved).max(0));
            (available < line.quantity).then(
                || json!({ "sku": line.sku, "requested": line.quantity, "available": available }),
            )
        })
        .collect()
}

/// The stock sold: one ledger entry per line.
fn taken(order_id: &str, lines: &[CartItemRow], now: NaiveDateTime) -> Vec<NewMovementRow> {
    lines
        .iter()
        .map(|line| NewMovementRow {
            id: Uuid::now_v7().to_string(),
            sku: line.sku.clone(),
            kind: MovementKind::Commit.as_str().to_owned(),
            on_hand_delta: -line.quantity,
            reserved_delta: 0,
            order_id: Some(order_id.to_owned()),
            note: Some("baseline checkout".to_owned()),
            created_at: now,
        })
        .collect()
}

fn payment_row(request: &PaymentRequest, status: &str, reference: Option<&str>) -> PaymentRow {
    PaymentRow {
        id: Uuid::now_v7().to_string(),
        order_id: request.order_id.clone(),
        operation: request.operation.as_str().to_owned(),
        idempotency_key: request.idempotency_key.clone(),
        amount: request.amount,
        status: status.to_owned(),
        provider_ref: reference.map(str::to_owned),
        created_at: Utc::now().naive_utc(),
    }
}
