//! Customer notifications waiting to be sent, and their attempts.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::leases::Settled;
use super::schema::notifications;
use super::DbConn;
use crate::with_conn;

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = notifications, treat_none_as_default_value = false)]
pub struct NotificationRow {
    pub id: String,
    pub event_id: String,
    pub kind: String,
    pub order_id: String,
    pub recipient: String,
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: Option<NaiveDateTime>,
    pub last_error: Option<String>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    pub sent_at: Option<NaiveDateTime>,
}

impl NotificationRow {
    /// A notification due at once.
    pub fn due(
        event_id: &str,
        kind: &str,
        order_id: &str,
        recipient: &str,
        now: NaiveDateTime,
    ) -> Self {
        NotificationRow {
            id: uuid::Uuid::now_v7().to_string(),
            event_id: event_id.to_owned(),
            kind: kind.to_owned(),
            order_id: order_id.to_owned(),
            recipient: recipient.to_owned(),
            status: "pending".to_owned(),
            attempts: 0,
            next_attempt_at: Some(now),
            last_error: None,
            created_at: now,
            updated_at: now,
            sent_at: None,
        }
    }
}

pub async fn find(conn: &mut DbConn, id: &str) -> QueryResult<Option<NotificationRow>> {
    with_conn!(conn, |c| {
        notifications::table
            .find(id)
            .select(NotificationRow::as_select())
            .first(c)
            .await
            .optional()
    })
}

/// The notifications made for an order, oldest first.
pub async fn for_order(conn: &mut DbConn, order_id: &str) -> QueryResult<Vec<NotificationRow>> {
    with_conn!(conn, |c| {
        notifications::table
            .filter(notifications::order_id.eq(order_id))
            .order(notifications::id.asc())
            .select(NotificationRow::as_select())
            .load(c)
            .await
    })
}

/// Records one attempt while `token` still holds the notification.
pub async fn settle(
    conn: &mut DbConn,
    id: &str,
    token: &str,
    settled: Settled,
    error: Option<&str>,
    now: NaiveDateTime,
) -> QueryResult<bool> {
    let sent_at = (settled == Settled::Succeeded).then_some(now);
    crate::settle_leased!(
        conn,
        notifications,
        id,
        token,
        settled,
        now,
        (
            notifications::last_error.eq(error),
            notifications::sent_at.eq(sent_at),
        )
    )
}
