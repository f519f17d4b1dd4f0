//! The admission evidence kept beyond the digest, signature and rule columns of
//! `mirror_evidence`: one versioned JSON document per entry (column `details`, migration 0012).
//!
//! It is a stored format: fields are only ever added, each optional, so a document written by
//! an older kiln reads back unchanged.

use serde::{Deserialize, Serialize};

/// The document's version; readers refuse a newer one rather than misread it.
pub const EVIDENCE_VERSION: u32 = 1;

/// Everything an entry was admitted on besides the `mirror_evidence` columns.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceDetails {
    pub version: u32,
    /// Fetched by `kiln mirror fetch`: from where, and when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetched: Option<Fetched>,
    /// The signature came in a Sigstore bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<BundleEvidence>,
    /// The verifying key came in an X.509 certificate (`--certificate`): who it names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertificateEvidence>,
    /// The bytes were built by kiln: the provenance they were admitted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<ProvenanceEvidence>,
    /// The entry's license, where known, and what the policy said of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<LicenseEvidence>,
    /// For a root filesystem built from Debian packages: each package in it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<PackageRecord>,
}

impl EvidenceDetails {
    /// An empty document of the current version.
    pub fn new() -> Self {
        Self {
            version: EVIDENCE_VERSION,
            ..Self::default()
        }
    }

    /// Whether there is nothing worth storing.
    pub fn is_empty(&self) -> bool {
        *self
            == Self {
                version: self.version,
                ..Self::default()
            }
    }
}

/// Where `kiln mirror fetch` took the bytes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fetched {
    pub url: String,
    /// RFC 3339.
    pub at: String,
}

/// A Sigstore bundle's facts that are not already in the signature columns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleEvidence {
    pub media_type: String,
    /// The bundle's file digest, so the bundle can be matched to the entry later.
    pub sha256: String,
    /// Transparency log entries the bundle carried. They are kept in the bundle but not
    /// verified: kiln admits key-signed bundles offline, without a log's trust root.
    pub tlog_entries: usize,
}

/// The signer's certificate: its identities, for the record. Trust is in its key (the policy's
/// `signers:`), not in its issuer: kiln holds no CA roots for signers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateEvidence {
    pub subject: String,
    pub issuer: String,
    /// Subject alternative names: `email:…`, `uri:…`, `dns:…`.
    pub identities: Vec<String>,
    /// RFC 3339.
    pub not_after: String,
    /// The certificate's DER, hashed.
    pub sha256: String,
}

/// The kiln provenance an entry built by kiln was admitted on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvenanceEvidence {
    /// The provenance document (`.intoto.jsonl`), kept in the store under this digest.
    pub document_sha256: String,
    /// The trusted builder key that verified it, and the policy's name for it.
    pub builder_keyid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builder_name: Option<String>,
    /// That key's DER SubjectPublicKeyInfo in hex, so the chain can be re-verified later
    /// (`kiln mirror why`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builder_spki: Option<String>,
    /// The build's invocation id (the run), as the provenance states it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invocation: Option<String>,
    /// Each mirror entry the build resolved, found in this mirror with the same digest.
    pub dependencies: Vec<DependencyRecord>,
}

/// One dependency of a kiln-built entry, checked to be in the mirror.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DependencyRecord {
    pub entry: String,
    pub sha256: String,
}

/// An entry's license and the decision on it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LicenseEvidence {
    /// An SPDX expression, as declared (`--license`) or found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
    /// Who said so: `operator` (`--license`) or `debian copyright files` (a rootfs).
    pub source: String,
    /// What the policy decided, e.g. `allowed by rule 2` or `no license rule`.
    pub decision: String,
}

/// One Debian package of a root filesystem.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageRecord {
    pub name: String,
    pub version: String,
    pub architecture: String,
    /// The SPDX expression of the package's copyright file (`Files: *`); none when the file is
    /// missing, not machine-readable, or names a license kiln does not recognise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_without_the_newer_fields_reads_back() {
        let old = r#"{"version":1,"fetched":{"url":"https://x/y","at":"2026-11-22T00:00:00Z"}}"#;
        let details: EvidenceDetails = serde_json::from_str(old).unwrap();
        assert_eq!(details.fetched.unwrap().url, "https://x/y");
        assert!(details.packages.is_empty());
    }

    #[test]
    fn an_empty_document_is_empty() {
        assert!(EvidenceDetails::new().is_empty());
        let mut d = EvidenceDetails::new();
        d.packages.push(PackageRecord {
            name: "bash".into(),
            version: "5.2".into(),
            architecture: "amd64".into(),
            license: None,
        });
        assert!(!d.is_empty());
    }
}
