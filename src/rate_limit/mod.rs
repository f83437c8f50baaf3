//! Rate limits as GCRA (generic cell rate algorithm): each key holds one
//! timestamp, the theoretical arrival time (TAT) of its next event, so a limit
//! of `limit` events per `window` costs one value per key and no background work.
//!
//! With Redis configured the state lives in Redis (one atomic Lua script per
//! decision), so every engine process shares one budget per key. Without
//! Redis, or while Redis is unreachable, the in-process table decides: a Redis
//! outage loosens limits to per-process ones, it never blocks requests.

mod local;
mod redis_gcra;

use std::time::Duration;

use crate::redis_conn::RedisConn;

pub use local::LocalGcra;

/// `limit` events per `window`, allowed in a burst.
#[derive(Debug, Clone, Copy)]
pub struct Quota {
    pub limit: u32,
    pub window: Duration,
}

impl Quota {
    /// Time each event adds to a key's TAT.
    fn emission_interval(&self) -> Duration {
        self.window / self.limit.max(1)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    /// Denied; the next event conforms after this long.
    Limited {
        retry_after: Duration,
    },
}

/// What to do with a key: take one unit of budget (only if it conforms), or
/// give one back (an attempt that turned out not to count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Record,
    Refund,
}

/// A named limiter (its name scopes the keys) with one quota.
#[derive(Clone)]
pub struct RateLimiter {
    name: &'static str,
    quota: Quota,
    local: LocalGcra,
    redis: Option<RedisConn>,
}

impl RateLimiter {
    pub fn new(name: &'static str, quota: Quota, redis: Option<RedisConn>) -> RateLimiter {
        RateLimiter {
            name,
            quota,
            local: LocalGcra::default(),
            redis,
        }
    }

    /// Takes one unit of `key`'s budget if it conforms; says whether it did.
    /// Taking the unit before the work it guards (rather than counting after)
    /// is what keeps concurrent attempts within the budget.
    pub async fn record(&self, key: &str) -> Decision {
        self.decide(key, Op::Record).await
    }

    /// Gives back one unit taken by [`RateLimiter::record`].
    pub async fn refund(&self, key: &str) {
        self.decide(key, Op::Refund).await;
    }

    async fn decide(&self, key: &str, op: Op) -> Decision {
        if let Some(redis) = &self.redis {
            let redis_key = redis.key(&format!("rl:{}:{}", self.name, key));
            match redis_gcra::decide(redis, &redis_key, self.quota, op).await {
                Ok(decision) => return decision,
                Err(e) => {
                    tracing::warn!(limiter = self.name, error = %e, "redis rate limit failed; using the in-process limiter");
                }
            }
        }
        self.local.decide(key, self.quota, op)
    }
}
