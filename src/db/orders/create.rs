//! Recording a new order: everything it writes in one insert chain, used by
//! the engine's placement (in a write pipeline batch) and by a checkout
//! that already holds a transaction with locks (the load benches' baseline).

use super::{OrderEventRow, OrderItemRow, OrderRow, PaymentRow, SagaRow};
use crate::db::idempotency::Binding;
use crate::db::inventory::NewMovementRow;
use crate::db::outbox::NewOutboxRow;

/// Everything a new order writes: the engine's placement (the order
/// `pending`, its saga to run) and a checkout recorded in its final state
/// at once (the load benches' baseline, with its payments and the stock it
/// took) alike.
#[derive(Debug, Clone)]
pub struct NewOrder {
    pub order: OrderRow,
    pub items: Vec<OrderItemRow>,
    /// The cart and the version it was read at.
    pub cart: Option<(String, i64)>,
    pub audit: Vec<OrderEventRow>,
    pub outbox: Vec<NewOutboxRow>,
    pub saga: SagaRow,
    /// Payment calls already made for it.
    pub payments: Vec<PaymentRow>,
    /// Stock sold with it: one ledger entry per SKU, its `on_hand_delta`
    /// applied to the SKU's counter.
    pub taken: Vec<NewMovementRow>,
    /// The idempotency key of the request that places the order.
    pub idempotency: Option<Binding>,
}

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// The cart was checked out, or changed, since it was read.
    #[error("the cart changed concurrently")]
    CartChanged,
    /// The request's idempotency key was taken over by a retry.
    #[error("the idempotency key was taken over")]
    KeyLost,
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
}

/// Writes a [`NewOrder`] inside the caller's transaction, on the backend
/// connection `$c`: evaluates to `Result<(), CreateError>`. On an error the
/// caller must roll back. Kept a macro so that one body serves both
/// backends and both callers (a write pipeline batch, or a longer
/// transaction that already holds locks).
#[macro_export]
macro_rules! write_new_order {
    ($c:expr, $new:expr) => {{
        use $crate::db::orders::CreateError;
        use $crate::db::schema::{
            carts, inventory, inventory_movements, order_events, order_items, orders, outbox,
            payments, sagas,
        };
        let new: &$crate::db::orders::NewOrder = $new;
        async {
            if let Some(binding) = &new.idempotency {
                if !$crate::bind_idempotency_key!($c, binding, "order", &new.order.id)? {
                    return Err(CreateError::KeyLost);
                }
            }
            diesel::insert_into(orders::table)
                .values(&new.order)
                .execute($c)
                .await?;
            if let Some((cart_id, version)) = &new.cart {
                let updated = diesel::update(
                    carts::table
                        .filter(carts::id.eq(cart_id))
                        .filter(carts::status.eq("open"))
                        .filter(carts::version.eq(version)),
                )
                .set((
                    carts::status.eq("checked_out"),
                    carts::order_id.eq(&new.order.id),
                    carts::version.eq(version + 1),
                    carts::updated_at.eq(new.order.created_at),
                ))
                .execute($c)
                .await?;
                if updated == 0 {
                    return Err(CreateError::CartChanged);
                }
            }
            for taken in &new.taken {
                diesel::update(inventory::table.find(&taken.sku))
                    .set((
                        inventory::on_hand.eq(inventory::on_hand + taken.on_hand_delta),
                        inventory::version.eq(inventory::version + 1_i64),
                        inventory::updated_at.eq(new.order.created_at),
                    ))
                    .execute($c)
                    .await?;
            }
            // One statement per row: SQLite's async wrapper has no
            // multi-row insert.
            for row in &new.taken {
                diesel::insert_into(inventory_movements::table)
                    .values(row)
                    .execute($c)
                    .await?;
            }
            for row in &new.items {
                diesel::insert_into(order_items::table)
                    .values(row)
                    .execute($c)
                    .await?;
            }
            for row in &new.payments {
                diesel::insert_into(payments::table)
                    .values(row)
                    .execute($c)
                    .await?;
            }
            diesel::insert_into(sagas::table)
                .values(&new.saga)
                .execute($c)
                .await?;
            for row in &new.audit {
                diesel::insert_into(order_events::table)
                    .values(row)
                    .execute($c)
                    .await?;
            }
            for row in &new.outbox {
                diesel::insert_into(outbox::table)
                    .values(row)
                    .execute($c)
                    .await?;
            }
            Ok::<(), CreateError>(())
        }
        .await
    }};
}
