//! The product cache when Redis fails exactly while a write invalidates:
//! the old document is never served again, not even to a reader that was
//! racing the write.

use std::sync::Arc;
use std::time::Duration;

use orderflow::cache::{Lookup, ProductCache};
use orderflow::config::RedisSettings;
use orderflow::redis_conn::RedisConn;
use secrecy::SecretString;

use crate::support::backends::{redis_url, TestRedis};
use crate::support::process::eventually;
use crate::support::proxy::TcpProxy;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_invalidation_never_lets_the_old_document_be_served() {
    let test_redis = TestRedis::create().await;
    let upstream = redis_url()
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .expect("host:port")
        .to_owned();
    let proxy = TcpProxy::start(upstream).await;
    let settings = RedisSettings {
        url: Some(SecretString::from(format!(
            "redis://127.0.0.1:{}/0",
            proxy.port
        ))),
        key_prefix: test_redis.prefix.clone(),
        connect_timeout_ms: 300,
        response_timeout_ms: 300,
    };
    let redis = RedisConn::from_settings(&settings)
        .unwrap()
        .expect("configured");
    let cache = ProductCache::new(Some(redis), Duration::from_secs(60));

    let Lookup::Miss(tag) = cache.lookup("p").await else {
        panic!("empty cache misses")
    };
    cache.store("p", tag, "{\"price\":1}").await;
    assert_eq!(
        cache.lookup("p").await,
        Lookup::Hit(Arc::from("{\"price\":1}"))
    );
    // A reader starts before the write: it has a tag and will store late.
    let Lookup::Hit(_) = cache.lookup("p").await else {
        panic!()
    };
    let racing_tag = tag;

    // The write commits; its invalidation cannot reach Redis.
    proxy.go_down();
    cache.invalidate("p").await;
    assert_eq!(
        cache.lookup("p").await,
        Lookup::Bypass,
        "a dirty cache is not used"
    );

    proxy.come_back();
    eventually(
        "the cache is usable again",
        Duration::from_secs(20),
        || async { cache.lookup("p").await != Lookup::Bypass },
    )
    .await;
    assert!(
        matches!(cache.lookup("p").await, Lookup::Miss(_)),
        "the old document is gone"
    );
    // The racing reader stores what it read before the write: never served.
    cache.store("p", racing_tag, "{\"price\":1}").await;
    assert!(
        matches!(cache.lookup("p").await, Lookup::Miss(_)),
        "a document read before the write cannot match"
    );
}
