//! An engine the bench starts itself: `orderflow-bench-engine serve --engine
//! <orderflow|baseline>`
//! as a child process on a fresh database (a new PostgreSQL database on the
//! given server, or an SQLite file in a temporary directory), with write
//! rate limits off and logs to a file. Dropped, it stops the process and
//! removes the database.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use serde::Serialize;

pub const ADMIN_EMAIL: &str = "bench-admin@example.com";
pub const ADMIN_PASSWORD: &str = "bench-admin-password-123";

const START_DEADLINE: Duration = Duration::from_secs(60);
const STOP_DEADLINE: Duration = Duration::from_secs(60);

/// How to start engines.
#[derive(Debug, Clone)]
pub struct LaunchOptions {
    pub binary: PathBuf,
    /// A PostgreSQL server URL to create fresh databases on; none: SQLite.
    pub postgres: Option<String>,
    pub redis: Option<String>,
    pub payment_latency_ms: u64,
    pub logs: PathBuf,
    /// Extra `ORDERFLOW__...` settings, `KEY=VALUE`.
    pub settings: Vec<(String, String)>,
}

pub struct Engine {
    child: Option<Child>,
    pub address: String,
    pub database_url: String,
    pub log: PathBuf,
    fresh: FreshDatabase,
}

enum FreshDatabase {
    /// Dropped by [`FreshDatabase::remove`], which empties `name`.
    Postgres {
        server: String,
        name: String,
    },
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Removed,
}

/// Resident memory of the engine process.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Memory {
    pub rss_mib: f64,
    pub peak_rss_mib: f64,
}

impl Engine {
    pub async fn start(options: &LaunchOptions, engine: &str) -> anyhow::Result<Engine> {
        let (mut fresh, database_url) = match &options.postgres {
            Some(server) => {
                let name = format!(
                    "orderflow_bench_{engine}_{}",
                    &uuid::Uuid::new_v4().simple().to_string()[..8]
                );
                let mut admin = AsyncPgConnection::establish(server)
                    .await
                    .with_context(|| format!("connecting to PostgreSQL at {server}"))?;
                admin
                    .batch_execute(&format!("CREATE DATABASE {name}"))
                    .await
                    .with_context(|| format!("creating the database {name}"))?;
                let url = database_on(server, &name)?;
                (
                    FreshDatabase::Postgres {
                        server: server.clone(),
                        name,
                    },
                    url,
                )
            }
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("orderflow-bench-")
                    .tempdir()
                    .context("creating a directory for the SQLite database")?;
                let url = format!("sqlite://{}", dir.path().join("orderflow.db").display());
                (FreshDatabase::Sqlite(dir), url)
            }
        };
        std::fs::create_dir_all(&options.logs)?;
        let log = options.logs.join(format!(
            "engine-{engine}-{}.log",
            chrono::Utc::now().format("%Y%m%dT%H%M%S")
        ));
        let mut command = Command::new(&options.binary);
        // Its own process group: a Ctrl-C meant for the bench does not stop
        // the engine under it before the invariant check.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        command
            .args(["serve", "--engine", engine])
            .env("ORDERFLOW_ENV", "development")
            .env("ORDERFLOW__HTTP__HOST", "127.0.0.1")
            .env("ORDERFLOW__HTTP__PORT", "0")
            .env("ORDERFLOW__DATABASE__URL", &database_url)
            .env("ORDERFLOW__AUTH__BOOTSTRAP_ADMIN_EMAIL", ADMIN_EMAIL)
            .env("ORDERFLOW__AUTH__BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("ORDERFLOW__RATE_LIMITS__WRITES_PER_USER", "0")
            .env("ORDERFLOW__RATE_LIMITS__WRITES_PER_IP", "0")
            .env(
                "ORDERFLOW__PAYMENTS__SANDBOX_LATENCY_MS",
                options.payment_latency_ms.to_string(),
            )
            .env("ORDERFLOW__TELEMETRY__LOG_LEVEL", "warn")
            .env("ORDERFLOW__TELEMETRY__LOG_FORMAT", "json")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                std::fs::File::create(&log)
                    .with_context(|| format!("creating {}", log.display()))?,
            ));
        if let Some(redis) = &options.redis {
            command.env("ORDERFLOW__REDIS__URL", redis).env(
                "ORDERFLOW__REDIS__KEY_PREFIX",
                format!("orderflow-bench-{}", uuid::Uuid::new_v4().simple()),
            );
        }
        for (key, value) in &options.settings {
            command.env(key, value);
        }
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                fresh.remove().await;
                return Err(e).with_context(|| format!("starting {}", options.binary.display()));
            }
        };
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Read to the end, so the engine never blocks on a full pipe.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(address) = line.strip_prefix("orderflow listening on ") {
                    let _ = tx.send(address.trim().to_owned());
                }
            }
        });
        let mut engine = Engine {
            child: Some(child),
            address: String::new(),
            database_url,
            log,
            fresh,
        };
        let started = Instant::now();
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(address) => {
                    engine.address = address;
                    return Ok(engine);
                }
                Err(mpsc::RecvTimeoutError::Timeout) if started.elapsed() < START_DEADLINE => {
                    // (A failed start drops `engine`: its database goes too.)
                    if let Some(status) = engine
                        .child
                        .as_mut()
                        .and_then(|c| c.try_wait().ok().flatten())
                    {
                        bail!(
                            "the engine exited at start ({status}); its log: {}",
                            engine.log.display()
                        );
                    }
                }
                Err(_) => bail!(
                    "the engine did not start listening within {START_DEADLINE:?}; its log: {}",
                    engine.log.display()
                ),
            }
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn memory(&self) -> Option<Memory> {
        memory_of(self.pid()?)
    }

    /// SIGTERM, then waits for the graceful stop; removes the database.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let started = Instant::now();
            loop {
                if child.try_wait()?.is_some() {
                    break;
                }
                if started.elapsed() > STOP_DEADLINE {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        self.fresh.remove().await;
        Ok(())
    }
}

impl FreshDatabase {
    /// Drops the PostgreSQL database (once); the SQLite directory goes
    /// with its `TempDir`.
    async fn remove(&mut self) {
        if let FreshDatabase::Postgres { server, name } = self {
            if name.is_empty() {
                return;
            }
            let dropped = async {
                let mut admin = AsyncPgConnection::establish(server).await?;
                admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await?;
                anyhow::Ok(())
            };
            if let Err(e) = dropped.await {
                eprintln!("could not drop the bench database {name}: {e:#}");
            }
            name.clear();
        }
    }
}

impl Drop for Engine {
    /// On an early return or a panic: stop the engine, drop its database.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if matches!(&self.fresh, FreshDatabase::Postgres { name, .. } if !name.is_empty()) {
            let mut fresh = std::mem::replace(&mut self.fresh, FreshDatabase::Removed);
            let _ = std::thread::spawn(move || {
                if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    runtime.block_on(fresh.remove());
                }
            })
            .join();
        }
    }
}

/// `server` (a PostgreSQL URL) with its database replaced by `name`.
pub fn database_on(server: &str, name: &str) -> anyhow::Result<String> {
    let (base, query) = match server.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (server, None),
    };
    let after_scheme = base
        .find("://")
        .map(|i| i + 3)
        .ok_or_else(|| anyhow!("`{server}` is not a postgres:// URL"))?;
    let host_end = base[after_scheme..]
        .find('/')
        .map_or(base.len(), |i| after_scheme + i);
    let mut url = format!("{}/{name}", &base[..host_end]);
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    Ok(url)
}

/// The `orderflow-bench-engine` binary next to this one.
pub fn sibling_binary() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let dir = me.parent().unwrap_or(Path::new("."));
    Ok(dir.join("orderflow-bench-engine"))
}

fn memory_of(pid: u32) -> Option<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<f64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    };
    Some(Memory {
        rss_mib: field("VmRSS:")?,
        peak_rss_mib: field("VmHWM:")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_is_swapped_in_the_server_url() {
        assert_eq!(
            database_on("postgres://postgres@127.0.0.1:5432/postgres", "b1").unwrap(),
            "postgres://postgres@127.0.0.1:5432/b1"
        );
        assert_eq!(
            database_on("postgres://u:p@db:5432?sslmode=disable", "b1").unwrap(),
            "postgres://u:p@db:5432/b1?sslmode=disable"
        );
        assert!(database_on("not a url", "b1").is_err());
    }

    #[test]
    fn memory_of_this_process_is_read() {
        let memory = memory_of(std::process::id()).expect("/proc is readable");
        assert!(memory.rss_mib > 0.0 && memory.peak_rss_mib >= memory.rss_mib);
    }
}
