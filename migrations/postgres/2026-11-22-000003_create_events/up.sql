-- Inbound and analytics events. An external event is recorded once per
-- (source, external_id): the unique index is what makes a redelivered event
-- acknowledged but not applied twice. For events that change state (a Stoq
-- restock) the row is written in the same transaction as the change.
CREATE TABLE events (
    id          TEXT PRIMARY KEY,
    source      TEXT NOT NULL CHECK (length(source) BETWEEN 1 AND 50),
    external_id TEXT CHECK (length(external_id) BETWEEN 1 AND 200),
    name        TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    user_id     TEXT,
    properties  TEXT NOT NULL,
    occurred_at TIMESTAMP NOT NULL,
    received_at TIMESTAMP NOT NULL,
    UNIQUE (source, external_id)
);
CREATE INDEX events_name_received ON events (name, received_at);
