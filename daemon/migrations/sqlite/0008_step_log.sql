-- kiln controller state, schema 8: the step log (docs/step-log.md, "The daemon side").
-- An append-only RFC 6962 Merkle tree log of run starts, step records and run ends. `entry`
-- holds the exact bytes that are hashed (canonical JSON); `leaf_hash` is a cache of
-- SHA-256(0x00 || entry), never trusted by `kiln audit verify`. Entries are numbered 0, 1, 2…:
-- an append is one INSERT at MAX(idx) + 1, in the transaction of the state change it logs,
-- under the database's write lock (PostgreSQL numbers them with a locked head row instead).
CREATE TABLE log_entries (
    idx        INTEGER PRIMARY KEY,
    kind       TEXT NOT NULL,
    run_id     TEXT NOT NULL,
    step       TEXT,
    entry      TEXT NOT NULL,
    leaf_hash  TEXT NOT NULL
);
CREATE INDEX log_entries_by_run ON log_entries (run_id, kind, step);

-- Signed checkpoints (C2SP signed notes), every one kept.
CREATE TABLE log_checkpoints (
    size       INTEGER PRIMARY KEY,
    note       TEXT NOT NULL,
    signed_at  TEXT NOT NULL
);
