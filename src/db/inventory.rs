//! Queries on `inventory`, `reservations` and `inventory_movements`.
//!
//! [`write_batch`] is the only way stock counters change after creation: one
//! transaction that removes and inserts reservation rows, applies the counter
//! deltas with a *guarded* UPDATE (it only matches while the result keeps
//! invariant I1), appends the movements and the outbox events. If another
//! engine process got there first (a reservation already gone, or the guard no
//! longer holding), nothing is written and the caller reloads and retries.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::events::NewEventRow;
use super::outbox::NewOutboxRow;
use super::schema::{events, inventory, inventory_movements, outbox, reservations};
use super::{DbConn, SqliteConn};
use crate::with_conn;

/// Multi-row inserts for a group commit. PostgreSQL takes one statement per
/// table; diesel-async's SQLite wrapper has no multi-row insert, so SQLite
/// gets one statement per row, which in-process costs microseconds.
trait InsertRows {
    fn insert_reservations<'a>(
        &'a mut self,
        rows: &'a [ReservationRow],
    ) -> BoxFuture<'a, QueryResult<usize>>;
    fn insert_movements<'a>(
        &'a mut self,
        rows: &'a [NewMovementRow],
    ) -> BoxFuture<'a, QueryResult<usize>>;
    fn insert_events<'a>(
        &'a mut self,
        rows: &'a [NewOutboxRow],
    ) -> BoxFuture<'a, QueryResult<usize>>;
}

impl InsertRows for AsyncPgConnection {
    fn insert_reservations<'a>(
        &'a mut self,
        rows: &'a [ReservationRow],
    ) -> BoxFuture<'a, QueryResult<usize>> {
        diesel::insert_into(reservations::table)
            .values(rows)
            .execute(self)
            .boxed()
    }
    fn insert_movements<'a>(
        &'a mut self,
        rows: &'a [NewMovementRow],
    ) -> BoxFuture<'a, QueryResult<usize>> {
        diesel::insert_into(inventory_movements::table)
            .values(rows)
            .execute(self)
            .boxed()
    }
    fn insert_events<'a>(
        &'a mut self,
        rows: &'a [NewOutboxRow],
    ) -> BoxFuture<'a, QueryResult<usize>> {
        diesel::insert_into(outbox::table)
            .values(rows)
            .execute(self)
            .boxed()
    }
}

/// One INSERT per row, in the caller's transaction.
macro_rules! insert_each {
    ($conn:expr, $table:expr, $rows:expr) => {
        async move {
            let mut inserted = 0;
            for row in $rows {
                inserted += diesel::insert_into($table)
                    .values(row)
                    .execute($conn)
                    .await?;
            }
            Ok(inserted)
        }
        .boxed()
    };
}

impl InsertRows for SqliteConn {
    fn insert_reservations<'a>(
        &'a mut self,
        rows: &'a [ReservationRow],
    ) -> BoxFuture<'a, QueryResult<usize>> {
        insert_each!(self, reservations::table, rows)
    }
    fn insert_movements<'a>(
        &'a mut self,
        rows: &'a [NewMovementRow],
    ) -> BoxFuture<'a, QueryResult<usize>> {
        insert_each!(self, inventory_movements::table, rows)
    }
    fn insert_events<'a>(
        &'a mut self,
        rows: &'a [NewOutboxRow],
    ) -> BoxFuture<'a, QueryResult<usize>> {
        insert_each!(self, outbox::table, rows)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
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

/// Everything one group commit writes for one SKU.
#[derive(Debug, Default)]
pub struct BatchWrite {
    pub on_hand_delta: i64,
    pub reserved_delta: i64,
    pub inserted: Vec<ReservationRow>,
    pub removed_ids: Vec<String>,
    pub movements: Vec<NewMovementRow>,
    pub events: Vec<NewOutboxRow>,
}

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The database state moved under us (another process); nothing written.
    #[error("inventory changed concurrently")]
    Conflict,
    /// The external event carried by the batch was already recorded: the
    /// change it asks for was applied before; nothing written.
    #[error("external event already recorded")]
    DuplicateEvent,
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
}

/// A reservation row that already exists means another process reserved
/// for this order first: a conflict, not a failure.
fn conflict_on_unique_violation(e: diesel::result::Error) -> BatchError {
    match e {
        diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            _,
        ) => BatchError::Conflict,
        other => contention_as_conflict(other),
    }
}

/// Serialization failures and deadlocks between engine processes are
/// contention, not faults: the batch is re-planned and retried.
fn contention_as_conflict(e: diesel::result::Error) -> BatchError {
    use diesel::result::{DatabaseErrorKind, Error};
    match e {
        Error::DatabaseError(DatabaseErrorKind::SerializationFailure, _) => BatchError::Conflict,
        Error::DatabaseError(_, info) if info.message().contains("deadlock detected") => {
            BatchError::Conflict
        }
        other => BatchError::Query(other),
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

/// Writes one batch atomically and returns the counters after it. An
/// `external_event` is recorded in the same transaction, first: if it was
/// recorded before, nothing is written ([`BatchError::DuplicateEvent`]).
pub async fn write_batch(
    conn: &mut DbConn,
    sku: &str,
    batch: &BatchWrite,
    external_event: Option<&NewEventRow>,
    now: NaiveDateTime,
) -> Result<InventoryRow, BatchError> {
    let (d_on_hand, d_reserved) = (batch.on_hand_delta, batch.reserved_delta);
    with_conn!(conn, |c| {
        c.transaction::<_, BatchError, _>(async |c| {
            if let Some(event) = external_event {
                let recorded = diesel::insert_into(events::table)
                    .values(event)
                    .on_conflict_do_nothing()
                    .execute(c)
                    .await?;
                if recorded == 0 {
                    return Err(BatchError::DuplicateEvent);
                }
            }
            if !batch.removed_ids.is_empty() {
                let removed = diesel::delete(
                    reservations::table
                        .filter(reservations::sku.eq(sku))
                        .filter(reservations::id.eq_any(&batch.removed_ids)),
                )
                .execute(c)
                .await?;
                if removed != batch.removed_ids.len() {
                    return Err(BatchError::Conflict);
                }
            }
            if !batch.inserted.is_empty() {
                let inserted = c
                    .insert_reservations(&batch.inserted)
                    .await
                    .map_err(conflict_on_unique_violation)?;
                if inserted != batch.inserted.len() {
                    return Err(BatchError::Conflict);
                }
            }
            let levels = diesel::update(
                inventory::table
                    .filter(inventory::sku.eq(sku))
                    .filter((inventory::on_hand + d_on_hand).ge(inventory::reserved + d_reserved))
                    .filter((inventory::reserved + d_reserved).ge(0_i64)),
            )
            .set((
                inventory::on_hand.eq(inventory::on_hand + d_on_hand),
                inventory::reserved.eq(inventory::reserved + d_reserved),
                inventory::version.eq(inventory::version + 1_i64),
                inventory::updated_at.eq(now),
            ))
            .returning(InventoryRow::as_returning())
            .get_result(c)
            .await
            .optional()?
            .ok_or(BatchError::Conflict)?;
            if !batch.movements.is_empty() {
                c.insert_movements(&batch.movements).await?;
            }
            if !batch.events.is_empty() {
                c.insert_events(&batch.events).await?;
            }
            Ok(levels)
        })
        .await
        .map_err(|e| match e {
            // Also at COMMIT: contention there is a conflict too.
            BatchError::Query(q) => contention_as_conflict(q),
            other => other,
        })
    })
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
