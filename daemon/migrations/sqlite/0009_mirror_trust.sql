-- kiln controller state, schema 9: checks that keep running after the build (issue 5).
-- A revoked entry stays catalogued with its evidence; runs accepted after the revocation may
-- not use it. Advisories are OSV records matched against entries by name and version.
CREATE TABLE mirror_revocations (
    name        TEXT NOT NULL,
    version     TEXT NOT NULL,
    reason      TEXT NOT NULL,
    revoked_at  TEXT NOT NULL,
    PRIMARY KEY (name, version)
);

CREATE TABLE mirror_advisories (
    id           TEXT NOT NULL,
    name         TEXT NOT NULL,
    version      TEXT NOT NULL,
    summary      TEXT NOT NULL,
    modified     TEXT NOT NULL,
    imported_at  TEXT NOT NULL,
    PRIMARY KEY (id, name, version)
);
CREATE INDEX mirror_advisories_by_entry ON mirror_advisories (name, version);
