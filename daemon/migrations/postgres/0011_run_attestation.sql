-- kiln controller state, schema 11: every finished run (succeeded, failed or cancelled) keeps
-- the blob digest of its signed run attestation (run.intoto.jsonl, docs/run-attestation.md).
ALTER TABLE runs ADD COLUMN attestation_sha256 TEXT;
