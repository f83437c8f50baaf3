-- Carts, orders, payments, refunds and the saga log. The CHECK constraints
-- restate invariant I3 (captured <= authorized, refunded <= captured), and
-- the UNIQUE constraints restate I4 (one payment operation per idempotency
-- key) and I7 (one order per cart), so that no engine process can break them.
CREATE TABLE carts (
    id         TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id),
    status     TEXT NOT NULL CHECK (status IN ('open', 'checked_out')),
    currency   TEXT NOT NULL CHECK (length(currency) = 3),
    order_id   TEXT UNIQUE,
    version    BIGINT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE INDEX carts_user ON carts (user_id);

CREATE TABLE cart_items (
    cart_id    TEXT NOT NULL REFERENCES carts (id),
    sku        TEXT NOT NULL REFERENCES products (sku),
    name       TEXT NOT NULL,
    quantity   BIGINT NOT NULL CHECK (quantity BETWEEN 1 AND 10000),
    unit_price BIGINT NOT NULL CHECK (unit_price BETWEEN 0 AND 1000000000000),
    PRIMARY KEY (cart_id, sku)
);

CREATE TABLE orders (
    id                TEXT PRIMARY KEY,
    user_id           TEXT NOT NULL REFERENCES users (id),
    cart_id           TEXT UNIQUE REFERENCES carts (id),
    status            TEXT NOT NULL CHECK (status IN ('pending', 'authorized', 'paid', 'shipped', 'delivered', 'cancelled', 'rejected', 'payment_failed')),
    currency          TEXT NOT NULL CHECK (length(currency) = 3),
    total             BIGINT NOT NULL CHECK (total BETWEEN 0 AND 1000000000000),
    payment_provider  TEXT NOT NULL,
    payment_token     TEXT NOT NULL,
    payment_ref       TEXT,
    capture_mode      TEXT NOT NULL CHECK (capture_mode IN ('automatic', 'manual')),
    payment_status    TEXT NOT NULL CHECK (payment_status IN ('none', 'authorized', 'captured', 'voided', 'partially_refunded', 'refunded', 'failed')),
    authorized        BIGINT NOT NULL CHECK (authorized >= 0),
    captured          BIGINT NOT NULL CHECK (captured >= 0),
    refunded          BIGINT NOT NULL CHECK (refunded >= 0),
    stock_state       TEXT NOT NULL CHECK (stock_state IN ('none', 'reserved', 'committed', 'released')),
    cancel_requested  BOOLEAN NOT NULL,
    capture_requested BOOLEAN NOT NULL,
    carrier           TEXT,
    tracking_number   TEXT,
    version           BIGINT NOT NULL,
    created_at        TIMESTAMP NOT NULL,
    updated_at        TIMESTAMP NOT NULL,
    CHECK (captured <= authorized),
    CHECK (refunded <= captured)
);
CREATE INDEX orders_user ON orders (user_id, id);
CREATE INDEX orders_status ON orders (status, id);

CREATE TABLE order_items (
    order_id   TEXT NOT NULL REFERENCES orders (id),
    sku        TEXT NOT NULL REFERENCES products (sku),
    name       TEXT NOT NULL,
    quantity   BIGINT NOT NULL CHECK (quantity BETWEEN 1 AND 10000),
    unit_price BIGINT NOT NULL CHECK (unit_price BETWEEN 0 AND 1000000000000),
    line_total BIGINT NOT NULL CHECK (line_total >= 0),
    restocked  BIGINT NOT NULL CHECK (restocked >= 0),
    PRIMARY KEY (order_id, sku),
    CHECK (restocked <= quantity)
);

-- Every call to the payment provider that succeeded or was refused, keyed by
-- the idempotency key the saga sent: one row per key (I4).
CREATE TABLE payments (
    id              TEXT PRIMARY KEY,
    order_id        TEXT NOT NULL REFERENCES orders (id),
    operation       TEXT NOT NULL CHECK (operation IN ('authorize', 'capture', 'void', 'refund')),
    idempotency_key TEXT NOT NULL UNIQUE,
    amount          BIGINT NOT NULL CHECK (amount >= 0),
    status          TEXT NOT NULL CHECK (status IN ('succeeded', 'declined')),
    provider_ref    TEXT,
    created_at      TIMESTAMP NOT NULL
);
CREATE INDEX payments_order ON payments (order_id);

CREATE TABLE refunds (
    id           TEXT PRIMARY KEY,
    order_id     TEXT NOT NULL REFERENCES orders (id),
    amount       BIGINT NOT NULL CHECK (amount BETWEEN 1 AND 1000000000000),
    reason       TEXT,
    status       TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    restock      TEXT NOT NULL,
    restock_done BOOLEAN NOT NULL,
    created_at   TIMESTAMP NOT NULL,
    updated_at   TIMESTAMP NOT NULL
);
CREATE INDEX refunds_order ON refunds (order_id, id);

-- The audit trail: every status change of an order, and who asked for it.
CREATE TABLE order_events (
    id          TEXT PRIMARY KEY,
    order_id    TEXT NOT NULL REFERENCES orders (id),
    event_type  TEXT NOT NULL,
    from_status TEXT,
    to_status   TEXT NOT NULL,
    actor       TEXT NOT NULL,
    data        TEXT NOT NULL,
    created_at  TIMESTAMP NOT NULL
);
CREATE INDEX order_events_order ON order_events (order_id, id);

-- One row per saga: its state and the lease a process holds while it runs
-- it. A lease that ran out belongs to a process that died or stalled; any
-- process may then claim the saga and resume it.
CREATE TABLE sagas (
    order_id         TEXT PRIMARY KEY REFERENCES orders (id),
    state            TEXT NOT NULL CHECK (state IN ('running', 'completed', 'compensated', 'failed')),
    current_step     TEXT,
    parked           BOOLEAN NOT NULL,
    lease_owner      TEXT,
    lease_expires_at TIMESTAMP,
    started_at       TIMESTAMP NOT NULL,
    updated_at       TIMESTAMP NOT NULL,
    finished_at      TIMESTAMP
);
CREATE INDEX sagas_state ON sagas (state, updated_at);

-- The saga log: each step (or compensation) written before it runs and after.
-- `ref_id` tells apart repeated steps of one kind (one refund_payment per refund).
CREATE TABLE saga_steps (
    id          TEXT PRIMARY KEY,
    order_id    TEXT NOT NULL REFERENCES sagas (order_id),
    name        TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('step', 'compensation')),
    ref_id      TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    attempt     INTEGER NOT NULL,
    error       TEXT,
    started_at  TIMESTAMP NOT NULL,
    finished_at TIMESTAMP,
    UNIQUE (order_id, name, ref_id)
);
