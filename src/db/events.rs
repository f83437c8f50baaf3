//! The `events` table: inbound integration events and analytics events.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::schema::events;
use super::DbConn;
use crate::with_conn;

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = events, treat_none_as_default_value = false)]
pub struct NewEventRow {
    pub id: String,
    pub source: String,
    pub external_id: Option<String>,
    pub name: String,
    pub user_id: Option<String>,
    pub properties: String,
    pub occurred_at: NaiveDateTime,
    pub received_at: NaiveDateTime,
}

/// Records the event unless one with the same (source, external_id) exists;
/// true when it was new.
pub async fn insert_if_new(conn: &mut DbConn, row: &NewEventRow) -> QueryResult<bool> {
    let inserted = with_conn!(conn, |c| {
        diesel::insert_into(events::table)
            .values(row)
            .on_conflict_do_nothing()
            .execute(c)
            .await
    })?;
    Ok(inserted == 1)
}

/// How many events from `source` carry `external_id` (0 or 1).
pub async fn count_external(
    conn: &mut DbConn,
    source: &str,
    external_id: &str,
) -> QueryResult<i64> {
    with_conn!(conn, |c| {
        events::table
            .filter(events::source.eq(source))
            .filter(events::external_id.eq(external_id))
            .count()
            .get_result(c)
            .await
    })
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = events)]
pub struct EventRow {
    pub id: String,
    pub source: String,
    pub external_id: Option<String>,
    pub name: String,
    pub user_id: Option<String>,
    pub properties: String,
    pub occurred_at: NaiveDateTime,
    pub received_at: NaiveDateTime,
}

/// Writes a batch in one transaction (a row already written, by a retry
/// after an ambiguous commit, is skipped): one statement on PostgreSQL, one per
/// row on SQLite (its async wrapper has no multi-row insert).
pub async fn insert_batch(conn: &mut DbConn, rows: &[NewEventRow]) -> QueryResult<()> {
    use diesel_async::AsyncConnection;
    match conn {
        DbConn::Postgres(pooled) => {
            let c: &mut diesel_async::AsyncPgConnection = &mut *pooled;
            diesel::insert_into(events::table)
                .values(rows)
                .on_conflict(events::id)
                .do_nothing()
                .execute(c)
                .await
                .map(drop)
        }
        DbConn::Sqlite(pooled) => {
            let c: &mut super::SqliteConn = &mut *pooled;
            c.transaction(async |c| {
                for row in rows {
                    diesel::insert_into(events::table)
                        .values(row)
                        .on_conflict(events::id)
                        .do_nothing()
                        .execute(c)
                        .await?;
                }
                Ok(())
            })
            .await
        }
    }
}

/// What `GET /events` filters on; every field is optional.
#[derive(Debug, Default, Clone)]
pub struct EventFilter {
    pub name: Option<String>,
    pub source: Option<String>,
    pub user_id: Option<String>,
    /// Received at or after.
    pub since: Option<NaiveDateTime>,
    /// Received before.
    pub until: Option<NaiveDateTime>,
}

/// A page of events, newest first, before the id `before`.
pub async fn list(
    conn: &mut DbConn,
    filter: &EventFilter,
    before: Option<&str>,
    limit: i64,
) -> QueryResult<Vec<EventRow>> {
    with_conn!(conn, |c| {
        let mut query = events::table
            .order(events::id.desc())
            .limit(limit)
            .select(EventRow::as_select())
            .into_boxed();
        if let Some(name) = &filter.name {
            query = query.filter(events::name.eq(name));
        }
        if let Some(source) = &filter.source {
            query = query.filter(events::source.eq(source));
        }
        if let Some(user_id) = &filter.user_id {
            query = query.filter(events::user_id.eq(user_id));
        }
        if let Some(since) = filter.since {
            query = query.filter(events::received_at.ge(since));
        }
        if let Some(until) = filter.until {
            query = query.filter(events::received_at.lt(until));
        }
        if let Some(before) = before {
            query = query.filter(events::id.lt(before));
        }
        query.load(c).await
    })
}
