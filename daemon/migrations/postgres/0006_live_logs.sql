-- kiln controller state, schema 6 (PostgreSQL; as ../sqlite/0006_live_logs.sql): step logs
-- while steps run (`kiln logs --follow`).
-- A worker appends its running step's output here in order, under the step's lease; once the
-- step's record is accepted its content-addressed log blob is the log, and these rows go.
CREATE TABLE live_logs (
    lease_id  TEXT NOT NULL,
    start     BIGINT NOT NULL,
    data      BYTEA NOT NULL,
    PRIMARY KEY (lease_id, start)
);
