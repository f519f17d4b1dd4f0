//! The two feeds a policy check reads besides the provenance: a revocation list (kiln's own
//! JSON format) and vulnerability advisories (OSV JSON, <https://ossf.github.io/osv-schema/>).
//!
//! Both are parsed into checked types before any rule looks at them.

use std::path::Path;

use kiln_core::Sha256Digest;
use serde::Deserialize;
use time::OffsetDateTime;

/// The largest feed file accepted, in bytes.
const MAX_FEED_BYTES: usize = 64 * 1024 * 1024;

/// Why a feed file cannot be used. Messages start with `FILE:LINE:COL:` where known.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("{file}: larger than 64 MiB")]
    TooLarge { file: String },
    #[error("{file}:{line}:{column}: {message}")]
    Invalid {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{file}: entry {index}: {message}")]
    Entry {
        file: String,
        index: usize,
        message: String,
    },
}

/// One revoked dependency: `name` (`NAME@VERSION`) with that exact content.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revocation {
    pub name: String,
    pub sha256: Sha256Digest,
    pub reason: String,
    #[serde(with = "time::serde::rfc3339")]
    pub revoked_at: OffsetDateTime,
}

/// A checked revocation list: `[{"name", "sha256", "reason", "revoked_at"}, …]`.
#[derive(Clone, Debug, Default)]
pub struct RevocationList {
    pub(super) entries: Vec<Revocation>,
}

impl RevocationList {
    /// Parses a revocation list; `file` names it in errors.
    pub fn parse(file: &Path, text: &str) -> Result<Self, FeedError> {
        let file = file.display().to_string();
        let entries: Vec<Revocation> = json(&file, text)?;
        for (i, e) in entries.iter().enumerate() {
            let ok = e
                .name
                .split_once('@')
                .is_some_and(|(n, v)| !n.is_empty() && !v.is_empty());
            if !ok {
                return Err(FeedError::Entry {
                    file,
                    index: i + 1,
                    message: format!("name {:?} is not NAME@VERSION", e.name),
                });
            }
        }
        Ok(Self { entries })
    }

    /// The entries, in file order.
    pub fn entries(&self) -> &[Revocation] {
        &self.entries
    }
}

/// One OSV record, reduced to what kiln matches on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advisory {
    pub id: String,
    pub summary: Option<String>,
    pub affected: Vec<AffectedPackage>,
}

/// One `affected[]` entry of an OSV record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AffectedPackage {
    /// `package.name`, compared with the dependency's `NAME`.
    pub name: String,
    /// `versions`: the enumerated affected versions, compared with `VERSION` exactly.
    pub versions: Vec<String>,
    /// Whether the entry also gives `ranges`, which kiln does not evaluate.
    pub has_ranges: bool,
}

/// Checked OSV advisories: withdrawn records are dropped.
#[derive(Clone, Debug, Default)]
pub struct Advisories {
    pub(super) records: Vec<Advisory>,
}

// OSV has many more fields; unknown ones are ignored, as the schema lets producers add fields.
#[derive(Deserialize)]
struct RawOsv {
    id: String,
    #[serde(default)]
    summary: Option<String>,
    #[serde(default)]
    withdrawn: Option<String>,
    #[serde(default)]
    affected: Vec<RawAffected>,
}

#[derive(Deserialize)]
struct RawAffected {
    #[serde(default)]
    package: Option<RawPackage>,
    #[serde(default)]
    versions: Vec<String>,
    #[serde(default)]
    ranges: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawPackage {
    name: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    Many(Vec<RawOsv>),
    One(Box<RawOsv>),
}

impl Advisories {
    /// Parses OSV JSON: one record, or a list of records; `file` names it in errors.
    pub fn parse(file: &Path, text: &str) -> Result<Self, FeedError> {
        let file = file.display().to_string();
        // Decode as a value first so a shape error still has a position.
        let value: serde_json::Value = json(&file, text)?;
        let raw: OneOrMany = serde_json::from_value(value).map_err(|e| FeedError::Invalid {
            file: file.clone(),
            line: 1,
            column: 1,
            message: format!("not an OSV record or a list of OSV records: {e}"),
        })?;
        let raw = match raw {
            OneOrMany::Many(v) => v,
            OneOrMany::One(r) => vec![*r],
        };
        let records = raw
            .into_iter()
            .filter(|r| r.withdrawn.is_none())
            .map(|r| Advisory {
                id: r.id,
                summary: r.summary,
                affected: r
                    .affected
                    .into_iter()
                    .filter_map(|a| {
                        Some(AffectedPackage {
                            name: a.package?.name,
                            versions: a.versions,
                            has_ranges: !a.ranges.is_empty(),
                        })
                    })
                    .collect(),
            })
            .collect();
        Ok(Self { records })
    }

    /// The records that are not withdrawn, in file order.
    pub fn records(&self) -> &[Advisory] {
        &self.records
    }
}

fn json<T: serde::de::DeserializeOwned>(file: &str, text: &str) -> Result<T, FeedError> {
    if text.len() > MAX_FEED_BYTES {
        return Err(FeedError::TooLarge {
            file: file.to_owned(),
        });
    }
    serde_json::from_str(text).map_err(|e| FeedError::Invalid {
        file: file.to_owned(),
        line: e.line().max(1),
        column: e.column().max(1),
        message: strip_position(&e.to_string()),
    })
}

/// serde_json appends " at line L column C"; the position is already in front.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revocations_parse_and_bad_ones_name_file_and_position() {
        let d = Sha256Digest::of(b"x");
        let ok = format!(
            r#"[{{"name":"words@1","sha256":"{d}","reason":"key leak","revoked_at":"2026-02-01T00:00:00Z"}}]"#
        );
        let list = RevocationList::parse(Path::new("rev.json"), &ok).unwrap();
        assert_eq!(list.entries().len(), 1);
        let err = RevocationList::parse(
            Path::new("rev.json"),
            &ok.replace("revoked_at", "revokedAt"),
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("rev.json:1:"), "{err}");
        let err = RevocationList::parse(Path::new("rev.json"), &ok.replace("words@1", "words"))
            .unwrap_err();
        assert!(err.to_string().contains("NAME@VERSION"), "{err}");
    }

    #[test]
    fn osv_takes_one_record_or_a_list_and_drops_withdrawn_ones() {
        let rec = r#"{"id":"OSV-1","affected":[{"package":{"ecosystem":"x","name":"words"},"versions":["1"]}]}"#;
        let one = Advisories::parse(Path::new("a.json"), rec).unwrap();
        assert_eq!(one.records().len(), 1);
        assert_eq!(one.records()[0].affected[0].versions, ["1"]);
        let withdrawn = rec.replace(
            r#""id":"OSV-1""#,
            r#""id":"OSV-2","withdrawn":"2026-01-01T00:00:00Z""#,
        );
        let many = Advisories::parse(Path::new("a.json"), &format!("[{rec},{withdrawn}]")).unwrap();
        assert_eq!(many.records().len(), 1);
        assert!(Advisories::parse(Path::new("a.json"), "[1]").is_err());
    }
}
