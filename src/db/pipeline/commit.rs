//! One batch of the write pipeline: the waiting write-sets merged into one
//! transaction of multi-row statements.
//!
//! The refusable statements run first and report per row; a write-set with a
//! refused part is dropped and the transaction is rolled back and run again
//! without it, so its batch-mates commit and nothing of it is written. (A
//! refusal means another process got there first; it is rare, and a second
//! round costs less than a savepoint per write-set in every batch.) A
//! statement that fails for another reason is retried write-set by write-set,
//! so one bad write-set cannot fail its batch-mates. If the connection drops
//! during COMMIT, the batch's id, written inside it, is looked up before
//! anyone is answered.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{NaiveDateTime, Utc};
use diesel_async::{AsyncConnection, TransactionManager};

use super::statements::{CartGuard, Delta, Statements};
use super::writeset::{OrderWrite, Receipt, Refusal, WriteSet};
use super::WriteError;
use crate::db::carts::{CartItemRow, CartRow, CartWrite, LineWrite};
use crate::db::events::NewEventRow;
use crate::db::inventory::{InventoryRow, NewMovementRow, ReservationRow};
use crate::db::outbox::NewOutboxRow;
use crate::db::{Database, DbError};
use crate::with_conn;

/// How long an unknown commit outcome is looked up before the batch is
/// answered as unavailable (its actors then reload what is true).
const RESOLVE_ATTEMPTS: u32 = 10;
const RESOLVE_BACKOFF: Duration = Duration::from_millis(100);

/// Writes `sets` in as few transactions as refusals allow; one answer per
/// write-set, in order.
pub(super) async fn commit(db: &Database, sets: &[WriteSet]) -> Vec<Result<Receipt, WriteError>> {
    let mut answers: Vec<Option<Result<Receipt, WriteError>>> = vec![None; sets.len()];
    loop {
        let live: Vec<usize> = (0..sets.len()).filter(|&i| answers[i].is_none()).collect();
        if live.is_empty() {
            break;
        }
        match attempt(db, sets, &live).await {
            Ok(receipts) => {
                for (i, receipt) in live.into_iter().zip(receipts) {
                    answers[i] = Some(Ok(receipt));
                }
            }
            Err(Abort::Refused(refused)) => {
                for (i, refusal) in refused {
                    metrics::counter!("pipeline_refused_total", "reason" => refusal.reason())
                        .increment(1);
                    answers[i] = Some(Err(WriteError::Refused(refusal)));
                }
            }
            Err(Abort::Failed(e)) if live.len() > 1 && !e.is_unavailable() => {
                // Find the write-set at fault: each alone.
                for i in live {
                    let alone = Box::pin(commit(db, std::slice::from_ref(&sets[i]))).await;
                    answers[i] = alone.into_iter().next();
                }
            }
            Err(Abort::Failed(e)) => {
                let error = WriteError::from_db(&e);
                for i in live {
                    answers[i] = Some(Err(error.clone()));
                }
            }
            Err(Abort::Unresolved(cause)) => {
                for i in live {
                    answers[i] = Some(Err(WriteError::Unavailable(cause.clone())));
                }
            }
        }
    }
    answers
        .into_iter()
        .map(|a| a.expect("every write-set is answered"))
        .collect()
}

enum Abort {
    /// Rolled back: these write-sets (by index into the batch) were refused.
    Refused(Vec<(usize, Refusal)>),
    /// Nothing was written.
    Failed(DbError),
    /// The commit's fate could not be learned.
    Unresolved(String),
}

async fn attempt(db: &Database, sets: &[WriteSet], live: &[usize]) -> Result<Vec<Receipt>, Abort> {
    let merged = Merged::of(sets, live);
    let batch_id = uuid::Uuid::now_v7().to_string();
    let now = Utc::now().naive_utc();
    let mut conn = db.conn().await.map_err(Abort::Failed)?;
    let outcome = with_conn!(&mut conn, |c| run(c, &merged, &batch_id, now).await);
    match outcome {
        Ok(receipts) => {
            metrics::counter!("pipeline_commits_total").increment(1);
            Ok(receipts)
        }
        Err(Run::Refused(refused)) => Err(Abort::Refused(
            refused.into_iter().map(|(k, r)| (live[k], r)).collect(),
        )),
        Err(Run::Failed(e)) => Err(Abort::Failed(DbError::Query(e))),
        Err(Run::CommitUnknown(e, receipts)) => {
            drop(conn);
            tracing::warn!(batch = %batch_id, error = %e, "the connection failed during COMMIT; looking the batch up");
            match resolve(db, &batch_id).await {
                Some(true) => {
                    metrics::counter!("pipeline_commits_total").increment(1);
                    Ok(receipts)
                }
                Some(false) => Err(Abort::Failed(DbError::Query(e))),
                None => Err(Abort::Unresolved(format!(
                    "the outcome of a commit is unknown: {e}"
                ))),
            }
        }
    }
}

enum Run {
    /// Rolled back; by index into the merged write-sets.
    Refused(Vec<(usize, Refusal)>),
    Failed(diesel::result::Error),
    /// The body ran; COMMIT failed, so the batch may or may not have committed.
    CommitUnknown(diesel::result::Error, Vec<Receipt>),
}

async fn run<C>(
    c: &mut C,
    merged: &Merged<'_>,
    batch_id: &str,
    now: NaiveDateTime,
) -> Result<Vec<Receipt>, Run>
where
    C: AsyncConnection + Statements,
{
    C::TransactionManager::begin_transaction(c)
        .await
        .map_err(Run::Failed)?;
    match body(c, merged, batch_id, now).await {
        Ok(receipts) => match C::TransactionManager::commit_transaction(c).await {
            Ok(()) => Ok(receipts),
            Err(e) => Err(Run::CommitUnknown(e, receipts)),
        },
        Err(abort) => {
            if let Err(e) = C::TransactionManager::rollback_transaction(c).await {
                tracing::warn!(error = %e, "rolling a pipeline batch back failed");
            }
            Err(abort)
        }
    }
}

/// The batch's statements: the refusable ones first.
async fn body<C>(
    c: &mut C,
    m: &Merged<'_>,
    batch_id: &str,
    now: NaiveDateTime,
) -> Result<Vec<Receipt>, Run>
where
    C: Statements,
{
    let mut refused = Refusals::default();

    if !m.external_events.is_empty() {
        let rows: Vec<NewEventRow> = m
            .external_events
            .iter()
            .map(|(_, r)| (*r).clone())
            .collect();
        let recorded = c.record_events(&rows).await.map_err(Run::Failed)?;
        for (owner, row) in &m.external_events {
            if !recorded.contains(&row.id) {
                refused.add(*owner, Refusal::DuplicateEvent);
            }
        }
        refused.check()?;
    }
    if !m.removed.is_empty() {
        let ids: Vec<String> = m.removed.iter().map(|(_, _, id)| (*id).clone()).collect();
        let deleted = c.delete_reservations(&ids).await.map_err(Run::Failed)?;
        for (owner, sku, id) in &m.removed {
            if !deleted.contains(id) {
                refused.add(*owner, stock_changed(sku));
            }
        }
        refused.check()?;
    }
    if !m.inserted.is_empty() {
        let rows: Vec<ReservationRow> = m.inserted.iter().map(|(_, r)| (*r).clone()).collect();
        let inserted = c.insert_reservations(&rows).await.map_err(Run::Failed)?;
        for (owner, row) in &m.inserted {
            if !inserted.contains(&row.id) {
                refused.add(*owner, stock_changed(&row.sku));
            }
        }
        refused.check()?;
    }
    let mut levels: HashMap<String, InventoryRow> = HashMap::new();
    if !m.deltas.is_empty() {
        let deltas: Vec<Delta> = m.deltas.iter().map(|(_, d)| d.clone()).collect();
        let applied = c.apply_deltas(&deltas, now).await.map_err(Run::Failed)?;
        levels = applied.into_iter().map(|r| (r.sku.clone(), r)).collect();
        for (owner, delta) in &m.deltas {
            if !levels.contains_key(&delta.sku) {
                refused.add(*owner, stock_changed(&delta.sku));
            }
        }
        refused.check()?;
    }
    if !m.cart_guards.is_empty() {
        let guards: Vec<CartGuard> = m.cart_guards.iter().map(|(_, g)| g.clone()).collect();
        let bumped = c.bump_carts(&guards, now).await.map_err(Run::Failed)?;
        for (owner, guard) in &m.cart_guards {
            if !bumped.contains(&guard.cart_id) {
                refused.add(
                    *owner,
                    Refusal::CartChanged {
                        cart_id: guard.cart_id.clone(),
                    },
                );
            }
        }
        refused.check()?;
    }
    // An order's writes run whole, its guards first: a refused one stops
    // the batch, which runs again without it.
    for (owner, write) in &m.orders {
        if let Some(refusal) = c.write_order(write).await.map_err(Run::Failed)? {
            refused.add(*owner, refusal);
            refused.check()?;
        }
    }

    if !m.new_carts.is_empty() {
        c.insert_carts(&m.new_carts).await.map_err(Run::Failed)?;
    }
    if !m.deleted_lines.is_empty() {
        c.delete_cart_items(&m.deleted_lines)
            .await
            .map_err(Run::Failed)?;
    }
    if !m.put_lines.is_empty() {
        c.put_cart_items(&m.put_lines).await.map_err(Run::Failed)?;
    }
    if !m.movements.is_empty() {
        c.insert_movements(&m.movements)
            .await
            .map_err(Run::Failed)?;
    }
    if !m.outbox.is_empty() {
        c.insert_outbox(&m.outbox).await.map_err(Run::Failed)?;
    }
    c.mark_batch(batch_id, now).await.map_err(Run::Failed)?;

    Ok(m.sets
        .iter()
        .map(|set| Receipt {
            stock: set
                .stock
                .iter()
                .filter_map(|s| levels.get(&s.sku).cloned())
                .collect(),
        })
        .collect())
}

fn stock_changed(sku: &str) -> Refusal {
    Refusal::StockChanged {
        sku: sku.to_owned(),
    }
}

/// Refusals found so far, one per write-set.
#[derive(Default)]
struct Refusals(Vec<(usize, Refusal)>);

impl Refusals {
    fn add(&mut self, owner: usize, refusal: Refusal) {
        if !self.0.iter().any(|(o, _)| *o == owner) {
            self.0.push((owner, refusal));
        }
    }

    /// Stops the batch at the first statement that refused anything.
    fn check(&mut self) -> Result<(), Run> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Run::Refused(std::mem::take(&mut self.0)))
        }
    }
}

/// The live write-sets' parts, merged per table, each refusable row
/// remembering its write-set (by index into `sets`).
struct Merged<'a> {
    sets: Vec<&'a WriteSet>,
    external_events: Vec<(usize, &'a NewEventRow)>,
    removed: Vec<(usize, &'a str, &'a String)>,
    inserted: Vec<(usize, &'a ReservationRow)>,
    deltas: Vec<(usize, Delta)>,
    cart_guards: Vec<(usize, CartGuard)>,
    orders: Vec<(usize, &'a OrderWrite)>,
    new_carts: Vec<CartRow>,
    deleted_lines: Vec<(String, String)>,
    put_lines: Vec<CartItemRow>,
    movements: Vec<NewMovementRow>,
    outbox: Vec<NewOutboxRow>,
}

impl<'a> Merged<'a> {
    fn of(all: &'a [WriteSet], live: &[usize]) -> Merged<'a> {
        let mut m = Merged {
            sets: live.iter().map(|&i| &all[i]).collect(),
            external_events: Vec::new(),
            removed: Vec::new(),
            inserted: Vec::new(),
            deltas: Vec::new(),
            cart_guards: Vec::new(),
            orders: Vec::new(),
            new_carts: Vec::new(),
            deleted_lines: Vec::new(),
            put_lines: Vec::new(),
            movements: Vec::new(),
            outbox: Vec::new(),
        };
        for (k, &i) in live.iter().enumerate() {
            let set = &all[i];
            for s in &set.stock {
                if let Some(event) = &s.external_event {
                    m.external_events.push((k, event));
                }
                m.removed
                    .extend(s.removed_ids.iter().map(|id| (k, s.sku.as_str(), id)));
                m.inserted.extend(s.inserted.iter().map(|r| (k, r)));
                // Always applied, even at zero: it checks the row exists,
                // moves its version, and returns the counters.
                m.deltas.push((
                    k,
                    Delta {
                        sku: s.sku.clone(),
                        on_hand: s.on_hand_delta,
                        reserved: s.reserved_delta,
                    },
                ));
                m.movements.extend(s.movements.iter().cloned());
                m.outbox.extend(s.events.iter().cloned());
            }
            for cart in &set.carts {
                match cart {
                    CartWrite::Create(row) => m.new_carts.push(row.clone()),
                    CartWrite::Line {
                        cart_id,
                        version,
                        change,
                    } => {
                        m.cart_guards.push((
                            k,
                            CartGuard {
                                cart_id: cart_id.clone(),
                                version: *version,
                            },
                        ));
                        match change {
                            LineWrite::Put(row) => m.put_lines.push(row.clone()),
                            LineWrite::Delete { sku } => {
                                m.deleted_lines.push((cart_id.clone(), sku.clone()))
                            }
                        }
                    }
                }
            }
            m.orders.extend(set.orders.iter().map(|o| (k, o)));
            m.outbox.extend(set.events.iter().cloned());
        }
        m
    }
}

/// Whether batch `id` committed: `None` if the database cannot say.
async fn resolve(db: &Database, id: &str) -> Option<bool> {
    for attempt in 1..=RESOLVE_ATTEMPTS {
        match db.conn().await {
            Ok(mut conn) => match with_conn!(&mut conn, |c| c.batch_committed(id).await) {
                Ok(found) => return Some(found),
                Err(e) => tracing::debug!(error = %e, "looking a batch up failed"),
            },
            Err(e) => tracing::debug!(error = %e, "no connection to look a batch up"),
        }
        tokio::time::sleep(RESOLVE_BACKOFF * attempt).await;
    }
    None
}

/// Forgets batch ids older than `age`: they are only ever looked up right
/// after their own commit.
pub(super) async fn forget_old_batches(db: &Database, age: chrono::Duration) {
    let before = Utc::now().naive_utc() - age;
    let result = match db.conn().await {
        Ok(mut conn) => {
            with_conn!(&mut conn, |c| c.forget_batches(before).await).map_err(DbError::from)
        }
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "forgetting old pipeline batch ids failed; next time");
    }
}
