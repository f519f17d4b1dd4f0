-- kiln controller state, schema 3: mutual TLS for workers (docs/api.md, "Mutual TLS").

-- One-time join tokens (`kiln admin join-token create`). Only the sha256 of the secret is
-- kept. A token is consumed by setting used_at, atomically with the check that it is unused
-- and unexpired. Times are unix milliseconds.
CREATE TABLE join_tokens (
    sha256      TEXT PRIMARY KEY,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER,
    -- The identity (worker uuid in the certificate's SPIFFE URI) the token was exchanged for.
    identity    TEXT
);

-- Which certificate identity registered which worker row: worker routes are answered only
-- for the worker ids the connection's certificate registered.
CREATE TABLE worker_identities (
    worker_id   TEXT PRIMARY KEY REFERENCES workers (id),
    identity    TEXT NOT NULL
);
CREATE INDEX worker_identities_by_identity ON worker_identities (identity);
