//! Work queues kept in a table (webhook deliveries, notifications): a row is
//! due while its `status` is `pending` or `failed` and its `next_attempt_at`
//! has come. A worker takes due rows by writing its own lease token and an
//! expiry; it records an attempt's outcome only while it still holds that
//! token, so a row whose lease ran out (the worker died or hung) is taken by
//! another worker and the late outcome is discarded.

/// Takes up to `$limit` due rows of `$table` for `$token` until `$until`;
/// evaluates to `QueryResult<Vec<String>>`, the ids taken. On PostgreSQL the
/// candidates are locked with `FOR UPDATE SKIP LOCKED`, so workers of several
/// processes split the due rows instead of contending for the same ones.
#[macro_export]
macro_rules! claim_due {
    ($conn:expr, $table:ident, $limit:expr, $token:expr, $until:expr, $now:expr) => {{
        use ::diesel::prelude::*;
        use ::diesel_async::{AsyncConnection, RunQueryDsl};
        use $crate::db::schema::$table;
        let (limit, token, until, now): (
            i64,
            &str,
            ::chrono::NaiveDateTime,
            ::chrono::NaiveDateTime,
        ) = ($limit, $token, $until, $now);
        macro_rules! candidates {
            () => {
                $table::table
                    .filter($table::status.eq_any(["pending", "failed"]))
                    .filter($table::next_attempt_at.le(now))
                    .filter(
                        $table::lease_expires_at
                            .is_null()
                            .or($table::lease_expires_at.lt(now)),
                    )
                    .order($table::next_attempt_at.asc())
                    .limit(limit)
                    .select($table::id)
            };
        }
        macro_rules! take {
            ($c:expr, $ids:expr) => {{
                let ids: Vec<String> = $ids;
                if ids.is_empty() {
                    Ok(ids)
                } else {
                    // The candidates' conditions again: on SQLite the scan
                    // and this update are not one transaction.
                    diesel::update(
                        $table::table
                            .filter($table::id.eq_any(&ids))
                            .filter($table::status.eq_any(["pending", "failed"]))
                            .filter($table::next_attempt_at.le(now))
                            .filter(
                                $table::lease_expires_at
                                    .is_null()
                                    .or($table::lease_expires_at.lt(now)),
                            ),
                    )
                    .set((
                        $table::lease_owner.eq(token),
                        $table::lease_expires_at.eq(until),
                    ))
                    .returning($table::id)
                    .get_results::<String>($c)
                    .await
                }
            }};
        }
        match $conn {
            $crate::db::DbConn::Postgres(pooled) => {
                let c: &mut ::diesel_async::AsyncPgConnection = &mut *pooled;
                c.transaction(async |c| {
                    let ids = candidates!().for_update().skip_locked().load(c).await?;
                    take!(c, ids)
                })
                .await
            }
            $crate::db::DbConn::Sqlite(pooled) => {
                let c: &mut $crate::db::SqliteConn = &mut *pooled;
                let ids = candidates!().load(c).await?;
                take!(c, ids)
            }
        }
    }};
}

/// Records one attempt on the row `$id` of `$table` while `$token` still
/// holds it: the status, one more attempt, the next attempt's time, the lease
/// released, plus the table's own columns `$extra`. Evaluates to
/// `QueryResult<bool>`: false when the lease was lost (replayed or expired)
/// and nothing was recorded.
#[macro_export]
macro_rules! settle_leased {
    ($conn:expr, $table:ident, $id:expr, $token:expr, $settled:expr, $now:expr, ($($extra:expr),* $(,)?)) => {{
        use ::diesel::prelude::*;
        use ::diesel_async::RunQueryDsl;
        use $crate::db::schema::$table;
        let settled: $crate::db::leases::Settled = $settled;
        let now: ::chrono::NaiveDateTime = $now;
        $crate::with_conn!($conn, |c| {
            diesel::update(
                $table::table
                    .filter($table::id.eq($id))
                    .filter($table::lease_owner.eq($token)),
            )
            .set((
                $table::status.eq(settled.status()),
                $table::attempts.eq($table::attempts + 1),
                $table::next_attempt_at.eq(settled.next_attempt_at()),
                $table::lease_owner.eq(None::<String>),
                $table::lease_expires_at.eq(None::<::chrono::NaiveDateTime>),
                $table::updated_at.eq(now),
                $($extra,)*
            ))
            .execute(c)
            .await
        })
        .map(|updated| updated == 1)
    }};
}

/// What an attempt came to, as the queue records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    Succeeded,
    /// Tried again at the given time.
    Failed(chrono::NaiveDateTime),
    /// No attempts left.
    Dead,
}

impl Settled {
    pub fn status(self) -> &'static str {
        match self {
            Settled::Succeeded => "succeeded",
            Settled::Failed(_) => "failed",
            Settled::Dead => "dead",
        }
    }

    pub fn next_attempt_at(self) -> Option<chrono::NaiveDateTime> {
        match self {
            Settled::Failed(at) => Some(at),
            Settled::Succeeded | Settled::Dead => None,
        }
    }
}

/// A table of leased work, for the worker that drains it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeasedTable {
    WebhookDeliveries,
    Notifications,
}

impl LeasedTable {
    /// The queue's name in logs and lease tokens.
    pub fn name(self) -> &'static str {
        match self {
            LeasedTable::WebhookDeliveries => "webhooks",
            LeasedTable::Notifications => "notifications",
        }
    }

    /// Takes up to `limit` due rows for `token` until `until` (see
    /// [`crate::claim_due`]); the ids taken.
    pub async fn claim_due(
        self,
        conn: &mut super::DbConn,
        limit: i64,
        token: &str,
        until: chrono::NaiveDateTime,
        now: chrono::NaiveDateTime,
    ) -> diesel::QueryResult<Vec<String>> {
        match self {
            LeasedTable::WebhookDeliveries => {
                crate::claim_due!(conn, webhook_deliveries, limit, token, until, now)
            }
            LeasedTable::Notifications => {
                crate::claim_due!(conn, notifications, limit, token, until, now)
            }
        }
    }
}
