-- Catalog and inventory. The CHECK constraints restate invariant I1 so that
-- even several engine processes on this database cannot oversell: every
-- counter change is a guarded UPDATE that these constraints back up.
CREATE TABLE products (
    sku         TEXT PRIMARY KEY CHECK (length(sku) BETWEEN 1 AND 64),
    name        TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description TEXT CHECK (length(description) <= 5000),
    price       BIGINT NOT NULL CHECK (price BETWEEN 0 AND 1000000000000),
    currency    TEXT NOT NULL CHECK (length(currency) = 3),
    active      BOOLEAN NOT NULL,
    created_at  TIMESTAMP NOT NULL,
    updated_at  TIMESTAMP NOT NULL
);

CREATE TABLE inventory (
    sku        TEXT PRIMARY KEY REFERENCES products (sku),
    on_hand    BIGINT NOT NULL CHECK (on_hand >= 0),
    reserved   BIGINT NOT NULL CHECK (reserved >= 0),
    version    BIGINT NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    CHECK (reserved <= on_hand)
);

CREATE TABLE reservations (
    id         TEXT PRIMARY KEY,
    sku        TEXT NOT NULL REFERENCES inventory (sku),
    order_id   TEXT NOT NULL,
    quantity   BIGINT NOT NULL CHECK (quantity BETWEEN 1 AND 10000),
    expires_at TIMESTAMP NOT NULL,
    created_at TIMESTAMP NOT NULL,
    UNIQUE (sku, order_id)
);
CREATE INDEX reservations_expires_at ON reservations (expires_at);

-- The ledger: every change of on_hand or reserved, so that stock
-- conservation (I2) can be checked: initial + restock + adjust = on_hand + sold.
CREATE TABLE inventory_movements (
    id             TEXT PRIMARY KEY,
    sku            TEXT NOT NULL REFERENCES inventory (sku),
    kind           TEXT NOT NULL CHECK (kind IN ('initial', 'restock', 'adjust', 'reserve', 'release', 'expire', 'commit')),
    on_hand_delta  BIGINT NOT NULL,
    reserved_delta BIGINT NOT NULL,
    order_id       TEXT,
    note           TEXT,
    created_at     TIMESTAMP NOT NULL
);
CREATE INDEX inventory_movements_sku ON inventory_movements (sku, id);

-- Domain events, written in the same transaction as the change (I6).
-- Ids are UUIDv7: stable for consumers, ordered by creation.
CREATE TABLE outbox (
    id           TEXT PRIMARY KEY,
    event_type   TEXT NOT NULL,
    aggregate_id TEXT NOT NULL,
    payload      TEXT NOT NULL,
    created_at   TIMESTAMP NOT NULL,
    published_at TIMESTAMP
);
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;
