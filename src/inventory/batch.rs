//! One group commit of a SKU actor, as a plain async function: plan the queued
//! operations against the stock, hand the plan to the write pipeline (where
//! it shares a transaction with other actors' writes), and when the pipeline
//! refuses it because another engine process changed the SKU, reload and
//! plan again.
//!
//! Refusals are truthful (I8): before answering `out_of_stock` or "no such
//! reservation" the stock is reloaded from the database once, because another
//! process may have released stock this actor has not seen.

use chrono::{NaiveDateTime, Utc};
use serde_json::json;

use crate::db::events::NewEventRow;
use crate::db::inventory::{self, NewMovementRow, ReservationRow, StockWrite};
use crate::db::outbox::NewOutboxRow;
use crate::db::pipeline::{Admit, Pipeline, Refusal, WriteError, WriteSet};
use crate::db::{Database, DbError};
use crate::domain::inventory::{
    Reservation, SkuStock, StockChange, StockError, StockLevels, StockOp, StockOutcome,
};

/// Plan-and-write attempts before a batch gives up under contention.
const MAX_ATTEMPTS: usize = 4;

/// The stock as last committed, with its row version.
#[derive(Debug, Clone)]
pub struct Committed {
    pub stock: SkuStock,
    pub version: i64,
    /// Set when a write committed but the state could not be re-read
    /// afterwards: the levels the write itself returned, to report instead
    /// of this (stale) view. Reload before the next batch.
    pub stale_levels: Option<StockLevels>,
}

pub type OpResult = Result<StockOutcome, StockError>;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("no such SKU")]
    UnknownSku,
    #[error("stored stock is inconsistent: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Why a batch was not written.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The external event that asked for this change was already recorded.
    #[error("external event already recorded")]
    DuplicateEvent,
    /// The write pipeline did not write the batch (full, or the database
    /// unreachable): nothing is known to be written; reload.
    #[error(transparent)]
    Write(WriteError),
}

/// A batch of reservations only is new work, turned away when the pipeline
/// is full; one that commits, releases or restocks finishes work admitted
/// before, and is always admitted.
fn admission(ops: &[StockOp]) -> Admit {
    if ops.iter().all(|op| matches!(op, StockOp::Reserve { .. })) {
        Admit::New
    } else {
        Admit::Always
    }
}

impl From<DbError> for RunError {
    fn from(e: DbError) -> Self {
        RunError::Load(LoadError::Db(e))
    }
}

pub async fn load(db: &Database, sku: &str) -> Result<Committed, LoadError> {
    let mut conn = db.conn().await?;
    let (levels, rows) = inventory::load(&mut conn, sku)
        .await
        .map_err(DbError::from)?
        .ok_or(LoadError::UnknownSku)?;
    let reservations = rows
        .into_iter()
        .map(to_reservation)
        .collect::<Result<Vec<_>, _>>()?;
    let stock = SkuStock::new(
        StockLevels {
            on_hand: levels.on_hand,
            reserved: levels.reserved,
        },
        reservations,
    )
    .map_err(LoadError::Corrupt)?;
    Ok(Committed {
        stock,
        version: levels.version,
        stale_levels: None,
    })
}

fn to_reservation(row: ReservationRow) -> Result<Reservation, LoadError> {
    let parse = |s: &str| {
        uuid::Uuid::parse_str(s).map_err(|e| LoadError::Corrupt(format!("bad uuid `{s}`: {e}")))
    };
    Ok(Reservation {
        id: parse(&row.id)?,
        order_id: parse(&row.order_id)?,
        quantity: row.quantity,
        expires_at: row.expires_at.and_utc(),
    })
}

/// Runs one batch. On success returns the new committed state and one result
/// per operation, in order. `external_event` is recorded in the batch's
/// transaction; a batch carrying one should carry nothing else, so that a
/// duplicate refuses only its own change.
pub async fn run(
    db: &Database,
    pipeline: &Pipeline,
    sku: &str,
    mut current: Committed,
    ops: &[StockOp],
    low_stock_threshold: i64,
    external_event: Option<&NewEventRow>,
) -> Result<(Committed, Vec<OpResult>), RunError> {
    let mut reloaded = false;
    for _ in 0..MAX_ATTEMPTS {
        let mut working = current.stock.clone();
        let now = Utc::now().naive_utc();
        let (results, mut batch) = plan(sku, &mut working, ops, now, low_stock_threshold);
        let doubtful = results.iter().any(|r| {
            matches!(
                r,
                Err(StockError::OutOfStock { .. } | StockError::ReservationNotFound { .. })
            )
        });
        if doubtful && !reloaded {
            current = load(db, sku).await?;
            reloaded = true;
            continue;
        }
        if batch.is_empty() {
            return Ok((current_with(working, current.version), results));
        }
        batch.external_event = external_event.cloned();
        match pipeline.write(WriteSet::stock(batch), admission(ops)).await {
            Ok(receipt) => {
                let Some(levels) = receipt.stock.into_iter().next() else {
                    return Err(RunError::Write(WriteError::Failed(format!(
                        "the pipeline returned no counters for {sku}"
                    ))));
                };
                let expected = working.levels();
                if (levels.on_hand, levels.reserved) != (expected.on_hand, expected.reserved) {
                    // Another process changed this SKU too: our view is stale.
                    // The batch committed whatever happens next, so its results
                    // stand; only the state needs a fresh read.
                    return Ok(match load(db, sku).await {
                        Ok(fresh) => (fresh, results),
                        Err(e) => {
                            tracing::warn!(sku, error = %e, "re-reading inventory after a commit failed");
                            let mut committed = current_with(working, levels.version);
                            committed.stale_levels = Some(StockLevels {
                                on_hand: levels.on_hand,
                                reserved: levels.reserved,
                            });
                            (committed, results)
                        }
                    });
                }
                return Ok((current_with(working, levels.version), results));
            }
            Err(WriteError::Refused(Refusal::DuplicateEvent)) => {
                return Err(RunError::DuplicateEvent)
            }
            Err(WriteError::Refused(_)) => {
                current = load(db, sku).await?;
                reloaded = true;
            }
            Err(e) => return Err(RunError::Write(e)),
        }
    }
    Err(DbError::Unavailable(format!(
        "inventory of {sku} kept changing under {MAX_ATTEMPTS} attempts"
    ))
    .into())
}

fn current_with(stock: SkuStock, version: i64) -> Committed {
    Committed {
        stock,
        version,
        stale_levels: None,
    }
}

/// Applies `ops` in order to `stock` and collects what must be written,
/// including `inventory.low_stock` when availability falls below the threshold.
pub fn plan(
    sku: &str,
    stock: &mut SkuStock,
    ops: &[StockOp],
    now: NaiveDateTime,
    low_stock_threshold: i64,
) -> (Vec<OpResult>, StockWrite) {
    let mut batch = StockWrite::new(sku);
    let before = stock.levels().available();
    let results = ops
        .iter()
        .map(|op| {
            let change = stock.apply(op)?;
            add_change(sku, &mut batch, &change, now);
            Ok(change.outcome)
        })
        .collect();
    let after = stock.levels().available();
    if before >= low_stock_threshold && after < low_stock_threshold {
        batch.events.push(NewOutboxRow::new(
            "inventory.low_stock",
            sku,
            &json!({ "sku": sku, "available": after, "threshold": low_stock_threshold }),
            now,
        ));
    }
    (results, batch)
}

fn add_change(sku: &str, batch: &mut StockWrite, change: &StockChange, now: NaiveDateTime) {
    batch.on_hand_delta += change.on_hand_delta;
    batch.reserved_delta += change.reserved_delta;
    if let Some(r) = &change.inserted {
        batch.inserted.push(ReservationRow {
            id: r.id.to_string(),
            sku: sku.to_owned(),
            order_id: r.order_id.to_string(),
            quantity: r.quantity,
            expires_at: r.expires_at.naive_utc(),
            created_at: now,
        });
        batch.events.push(NewOutboxRow::new(
            "inventory.reserved",
            sku,
            &json!({ "sku": sku, "order_id": r.order_id, "reservation_id": r.id, "quantity": r.quantity, "expires_at": r.expires_at }),
            now,
        ));
    }
    for r in &change.removed {
        let id = r.id.to_string();
        // Reserved and removed within one batch: neither row is written.
        if let Some(pos) = batch.inserted.iter().position(|row| row.id == id) {
            batch.inserted.remove(pos);
        } else {
            batch.removed_ids.push(id);
        }
    }
    for m in &change.movements {
        batch.movements.push(NewMovementRow {
            id: uuid::Uuid::now_v7().to_string(),
            sku: sku.to_owned(),
            kind: m.kind.as_str().to_owned(),
            on_hand_delta: m.on_hand_delta,
            reserved_delta: m.reserved_delta,
            order_id: m.order_id.map(|o| o.to_string()),
            note: m.note.clone(),
            created_at: now,
        });
    }
    let event = match &change.outcome {
        StockOutcome::Released(Some(r)) => Some((
            "inventory.released",
            json!({ "sku": sku, "order_id": r.order_id, "quantity": r.quantity, "reason": "released" }),
        )),
        StockOutcome::Expired(expired) if !expired.is_empty() => Some((
            "inventory.released",
            json!({ "sku": sku, "reason": "expired", "reservations": expired.iter().map(|r| json!({"order_id": r.order_id, "quantity": r.quantity})).collect::<Vec<_>>() }),
        )),
        StockOutcome::Restocked | StockOutcome::Adjusted => Some((
            "inventory.restocked",
            json!({ "sku": sku, "on_hand_delta": change.on_hand_delta }),
        )),
        StockOutcome::Reserved(_)
        | StockOutcome::AlreadyReserved(_)
        | StockOutcome::Committed(_)
        | StockOutcome::Released(None)
        | StockOutcome::Expired(_) => None,
    };
    if let Some((event_type, payload)) = event {
        batch
            .events
            .push(NewOutboxRow::new(event_type, sku, &payload, now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;
    use uuid::Uuid;

    fn reserve(order: u128, quantity: i64) -> StockOp {
        StockOp::Reserve {
            reservation_id: Uuid::from_u128(order + 100),
            order_id: Uuid::from_u128(order),
            quantity,
            expires_at: Utc::now() + Duration::minutes(15),
        }
    }

    #[test]
    fn one_batch_sums_counters_and_answers_each_op_in_order() {
        let mut stock = SkuStock::new(
            StockLevels {
                on_hand: 2,
                reserved: 0,
            },
            Vec::new(),
        )
        .unwrap();
        let now = Utc::now().naive_utc();
        let (results, batch) = plan(
            "s",
            &mut stock,
            &[reserve(1, 1), reserve(2, 1), reserve(3, 1)],
            now,
            0,
        );
        assert!(matches!(results[0], Ok(StockOutcome::Reserved(_))));
        assert!(matches!(results[1], Ok(StockOutcome::Reserved(_))));
        assert!(matches!(
            results[2],
            Err(StockError::OutOfStock {
                requested: 1,
                available: 0
            })
        ));
        assert_eq!(batch.reserved_delta, 2);
        assert_eq!(batch.inserted.len(), 2);
        assert_eq!(batch.movements.len(), 2);
        assert_eq!(batch.events.len(), 2);
    }

    #[test]
    fn falling_below_the_threshold_emits_low_stock_once() {
        let mut stock = SkuStock::new(
            StockLevels {
                on_hand: 6,
                reserved: 0,
            },
            Vec::new(),
        )
        .unwrap();
        let now = Utc::now().naive_utc();
        let (_, batch) = plan("s", &mut stock, &[reserve(1, 1)], now, 5);
        assert!(batch
            .events
            .iter()
            .all(|e| e.event_type != "inventory.low_stock"));
        let (_, batch) = plan("s", &mut stock, &[reserve(2, 1)], now, 5);
        assert_eq!(
            batch
                .events
                .iter()
                .filter(|e| e.event_type == "inventory.low_stock")
                .count(),
            1
        );
        let (_, batch) = plan("s", &mut stock, &[reserve(3, 1)], now, 5);
        assert!(batch
            .events
            .iter()
            .all(|e| e.event_type != "inventory.low_stock"));
    }

    #[test]
    fn reserve_then_release_in_one_batch_writes_no_rows() {
        let mut stock = SkuStock::new(
            StockLevels {
                on_hand: 2,
                reserved: 0,
            },
            Vec::new(),
        )
        .unwrap();
        let now = Utc::now().naive_utc();
        let ops = [
            reserve(1, 1),
            StockOp::Release {
                order_id: Uuid::from_u128(1),
            },
        ];
        let (_, batch) = plan("s", &mut stock, &ops, now, 0);
        assert_eq!(batch.reserved_delta, 0);
        assert!(batch.inserted.is_empty() && batch.removed_ids.is_empty());
    }
}
