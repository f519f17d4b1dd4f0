-- kiln controller state, schema 1 (PostgreSQL; the same schema as ../sqlite/0001_initial.sql).
-- Integers are BIGINT (Rust i64 through sqlx's Any driver); times are RFC 3339 TEXT. Text
-- columns that are sorted on are COLLATE "C", so they sort by bytes as in SQLite.
-- Mirror entries are immutable: (name, version) is the key and rows are never updated.
CREATE TABLE mirror_entries (
    name       TEXT COLLATE "C" NOT NULL,
    version    TEXT COLLATE "C" NOT NULL,
    sha256     TEXT NOT NULL CHECK (length(sha256) = 64),
    kind       TEXT NOT NULL CHECK (kind IN ('file', 'tree')),
    file_name  TEXT,
    size       BIGINT NOT NULL,
    added_at   TEXT NOT NULL,
    PRIMARY KEY (name, version)
);

CREATE TABLE runs (
    id               TEXT COLLATE "C" PRIMARY KEY,
    pipeline_name    TEXT NOT NULL,
    pipeline_file    TEXT NOT NULL,
    pipeline_sha256  TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('running', 'succeeded', 'failed')),
    started_at       TEXT COLLATE "C" NOT NULL,
    finished_at      TEXT
);

CREATE TABLE steps (
    run_id    TEXT NOT NULL REFERENCES runs (id),
    name      TEXT NOT NULL,
    position  BIGINT NOT NULL,
    state     TEXT NOT NULL CHECK (state IN ('pending', 'running', 'succeeded', 'failed', 'skipped')),
    PRIMARY KEY (run_id, name)
);

-- One record per executed step: the wire-format StepRecord as JSON, plus the columns
-- worth querying without parsing it.
CREATE TABLE step_records (
    run_id       TEXT NOT NULL,
    step         TEXT NOT NULL,
    exit_status  TEXT NOT NULL,
    rootfs_sha256 TEXT NOT NULL,
    log_sha256   TEXT NOT NULL,
    started_at   TEXT NOT NULL,
    finished_at  TEXT NOT NULL,
    record_json  TEXT NOT NULL,
    PRIMARY KEY (run_id, step),
    FOREIGN KEY (run_id, step) REFERENCES steps (run_id, name)
);

CREATE TABLE artifacts (
    run_id             TEXT NOT NULL REFERENCES runs (id),
    name               TEXT COLLATE "C" NOT NULL,
    step               TEXT NOT NULL,
    path               TEXT NOT NULL,
    sha256             TEXT NOT NULL,
    provenance_sha256  TEXT NOT NULL,
    PRIMARY KEY (run_id, name)
);
