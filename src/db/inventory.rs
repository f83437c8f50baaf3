//! Queries on `inventory`, `reservations` and `inventory_movements`.
//!
//! Stock counters change after creation only through a [`StockWrite`] handed
//! to the write pipeline (`crate::db::pipeline`): reservation rows removed
//! and inserted, the counter deltas applied by a *guarded* UPDATE (it only
//! matches while the result keeps invariant I1), the movements and outbox
//! events appended. If another engine process got there first (a reservation
//! already gone, or the guard no longer holding), the pipeline refuses the
//! write and the SKU actor reloads and plans again.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};

use super::events::NewEventRow;
use super::outbox::NewOutboxRow;
use super::schema::{inventory, inventory_movements, reservations};
use super::{DbConn, SqliteConn};
use crate::with_conn;

#[derive(Debug, Clone, PartialEq, Eq, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = inventory)]
pub struct InventoryRow {
    pub sku: String,
    pub on_hand: i64,
    pub reserved: i64,
    pub version: i64,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = reservations, treat_none_as_default_value = false)]
pub struct ReservationRow {
    pub id: String,
    pub sku: String,
    pub order_id: String,
    pub quantity: i64,
    pub expires_at: NaiveDateTime,
    pub created_at: NaiveDateTime,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = inventory_movements, treat_none_as_default_value = false)]
pub struct NewMovementRow {
    pub id: String,
    pub sku: String,
    pub kind: String,
    pub on_hand_delta: i64,
    pub reserved_delta: i64,
    pub order_id: Option<String>,
    pub note: Option<String>,
    pub created_at: NaiveDateTime,
}

/// Everything one group commit of a SKU actor writes: the write pipeline's
/// stock part (`crate::db::pipeline`). The counter deltas are summed over the
/// batch (one guarded delta per SKU per transaction); the reservation rows
/// removed and inserted, and the external event, are refusable too.
#[derive(Debug, Clone, Default)]
pub struct StockWrite {
    pub sku: String,
    pub on_hand_delta: i64,
    pub reserved_delta: i64,
    pub inserted: Vec<ReservationRow>,
    pub removed_ids: Vec<String>,
    pub movements: Vec<NewMovementRow>,
    pub events: Vec<NewOutboxRow>,
    /// An external event recorded with the change: if it was recorded
    /// before, the change is refused.
    pub external_event: Option<NewEventRow>,
}

impl StockWrite {
    pub fn new(sku: &str) -> StockWrite {
        StockWrite {
            sku: sku.to_owned(),
            ..StockWrite::default()
        }
    }

    /// Nothing to write (the ops were all refused, or cancelled out).
    pub fn is_empty(&self) -> bool {
        self.on_hand_delta == 0
            && self.reserved_delta == 0
            && self.inserted.is_empty()
            && self.removed_ids.is_empty()
            && self.movements.is_empty()
    }
}

/// The counters and active reservations of one SKU, or `None` if it does not
/// exist. Both are read from one snapshot (REPEATABLE READ on PostgreSQL, a
/// read transaction on SQLite's WAL), so a concurrent write by another engine
/// process can never make them disagree.
pub async fn load(
    conn: &mut DbConn,
    sku: &str,
) -> QueryResult<Option<(InventoryRow, Vec<ReservationRow>)>> {
    macro_rules! read_both {
        () => {
            async |c| {
                let levels = inventory::table
                    .find(sku)
                    .select(InventoryRow::as_select())
                    .first(c)
                    .await
                    .optional()?;
                let Some(levels) = levels else {
                    return Ok(None);
                };
                let held = reservations::table
                    .filter(reservations::sku.eq(sku))
                    .select(ReservationRow::as_select())
                    .load(c)
                    .await?;
                Ok(Some((levels, held)))
            }
        };
    }
    match conn {
        DbConn::Postgres(c) => {
            c.build_transaction()
                .repeatable_read()
                .read_only()
                .run(read_both!())
                .await
        }
        DbConn::Sqlite(c) => {
            let c: &mut SqliteConn = c;
            c.transaction(read_both!()).await
        }
    }
}

/// Sums of the ledger's `on_hand` and `reserved` deltas for one SKU. With
/// conservation (I2) they equal the current counters.
pub async fn ledger_totals(conn: &mut DbConn, sku: &str) -> QueryResult<(i64, i64)> {
    let deltas: Vec<(i64, i64)> = with_conn!(conn, |c| {
        inventory_movements::table
            .filter(inventory_movements::sku.eq(sku))
            .select((
                inventory_movements::on_hand_delta,
                inventory_movements::reserved_delta,
            ))
            .load(c)
            .await
    })?;
    Ok(deltas
        .into_iter()
        .fold((0, 0), |(a, b), (x, y)| (a + x, b + y)))
}

/// SKUs holding at least one reservation that expired by `now`.
pub async fn skus_with_expired_reservations(
    conn: &mut DbConn,
    now: NaiveDateTime,
    limit: i64,
) -> QueryResult<Vec<String>> {
    with_conn!(conn, |c| {
        reservations::table
            .filter(reservations::expires_at.le(now))
            .select(reservations::sku)
            .distinct()
            .limit(limit)
            .load(c)
            .await
    })
}

/// Whether the ledger holds a movement of `kind` on `sku` for `order_id`
/// (or with exactly `note`): how a resumed saga knows that a commit or a
/// restock it cannot remember already happened.
pub async fn movement_exists(
    conn: &mut DbConn,
    sku: &str,
    kind: &str,
    order_id: Option<&str>,
    note: Option<&str>,
) -> QueryResult<bool> {
    with_conn!(conn, |c| {
        let mut query = inventory_movements::table
            .filter(inventory_movements::sku.eq(sku))
            .filter(inventory_movements::kind.eq(kind))
            .select(inventory_movements::id)
            .into_boxed();
        if let Some(order_id) = order_id {
            query = query.filter(inventory_movements::order_id.eq(order_id));
        }
        if let Some(note) = note {
            query = query.filter(inventory_movements::note.eq(note));
        }
        query
            .first::<String>(c)
            .await
            .optional()
            .map(|m| m.is_some())
    })
}
