//! Bad input of every kind gets the error envelope and a 4xx, never a 500 or
//! an HTML page, and leaves state unchanged.

use reqwest::Method;
use serde_json::json;

use crate::backend_test;
use crate::support::app::PASSWORD;

const REGISTER: &str = "/api/v1/auth/register";

backend_test! {
    async fn malformed_json_is_400_invalid_json(app) {
        for body in ["{\"email\": ", "not json", "{\"email\":\"a@b.io\"} trailing", ""] {
            app.post_raw(REGISTER, "application/json", body).await.assert_error(400, "invalid_json");
        }
    }
}

backend_test! {
    async fn wrong_content_type_is_415(app) {
        let body = json!({"email": "a@b.io", "password": PASSWORD, "name": "A"}).to_string();
        app.post_raw(REGISTER, "text/plain", body.clone()).await.assert_error(415, "unsupported_media_type");
        app.post_raw(REGISTER, "application/x-www-form-urlencoded", "email=a").await.assert_error(415, "unsupported_media_type");
        // Nothing was created by the refused request.
        app.post_raw(REGISTER, "application/json", body).await.assert_status(201);
    }
}

backend_test! {
    async fn body_over_the_limit_is_413(app) {
        let huge = format!("{{\"email\":\"a@b.io\",\"password\":\"{}\",\"name\":\"A\"}}", "x".repeat(70_000));
        let reply = app.post_raw(REGISTER, "application/json", huge).await;
        reply.assert_error(413, "payload_too_large");
        assert_eq!(reply.body["error"]["details"]["limit_bytes"], 65536);
    }
}

backend_test! {
    async fn well_formed_json_of_the_wrong_shape_is_422_naming_the_field(app) {
        let cases = [
            (json!({"email": "a@b.io", "password": PASSWORD}), "name"),
            (json!({"email": 5, "password": PASSWORD, "name": "A"}), "email"),
            (json!({"email": "a@b.io", "password": PASSWORD, "name": "A", "role": "admin"}), "role"),
            (json!([1, 2, 3]), "body"),
        ];
        for (body, field) in cases {
            let reply = app.post(REGISTER, body, None).await;
            reply.assert_error(422, "validation_failed");
            assert!(reply.body["error"]["details"]["fields"][field].is_string(), "{field}: {}", reply.text);
        }
    }
}

backend_test! {
    async fn deeply_nested_json_is_refused_without_a_blow_up(app) {
        let deep = format!("{}{}", "[".repeat(50_000), "]".repeat(50_000));
        let reply = app.post_raw(REGISTER, "application/json", deep).await;
        assert!(reply.status.is_client_error(), "{}", reply.status);
        app.get("/healthz", None).await.assert_status(200);
    }
}

backend_test! {
    async fn unknown_routes_are_json_404_and_wrong_methods_json_405(app) {
        app.get("/api/v1/no-such-thing", None).await.assert_error(404, "not_found");
        app.get("/nowhere/at/all", None).await.assert_error(404, "not_found");
        app.call(Method::DELETE, "/api/v1/auth/register", None, None).await.assert_error(405, "method_not_allowed");
        app.call(Method::POST, "/healthz", None, None).await.assert_error(405, "method_not_allowed");
    }
}

backend_test! {
    async fn request_ids_are_echoed_or_generated(app) {
        let echoed = app.client.get(app.url("/healthz")).header("x-request-id", "trace-abc-123").send().await.unwrap();
        assert_eq!(echoed.headers()["x-request-id"], "trace-abc-123");
        let generated = app.client.get(app.url("/api/v1/nope")).send().await.unwrap();
        let id = generated.headers()["x-request-id"].to_str().unwrap();
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
        // An unusable incoming id is replaced, not echoed.
        let replaced = app.client.get(app.url("/healthz")).header("x-request-id", "has spaces").send().await.unwrap();
        assert_ne!(replaced.headers()["x-request-id"], "has spaces");
    }
}

backend_test! {
    async fn sql_and_script_fragments_are_stored_as_plain_data(app) {
        let name = "Robert'); DROP TABLE users;-- <script>alert(1)</script>";
        let reply = app.register("bobby@example.com", PASSWORD, name).await;
        reply.assert_status(201);
        let token = reply.body["access_token"].as_str().unwrap();
        let me = app.get("/api/v1/users/me", Some(token)).await;
        me.assert_status(200);
        assert_eq!(me.body["name"], name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_body_limit_is_enforced() {
    let app = crate::support::TestApp::spawn_with(crate::support::Backend::Sqlite, |s| {
        s.http.body_limit_bytes = 1024
    })
    .await;
    let body = format!(
        "{{\"email\":\"a@b.io\",\"password\":\"{}\",\"name\":\"A\"}}",
        "x".repeat(2000)
    );
    let reply = app.post_raw(REGISTER, "application/json", body).await;
    reply.assert_error(413, "payload_too_large");
    assert_eq!(reply.body["error"]["details"]["limit_bytes"], 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_body_over_the_limit_is_413() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = crate::support::TestApp::spawn(crate::support::Backend::Sqlite).await;
    let addr = app.address.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {REGISTER} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = "x".repeat(16 * 1024);
    for _ in 0..5 {
        // Without Content-Length only the streaming check can stop this.
        if stream
            .write_all(format!("{:x}\r\n{chunk}\r\n", chunk.len()).as_bytes())
            .await
            .is_err()
        {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response).await;
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(response.contains("payload_too_large"), "{response}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_json_is_not_json() {
    let app = crate::support::TestApp::spawn(crate::support::Backend::Sqlite).await;
    let body = json!({"email": "a@b.io", "password": PASSWORD, "name": "A"}).to_string();
    app.post_raw(REGISTER, "text/json", body.clone())
        .await
        .assert_error(415, "unsupported_media_type");
    app.post_raw(REGISTER, "application/problem+json", body)
        .await
        .assert_status(201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_max_in_flight_requests_are_shed_with_503_but_health_is_not() {
    let app = crate::support::TestApp::spawn_with(crate::support::Backend::Sqlite, |s| {
        s.http.max_in_flight = Some(1)
    })
    .await;
    // Registrations hold their admission permit while a password is hashed.
    let emails: Vec<String> = (0..12).map(|i| format!("burst-{i}@example.com")).collect();
    let burst = emails
        .iter()
        .map(|email| app.register(email, PASSWORD, "Burst"));
    let (replies, health) = tokio::join!(
        futures_util::future::join_all(burst),
        app.get("/healthz", None)
    );
    health.assert_status(200);
    let shed: Vec<_> = replies.iter().filter(|r| r.status == 503).collect();
    assert!(
        !shed.is_empty(),
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for reply in &shed {
        reply.assert_error(503, "overloaded");
        assert_eq!(reply.header("retry-after"), Some("1"));
    }
    assert!(replies.iter().all(|r| r.status == 201 || r.status == 503));
    // Permits are given back: a request afterwards is admitted.
    app.register("after-burst@example.com", PASSWORD, "After")
        .await
        .assert_status(201);
}
