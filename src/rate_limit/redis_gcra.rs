//! GCRA in Redis: one Lua script reads and updates a key's TAT atomically,
//! using the Redis server's clock so that engine processes with skewed clocks
//! still share one budget.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;

use super::{Decision, Op, Quota};
use crate::redis_conn::RedisConn;

/// KEYS[1]: the key. ARGV[1]: emission interval (µs), ARGV[2]: window (µs),
/// ARGV[3]: `record` or `refund`. Returns 0 when allowed (always for a
/// refund), otherwise the microseconds until the next event conforms.
const GCRA_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local stored = redis.call('GET', KEYS[1])
if ARGV[3] == 'refund' then
  if stored then
    local tat = tonumber(stored) - interval
    if tat > now then
      redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000))
    else
      redis.call('DEL', KEYS[1])
    end
  end
  return 0
end
local tat = tonumber(stored or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - window
if allow_at > now then
  return allow_at - now
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
return 0
"#;

static GCRA: LazyLock<Script> = LazyLock::new(|| Script::new(GCRA_LUA));

pub async fn decide(
    redis: &RedisConn,
    key: &str,
    quota: Quota,
    op: Op,
) -> anyhow::Result<Decision> {
    let mut conn = redis.connection();
    let interval_us = quota.emission_interval().as_micros() as u64;
    let window_us = quota.window.as_micros() as u64;
    let mode = match op {
        Op::Record => "record",
        Op::Refund => "refund",
    };
    let wait_us: u64 = GCRA
        .key(key)
        .arg(interval_us)
        .arg(window_us)
        .arg(mode)
        .invoke_async(&mut conn)
        .await?;
    Ok(if wait_us == 0 {
        Decision::Allowed
    } else {
        Decision::Limited {
            retry_after: Duration::from_micros(wait_us),
        }
    })
}
