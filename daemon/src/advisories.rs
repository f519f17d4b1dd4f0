//! OSV advisories (<https://ossf.github.io/osv-schema/>) read offline for
//! `kiln mirror advisories import FILE`: each record's `affected[].package.name` and explicit
//! `affected[].versions` become (name, version) pairs matched against mirror entries.
//!
//! Deliberately not interpreted: `ranges` (their semantics depend on the ecosystem's version
//! ordering, which kiln's free-form versions do not have); a record that only has ranges is
//! reported as matching nothing rather than guessed at. Withdrawn records are skipped.

use kiln_core::MirrorRef;
use serde::Deserialize;

use crate::state::Advisory;

/// Why an advisory file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AdvisoryError {
    #[error("not OSV JSON (one record or a list of records): {0}")]
    Json(#[source] serde_json::Error),
    #[error(
        "advisory {id}: affected package {name:?} version {version:?} is not a mirror name@version: {reason}"
    )]
    Reference {
        id: String,
        name: String,
        version: String,
        reason: String,
    },
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OsvFile {
    Many(Vec<OsvRecord>),
    One(Box<OsvRecord>),
}

#[derive(Deserialize)]
struct OsvRecord {
    id: String,
    #[serde(default)]
    summary: Option<String>,
    #[serde(default)]
    details: Option<String>,
    modified: String,
    #[serde(default)]
    withdrawn: Option<String>,
    #[serde(default)]
    affected: Vec<OsvAffected>,
}

#[derive(Deserialize)]
struct OsvAffected {
    package: Option<OsvPackage>,
    #[serde(default)]
    versions: Vec<String>,
}

#[derive(Deserialize)]
struct OsvPackage {
    name: String,
}

/// What an OSV file yields: the (advisory, entry) pairs to store, and the ids of records
/// that name no explicit version (ranges only) or were withdrawn.
#[derive(Debug, Default)]
pub struct ParsedAdvisories {
    pub matches: Vec<Advisory>,
    pub without_versions: Vec<String>,
    pub withdrawn: Vec<String>,
}

/// Reads an OSV file: one record, or a JSON list of records.
pub fn parse_osv(text: &str) -> Result<ParsedAdvisories, AdvisoryError> {
    let records = match serde_json::from_str(text).map_err(AdvisoryError::Json)? {
        OsvFile::Many(records) => records,
        OsvFile::One(record) => vec![*record],
    };
    let mut parsed = ParsedAdvisories::default();
    for record in records {
        if record.withdrawn.is_some() {
            parsed.withdrawn.push(record.id);
            continue;
        }
        let summary = record
            .summary
            .or(record.details)
            .unwrap_or_default()
            .lines()
            .next()
            .unwrap_or_default()
            .to_string();
        let before = parsed.matches.len();
        for affected in &record.affected {
            let Some(package) = &affected.package else {
                continue;
            };
            for version in &affected.versions {
                let reference = format!("{}@{version}", package.name)
                    .parse::<MirrorRef>()
                    .map_err(|e| AdvisoryError::Reference {
                        id: record.id.clone(),
                        name: package.name.clone(),
                        version: version.clone(),
                        reason: e.to_string(),
                    })?;
                parsed.matches.push(Advisory {
                    id: record.id.clone(),
                    reference,
                    summary: summary.clone(),
                    modified: record.modified.clone(),
                });
            }
        }
        if parsed.matches.len() == before {
            parsed.without_versions.push(record.id);
        }
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_versions_become_entries_and_ranges_only_records_are_reported() {
        let text = r#"[
          {"id": "OSV-2026-1", "summary": "heap overflow", "modified": "2026-11-01T00:00:00Z",
           "affected": [{"package": {"ecosystem": "Debian", "name": "zlib"}, "versions": ["1.2.13", "1.3"]}]},
          {"id": "OSV-2026-2", "modified": "2026-11-02T00:00:00Z",
           "affected": [{"package": {"name": "openssl"}, "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}]}]}]},
          {"id": "OSV-2026-3", "modified": "2026-11-03T00:00:00Z", "withdrawn": "2026-11-04T00:00:00Z",
           "affected": [{"package": {"name": "zlib"}, "versions": ["1.3"]}]}
        ]"#;
        let parsed = parse_osv(text).unwrap();
        let refs: Vec<String> = parsed
            .matches
            .iter()
            .map(|a| a.reference.to_string())
            .collect();
        assert_eq!(refs, ["zlib@1.2.13", "zlib@1.3"]);
        assert_eq!(parsed.matches[0].summary, "heap overflow");
        assert_eq!(parsed.without_versions, ["OSV-2026-2"]);
        assert_eq!(parsed.withdrawn, ["OSV-2026-3"]);
    }

    #[test]
    fn a_single_record_is_read_and_garbage_is_refused() {
        let one = r#"{"id": "X-1", "modified": "2026-01-01T00:00:00Z", "affected": [{"package": {"name": "lib"}, "versions": ["1"]}]}"#;
        assert_eq!(parse_osv(one).unwrap().matches.len(), 1);
        assert!(matches!(
            parse_osv("{\"nope\": 1}"),
            Err(AdvisoryError::Json(_))
        ));
    }
}
