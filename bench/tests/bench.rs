//! The load benches' binaries end to end: `orderflow-bench` runs each
//! scenario against both engines (started from `orderflow-bench-engine`) on
//! both backends with its invariant audit, and drives an engine it did not
//! start. (The baseline's and the audit's behaviour inside the engine is
//! tested with the engine's suite, in tests/api/baseline.rs.)

use std::process::Command;

use orderflow_bench::engine::{Engine, LaunchOptions, ADMIN_EMAIL, ADMIN_PASSWORD};
use serde_json::{json, Value};

/// The PostgreSQL server the test command provides.
fn postgres_admin_url() -> String {
    std::env::var("ORDERFLOW_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// The bench binary with a fresh output directory.
fn bench(out: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_orderflow-bench"));
    cmd.env_remove("ORDERFLOW_BENCH_POSTGRES")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .args(["--no-progress", "--out"])
        .arg(out)
        .args(["--engine-bin", env!("CARGO_BIN_EXE_orderflow-bench-engine")]);
    cmd
}

fn report_of(out: &std::path::Path) -> Value {
    let json = std::fs::read_dir(out)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .expect("a JSON report");
    let svg = json.with_extension("svg");
    let chart = std::fs::read_to_string(&svg).expect("an SVG chart beside it");
    assert!(chart.starts_with("<svg") && chart.contains("checkout latency"));
    serde_json::from_slice(&std::fs::read(json).unwrap()).unwrap()
}

/// Each scenario, both engines, on the given database: the bench exits 0,
/// the invariants held, and the report has the figures.
fn run_scenarios(postgres: Option<String>) {
    for (scenario, extra) in [
        ("flash-sale", vec!["--stock", "15", "--customers", "6"]),
        (
            "catalog",
            vec!["--skus", "40", "--checkouts", "12", "--customers", "4"],
        ),
        (
            "mixed",
            vec!["--skus", "20", "--checkouts", "12", "--customers", "4"],
        ),
    ] {
        let out = tempfile::tempdir().unwrap();
        let mut cmd = bench(out.path());
        cmd.args([
            "--scenario",
            scenario,
            "--engine",
            "both",
            "--duration",
            "60s",
        ])
        .args(&extra);
        if let Some(url) = &postgres {
            cmd.args(["--postgres", url]);
        }
        let output = cmd.output().expect("running orderflow-bench");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{scenario}: exit {}\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.contains("orderflow ÷ baseline"), "{stdout}");
        let report = report_of(out.path());
        let runs = report["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 2);
        for run in runs {
            let engine = run["engine"].as_str().unwrap();
            assert_eq!(
                run["invariants"]["violations"],
                json!([]),
                "{scenario} {engine}"
            );
            assert!(
                run["measured"]["operations"]["checkout"]["count"]
                    .as_u64()
                    .unwrap()
                    > 0
            );
            assert!(
                run["measured"]["operations"]["checkout"]["p99_ms"]
                    .as_f64()
                    .unwrap()
                    > 0.0
            );
            assert!(run["outcome"]["acknowledged_orders"].as_u64().unwrap() > 0);
            if scenario == "flash-sale" {
                // Paid in the database, whether answered 201 or (a slow
                // saga) 202 first.
                assert_eq!(
                    run["invariants"]["statuses"]["paid"], 15,
                    "{engine} sold the stock once"
                );
                assert_eq!(run["outcome"]["sold_out"], true);
            } else {
                assert!(run["outcome"]["checkout_attempts"].as_u64().unwrap() <= 12);
            }
        }
        assert!(report["ratio"]["checkouts_per_s"].as_f64().unwrap() > 0.0);
    }
}

#[test]
fn the_bench_runs_each_scenario_on_sqlite() {
    run_scenarios(None);
}

#[test]
fn the_bench_runs_each_scenario_on_postgres() {
    run_scenarios(Some(postgres_admin_url()));
}

/// An engine started the way the bench starts one (a fresh SQLite file, the
/// bench's admin account, write limits off), for the bench to drive as an
/// engine it did not start.
async fn running_engine(logs: &std::path::Path) -> Engine {
    let options = LaunchOptions {
        binary: env!("CARGO_BIN_EXE_orderflow-bench-engine").into(),
        postgres: None,
        redis: None,
        payment_latency_ms: 0,
        logs: logs.to_owned(),
        settings: Vec::new(),
    };
    Engine::start(&options, "orderflow")
        .await
        .expect("starting orderflow-bench-engine")
}

/// Runs the bench against `app` with `args`; returns its report.
fn bench_against(app: &Engine, args: &[&str]) -> Value {
    let out = tempfile::tempdir().unwrap();
    let output = bench(out.path())
        .args(args)
        .args([
            "--target",
            &app.address,
            "--database-url",
            &app.database_url,
        ])
        .args([
            "--admin-email",
            ADMIN_EMAIL,
            "--admin-password",
            ADMIN_PASSWORD,
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{args:?}: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    report_of(out.path())
}

/// The bench against an engine it did not start: the invariant check reads
/// the engine's database; a bad flag is a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bench_drives_a_running_engine() {
    let logs = tempfile::tempdir().unwrap();
    let app = running_engine(logs.path()).await;
    let report = bench_against(
        &app,
        &[
            "--scenario",
            "catalog",
            "--skus",
            "10",
            "--checkouts",
            "5",
            "--customers",
            "2",
        ],
    );
    assert_eq!(report["backend"], "external");
    let run = &report["runs"][0];
    assert_eq!(run["outcome"]["checkout_attempts"], 5);
    // Every order made is one a client was told about (a loaded machine
    // may refuse a flow before its checkout, with 503).
    assert_eq!(
        run["invariants"]["orders"],
        run["outcome"]["acknowledged_orders"]
    );
    assert!(run["invariants"]["orders"].as_u64().unwrap() >= 1);
    let made = run["invariants"]["orders"].clone();

    let report = bench_against(
        &app,
        &[
            "--scenario",
            "carts",
            "--skus",
            "5",
            "--checkouts",
            "6",
            "--customers",
            "2",
        ],
    );
    let run = &report["runs"][0];
    let refused = run["measured"]["operations"]["create_cart"]["errors"]
        .as_u64()
        .unwrap();
    assert_eq!(
        run["outcome"]["carts_created"].as_u64().unwrap() + refused,
        6
    );
    assert_eq!(run["measured"]["checkouts"], 0);
    assert_eq!(
        run["invariants"]["orders"], made,
        "abandoned carts make no orders"
    );

    let out = tempfile::tempdir().unwrap();
    let refused = bench(out.path())
        .args(["--scenario", "mixed", "--mix", "browse=1,steal=1"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("unknown action `steal`"));
    app.stop().await.expect("the engine stops");
}
