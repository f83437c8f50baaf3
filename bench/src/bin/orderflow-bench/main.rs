//! `orderflow-bench`: the load generator. It drives an engine over its real
//! HTTP API with N concurrent virtual customers, for a fixed duration or
//! number of checkouts, then checks the engine's invariants and reports
//! throughput, latency per operation, errors by code and the engine's own
//! metrics, as a table, JSON and an SVG chart.
//!
//! By default it starts the engine itself on a fresh database (SQLite, or a
//! new PostgreSQL database with `--postgres`); `--engine both` runs
//! orderflow and then the baseline on the same kind of database and reports
//! the ratio. `--target` drives an engine that is already running instead.
//! See docs/benchmarks.md.

mod api;
mod report;
mod scenario;
mod stats;
mod zipf;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use secrecy::SecretString;

use orderflow::config::DatabaseSettings;
use orderflow::db::Database;
use orderflow_bench::invariants;

use crate::api::Api;
use crate::report::{Machine, Report, RunReport};
use crate::scenario::{Mix, Plan, Run, Scenario};
use crate::stats::Recorder;
use orderflow_bench::engine::{self, Engine, LaunchOptions};

#[derive(Debug, Parser)]
#[command(
    name = "orderflow-bench",
    version,
    about = "Load generator for orderflow: scenarios, invariant check, report"
)]
struct Args {
    /// What the virtual customers do.
    #[arg(long, value_enum, default_value = "flash-sale")]
    scenario: Scenario,
    /// Which checkout design to run: orderflow, baseline, or both one after
    /// the other (each on a fresh database), with their ratio.
    #[arg(long, default_value = "orderflow", value_parser = ["orderflow", "baseline", "both"])]
    engine: String,
    /// Concurrent virtual customers.
    #[arg(long, default_value_t = 64)]
    customers: usize,
    /// How long the load runs (`30`, `30s`, `2m`). Default 30 s unless
    /// --checkouts is given.
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Stop after this many checkout attempts (carts, in the carts
    /// scenario).
    #[arg(long)]
    checkouts: Option<u64>,
    /// SKUs of the catalog, mixed and carts scenarios.
    #[arg(long, default_value_t = 10_000)]
    skus: usize,
    /// Lines per cart in the catalog scenario, `MIN-MAX` or `N`.
    #[arg(long, default_value = "1-5", value_parser = parse_lines)]
    lines: (usize, usize),
    /// Initial stock of each SKU. Default: 5 000 for the flash sale (the
    /// sale ends when it is sold), 1 000 000 otherwise.
    #[arg(long)]
    stock: Option<i64>,
    /// Exponent of the Zipf distribution of SKU picks.
    #[arg(long, default_value_t = 1.0)]
    zipf: f64,
    /// The mixed scenario's action weights.
    #[arg(
        long,
        default_value = "browse=50,cart=20,checkout=20,decline=4,cancel=3,refund=3"
    )]
    mix: String,
    /// Flows started per second across all customers (a flow is a checkout,
    /// or one action in the mixed scenario); default as fast as the engine
    /// answers. For latency at a given load below the peak.
    #[arg(long)]
    rate: Option<f64>,
    /// The sandbox payment provider's latency per call, in the engines the
    /// bench starts.
    #[arg(long, default_value_t = 0)]
    payment_latency_ms: u64,
    /// A PostgreSQL server URL on which each started engine gets a fresh
    /// database (dropped afterwards). Without it: SQLite in a temporary file.
    #[arg(long, env = "ORDERFLOW_BENCH_POSTGRES")]
    postgres: Option<String>,
    /// Redis for the started engines (each gets its own key prefix).
    #[arg(long)]
    redis: Option<String>,
    /// Extra engine setting for the started engines, as
    /// `ORDERFLOW__SECTION__KEY=value`; repeatable.
    #[arg(long = "set", value_parser = parse_setting)]
    settings: Vec<(String, String)>,
    /// The engine binary to start; default: `orderflow-bench-engine` next
    /// to this one (the engine built from the same sources, which also
    /// serves `--engine baseline`). An engine's own `orderflow` binary runs
    /// only `--engine orderflow`.
    #[arg(long)]
    engine_bin: Option<PathBuf>,
    /// Drive this running engine (e.g. http://127.0.0.1:8080) instead of
    /// starting one; --database-url and the admin credentials are then
    /// needed too.
    #[arg(long, requires = "database_url")]
    target: Option<String>,
    /// The target engine's database, for the invariant check.
    #[arg(long)]
    database_url: Option<String>,
    #[arg(long, default_value = engine::ADMIN_EMAIL)]
    admin_email: String,
    #[arg(long, env = "ORDERFLOW_BENCH_ADMIN_PASSWORD", default_value = engine::ADMIN_PASSWORD, hide_default_value = true)]
    admin_password: String,
    /// Where the JSON report, the SVG chart and the engines' logs go.
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
    /// Seed of the customers' random choices.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// How long the invariant check waits for sagas still running.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    settle_timeout: Duration,
    /// No progress bar.
    #[arg(long)]
    no_progress: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("orderflow-bench: INVARIANTS VIOLATED; see the report above");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("orderflow-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs every requested engine; true when every invariant held.
async fn run(args: Args) -> anyhow::Result<bool> {
    let plan = Plan {
        scenario: args.scenario,
        customers: args.customers.max(1),
        duration: match (args.duration, args.checkouts) {
            (None, None) => Some(Duration::from_secs(30)),
            (d, _) => d,
        },
        checkouts: args.checkouts,
        skus: args.skus.max(1),
        lines: args.lines,
        stock: args.stock.unwrap_or(match args.scenario {
            Scenario::FlashSale => 5_000,
            _ => 1_000_000,
        }),
        zipf_exponent: args.zipf,
        mix: Mix::parse(&args.mix).context("--mix")?,
        rate: args.rate.filter(|r| *r > 0.0),
        seed: args.seed,
    };
    let engines: Vec<&str> = match args.engine.as_str() {
        "both" => vec!["orderflow", "baseline"],
        one => vec![one],
    };
    if args.target.is_some() && engines.len() > 1 {
        bail!("--engine both starts its engines itself; it cannot be used with --target");
    }
    let backend = match (&args.target, &args.postgres) {
        (Some(_), _) => "external",
        (None, Some(_)) => "postgres",
        (None, None) => "sqlite",
    };
    let mut report = Report {
        scenario: plan.scenario.name(),
        backend: backend.to_owned(),
        plan: plan.clone(),
        payment_latency_ms: args.payment_latency_ms,
        machine: Machine::this(),
        runs: Vec::new(),
        ratio: None,
    };
    for engine in engines {
        let run = run_engine(&args, &plan, engine).await?;
        report.runs.push(run);
    }
    report.compute_ratio();
    println!("{}", report.text());
    let (json, svg) = report.write(&args.out)?;
    println!("report: {}\nchart:  {}", json.display(), svg.display());
    Ok(report.passed())
}

async fn run_engine(args: &Args, plan: &Plan, engine: &str) -> anyhow::Result<RunReport> {
    let started = match &args.target {
        Some(_) => None,
        None => {
            let options = LaunchOptions {
                binary: match &args.engine_bin {
                    Some(bin) => bin.clone(),
                    None => engine::sibling_binary()?,
                },
                postgres: args.postgres.clone(),
                redis: args.redis.clone(),
                payment_latency_ms: args.payment_latency_ms,
                logs: args.out.clone(),
                settings: args.settings.clone(),
            };
            eprintln!("starting the {engine} engine ...");
            Some(Engine::start(&options, engine).await?)
        }
    };
    let (address, database_url) = match (&started, &args.target, &args.database_url) {
        (Some(e), _, _) => (e.address.clone(), e.database_url.clone()),
        (None, Some(target), Some(url)) => (target.clone(), url.clone()),
        _ => bail!("--target needs --database-url for the invariant check"),
    };
    let result = measure(
        args,
        plan,
        engine,
        &address,
        &database_url,
        started.as_ref(),
    )
    .await;
    if let Some(e) = started {
        e.stop().await.context("stopping the engine")?;
    }
    result
}

async fn measure(
    args: &Args,
    plan: &Plan,
    engine: &str,
    address: &str,
    database_url: &str,
    started: Option<&Engine>,
) -> anyhow::Result<RunReport> {
    let connections = plan.customers + 8;
    let setup = Api::new(address, connections, Arc::new(Recorder::new()))?;
    let admin = setup.login(&args.admin_email, &args.admin_password).await?;
    eprintln!(
        "[{engine}] setting up {}: products and {} customers ...",
        plan.scenario.name(),
        plan.customers
    );
    let shop = scenario::set_up(&setup, admin, plan).await?;
    let metrics_before = setup.metrics().await.unwrap_or_default();
    let memory_before = started.and_then(Engine::memory);

    let recorder = Arc::new(Recorder::new());
    let api = Api::new(address, connections, recorder.clone())?;
    let run = Run::new(api, shop, plan.clone());
    let done = Arc::new(AtomicBool::new(false));
    let progress = show_progress(args, plan, engine, run.clone(), done.clone());
    let clock = Instant::now();
    let stopper = {
        let run = run.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("interrupted: finishing the flows in flight, then checking invariants (Ctrl-C again to quit now)");
                run.stop();
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(130);
                }
            }
        })
    };
    let outcome = run.drive().await;
    let elapsed = clock.elapsed();
    done.store(true, Ordering::SeqCst);
    let _ = progress.await;
    let measured = recorder.summary(elapsed);
    let metrics_after = setup.metrics().await.unwrap_or_default();
    let memory_after = started.and_then(Engine::memory);

    let db = Database::connect(&DatabaseSettings {
        url: Some(SecretString::from(database_url.to_owned())),
        pool_size: Some(2),
        connect_timeout_ms: 5_000,
    })?;
    let settle = Instant::now();
    let mut unsettled = invariants::running_sagas(&db).await?;
    while unsettled > 0 && settle.elapsed() < args.settle_timeout {
        tokio::time::sleep(Duration::from_millis(200)).await;
        unsettled = invariants::running_sagas(&db).await?;
    }
    let audit = invariants::check(&db, &outcome.acknowledged).await?;
    stopper.abort();
    Ok(RunReport {
        engine: engine.to_owned(),
        measured,
        outcome,
        unsettled_sagas: unsettled,
        settle_s: settle.elapsed().as_secs_f64(),
        invariants: audit,
        memory_before,
        memory_after,
        engine_metrics_delta: delta(&metrics_before, &metrics_after),
    })
}

/// A progress bar on stderr (hidden when stderr is not a terminal), until
/// `done`.
fn show_progress(
    args: &Args,
    plan: &Plan,
    engine: &str,
    run: Arc<Run>,
    done: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    let by_count = plan.checkouts.filter(|_| plan.duration.is_none());
    let length = by_count.unwrap_or_else(|| plan.duration.map_or(0, |d| d.as_secs().max(1)));
    let bar = if args.no_progress {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(length)
    };
    let unit = if by_count.is_some() { "checkouts" } else { "s" };
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "[{engine}] {{elapsed_precise}} {{bar:30}} {{pos}}/{{len}} {unit} · {{msg}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    tokio::spawn(async move {
        loop {
            let recorder = run.api.recorder();
            let secs = started.elapsed().as_secs_f64().max(1e-3);
            bar.set_position(if by_count.is_some() {
                run.attempts()
            } else {
                started.elapsed().as_secs()
            });
            bar.set_message(format!(
                "{} paid ({:.0}/s), {:.0} req/s",
                recorder.checkouts(),
                recorder.checkouts() as f64 / secs,
                recorder.requests() as f64 / secs
            ));
            if done.load(Ordering::SeqCst) {
                bar.finish();
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
}

fn delta(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    after
        .iter()
        .filter_map(|(k, v)| {
            let d = v - before.get(k).copied().unwrap_or(0.0);
            (d != 0.0).then(|| (k.clone(), d))
        })
        .collect()
}

/// `30`, `30s`, `1500ms`, `2m`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((text, "s"), |i| text.split_at(i));
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}`: expected a duration like 30s, 1500ms or 2m"))?;
    let secs = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("`{text}`: the unit must be ms, s or m")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("`{text}`: {e}"))
}

fn parse_lines(text: &str) -> Result<(usize, usize), String> {
    let (min, max) = text.split_once('-').unwrap_or((text, text));
    let parse = |n: &str| {
        n.trim()
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=100).contains(n))
    };
    match (parse(min), parse(max)) {
        (Some(min), Some(max)) if min <= max => Ok((min, max)),
        _ => Err(format!(
            "`{text}`: expected N or MIN-MAX with 1 <= MIN <= MAX <= 100"
        )),
    }
}

fn parse_setting(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}`: expected ORDERFLOW__SECTION__KEY=value"))?;
    if !key.starts_with("ORDERFLOW") {
        return Err(format!("`{key}`: engine settings start with ORDERFLOW"));
    }
    Ok((key.to_owned(), value.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(
            parse_duration("1500ms").unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("2h").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn lines_parse_as_a_range() {
        assert_eq!(parse_lines("1-5").unwrap(), (1, 5));
        assert_eq!(parse_lines("1").unwrap(), (1, 1));
        assert!(parse_lines("5-1").is_err());
        assert!(parse_lines("0").is_err());
        assert!(parse_lines("1-101").is_err());
    }

    #[test]
    fn settings_must_be_engine_settings() {
        assert_eq!(
            parse_setting("ORDERFLOW__HTTP__WORKERS=2").unwrap(),
            ("ORDERFLOW__HTTP__WORKERS".to_owned(), "2".to_owned())
        );
        assert!(parse_setting("PATH=/tmp").is_err());
        assert!(parse_setting("ORDERFLOW__X").is_err());
    }

    #[test]
    fn the_metrics_delta_keeps_what_changed() {
        let before = BTreeMap::from([("a".to_owned(), 1.0), ("b".to_owned(), 2.0)]);
        let after = BTreeMap::from([
            ("a".to_owned(), 1.0),
            ("b".to_owned(), 5.0),
            ("c".to_owned(), 1.0),
        ]);
        let d = delta(&before, &after);
        assert_eq!(d.len(), 2);
        assert_eq!(d["b"], 3.0);
        assert_eq!(d["c"], 1.0);
    }
}
