-- kiln controller state, schema 8 (PostgreSQL; as ../sqlite/0008_step_log.sql): the step log
-- (docs/step-log.md, "The daemon side").
-- An append-only RFC 6962 Merkle tree log of run starts, step records and run ends. `entry`
-- holds the exact bytes that are hashed (canonical JSON); `leaf_hash` is a cache of
-- SHA-256(0x00 || entry), never trusted by `kiln audit verify`. Entries are numbered 0, 1, 2…
-- by the one-row `log_head`, which every append updates first, in the transaction of the
-- state change it logs: the row lock orders appends of daemons sharing this database.
CREATE TABLE log_entries (
    idx        BIGINT PRIMARY KEY,
    kind       TEXT NOT NULL,
    run_id     TEXT NOT NULL,
    step       TEXT,
    entry      TEXT NOT NULL,
    leaf_hash  TEXT NOT NULL
);
CREATE INDEX log_entries_by_run ON log_entries (run_id, kind, step);

CREATE TABLE log_head (
    id    BIGINT PRIMARY KEY CHECK (id = 1),
    size  BIGINT NOT NULL
);
INSERT INTO log_head (id, size) VALUES (1, 0);

-- Signed checkpoints (C2SP signed notes), every one kept.
CREATE TABLE log_checkpoints (
    size       BIGINT PRIMARY KEY,
    note       TEXT NOT NULL,
    signed_at  TEXT NOT NULL
);
