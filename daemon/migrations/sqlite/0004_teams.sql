-- kiln controller state, schema 4: submitter API tokens (docs/api.md, "Teams").

-- Bearer tokens of teams (`kiln admin token create --team NAME`). Only the sha256 of the
-- secret is kept. Times are unix milliseconds.
CREATE TABLE api_tokens (
    sha256      TEXT PRIMARY KEY CHECK (length(sha256) = 64),
    team        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);

-- The team that submitted a run over the API; NULL for `kiln run` (all-in-one) runs, which no
-- team can see through the API.
ALTER TABLE runs ADD COLUMN team TEXT;
CREATE INDEX runs_by_team ON runs (team);

-- When the owning team cancelled the run (`POST /v1/runs/{id}/cancel`), RFC 3339. A cancelled
-- run is stored with state 'failed' and its unfinished steps with state 'skipped' and reason
-- 'cancelled' (the CHECK constraints of schema 1 stay as they are); the API shows both as
-- 'cancelled'.
ALTER TABLE runs ADD COLUMN cancelled_at TEXT;
