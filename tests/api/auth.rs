//! Registration, login, tokens and login rate limits.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::json;

use crate::backend_test;
use crate::support::app::{ADMIN_EMAIL, ADMIN_PASSWORD, PASSWORD};
use crate::support::{Backend, TestApp};

fn unique_email() -> String {
    format!("user-{}@example.com", uuid::Uuid::new_v4().simple())
}

backend_test! {
    async fn register_returns_the_user_and_a_bearer_token(app) {
        let reply = app.register("  Ada@Example.COM ", PASSWORD, "Ada Lovelace").await;
        reply.assert_status(201);
        let body = &reply.body;
        assert_eq!(body["user"]["email"], "ada@example.com");
        assert_eq!(body["user"]["name"], "Ada Lovelace");
        assert_eq!(body["user"]["role"], "customer");
        assert!(uuid::Uuid::parse_str(body["user"]["id"].as_str().unwrap()).is_ok());
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_in"], 3600);
        assert!(body["user"].get("password_hash").is_none());
    }
}

backend_test! {
    async fn register_login_and_me_round_trip(app) {
        let email = unique_email();
        app.register(&email, PASSWORD, "Grace").await.assert_status(201);
        let login = app.login(&email.to_uppercase(), PASSWORD).await;
        login.assert_status(200);
        let token = login.body["access_token"].as_str().unwrap();
        let me = app.get("/api/v1/users/me", Some(token)).await;
        me.assert_status(200);
        assert_eq!(me.body["email"], email);
        assert_eq!(me.body["id"], login.body["user"]["id"]);
    }
}

backend_test! {
    async fn duplicate_email_is_409_email_taken(app) {
        let email = unique_email();
        app.register(&email, PASSWORD, "First").await.assert_status(201);
        app.register(&email.to_uppercase(), PASSWORD, "Second").await.assert_error(409, "email_taken");
    }
}

backend_test! {
    async fn concurrent_registrations_of_one_email_create_one_account(app) {
        let email = unique_email();
        let attempts = (0..8).map(|_| app.register(&email, PASSWORD, "Racer"));
        let replies = futures_util::future::join_all(attempts).await;
        let created = replies.iter().filter(|r| r.status == 201).count();
        let taken = replies.iter().filter(|r| r.status == 409 && r.error_code() == "email_taken").count();
        assert_eq!((created, taken), (1, 7), "{:?}", replies.iter().map(|r| r.status).collect::<Vec<_>>());
    }
}

backend_test! {
    async fn invalid_registration_names_every_bad_field(app) {
        let reply = app.register("not-an-email", "short", "").await;
        reply.assert_error(422, "validation_failed");
        let fields = &reply.body["error"]["details"]["fields"];
        for field in ["email", "password", "name"] {
            assert!(fields[field].is_string(), "missing {field}: {}", reply.text);
        }
    }
}

backend_test! {
    async fn wrong_password_and_unknown_email_get_the_same_401(app) {
        let email = unique_email();
        app.register(&email, PASSWORD, "Ada").await.assert_status(201);
        let wrong_password = app.login(&email, "not the password").await;
        let unknown_email = app.login(&unique_email(), PASSWORD).await;
        wrong_password.assert_error(401, "unauthorized");
        unknown_email.assert_error(401, "unauthorized");
        assert_eq!(wrong_password.body, unknown_email.body, "no hint which part was wrong");
    }
}

backend_test! {
    async fn repeated_login_failures_for_one_email_are_rate_limited(app) {
        let email = unique_email();
        app.register(&email, PASSWORD, "Ada").await.assert_status(201);
        for _ in 0..5 {
            app.login(&email, "wrong password").await.assert_error(401, "unauthorized");
        }
        let limited = app.login(&email, "wrong password").await;
        limited.assert_error(429, "rate_limited");
        let retry_after: u64 = limited.header("retry-after").expect("Retry-After").parse().unwrap();
        assert!(retry_after >= 1);
        // Once limited, even the right password waits: the budget protects the account.
        app.login(&email, PASSWORD).await.assert_error(429, "rate_limited");
        // Other accounts are unaffected.
        app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await.assert_status(200);
    }
}

backend_test! {
    async fn concurrent_wrong_passwords_cannot_overrun_the_budget(app) {
        let email = unique_email();
        app.register(&email, PASSWORD, "Ada").await.assert_status(201);
        let guesses = (0..20).map(|i| app.login(&email, if i % 2 == 0 { "guess-one" } else { "guess-two" }));
        let replies = futures_util::future::join_all(guesses).await;
        let checked = replies.iter().filter(|r| r.status == 401).count();
        let limited = replies.iter().filter(|r| r.status == 429).count();
        assert_eq!((checked, limited), (5, 15), "{:?}", replies.iter().map(|r| r.status).collect::<Vec<_>>());
    }
}

backend_test! {
    async fn successful_logins_do_not_use_up_the_failure_budget(app) {
        let email = unique_email();
        app.register(&email, PASSWORD, "Ada").await.assert_status(201);
        for _ in 0..8 {
            app.login(&email, PASSWORD).await.assert_status(200);
        }
        for _ in 0..5 {
            app.login(&email, "wrong password").await.assert_error(401, "unauthorized");
        }
        app.login(&email, "wrong password").await.assert_error(429, "rate_limited");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_budget_lives_in_redis_when_redis_is_configured() {
    let app = TestApp::spawn(Backend::Postgres).await;
    app.login(&unique_email(), "whatever-password")
        .await
        .assert_error(401, "unauthorized");
    let prefix = app.redis_prefix().expect("postgres apps run with Redis");
    let client = redis::Client::open(crate::support::backends::redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:rl:*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(keys.len(), 2, "one email key and one IP key: {keys:?}");
    assert!(
        keys.iter().all(|k| !k.contains('@')),
        "keys carry no email addresses: {keys:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_failures_from_one_ip_are_rate_limited_across_emails_in_process() {
    login_failures_from_one_ip_are_rate_limited(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_failures_from_one_ip_are_rate_limited_across_emails_in_redis() {
    login_failures_from_one_ip_are_rate_limited(Backend::Postgres).await;
}

async fn login_failures_from_one_ip_are_rate_limited(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| s.rate_limits.login_failures_per_ip = 3).await;
    for _ in 0..3 {
        app.login(&unique_email(), "whatever-password")
            .await
            .assert_error(401, "unauthorized");
    }
    app.login(&unique_email(), "whatever-password")
        .await
        .assert_error(429, "rate_limited");
}

backend_test! {
    async fn me_without_a_token_is_401(app) {
        let reply = app.get("/api/v1/users/me", None).await;
        reply.assert_error(401, "unauthorized");
        assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
        app.call(Method::GET, "/api/v1/users/me", None, Some("not.a.jwt")).await.assert_error(401, "unauthorized");
    }
}

fn claims(sub: &str, role: &str, iat: i64, exp: i64) -> serde_json::Value {
    json!({ "sub": sub, "role": role, "iat": iat, "exp": exp })
}

backend_test! {
    async fn forged_expired_and_alg_none_tokens_are_401(app) {
        let login = app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
        let admin_id = login.body["user"]["id"].as_str().unwrap().to_owned();
        let now = chrono::Utc::now().timestamp();
        let test_secret = orderflow::config::DEVELOPMENT_JWT_SECRET.as_bytes();

        let forged = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims(&admin_id, "admin", now, now + 600),
            &EncodingKey::from_secret(b"an-attacker-secret-of-32-bytes-or-more"),
        ).unwrap();
        let expired = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims(&admin_id, "admin", now - 7200, now - 3600),
            &EncodingKey::from_secret(test_secret),
        ).unwrap();
        let other_alg = jsonwebtoken::encode(
            &Header::new(Algorithm::HS384),
            &claims(&admin_id, "admin", now, now + 600),
            &EncodingKey::from_secret(test_secret),
        ).unwrap();
        use base64::Engine;
        let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let alg_none = format!(
            "{}.{}.",
            b64(br#"{"alg":"none","typ":"JWT"}"#),
            b64(claims(&admin_id, "admin", now, now + 600).to_string().as_bytes())
        );
        for (what, token) in [("forged", forged), ("expired", expired), ("HS384", other_alg), ("alg none", alg_none)] {
            let reply = app.get("/api/v1/users", Some(&token)).await;
            assert_eq!(reply.status, 401, "{what} token must be refused: {}", reply.text);
            assert_eq!(reply.error_code(), "unauthorized");
        }
        // The genuine token still works.
        let token = login.body["access_token"].as_str().unwrap();
        app.get("/api/v1/users", Some(token)).await.assert_status(200);
    }
}

backend_test! {
    async fn token_of_a_user_that_does_not_exist_is_401_on_me(app) {
        let now = chrono::Utc::now().timestamp();
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims(&uuid::Uuid::now_v7().to_string(), "customer", now, now + 600),
            &EncodingKey::from_secret(orderflow::config::DEVELOPMENT_JWT_SECRET.as_bytes()),
        ).unwrap();
        for path in ["/api/v1/users/me", "/api/v1/orders", "/api/v1/sagas"] {
            app.get(path, Some(&token)).await.assert_error(401, "unauthorized");
        }
        app.post("/api/v1/carts", json!({}), Some(&token)).await.assert_error(401, "unauthorized");
    }
}

/// A genuine token outlives neither its account nor a change of its role.
async fn deleted_and_demoted_accounts_lose_their_tokens(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| s.auth.account_check_ttl_ms = 0).await;
    let customer = app.customer_token().await;
    let me = app.get("/api/v1/users/me", Some(&customer)).await;
    me.assert_status(200);
    app.get("/api/v1/orders", Some(&customer))
        .await
        .assert_status(200);
    let admin = app.admin_token().await;
    app.get("/api/v1/users", Some(&admin))
        .await
        .assert_status(200);

    let id = me.body["id"].as_str().unwrap().to_owned();
    let db = app.database().await;
    let mut conn = db.conn().await.unwrap();
    for sql in [
        format!("DELETE FROM users WHERE id = '{id}'"),
        format!("UPDATE users SET role = 'customer' WHERE email = '{ADMIN_EMAIL}'"),
    ] {
        orderflow::with_conn!(&mut conn, |c| {
            use diesel_async::RunQueryDsl;
            diesel::sql_query(sql).execute(c).await
        })
        .unwrap();
    }
    app.get("/api/v1/orders", Some(&customer))
        .await
        .assert_error(401, "unauthorized");
    app.post("/api/v1/carts", json!({}), Some(&customer))
        .await
        .assert_error(401, "unauthorized");
    // The demoted admin's token still says "admin"; the account does not.
    app.get("/api/v1/users", Some(&admin))
        .await
        .assert_error(403, "forbidden");
    app.get("/api/v1/users/me", Some(&admin))
        .await
        .assert_status(200);
}

/// The account check runs while the handler's other extractors run; when
/// one of them fails first (a bad query string here), the check must not be
/// cut off half-way through its database call (on SQLite that panicked the
/// worker and dropped the connection).
async fn a_failing_extractor_beside_the_account_check_is_a_clean_400(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| s.auth.account_check_ttl_ms = 0).await;
    let admin = app.admin_token().await;
    for _ in 0..50 {
        app.get("/api/v1/products?limit=false", Some(&admin))
            .await
            .assert_error(400, "invalid_query");
    }
    app.get("/api/v1/products", Some(&admin))
        .await
        .assert_status(200);
}

crate::both_backends!(
    deleted_and_demoted_accounts_lose_their_tokens,
    a_failing_extractor_beside_the_account_check_is_a_clean_400
);
