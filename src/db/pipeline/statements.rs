//! The statements of one pipeline batch, once per backend.
//!
//! PostgreSQL gets one statement per table and kind: multi-row inserts split
//! below its 65,535 bind parameters, and the guarded updates and deletes over
//! `unnest` of array parameters (three binds, however many rows). The
//! refusable statements report per row (`ON CONFLICT DO NOTHING RETURNING`,
//! `UPDATE ... RETURNING`), so the batch knows which write-set a refusal
//! belongs to. SQLite runs in-process, where a statement costs microseconds
//! and the transaction's fsync is what counts: one statement per row, which
//! also keeps far below its 32,766 bind parameters.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Text, Timestamp};
use diesel::upsert::excluded;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::super::carts::{CartItemRow, CartRow};
use super::super::events::NewEventRow;
use super::super::inventory::{InventoryRow, NewMovementRow, ReservationRow};
use super::super::orders::{ChangeError, CreateError};
use super::super::outbox::NewOutboxRow;
use super::super::schema::{
    cart_items, carts, events, inventory, inventory_movements, outbox, reservations, write_batches,
};
use super::super::SqliteConn;
use super::writeset::{OrderWrite, Refusal};

/// PostgreSQL's limit on bind parameters in one statement.
const PG_MAX_BINDS: usize = 65_535;

/// Rows of `columns` columns that fit in one PostgreSQL statement.
pub(super) const fn rows_per_statement(columns: usize) -> usize {
    PG_MAX_BINDS / columns
}

/// A summed, guarded counter change of one SKU.
#[derive(Debug, Clone)]
pub(super) struct Delta {
    pub sku: String,
    pub on_hand: i64,
    pub reserved: i64,
}

/// A cart line write's guard: the version its actor holds.
#[derive(Debug, Clone)]
pub(super) struct CartGuard {
    pub cart_id: String,
    pub version: i64,
}

type Fut<'a, T> = BoxFuture<'a, QueryResult<T>>;

pub(super) trait Statements: Send {
    /// Ids of the external events recorded now (the others were before).
    fn record_events<'a>(&'a mut self, rows: &'a [NewEventRow]) -> Fut<'a, Vec<String>>;
    /// Ids of the reservations deleted (the others were already gone).
    fn delete_reservations<'a>(&'a mut self, ids: &'a [String]) -> Fut<'a, Vec<String>>;
    /// Ids of the reservations inserted (the others existed).
    fn insert_reservations<'a>(&'a mut self, rows: &'a [ReservationRow]) -> Fut<'a, Vec<String>>;
    /// The counters of the SKUs whose guarded delta applied.
    fn apply_deltas<'a>(
        &'a mut self,
        deltas: &'a [Delta],
        now: NaiveDateTime,
    ) -> Fut<'a, Vec<InventoryRow>>;
    /// Ids of the carts still open at their guard's version, moved past it.
    fn bump_carts<'a>(
        &'a mut self,
        guards: &'a [CartGuard],
        now: NaiveDateTime,
    ) -> Fut<'a, Vec<String>>;

    fn insert_carts<'a>(&'a mut self, rows: &'a [CartRow]) -> Fut<'a, ()>;
    fn put_cart_items<'a>(&'a mut self, rows: &'a [CartItemRow]) -> Fut<'a, ()>;
    fn delete_cart_items<'a>(&'a mut self, lines: &'a [(String, String)]) -> Fut<'a, ()>;
    fn insert_movements<'a>(&'a mut self, rows: &'a [NewMovementRow]) -> Fut<'a, ()>;
    fn insert_outbox<'a>(&'a mut self, rows: &'a [NewOutboxRow]) -> Fut<'a, ()>;

    /// Writes an order's placement or change, all of its statements: `Some`
    /// when one of its guards refused (the caller rolls back).
    fn write_order<'a>(&'a mut self, write: &'a OrderWrite) -> Fut<'a, Option<Refusal>>;

    /// Records the batch's id inside its transaction.
    fn mark_batch<'a>(&'a mut self, id: &'a str, now: NaiveDateTime) -> Fut<'a, ()>;
    /// Whether the batch `id` committed.
    fn batch_committed<'a>(&'a mut self, id: &'a str) -> Fut<'a, bool>;
    /// Forgets batch ids recorded before `before`.
    fn forget_batches(&mut self, before: NaiveDateTime) -> Fut<'_, usize>;
}

#[derive(QueryableByName)]
struct IdRow {
    #[diesel(sql_type = Text)]
    id: String,
}

/// Runs `insert` over `rows` in chunks of `per` rows.
macro_rules! chunked {
    ($rows:expr, $per:expr, |$chunk:ident| $insert:expr) => {{
        let mut out = Vec::new();
        for $chunk in $rows.chunks($per) {
            out.extend($insert);
        }
        Ok::<_, diesel::result::Error>(out)
    }};
}

/// An order's statements, the same on both backends: one row at a time (an
/// order is a handful of rows, each its own table).
macro_rules! order_writes {
    () => {
        fn write_order<'a>(&'a mut self, write: &'a OrderWrite) -> Fut<'a, Option<Refusal>> {
            async move {
                match write {
                    OrderWrite::Place(new) => match crate::write_new_order!(self, new) {
                        Ok(()) => Ok(None),
                        Err(CreateError::CartChanged) => Ok(Some(Refusal::CartChanged {
                            cart_id: new
                                .cart
                                .as_ref()
                                .map(|(id, _)| id.clone())
                                .unwrap_or_default(),
                        })),
                        Err(CreateError::KeyLost) => Ok(Some(Refusal::KeyLost)),
                        Err(CreateError::Query(e)) => Err(e),
                    },
                    OrderWrite::Change(change) => {
                        match crate::db::orders::write_order_change!(self, change) {
                            Ok(()) => Ok(None),
                            Err(ChangeError::Stale) => Ok(Some(Refusal::OrderChanged {
                                order_id: change.order_id.clone(),
                            })),
                            Err(ChangeError::LeaseLost) => Ok(Some(Refusal::LeaseLost {
                                order_id: change.order_id.clone(),
                            })),
                            Err(ChangeError::KeyLost) => Ok(Some(Refusal::KeyLost)),
                            Err(ChangeError::Query(e)) => Err(e),
                        }
                    }
                }
            }
            .boxed()
        }
    };
}

/// The batch-id statements, the same on both backends.
macro_rules! batch_ids {
    () => {
        fn mark_batch<'a>(&'a mut self, id: &'a str, now: NaiveDateTime) -> Fut<'a, ()> {
            diesel::insert_into(write_batches::table)
                .values((
                    write_batches::id.eq(id),
                    write_batches::committed_at.eq(now),
                ))
                .execute(self)
                .map(|r| r.map(|_| ()))
                .boxed()
        }

        fn batch_committed<'a>(&'a mut self, id: &'a str) -> Fut<'a, bool> {
            write_batches::table
                .find(id)
                .select(write_batches::id)
                .first::<String>(self)
                .map(|r| r.optional().map(|found| found.is_some()))
                .boxed()
        }

        fn forget_batches(&mut self, before: NaiveDateTime) -> Fut<'_, usize> {
            diesel::delete(write_batches::table.filter(write_batches::committed_at.lt(before)))
                .execute(self)
                .boxed()
        }
    };
}

impl Statements for AsyncPgConnection {
    fn record_events<'a>(&'a mut self, rows: &'a [NewEventRow]) -> Fut<'a, Vec<String>> {
        async move {
            chunked!(rows, rows_per_statement(8), |chunk| {
                diesel::insert_into(events::table)
                    .values(chunk)
                    .on_conflict_do_nothing()
                    .returning(events::id)
                    .get_results::<String>(self)
                    .await?
            })
        }
        .boxed()
    }

    fn delete_reservations<'a>(&'a mut self, ids: &'a [String]) -> Fut<'a, Vec<String>> {
        // `= ANY($1)`: one array parameter, however many ids.
        diesel::delete(reservations::table.filter(reservations::id.eq_any(ids)))
            .returning(reservations::id)
            .get_results(self)
            .boxed()
    }

    fn insert_reservations<'a>(&'a mut self, rows: &'a [ReservationRow]) -> Fut<'a, Vec<String>> {
        async move {
            chunked!(rows, rows_per_statement(6), |chunk| {
                diesel::insert_into(reservations::table)
                    .values(chunk)
                    .on_conflict_do_nothing()
                    .returning(reservations::id)
                    .get_results::<String>(self)
                    .await?
            })
        }
        .boxed()
    }

    fn apply_deltas<'a>(
        &'a mut self,
        deltas: &'a [Delta],
        now: NaiveDateTime,
    ) -> Fut<'a, Vec<InventoryRow>> {
        let skus: Vec<&str> = deltas.iter().map(|d| d.sku.as_str()).collect();
        let on_hand: Vec<i64> = deltas.iter().map(|d| d.on_hand).collect();
        let reserved: Vec<i64> = deltas.iter().map(|d| d.reserved).collect();
        diesel::sql_query(
            "UPDATE inventory AS i \
             SET on_hand = i.on_hand + v.d_on_hand, reserved = i.reserved + v.d_reserved, \
                 version = i.version + 1, updated_at = $4 \
             FROM unnest($1::text[], $2::int8[], $3::int8[]) AS v(sku, d_on_hand, d_reserved) \
             WHERE i.sku = v.sku \
               AND i.on_hand + v.d_on_hand >= i.reserved + v.d_reserved \
               AND i.reserved + v.d_reserved >= 0 \
             RETURNING i.sku, i.on_hand, i.reserved, i.version",
        )
        .bind::<Array<Text>, _>(skus)
        .bind::<Array<BigInt>, _>(on_hand)
        .bind::<Array<BigInt>, _>(reserved)
        .bind::<Timestamp, _>(now)
        .load::<InventoryRow>(self)
        .boxed()
    }

    fn bump_carts<'a>(
        &'a mut self,
        guards: &'a [CartGuard],
        now: NaiveDateTime,
    ) -> Fut<'a, Vec<String>> {
        let ids: Vec<&str> = guards.iter().map(|g| g.cart_id.as_str()).collect();
        let versions: Vec<i64> = guards.iter().map(|g| g.version).collect();
        async move {
            let rows = diesel::sql_query(
                "UPDATE carts AS c SET version = c.version + 1, updated_at = $3 \
                 FROM unnest($1::text[], $2::int8[]) AS v(id, version) \
                 WHERE c.id = v.id AND c.version = v.version AND c.status = 'open' \
                 RETURNING c.id",
            )
            .bind::<Array<Text>, _>(ids)
            .bind::<Array<BigInt>, _>(versions)
            .bind::<Timestamp, _>(now)
            .load::<IdRow>(self)
            .await?;
            Ok(rows.into_iter().map(|r| r.id).collect())
        }
        .boxed()
    }

    fn insert_carts<'a>(&'a mut self, rows: &'a [CartRow]) -> Fut<'a, ()> {
        async move {
            for chunk in rows.chunks(rows_per_statement(8)) {
                diesel::insert_into(carts::table)
                    .values(chunk)
                    .execute(self)
                    .await?;
            }
            Ok(())
        }
        .boxed()
    }

    fn put_cart_items<'a>(&'a mut self, rows: &'a [CartItemRow]) -> Fut<'a, ()> {
        async move {
            for chunk in rows.chunks(rows_per_statement(5)) {
                diesel::insert_into(cart_items::table)
                    .values(chunk)
                    .on_conflict((cart_items::cart_id, cart_items::sku))
                    .do_update()
                    .set((
                        cart_items::name.eq(excluded(cart_items::name)),
                        cart_items::quantity.eq(excluded(cart_items::quantity)),
                        cart_items::unit_price.eq(excluded(cart_items::unit_price)),
                    ))
                    .execute(self)
                    .await?;
            }
            Ok(())
        }
        .boxed()
    }

    fn delete_cart_items<'a>(&'a mut self, lines: &'a [(String, String)]) -> Fut<'a, ()> {
        let cart_ids: Vec<&str> = lines.iter().map(|(c, _)| c.as_str()).collect();
        let skus: Vec<&str> = lines.iter().map(|(_, s)| s.as_str()).collect();
        diesel::sql_query(
            "DELETE FROM cart_items AS ci \
             USING unnest($1::text[], $2::text[]) AS v(cart_id, sku) \
             WHERE ci.cart_id = v.cart_id AND ci.sku = v.sku",
        )
        .bind::<Array<Text>, _>(cart_ids)
        .bind::<Array<Text>, _>(skus)
        .execute(self)
        .map(|r| r.map(|_| ()))
        .boxed()
    }

    fn insert_movements<'a>(&'a mut self, rows: &'a [NewMovementRow]) -> Fut<'a, ()> {
        async move {
            for chunk in rows.chunks(rows_per_statement(8)) {
                diesel::insert_into(inventory_movements::table)
                    .values(chunk)
                    .execute(self)
                    .await?;
            }
            Ok(())
        }
        .boxed()
    }

    fn insert_outbox<'a>(&'a mut self, rows: &'a [NewOutboxRow]) -> Fut<'a, ()> {
        async move {
            for chunk in rows.chunks(rows_per_statement(5)) {
                diesel::insert_into(outbox::table)
                    .values(chunk)
                    .execute(self)
                    .await?;
            }
            Ok(())
        }
        .boxed()
    }

    order_writes!();
    batch_ids!();
}

impl Statements for SqliteConn {
    fn record_events<'a>(&'a mut self, rows: &'a [NewEventRow]) -> Fut<'a, Vec<String>> {
        async move {
            let mut recorded = Vec::new();
            for row in rows {
                let n = diesel::insert_into(events::table)
                    .values(row)
                    .on_conflict_do_nothing()
                    .execute(self)
                    .await?;
                if n == 1 {
                    recorded.push(row.id.clone());
                }
            }
            Ok(recorded)
        }
        .boxed()
    }

    fn delete_reservations<'a>(&'a mut self, ids: &'a [String]) -> Fut<'a, Vec<String>> {
        async move {
            let mut deleted = Vec::new();
            for id in ids {
                let n = diesel::delete(reservations::table.find(id))
                    .execute(self)
                    .await?;
                if n == 1 {
                    deleted.push(id.clone());
                }
            }
            Ok(deleted)
        }
        .boxed()
    }

    fn insert_reservations<'a>(&'a mut self, rows: &'a [ReservationRow]) -> Fut<'a, Vec<String>> {
        async move {
            let mut inserted = Vec::new();
            for row in rows {
                let n = diesel::insert_into(reservations::table)
                    .values(row)
                    .on_conflict_do_nothing()
                    .execute(self)
                    .await?;
                if n == 1 {
                    inserted.push(row.id.clone());
                }
            }
            Ok(inserted)
        }
        .boxed()
    }

    fn apply_deltas<'a>(
        &'a mut self,
        deltas: &'a [Delta],
        now: NaiveDateTime,
    ) -> Fut<'a, Vec<InventoryRow>> {
        async move {
            let mut applied = Vec::new();
            for d in deltas {
                let (d_on_hand, d_reserved) = (d.on_hand, d.reserved);
                let row = diesel::update(
                    inventory::table
                        .filter(inventory::sku.eq(&d.sku))
                        .filter(
                            (inventory::on_hand + d_on_hand).ge(inventory::reserved + d_reserved),
                        )
                        .filter((inventory::reserved + d_reserved).ge(0_i64)),
                )
                .set((
                    inventory::on_hand.eq(inventory::on_hand + d_on_hand),
                    inventory::reserved.eq(inventory::reserved + d_reserved),
                    inventory::version.eq(inventory::version + 1_i64),
                    inventory::updated_at.eq(now),
                ))
                .returning(InventoryRow::as_returning())
                .get_result(self)
                .await
                .optional()?;
                applied.extend(row);
            }
            Ok(applied)
        }
        .boxed()
    }

    fn bump_carts<'a>(
        &'a mut self,
        guards: &'a [CartGuard],
        now: NaiveDateTime,
    ) -> Fut<'a, Vec<String>> {
        async move {
            let mut bumped = Vec::new();
            for g in guards {
                let n = diesel::update(
                    carts::table
                        .filter(carts::id.eq(&g.cart_id))
                        .filter(carts::status.eq("open"))
                        .filter(carts::version.eq(g.version)),
                )
                .set((carts::version.eq(g.version + 1), carts::updated_at.eq(now)))
                .execute(self)
                .await?;
                if n == 1 {
                    bumped.push(g.cart_id.clone());
                }
            }
            Ok(bumped)
        }
        .boxed()
    }

    fn insert_carts<'a>(&'a mut self, rows: &'a [CartRow]) -> Fut<'a, ()> {
        async move {
            for row in rows {
                diesel::insert_into(carts::table)
                    .values(row)
                    .execute(self)
                    .await?;
            }
            Ok(())
        }
        .boxed()
    }

    fn put_cart_items<'a>(&'a mut self, rows: &'a [CartItemRow]) -> Fut<'a, ()> {
        async move {
            for row in rows {
                diesel::insert_into(cart_items::table)
                    .values(row)
                    .on_conflict((cart_items::cart_id, cart_items::sku))
                    .do_update()
                    .set((
                        cart_items::name.eq(&row.name),
                        cart_items::quantity.eq(row.quantity),
                        cart_items::unit_price.eq(row.unit_price),
                    ))
                    .execute(self)
                    .await?;
            }
            Ok(())
        }
        .boxed()
    }

    fn delete_cart_items<'a>(&'a mut self, lines: &'a [(String, String)]) -> Fut<'a, ()> {
        async move {
            for (cart_id, sku) in lines {
                diesel::delete(
                    cart_items::table
                        .filter(cart_items::cart_id.eq(cart_id))
                        .filter(cart_items::sku.eq(sku)),
                )
                .execute(self)
                .await?;
            }
            Ok(())
        }
        .boxed()
    }

    fn insert_movements<'a>(&'a mut self, rows: &'a [NewMovementRow]) -> Fut<'a, ()> {
        async move {
            for row in rows {
                diesel::insert_into(inventory_movements::table)
                    .values(row)
                    .execute(self)
                    .await?;
            }
            Ok(())
        }
        .boxed()
    }

    fn insert_outbox<'a>(&'a mut self, rows: &'a [NewOutboxRow]) -> Fut<'a, ()> {
        async move {
            for row in rows {
                diesel::insert_into(outbox::table)
                    .values(row)
                    .execute(self)
                    .await?;
            }
            Ok(())
        }
        .boxed()
    }

    order_writes!();
    batch_ids!();
}
