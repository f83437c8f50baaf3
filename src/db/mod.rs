//! Persistence: one query layer over two backends.
//!
//! PostgreSQL (production) and SQLite (the zero-setup default) sit behind one
//! [`Database`] handle. A pooled connection is a [`DbConn`] enum, and the
//! [`with_conn!`](crate::with_conn) macro compiles one query body once per
//! backend, so each query is written once. Queries live in one module per
//! aggregate, return `QueryResult`, and take a connection, not the pool.
//!
//! Error policy: queries return `diesel::QueryResult`; [`DbError`] adds "could
//! not get a connection", which the HTTP layer answers with 503.

pub mod carts;
pub mod dispatch;
pub mod events;
pub mod idempotency;
pub mod inventory;
pub mod leases;
pub mod notifications;
pub mod orders;
pub mod outbox;
pub mod pipeline;
pub mod products;
pub mod sagas;
pub mod schema;
pub mod users;
pub mod webhooks;

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use diesel::{Connection, SqliteConnection};
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use futures_util::FutureExt;
use secrecy::ExposeSecret;

use crate::config::{DatabaseSettings, DatabaseTarget};

const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// Set on every SQLite connection. The busy timeout comes first, so that even
/// the journal-mode switch waits for a lock instead of failing; WAL lets
/// readers run beside the writer; `synchronous=FULL` keeps an acknowledged
/// commit durable across power loss.
const SQLITE_PRAGMAS: &str = "PRAGMA busy_timeout = 5000; \
     PRAGMA journal_mode = WAL; \
     PRAGMA synchronous = FULL; \
     PRAGMA foreign_keys = ON;";

pub type SqliteConn = SyncConnectionWrapper<SqliteConnection>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        }
    }
}

#[derive(Clone)]
enum Pools {
    Postgres(Pool<AsyncPgConnection>),
    Sqlite(Pool<SqliteConn>),
}

/// A cheap-to-clone handle on the connection pool of the configured backend.
#[derive(Clone)]
pub struct Database {
    pools: Pools,
    target: DatabaseTarget,
    connect_timeout: Duration,
}

/// A pooled connection of either backend; see [`with_conn!`](crate::with_conn).
// Held briefly on the stack and moved once per checkout; boxing the larger
// variant would add an allocation per query to save a memcpy.
#[allow(clippy::large_enum_variant)]
pub enum DbConn {
    Postgres(Object<AsyncPgConnection>),
    Sqlite(Object<SqliteConn>),
}

/// Runs one query body against whichever backend `$conn` holds. The body is
/// compiled once per backend with `$c` bound to that backend's connection.
#[macro_export]
macro_rules! with_conn {
    ($conn:expr, |$c:ident| $body:expr) => {
        match $conn {
            $crate::db::DbConn::Postgres(pooled) => {
                let $c: &mut ::diesel_async::AsyncPgConnection = &mut *pooled;
                $body
            }
            $crate::db::DbConn::Sqlite(pooled) => {
                let $c: &mut $crate::db::SqliteConn = &mut *pooled;
                $body
            }
        }
    };
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// No connection could be had in time: the database is down or saturated.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
    /// The write pipeline's batch failed on a statement: a fault.
    #[error("write failed: {0}")]
    Write(String),
}

impl DbError {
    /// True when the failure says the database could not be reached, lost
    /// the connection, or is shutting down, starting up or recovering,
    /// rather than that a statement was wrong: answered with 503
    /// `unavailable` and `Retry-After`, never a 500.
    pub fn is_unavailable(&self) -> bool {
        match self {
            DbError::Unavailable(_) => true,
            DbError::Query(e) => is_outage(e),
            DbError::Write(_) => false,
        }
    }
}

/// True when `error` is of the connection class (the connection is gone or
/// could not be used) or the shutdown class (the server is stopping,
/// starting, recovering, or an administrator ended the session), or SQLite's
/// writer lock outlasted the busy timeout.
///
/// diesel-async turns a PostgreSQL error with a SQLSTATE into
/// `DatabaseError(kind, info)`, where every code but a few constraint and
/// serialization ones is `Unknown` and only the server's message tells them
/// apart; an error without a SQLSTATE (the socket closed, a reset, an I/O
/// error) is `UnableToSendCommand`. So the classes are recognised by the
/// messages PostgreSQL sends for them.
pub fn is_outage(error: &diesel::result::Error) -> bool {
    use diesel::result::{DatabaseErrorKind, Error};
    match error {
        Error::DatabaseError(
            DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
            _,
        ) => true,
        // Constraint violations and the like carry names chosen by the
        // schema in their messages: never read as an outage.
        Error::DatabaseError(DatabaseErrorKind::Unknown, info) => outage_message(info.message()),
        Error::DatabaseError(_, _) => false,
        // The connection's transaction state was lost mid-way (its
        // connection broke during BEGIN, COMMIT or ROLLBACK).
        Error::BrokenTransactionManager => true,
        Error::RollbackErrorOnCommit {
            commit_error,
            rollback_error,
        } => is_outage(commit_error) || is_outage(rollback_error),
        _ => false,
    }
}

/// Messages of the outage classes, as PostgreSQL, tokio-postgres, libpq and
/// SQLite word them (compared lower-cased).
const OUTAGE_MESSAGES: &[&str] = &[
    // 57P01 admin_shutdown ("terminating connection due to administrator
    // command"), 57P02 crash_shutdown ("... because of crash of another
    // server process"), 57P05 idle_session_timeout, 25P03's idle-in-
    // transaction timeout, 08P01's lost protocol synchronisation.
    "terminating connection",
    // 57P03 cannot_connect_now: "the database system is starting up",
    // "... is shutting down", "... is in recovery mode", "... is not yet
    // accepting connections", "... is not accepting connections".
    "the database system is ",
    // Class 08, connection exceptions, and the client's own words for a
    // connection that went away.
    "server closed the connection unexpectedly",
    "connection closed",
    "connection reset",
    "connection refused",
    "connection failure",
    "connection does not exist",
    "could not connect to server",
    "could not receive data",
    "could not send data",
    "no connection to the server",
    "broken pipe",
    "unexpected eof",
    "error communicating with the server",
    // SQLite's writer lock still held after the busy timeout: contention,
    // answered like an overloaded dependency, never as a fault.
    "database is locked",
    "database table is locked",
];

fn outage_message(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    OUTAGE_MESSAGES.iter().any(|m| message.contains(m))
}

impl Database {
    /// Builds the pool. Connections are opened lazily, so this succeeds while
    /// the database is down; [`Database::migrate`] is the first real contact.
    pub fn connect(settings: &DatabaseSettings) -> anyhow::Result<Database> {
        let target = settings.target()?;
        let timeout = Some(Duration::from_millis(settings.connect_timeout_ms));
        let pools = match &target {
            DatabaseTarget::Postgres(url) => {
                // No test query when a connection is taken from the pool:
                // that was a `SELECT 1` round trip per checkout of a
                // connection, 18 per checkout flow. A connection whose
                // server session ended is closed (tokio-postgres sees the
                // socket close) and the pool drops it; one that dies
                // between that check and its use fails there, as an outage
                // (503; sagas and the pipeline retry or reload).
                let mut config = ManagerConfig::<AsyncPgConnection>::default();
                config.recycling_method = RecyclingMethod::Fast;
                let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(
                    url.expose_secret(),
                    config,
                );
                let pool = Pool::builder(manager)
                    .max_size(settings.pool_size())
                    .runtime(deadpool::Runtime::Tokio1)
                    .wait_timeout(timeout)
                    .create_timeout(timeout)
                    .recycle_timeout(timeout)
                    .build()
                    .context("building the PostgreSQL pool")?;
                Pools::Postgres(pool)
            }
            DatabaseTarget::Sqlite(path) => {
                ensure_parent_dir(path)?;
                let mut config = ManagerConfig::<SqliteConn>::default();
                // In process: a connection does not go away.
                config.recycling_method = RecyclingMethod::Fast;
                config.custom_setup = Box::new(|url| {
                    let url = url.to_owned();
                    async move {
                        let mut conn = SqliteConn::establish(&url).await?;
                        conn.batch_execute(SQLITE_PRAGMAS)
                            .await
                            .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
                        Ok(conn)
                    }
                    .boxed()
                });
                let manager = AsyncDieselConnectionManager::<SqliteConn>::new_with_config(
                    path.to_string_lossy(),
                    config,
                );
                let pool = Pool::builder(manager)
                    .max_size(settings.pool_size())
                    .runtime(deadpool::Runtime::Tokio1)
                    // No create or recycle timeout: they would drop a
                    // connection's setup or ping halfway, which diesel-async's
                    // SQLite wrapper cannot survive on a single-threaded
                    // runtime (actix's). Both are bounded by busy_timeout.
                    .wait_timeout(timeout)
                    .build()
                    .context("building the SQLite pool")?;
                Pools::Sqlite(pool)
            }
        };
        Ok(Database {
            pools,
            target,
            connect_timeout: Duration::from_millis(settings.connect_timeout_ms),
        })
    }

    pub fn backend(&self) -> Backend {
        match self.pools {
            Pools::Postgres(_) => Backend::Postgres,
            Pools::Sqlite(_) => Backend::Sqlite,
        }
    }

    pub async fn conn(&self) -> Result<DbConn, DbError> {
        match &self.pools {
            Pools::Postgres(pool) => pool
                .get()
                .await
                .map(DbConn::Postgres)
                .map_err(|e| DbError::Unavailable(e.to_string())),
            Pools::Sqlite(pool) => pool
                .get()
                .await
                .map(DbConn::Sqlite)
                .map_err(|e| DbError::Unavailable(e.to_string())),
        }
    }

    /// A round trip to the database, for health checks.
    pub async fn ping(&self) -> Result<(), DbError> {
        use diesel::IntoSql;
        use diesel_async::RunQueryDsl;
        let mut conn = self.conn().await?;
        let query = diesel::select(1_i32.into_sql::<diesel::sql_types::Integer>());
        with_conn!(&mut conn, |c| query.get_result::<i32>(c).await)?;
        Ok(())
    }

    /// Applies pending migrations of the configured backend and returns how
    /// many ran. Diesel's migration harness is synchronous, so it runs on a
    /// thread of its own rather than blocking the async runtime.
    pub async fn migrate(&self) -> anyhow::Result<usize> {
        let target = self.target.clone();
        let connect_timeout = self.connect_timeout;
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("orderflow-migrate".into())
            .spawn(move || {
                let _ = tx.send(run_migrations(&target, connect_timeout));
            })
            .context("spawning the migration thread")?;
        rx.await.context("the migration thread died")?
    }
}

/// Key of the PostgreSQL advisory lock that serialises migrations, so that
/// several engine processes starting together do not race.
const MIGRATION_LOCK_KEY: i64 = 0x6f72_6465_7266_6c6f; // "orderflo"

fn run_migrations(target: &DatabaseTarget, connect_timeout: Duration) -> anyhow::Result<usize> {
    let applied = match target {
        DatabaseTarget::Postgres(url) => {
            // Diesel's harness is synchronous; the async connection underneath
            // needs a runtime with timers and IO driven by its own worker.
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .context("starting the migration runtime")?;
            let conn = rt
                .block_on(async {
                    tokio::time::timeout(
                        connect_timeout,
                        <AsyncPgConnection as AsyncConnection>::establish(url.expose_secret()),
                    )
                    .await
                })
                .map_err(|_| {
                    anyhow::anyhow!("connecting to PostgreSQL timed out after {connect_timeout:?}")
                })?
                .map_err(|e| {
                    anyhow::anyhow!("connecting to PostgreSQL: {}", redact_url_errors(&e))
                })?;
            let _runtime = rt.enter();
            let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::from(conn);
            use diesel::RunQueryDsl;
            diesel::sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})"))
                .execute(&mut conn)
                .context("taking the migration lock")?;
            let result = conn
                .run_pending_migrations(POSTGRES_MIGRATIONS)
                .map(|applied| applied.len())
                .map_err(|e| anyhow::anyhow!("PostgreSQL migrations failed: {e}"));
            diesel::sql_query(format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})"))
                .execute(&mut conn)
                .context("releasing the migration lock")?;
            result?
        }
        DatabaseTarget::Sqlite(path) => {
            let mut conn = SqliteConnection::establish(&path.to_string_lossy())
                .with_context(|| format!("opening SQLite database {}", path.display()))?;
            diesel::connection::SimpleConnection::batch_execute(&mut conn, SQLITE_PRAGMAS)
                .context("configuring SQLite")?;
            conn.run_pending_migrations(SQLITE_MIGRATIONS)
                .map_err(|e| anyhow::anyhow!("SQLite migrations failed: {e}"))?
                .len()
        }
    };
    Ok(applied)
}

fn redact_url_errors(error: &diesel::ConnectionError) -> String {
    match error {
        diesel::ConnectionError::InvalidConnectionUrl(_) => "invalid connection URL".to_owned(),
        other => other.to_string(),
    }
}

fn ensure_parent_dir(path: &Path) -> anyhow::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating directory {}", parent.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use diesel::result::{DatabaseErrorKind, Error};

    use super::{is_outage, DbError};

    fn db(kind: DatabaseErrorKind, message: &str) -> Error {
        Error::DatabaseError(kind, Box::new(message.to_owned()))
    }

    fn unknown(message: &str) -> Error {
        db(DatabaseErrorKind::Unknown, message)
    }

    #[test]
    fn shutdown_and_connection_classes_are_outages() {
        for message in [
            // 57P01, as pg_terminate_backend and a fast shutdown send it.
            "terminating connection due to administrator command",
            // 57P02
            "terminating connection because of crash of another server process",
            // 57P03, each of its wordings.
            "the database system is starting up",
            "the database system is shutting down",
            "the database system is in recovery mode",
            "the database system is not yet accepting connections",
            "the database system is not accepting connections",
            // 57P05 and the idle-in-transaction timeout.
            "terminating connection due to idle-session timeout",
            "terminating connection due to idle-in-transaction timeout",
            // Class 08.
            "terminating connection because protocol synchronization was lost",
            "server closed the connection unexpectedly\n\tThis probably means the server terminated abnormally",
            "connection closed",
            "could not receive data from server: Connection reset by peer",
            // SQLite, after its busy timeout.
            "database is locked",
            "database table is locked",
        ] {
            assert!(is_outage(&unknown(message)), "{message}");
            assert!(DbError::Query(unknown(message)).is_unavailable(), "{message}");
        }
    }

    #[test]
    fn errors_without_a_sqlstate_are_outages() {
        // tokio-postgres' own errors: what diesel-async makes of them.
        for message in [
            "connection closed",
            "error communicating with the server",
            "db error",
        ] {
            assert!(is_outage(&db(
                DatabaseErrorKind::UnableToSendCommand,
                message
            )));
        }
        assert!(is_outage(&db(DatabaseErrorKind::ClosedConnection, "")));
        assert!(DbError::Unavailable("timed out waiting for a connection".into()).is_unavailable());
    }

    #[test]
    fn a_broken_transaction_is_an_outage() {
        assert!(is_outage(&Error::BrokenTransactionManager));
        let dropped_at_commit = Error::RollbackErrorOnCommit {
            rollback_error: Box::new(db(
                DatabaseErrorKind::UnableToSendCommand,
                "connection closed",
            )),
            commit_error: Box::new(unknown(
                "terminating connection due to administrator command",
            )),
        };
        assert!(is_outage(&dropped_at_commit));
        let refused_then_dropped = Error::RollbackErrorOnCommit {
            rollback_error: Box::new(Error::BrokenTransactionManager),
            commit_error: Box::new(db(
                DatabaseErrorKind::SerializationFailure,
                "could not serialize",
            )),
        };
        assert!(is_outage(&refused_then_dropped));
        let refused = Error::RollbackErrorOnCommit {
            rollback_error: Box::new(unknown("cannot rollback: no transaction")),
            commit_error: Box::new(db(DatabaseErrorKind::CheckViolation, "violates check")),
        };
        assert!(!is_outage(&refused));
    }

    #[test]
    fn faults_of_the_statement_are_not_outages() {
        for error in [
            Error::NotFound,
            Error::RollbackTransaction,
            Error::NotInTransaction,
            Error::DeserializationError("bad column".into()),
            unknown("syntax error at or near \"SELEC\""),
            unknown("relation \"orders\" does not exist"),
            db(
                DatabaseErrorKind::UniqueViolation,
                "duplicate key value violates unique constraint \"connection closed\"",
            ),
            db(
                DatabaseErrorKind::CheckViolation,
                "new row violates check constraint",
            ),
            db(
                DatabaseErrorKind::SerializationFailure,
                "could not serialize access",
            ),
        ] {
            assert!(!is_outage(&error), "{error:?}");
            assert!(!DbError::Query(error).is_unavailable());
        }
    }
}
