//! The saga log and the leases through which processes claim sagas.
//!
//! A process runs a saga only while it holds the saga's lease: the lease row
//! names the owner and an expiry, and it is taken with a guarded UPDATE (any
//! process may take a lease that is free or ran out). The recovery scan picks
//! candidates with `FOR UPDATE SKIP LOCKED` on PostgreSQL, so two processes
//! scanning at once split the work instead of queueing on each other's rows.

use super::orders::{SagaRow, SagaStepRow, StepRecord};
use super::schema::{orders, saga_steps, sagas};
use super::DbConn;
use crate::with_conn;
use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};

pub async fn find(conn: &mut DbConn, order_id: &str) -> QueryResult<Option<SagaRow>> {
    with_conn!(conn, |c| {
        sagas::table
            .find(order_id)
            .select(SagaRow::as_select())
            .first(c)
            .await
            .optional()
    })
}

pub async fn steps(conn: &mut DbConn, order_id: &str) -> QueryResult<Vec<SagaStepRow>> {
    with_conn!(conn, |c| {
        saga_steps::table
            .filter(saga_steps::order_id.eq(order_id))
            .order(saga_steps::started_at.asc())
            .then_order_by(saga_steps::id.asc())
            .select(SagaStepRow::as_select())
            .load(c)
            .await
    })
}

/// Writes a step's record ([`StepRecord`]) in the transaction `$c` is in:
/// inserted, or, if the step has a row already (it ran before: parked,
/// resumed, or taken over), its status, error and finish replaced and the
/// attempts added. One statement on both backends.
macro_rules! upsert_step {
    ($c:expr, $order_id:expr, $step:expr, $finished_at:expr) => {{
        use diesel::upsert::excluded;
        use $crate::db::schema::saga_steps as s;
        let step: &$crate::db::orders::StepRecord = $step;
        diesel::insert_into(s::table)
            .values((
                s::id.eq(uuid::Uuid::now_v7().to_string()),
                s::order_id.eq($order_id),
                s::name.eq(&step.name),
                s::kind.eq(step.kind),
                s::ref_id.eq(&step.ref_id),
                s::status.eq(step.status),
                s::attempt.eq(step.attempts),
                s::error.eq(&step.error),
                s::started_at.eq(step.started_at),
                s::finished_at.eq(Some($finished_at)),
            ))
            .on_conflict((s::order_id, s::name, s::ref_id))
            .do_update()
            .set((
                s::status.eq(excluded(s::status)),
                s::attempt.eq(s::attempt + excluded(s::attempt)),
                s::error.eq(excluded(s::error)),
                s::finished_at.eq(excluded(s::finished_at)),
            ))
            .execute($c)
            .await
    }};
}
pub(crate) use upsert_step;

/// Parks a saga whose step kept failing: it stays unfinished and visible
/// (`stuck` once `sagas.stuck_after_s` passes) until resumed, with the
/// failing step (if it has a name) as its current step and the step's record (attempts, last
/// error) written. Only while `owner` holds it and the order is still at
/// `order_version` (a command that came in meanwhile gives the saga other
/// work); returns whether it did.
pub async fn park(
    conn: &mut DbConn,
    order_id: &str,
    owner: &str,
    order_version: i64,
    step: Option<&StepRecord>,
    now: NaiveDateTime,
) -> QueryResult<bool> {
    with_conn!(conn, |c| {
        c.transaction(async |c| {
            let parked = diesel::update(
                sagas::table
                    .filter(sagas::order_id.eq(order_id))
                    .filter(sagas::lease_owner.eq(owner))
                    .filter(diesel::dsl::exists(
                        orders::table
                            .filter(orders::id.eq(order_id))
                            .filter(orders::version.eq(order_version)),
                    )),
            )
            .set((
                sagas::parked.eq(true),
                sagas::updated_at.eq(now),
                sagas::lease_owner.eq(None::<String>),
                sagas::lease_expires_at.eq(None::<NaiveDateTime>),
            ))
            .execute(c)
            .await?
                == 1;
            if let Some(step) = step.filter(|_| parked) {
                diesel::update(sagas::table.find(order_id))
                    .set(sagas::current_step.eq(&step.name))
                    .execute(c)
                    .await?;
                upsert_step!(c, order_id, step, now)?;
            }
            Ok(parked)
        })
        .await
    })
}

/// Takes (or renews) the lease on one saga for `owner` until `until`, if it
/// is free, ran out, or is already ours. `unpark` also clears a park (an
/// operator's resume, or recovery at start-up).
pub async fn claim(
    conn: &mut DbConn,
    order_id: &str,
    owner: &str,
    now: NaiveDateTime,
    until: NaiveDateTime,
    unpark: bool,
) -> QueryResult<bool> {
    with_conn!(conn, |c| {
        let target = sagas::table.filter(sagas::order_id.eq(order_id)).filter(
            sagas::lease_owner
                .is_null()
                .or(sagas::lease_owner.eq(owner))
                .or(sagas::lease_expires_at.lt(now)),
        );
        let updated = if unpark {
            // An operator's resume also reopens a saga that failed (a
            // compensation the provider refused): it is tried again.
            diesel::update(
                sagas::table
                    .filter(sagas::order_id.eq(order_id))
                    .filter(sagas::state.eq("failed")),
            )
            .set((
                sagas::state.eq("running"),
                sagas::finished_at.eq(None::<NaiveDateTime>),
            ))
            .execute(c)
            .await?;
            diesel::update(target)
                .set((
                    sagas::lease_owner.eq(owner),
                    sagas::lease_expires_at.eq(until),
                    sagas::parked.eq(false),
                ))
                .execute(c)
                .await?
        } else {
            diesel::update(target.filter(sagas::parked.eq(false)))
                .set((
                    sagas::lease_owner.eq(owner),
                    sagas::lease_expires_at.eq(until),
                ))
                .execute(c)
                .await?
        };
        Ok(updated == 1)
    })
}

/// Extends a lease `owner` still holds until `until`: one that ran out but
/// that nobody else took counts (taking it over changes the owner). Never
/// takes a free one. Returns whether it did.
pub async fn renew(
    conn: &mut DbConn,
    order_id: &str,
    owner: &str,
    until: NaiveDateTime,
) -> QueryResult<bool> {
    with_conn!(conn, |c| {
        diesel::update(
            sagas::table
                .filter(sagas::order_id.eq(order_id))
                .filter(sagas::lease_owner.eq(owner)),
        )
        .set(sagas::lease_expires_at.eq(until))
        .execute(c)
        .await
        .map(|n| n == 1)
    })
}

/// Gives the lease back (the saga finished or paused in this process).
pub async fn release(conn: &mut DbConn, order_id: &str, owner: &str) -> QueryResult<()> {
    with_conn!(conn, |c| {
        diesel::update(
            sagas::table
                .filter(sagas::order_id.eq(order_id))
                .filter(sagas::lease_owner.eq(owner)),
        )
        .set((
            sagas::lease_owner.eq(None::<String>),
            sagas::lease_expires_at.eq(None::<NaiveDateTime>),
        ))
        .execute(c)
        .await
        .map(|_| ())
    })
}

/// Claims up to `limit` running sagas whose lease is free or ran out, for
/// `owner`: those not parked, and parked ones whose last attempt was before
/// `parked_before` (start-up passes a time in the future: all of them).
pub async fn claim_orphans(
    conn: &mut DbConn,
    owner: &str,
    now: NaiveDateTime,
    until: NaiveDateTime,
    limit: i64,
    parked_before: NaiveDateTime,
) -> QueryResult<Vec<String>> {
    macro_rules! candidates {
        () => {
            sagas::table
                .filter(sagas::state.eq("running"))
                .filter(
                    sagas::parked
                        .eq(false)
                        .or(sagas::updated_at.lt(parked_before)),
                )
                .filter(
                    sagas::lease_owner
                        .is_null()
                        .or(sagas::lease_expires_at.lt(now)),
                )
                .select(sagas::order_id)
                .order(sagas::updated_at.asc())
                .limit(limit)
        };
    }
    macro_rules! take {
        ($c:expr, $ids:expr) => {{
            let ids: Vec<String> = $ids;
            let mut claimed = Vec::with_capacity(ids.len());
            for id in ids {
                let updated = diesel::update(
                    sagas::table.filter(sagas::order_id.eq(&id)).filter(
                        sagas::lease_owner
                            .is_null()
                            .or(sagas::lease_expires_at.lt(now)),
                    ),
                )
                .set((
                    sagas::lease_owner.eq(owner),
                    sagas::lease_expires_at.eq(until),
                    sagas::parked.eq(false),
                ))
                .execute($c)
                .await?;
                if updated == 1 {
                    claimed.push(id);
                }
            }
            Ok(claimed)
        }};
    }
    match conn {
        DbConn::Postgres(pooled) => {
            let c: &mut diesel_async::AsyncPgConnection = &mut *pooled;
            c.transaction(async |c| {
                let ids = candidates!().for_update().skip_locked().load(c).await?;
                take!(c, ids)
            })
            .await
        }
        // SQLite: no transaction around the scan (it could not upgrade to a
        // write if another writer committed meanwhile); each take is a
        // guarded UPDATE of its own, which is enough with one writer at a time.
        DbConn::Sqlite(pooled) => {
            let c: &mut super::SqliteConn = &mut *pooled;
            let ids = candidates!().load(c).await?;
            take!(c, ids)
        }
    }
}

/// Sagas in `state`, newest first; `stuck_before` instead lists running
/// sagas not advanced since then.
pub async fn list(
    conn: &mut DbConn,
    state: Option<&str>,
    stuck_before: Option<NaiveDateTime>,
    after: Option<&str>,
    limit: i64,
) -> QueryResult<Vec<SagaRow>> {
    with_conn!(conn, |c| {
        let mut query = sagas::table
            .select(SagaRow::as_select())
            .order(sagas::order_id.desc())
            .limit(limit)
            .into_boxed();
        if let Some(state) = state {
            query = query.filter(sagas::state.eq(state));
        }
        if let Some(before) = stuck_before {
            query = query
                .filter(sagas::state.eq("running"))
                .filter(sagas::updated_at.lt(before));
        }
        if let Some(after) = after {
            query = query.filter(sagas::order_id.lt(after));
        }
        query.load(c).await
    })
}
