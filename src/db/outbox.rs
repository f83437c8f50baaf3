//! Outbox rows: domain events written in the same transaction as the change
//! that caused them (invariant I6). Publishing them is the relay's job.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use futures_util::future::BoxFuture;
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

/// An outbox row as the relay publishes it.
#[derive(Debug, Clone, Queryable, Selectable, PartialEq, Eq)]
#[diesel(table_name = outbox)]
pub struct OutboxEvent {
    pub id: String,
    pub event_type: String,
    pub aggregate_id: String,
    pub payload: String,
    pub created_at: NaiveDateTime,
}

/// Where the relay sends events: the Redis Stream or the in-process channel.
pub trait Publisher: Sync {
    fn publish<'a>(&'a self, events: &'a [OutboxEvent]) -> BoxFuture<'a, anyhow::Result<()>>;
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Db(#[from] diesel::result::Error),
    #[error("publishing events: {0:#}")]
    Transport(anyhow::Error),
}

/// Takes up to `limit` events to publish, oldest first: committed rows never
/// published, then rows whose transport lost them: published but not
/// dispatched by their `republish_after`. Calls `publish` with them and marks
/// them published at `now` once it succeeds. A row's first `republish_after`
/// is `redispatch_after` from its publication; each republication doubles the
/// wait (up to 64 times), so a dispatcher that is only behind is not flooded
/// with copies.
///
/// On PostgreSQL the rows stay locked (`FOR UPDATE SKIP LOCKED`) until they
/// are marked, so two relays publish disjoint sets; `publish` must not wait
/// on anything that waits on these rows. A failed `publish` marks nothing and
/// the rows are taken again next round. Returns how many rows were published.
pub async fn publish_pending(
    conn: &mut super::DbConn,
    limit: i64,
    redispatch_after: chrono::Duration,
    now: NaiveDateTime,
    publisher: &dyn Publisher,
) -> Result<usize, PublishError> {
    use diesel_async::AsyncConnection;
    type Row = (OutboxEvent, i32);
    // Two scans, each served by its own partial index.
    macro_rules! unpublished {
        () => {
            outbox::table
                .filter(outbox::published_at.is_null())
                .order(outbox::id.asc())
                .limit(limit)
                .select((OutboxEvent::as_select(), outbox::publish_count))
        };
    }
    macro_rules! lost {
        ($room:expr) => {
            outbox::table
                .filter(outbox::dispatched_at.is_null())
                .filter(outbox::republish_after.lt(now))
                .order(outbox::id.asc())
                .limit($room)
                .select((OutboxEvent::as_select(), outbox::publish_count))
        };
    }
    macro_rules! mark {
        ($c:expr, $rows:expr) => {{
            let rows: &[Row] = $rows;
            let mut counts: Vec<i32> = rows.iter().map(|(_, n)| *n).collect();
            counts.sort_unstable();
            counts.dedup();
            for count in counts {
                let ids: Vec<&str> = rows
                    .iter()
                    .filter(|(_, n)| *n == count)
                    .map(|(e, _)| e.id.as_str())
                    .collect();
                let wait = redispatch_after * (1i32 << count.clamp(0, 6));
                diesel::update(outbox::table.filter(outbox::id.eq_any(ids)))
                    .set((
                        outbox::published_at.eq(now),
                        outbox::publish_count.eq(count.saturating_add(1)),
                        outbox::republish_after.eq(now + wait),
                    ))
                    .execute($c)
                    .await?;
            }
        }};
    }
    macro_rules! publish {
        ($rows:expr) => {{
            let events: Vec<OutboxEvent> = $rows.iter().map(|(e, _): &Row| e.clone()).collect();
            publisher
                .publish(&events)
                .await
                .map_err(PublishError::Transport)?;
        }};
    }
    match conn {
        super::DbConn::Postgres(pooled) => {
            let c: &mut diesel_async::AsyncPgConnection = &mut *pooled;
            c.transaction::<_, PublishError, _>(async |c| {
                let mut rows: Vec<Row> = unpublished!().for_update().skip_locked().load(c).await?;
                let room = limit - rows.len() as i64;
                if room > 0 {
                    rows.extend(
                        lost!(room)
                            .for_update()
                            .skip_locked()
                            .load::<Row>(c)
                            .await?,
                    );
                }
                if rows.is_empty() {
                    return Ok(0);
                }
                publish!(rows);
                mark!(c, &rows);
                Ok(rows.len())
            })
            .await
        }
        // One writer at a time: no lock to take.
        super::DbConn::Sqlite(pooled) => {
            let c: &mut super::SqliteConn = &mut *pooled;
            let mut rows: Vec<Row> = unpublished!().load(c).await?;
            let room = limit - rows.len() as i64;
            if room > 0 {
                rows.extend(lost!(room).load::<Row>(c).await?);
            }
            if rows.is_empty() {
                return Ok(0);
            }
            publish!(rows);
            mark!(c, &rows);
            Ok(rows.len())
        }
    }
}

/// Which of `ids` are events in the outbox.
pub async fn existing(conn: &mut super::DbConn, ids: &[String]) -> QueryResult<Vec<String>> {
    crate::with_conn!(conn, |c| {
        outbox::table
            .filter(outbox::id.eq_any(ids))
            .select(outbox::id)
            .load(c)
            .await
    })
}

/// The creation time of the oldest event published but not yet turned into
/// deliveries, if any.
pub async fn oldest_undispatched(conn: &mut super::DbConn) -> QueryResult<Option<NaiveDateTime>> {
    crate::with_conn!(conn, |c| {
        outbox::table
            .filter(outbox::dispatched_at.is_null())
            .filter(outbox::published_at.is_not_null())
            .select(diesel::dsl::min(outbox::created_at))
            .first(c)
            .await
    })
}

/// The creation time of the oldest event not yet published, if any.
pub async fn oldest_unpublished(conn: &mut super::DbConn) -> QueryResult<Option<NaiveDateTime>> {
    crate::with_conn!(conn, |c| {
        outbox::table
            .filter(outbox::published_at.is_null())
            .select(diesel::dsl::min(outbox::created_at))
            .first(c)
            .await
    })
}

/// One event, for the delivery and notification workers.
pub async fn find(conn: &mut super::DbConn, id: &str) -> QueryResult<Option<OutboxEvent>> {
    crate::with_conn!(conn, |c| {
        outbox::table
            .find(id)
            .select(OutboxEvent::as_select())
            .first(c)
            .await
            .optional()
    })
}
