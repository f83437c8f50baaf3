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
