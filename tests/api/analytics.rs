//! Analytics: `POST /events.track` is accepted at once and written in
//! batches; `GET /events` lists what was recorded; a full buffer sheds with
//! 503 and a database outage delays writes without losing accepted events.

use std::time::Duration;

use orderflow::config::AnalyticsSettings;
use orderflow::db::events::{EventFilter, NewEventRow};
use orderflow::db::Database;
use orderflow::events::analytics::{Analytics, TrackError};
use secrecy::SecretString;
use serde_json::{json, Value};

use crate::backend_test;
use crate::support::app::test_settings;
use crate::support::backends::{Backend, TestDatabase};
use crate::support::process::eventually;
use crate::support::proxy::{postgres_through, url_without_host, TcpProxy};
use crate::support::TestApp;

const DEADLINE: Duration = Duration::from_secs(30);

async fn listed(app: &TestApp, admin: &str, query: &str) -> Vec<Value> {
    let reply = app
        .get(&format!("/api/v1/events{query}"), Some(admin))
        .await;
    reply.assert_status(200);
    reply.body["items"].as_array().unwrap().clone()
}

backend_test! {
    async fn tracked_events_are_accepted_then_listed_for_admins(app) {
        let admin = app.admin_token().await;
        let customer = app.customer_token().await;
        let me = app.get("/api/v1/users/me", Some(&customer)).await.body["id"].as_str().unwrap().to_owned();

        let anonymous = app
            .post("/api/v1/events.track", json!({"name": "page_viewed", "properties": {"path": "/shoes"}}), None)
            .await;
        anonymous.assert_status(202);
        assert_eq!(anonymous.body["status"], "accepted");
        let signed_in = app
            .post(
                "/api/v1/events.track",
                json!({"name": "product_viewed", "properties": {"sku": "A-1"}, "occurred_at": "2026-01-02T03:04:05Z"}),
                Some(&customer),
            )
            .await;
        signed_in.assert_status(202);

        eventually("both events are written", DEADLINE, || async {
            listed(&app, &admin, "?source=api").await.len() == 2
        })
        .await;
        let viewed = listed(&app, &admin, "?name=product_viewed").await;
        assert_eq!(viewed.len(), 1);
        assert_eq!(viewed[0]["id"], signed_in.body["id"]);
        assert_eq!(viewed[0]["user_id"], me.as_str());
        assert_eq!(viewed[0]["properties"], json!({"sku": "A-1"}));
        assert_eq!(viewed[0]["occurred_at"], "2026-01-02T03:04:05Z");
        assert_eq!(viewed[0]["source"], "api");
        let page = listed(&app, &admin, "?name=page_viewed").await;
        assert_eq!(page[0]["user_id"], Value::Null);
        assert_eq!(listed(&app, &admin, &format!("?user_id={me}")).await.len(), 1);
        assert_eq!(listed(&app, &admin, "?since=2999-01-01T00:00:00Z").await.len(), 0);
        let first = app.get("/api/v1/events?limit=1", Some(&admin)).await;
        assert_eq!(first.body["items"].as_array().unwrap().len(), 1);
        let cursor = first.body["next_cursor"].as_str().expect("a second page");
        let second = listed(&app, &admin, &format!("?limit=1&cursor={cursor}")).await;
        assert_ne!(second[0]["id"], first.body["items"][0]["id"]);

        app.get("/api/v1/events", Some(&customer)).await.assert_error(403, "forbidden");
        app.get("/api/v1/events", None).await.assert_error(401, "unauthorized");
        app.get("/api/v1/events?since=yesterday", Some(&admin)).await.assert_error(400, "invalid_query");
        app.get("/api/v1/events?colour=red", Some(&admin)).await.assert_error(400, "invalid_query");
    }
}

backend_test! {
    async fn bad_tracking_requests_are_refused_and_store_nothing(app) {
        let admin = app.admin_token().await;
        for (body, field) in [
            (json!({"name": ""}), "name"),
            (json!({"name": "x".repeat(201)}), "name"),
            (json!({"name": "ok", "properties": [1, 2]}), "properties"),
            (json!({"name": "ok", "properties": {"big": "x".repeat(17_000)}}), "properties"),
            (json!({"name": "ok", "occurred_at": "2999-01-01T00:00:00Z"}), "occurred_at"),
            (json!({"name": "ok", "occurred_at": "last tuesday"}), "occurred_at"),
        ] {
            let reply = app.post("/api/v1/events.track", body.clone(), None).await;
            reply.assert_error(422, "validation_failed");
            assert!(reply.body["error"]["details"]["fields"][field].is_string(), "{field}: {}", reply.text);
        }
        app.post("/api/v1/events.track", json!({"name": "ok", "extra": true}), None)
            .await
            .assert_error(422, "validation_failed");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(listed(&app, &admin, "").await, Vec::<Value>::new());
    }
}

fn row(name: &str) -> NewEventRow {
    let now = chrono::Utc::now().naive_utc();
    NewEventRow {
        id: uuid::Uuid::now_v7().to_string(),
        source: "api".to_owned(),
        external_id: None,
        name: name.to_owned(),
        user_id: None,
        properties: "{}".to_owned(),
        occurred_at: now,
        received_at: now,
    }
}

/// With the database unreachable the writer holds its batch and retries; the
/// buffer fills and further events are refused rather than queued without
/// bound. Once the database is back, every accepted event is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_buffer_sheds_and_a_database_outage_loses_no_accepted_event() {
    let test_db = TestDatabase::create(Backend::Postgres).await;
    let mut settings = test_settings().database;
    settings.url = Some(SecretString::from(test_db.url.clone()));
    let direct = Database::connect(&settings).unwrap();
    direct.migrate().await.unwrap();

    let upstream = url_without_host(&crate::support::backends::postgres_admin_url()).upstream;
    let proxy = TcpProxy::start(upstream).await;
    let schema = test_db
        .url
        .rsplit("search_path%3D")
        .next()
        .unwrap()
        .to_owned();
    settings.url = Some(SecretString::from(postgres_through(&proxy, &schema)));
    settings.connect_timeout_ms = 300;
    let proxied = Database::connect(&settings).unwrap();
    proxy.go_down();

    let analytics = Analytics::start(
        proxied,
        &AnalyticsSettings {
            buffer_capacity: 2,
            batch_size: 1,
            flush_interval_ms: 10,
        },
    );
    assert_eq!(analytics.track(row("first")), Ok(()));
    // The writer takes it and keeps trying to write it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(analytics.track(row("second")), Ok(()));
    assert_eq!(analytics.track(row("third")), Ok(()));
    assert_eq!(analytics.track(row("fourth")), Err(TrackError::Full));

    proxy.come_back();
    let count = || async {
        let mut conn = direct.conn().await.unwrap();
        orderflow::db::events::list(&mut conn, &EventFilter::default(), None, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect::<Vec<_>>()
    };
    eventually("the accepted events are written", DEADLINE, || async {
        count().await.len() == 3
    })
    .await;
    let mut names = count().await;
    names.sort();
    assert_eq!(names, ["first", "second", "third"]);
    analytics.shutdown(Duration::from_secs(5)).await;
}

/// A graceful stop writes what is still buffered: an accepted event is not
/// lost because its batch was still filling.
async fn a_graceful_stop_writes_buffered_events(backend: Backend) {
    let mut app = TestApp::spawn_with(backend, |s| {
        s.analytics.flush_interval_ms = 60_000;
        s.analytics.batch_size = 500;
    })
    .await;
    for name in ["a", "b", "c"] {
        app.post("/api/v1/events.track", json!({"name": name}), None)
            .await
            .assert_status(202);
    }
    let db = app.database().await;
    app.stop();
    let mut conn = db.conn().await.unwrap();
    let written = orderflow::db::events::list(&mut conn, &EventFilter::default(), None, 10)
        .await
        .unwrap();
    assert_eq!(written.len(), 3, "{written:?}");
}

crate::both_backends!(a_graceful_stop_writes_buffered_events);
