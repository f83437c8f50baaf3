//! The transport between the relay and the dispatchers: a Redis Stream read
//! through a consumer group when Redis is configured (each entry goes to one
//! engine process; entries a dead process had taken are claimed by another
//! after `CLAIM_IDLE`), an in-process channel otherwise.
//!
//! The transport is at-least-once and may lose entries (a Redis restart
//! without persistence loses the stream): the outbox is the record, and the
//! relay publishes again whatever was published but never dispatched.

use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDateTime;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use redis::streams::{
    StreamAutoClaimOptions, StreamAutoClaimReply, StreamId, StreamReadOptions, StreamReadReply,
};
use redis::AsyncCommands;
use tokio::sync::{mpsc, Mutex};

use crate::db::outbox::{OutboxEvent, Publisher};
use crate::redis_conn::RedisConn;

/// The consumer group of the engine's dispatchers.
pub const GROUP: &str = "orderflow-dispatch";
/// An entry taken by a consumer and not acknowledged for this long is taken
/// over by another (its process died or lost Redis mid-batch).
const CLAIM_IDLE: Duration = Duration::from_secs(30);
/// A consumer with nothing pending, idle this long, is removed from the group.
pub const STALE_CONSUMER: Duration = Duration::from_secs(3600);
/// The wire format of event times: UTC, microseconds.
pub const TIME_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.6fZ";
/// Events the in-process channel holds: a whole relay batch.
pub const LOCAL_CAPACITY: usize = crate::config::MAX_RELAY_BATCH as usize;

/// One event as a dispatcher receives it.
#[derive(Debug, Clone)]
pub struct Received {
    /// The stream entry to acknowledge; `None` on the in-process channel.
    pub entry: Option<String>,
    pub event: OutboxEvent,
}

#[derive(Clone)]
pub enum Bus {
    Redis(Arc<RedisStream>),
    Local(Arc<LocalChannel>),
}

pub struct RedisStream {
    redis: RedisConn,
    key: String,
    consumer: String,
    max_len: u64,
}

pub struct LocalChannel {
    tx: mpsc::Sender<OutboxEvent>,
    rx: Mutex<mpsc::Receiver<OutboxEvent>>,
}

impl Bus {
    /// The stream `<prefix>:events` when Redis is configured, else a channel.
    pub fn new(redis: Option<RedisConn>, consumer: &str, max_len: u64) -> Bus {
        match redis {
            Some(redis) => Bus::Redis(Arc::new(RedisStream {
                key: redis.key("events"),
                redis,
                consumer: consumer.to_owned(),
                max_len,
            })),
            None => {
                let (tx, rx) = mpsc::channel(LOCAL_CAPACITY);
                Bus::Local(Arc::new(LocalChannel {
                    tx,
                    rx: Mutex::new(rx),
                }))
            }
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Bus::Redis(_) => "redis",
            Bus::Local(_) => "local",
        }
    }

    /// Up to `max` events, waiting at most `wait` when there are none.
    pub async fn receive(&self, max: usize, wait: Duration) -> anyhow::Result<Vec<Received>> {
        match self {
            Bus::Redis(stream) => stream.receive(max, wait).await,
            Bus::Local(channel) => {
                let mut rx = channel.rx.lock().await;
                let mut events = Vec::new();
                if let Ok(n) = tokio::time::timeout(wait, rx.recv_many(&mut events, max)).await {
                    anyhow::ensure!(n > 0 || max == 0, "the event channel closed");
                }
                Ok(events
                    .into_iter()
                    .map(|event| Received { entry: None, event })
                    .collect())
            }
        }
    }

    /// Removes consumers of the group that hold nothing and have been idle
    /// for `idle_for`: every process start adds one, named after the process.
    /// Removing a live one is harmless (its next read makes it again), and
    /// one holding entries is never removed.
    pub async fn prune_consumers(&self, idle_for: Duration) -> anyhow::Result<usize> {
        let Bus::Redis(stream) = self else {
            return Ok(0);
        };
        let mut conn = stream.redis.connection();
        let reply: redis::streams::StreamInfoConsumersReply =
            conn.xinfo_consumers(&stream.key, GROUP).await?;
        let mut removed = 0;
        for consumer in reply.consumers {
            if consumer.name != stream.consumer
                && consumer.pending == 0
                && consumer.idle as u128 >= idle_for.as_millis()
            {
                let _: usize = conn
                    .xgroup_delconsumer(&stream.key, GROUP, &consumer.name)
                    .await?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Acknowledges dispatched entries (a no-op on the channel).
    pub async fn ack(&self, received: &[Received]) -> anyhow::Result<()> {
        let Bus::Redis(stream) = self else {
            return Ok(());
        };
        let ids: Vec<&str> = received.iter().filter_map(|r| r.entry.as_deref()).collect();
        if ids.is_empty() {
            return Ok(());
        }
        let mut conn = stream.redis.connection();
        let _: usize = conn.xack(&stream.key, GROUP, &ids).await?;
        Ok(())
    }
}

impl Publisher for Bus {
    fn publish<'a>(&'a self, events: &'a [OutboxEvent]) -> BoxFuture<'a, anyhow::Result<()>> {
        async move {
            match self {
                Bus::Redis(stream) => stream.publish(events).await,
                // Never waits: the dispatcher that makes room may be behind
                // for a while. A full channel is a failed publish; the relay
                // gives the rows back and takes them again next round.
                Bus::Local(channel) => {
                    let permits = channel
                        .tx
                        .try_reserve_many(events.len())
                        .map_err(|e| anyhow::anyhow!("the event channel is full or closed: {e}"))?;
                    for (permit, event) in permits.zip(events) {
                        permit.send(event.clone());
                    }
                    Ok(())
                }
            }
        }
        .boxed()
    }
}

impl RedisStream {
    async fn publish(&self, events: &[OutboxEvent]) -> anyhow::Result<()> {
        let mut pipe = redis::pipe();
        for e in events {
            pipe.cmd("XADD")
                .arg(&self.key)
                .arg("MAXLEN")
                .arg("~")
                .arg(self.max_len)
                .arg("*")
                .arg("id")
                .arg(&e.id)
                .arg("type")
                .arg(&e.event_type)
                .arg("aggregate_id")
                .arg(&e.aggregate_id)
                .arg("created_at")
                .arg(e.created_at.format(TIME_FORMAT).to_string())
                .arg("data")
                .arg(&e.payload)
                .ignore();
        }
        let mut conn = self.redis.connection();
        pipe.query_async::<()>(&mut conn).await?;
        Ok(())
    }

    async fn receive(&self, max: usize, wait: Duration) -> anyhow::Result<Vec<Received>> {
        let mut conn = self.redis.connection();
        // Entries a dead consumer took first, then new ones.
        let claimed: StreamAutoClaimReply = match conn
            .xautoclaim_options(
                &self.key,
                GROUP,
                &self.consumer,
                CLAIM_IDLE.as_millis() as u64,
                "0-0",
                StreamAutoClaimOptions::default().count(max),
            )
            .await
        {
            Ok(reply) => reply,
            Err(e) if e.code() == Some("NOGROUP") => {
                self.create_group().await?;
                return Ok(Vec::new());
            }
            Err(e) => return Err(e.into()),
        };
        let mut entries = claimed.claimed;
        if entries.is_empty() {
            let options = StreamReadOptions::default()
                .group(GROUP, &self.consumer)
                .count(max);
            let reply: Option<StreamReadReply> =
                conn.xread_options(&[&self.key], &[">"], &options).await?;
            entries = reply
                .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
                .unwrap_or_default();
            if entries.is_empty() {
                tokio::time::sleep(wait).await;
            }
        }
        let mut received = Vec::with_capacity(entries.len());
        let mut malformed = Vec::new();
        for entry in entries {
            match parse(&entry) {
                Some(event) => received.push(Received {
                    entry: Some(entry.id),
                    event,
                }),
                None => malformed.push(entry.id),
            }
        }
        if !malformed.is_empty() {
            tracing::warn!(entries = ?malformed, "skipping malformed entries on the event stream");
            let _: usize = conn.xack(&self.key, GROUP, &malformed).await?;
        }
        Ok(received)
    }

    /// The group reads the stream from its start: after a Redis restart the
    /// stream is new, and every entry in it is still to be dispatched.
    async fn create_group(&self) -> anyhow::Result<()> {
        let mut conn = self.redis.connection();
        match conn
            .xgroup_create_mkstream::<_, _, _, ()>(&self.key, GROUP, "0")
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

fn parse(entry: &StreamId) -> Option<OutboxEvent> {
    let created_at: String = entry.get("created_at")?;
    Some(OutboxEvent {
        id: entry.get("id")?,
        event_type: entry.get("type")?,
        aggregate_id: entry.get("aggregate_id")?,
        payload: entry.get("data")?,
        created_at: NaiveDateTime::parse_from_str(&created_at, TIME_FORMAT).ok()?,
    })
}
