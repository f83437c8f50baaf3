//! Inventory hot path.
//!
//! - `plan_batch/N`: planning one group commit of N reservations (pure CPU).
//! - `hot_sku/<backend>`: 1 000 concurrent one-unit reservations on one SKU
//!   through its actor and the database; throughput is reported in
//!   reservations per second. SQLite always; PostgreSQL when
//!   `ORDERFLOW_BENCH_DATABASE_URL` is set (tables are created in it).
//!
//! Run: `cargo bench --bench inventory`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use chrono::Utc;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use orderflow::cache::ProductCache;
use orderflow::catalog::Catalog;
use orderflow::config::{Environment, Settings};
use orderflow::db::pipeline::Pipeline;
use orderflow::db::Database;
use orderflow::domain::inventory::{SkuStock, StockLevels, StockOp};
use orderflow::domain::product::NewProduct;
use orderflow::inventory::batch::plan;
use orderflow::inventory::Inventory;
use secrecy::SecretString;
use uuid::Uuid;

const HOT_SKU_RESERVATIONS: u64 = 1_000;

fn plan_batch(c: &mut Criterion) {
    let mut group = c.benchmark_group("plan_batch");
    for n in [1_u64, 10, 100] {
        let ops: Vec<StockOp> = (0..n)
            .map(|_| StockOp::Reserve {
                reservation_id: Uuid::now_v7(),
                order_id: Uuid::now_v7(),
                quantity: 1,
                expires_at: Utc::now() + chrono::Duration::minutes(15),
            })
            .collect();
        let stock = SkuStock::new(
            StockLevels {
                on_hand: 1_000_000,
                reserved: 0,
            },
            Vec::new(),
        )
        .expect("stock");
        group.throughput(Throughput::Elements(n));
        group.bench_with_input(BenchmarkId::from_parameter(n), &ops, |b, ops| {
            b.iter(|| {
                let mut working = stock.clone();
                black_box(plan("hot", &mut working, ops, Utc::now().naive_utc(), 5))
            })
        });
    }
    group.finish();
}

/// The actors on an actix system of their own, as in the engine.
fn start_inventory(
    database_url: String,
) -> (Inventory, Database, tokio::sync::oneshot::Sender<()>) {
    let mut settings = Settings::load_from(
        Environment::Test,
        std::path::Path::new("config"),
        Default::default(),
    )
    .expect("settings");
    settings.database.url = Some(SecretString::from(database_url));
    let db = Database::connect(&settings.database).expect("pool");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let engine_db = db.clone();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            engine_db.migrate().await.expect("migrations");
            let cache = ProductCache::new(None, Duration::from_secs(30));
            let pipeline = Pipeline::start(engine_db.clone(), &settings.pipeline);
            let inventory = Inventory::start(
                engine_db,
                pipeline,
                cache,
                &settings.actors,
                &settings.inventory,
            );
            ready_tx.send(inventory).expect("ready");
            let _ = stop_rx.await;
        });
    });
    let inventory = ready_rx.recv().expect("inventory started");
    (inventory, db, stop_tx)
}

fn hot_sku(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut backends = vec![(
        "sqlite",
        format!("sqlite://{}", dir.path().join("bench.db").display()),
    )];
    if let Ok(url) = std::env::var("ORDERFLOW_BENCH_DATABASE_URL") {
        backends.push(("postgres", url));
    }
    let mut group = c.benchmark_group("hot_sku");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Elements(HOT_SKU_RESERVATIONS));
    for (name, url) in backends {
        let (inventory, db, stop) = start_inventory(url);
        group.bench_function(name, |b| {
            b.iter_custom(|iterations| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iterations {
                        // A fresh SKU with exactly enough stock: every attempt wins.
                        let sku_name = format!("hot-{}", Uuid::now_v7().simple());
                        let new = NewProduct::parse(
                            &sku_name,
                            "Hot",
                            None,
                            100,
                            "USD",
                            Some(HOT_SKU_RESERVATIONS as i64),
                        )
                        .expect("product");
                        Catalog::new(db.clone(), ProductCache::new(None, Duration::from_secs(30)))
                            .create(&new)
                            .await
                            .expect("create");
                        let started = Instant::now();
                        let tries = (0..HOT_SKU_RESERVATIONS)
                            .map(|_| inventory.reserve(&new.sku, Uuid::now_v7(), 1));
                        let results = futures_util::future::join_all(tries).await;
                        total += started.elapsed();
                        assert!(
                            results.iter().all(Result::is_ok),
                            "every reservation succeeds"
                        );
                    }
                    total
                })
            })
        });
        let _ = stop.send(());
    }
    group.finish();
}

criterion_group!(benches, plan_batch, hot_sku);
criterion_main!(benches);
