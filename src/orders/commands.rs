//! Commands on an existing order (cancel, capture, ship, deliver, refund):
//! each checked by the saga's state machine, written with its audit entry
//! (and outbox event) under the order's version guard, then handed to the
//! saga for whatever compensation or payment work it brings.

use chrono::Utc;
use serde_json::json;
use uuid::Uuid;

use super::{audit_row, event_payload, steps, Actor, Command, CommandResult, Orders, OrdersError};
use crate::db::idempotency::Binding;
use crate::db::orders::{self as orders_db, KeyBinding, RefundRow};
use crate::db::outbox::NewOutboxRow;
use crate::db::pipeline::{Admit, OrderWrite, Refusal};
use crate::domain::order::OrderStatus;
use crate::domain::FieldError;

impl Orders {
    pub(super) async fn apply_command(
        &self,
        order_id: &str,
        actor: &Actor,
        command: Command,
        idempotency: Option<Binding>,
    ) -> Result<CommandResult, OrdersError> {
        let mut refund_id = None;
        let mut applied = false;
        for _ in 0..5 {
            let loaded = self.load(order_id).await?.ok_or(OrdersError::NotFound)?;
            let progress = &loaded.progress;
            if progress.failed {
                // The saga waits for a person (see `POST /sagas/{id}/resume`).
                return Err(OrdersError::InvalidTransition {
                    from: progress.status,
                    action: command.name(),
                });
            }
            let now = Utc::now().naive_utc();
            let mut change = self.change_for(&loaded, now);
            let next = match &command {
                Command::Cancel => {
                    if progress.status == OrderStatus::Cancelled {
                        return Ok(CommandResult::Order(self.view_stored(order_id).await?));
                    }
                    progress.request_cancel()?
                }
                Command::Capture => progress.request_capture()?,
                Command::Ship {
                    carrier,
                    tracking_number,
                } => {
                    change.shipping = Some((carrier.clone(), tracking_number.clone()));
                    progress.request_ship()?
                }
                Command::Deliver => progress.request_deliver()?,
                Command::Refund {
                    amount,
                    reason,
                    restock,
                } => {
                    let items =
                        orders_db::items(&mut self.inner.db.conn().await?, order_id).await?;
                    validate_restock(&items, &loaded.refunds, restock)?;
                    let id = Uuid::now_v7().to_string();
                    let next = progress.request_refund(id.clone(), *amount, !restock.is_empty())?;
                    change.new_refund = Some(RefundRow {
                        id: id.clone(),
                        order_id: order_id.to_owned(),
                        amount: *amount,
                        reason: reason.clone(),
                        status: "pending".to_owned(),
                        restock: serde_json::to_string(
                            &restock
                                .iter()
                                .map(|(sku, q)| json!({"sku": sku, "quantity": q}))
                                .collect::<Vec<_>>(),
                        )
                        .unwrap_or_else(|_| "[]".to_owned()),
                        restock_done: restock.is_empty(),
                        created_at: now,
                        updated_at: now,
                    });
                    refund_id = Some(id);
                    next
                }
            };
            let event_type = match &command {
                Command::Ship { .. } => "order.shipped",
                Command::Deliver => "order.delivered",
                Command::Cancel => "order.cancel_requested",
                Command::Capture => "order.capture_requested",
                Command::Refund { .. } => "order.refund_requested",
            };
            let mut data = json!({});
            if let Some(r) = &change.new_refund {
                data = json!({"refund_id": r.id, "amount": r.amount, "reason": r.reason});
            }
            if let Some((carrier, tracking)) = &change.shipping {
                data = json!({"carrier": carrier, "tracking_number": tracking});
            }
            change.audit.push(audit_row(
                order_id,
                event_type,
                progress.status,
                next.status,
                actor,
                data.clone(),
                now,
            ));
            if matches!(command, Command::Ship { .. } | Command::Deliver) {
                change.outbox.push(NewOutboxRow::new(
                    event_type,
                    order_id,
                    &event_payload(&loaded.row, next.status, data),
                    now,
                ));
            }
            self.set_progress(&mut change, &next, now);
            change.idempotency = idempotency.clone().map(|key| match &refund_id {
                Some(id) => KeyBinding {
                    key,
                    resource_type: "refund",
                    resource_id: id.clone(),
                },
                None => KeyBinding {
                    key,
                    resource_type: "order",
                    resource_id: order_id.to_owned(),
                },
            });
            let write = OrderWrite::Change(Box::new(change));
            match self.write_order(write, Admit::New).await? {
                Ok(()) => {
                    applied = true;
                    break;
                }
                Err(Refusal::OrderChanged { .. }) => {
                    refund_id = None;
                    continue;
                }
                Err(Refusal::KeyLost) => return Err(OrdersError::IdempotencyKeyInUse),
                // Commands take no lease and touch no cart.
                Err(refusal) => return Err(super::unexpected(refusal)),
            }
        }
        if !applied {
            return Err(OrdersError::Conflict(
                "the order kept changing; retry".to_owned(),
            ));
        }
        tracing::info!(
            order.id = order_id,
            command = command.name(),
            "order command applied"
        );
        // Give the saga its work (compensations, capture, the refund). The
        // command is durable now: if the saga cannot go on here, recovery
        // finishes it, and the answer shows where it stands.
        if let Err(e) = self.drive_patiently(order_id, false, None).await {
            tracing::warn!(order.id = order_id, error = %e, "the saga did not finish after a command");
        }
        match refund_id {
            Some(id) => Ok(CommandResult::Refund(self.refund(&id).await?)),
            None => Ok(CommandResult::Order(self.view_stored(order_id).await?)),
        }
    }
}

/// Checks refund restock lines against the order's items, counting what
/// earlier refunds not yet finished will put back.
fn validate_restock(
    items: &[orders_db::OrderItemRow],
    open: &[RefundRow],
    restock: &[(String, i64)],
) -> Result<(), OrdersError> {
    let mut errors = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let pending = |sku: &str| -> i64 {
        open.iter()
            .filter(|r| !r.restock_done)
            .flat_map(|r| steps::parse_restock(&r.restock))
            .filter(|(s, _)| s == sku)
            .map(|(_, q)| q)
            .sum()
    };
    for (sku, quantity) in restock {
        let item = items.iter().find(|i| &i.sku == sku);
        let left = item.map_or(0, |i| i.quantity - i.restocked - pending(sku));
        match item {
            None => errors.push(FieldError::new(
                "restock",
                format!("{sku} is not an item of this order"),
            )),
            Some(_) if *quantity < 1 || *quantity > left => errors.push(FieldError::new(
                "restock",
                format!("quantity of {sku} must be between 1 and {left}"),
            )),
            _ => {}
        }
        if !seen.insert(sku) {
            errors.push(FieldError::new("restock", format!("{sku} is listed twice")));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(OrdersError::Validation(errors))
    }
}
