-- Idempotency keys (api.md, Idempotency). One row per (user, key): the
-- request's fingerprint, who runs it now (token, locked_until), the resource
-- its effect created or moved (bound in the effect's own transaction, so a
-- crash between effect and answer cannot make a retry repeat the effect),
-- and once finished the answer to replay. Purged after expires_at.
CREATE TABLE idempotency_keys (
    user_id         TEXT NOT NULL,
    key             TEXT NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    fingerprint     TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('running', 'done')),
    token           TEXT NOT NULL,
    locked_until    TIMESTAMP NOT NULL,
    resource_type   TEXT CHECK (resource_type IN ('order', 'refund')),
    resource_id     TEXT,
    response_status INTEGER,
    response_headers TEXT,
    response_body   TEXT,
    created_at      TIMESTAMP NOT NULL,
    expires_at      TIMESTAMP NOT NULL,
    PRIMARY KEY (user_id, key),
    CHECK (state = 'running' OR response_status IS NOT NULL)
);
CREATE INDEX idempotency_keys_expires ON idempotency_keys (expires_at);
