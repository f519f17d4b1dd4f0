-- kiln controller state, schema 12: the rest of an entry's admission evidence (docs/mirror.md),
-- as one versioned JSON document (`state::EvidenceDetails`): where it was fetched from, the
-- Sigstore bundle it came with, the kiln provenance it was admitted on and the dependencies
-- that provenance resolved, its license and the license decision, and, for a root filesystem,
-- each Debian package with its version and licenses. NULL for entries admitted before.
ALTER TABLE mirror_evidence ADD COLUMN details TEXT;
