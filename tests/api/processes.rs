//! The engine as separate processes, the way operators run it: the README's
//! run command, graceful shutdown, a database outage, refusal of unsafe
//! production settings, and the CLI.

use std::time::Duration;

use crate::ops::parse_prometheus;
use crate::support::app::{http_client, read, PASSWORD};
use crate::support::backends::{postgres_admin_url, with_search_path, Backend, TestDatabase};
use crate::support::process::{eventually, orderflow_command, run_to_completion, EngineProcess};
use crate::support::proxy::{url_without_host, TcpProxy};

const RECOVERY_DEADLINE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_command_serves_on_embedded_sqlite_and_stops_on_sigterm() {
    let workdir = tempfile::tempdir().unwrap();
    // Exactly what the README's run command does, with no services configured.
    let mut cmd = orderflow_command(workdir.path());
    cmd.env("ORDERFLOW__HTTP__PORT", "0");
    let engine = EngineProcess::start(cmd);

    let client = http_client();
    let health = read(client.get(engine.url("/healthz")).send().await.unwrap()).await;
    health.assert_status(200);
    let ready = read(client.get(engine.url("/readyz")).send().await.unwrap()).await;
    ready.assert_status(200);
    assert_eq!(ready.body["components"]["redis"], "disabled");
    assert!(
        workdir.path().join("data/orderflow.db").exists(),
        "the embedded database lives under data/"
    );

    let status = engine.terminate();
    assert!(
        status.success(),
        "SIGTERM must stop the engine cleanly: {status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_and_health_metric_follow_a_database_outage_and_recover() {
    let db = TestDatabase::create(Backend::Postgres).await;
    let schema = db.url.rsplit("search_path%3D").next().unwrap().to_owned();
    let admin = url_without_host(&postgres_admin_url());
    let proxy = TcpProxy::start(admin.upstream.clone()).await;
    let proxied = with_search_path(
        &format!(
            "{}127.0.0.1:{}{}",
            admin.before_host, proxy.port, admin.after_host
        ),
        &schema,
    );

    let workdir = tempfile::tempdir().unwrap();
    let mut cmd = orderflow_command(workdir.path());
    cmd.env("ORDERFLOW_ENV", "test")
        .env("ORDERFLOW__DATABASE__URL", &proxied)
        .env("ORDERFLOW__DATABASE__CONNECT_TIMEOUT_MS", "1000")
        .env("ORDERFLOW__TELEMETRY__HEALTH_CHECK_INTERVAL_MS", "200");
    let engine = EngineProcess::start(cmd);
    let client = http_client();

    let state = || async {
        let ready = read(client.get(engine.url("/readyz")).send().await.unwrap()).await;
        let metrics = client
            .get(engine.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let gauge = parse_prometheus(&metrics)
            .into_iter()
            .find(|s| {
                s.name == "service_health_status"
                    && s.labels.get("component").map(String::as_str) == Some("database")
            })
            .map(|s| s.value);
        (
            ready.status.as_u16(),
            ready.body["components"]["database"]
                .as_str()
                .map(str::to_owned),
            gauge,
        )
    };

    assert_eq!(state().await, (200, Some("up".to_owned()), Some(1.0)));

    proxy.go_down();
    eventually(
        "readyz reports the database down",
        RECOVERY_DEADLINE,
        || async { state().await == (503, Some("down".to_owned()), Some(0.0)) },
    )
    .await;
    // Liveness is not readiness: the process still serves.
    read(client.get(engine.url("/healthz")).send().await.unwrap())
        .await
        .assert_status(200);
    // Requests that need the database fail cleanly with 503, not 500.
    let register = read(
        client
            .post(engine.url("/api/v1/auth/register"))
            .json(&serde_json::json!({"email": "outage@example.com", "password": PASSWORD, "name": "O"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    register.assert_error(503, "unavailable");
    assert!(register.header("retry-after").is_some());

    proxy.come_back();
    // The periodic check alone brings the gauge back, without any request.
    tokio::time::sleep(Duration::from_millis(100)).await;
    eventually(
        "the health gauge recovers by itself",
        RECOVERY_DEADLINE,
        || async {
            let metrics = client
                .get(engine.url("/metrics"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            parse_prometheus(&metrics).iter().any(|s| {
                s.name == "service_health_status"
                    && s.labels.get("component").map(String::as_str) == Some("database")
                    && s.value == 1.0
            })
        },
    )
    .await;
    assert_eq!(state().await, (200, Some("up".to_owned()), Some(1.0)));
    drop(engine);
    drop(db);
}

#[test]
fn production_refuses_to_start_with_the_development_jwt_secret() {
    let workdir = tempfile::tempdir().unwrap();
    let mut cmd = orderflow_command(workdir.path());
    cmd.env("ORDERFLOW_ENV", "production").arg("serve");
    let (status, _, stderr) = run_to_completion(cmd);
    assert!(!status.success());
    assert!(stderr.contains("development JWT secret"), "{stderr}");

    let mut cmd = orderflow_command(workdir.path());
    cmd.env("ORDERFLOW_ENV", "production")
        .env("ORDERFLOW__AUTH__JWT_SECRET", "too-short")
        .arg("serve");
    let (status, _, stderr) = run_to_completion(cmd);
    assert!(!status.success());
    assert!(stderr.contains("at least 32"), "{stderr}");
    assert!(
        !stderr.contains("too-short"),
        "the secret itself must not be printed: {stderr}"
    );
}

#[test]
fn unknown_configuration_key_is_refused_by_name() {
    let workdir = tempfile::tempdir().unwrap();
    let mut cmd = orderflow_command(workdir.path());
    cmd.env("ORDERFLOW__HTTP__PROT", "8080").arg("serve");
    let (status, _, stderr) = run_to_completion(cmd);
    assert!(!status.success());
    assert!(stderr.contains("prot"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_migrates_and_creates_an_admin_who_can_log_in() {
    let workdir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite://{}", workdir.path().join("cli.db").display());
    let command = |args: &[&str]| {
        let mut cmd = orderflow_command(workdir.path());
        cmd.env("ORDERFLOW__DATABASE__URL", &db_url).args(args);
        cmd
    };

    let (status, stdout, stderr) = run_to_completion(command(&["migrate"]));
    assert!(status.success(), "{stderr}");
    let applied: usize = stdout
        .trim()
        .strip_prefix("applied ")
        .and_then(|rest| rest.strip_suffix(" migration(s) on sqlite"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected output: {stdout}"));
    assert!(
        applied > 0,
        "a fresh database gets every migration: {stdout}"
    );
    let (status, stdout, _) = run_to_completion(command(&["migrate"]));
    assert!(status.success());
    assert!(
        stdout.contains("applied 0 migration(s)"),
        "migrations are idempotent: {stdout}"
    );

    let create = [
        "user",
        "create",
        "--admin",
        "--email",
        "Ops@Example.com",
        "--password",
        PASSWORD,
        "--name",
        "Ops",
    ];
    let (status, stdout, stderr) = run_to_completion(command(&create));
    assert!(status.success(), "{stderr}");
    let user: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(user["role"], "admin");
    assert_eq!(user["email"], "ops@example.com");

    let (status, _, stderr) = run_to_completion(command(&create));
    assert!(!status.success());
    assert!(stderr.contains("already exists"), "{stderr}");

    let (status, _, stderr) = run_to_completion(command(&[
        "user",
        "create",
        "--email",
        "bad",
        "--password",
        "x",
        "--name",
        "N",
    ]));
    assert!(!status.success());
    assert!(
        stderr.contains("email") && stderr.contains("password"),
        "{stderr}"
    );

    let mut serve = command(&[]);
    serve.env("ORDERFLOW__HTTP__PORT", "0");
    let engine = EngineProcess::start(serve);
    let client = http_client();
    let login = read(
        client
            .post(engine.url("/api/v1/auth/login"))
            .json(&serde_json::json!({"email": "ops@example.com", "password": PASSWORD}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    login.assert_status(200);
    assert_eq!(login.body["user"]["role"], "admin");
    let token = login.body["access_token"].as_str().unwrap();
    let users = read(
        client
            .get(engine.url("/api/v1/users"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    users.assert_status(200);
    assert!(engine.stderr_so_far().is_empty() || !engine.stderr_so_far().contains("panicked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_logs_are_json_lines_without_secrets() {
    const JWT_SECRET: &str = "production-jwt-secret-that-is-long-enough-42";
    const REDIS_PASSWORD: &str = "redis-password-never-logged";
    const LOGIN_PASSWORD: &str = "login-password-never-logged";
    let workdir = tempfile::tempdir().unwrap();
    let mut cmd = orderflow_command(workdir.path());
    cmd.env("ORDERFLOW_ENV", "production")
        .env("ORDERFLOW__HTTP__HOST", "127.0.0.1")
        .env("ORDERFLOW__HTTP__PORT", "0")
        .env("ORDERFLOW__AUTH__JWT_SECRET", JWT_SECRET)
        .env(
            "ORDERFLOW__DATABASE__URL",
            format!("sqlite://{}", workdir.path().join("prod.db").display()),
        )
        // Configured but unreachable: the engine starts degraded and says so.
        .env(
            "ORDERFLOW__REDIS__URL",
            format!("redis://:{REDIS_PASSWORD}@127.0.0.1:1/0"),
        )
        .env("ORDERFLOW__REDIS__CONNECT_TIMEOUT_MS", "200");
    let engine = EngineProcess::start(cmd);
    let client = http_client();
    let ready = read(client.get(engine.url("/readyz")).send().await.unwrap()).await;
    ready.assert_status(200);
    assert_eq!(ready.body["status"], "degraded");
    assert_eq!(ready.body["components"]["redis"], "down");
    let login = client
        .post(engine.url("/api/v1/auth/login"))
        .json(&serde_json::json!({"email": "nobody@example.com", "password": LOGIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 401);

    let (status, stdout, stderr) = engine.terminate_and_collect();
    assert!(status.success());
    let logs: Vec<&String> = stdout
        .iter()
        .filter(|l| !l.starts_with("orderflow listening on "))
        .collect();
    assert!(
        logs.len() >= 3,
        "expected start-up and request logs, got {logs:?}"
    );
    for line in &logs {
        let entry: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(
            entry["level"].is_string() && entry["timestamp"].is_string(),
            "{line}"
        );
    }
    assert!(
        logs.iter().any(|l| l.contains("\"request finished\"")
            && l.contains("/api/v1/auth/login")
            && l.contains("request.id")),
        "request logs carry the route and request id"
    );
    let everything = format!("{}\n{}", stdout.join("\n"), stderr.join("\n"));
    for secret in [JWT_SECRET, REDIS_PASSWORD, LOGIN_PASSWORD] {
        assert!(
            !everything.contains(secret),
            "a secret reached the logs: {secret}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_stops_the_engine_gracefully_too() {
    let workdir = tempfile::tempdir().unwrap();
    let mut cmd = orderflow_command(workdir.path());
    cmd.env("ORDERFLOW__HTTP__PORT", "0");
    let engine = EngineProcess::start(cmd);
    read(
        http_client()
            .get(engine.url("/healthz"))
            .send()
            .await
            .unwrap(),
    )
    .await
    .assert_status(200);
    let (status, stdout, _) = engine.interrupt_and_collect();
    assert!(
        status.success(),
        "SIGINT must stop the engine cleanly: {status:?}"
    );
    let logs = stdout.join("\n");
    assert!(
        logs.contains("shutting down gracefully") && logs.contains("SIGINT"),
        "{logs}"
    );
}
