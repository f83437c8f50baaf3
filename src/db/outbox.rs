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

/// An outbox row the relay has claimed: marked published, so that no other
/// relay takes it, before it is handed to the transport with no connection
/// held (see [`claim_pending`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub event: OutboxEvent,
    /// `publish_count` before the claim; the claim made it one more.
    previous_count: i32,
    /// Whether the row had never been published before the claim.
    first: bool,
}

/// Claims up to `limit` events to publish, oldest first: committed rows
/// never published, then rows whose transport lost them: published but not
/// dispatched by their `republish_after`. The claim marks them published at
/// `now` before they are published: a row's first `republish_after` is
/// `redispatch_after` from then, and each republication doubles the wait (up
/// to 64 times), so a dispatcher that is only behind is not flooded with
/// copies. The caller publishes the rows with the connection given back,
/// then gives back the ones it could not publish with [`unclaim`].
///
/// One short transaction: on PostgreSQL the candidates are locked with `FOR
/// UPDATE SKIP LOCKED` only until the marks commit, and each mark is guarded
/// by the count read, so two relays (of one process or two) never claim the
/// same row; a claimed row is taken again only once its `republish_after`
/// has passed, which is also how a row claimed by a process that died before
/// publishing it gets published (delivery stays at least once).
pub async fn claim_pending(
    conn: &mut super::DbConn,
    limit: i64,
    redispatch_after: chrono::Duration,
    now: NaiveDateTime,
) -> QueryResult<Vec<Claimed>> {
    use diesel_async::AsyncConnection;
    type Row = (OutboxEvent, i32, Option<NaiveDateTime>);
    // Two scans, each served by its own partial index.
    macro_rules! unpublished {
        () => {
            outbox::table
                .filter(outbox::published_at.is_null())
                .order(outbox::id.asc())
                .limit(limit)
                .select((
                    OutboxEvent::as_select(),
                    outbox::publish_count,
                    outbox::published_at,
                ))
        };
    }
    macro_rules! lost {
        ($room:expr) => {
            outbox::table
                .filter(outbox::dispatched_at.is_null())
                .filter(outbox::republish_after.lt(now))
                .order(outbox::id.asc())
                .limit($room)
                .select((
                    OutboxEvent::as_select(),
                    outbox::publish_count,
                    outbox::published_at,
                ))
        };
    }
    // Marks the rows read, each only if no one marked it since (its count
    // is still the one read); evaluates to the rows this call claimed.
    macro_rules! mark {
        ($c:expr, $rows:expr) => {{
            let rows: Vec<Row> = $rows;
            let mut counts: Vec<i32> = rows.iter().map(|(_, n, _)| *n).collect();
            counts.sort_unstable();
            counts.dedup();
            let mut marked: Vec<String> = Vec::with_capacity(rows.len());
            for count in counts {
                let ids: Vec<&str> = rows
                    .iter()
                    .filter(|(_, n, _)| *n == count)
                    .map(|(e, _, _)| e.id.as_str())
                    .collect();
                let wait = redispatch_after * (1i32 << count.clamp(0, 6));
                marked.extend(
                    diesel::update(
                        outbox::table
                            .filter(outbox::id.eq_any(ids))
                            .filter(outbox::publish_count.eq(count)),
                    )
                    .set((
                        outbox::published_at.eq(now),
                        outbox::publish_count.eq(count.saturating_add(1)),
                        outbox::republish_after.eq(now + wait),
                    ))
                    .returning(outbox::id)
                    .get_results::<String>($c)
                    .await?,
                );
            }
            let marked: std::collections::HashSet<String> = marked.into_iter().collect();
            let claimed: Vec<Claimed> = rows
                .into_iter()
                .filter(|(e, _, _)| marked.contains(&e.id))
                .map(|(event, previous_count, published_at)| Claimed {
                    event,
                    previous_count,
                    first: published_at.is_none(),
                })
                .collect();
            Ok::<_, diesel::result::Error>(claimed)
        }};
    }
    match conn {
        super::DbConn::Postgres(pooled) => {
            let c: &mut diesel_async::AsyncPgConnection = &mut *pooled;
            c.transaction(async |c| {
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
                    return Ok(Vec::new());
                }
                mark!(c, rows)
            })
            .await
        }
        // No transaction around the scan (it could not upgrade to a write if
        // another writer committed meanwhile); the guarded marks settle who
        // claimed a row.
        super::DbConn::Sqlite(pooled) => {
            let c: &mut super::SqliteConn = &mut *pooled;
            let mut rows: Vec<Row> = unpublished!().load(c).await?;
            let room = limit - rows.len() as i64;
            if room > 0 {
                rows.extend(lost!(room).load::<Row>(c).await?);
            }
            if rows.is_empty() {
                return Ok(Vec::new());
            }
            mark!(c, rows)
        }
    }
}

/// Gives back rows of a claim made at `claimed_at` that could not be
/// published: a row never published before is unpublished again, a lost one
/// is due again at once, and the claim's count is undone, so the next round
/// takes them as if this one had not happened. A row claimed again since (its
/// count moved on) or dispatched meanwhile (part of the batch got through) is
/// left as it is. Returns how many rows were given back.
pub async fn unclaim(
    conn: &mut super::DbConn,
    claimed: &[Claimed],
    claimed_at: NaiveDateTime,
) -> QueryResult<usize> {
    let mut groups: Vec<(bool, i32)> = claimed
        .iter()
        .map(|c| (c.first, c.previous_count))
        .collect();
    groups.sort_unstable();
    groups.dedup();
    let mut given_back = 0;
    for (first, count) in groups {
        let ids: Vec<&str> = claimed
            .iter()
            .filter(|c| (c.first, c.previous_count) == (first, count))
            .map(|c| c.event.id.as_str())
            .collect();
        let (published_at, republish_after) = if first {
            (None, None)
        } else {
            (Some(claimed_at), Some(claimed_at))
        };
        given_back += crate::with_conn!(conn, |c| {
            diesel::update(
                outbox::table
                    .filter(outbox::id.eq_any(&ids))
                    .filter(outbox::publish_count.eq(count.saturating_add(1)))
                    .filter(outbox::dispatched_at.is_null()),
            )
            .set((
                outbox::published_at.eq(published_at),
                outbox::publish_count.eq(count),
                outbox::republish_after.eq(republish_after),
            ))
            .execute(c)
            .await
        })?;
    }
    Ok(given_back)
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
