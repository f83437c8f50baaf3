//! The outbox relay and the connection rule: a round claims its rows in one
//! short transaction and publishes them with no connection held, so a
//! transport that is slow (or itself needs the database) never holds a
//! pooled connection; a failed publish gives the rows back.

use std::sync::Mutex;
use std::time::Duration;

use chrono::{NaiveDateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use orderflow::db::outbox::{self, NewOutboxRow, OutboxEvent, Publisher};
use orderflow::db::schema::outbox as table;
use orderflow::db::Database;
use orderflow::events::relay::publish_pending;
use secrecy::SecretString;
use serde_json::json;

use crate::support::app::test_settings;
use crate::support::backends::TestDatabase;
use crate::support::Backend;

/// A publisher that, like a transport waiting on the engine, needs a
/// connection of the same pool while it publishes; it fails while `failing`.
struct NeedsTheDatabase {
    db: Database,
    failing: bool,
    published: Mutex<Vec<OutboxEvent>>,
}

impl Publisher for NeedsTheDatabase {
    fn publish<'a>(&'a self, events: &'a [OutboxEvent]) -> BoxFuture<'a, anyhow::Result<()>> {
        async move {
            // With the pool's one connection held by the relay, this would
            // wait out the pool and fail.
            let conn = self.db.conn().await?;
            drop(conn);
            if self.failing {
                anyhow::bail!("the transport is down");
            }
            self.published
                .lock()
                .unwrap()
                .extend(events.iter().cloned());
            Ok(())
        }
        .boxed()
    }
}

/// A migrated database whose pool has a single connection.
async fn one_connection_pool(backend: Backend) -> (TestDatabase, Database) {
    let test_db = TestDatabase::create(backend).await;
    let mut settings = test_settings().database;
    settings.url = Some(SecretString::from(test_db.url.clone()));
    settings.pool_size = Some(1);
    settings.connect_timeout_ms = 1000;
    let db = Database::connect(&settings).expect("pool");
    db.migrate().await.expect("migrations");
    (test_db, db)
}

type Columns = (Option<NaiveDateTime>, i32, Option<NaiveDateTime>);

async fn insert(db: &Database, id: &str, published: Option<(NaiveDateTime, i32)>) {
    let now = Utc::now().naive_utc();
    let mut row = NewOutboxRow::new("order.created", "o-1", &json!({"n": id}), now);
    row.id = id.to_owned();
    let mut conn = db.conn().await.unwrap();
    orderflow::with_conn!(&mut conn, |c| {
        diesel::insert_into(table::table)
            .values(&row)
            .execute(c)
            .await
            .unwrap();
        if let Some((at, count)) = published {
            diesel::update(table::table.find(id))
                .set((
                    table::published_at.eq(Some(at)),
                    table::publish_count.eq(count),
                    table::republish_after.eq(Some(at)),
                ))
                .execute(c)
                .await
                .unwrap();
        }
    });
}

async fn columns(db: &Database, id: &str) -> Columns {
    let mut conn = db.conn().await.unwrap();
    orderflow::with_conn!(&mut conn, |c| {
        table::table
            .find(id)
            .select((
                table::published_at,
                table::publish_count,
                table::republish_after,
            ))
            .first(c)
            .await
            .unwrap()
    })
}

fn ids(events: &[OutboxEvent]) -> Vec<String> {
    let mut ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
    ids.sort();
    ids
}

async fn the_relay_holds_no_connection_while_it_publishes(backend: Backend) {
    let (_test_db, db) = one_connection_pool(backend).await;
    let long_ago = Utc::now().naive_utc() - chrono::Duration::hours(1);
    let fresh = uuid::Uuid::now_v7().to_string();
    let lost = uuid::Uuid::now_v7().to_string();
    insert(&db, &fresh, None).await;
    insert(&db, &lost, Some((long_ago, 1))).await;
    let redispatch = chrono::Duration::seconds(60);

    // A transport that fails: the rows are given back as they were (the
    // lost one due again at once), and the lag still shows the fresh one.
    let down = NeedsTheDatabase {
        db: db.clone(),
        failing: true,
        published: Mutex::new(Vec::new()),
    };
    let failed = publish_pending(&db, 10, redispatch, &down).await;
    assert!(failed.is_err(), "a failed publish is an error: {failed:?}");
    assert_eq!(columns(&db, &fresh).await, (None, 0, None));
    let (_, count, due) = columns(&db, &lost).await;
    assert_eq!(count, 1);
    assert!(due.is_some_and(|due| due <= Utc::now().naive_utc()));
    let mut conn = db.conn().await.unwrap();
    assert!(outbox::oldest_unpublished(&mut conn)
        .await
        .unwrap()
        .is_some());
    drop(conn);

    // The same rows, published with the pool's one connection free.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let up = NeedsTheDatabase {
        db: db.clone(),
        failing: false,
        published: Mutex::new(Vec::new()),
    };
    let published = publish_pending(&db, 10, redispatch, &up)
        .await
        .expect("published with the pool's one connection free");
    assert_eq!(published, 2);
    let mut expected = vec![fresh.clone(), lost.clone()];
    expected.sort();
    assert_eq!(ids(&up.published.lock().unwrap()), expected);
    let (at, count, due) = columns(&db, &fresh).await;
    assert!(at.is_some());
    assert_eq!(count, 1);
    assert!(due.is_some_and(|due| due > Utc::now().naive_utc()));
    let (_, count, due) = columns(&db, &lost).await;
    assert_eq!(count, 2, "republished once more");
    assert!(due.is_some_and(|due| due > Utc::now().naive_utc() + chrono::Duration::seconds(100)));

    // Claimed rows are not taken again before their wait is over.
    let again = publish_pending(&db, 10, redispatch, &up).await.unwrap();
    assert_eq!(again, 0);
}

crate::both_backends!(the_relay_holds_no_connection_while_it_publishes);

/// Two relays claiming at once (two engine processes) never take the same
/// row: each row is published by exactly one of them.
async fn concurrent_claims_are_disjoint(backend: Backend) {
    let test_db = TestDatabase::create(backend).await;
    let mut settings = test_settings().database;
    settings.url = Some(SecretString::from(test_db.url.clone()));
    let first = Database::connect(&settings).expect("pool");
    first.migrate().await.expect("migrations");
    let second = Database::connect(&settings).expect("pool");
    let mut all = Vec::new();
    for _ in 0..60 {
        let id = uuid::Uuid::now_v7().to_string();
        insert(&first, &id, None).await;
        all.push(id);
    }
    let redispatch = chrono::Duration::seconds(60);
    let claim = |db: Database| async move {
        let mut taken = Vec::new();
        for _ in 0..20 {
            let now = Utc::now().naive_utc();
            let mut conn = db.conn().await.unwrap();
            let claimed = outbox::claim_pending(&mut conn, 7, redispatch, now)
                .await
                .unwrap();
            taken.extend(claimed.into_iter().map(|c| c.event.id));
        }
        taken
    };
    let (a, b) = tokio::join!(
        tokio::spawn(claim(first.clone())),
        tokio::spawn(claim(second.clone()))
    );
    let mut taken: Vec<String> = a.unwrap().into_iter().chain(b.unwrap()).collect();
    taken.sort();
    all.sort();
    assert_eq!(taken, all, "every row claimed once");
}

crate::both_backends!(concurrent_claims_are_disjoint);
