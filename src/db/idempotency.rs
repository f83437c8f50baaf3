//! Queries on idempotency keys (see `crate::idempotency` for the rules).
//!
//! Every write after the insert is guarded by the row's `token`: a request
//! that lost its key to a takeover (its lock ran out) can neither bind a
//! resource nor store an answer.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::schema::idempotency_keys as keys;
use super::DbConn;
use crate::with_conn;

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = keys, treat_none_as_default_value = false)]
pub struct KeyRow {
    pub user_id: String,
    pub key: String,
    pub fingerprint: String,
    pub state: String,
    pub token: String,
    pub locked_until: NaiveDateTime,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub response_status: Option<i32>,
    pub response_headers: Option<String>,
    pub response_body: Option<String>,
    pub created_at: NaiveDateTime,
    pub expires_at: NaiveDateTime,
}

/// The holder of a running key: who may bind its resource and finish it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub user_id: String,
    pub key: String,
    pub token: String,
}

/// A finished request's answer.
#[derive(Debug, Clone)]
pub struct StoredResponse {
    pub status: i32,
    /// JSON array of `[name, value]` pairs.
    pub headers: String,
    pub body: String,
}

/// Inserts `row` unless its key exists and has not expired. An expired row
/// is replaced. True when `row` is now the key's row.
pub async fn insert(conn: &mut DbConn, row: &KeyRow) -> QueryResult<bool> {
    with_conn!(conn, |c| {
        diesel::delete(
            keys::table
                .find((&row.user_id, &row.key))
                .filter(keys::expires_at.le(row.created_at)),
        )
        .execute(c)
        .await?;
        let inserted = diesel::insert_into(keys::table)
            .values(row)
            .on_conflict((keys::user_id, keys::key))
            .do_nothing()
            .execute(c)
            .await?;
        Ok(inserted == 1)
    })
}

pub async fn find(conn: &mut DbConn, user_id: &str, key: &str) -> QueryResult<Option<KeyRow>> {
    with_conn!(conn, |c| {
        keys::table
            .find((user_id, key))
            .select(KeyRow::as_select())
            .first(c)
            .await
            .optional()
    })
}

/// Takes over a running key whose lock ran out: true when `old_token` still
/// held it and `new_token` now does.
pub async fn take_over(
    conn: &mut DbConn,
    user_id: &str,
    key: &str,
    old_token: &str,
    new_token: &str,
    locked_until: NaiveDateTime,
) -> QueryResult<bool> {
    with_conn!(conn, |c| {
        let updated = diesel::update(
            keys::table
                .find((user_id, key))
                .filter(keys::state.eq("running"))
                .filter(keys::token.eq(old_token)),
        )
        .set((
            keys::token.eq(new_token),
            keys::locked_until.eq(locked_until),
        ))
        .execute(c)
        .await?;
        Ok(updated == 1)
    })
}

/// Records the answer of the binding's request. With `only_if_bound`, only
/// when the request bound a resource (its effect happened). True when stored.
pub async fn store(
    conn: &mut DbConn,
    binding: &Binding,
    response: &StoredResponse,
    only_if_bound: bool,
) -> QueryResult<bool> {
    with_conn!(conn, |c| {
        let target = keys::table
            .find((&binding.user_id, &binding.key))
            .filter(keys::state.eq("running"))
            .filter(keys::token.eq(&binding.token));
        let values = (
            keys::state.eq("done"),
            keys::response_status.eq(response.status),
            keys::response_headers.eq(&response.headers),
            keys::response_body.eq(&response.body),
        );
        let updated = if only_if_bound {
            diesel::update(target.filter(keys::resource_id.is_not_null()))
                .set(values)
                .execute(c)
                .await?
        } else {
            diesel::update(target).set(values).execute(c).await?
        };
        Ok(updated == 1)
    })
}

/// Lets go of a running key: forgotten when no effect was bound to it,
/// otherwise unlocked so that a retry takes it over at once and answers from
/// the bound resource.
pub async fn release(conn: &mut DbConn, binding: &Binding, now: NaiveDateTime) -> QueryResult<()> {
    with_conn!(conn, |c| {
        let target = keys::table
            .find((&binding.user_id, &binding.key))
            .filter(keys::state.eq("running"))
            .filter(keys::token.eq(&binding.token));
        diesel::delete(target.filter(keys::resource_id.is_null()))
            .execute(c)
            .await?;
        diesel::update(target)
            .set(keys::locked_until.eq(now))
            .execute(c)
            .await?;
        Ok(())
    })
}

/// Keeps a running key's lock, for a request that is still at work.
pub async fn renew(
    conn: &mut DbConn,
    binding: &Binding,
    locked_until: NaiveDateTime,
) -> QueryResult<bool> {
    with_conn!(conn, |c| {
        let updated = diesel::update(
            keys::table
                .find((&binding.user_id, &binding.key))
                .filter(keys::state.eq("running"))
                .filter(keys::token.eq(&binding.token)),
        )
        .set(keys::locked_until.eq(locked_until))
        .execute(c)
        .await?;
        Ok(updated == 1)
    })
}

/// Deletes about `batch` of the keys past their expiry, oldest first (all
/// of those expiring at the same instant as the last one); returns how many.
/// Small statements keep SQLite's single writer free for requests.
pub async fn purge(conn: &mut DbConn, now: NaiveDateTime, batch: i64) -> QueryResult<usize> {
    with_conn!(conn, |c| {
        let cutoff: Option<NaiveDateTime> = keys::table
            .filter(keys::expires_at.le(now))
            .select(keys::expires_at)
            .order(keys::expires_at.asc())
            .offset(batch.max(1) - 1)
            .limit(1)
            .first(c)
            .await
            .optional()?;
        diesel::delete(keys::table.filter(keys::expires_at.le(cutoff.unwrap_or(now))))
            .execute(c)
            .await
    })
}

/// Binds the resource an effect created or moved to the key that asked for
/// it, inside the effect's own transaction: evaluates to
/// `QueryResult<bool>`, false when the key is no longer the binding's (a
/// retry took it over), in which case the caller must roll back.
#[macro_export]
macro_rules! bind_idempotency_key {
    ($c:expr, $binding:expr, $resource_type:expr, $resource_id:expr) => {{
        use $crate::db::schema::idempotency_keys as k;
        let binding: &$crate::db::idempotency::Binding = $binding;
        diesel::update(
            k::table
                .find((&binding.user_id, &binding.key))
                .filter(k::state.eq("running"))
                .filter(k::token.eq(&binding.token)),
        )
        .set((
            k::resource_type.eq($resource_type),
            k::resource_id.eq($resource_id),
        ))
        .execute($c)
        .await
        .map(|n| n == 1)
    }};
}
