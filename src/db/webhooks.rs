//! Webhook endpoints and their deliveries.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::leases::Settled;
use super::schema::{webhook_deliveries, webhooks};
use super::DbConn;
use crate::with_conn;

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = webhooks)]
pub struct WebhookRow {
    pub id: String,
    pub url: String,
    /// A JSON array of event types, or `["*"]`.
    pub events: String,
    pub secret: String,
    pub created_at: NaiveDateTime,
}

impl WebhookRow {
    /// The event types this endpoint subscribed to.
    pub fn event_filter(&self) -> Vec<String> {
        serde_json::from_str(&self.events).unwrap_or_default()
    }
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = webhook_deliveries)]
pub struct DeliveryRow {
    pub id: String,
    pub webhook_id: String,
    pub event_id: String,
    pub event_type: String,
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: Option<NaiveDateTime>,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    pub delivered_at: Option<NaiveDateTime>,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = webhook_deliveries, treat_none_as_default_value = false)]
pub struct NewDelivery {
    pub id: String,
    pub webhook_id: String,
    pub event_id: String,
    pub event_type: String,
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: Option<NaiveDateTime>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

impl NewDelivery {
    /// A delivery due at once.
    pub fn due(webhook_id: &str, event_id: &str, event_type: &str, now: NaiveDateTime) -> Self {
        NewDelivery {
            id: uuid::Uuid::now_v7().to_string(),
            webhook_id: webhook_id.to_owned(),
            event_id: event_id.to_owned(),
            event_type: event_type.to_owned(),
            status: "pending".to_owned(),
            attempts: 0,
            next_attempt_at: Some(now),
            created_at: now,
            updated_at: now,
        }
    }
}

pub async fn insert(conn: &mut DbConn, row: &WebhookRow) -> QueryResult<()> {
    with_conn!(conn, |c| {
        diesel::insert_into(webhooks::table)
            .values(row)
            .execute(c)
            .await
            .map(drop)
    })
}

/// Every endpoint, oldest first.
pub async fn all(conn: &mut DbConn) -> QueryResult<Vec<WebhookRow>> {
    with_conn!(conn, |c| {
        webhooks::table
            .order(webhooks::id.asc())
            .select(WebhookRow::as_select())
            .load(c)
            .await
    })
}

/// A page of endpoints, oldest first, after the id `after`.
pub async fn page(
    conn: &mut DbConn,
    after: Option<&str>,
    limit: i64,
) -> QueryResult<Vec<WebhookRow>> {
    with_conn!(conn, |c| {
        let mut query = webhooks::table
            .order(webhooks::id.asc())
            .limit(limit)
            .select(WebhookRow::as_select())
            .into_boxed();
        if let Some(after) = after {
            query = query.filter(webhooks::id.gt(after));
        }
        query.load(c).await
    })
}

pub async fn find(conn: &mut DbConn, id: &str) -> QueryResult<Option<WebhookRow>> {
    with_conn!(conn, |c| {
        webhooks::table
            .find(id)
            .select(WebhookRow::as_select())
            .first(c)
            .await
            .optional()
    })
}

/// Removes the endpoint and its deliveries; false when there was none.
pub async fn delete(conn: &mut DbConn, id: &str) -> QueryResult<bool> {
    use diesel_async::AsyncConnection;
    with_conn!(conn, |c| {
        c.transaction(async |c| {
            diesel::delete(webhook_deliveries::table.filter(webhook_deliveries::webhook_id.eq(id)))
                .execute(c)
                .await?;
            let deleted = diesel::delete(webhooks::table.find(id)).execute(c).await?;
            Ok(deleted == 1)
        })
        .await
    })
}

/// A page of an endpoint's deliveries, newest first, before the id `before`.
pub async fn deliveries(
    conn: &mut DbConn,
    webhook_id: &str,
    status: Option<&str>,
    before: Option<&str>,
    limit: i64,
) -> QueryResult<Vec<DeliveryRow>> {
    with_conn!(conn, |c| {
        let mut query = webhook_deliveries::table
            .filter(webhook_deliveries::webhook_id.eq(webhook_id))
            .order(webhook_deliveries::id.desc())
            .limit(limit)
            .select(DeliveryRow::as_select())
            .into_boxed();
        if let Some(status) = status {
            query = query.filter(webhook_deliveries::status.eq(status));
        }
        if let Some(before) = before {
            query = query.filter(webhook_deliveries::id.lt(before));
        }
        query.load(c).await
    })
}

pub async fn find_delivery(conn: &mut DbConn, id: &str) -> QueryResult<Option<DeliveryRow>> {
    with_conn!(conn, |c| {
        webhook_deliveries::table
            .find(id)
            .select(DeliveryRow::as_select())
            .first(c)
            .await
            .optional()
    })
}

/// Records one attempt while `token` still holds the delivery; false when
/// the lease was lost (the outcome is then not recorded).
pub async fn settle(
    conn: &mut DbConn,
    id: &str,
    token: &str,
    settled: Settled,
    status_code: Option<i32>,
    error: Option<&str>,
    now: NaiveDateTime,
) -> QueryResult<bool> {
    let delivered_at = (settled == Settled::Succeeded).then_some(now);
    crate::settle_leased!(
        conn,
        webhook_deliveries,
        id,
        token,
        settled,
        now,
        (
            webhook_deliveries::last_status_code.eq(status_code),
            webhook_deliveries::last_error.eq(error),
            webhook_deliveries::delivered_at.eq(delivered_at),
        )
    )
}

/// Makes a delivery due again at once with a fresh count of attempts and
/// no outcome, whatever its status; a lease held on it is voided, so an attempt in
/// flight records nothing. `None` when there is no such delivery.
pub async fn replay(
    conn: &mut DbConn,
    id: &str,
    now: NaiveDateTime,
) -> QueryResult<Option<DeliveryRow>> {
    with_conn!(conn, |c| {
        diesel::update(webhook_deliveries::table.find(id))
            .set((
                webhook_deliveries::status.eq("pending"),
                webhook_deliveries::attempts.eq(0),
                webhook_deliveries::next_attempt_at.eq(Some(now)),
                webhook_deliveries::lease_owner.eq(None::<String>),
                webhook_deliveries::lease_expires_at.eq(None::<NaiveDateTime>),
                webhook_deliveries::last_status_code.eq(None::<i32>),
                webhook_deliveries::last_error.eq(None::<String>),
                webhook_deliveries::delivered_at.eq(None::<NaiveDateTime>),
                webhook_deliveries::updated_at.eq(now),
            ))
            .returning(DeliveryRow::as_returning())
            .get_result(c)
            .await
            .optional()
    })
}
