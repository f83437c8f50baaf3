//! Executing saga steps against the inventory actors and the payment
//! provider. Every step is safe to run again after a crash:
//! - inventory reservations are keyed by (SKU, order), releases of a missing
//!   reservation are no-ops, and commits and restocks already done are found
//!   in the movements ledger;
//! - payment calls carry idempotency keys derived from the order (or refund)
//!   and the step, and a retry, or a timeout, first asks the provider for
//!   the outcome under the same key, so nobody is charged twice.

use serde_json::{json, Value};
use uuid::Uuid;

use super::{Loaded, Orders};
use crate::db::orders::{self as orders_db, OrderItemRow, PaymentRow, RefundRow};
use crate::db::DbError;
use crate::domain::inventory::Sku;
use crate::domain::order::{FoundPayment, Outcome, PaymentStatus, Step};
use crate::inventory::InventoryError;
use crate::payments::{Operation, PaymentError, PaymentRequest, PaymentResult};

/// A step's outcome and the records that go with it.
#[derive(Debug, Clone)]
pub(super) struct StepResult {
    pub outcome: Outcome,
    /// Stored in the step row (e.g. a decline's reason).
    pub note: Option<String>,
    pub data: Value,
    pub payment_ref: Option<String>,
    pub payment: Option<PaymentRow>,
    pub new_refund: Option<RefundRow>,
    pub refund_update: Option<(String, String, bool)>,
    pub restocked: Vec<(String, i64)>,
}

impl StepResult {
    fn of(outcome: Outcome) -> StepResult {
        StepResult {
            outcome,
            note: None,
            data: json!({}),
            payment_ref: None,
            payment: None,
            new_refund: None,
            refund_update: None,
            restocked: Vec::new(),
        }
    }
}

#[derive(Debug)]
pub(super) enum StepError {
    /// Worth retrying; the message goes into the saga log.
    Transient(String),
    Db(DbError),
}

impl From<DbError> for StepError {
    fn from(e: DbError) -> Self {
        StepError::Db(e)
    }
}

impl From<diesel::result::Error> for StepError {
    fn from(e: diesel::result::Error) -> Self {
        StepError::Db(DbError::Query(e))
    }
}

fn inventory_failure(sku: &str, e: InventoryError) -> StepError {
    StepError::Transient(format!("inventory {sku}: {e}"))
}

impl Orders {
    pub(super) async fn execute(
        &self,
        loaded: &Loaded,
        step: &Step,
        may_have_run: bool,
    ) -> Result<StepResult, StepError> {
        let order_id = loaded.row.id.as_str();
        let order_uuid = Uuid::parse_str(order_id)
            .map_err(|e| StepError::Transient(format!("order id: {e}")))?;
        let items = loaded.items.as_slice();
        match step {
            Step::ReserveInventory => self.reserve(items, order_uuid).await,
            Step::CommitInventory => self.commit(items, order_uuid).await,
            Step::ReleaseInventory => {
                let restocked = self.release_all(items, order_uuid, true).await?;
                let mut result = StepResult::of(Outcome::Done);
                result.restocked = restocked;
                Ok(result)
            }
            Step::AuthorizePayment => {
                let key = format!("{order_id}:authorize");
                let request =
                    self.request(loaded, Operation::Authorize, key, loaded.row.total, None);
                self.pay(&request, may_have_run).await
            }
            Step::CapturePayment => {
                let key = format!("{order_id}:capture");
                let reference = loaded.row.payment_ref.clone();
                let request = self.request(
                    loaded,
                    Operation::Capture,
                    key,
                    loaded.progress.authorized,
                    reference,
                );
                self.pay(&request, may_have_run).await
            }
            Step::VoidPayment => {
                let reference = loaded.row.payment_ref.clone();
                // A capture whose outcome was never recorded (a timeout, a
                // crash) would make the void fail and the money stay taken:
                // ask first, and if it happened, record it (a refund follows).
                if loaded.progress.captured == 0 {
                    let capture = self.request(
                        loaded,
                        Operation::Capture,
                        format!("{order_id}:capture"),
                        loaded.progress.authorized,
                        reference.clone(),
                    );
                    if let Some(found) = self.found(&capture, FoundPayment::Capture).await? {
                        return Ok(found);
                    }
                }
                let key = format!("{order_id}:void");
                let request = self.request(
                    loaded,
                    Operation::Void,
                    key,
                    loaded.progress.authorized,
                    reference,
                );
                let mut result = self.pay(&request, may_have_run).await?;
                if result.outcome == Outcome::Declined {
                    result.outcome = Outcome::Refused;
                }
                Ok(result)
            }
            Step::RefundPayment { refund_id, amount } => {
                let mut conn = self.inner.db.conn().await?;
                let capture_ref =
                    orders_db::payment_reference(&mut conn, order_id, "capture").await?;
                drop(conn);
                let key = format!("{refund_id}:refund");
                let request = self.request(loaded, Operation::Refund, key, *amount, capture_ref);
                let mut result = self.pay(&request, may_have_run).await?;
                let restock_done = loaded
                    .refunds
                    .iter()
                    .find(|r| &r.id == refund_id)
                    .is_none_or(|r| r.restock_done);
                result.data = json!({"refund_id": refund_id, "amount": amount});
                if result.outcome == Outcome::Done {
                    result.refund_update =
                        Some((refund_id.clone(), "succeeded".to_owned(), restock_done));
                } else {
                    result.outcome = Outcome::Refused;
                    result.refund_update = Some((refund_id.clone(), "failed".to_owned(), true));
                }
                Ok(result)
            }
            Step::RestockInventory {
                refund_id: Some(id),
            } => {
                let lines: Vec<(String, i64)> = loaded
                    .refunds
                    .iter()
                    .find(|r| &r.id == id)
                    .map(|r| parse_restock(&r.restock))
                    .unwrap_or_default();
                let mut result = StepResult::of(Outcome::Done);
                for (sku, quantity) in lines {
                    self.restock_once(&sku, quantity, &format!("refund:{id}:{sku}"))
                        .await?;
                    result.restocked.push((sku, quantity));
                }
                result.refund_update = Some((id.clone(), "succeeded".to_owned(), true));
                result.data = json!({"refund_id": id});
                Ok(result)
            }
            Step::RestockInventory { refund_id: None } => {
                let mut result = StepResult::of(Outcome::Done);
                for item in items {
                    let quantity = item.quantity - item.restocked;
                    if quantity > 0 {
                        let note = return_note(order_id, &item.sku);
                        self.restock_once(&item.sku, quantity, &note).await?;
                        result.restocked.push((item.sku.clone(), quantity));
                    }
                }
                Ok(result)
            }
            Step::OpenCancelRefund { amount } => {
                let now = chrono::Utc::now().naive_utc();
                let id = Uuid::now_v7().to_string();
                let mut result = StepResult::of(Outcome::RefundOpened(id.clone()));
                result.new_refund = Some(RefundRow {
                    id,
                    order_id: order_id.to_owned(),
                    amount: *amount,
                    reason: Some("order cancelled".to_owned()),
                    status: "pending".to_owned(),
                    restock: "[]".to_owned(),
                    restock_done: true,
                    created_at: now,
                    updated_at: now,
                });
                Ok(result)
            }
            Step::FinishCancel if loaded.progress.payment == PaymentStatus::None => {
                // An authorization whose outcome was never recorded must be
                // found (and voided) before the order is called cancelled.
                let authorize = self.request(
                    loaded,
                    Operation::Authorize,
                    format!("{order_id}:authorize"),
                    loaded.row.total,
                    None,
                );
                match self.found(&authorize, FoundPayment::Authorization).await? {
                    Some(found) => Ok(found),
                    None => Ok(StepResult::of(Outcome::Done)),
                }
            }
            Step::ConfirmOrder | Step::FinishCancel => Ok(StepResult::of(Outcome::Done)),
        }
    }

    /// All or nothing, in SKU order (the items are sorted by SKU). A refusal
    /// releases everything and reports every line that is short.
    async fn reserve(&self, items: &[OrderItemRow], order: Uuid) -> Result<StepResult, StepError> {
        let mut short = Vec::new();
        for item in items {
            let sku = parse_sku(&item.sku)?;
            if !short.is_empty() {
                // Already refused: only find out whether this line is short too.
                match self.inner.inventory.snapshot(&sku).await {
                    Ok(s) if s.levels.available() < item.quantity => short.push(json!({
                        "sku": item.sku, "requested": item.quantity, "available": s.levels.available()
                    })),
                    _ => {}
                }
                continue;
            }
            match self
                .inner
                .inventory
                .reserve(&sku, order, item.quantity)
                .await
            {
                Ok(_) => {}
                Err(InventoryError::OutOfStock {
                    requested,
                    available,
                }) => short.push(json!({
                    "sku": item.sku, "requested": requested, "available": available
                })),
                Err(InventoryError::UnknownSku) => short.push(json!({
                    "sku": item.sku, "requested": item.quantity, "available": 0
                })),
                Err(e) => return Err(inventory_failure(&item.sku, e)),
            }
        }
        if short.is_empty() {
            return Ok(StepResult::of(Outcome::Done));
        }
        self.release_all(items, order, false).await?;
        let mut result = StepResult::of(Outcome::OutOfStock);
        result.note = Some("out of stock".to_owned());
        result.data = json!({ "items": short });
        Ok(result)
    }

    /// Releases every line's reservation. With `uncommit`, a line that holds
    /// no reservation because a commit went through that the saga never
    /// recorded (a crash, a race with a cancel) is restocked instead, once;
    /// returns those restocks.
    async fn release_all(
        &self,
        items: &[OrderItemRow],
        order: Uuid,
        uncommit: bool,
    ) -> Result<Vec<(String, i64)>, StepError> {
        let order_id = order.to_string();
        let mut restocked = Vec::new();
        for item in items {
            let sku = parse_sku(&item.sku)?;
            match self.inner.inventory.release(&sku, order).await {
                Ok(None) if uncommit && self.committed(&item.sku, &order_id).await? => {
                    let note = return_note(&order_id, &item.sku);
                    self.restock_once(&item.sku, item.quantity, &note).await?;
                    restocked.push((item.sku.clone(), item.quantity));
                }
                Ok(_) | Err(InventoryError::UnknownSku) => {}
                Err(e) => return Err(inventory_failure(&item.sku, e)),
            }
        }
        Ok(restocked)
    }

    /// Reserved stock becomes sold. A reservation that expired meanwhile is
    /// taken again if the stock is there; if not, whatever this order had
    /// committed is put back and the outcome is `StockLost`.
    async fn commit(&self, items: &[OrderItemRow], order: Uuid) -> Result<StepResult, StepError> {
        let order_id = order.to_string();
        // A line of this order already given back (an earlier attempt found
        // the stock gone and put back what it had committed): that outcome
        // stands, whatever the stock is now.
        let mut lost = false;
        for item in items {
            let note = return_note(&order_id, &item.sku);
            if self
                .inner
                .inventory
                .restocked_with_note(&item.sku, &note)
                .await?
            {
                lost = true;
            }
        }
        for item in items.iter().filter(|_| !lost) {
            let sku = parse_sku(&item.sku)?;
            match self.inner.inventory.commit(&sku, order).await {
                Ok(_) => continue,
                Err(InventoryError::ReservationNotFound { .. }) => {}
                Err(e) => return Err(inventory_failure(&item.sku, e)),
            }
            if self.committed(&item.sku, &order_id).await? {
                continue;
            }
            match self
                .inner
                .inventory
                .reserve(&sku, order, item.quantity)
                .await
            {
                Ok(_) => {
                    self.inner
                        .inventory
                        .commit(&sku, order)
                        .await
                        .map_err(|e| inventory_failure(&item.sku, e))?;
                }
                Err(InventoryError::OutOfStock { .. }) => {
                    lost = true;
                    break;
                }
                Err(e) => return Err(inventory_failure(&item.sku, e)),
            }
        }
        if !lost {
            return Ok(StepResult::of(Outcome::Done));
        }
        let mut returned = Vec::new();
        for item in items {
            if self.committed(&item.sku, &order_id).await? {
                let note = return_note(&order_id, &item.sku);
                self.restock_once(&item.sku, item.quantity, &note).await?;
                returned.push((item.sku.clone(), item.quantity));
            }
        }
        self.release_all(items, order, false).await?;
        let mut result = StepResult::of(Outcome::StockLost);
        result.restocked = returned;
        result.note = Some("a reservation expired and its stock was sold".to_owned());
        Ok(result)
    }

    async fn committed(&self, sku: &str, order_id: &str) -> Result<bool, StepError> {
        Ok(self.inner.inventory.sold_to(sku, order_id).await?)
    }

    /// Restocks once per `note`: a restock found in the ledger is not repeated.
    async fn restock_once(&self, sku: &str, quantity: i64, note: &str) -> Result<(), StepError> {
        if self.inner.inventory.restocked_with_note(sku, note).await? {
            return Ok(());
        }
        let parsed = parse_sku(sku)?;
        self.inner
            .inventory
            .restock(&parsed, quantity, Some(note.to_owned()))
            .await
            .map(|_| ())
            .map_err(|e| inventory_failure(sku, e))
    }

    fn request(
        &self,
        loaded: &Loaded,
        operation: Operation,
        idempotency_key: String,
        amount: i64,
        reference: Option<String>,
    ) -> PaymentRequest {
        PaymentRequest {
            operation,
            idempotency_key,
            order_id: loaded.row.id.clone(),
            token: loaded.row.payment_token.clone(),
            amount,
            currency: loaded.row.currency.clone(),
            reference,
        }
    }

    /// One payment call. A call that may have been made before (a retry, or
    /// the first step of a saga resumed after a crash or a takeover) and a
    /// timeout first look the key up, so an operation that happened is
    /// found instead of repeated.
    async fn pay(
        &self,
        request: &PaymentRequest,
        may_have_run: bool,
    ) -> Result<StepResult, StepError> {
        let provider = &self.inner.payments.provider;
        let mut found = None;
        if may_have_run {
            found = self.lookup(request).await?;
        }
        let outcome = match found {
            Some(result) => result,
            None => {
                let call = tokio::time::timeout(
                    self.inner.policy.payment_timeout,
                    provider.execute(request),
                );
                match call.await.unwrap_or(Err(PaymentError::Timeout)) {
                    Ok(result) => result,
                    Err(PaymentError::Timeout) => match self.lookup(request).await? {
                        Some(result) => result,
                        None => {
                            return Err(StepError::Transient(
                                "the payment provider timed out and has no record of the call"
                                    .to_owned(),
                            ))
                        }
                    },
                    Err(PaymentError::Transient(m)) => return Err(StepError::Transient(m)),
                    Err(PaymentError::Permanent(m)) => PaymentResult::Declined { reason: m },
                }
            }
        };
        let now = chrono::Utc::now().naive_utc();
        let mut row = PaymentRow {
            id: Uuid::now_v7().to_string(),
            order_id: request.order_id.clone(),
            operation: request.operation.as_str().to_owned(),
            idempotency_key: request.idempotency_key.clone(),
            amount: request.amount,
            status: "succeeded".to_owned(),
            provider_ref: None,
            created_at: now,
        };
        Ok(match outcome {
            PaymentResult::Approved { reference } => {
                row.provider_ref = Some(reference.clone());
                let mut result = StepResult::of(Outcome::Done);
                if request.operation == Operation::Authorize {
                    result.payment_ref = Some(reference);
                }
                result.payment = Some(row);
                result
            }
            PaymentResult::Declined { reason } => {
                row.status = "declined".to_owned();
                let mut result = StepResult::of(Outcome::Declined);
                result.data = json!({ "reason": reason });
                result.note = Some(format!("declined: {reason}"));
                result.payment = Some(row);
                result
            }
        })
    }

    /// A payment call that happened though the saga never recorded it, as
    /// a `PaymentFound` outcome with its payment record.
    async fn found(
        &self,
        request: &PaymentRequest,
        kind: FoundPayment,
    ) -> Result<Option<StepResult>, StepError> {
        let Some(PaymentResult::Approved { reference }) = self.lookup(request).await? else {
            return Ok(None);
        };
        let mut result = StepResult::of(Outcome::PaymentFound(kind));
        result.note = Some(format!(
            "found an unrecorded {}; recorded it first",
            request.operation.as_str()
        ));
        if kind == FoundPayment::Authorization {
            result.payment_ref = Some(reference.clone());
        }
        result.payment = Some(PaymentRow {
            id: Uuid::now_v7().to_string(),
            order_id: request.order_id.clone(),
            operation: request.operation.as_str().to_owned(),
            idempotency_key: request.idempotency_key.clone(),
            amount: request.amount,
            status: "succeeded".to_owned(),
            provider_ref: Some(reference),
            created_at: chrono::Utc::now().naive_utc(),
        });
        Ok(Some(result))
    }

    async fn lookup(&self, request: &PaymentRequest) -> Result<Option<PaymentResult>, StepError> {
        let call = tokio::time::timeout(
            self.inner.policy.payment_timeout,
            self.inner.payments.provider.lookup(request),
        );
        match call.await.unwrap_or(Err(PaymentError::Timeout)) {
            Ok(found) => Ok(found),
            Err(PaymentError::Permanent(_)) => Ok(None),
            Err(e) => Err(StepError::Transient(format!("payment status lookup: {e}"))),
        }
    }
}

fn parse_sku(raw: &str) -> Result<Sku, StepError> {
    Sku::parse(raw).map_err(|e| StepError::Transient(format!("stored sku {raw:?}: {}", e.message)))
}

pub(super) fn parse_restock(raw: &str) -> Vec<(String, i64)> {
    serde_json::from_str::<Vec<Value>>(raw)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|v| {
            Some((
                v.get("sku")?.as_str()?.to_owned(),
                v.get("quantity")?.as_i64()?,
            ))
        })
        .collect()
}

/// The ledger note of giving a whole line of an order back to stock, by
/// whichever path (cancel, lost stock, an unrecorded commit): one note, so a
/// line is never given back twice, whatever mix of paths a crash leads to.
fn return_note(order_id: &str, sku: &str) -> String {
    format!("return:{order_id}:{sku}")
}
