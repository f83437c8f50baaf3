//! The load benches' binaries end to end: `orderflow-bench` runs each
//! scenario against both engines (started from `orderflow-bench-engine`) on
//! both backends with its invariant audit, and drives an engine it did not
//! start. (The baseline's and the audit's behaviour inside the engine is
//! tested with the engine's suite, in tests/api/baseline.rs.)

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{json, Value};

const ADMIN_EMAIL: &str = "bench-test-admin@example.com";
const ADMIN_PASSWORD: &str = "bench-test-admin-password";

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

/// An engine the test starts itself, on an SQLite file of its own; killed
/// when dropped.
struct RunningEngine {
    child: Child,
    address: String,
    database_url: String,
    _dir: tempfile::TempDir,
}

impl RunningEngine {
    fn start() -> RunningEngine {
        let dir = tempfile::tempdir().unwrap();
        let database_url = format!("sqlite://{}", dir.path().join("engine.db").display());
        let mut child = Command::new(env!("CARGO_BIN_EXE_orderflow-bench-engine"))
            .arg("serve")
            .current_dir(dir.path())
            .env("ORDERFLOW_ENV", "test")
            .env(
                "ORDERFLOW_CONFIG_DIR",
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config"),
            )
            .env("ORDERFLOW__HTTP__PORT", "0")
            .env("ORDERFLOW__DATABASE__URL", &database_url)
            .env("ORDERFLOW__AUTH__BOOTSTRAP_ADMIN_EMAIL", ADMIN_EMAIL)
            .env("ORDERFLOW__AUTH__BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("ORDERFLOW__RATE_LIMITS__WRITES_PER_USER", "0")
            .env("ORDERFLOW__RATE_LIMITS__WRITES_PER_IP", "0")
            .env("ORDERFLOW__TELEMETRY__LOG_LEVEL", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting orderflow-bench-engine");
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(address) = line.strip_prefix("orderflow listening on ") {
                    let _ = tx.send(address.trim().to_owned());
                }
            }
        });
        let address = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the engine starts listening");
        RunningEngine {
            child,
            address,
            database_url,
            _dir: dir,
        }
    }
}

impl Drop for RunningEngine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the bench against `app` with `args`; returns its report.
fn bench_against(app: &RunningEngine, args: &[&str]) -> Value {
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
#[test]
fn the_bench_drives_a_running_engine() {
    let app = RunningEngine::start();
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
}
