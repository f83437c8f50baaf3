//! What settings must hold before the engine starts: ranges, pairs that go
//! together, and production's stricter rules (its own JWT secret, no
//! benchmark engine).

use anyhow::bail;
use secrecy::ExposeSecret;

use super::*;

impl Settings {
    /// Any other checkout engine is a benchmark device, never production.
    pub fn check_engine(&self) -> anyhow::Result<()> {
        let engine = &self.checkout.engine;
        if engine.is_empty()
            || !engine
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            bail!("checkout.engine must be a name like `orderflow`; got `{engine}`");
        }
        if self.environment == Environment::Production && engine != ORDERFLOW_CHECKOUT {
            bail!(
                "refusing to start in production with checkout.engine = \"{engine}\": \
                 only `orderflow` serves production; other engines exist for the load benches"
            );
        }
        Ok(())
    }
}

impl Settings {
    /// Checks that hold in every environment, plus production's stricter ones.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.database.target()?;
        if self.http.body_limit_bytes == 0 {
            bail!("http.body_limit_bytes must be at least 1");
        }
        if self.auth.token_ttl_s == 0 {
            bail!("auth.token_ttl_s must be at least 1");
        }
        if self.pipeline.queue_capacity == 0 || self.pipeline.max_batch == 0 {
            bail!("pipeline.queue_capacity and pipeline.max_batch must be at least 1");
        }
        if self.actors.mailbox_capacity == 0 || self.actors.idle_timeout_s == 0 {
            bail!("actors.mailbox_capacity and actors.idle_timeout_s must be at least 1");
        }
        if self.cache.product_ttl_ms > 600_000 {
            bail!("cache.product_ttl_ms must be at most 600000 (10 minutes)");
        }
        if self.inventory.reservation_ttl_s > MAX_RESERVATION_TTL_S {
            bail!("inventory.reservation_ttl_s must be at most {MAX_RESERVATION_TTL_S} (30 days)");
        }
        if self
            .integrations
            .stoq
            .secret
            .as_ref()
            .is_some_and(|s| s.expose_secret().is_empty())
        {
            bail!("integrations.stoq.secret must not be empty (leave it unset to refuse all Stoq events)");
        }
        if self.inventory.reservation_ttl_s == 0 || self.inventory.expiry_sweep_interval_ms == 0 {
            bail!("inventory.reservation_ttl_s and inventory.expiry_sweep_interval_ms must be at least 1");
        }
        if self.sagas.max_step_attempts == 0
            || self.sagas.lease_ttl_s == 0
            || self.sagas.recovery_interval_ms == 0
        {
            bail!("sagas.max_step_attempts, sagas.lease_ttl_s and sagas.recovery_interval_ms must be at least 1");
        }
        if self.sagas.retry_parked_after_s > 30 * 86_400 {
            bail!("sagas.retry_parked_after_s must be at most 2592000 (30 days)");
        }
        if self.sagas.max_step_attempts > 20 || self.sagas.retry_backoff_ms > 60_000 {
            bail!("sagas.max_step_attempts must be at most 20 and sagas.retry_backoff_ms at most 60000");
        }
        if let Err(e) = crate::domain::network::TrustedProxies::parse(&self.http.trusted_proxies) {
            bail!("http.trusted_proxies: {e}");
        }
        if self.idempotency.ttl_s == 0 || self.idempotency.purge_interval_s == 0 {
            bail!("idempotency.ttl_s and idempotency.purge_interval_s must be at least 1");
        }
        if self.idempotency.lock_ttl_s == 0 || self.idempotency.lock_ttl_s >= self.idempotency.ttl_s
        {
            bail!("idempotency.lock_ttl_s must be at least 1 and shorter than idempotency.ttl_s");
        }
        if self.events.relay_interval_ms == 0
            || self.events.relay_batch == 0
            || self.events.stream_max_len == 0
            || self.events.redispatch_after_s == 0
        {
            bail!("events.relay_interval_ms, relay_batch, stream_max_len and redispatch_after_s must be at least 1");
        }
        if self.events.relay_batch > MAX_RELAY_BATCH {
            bail!("events.relay_batch must be at most {MAX_RELAY_BATCH}");
        }
        if self.analytics.batch_size > 5000 {
            bail!("analytics.batch_size must be at most 5000");
        }
        let w = &self.webhooks;
        if !(1..=100).contains(&w.max_attempts)
            || w.timeout_ms == 0
            || w.backoff_base_ms == 0
            || w.backoff_max_ms < w.backoff_base_ms
            || w.concurrency == 0
            || w.poll_interval_ms == 0
        {
            bail!("webhooks: max_attempts must be 1..=100; timeout_ms, backoff_base_ms, concurrency and poll_interval_ms at least 1; backoff_max_ms at least backoff_base_ms");
        }
        let n = &self.notifications;
        if !(1..=100).contains(&n.max_attempts)
            || n.backoff_base_ms == 0
            || n.backoff_max_ms < n.backoff_base_ms
            || n.smtp.timeout_ms == 0
        {
            bail!("notifications: max_attempts must be 1..=100, backoff_base_ms and smtp.timeout_ms at least 1, backoff_max_ms at least backoff_base_ms");
        }
        if n.notifier == NotifierKind::Smtp && n.smtp.host.as_deref().is_none_or(str::is_empty) {
            bail!("notifications.notifier = \"smtp\" needs notifications.smtp.host");
        }
        if n.smtp.username.is_some() != n.smtp.password.is_some() {
            bail!(
                "notifications.smtp.username and notifications.smtp.password must be set together"
            );
        }
        if n.from.parse::<lettre::message::Mailbox>().is_err() {
            bail!("notifications.from must be a mail address such as `orderflow <orders@example.com>`");
        }
        let a = &self.analytics;
        if a.buffer_capacity == 0 || a.batch_size == 0 || a.flush_interval_ms == 0 {
            bail!("analytics.buffer_capacity, batch_size and flush_interval_ms must be at least 1");
        }
        if self.payments.timeout_ms == 0 {
            bail!("payments.timeout_ms must be at least 1");
        }
        if crate::domain::product::Currency::parse(&self.checkout.default_currency).is_err() {
            bail!("checkout.default_currency must be a three-letter ISO-4217 code such as USD");
        }
        if self.payments.provider == PaymentProviderKind::Paypal {
            let p = &self.payments.paypal;
            if p.base_url.is_none() || p.client_id.is_none() || p.client_secret.is_none() {
                bail!("payments.provider = \"paypal\" needs payments.paypal.base_url, client_id and client_secret");
            }
        }
        if self.rate_limits.login_window_s == 0 || self.rate_limits.writes_window_s == 0 {
            bail!("rate_limits.login_window_s and rate_limits.writes_window_s must be at least 1");
        }
        if self.auth.bootstrap_admin_email.is_some() != self.auth.bootstrap_admin_password.is_some()
        {
            bail!(
                "auth.bootstrap_admin_email and auth.bootstrap_admin_password must be set together"
            );
        }
        self.check_engine()?;
        let secret = self.auth.jwt_secret.expose_secret();
        if self.environment == Environment::Production {
            if secret == DEVELOPMENT_JWT_SECRET {
                bail!(
                    "refusing to start in production with the development JWT secret: \
                     set ORDERFLOW__AUTH__JWT_SECRET to a random value of at least {MIN_JWT_SECRET_BYTES} bytes"
                );
            }
            if secret.len() < MIN_JWT_SECRET_BYTES {
                bail!(
                    "refusing to start in production: auth.jwt_secret is {} bytes, at least {MIN_JWT_SECRET_BYTES} are required",
                    secret.len()
                );
            }
        } else if secret.is_empty() {
            bail!("auth.jwt_secret must not be empty");
        } else if secret == DEVELOPMENT_JWT_SECRET && !is_loopback(&self.http.host) {
            // The development secret is public: anyone could mint admin
            // tokens. Forgetting ORDERFLOW_ENV must not expose that.
            bail!(
                "refusing to listen on {} with the development JWT secret: set \
                 ORDERFLOW__AUTH__JWT_SECRET, or listen on a loopback address",
                self.http.host
            );
        }
        Ok(())
    }
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}
