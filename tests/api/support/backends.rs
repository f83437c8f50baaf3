//! Per-test databases and Redis prefixes, created fresh and removed on drop.
//!
//! PostgreSQL: a new schema per test in the server's `postgres` database,
//! selected through the connection's `search_path`, dropped afterwards.
//! SQLite: a new file in a temporary directory. Redis: a unique key prefix
//! whose keys are deleted afterwards. A missing service fails the test with
//! a clear message; it never skips.

use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use tempfile::TempDir;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

pub fn postgres_admin_url() -> String {
    std::env::var("ORDERFLOW_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

pub fn redis_url() -> String {
    std::env::var("ORDERFLOW_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379/0".to_owned())
}

/// A database that exists for one test.
pub struct TestDatabase {
    /// What the engine should use as `database.url`.
    pub url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    PostgresSchema(String),
    SqliteDir(#[allow(dead_code)] TempDir),
}

impl TestDatabase {
    pub async fn create(backend: Backend) -> TestDatabase {
        match backend {
            Backend::Postgres => {
                let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
                let admin = postgres_admin_url();
                let mut conn = AsyncPgConnection::establish(&admin).await.unwrap_or_else(|e| {
                    panic!("PostgreSQL is not reachable at {admin} ({e}); run the tests through scripts/test, which starts it")
                });
                conn.batch_execute(&format!("CREATE SCHEMA {schema}"))
                    .await
                    .expect("creating the test schema");
                TestDatabase {
                    url: with_search_path(&admin, &schema),
                    cleanup: Cleanup::PostgresSchema(schema),
                }
            }
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("creating a temporary directory");
                let url = format!("sqlite://{}", dir.path().join("orderflow.db").display());
                TestDatabase {
                    url,
                    cleanup: Cleanup::SqliteDir(dir),
                }
            }
        }
    }
}

/// `url` with the session's search_path set to `schema`.
pub fn with_search_path(url: &str, schema: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-c%20search_path%3D{schema}")
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Cleanup::PostgresSchema(schema) = &self.cleanup {
            let sql = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
            // Drop may run inside or outside a runtime; a thread of its own
            // with its own runtime works in both cases.
            let result = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .ok()?;
                rt.block_on(async {
                    let mut conn = AsyncPgConnection::establish(&postgres_admin_url())
                        .await
                        .ok()?;
                    conn.batch_execute(&sql).await.ok()
                })
            })
            .join();
            if !matches!(result, Ok(Some(()))) {
                eprintln!("warning: could not drop test schema {schema}");
            }
        }
    }
}

/// A Redis key prefix that exists for one test; its keys are deleted on drop.
pub struct TestRedis {
    pub url: String,
    pub prefix: String,
}

impl TestRedis {
    pub async fn create() -> TestRedis {
        let url = redis_url();
        let client = redis::Client::open(url.as_str()).expect("valid Redis URL");
        let mut conn = client.get_multiplexed_async_connection().await.unwrap_or_else(|e| {
            panic!("Redis is not reachable at {url} ({e}); run the tests through scripts/test, which starts it")
        });
        let _: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .expect("Redis PING");
        TestRedis {
            url,
            prefix: format!("orderflow-test-{}", uuid::Uuid::new_v4().simple()),
        }
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let url = self.url.clone();
        let pattern = format!("{}:*", self.prefix);
        let _ = std::thread::spawn(move || -> redis::RedisResult<()> {
            let client = redis::Client::open(url.as_str())?;
            let mut conn = client.get_connection()?;
            let keys: Vec<String> = redis::cmd("KEYS").arg(&pattern).query(&mut conn)?;
            if !keys.is_empty() {
                redis::cmd("DEL").arg(keys).query::<()>(&mut conn)?;
            }
            Ok(())
        })
        .join();
    }
}
