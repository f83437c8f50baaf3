//! Idempotency keys: a request that creates or moves money or stock, sent
//! again with the same `Idempotency-Key`, has its effect once.
//!
//! A key belongs to one user. Its row remembers the request's fingerprint
//! (method, path, canonical body), who is running it (a random token and a
//! lock that runs out), the resource its effect created or moved, and once
//! finished the answer to replay. The rules, api.md's:
//! - a new key runs the request;
//! - the same key with another fingerprint is refused (`Reused`);
//! - the same key while its request runs is refused (`InUse`);
//! - the same key once answered gets the answer again ([`Begin::Replay`]);
//! - a request refused before any effect forgets its key, so it can be
//!   corrected and sent again.
//!
//! Crash safety: the effect's own transaction binds the resource to the key
//! (guarded by the token, see `bind_idempotency_key!`). If the process dies
//! after the effect but before the answer is stored, the key's lock runs out
//! and a retry takes it over: it finds the resource bound and answers from
//! it instead of repeating the effect. If the first request is merely slow,
//! its late effect finds the token changed and rolls back, so the effect
//! still happens once.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{NaiveDateTime, Utc};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::config::IdempotencySettings;
use crate::db::idempotency::{self as keys_db, Binding, KeyRow, StoredResponse};
use crate::db::{Database, DbError};

/// The longest key api.md allows.
pub const MAX_KEY_LEN: usize = 255;

/// Expired keys deleted per statement.
const PURGE_BATCH: i64 = 1000;

/// Counter of keyed requests by outcome: `new`, `replayed`, `resumed`,
/// `in_use`, `reused`.
pub const IDEMPOTENCY_REQUESTS: &str = "idempotency_requests_total";

/// True for a valid key: 1..=255 visible ASCII characters.
pub fn valid_key(key: &str) -> bool {
    (1..=MAX_KEY_LEN).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic())
}

/// What a request is, for telling a retry from a different request.
pub fn fingerprint(method: &str, path: &str, canonical_body: &str) -> String {
    let mut hash = Sha256::new();
    for part in [method, path, canonical_body] {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part.as_bytes());
    }
    hex::encode(hash.finalize())
}

/// The resource a keyed request's effect created or moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    Order(String),
    Refund(String),
}

/// A key this request now holds.
#[derive(Debug, Clone)]
pub struct Claim {
    pub binding: Binding,
    /// Set when an earlier holder's effect already happened: answer from
    /// it, do not repeat it.
    pub resource: Option<Resource>,
}

/// A stored answer.
#[derive(Debug, Clone)]
pub struct Replay {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

#[derive(Debug)]
pub enum Begin {
    Run(Claim),
    Replay(Replay),
}

#[derive(Debug, thiserror::Error)]
pub enum IdempotencyError {
    #[error("a request with this key is still running")]
    InUse,
    #[error("the key was used for a different request")]
    Reused,
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<diesel::result::Error> for IdempotencyError {
    fn from(e: diesel::result::Error) -> Self {
        IdempotencyError::Db(DbError::Query(e))
    }
}

#[derive(Clone)]
pub struct Idempotency {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    ttl: chrono::Duration,
    lock_ttl: chrono::Duration,
}

impl Idempotency {
    /// The service, and its purge of expired keys every
    /// `idempotency.purge_interval_s`. Must run inside a tokio runtime.
    pub fn start(db: Database, settings: &IdempotencySettings) -> Idempotency {
        let seconds = |s: u64| chrono::Duration::seconds(s.min(i64::MAX as u64 / 1000) as i64);
        let this = Idempotency {
            inner: Arc::new(Inner {
                db,
                ttl: seconds(settings.ttl_s),
                lock_ttl: seconds(settings.lock_ttl_s),
            }),
        };
        this.spawn_purge(Duration::from_secs(settings.purge_interval_s));
        this
    }

    /// Takes `key` for a request with `fingerprint`, or says why not.
    pub async fn begin(
        &self,
        user_id: &str,
        key: &str,
        fingerprint: &str,
    ) -> Result<Begin, IdempotencyError> {
        let mut conn = self.inner.db.conn().await?;
        // A key deleted or taken over between two reads: look again.
        for _ in 0..3 {
            let now = Utc::now().naive_utc();
            let token = Uuid::now_v7().to_string();
            let binding = Binding {
                user_id: user_id.to_owned(),
                key: key.to_owned(),
                token: token.clone(),
            };
            let row = KeyRow {
                user_id: user_id.to_owned(),
                key: key.to_owned(),
                fingerprint: fingerprint.to_owned(),
                state: "running".to_owned(),
                token: token.clone(),
                locked_until: now + self.inner.lock_ttl,
                resource_type: None,
                resource_id: None,
                response_status: None,
                response_headers: None,
                response_body: None,
                created_at: now,
                expires_at: now + self.inner.ttl,
            };
            if keys_db::insert(&mut conn, &row).await? {
                count("new");
                return Ok(Begin::Run(Claim {
                    binding,
                    resource: None,
                }));
            }
            let Some(existing) = keys_db::find(&mut conn, user_id, key).await? else {
                continue;
            };
            if existing.expires_at <= now {
                continue;
            }
            if existing.fingerprint != fingerprint {
                count("reused");
                return Err(IdempotencyError::Reused);
            }
            if existing.state == "done" {
                count("replayed");
                return Ok(Begin::Replay(replay_of(&existing)));
            }
            if existing.locked_until > now {
                count("in_use");
                return Err(IdempotencyError::InUse);
            }
            let taken = keys_db::take_over(
                &mut conn,
                user_id,
                key,
                &existing.token,
                &token,
                now + self.inner.lock_ttl,
            )
            .await?;
            if taken {
                // Read the resource now that the key is ours: the previous
                // holder may have bound one after `existing` was read, and
                // with the token changed nobody can bind one any more.
                let resource = keys_db::find(&mut conn, user_id, key)
                    .await?
                    .filter(|row| row.token == token)
                    .and_then(|row| resource_of(&row));
                count(if resource.is_some() { "resumed" } else { "new" });
                tracing::info!(
                    idempotency.key = key,
                    resumed = resource.is_some(),
                    "took over an idempotency key whose request did not finish"
                );
                return Ok(Begin::Run(Claim { binding, resource }));
            }
        }
        count("in_use");
        Err(IdempotencyError::InUse)
    }

    /// Runs `work`, renewing the key's lock every third of `lock_ttl` while
    /// it runs, so that a request slower than the lock is not taken over.
    pub async fn hold_while<F: Future>(&self, binding: &Binding, work: F) -> F::Output {
        let mut work = std::pin::pin!(work);
        let period = (self.inner.lock_ttl / 3)
            .to_std()
            .unwrap_or(Duration::from_secs(1))
            .max(Duration::from_millis(100));
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            tokio::select! {
                output = &mut work => return output,
                _ = ticker.tick() => {
                    // Awaited here, never dropped half-way: the work waits
                    // for one short statement.
                    if let Err(e) = self.renew(binding).await {
                        tracing::warn!(error = %e, idempotency.key = %binding.key, "could not renew an idempotency key's lock");
                    }
                }
            }
        }
    }

    async fn renew(&self, binding: &Binding) -> Result<bool, DbError> {
        let mut conn = self.inner.db.conn().await?;
        let until = Utc::now().naive_utc() + self.inner.lock_ttl;
        Ok(keys_db::renew(&mut conn, binding, until).await?)
    }

    /// Records how the request of `binding` ended. A success is stored for
    /// replay; a refusal is stored only if the effect happened (a resource
    /// is bound), otherwise the key is forgotten; a server error stores
    /// nothing and unlocks the key, so that a retry can go on at once.
    pub async fn finish(
        &self,
        binding: &Binding,
        status: u16,
        headers: &[(String, String)],
        body: &str,
    ) {
        if let Err(e) = self.try_finish(binding, status, headers, body).await {
            // The key stays locked until `lock_ttl`; a retry then takes it
            // over and answers from the bound resource, if any.
            tracing::warn!(error = %e, idempotency.key = %binding.key, "could not record an idempotent answer");
        }
    }

    async fn try_finish(
        &self,
        binding: &Binding,
        status: u16,
        headers: &[(String, String)],
        body: &str,
    ) -> Result<(), DbError> {
        let mut conn = self.inner.db.conn().await?;
        let stored = StoredResponse {
            status: i32::from(status),
            headers: serde_json::to_string(headers).unwrap_or_else(|_| "[]".to_owned()),
            body: body.to_owned(),
        };
        let done = match status {
            200..=299 => keys_db::store(&mut conn, binding, &stored, false).await?,
            500.. => false,
            _ => keys_db::store(&mut conn, binding, &stored, true).await?,
        };
        if !done {
            keys_db::release(&mut conn, binding, Utc::now().naive_utc()).await?;
        }
        Ok(())
    }

    fn spawn_purge(&self, every: Duration) {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let Some(inner) = weak.upgrade() else { break };
                let now = Utc::now().naive_utc();
                let mut purged = 0;
                loop {
                    match purge(&inner.db, now).await {
                        Ok(n) => {
                            purged += n;
                            if n < PURGE_BATCH as usize {
                                break;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "purging idempotency keys failed");
                            break;
                        }
                    }
                }
                if purged > 0 {
                    tracing::debug!(keys = purged, "purged expired idempotency keys");
                }
            }
        });
    }
}

async fn purge(db: &Database, now: NaiveDateTime) -> Result<usize, DbError> {
    Ok(keys_db::purge(&mut db.conn().await?, now, PURGE_BATCH).await?)
}

fn count(outcome: &'static str) {
    metrics::counter!(IDEMPOTENCY_REQUESTS, "outcome" => outcome).increment(1);
}

fn resource_of(row: &KeyRow) -> Option<Resource> {
    match (row.resource_type.as_deref(), &row.resource_id) {
        (Some("order"), Some(id)) => Some(Resource::Order(id.clone())),
        (Some("refund"), Some(id)) => Some(Resource::Refund(id.clone())),
        _ => None,
    }
}

fn replay_of(row: &KeyRow) -> Replay {
    Replay {
        status: row
            .response_status
            .and_then(|s| u16::try_from(s).ok())
            .unwrap_or(200),
        headers: row
            .response_headers
            .as_deref()
            .and_then(|h| serde_json::from_str(h).ok())
            .unwrap_or_default(),
        body: row.response_body.clone().unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_one_to_255_visible_ascii_characters() {
        assert!(valid_key("a"));
        assert!(valid_key(&"k".repeat(255)));
        assert!(valid_key("order-2026-11-22_#1!~"));
        assert!(!valid_key(""));
        assert!(!valid_key(&"k".repeat(256)));
        assert!(!valid_key("has space"));
        assert!(!valid_key("tab\t"));
        assert!(!valid_key("é"));
    }

    #[test]
    fn fingerprints_tell_method_path_and_body_apart() {
        let base = fingerprint("POST", "/api/v1/orders", r#"{"a":1}"#);
        assert_eq!(base, fingerprint("POST", "/api/v1/orders", r#"{"a":1}"#));
        assert_ne!(base, fingerprint("PUT", "/api/v1/orders", r#"{"a":1}"#));
        assert_ne!(base, fingerprint("POST", "/api/v1/orderz", r#"{"a":1}"#));
        assert_ne!(base, fingerprint("POST", "/api/v1/orders", r#"{"a":2}"#));
        // Lengths are part of the hash: moving a boundary changes it.
        assert_ne!(
            fingerprint("POST", "/a", "b"),
            fingerprint("POST", "/ab", "")
        );
    }
}
