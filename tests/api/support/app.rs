//! [`TestApp`]: the engine running in-process on port 0, in an actix system
//! of its own, with its own database, plus a typed client for its API.

use std::path::Path;
use std::thread::JoinHandle;

use actix_web::dev::ServerHandle;
use orderflow::config::{Environment, Settings};
use orderflow::orders::CheckoutEngines;
use orderflow::startup::Application;
use reqwest::{Method, StatusCode};
use secrecy::SecretString;
use serde_json::{json, Value};

use super::backends::{Backend, TestDatabase, TestRedis};

pub const ADMIN_EMAIL: &str = "admin@orderflow.test";
pub const ADMIN_PASSWORD: &str = "admin-password-for-tests";
pub const PASSWORD: &str = "correct horse battery";

pub struct TestApp {
    pub address: String,
    pub backend: Backend,
    pub client: reqwest::Client,
    sandbox: Option<std::sync::Arc<orderflow::payments::sandbox::SandboxProvider>>,
    handle: ServerHandle,
    thread: Option<JoinHandle<()>>,
    // Dropped after the server has stopped (see Drop).
    _db: TestDatabase,
    _redis: Option<TestRedis>,
}

/// A response, read whole: status, headers and the body as JSON (or Null).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The stable error code of an error envelope.
    pub fn error_code(&self) -> &str {
        self.body["error"]["code"]
            .as_str()
            .unwrap_or("<no error envelope>")
    }

    #[track_caller]
    pub fn assert_status(&self, expected: u16) -> &Self {
        assert_eq!(
            self.status.as_u16(),
            expected,
            "unexpected status; body: {}",
            self.text
        );
        self
    }

    /// Asserts the error envelope of api.md: status, code, message, details.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) -> &Self {
        self.assert_status(status);
        assert_eq!(self.error_code(), code, "body: {}", self.text);
        assert!(
            self.body["error"]["message"].is_string(),
            "body: {}",
            self.text
        );
        assert!(
            self.body["error"]["details"].is_object(),
            "body: {}",
            self.text
        );
        assert!(
            self.header("content-type")
                .is_some_and(|c| c.starts_with("application/json")),
            "error responses are JSON"
        );
        self
    }
}

pub fn test_settings() -> Settings {
    let config_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut settings = Settings::load_from(Environment::Test, &config_dir, Default::default())
        .expect("test configuration loads");
    settings.http.port = 0;
    settings.http.workers = Some(1);
    settings.http.shutdown_timeout_s = 1;
    settings.database.pool_size = Some(4);
    settings.auth.bootstrap_admin_email = Some(ADMIN_EMAIL.to_owned());
    settings.auth.bootstrap_admin_password = Some(SecretString::from(ADMIN_PASSWORD));
    settings
}

pub fn http_client() -> reqwest::Client {
    // no_proxy: tests talk to loopback, whatever the environment's proxy says.
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("building the HTTP client")
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> TestApp {
        TestApp::spawn_with(backend, |_| {}).await
    }

    /// Spawns the engine with test settings adjusted by `customize`.
    pub async fn spawn_with(backend: Backend, customize: impl FnOnce(&mut Settings)) -> TestApp {
        TestApp::spawn_with_engines(backend, customize, CheckoutEngines::new()).await
    }

    /// Spawns the engine with more checkout engines to choose from by
    /// `checkout.engine` (the load benches' baseline).
    pub async fn spawn_with_engines(
        backend: Backend,
        customize: impl FnOnce(&mut Settings),
        engines: CheckoutEngines,
    ) -> TestApp {
        init_test_logging();
        let db = TestDatabase::create(backend).await;
        let redis = match backend {
            Backend::Postgres => Some(TestRedis::create().await),
            Backend::Sqlite => None,
        };
        let mut settings = test_settings();
        settings.database.url = Some(SecretString::from(db.url.clone()));
        if let Some(redis) = &redis {
            settings.redis.url = Some(SecretString::from(redis.url.clone()));
            settings.redis.key_prefix = redis.prefix.clone();
        }
        customize(&mut settings);

        let (tx, rx) = tokio::sync::oneshot::channel();
        let thread = std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                match Application::build_with(settings, &engines).await {
                    Ok(app) => {
                        let _ = tx.send(Ok((app.address(), app.handle(), app.sandbox())));
                        if let Err(e) = app.run_until_stopped().await {
                            eprintln!("test app stopped with an error: {e}");
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            });
        });
        let (address, handle, sandbox) = rx
            .await
            .expect("the app thread died while starting")
            .unwrap_or_else(|e| panic!("the app failed to start: {e:#}"));
        TestApp {
            address,
            backend,
            sandbox,
            client: http_client(),
            handle,
            thread: Some(thread),
            _db: db,
            _redis: redis,
        }
    }

    /// The sandbox payment provider of this engine: its ledger of charges.
    pub fn sandbox(&self) -> &orderflow::payments::sandbox::SandboxProvider {
        self.sandbox
            .as_deref()
            .expect("this engine runs with the sandbox payment provider")
    }

    /// A connection pool on this app's own database, for checks below the API.
    pub async fn database(&self) -> orderflow::db::Database {
        let mut settings = test_settings().database;
        settings.url = Some(SecretString::from(self._db.url.clone()));
        orderflow::db::Database::connect(&settings).expect("pool")
    }

    /// The Redis key prefix of this app, when it runs with Redis.
    pub fn redis_prefix(&self) -> Option<&str> {
        self._redis.as_ref().map(|r| r.prefix.as_str())
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// Sends `method path` with an optional JSON body and bearer token.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> Reply {
        let mut request = self.client.request(method, self.url(path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        read(request.send().await.expect("request failed")).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.call(Method::GET, path, None, token).await
    }

    pub async fn post(&self, path: &str, body: Value, token: Option<&str>) -> Reply {
        self.call(Method::POST, path, Some(body), token).await
    }

    /// Sends a raw body with the given content type.
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> Reply {
        let response = self
            .client
            .post(self.url(path))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("request failed");
        read(response).await
    }

    pub async fn register(&self, email: &str, password: &str, name: &str) -> Reply {
        self.post(
            "/api/v1/auth/register",
            json!({ "email": email, "password": password, "name": name }),
            None,
        )
        .await
    }

    pub async fn login(&self, email: &str, password: &str) -> Reply {
        self.post(
            "/api/v1/auth/login",
            json!({ "email": email, "password": password }),
            None,
        )
        .await
    }

    /// Registers a fresh customer and returns its access token.
    pub async fn customer_token(&self) -> String {
        let email = format!("customer-{}@example.com", uuid::Uuid::new_v4().simple());
        let reply = self.register(&email, PASSWORD, "Customer").await;
        reply.assert_status(201);
        reply.body["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }

    /// Logs in as the bootstrap admin and returns its access token.
    pub async fn admin_token(&self) -> String {
        let reply = self.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
        reply.assert_status(200);
        reply.body["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }
}

pub async fn read(response: reqwest::Response) -> Reply {
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.expect("reading the body");
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        body,
        text,
    }
}

impl TestApp {
    /// Stops the engine gracefully and waits for it; its database stays
    /// until the `TestApp` is dropped.
    pub fn stop(&mut self) {
        let handle = self.handle.clone();
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(handle.stop(true));
            }
        })
        .join();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        // Drop runs inside the test's runtime, where blocking on a future is
        // not allowed; a short-lived thread with its own runtime is.
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(handle.stop(false));
            }
        })
        .join();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `TEST_LOG=1` shows the engine's logs during tests.
fn init_test_logging() {
    if std::env::var_os("TEST_LOG").is_some() {
        let mut settings = test_settings().telemetry;
        settings.log_level = std::env::var("TEST_LOG_LEVEL").unwrap_or_else(|_| "debug".to_owned());
        orderflow::telemetry::init_tracing(&settings);
    }
}
