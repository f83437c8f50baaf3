-- One row per transaction of the write pipeline (src/db/pipeline), written
-- inside it: when the connection drops during COMMIT, the pipeline looks its
-- batch up here before it answers anyone, so an unknown outcome is resolved
-- rather than guessed. Rows older than a few minutes are deleted by the
-- pipeline itself.
CREATE TABLE write_batches (
    id           TEXT PRIMARY KEY,
    committed_at TIMESTAMP NOT NULL
);
CREATE INDEX write_batches_committed_at ON write_batches (committed_at);
