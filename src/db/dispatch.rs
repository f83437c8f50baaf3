//! Turning published events into work: webhook deliveries and customer
//! notifications, written with the event's `dispatched_at` in one
//! transaction. Each insert is keyed (endpoint and event; event and kind), so
//! an event dispatched twice (the transport is at-least-once) makes its
//! deliveries once.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};

use super::notifications::NotificationRow;
use super::schema::{notifications, outbox, webhook_deliveries};
use super::webhooks::NewDelivery;
use super::DbConn;
use crate::with_conn;

/// What one batch of events comes to.
#[derive(Debug, Default)]
pub struct Work {
    pub event_ids: Vec<String>,
    pub deliveries: Vec<NewDelivery>,
    pub notifications: Vec<NotificationRow>,
}

/// Writes the work and marks the events dispatched. Returns how many
/// deliveries were new (the rest already existed).
pub async fn record(conn: &mut DbConn, work: &Work, now: NaiveDateTime) -> QueryResult<usize> {
    with_conn!(conn, |c| {
        c.transaction(async |c| {
            let mut created = 0;
            for delivery in &work.deliveries {
                created += diesel::insert_into(webhook_deliveries::table)
                    .values(delivery)
                    .on_conflict((webhook_deliveries::webhook_id, webhook_deliveries::event_id))
                    .do_nothing()
                    .execute(c)
                    .await?;
            }
            for notification in &work.notifications {
                diesel::insert_into(notifications::table)
                    .values(notification)
                    .on_conflict((notifications::event_id, notifications::kind))
                    .do_nothing()
                    .execute(c)
                    .await?;
            }
            diesel::update(
                outbox::table
                    .filter(outbox::id.eq_any(&work.event_ids))
                    .filter(outbox::dispatched_at.is_null()),
            )
            .set(outbox::dispatched_at.eq(now))
            .execute(c)
            .await?;
            Ok(created)
        })
        .await
    })
}
