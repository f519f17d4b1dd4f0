-- kiln controller state, schema 5 (PostgreSQL; as ../sqlite/0005_mirror_evidence.sql).
-- How each mirror entry was admitted (docs/mirror.md): the asserted digest and who asserted
-- it, the signature that was verified and the signer's key, and the policy rule that let it in.
-- One row per entry, written in the same transaction as the entry.
CREATE TABLE mirror_evidence (
    name              TEXT COLLATE "C" NOT NULL,
    version           TEXT COLLATE "C" NOT NULL,
    asserted_sha256   TEXT CHECK (asserted_sha256 IS NULL OR length(asserted_sha256) = 64),
    asserted_by       TEXT,
    signature         TEXT,
    signer_keyid      TEXT CHECK (signer_keyid IS NULL OR length(signer_keyid) = 64),
    signer_algorithm  TEXT,
    signer_name       TEXT,
    policy_decision   TEXT NOT NULL,
    PRIMARY KEY (name, version),
    FOREIGN KEY (name, version) REFERENCES mirror_entries (name, version)
);
