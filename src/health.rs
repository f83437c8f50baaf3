//! Health of the engine's dependencies.
//!
//! A periodic check (every `telemetry.health_check_interval_ms`) and every
//! `/readyz` call run the same bounded probes and keep the
//! `service_health_status{component}` gauge current, so the metric recovers
//! by itself when a dependency comes back. The database probe has a pool (of
//! one connection) of its own: a busy request pool is not a down database.

use std::time::Duration;

use serde::Serialize;

use crate::config::DatabaseSettings;
use crate::db::Database;
use crate::redis_conn::RedisConn;
use crate::telemetry::HEALTH_STATUS;

/// A probe that has not answered in this long counts as down.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ComponentStatus {
    Up,
    Down,
    Disabled,
}

#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
pub struct HealthReport {
    pub database: ComponentStatus,
    pub redis: ComponentStatus,
}

impl HealthReport {
    /// Ready means able to do the engine's work: the database is the record of
    /// truth, so it must be up; Redis being down only degrades.
    pub fn is_ready(&self) -> bool {
        self.database == ComponentStatus::Up
    }

    pub fn is_degraded(&self) -> bool {
        self.redis == ComponentStatus::Down
    }
}

#[derive(Clone)]
pub struct HealthMonitor {
    db: Database,
    redis: Option<RedisConn>,
}

impl HealthMonitor {
    pub fn new(
        database: &DatabaseSettings,
        redis: Option<RedisConn>,
    ) -> anyhow::Result<HealthMonitor> {
        let mut probe = database.clone();
        probe.pool_size = Some(1);
        Ok(HealthMonitor {
            db: Database::connect(&probe)?,
            redis,
        })
    }

    /// Probes every component and updates the gauges.
    pub async fn check(&self) -> HealthReport {
        // The ping runs in a task of its own and only the wait for it is cut
        // short: a database call dropped halfway is not safe on SQLite (its
        // connection runs on a blocking thread that must be waited for).
        let db = self.db.clone();
        let ping = tokio::spawn(async move { db.ping().await });
        let database = match tokio::time::timeout(PROBE_TIMEOUT, ping).await {
            Ok(Ok(Ok(()))) => ComponentStatus::Up,
            Ok(Ok(Err(e))) => {
                tracing::warn!(error = %e, "database health check failed");
                ComponentStatus::Down
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "database health check task failed");
                ComponentStatus::Down
            }
            Err(_) => {
                tracing::warn!(
                    timeout_ms = PROBE_TIMEOUT.as_millis() as u64,
                    "database health check timed out"
                );
                ComponentStatus::Down
            }
        };
        let redis = match &self.redis {
            None => ComponentStatus::Disabled,
            Some(redis) => match redis.ping().await {
                Ok(()) => ComponentStatus::Up,
                Err(e) => {
                    tracing::warn!(error = %e, "redis health check failed");
                    ComponentStatus::Down
                }
            },
        };
        publish("database", database);
        publish("redis", redis);
        HealthReport { database, redis }
    }

    /// Runs [`HealthMonitor::check`] every `interval` on the current runtime
    /// until the runtime stops.
    pub fn spawn_periodic(self, interval: Duration) {
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                self.check().await;
            }
        });
    }
}

fn publish(component: &'static str, status: ComponentStatus) {
    let value = match status {
        ComponentStatus::Up => 1.0,
        ComponentStatus::Down => 0.0,
        // A disabled component is neither up nor down: no series.
        ComponentStatus::Disabled => return,
    };
    metrics::gauge!(HEALTH_STATUS, "component" => component).set(value);
}
