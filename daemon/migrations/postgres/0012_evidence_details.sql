-- kiln controller state, schema 12 (PostgreSQL; as ../sqlite/0012_evidence_details.sql): the
-- rest of an entry's admission evidence (docs/mirror.md), as one versioned JSON document
-- (`state::EvidenceDetails`). NULL for entries admitted before.
ALTER TABLE mirror_evidence ADD COLUMN details TEXT;
