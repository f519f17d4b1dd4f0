-- kiln controller state, schema 2 (PostgreSQL; as ../sqlite/0002_leases.sql): the daemon
-- (issue 4). Runs submitted over the API keep their pipeline text and resolution so a
-- restarted daemon can resume them; steps carry leases; workers register.

-- How a run's steps are dispatched: 'local' (the all-in-one `kiln run` drives them itself)
-- or 'lease' (the daemon hands them to workers that ask for them).
ALTER TABLE runs ADD COLUMN dispatch TEXT NOT NULL DEFAULT 'local' CHECK (dispatch IN ('local', 'lease'));
-- The submitted pipeline text, verbatim (its sha256 is runs.pipeline_sha256).
ALTER TABLE runs ADD COLUMN pipeline_yaml TEXT;
-- The rootfs and inputs as resolved at acceptance (JSON of kiln_core::MirrorInput values).
ALTER TABLE runs ADD COLUMN resolution_json TEXT;
-- The client's idempotency key: one run per request id.
ALTER TABLE runs ADD COLUMN request_id TEXT;
CREATE UNIQUE INDEX runs_request_id ON runs (request_id) WHERE request_id IS NOT NULL;

-- Edges of a run's step graph: `step` needs `need`.
CREATE TABLE step_needs (
    run_id  TEXT NOT NULL,
    step    TEXT NOT NULL,
    need    TEXT NOT NULL,
    PRIMARY KEY (run_id, step, need),
    FOREIGN KEY (run_id, step) REFERENCES steps (run_id, name),
    FOREIGN KEY (run_id, need) REFERENCES steps (run_id, name)
);
CREATE INDEX step_needs_by_need ON step_needs (run_id, need);

-- A leased step is in state 'running' with a lease: its id, the worker holding it and the
-- deadline (unix milliseconds) that heartbeats extend. `attempts` counts leases handed out;
-- `reason` says why a step failed or was skipped without a record.
ALTER TABLE steps ADD COLUMN lease_id TEXT;
ALTER TABLE steps ADD COLUMN worker_id TEXT;
ALTER TABLE steps ADD COLUMN lease_deadline_ms BIGINT;
ALTER TABLE steps ADD COLUMN attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE steps ADD COLUMN reason TEXT;
CREATE UNIQUE INDEX steps_lease_id ON steps (lease_id) WHERE lease_id IS NOT NULL;
CREATE INDEX steps_by_state ON steps (state, run_id, position);

CREATE TABLE workers (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL,
    slots          BIGINT NOT NULL,
    labels_json    TEXT NOT NULL,
    registered_at  TEXT NOT NULL
);
