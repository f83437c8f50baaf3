//! The one way an existing order changes ([`OrderChange`]): the order row
//! updated *guarded by its version* (so two engine processes can never both
//! apply a change to one version), and with it the payment record, the
//! refund, the restocked quantities, the audit trail, the outbox events,
//! the saga's columns (guarded by its lease, for a saga step), the steps'
//! records and the request's idempotency key. The write pipeline runs it
//! inside a batch's transaction: either all of it is durable or none of it.

/// Writes `$change` (an [`OrderChange`](super::OrderChange)) inside the
/// transaction `$c` is in: evaluates to `Result<(), ChangeError>`. On an
/// error the caller must roll back. A macro so that one body serves both
/// backends' connection types.
macro_rules! write_order_change {
    ($c:expr, $change:expr) => {{
        use $crate::db::orders::ChangeError;
        use $crate::db::schema::{
            order_events, order_items, orders, outbox, payments, refunds, sagas,
        };
        let change: &$crate::db::orders::OrderChange = $change;
        async {
            let target = orders::table
                .filter(orders::id.eq(&change.order_id))
                .filter(orders::version.eq(change.expected_version));
            let updated = diesel::update(target)
                .set((
                    &change.progress,
                    orders::version.eq(change.expected_version + 1),
                ))
                .execute($c)
                .await?;
            if updated == 0 {
                return Err(ChangeError::Stale);
            }
            if let Some(bind) = &change.idempotency {
                if !$crate::bind_idempotency_key!(
                    $c,
                    &bind.key,
                    bind.resource_type,
                    &bind.resource_id
                )? {
                    return Err(ChangeError::KeyLost);
                }
            }
            if let Some(reference) = &change.payment_ref {
                diesel::update(orders::table.find(&change.order_id))
                    .set(orders::payment_ref.eq(reference))
                    .execute($c)
                    .await?;
            }
            if let Some((carrier, tracking)) = &change.shipping {
                diesel::update(orders::table.find(&change.order_id))
                    .set((
                        orders::carrier.eq(carrier),
                        orders::tracking_number.eq(tracking),
                    ))
                    .execute($c)
                    .await?;
            }
            if let Some(payment) = &change.payment {
                // One row per key: a call repeated under its key (a resumed
                // compensation) got the provider's first answer again.
                diesel::insert_into(payments::table)
                    .values(payment)
                    .on_conflict(payments::idempotency_key)
                    .do_nothing()
                    .execute($c)
                    .await?;
            }
            if let Some(refund) = &change.new_refund {
                diesel::insert_into(refunds::table)
                    .values(refund)
                    .execute($c)
                    .await?;
            }
            if let Some((id, status, restock_done)) = &change.refund_update {
                diesel::update(refunds::table.find(id))
                    .set((
                        refunds::status.eq(status),
                        refunds::restock_done.eq(restock_done),
                        refunds::updated_at.eq(change.progress.updated_at),
                    ))
                    .execute($c)
                    .await?;
            }
            for (sku, quantity) in &change.restocked {
                diesel::update(
                    order_items::table
                        .filter(order_items::order_id.eq(&change.order_id))
                        .filter(order_items::sku.eq(sku)),
                )
                .set(order_items::restocked.eq(order_items::restocked + quantity))
                .execute($c)
                .await?;
            }
            for row in &change.audit {
                diesel::insert_into(order_events::table)
                    .values(row)
                    .execute($c)
                    .await?;
            }
            for row in &change.outbox {
                diesel::insert_into(outbox::table)
                    .values(row)
                    .execute($c)
                    .await?;
            }
            let saga = sagas::table.filter(sagas::order_id.eq(&change.order_id));
            let updated = match &change.lease {
                Some(owner) => {
                    diesel::update(saga.filter(sagas::lease_owner.eq(owner)))
                        .set(&change.saga)
                        .execute($c)
                        .await?
                }
                None => diesel::update(saga).set(&change.saga).execute($c).await?,
            };
            if updated == 0 && change.lease.is_some() {
                return Err(ChangeError::LeaseLost);
            }
            for step in &change.steps {
                $crate::db::sagas::upsert_step!(
                    $c,
                    &change.order_id,
                    step,
                    change.progress.updated_at
                )?;
            }
            Ok::<(), ChangeError>(())
        }
        .await
    }};
}
pub(crate) use write_order_change;
