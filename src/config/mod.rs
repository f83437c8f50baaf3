//! Typed settings.
//!
//! Layers, later ones win: the files compiled into the binary
//! (`config/default.toml`, then `config/<env>.toml`), the same per-environment
//! file from the config directory on disk if present (operators' overrides),
//! then environment variables `ORDERFLOW__SECTION__KEY`. `ORDERFLOW_ENV` picks
//! the environment. Compiling the files in means an installed binary behaves
//! the same wherever it is started from.
//!
//! Invariants: an unknown key anywhere is an error that names it; secrets are
//! wrapped in [`SecretString`] so they never reach logs; production refuses the
//! development JWT secret and any secret shorter than 32 bytes.

use std::fmt;
use std::path::PathBuf;

use anyhow::bail;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

pub use crate::domain::order::CaptureMode;

mod load;
mod validate;

/// Compiled-in settings, so the binary runs from any directory.
const DEFAULT_TOML: &str = include_str!("../../config/default.toml");
const DEVELOPMENT_TOML: &str = include_str!("../../config/development.toml");
const TEST_TOML: &str = include_str!("../../config/test.toml");
const PRODUCTION_TOML: &str = include_str!("../../config/production.toml");

/// The JWT secret shipped in `config/default.toml`. Fine for development and
/// tests; production refuses to start with it.
pub const DEVELOPMENT_JWT_SECRET: &str = "orderflow-development-secret-change-me-0123456789";

/// Longest reservation lifetime accepted.
pub const MAX_RESERVATION_TTL_S: u64 = 30 * 86_400;
/// The largest `events.relay_batch`: the in-process event channel holds one
/// whole batch.
pub const MAX_RELAY_BATCH: u32 = 4096;

/// Minimum HS256 key length accepted in production.
pub const MIN_JWT_SECRET_BYTES: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Development,
    Test,
    Production,
}

impl Environment {
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Development => "development",
            Environment::Test => "test",
            Environment::Production => "production",
        }
    }

    fn embedded_toml(self) -> &'static str {
        match self {
            Environment::Development => DEVELOPMENT_TOML,
            Environment::Test => TEST_TOML,
            Environment::Production => PRODUCTION_TOML,
        }
    }

    pub fn parse(value: &str) -> anyhow::Result<Self> {
        match value.trim().to_ascii_lowercase().as_str() {
            "development" | "dev" => Ok(Environment::Development),
            "test" => Ok(Environment::Test),
            "production" | "prod" => Ok(Environment::Production),
            other => {
                bail!("ORDERFLOW_ENV must be one of development, test, production; got `{other}`")
            }
        }
    }

    /// `ORDERFLOW_ENV`, defaulting to development.
    pub fn from_process_env() -> anyhow::Result<Self> {
        match std::env::var("ORDERFLOW_ENV") {
            Ok(value) => Environment::parse(&value),
            Err(_) => Ok(Environment::Development),
        }
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(skip, default = "default_environment")]
    pub environment: Environment,
    pub http: HttpSettings,
    pub database: DatabaseSettings,
    pub redis: RedisSettings,
    pub auth: AuthSettings,
    pub rate_limits: RateLimitSettings,
    pub actors: ActorSettings,
    pub inventory: InventorySettings,
    pub integrations: IntegrationSettings,
    pub cache: CacheSettings,
    pub telemetry: TelemetrySettings,
    pub checkout: CheckoutSettings,
    pub payments: PaymentSettings,
    pub sagas: SagaSettings,
    pub idempotency: IdempotencySettings,
    pub pipeline: PipelineSettings,
    pub events: EventSettings,
    pub webhooks: WebhookSettings,
    pub notifications: NotificationSettings,
    pub analytics: AnalyticsSettings,
}

fn default_environment() -> Environment {
    Environment::Development
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    pub host: String,
    /// 0 binds any free port; the bound port is printed at start.
    pub port: u16,
    pub body_limit_bytes: usize,
    /// Requests admitted at once; beyond it the engine answers 503 at once.
    /// Unset: sized to the machine.
    pub max_in_flight: Option<usize>,
    /// HTTP worker threads. Unset: one per core.
    pub workers: Option<usize>,
    /// Seconds a graceful shutdown waits for in-flight requests.
    pub shutdown_timeout_s: u64,
    /// Reverse proxies whose `X-Forwarded-For` is believed, as a
    /// comma-separated list of addresses and CIDR blocks; empty: the TCP
    /// peer is the client (per-IP rate limits key on it).
    pub trusted_proxies: String,
}

impl HttpSettings {
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight
            .unwrap_or_else(|| available_cores() * 512)
    }

    pub fn workers(&self) -> usize {
        self.workers.unwrap_or_else(available_cores)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `postgres://...` or `sqlite://path`; unset: SQLite at `data/orderflow.db`.
    pub url: Option<SecretString>,
    /// Pooled connections. Unset: sized to the machine.
    pub pool_size: Option<usize>,
    /// Bound on waiting for, creating or recycling a pooled connection.
    pub connect_timeout_ms: u64,
}

impl DatabaseSettings {
    pub fn pool_size(&self) -> usize {
        self.pool_size.unwrap_or_else(|| available_cores() * 4)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    /// Unset: Redis disabled, in-process equivalents are used.
    pub url: Option<SecretString>,
    /// Prefix of every key the engine writes, so several deployments (or
    /// tests) can share one Redis.
    pub key_prefix: String,
    pub connect_timeout_ms: u64,
    pub response_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    pub jwt_secret: SecretString,
    pub token_ttl_s: u64,
    pub bootstrap_admin_email: Option<String>,
    pub bootstrap_admin_password: Option<SecretString>,
    /// How long a token's account is known to exist (and its role) before
    /// it is checked again; a deleted user's token is refused within it.
    pub account_check_ttl_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    /// Failed logins allowed per email within `login_window_s`.
    pub login_failures_per_email: u32,
    /// Failed logins allowed per client IP within `login_window_s`.
    pub login_failures_per_ip: u32,
    pub login_window_s: u64,
    /// Writes (POST, PUT, PATCH, DELETE) one user may send per
    /// `writes_window_s`; 0: no per-user limit.
    pub writes_per_user: u32,
    /// Writes one client IP may send per `writes_window_s`; 0: no limit.
    pub writes_per_ip: u32,
    pub writes_window_s: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActorSettings {
    /// An actor with no message for this long stops; it restarts on demand.
    pub idle_timeout_s: u64,
    /// Messages an actor's mailbox holds; a full mailbox is 503 `overloaded`.
    pub mailbox_capacity: usize,
    /// Threads actors are spread over. Unset: one per core.
    pub arbiters: Option<usize>,
}

impl ActorSettings {
    pub fn arbiters(&self) -> usize {
        self.arbiters.unwrap_or_else(available_cores).max(1)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InventorySettings {
    /// How long a reservation holds stock before it is released.
    pub reservation_ttl_s: u64,
    /// Below this many available units, `inventory.low_stock` is emitted.
    pub low_stock_threshold: i64,
    /// How often expired reservations are looked for, in every SKU.
    pub expiry_sweep_interval_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSettings {
    /// How long a cached product document may live (writes invalidate it
    /// at once regardless).
    pub product_ttl_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntegrationSettings {
    pub stoq: StoqSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoqSettings {
    /// HMAC-SHA256 key for `X-Stoq-Signature`. Unset: the endpoint refuses all.
    pub secret: Option<SecretString>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckoutSettings {
    /// How long checkout waits for the saga before answering 202.
    pub sync_wait_ms: u64,
    /// Currency of a cart created without one.
    pub default_currency: String,
    /// How a cart checkout is carried out: `orderflow` (the saga, with
    /// stock reserved through the SKU actors), or the name of a checkout
    /// engine registered at start-up by an embedding (the load benches'
    /// `orderflow-bench-engine` registers `baseline`; docs/benchmarks.md).
    pub engine: String,
}

/// The engine's own checkout: the saga, with stock held by the SKU actors.
pub const ORDERFLOW_CHECKOUT: &str = "orderflow";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PaymentProviderKind {
    Sandbox,
    Paypal,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentSettings {
    pub provider: PaymentProviderKind,
    pub capture: CaptureMode,
    /// Bound on one call to the provider; past it the outcome is unknown and
    /// is resolved by a status lookup.
    pub timeout_ms: u64,
    /// The sandbox provider answers each call after this long, as a real
    /// provider's round trip would (0: at once).
    pub sandbox_latency_ms: u64,
    pub paypal: PaypalSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaypalSettings {
    pub base_url: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<SecretString>,
}

/// The write pipeline (`crate::db::pipeline`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSettings {
    /// New write-sets that may wait for the writer; beyond, new work is 503
    /// `overloaded` at once. Work that finishes a movement of stock or money
    /// is always admitted.
    pub queue_capacity: usize,
    /// Write-sets merged into one transaction at most.
    pub max_batch: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdempotencySettings {
    /// How long a key and its answer are kept (api.md: 24 hours).
    pub ttl_s: u64,
    /// How long a request holds its key without renewing it (it renews it
    /// every third of this while it runs). A retry meanwhile gets 409
    /// `idempotency_key_in_use`; once it runs out (the first request's
    /// process died) a retry takes the key over.
    pub lock_ttl_s: u64,
    /// How often expired keys are deleted.
    pub purge_interval_s: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SagaSettings {
    /// A saga not finished and not advanced for this long is `stuck`.
    pub stuck_after_s: u64,
    /// Attempts of one step (transient failures) before the saga parks.
    pub max_step_attempts: u32,
    /// First retry delay; doubles per attempt.
    pub retry_backoff_ms: u64,
    /// How long a process's claim on a saga lasts without renewal; after a
    /// crash, another process (or the restarted one) resumes the saga then.
    pub lease_ttl_s: u64,
    /// How often unclaimed unfinished sagas are looked for.
    pub recovery_interval_ms: u64,
    /// A parked saga is tried again by itself once its last attempt is this
    /// old (an operator's resume does it at once).
    pub retry_parked_after_s: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSettings {
    /// How often the relay looks for committed, unpublished outbox rows.
    pub relay_interval_ms: u64,
    /// Rows published per round.
    pub relay_batch: u32,
    /// The Redis Stream (under `redis.key_prefix`) is trimmed to about this
    /// many entries.
    pub stream_max_len: u64,
    /// An event published this long ago but not yet turned into deliveries
    /// is published again (the stream was lost, or its reader died).
    pub redispatch_after_s: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// Attempts of one delivery before it is `dead`.
    pub max_attempts: u32,
    /// Bound on one delivery attempt; no 2xx within it is a failure.
    pub timeout_ms: u64,
    /// Delay before the second attempt; grows fourfold per attempt, with jitter.
    pub backoff_base_ms: u64,
    /// Longest delay between two attempts.
    pub backoff_max_ms: u64,
    /// Deliveries attempted at once by one process.
    pub concurrency: usize,
    /// How often due retries are looked for.
    pub poll_interval_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifierKind {
    /// Writes each notification to the log.
    Log,
    /// Sends mail through `notifications.smtp`.
    Smtp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    None,
    Starttls,
    Tls,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationSettings {
    pub notifier: NotifierKind,
    /// The `From` of every message.
    pub from: String,
    pub max_attempts: u32,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    pub smtp: SmtpSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpSettings {
    pub host: Option<String>,
    pub port: u16,
    pub tls: SmtpTls,
    pub username: Option<String>,
    pub password: Option<SecretString>,
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalyticsSettings {
    /// Tracked events held in memory awaiting a write; beyond it
    /// `POST /events.track` answers 503.
    pub buffer_capacity: usize,
    /// Rows written per insert.
    pub batch_size: usize,
    /// Longest time an accepted event waits before its batch is written.
    pub flush_interval_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySettings {
    pub log_format: LogFormat,
    /// An `EnvFilter` directive such as `info` or `orderflow=debug,info`.
    pub log_level: String,
    /// How often the database and Redis checks refresh `service_health_status`.
    pub health_check_interval_ms: u64,
}

/// The selected database backend, parsed from `database.url`.
#[derive(Clone)]
pub enum DatabaseTarget {
    Postgres(SecretString),
    Sqlite(PathBuf),
}

impl fmt::Debug for DatabaseTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseTarget::Postgres(_) => f.write_str("Postgres([REDACTED])"),
            DatabaseTarget::Sqlite(path) => write!(f, "Sqlite({})", path.display()),
        }
    }
}

pub const DEFAULT_SQLITE_PATH: &str = "data/orderflow.db";

impl DatabaseSettings {
    pub fn target(&self) -> anyhow::Result<DatabaseTarget> {
        let url = self
            .url
            .as_ref()
            .map(|u| u.expose_secret().trim().to_owned())
            .filter(|u| !u.is_empty());
        let Some(url) = url else {
            return Ok(DatabaseTarget::Sqlite(PathBuf::from(DEFAULT_SQLITE_PATH)));
        };
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(DatabaseTarget::Postgres(SecretString::from(url)));
        }
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                bail!(
                    "database.url `sqlite://` needs a file path, e.g. sqlite://data/orderflow.db"
                );
            }
            return Ok(DatabaseTarget::Sqlite(PathBuf::from(path)));
        }
        bail!("database.url must start with postgres://, postgresql:// or sqlite://")
    }
}

fn available_cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn load(env: Environment, vars: &[(&str, &str)]) -> anyhow::Result<Settings> {
        let vars = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        // A directory without per-environment files: only defaults and vars.
        Settings::load_from(env, Path::new("/nonexistent-orderflow-config"), vars)
    }

    #[test]
    fn defaults_select_embedded_sqlite_and_no_redis() {
        let s = load(Environment::Development, &[]).unwrap();
        assert!(
            matches!(s.database.target().unwrap(), DatabaseTarget::Sqlite(p) if p == Path::new(DEFAULT_SQLITE_PATH))
        );
        assert!(s.redis.url.is_none());
        assert_eq!(s.http.port, 8080);
        assert_eq!(s.http.body_limit_bytes, 65536);
        assert_eq!(s.auth.token_ttl_s, 3600);
    }

    #[test]
    fn trusted_proxies_are_checked_at_start() {
        let ok = load(
            Environment::Development,
            &[("ORDERFLOW__HTTP__TRUSTED_PROXIES", "10.0.0.0/8, ::1")],
        );
        assert!(ok.is_ok(), "{ok:?}");
        let err = load(
            Environment::Development,
            &[(
                "ORDERFLOW__HTTP__TRUSTED_PROXIES",
                "10.0.0.0/8, proxy.local",
            )],
        )
        .unwrap_err();
        assert!(err.to_string().contains("http.trusted_proxies"), "{err}");
    }

    #[test]
    fn environment_variables_override_files() {
        let s = load(
            Environment::Development,
            &[
                ("ORDERFLOW__HTTP__PORT", "9999"),
                ("ORDERFLOW__DATABASE__URL", "postgres://u@h/db"),
                ("ORDERFLOW__TELEMETRY__LOG_FORMAT", "json"),
            ],
        )
        .unwrap();
        assert_eq!(s.http.port, 9999);
        assert!(matches!(
            s.database.target().unwrap(),
            DatabaseTarget::Postgres(_)
        ));
        assert_eq!(s.telemetry.log_format, LogFormat::Json);
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let err = load(Environment::Development, &[("ORDERFLOW__HTTP__PROT", "1")]).unwrap_err();
        assert!(format!("{err:#}").contains("prot"), "{err:#}");
        let err = load(Environment::Development, &[("ORDERFLOW__NOPE__X", "1")]).unwrap_err();
        assert!(format!("{err:#}").contains("nope"), "{err:#}");
    }

    #[test]
    fn per_environment_settings_apply_without_a_config_directory() {
        let s = load(
            Environment::Production,
            &[(
                "ORDERFLOW__AUTH__JWT_SECRET",
                "a-production-secret-that-is-long-enough-0001",
            )],
        )
        .unwrap();
        assert_eq!(s.telemetry.log_format, LogFormat::Json);
        assert_eq!(s.http.host, "0.0.0.0");
        let t = load(Environment::Test, &[]).unwrap();
        assert_eq!(t.http.port, 0);
    }

    #[test]
    fn production_refuses_the_development_secret() {
        let err = load(Environment::Production, &[]).unwrap_err();
        assert!(
            format!("{err:#}").contains("development JWT secret"),
            "{err:#}"
        );
    }

    #[test]
    fn production_refuses_a_short_secret() {
        let err = load(
            Environment::Production,
            &[("ORDERFLOW__AUTH__JWT_SECRET", "short-secret")],
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("at least 32"), "{err:#}");
    }

    #[test]
    fn production_refuses_the_baseline_checkout() {
        let secret = (
            "ORDERFLOW__AUTH__JWT_SECRET",
            "a-production-secret-that-is-long-enough-0001",
        );
        let err = load(
            Environment::Production,
            &[secret, ("ORDERFLOW__CHECKOUT__ENGINE", "baseline")],
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("baseline"), "{err:#}");
        let dev = load(
            Environment::Development,
            &[("ORDERFLOW__CHECKOUT__ENGINE", "baseline")],
        )
        .unwrap();
        assert_eq!(dev.checkout.engine, "baseline");
        assert!(load(
            Environment::Development,
            &[("ORDERFLOW__CHECKOUT__ENGINE", "Not An Engine")]
        )
        .is_err());
    }

    #[test]
    fn production_accepts_a_long_secret() {
        let s = load(
            Environment::Production,
            &[(
                "ORDERFLOW__AUTH__JWT_SECRET",
                "a-production-secret-that-is-long-enough-0001",
            )],
        )
        .unwrap();
        assert_eq!(s.environment, Environment::Production);
    }

    #[test]
    fn development_secret_is_refused_off_loopback() {
        let err = load(
            Environment::Development,
            &[("ORDERFLOW__HTTP__HOST", "0.0.0.0")],
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("development JWT secret"),
            "{err:#}"
        );
        assert!(load(
            Environment::Development,
            &[("ORDERFLOW__HTTP__HOST", "::1")]
        )
        .is_ok());
        assert!(load(
            Environment::Development,
            &[
                ("ORDERFLOW__HTTP__HOST", "0.0.0.0"),
                (
                    "ORDERFLOW__AUTH__JWT_SECRET",
                    "a-secret-of-the-operators-own-choosing"
                ),
            ],
        )
        .is_ok());
    }

    #[test]
    fn empty_stoq_secret_and_unbounded_lifetimes_are_refused() {
        let err = load(
            Environment::Development,
            &[("ORDERFLOW__INTEGRATIONS__STOQ__SECRET", "")],
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("integrations.stoq.secret"),
            "{err:#}"
        );
        let err = load(
            Environment::Development,
            &[("ORDERFLOW__INVENTORY__RESERVATION_TTL_S", "99999999999")],
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("reservation_ttl_s"), "{err:#}");
        let err = load(
            Environment::Development,
            &[("ORDERFLOW__CACHE__PRODUCT_TTL_MS", "3600000")],
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("product_ttl_ms"), "{err:#}");
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let s = load(
            Environment::Development,
            &[("ORDERFLOW__DATABASE__URL", "postgres://user:hunter2@h/db")],
        )
        .unwrap();
        let shown = format!("{s:?} {:?}", s.database.target().unwrap());
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains(DEVELOPMENT_JWT_SECRET), "{shown}");
    }

    #[test]
    fn bad_database_scheme_is_rejected() {
        let err = load(
            Environment::Development,
            &[("ORDERFLOW__DATABASE__URL", "mysql://x")],
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("database.url"), "{err:#}");
    }

    #[test]
    fn unknown_environment_name_is_rejected() {
        assert!(Environment::parse("staging").is_err());
        assert_eq!(
            Environment::parse("PRODUCTION").unwrap(),
            Environment::Production
        );
    }
}
