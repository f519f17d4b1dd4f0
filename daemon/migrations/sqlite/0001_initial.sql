-- kiln controller state, schema 1.
-- Mirror entries are immutable: (name, version) is the key and rows are never updated.
CREATE TABLE mirror_entries (
    name       TEXT NOT NULL,
    version    TEXT NOT NULL,
    sha256     TEXT NOT NULL CHECK (length(sha256) = 64),
    kind       TEXT NOT NULL CHECK (kind IN ('file', 'tree')),
    file_name  TEXT,
    size       INTEGER NOT NULL,
    added_at   TEXT NOT NULL,
    PRIMARY KEY (name, version)
);

CREATE TABLE runs (
    id               TEXT PRIMARY KEY,
    pipeline_name    TEXT NOT NULL,
    pipeline_file    TEXT NOT NULL,
    pipeline_sha256  TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('running', 'succeeded', 'failed')),
    started_at       TEXT NOT NULL,
    finished_at      TEXT
);

CREATE TABLE steps (
    run_id    TEXT NOT NULL REFERENCES runs (id),
    name      TEXT NOT NULL,
    position  INTEGER NOT NULL,
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
    name               TEXT NOT NULL,
    step               TEXT NOT NULL,
    path               TEXT NOT NULL,
    sha256             TEXT NOT NULL,
    provenance_sha256  TEXT NOT NULL,
    PRIMARY KEY (run_id, name)
);
