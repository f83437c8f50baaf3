-- Domain events leave the outbox in two stages: the relay publishes a row
-- (to the Redis Stream or the in-process channel) and sets published_at;
-- a dispatcher turns it into webhook deliveries and notifications and sets
-- dispatched_at in the same transaction. A row published long ago but never
-- dispatched (the stream was lost with a Redis restart, or the process died)
-- is published again: the database, not the transport, is the record.
-- republish_after backs off (doubling per publish) so that a dispatcher
-- that is merely behind is not flooded with copies.
ALTER TABLE outbox ADD COLUMN dispatched_at TIMESTAMP;
ALTER TABLE outbox ADD COLUMN publish_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN republish_after TIMESTAMP;
-- Events written before this migration had no consumer: they are history,
-- not news. Without this, the first start would send every past order's
-- notifications and replay history to new webhooks.
-- Times are UTC, as the engine writes them.
UPDATE outbox SET published_at = COALESCE(published_at, now() AT TIME ZONE 'UTC'),
                  dispatched_at = now() AT TIME ZONE 'UTC';
CREATE INDEX outbox_undispatched ON outbox (republish_after) WHERE dispatched_at IS NULL;

-- Webhook endpoints. events is a JSON array of event types, or ["*"].
CREATE TABLE webhooks (
    id         TEXT PRIMARY KEY,
    url        TEXT NOT NULL CHECK (length(url) BETWEEN 1 AND 2048),
    events     TEXT NOT NULL,
    secret     TEXT NOT NULL CHECK (length(secret) BETWEEN 16 AND 256),
    created_at TIMESTAMP NOT NULL
);

-- One delivery per (endpoint, event): the unique key is what makes an event
-- dispatched twice (at-least-once transport) deliver once. A worker takes a
-- due delivery by setting the lease (owner, expiry) with a guarded UPDATE and
-- records the attempt's outcome only while it still holds that lease.
CREATE TABLE webhook_deliveries (
    id               TEXT PRIMARY KEY,
    webhook_id       TEXT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_id         TEXT NOT NULL REFERENCES outbox (id),
    event_type       TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed', 'dead')),
    attempts         INTEGER NOT NULL CHECK (attempts >= 0),
    next_attempt_at  TIMESTAMP,
    lease_owner      TEXT,
    lease_expires_at TIMESTAMP,
    last_status_code INTEGER,
    last_error       TEXT,
    created_at       TIMESTAMP NOT NULL,
    updated_at       TIMESTAMP NOT NULL,
    delivered_at     TIMESTAMP,
    UNIQUE (webhook_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE status IN ('pending', 'failed');
CREATE INDEX webhook_deliveries_by_webhook ON webhook_deliveries (webhook_id, id);

-- Customer notifications (order confirmation, shipping, refund), one per
-- (event, kind), retried like webhook deliveries.
CREATE TABLE notifications (
    id               TEXT PRIMARY KEY,
    event_id         TEXT NOT NULL REFERENCES outbox (id),
    kind             TEXT NOT NULL CHECK (kind IN ('order_confirmation', 'shipping', 'refund')),
    order_id         TEXT NOT NULL,
    recipient        TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed', 'dead')),
    attempts         INTEGER NOT NULL CHECK (attempts >= 0),
    next_attempt_at  TIMESTAMP,
    lease_owner      TEXT,
    lease_expires_at TIMESTAMP,
    last_error       TEXT,
    created_at       TIMESTAMP NOT NULL,
    updated_at       TIMESTAMP NOT NULL,
    sent_at          TIMESTAMP,
    UNIQUE (event_id, kind)
);
CREATE INDEX notifications_due ON notifications (next_attempt_at)
    WHERE status IN ('pending', 'failed');
