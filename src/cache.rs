//! Read cache of product documents (catalog fields and availability), in
//! Redis when configured, in process otherwise.
//!
//! Invalidation is by generation: every SKU has a generation number, bumped by
//! every write to the product or its stock *before* the write is acknowledged.
//! A cached document carries the generation read before the database was
//! read, and is served only while that is still the current generation. So a
//! reader racing a writer can only cause a miss, never serve a stale document
//! after the write was acknowledged. Generations start at a random value, so
//! documents cached before a lost generation (Redis restart) never match.
//!
//! Redis failures degrade to reading the database. A bump that fails marks
//! the cache dirty: this process neither reads nor fills it again until it
//! has flushed every product document *and generation* (so that a document
//! read before the flush can never match a generation made after it), and
//! the failed bump is retried in the background so that other processes stop
//! serving the old document as soon as Redis answers again. The in-process
//! cache is coherent only within one engine process; several processes need
//! Redis (see docs).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use redis::Script;

use crate::redis_conn::RedisConn;

const LOCAL_CAPACITY: usize = 10_000;
/// How long a generation lives in Redis without writes.
const GENERATION_TTL_S: u64 = 86_400;

/// A cache lookup: the document, or the tag to store a fresh one under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Hit(Arc<str>),
    /// Not cached; store the document read next under this tag.
    Miss(u64),
    /// The cache cannot be used now; read the database and store nothing.
    Bypass,
}

#[derive(Clone)]
pub struct ProductCache {
    redis: Option<RedisConn>,
    local: Arc<DashMap<String, LocalEntry>>,
    ttl: Duration,
    /// Failed invalidations so far, and how many of them the last successful
    /// flush covered: the cache is dirty while the first is ahead.
    failed_bumps: Arc<AtomicU64>,
    flushed_bumps: Arc<AtomicU64>,
    /// One flush at a time; lookups meanwhile bypass the cache.
    flushing: Arc<AtomicBool>,
    /// SKUs whose failed invalidation is being retried (one task each).
    retrying: Arc<DashMap<String, u64>>,
}

struct LocalEntry {
    generation: u64,
    document: Option<(u64, Arc<str>, Instant)>,
}

/// KEYS[1] generation, KEYS[2] document; ARGV[1] a random initial generation.
/// Returns {generation, document or false}.
static LOOKUP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local generation = redis.call('GET', KEYS[1])
if not generation then
  redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2])
  generation = redis.call('GET', KEYS[1])
end
return {generation, redis.call('GET', KEYS[2])}
",
    )
});

/// KEYS[1] generation, KEYS[2] document; ARGV[1] a random initial generation.
static BUMP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('INCR', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[1])
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('DEL', KEYS[2])
return 1
",
    )
});

impl ProductCache {
    pub fn new(redis: Option<RedisConn>, ttl: Duration) -> ProductCache {
        ProductCache {
            redis,
            local: Arc::default(),
            ttl,
            failed_bumps: Arc::default(),
            flushed_bumps: Arc::default(),
            flushing: Arc::default(),
            retrying: Arc::default(),
        }
    }

    pub async fn lookup(&self, sku: &str) -> Lookup {
        let lookup = match &self.redis {
            Some(redis) => self.lookup_redis(redis, sku).await,
            None => self.lookup_local(sku),
        };
        let result = match lookup {
            Lookup::Hit(_) => "hit",
            Lookup::Miss(_) => "miss",
            Lookup::Bypass => "bypass",
        };
        metrics::counter!("product_cache_lookups_total", "result" => result).increment(1);
        lookup
    }

    /// Stores `document` for `sku` under the tag a miss returned.
    pub async fn store(&self, sku: &str, tag: u64, document: &str) {
        match &self.redis {
            Some(redis) => {
                let mut conn = redis.connection();
                let value = format!("{tag}:{document}");
                let ttl_ms = self.ttl.as_millis() as u64;
                let result: redis::RedisResult<()> = redis::cmd("SET")
                    .arg(redis.key(&format!("product:{sku}")))
                    .arg(value)
                    .arg("PX")
                    .arg(ttl_ms.max(1))
                    .query_async(&mut conn)
                    .await;
                if let Err(e) = result {
                    tracing::debug!(error = %e, "product cache store failed");
                }
            }
            None => {
                if let Some(mut entry) = self.local.get_mut(sku) {
                    // A document read under an older generation is already stale.
                    if entry.generation == tag {
                        entry.document =
                            Some((tag, Arc::from(document), Instant::now() + self.ttl));
                    }
                }
            }
        }
    }

    /// Invalidates `sku`. Call after a write commits and before it is
    /// acknowledged.
    pub async fn invalidate(&self, sku: &str) {
        match &self.redis {
            Some(redis) => {
                if let Err(e) = bump(redis, sku).await {
                    tracing::warn!(error = %e, sku, "product cache invalidation failed; bypassing the cache until it is flushed");
                    self.failed_bumps.fetch_add(1, Ordering::SeqCst);
                    self.retry_in_background(redis.clone(), sku.to_owned());
                }
            }
            None => {
                let mut entry = self
                    .local
                    .entry(sku.to_owned())
                    .or_insert_with(|| LocalEntry {
                        generation: random_generation(),
                        document: None,
                    });
                entry.generation = entry.generation.wrapping_add(1);
                entry.document = None;
            }
        }
    }

    async fn lookup_redis(&self, redis: &RedisConn, sku: &str) -> Lookup {
        let failed = self.failed_bumps.load(Ordering::SeqCst);
        if failed > self.flushed_bumps.load(Ordering::SeqCst) {
            // One flush at a time; everyone else reads the database meanwhile.
            if self.flushing.swap(true, Ordering::SeqCst) {
                return Lookup::Bypass;
            }
            let flushed = self.flush(redis).await;
            if flushed {
                // Only the failures seen before the flush began are covered.
                self.flushed_bumps.fetch_max(failed, Ordering::SeqCst);
            }
            self.flushing.store(false, Ordering::SeqCst);
            if !flushed {
                return Lookup::Bypass;
            }
        }
        let mut conn = redis.connection();
        let reply: redis::RedisResult<(u64, Option<String>)> = LOOKUP
            .key(redis.key(&format!("product-gen:{sku}")))
            .key(redis.key(&format!("product:{sku}")))
            .arg(random_generation())
            .arg(GENERATION_TTL_S)
            .invoke_async(&mut conn)
            .await;
        match reply {
            Ok((generation, Some(value))) => match value.split_once(':') {
                Some((tag, document)) if tag.parse::<u64>() == Ok(generation) => {
                    Lookup::Hit(Arc::from(document))
                }
                _ => Lookup::Miss(generation),
            },
            Ok((generation, None)) => Lookup::Miss(generation),
            Err(e) => {
                tracing::debug!(error = %e, "product cache lookup failed; reading the database");
                Lookup::Bypass
            }
        }
    }

    /// Keeps trying a failed invalidation (every second, for up to ten
    /// minutes) so that other engine processes stop serving the old document
    /// once Redis is back; documents live at most `cache.product_ttl_ms`
    /// (bounded to ten minutes) anyway. One task per SKU, however many writes
    /// failed meanwhile: the newest failure is covered by the same bump.
    fn retry_in_background(&self, redis: RedisConn, sku: String) {
        // The value counts failures; a task is spawned only for the first.
        let first = {
            let mut failures = self.retrying.entry(sku.clone()).or_insert(0);
            *failures += 1;
            *failures == 1
        };
        if !first {
            return;
        }
        let retrying = self.retrying.clone();
        tokio::spawn(async move {
            for _ in 0..600 {
                let seen = retrying.get(&sku).map_or(0, |f| *f);
                tokio::time::sleep(Duration::from_secs(1)).await;
                // Done only once a bump succeeded after the latest failure.
                if bump(&redis, &sku).await.is_ok()
                    && retrying.remove_if(&sku, |_, f| *f == seen).is_some()
                {
                    return;
                }
            }
            retrying.remove(&sku);
        });
    }

    /// Deletes every cached product document and generation; true when it
    /// worked.
    async fn flush(&self, redis: &RedisConn) -> bool {
        let mut conn = redis.connection();
        for pattern in [redis.key("product:*"), redis.key("product-gen:*")] {
            let mut cursor: u64 = 0;
            loop {
                let page: redis::RedisResult<(u64, Vec<String>)> = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(500)
                    .query_async(&mut conn)
                    .await;
                let Ok((next, keys)) = page else { return false };
                if !keys.is_empty()
                    && redis::cmd("DEL")
                        .arg(keys)
                        .query_async::<i64>(&mut conn)
                        .await
                        .is_err()
                {
                    return false;
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        tracing::info!("product cache flushed after a failed invalidation");
        true
    }

    fn lookup_local(&self, sku: &str) -> Lookup {
        if self.local.len() > LOCAL_CAPACITY {
            let now = Instant::now();
            // Entries without a live document hold no information worth
            // keeping: a re-created entry starts at a new random generation.
            self.local
                .retain(|_, e| e.document.as_ref().is_some_and(|(_, _, exp)| *exp > now));
        }
        let entry = self
            .local
            .entry(sku.to_owned())
            .or_insert_with(|| LocalEntry {
                generation: random_generation(),
                document: None,
            });
        match &entry.document {
            Some((tag, document, expires))
                if *tag == entry.generation && *expires > Instant::now() =>
            {
                Lookup::Hit(document.clone())
            }
            _ => Lookup::Miss(entry.generation),
        }
    }
}

async fn bump(redis: &RedisConn, sku: &str) -> redis::RedisResult<i64> {
    let mut conn = redis.connection();
    BUMP.key(redis.key(&format!("product-gen:{sku}")))
        .key(redis.key(&format!("product:{sku}")))
        .arg(random_generation())
        .arg(GENERATION_TTL_S)
        .invoke_async(&mut conn)
        .await
}

fn random_generation() -> u64 {
    // Half the range, so increments never wrap in practice.
    (uuid::Uuid::new_v4().as_u128() as u64) >> 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache() -> ProductCache {
        ProductCache::new(None, Duration::from_secs(60))
    }

    #[tokio::test]
    async fn a_stored_document_is_served_until_invalidated() {
        let c = cache();
        let Lookup::Miss(tag) = c.lookup("a").await else {
            panic!()
        };
        c.store("a", tag, "{\"price\":1}").await;
        assert_eq!(c.lookup("a").await, Lookup::Hit(Arc::from("{\"price\":1}")));
        c.invalidate("a").await;
        assert!(matches!(c.lookup("a").await, Lookup::Miss(_)));
    }

    #[tokio::test]
    async fn a_reader_racing_a_writer_cannot_store_a_stale_document() {
        let c = cache();
        // The reader looks up, then reads the database (old price)...
        let Lookup::Miss(tag) = c.lookup("a").await else {
            panic!()
        };
        // ...meanwhile a write commits and invalidates...
        c.invalidate("a").await;
        // ...and the reader stores what it read.
        c.store("a", tag, "{\"price\":1}").await;
        assert!(
            matches!(c.lookup("a").await, Lookup::Miss(_)),
            "the stale document is never served"
        );
    }

    #[tokio::test]
    async fn documents_expire() {
        let c = ProductCache::new(None, Duration::from_millis(0));
        let Lookup::Miss(tag) = c.lookup("a").await else {
            panic!()
        };
        c.store("a", tag, "{}").await;
        assert!(matches!(c.lookup("a").await, Lookup::Miss(_)));
    }
}
