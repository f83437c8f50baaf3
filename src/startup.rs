//! Building and running the engine: `Application::build(settings)` wires the
//! database, Redis, services and HTTP server and binds the listener (port 0
//! picks a free port, reported by [`Application::port`]);
//! `run_until_signalled` serves until SIGTERM or SIGINT, then drains in-flight
//! requests for up to `http.shutdown_timeout_s`. actix's own signal handling
//! is off: it treats SIGINT as a forced stop, and it would install process-wide
//! handlers in every embedding (tests included).

use std::net::TcpListener;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::ErrorHandlers;
use actix_web::{web, App, HttpServer};
use anyhow::Context;

use crate::auth::accounts::Accounts;
use crate::auth::token::TokenService;
use crate::cache::ProductCache;
use crate::catalog::Catalog;
use crate::config::Settings;
use crate::db::pipeline::Pipeline;
use crate::db::Database;
use crate::domain::network::TrustedProxies;
use crate::events::analytics::Analytics;
use crate::events::Events;
use crate::health::HealthMonitor;
use crate::http;
use crate::http::admission::Admission;
use crate::http::errors::envelope_fallback;
use crate::http::extract::BodyLimit;
use crate::http::integrations::StoqSecret;
use crate::http::request_telemetry::RequestTelemetry;
use crate::http::write_limits::WriteLimits;
use crate::idempotency::Idempotency;
use crate::inventory::Inventory;
use crate::orders::{choose_engine, Carts, Checkout, CheckoutEngines, Orders};
use crate::payments::Payments;
use crate::redis_conn::RedisConn;
use crate::telemetry;

pub struct Application {
    port: u16,
    sandbox: Option<std::sync::Arc<crate::payments::sandbox::SandboxProvider>>,
    host: String,
    server: Server,
    analytics: Analytics,
    events: Events,
    shutdown_timeout: Duration,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        Application::build_with(settings, &CheckoutEngines::new()).await
    }

    /// Builds the engine with more checkout engines than the saga to choose
    /// from by `checkout.engine` (the load benches' baseline).
    pub async fn build_with(
        settings: Settings,
        checkout_engines: &CheckoutEngines,
    ) -> anyhow::Result<Application> {
        let checkout_engine = choose_engine(&settings.checkout.engine, checkout_engines)?;
        let metrics = telemetry::metrics_handle().clone();
        let db = Database::connect(&settings.database)?;
        let applied = db.migrate().await?;
        tracing::info!(
            database.backend = db.backend().as_str(),
            migrations.applied = applied,
            "database ready"
        );
        let redis = RedisConn::from_settings(&settings.redis)?;
        if let Some(redis) = &redis {
            // Not fatal: the engine serves without Redis and reconnects later.
            if let Err(e) = redis.ping().await {
                tracing::warn!(error = %e, "Redis is configured but not reachable; continuing degraded");
            }
        }

        let tokens = TokenService::new(&settings.auth.jwt_secret, settings.auth.token_ttl_s);
        let accounts = Accounts::new(
            db.clone(),
            tokens.clone(),
            &settings.rate_limits,
            Duration::from_millis(settings.auth.account_check_ttl_ms),
            redis.clone(),
        );
        accounts.ensure_bootstrap_admin(&settings.auth).await?;

        // The first unknown-email login would otherwise compute it on a worker.
        tokio::task::spawn_blocking(crate::auth::password::dummy_hash).await?;

        let health = HealthMonitor::new(&settings.database, redis.clone())?;
        health.check().await;
        health.clone().spawn_periodic(Duration::from_millis(
            settings.telemetry.health_check_interval_ms.max(50),
        ));

        let cache = ProductCache::new(
            redis.clone(),
            Duration::from_millis(settings.cache.product_ttl_ms),
        );
        let pipeline = Pipeline::start(db.clone(), &settings.pipeline);
        let inventory = Inventory::start(
            db.clone(),
            pipeline.clone(),
            cache.clone(),
            &settings.actors,
            &settings.inventory,
        );
        let catalog = Catalog::new(db.clone(), cache);
        let payments = Payments::from_settings(&settings.payments)?;
        let sandbox_handle = payments.sandbox.clone();
        let orders = Orders::start(
            db.clone(),
            pipeline.clone(),
            inventory.clone(),
            catalog.clone(),
            payments.clone(),
            &settings,
        );
        let carts = Carts::start(
            db.clone(),
            pipeline.clone(),
            catalog.clone(),
            orders.clone(),
            &inventory,
            &settings.actors,
        );
        let idempotency = web::Data::new(Idempotency::start(db.clone(), &settings.idempotency));
        let events = Events::start(
            db.clone(),
            redis.clone(),
            &settings,
            &format!("orderflow-{}-{}", std::process::id(), uuid::Uuid::now_v7()),
        )?;
        let analytics = Analytics::start(db.clone(), &settings.analytics);
        let checkout = Checkout::new(
            orders.clone(),
            carts.clone(),
            Duration::from_millis(settings.checkout.sync_wait_ms),
            checkout_engine,
        );

        let listener = TcpListener::bind((settings.http.host.as_str(), settings.http.port))
            .with_context(|| format!("binding {}:{}", settings.http.host, settings.http.port))?;
        let port = listener.local_addr()?.port();

        let admission = Admission::new(settings.http.max_in_flight());
        let proxies = TrustedProxies::parse(&settings.http.trusted_proxies)
            .map_err(|e| anyhow::anyhow!("http.trusted_proxies: {e}"))?;
        let write_limits = WriteLimits::new(
            &settings.rate_limits,
            tokens.clone(),
            proxies.clone(),
            redis.clone(),
        );
        let body_limit = BodyLimit(settings.http.body_limit_bytes);
        let accounts = web::Data::new(accounts);
        let tokens = web::Data::new(tokens);
        let health = web::Data::new(health);
        let metrics = web::Data::new(metrics);
        let inventory = web::Data::new(inventory);
        let catalog = web::Data::new(catalog);
        let orders = web::Data::new(orders);
        let carts = web::Data::new(carts);
        let checkout = web::Data::new(checkout);
        let database = web::Data::new(db);
        let stoq = web::Data::new(StoqSecret(settings.integrations.stoq.secret.clone()));
        let events_data = web::Data::new(events.clone());
        let analytics_data = web::Data::new(analytics.clone());
        let server = HttpServer::new(move || {
            App::new()
                .wrap(ErrorHandlers::new().default_handler(envelope_fallback))
                .wrap(write_limits.clone())
                .wrap(admission.clone())
                .wrap(RequestTelemetry)
                .app_data(web::Data::new(body_limit))
                .app_data(web::PayloadConfig::new(body_limit.0))
                .app_data(accounts.clone())
                .app_data(tokens.clone())
                .app_data(health.clone())
                .app_data(metrics.clone())
                .app_data(inventory.clone())
                .app_data(catalog.clone())
                .app_data(orders.clone())
                .app_data(carts.clone())
                .app_data(idempotency.clone())
                .app_data(web::Data::new(proxies.clone()))
                .app_data(checkout.clone())
                .app_data(database.clone())
                .app_data(stoq.clone())
                .app_data(events_data.clone())
                .app_data(analytics_data.clone())
                .configure(http::routes)
        })
        .listen(listener)?
        .workers(settings.http.workers())
        .shutdown_timeout(settings.http.shutdown_timeout_s)
        .disable_signals()
        .run();

        Ok(Application {
            port,
            sandbox: sandbox_handle,
            host: settings.http.host.clone(),
            server,
            analytics,
            events,
            shutdown_timeout: Duration::from_secs(settings.http.shutdown_timeout_s),
        })
    }

    /// The sandbox payment provider, when it is the one in use: its ledger
    /// shows every charge (tests use it).
    pub fn sandbox(&self) -> Option<std::sync::Arc<crate::payments::sandbox::SandboxProvider>> {
        self.sandbox.clone()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn address(&self) -> String {
        format!("http://{}:{}", self.host, self.port)
    }

    /// A handle to stop the server from elsewhere (tests, signal handlers).
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until stopped through [`Application::handle`], then stops
    /// the background work (see `drain`).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let result = self.server.await;
        Self::drain(&self.events, &self.analytics, self.shutdown_timeout).await;
        result
    }

    /// After the server stopped: event delivery finishes its attempts in
    /// flight and the analytics events still buffered are written, each
    /// within the shutdown timeout.
    async fn drain(events: &Events, analytics: &Analytics, timeout: Duration) {
        tokio::join!(events.shutdown(timeout), analytics.shutdown(timeout));
    }

    /// Serves until SIGTERM or SIGINT, then stops gracefully: no new
    /// connections, event delivery takes no new work, in-flight requests and
    /// deliveries finish and buffered analytics are written, all within one
    /// shutdown timeout counted from the signal.
    pub async fn run_until_signalled(self) -> std::io::Result<()> {
        let handle = self.server.handle();
        let events = self.events.clone();
        let signalled = std::sync::Arc::new(std::sync::OnceLock::new());
        let signalled_at = signalled.clone();
        // Installed now, before anything else runs: a signal that arrives
        // before the task below is first polled is still caught.
        let listening = ShutdownSignals::install();
        let signals = tokio::spawn(async move {
            match listening {
                Ok(signals) => {
                    let name = signals.received().await;
                    tracing::info!(signal = name, "shutting down gracefully");
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for shutdown signals; stopping")
                }
            }
            let _ = signalled_at.set(tokio::time::Instant::now());
            events.request_stop();
            handle.stop(true).await;
        });
        let result = self.server.await;
        signals.abort();
        let left = signalled.get().map_or(self.shutdown_timeout, |at| {
            self.shutdown_timeout.saturating_sub(at.elapsed())
        });
        Self::drain(
            &self.events,
            &self.analytics,
            left.max(Duration::from_secs(1)),
        )
        .await;
        result
    }
}

/// SIGTERM and SIGINT, listened for from the moment they are installed.
struct ShutdownSignals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn install() -> std::io::Result<ShutdownSignals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(ShutdownSignals {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    /// The name of the first signal received.
    async fn received(mut self) -> &'static str {
        tokio::select! {
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.interrupt.recv() => "SIGINT",
        }
    }
}

/// Password hashing takes a 19 MiB block per hash, on whichever blocking
/// thread runs it. glibc raises its mmap threshold after the first such
/// block is freed, so later ones come from per-thread arenas and stay there:
/// 64 registrations left the engine at 862 MiB RSS. A fixed threshold of
/// 1 MiB keeps every large block mmapped and returned on free (29 MiB
/// after the same registrations; docs/benchmarks.md).
pub fn return_large_blocks_to_the_os() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; binaries call this
    // first thing in main, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}
