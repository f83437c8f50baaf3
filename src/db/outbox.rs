//! Outbox rows: domain events written in the same transaction as the change
//! that caused them (invariant I6). Publishing them is the relay's job.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use super::schema::outbox;

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = outbox, treat_none_as_default_value = false)]
pub struct NewOutboxRow {
    pub id: String,
    pub event_type: String,
    pub aggregate_id: String,
    pub payload: String,
    pub created_at: NaiveDateTime,
}

impl NewOutboxRow {
    /// An event with a fresh UUIDv7 id: stable for consumers, ordered by time.
    pub fn new(
        event_type: &str,
        aggregate_id: &str,
        payload: &serde_json::Value,
        now: NaiveDateTime,
    ) -> Self {
        NewOutboxRow {
            id: Uuid::now_v7().to_string(),
            event_type: event_type.to_owned(),
            aggregate_id: aggregate_id.to_owned(),
            payload: payload.to_string(),
            created_at: now,
        }
    }
}

/// Events of `event_type` about `aggregate_id`, oldest first, as raw JSON payloads.
pub async fn payloads_for(
    conn: &mut super::DbConn,
    event_type: &str,
    aggregate_id: &str,
) -> QueryResult<Vec<String>> {
    crate::with_conn!(conn, |c| {
        outbox::table
            .filter(outbox::event_type.eq(event_type))
            .filter(outbox::aggregate_id.eq(aggregate_id))
            .order(outbox::id.asc())
            .select(outbox::payload)
            .load(c)
            .await
    })
}
