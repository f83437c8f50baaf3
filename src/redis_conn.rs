//! The optional Redis connection.
//!
//! Redis is never the record of truth: it caches, rate-limits and carries
//! events. The connection is made lazily and re-made automatically after an
//! outage, so the engine starts and serves while Redis is down; callers fall
//! back to in-process equivalents when a command fails.

use std::time::Duration;

use anyhow::Context;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use secrecy::ExposeSecret;

use crate::config::RedisSettings;

#[derive(Clone)]
pub struct RedisConn {
    manager: ConnectionManager,
    prefix: String,
    response_timeout: Duration,
}

impl RedisConn {
    /// `None` when `redis.url` is unset: Redis is disabled.
    pub fn from_settings(settings: &RedisSettings) -> anyhow::Result<Option<RedisConn>> {
        let Some(url) = settings
            .url
            .as_ref()
            .map(|u| u.expose_secret().trim().to_owned())
            .filter(|u| !u.is_empty())
        else {
            return Ok(None);
        };
        // The parse error may quote the URL (and its password); keep it out.
        let client = redis::Client::open(url.as_str())
            .map_err(|_| anyhow::anyhow!("redis.url is not a valid Redis URL"))?;
        let response_timeout = Duration::from_millis(settings.response_timeout_ms);
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(settings.connect_timeout_ms)))
            .set_response_timeout(Some(response_timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(2));
        let manager = ConnectionManager::new_lazy_with_config(client, config)
            .context("creating the Redis connection manager")?;
        Ok(Some(RedisConn {
            manager,
            prefix: settings.key_prefix.clone(),
            response_timeout,
        }))
    }

    /// A handle for issuing commands; cheap, all handles share one connection.
    pub fn connection(&self) -> ConnectionManager {
        self.manager.clone()
    }

    /// The full key for `suffix` under this deployment's prefix.
    pub fn key(&self, suffix: &str) -> String {
        format!("{}:{}", self.prefix, suffix)
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A bounded round trip, for health checks.
    pub async fn ping(&self) -> anyhow::Result<()> {
        let mut conn = self.connection();
        let reply: String = tokio::time::timeout(
            self.response_timeout,
            redis::cmd("PING").query_async(&mut conn),
        )
        .await
        .context("Redis PING timed out")??;
        anyhow::ensure!(reply == "PONG", "unexpected PING reply `{reply}`");
        Ok(())
    }
}
