-- kiln controller state, schema 7: label scheduling. A step may require labels
-- (`requires: { arch: x86_64 }` in its pipeline); a worker offers labels (`kiln worker --label`,
-- plus `arch` and `os`). A worker is leased only steps whose every required label it offers
-- with the same value. One row per label, so the claim checks them in SQL on either engine.
CREATE TABLE step_requires (
    run_id  TEXT NOT NULL,
    step    TEXT NOT NULL,
    key     TEXT NOT NULL,
    value   TEXT NOT NULL,
    PRIMARY KEY (run_id, step, key),
    FOREIGN KEY (run_id, step) REFERENCES steps (run_id, name)
);

CREATE TABLE worker_labels (
    worker_id  TEXT NOT NULL REFERENCES workers (id),
    key        TEXT NOT NULL,
    value      TEXT NOT NULL,
    PRIMARY KEY (worker_id, key)
);
