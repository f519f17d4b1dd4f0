//! The SLSA Verification Summary Attestation v1
//! (<https://slsa.dev/spec/v1.0/verification_summary>): one small signed statement saying that
//! a verifier checked an artifact against a policy, and with what result, so a consumer
//! downstream trusts the verifier's key instead of redoing the check.
//!
//! The statement is signed with [`crate::sign_statement`] (DSSE, `application/vnd.in-toto+json`)
//! and checked with [`verify_vsa`], which makes the same envelope checks as
//! [`crate::verify_provenance`]: signature first, then payload type, statement type, predicate
//! type and subject.

use std::collections::BTreeMap;

use kiln_core::Sha256Digest;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::evaluate::PolicyReport;
use super::parse::VerifyPolicy;
use crate::dsse::{self, DsseError, Envelope};
use crate::intoto::{self, DigestSet, ResourceDescriptor, Statement};
use crate::keys::PublicKey;

/// The `predicateType` of a SLSA Verification Summary Attestation v1.
pub const VSA_PREDICATE_TYPE: &str = "https://slsa.dev/verification_summary/v1";

/// The SLSA version the summary's levels refer to.
const SLSA_VERSION: &str = "1.0";

/// The VSA v1 predicate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerificationSummary {
    pub verifier: Verifier,
    #[serde(with = "time::serde::rfc3339")]
    pub time_verified: OffsetDateTime,
    pub resource_uri: String,
    pub policy: ResourceDescriptor,
    #[serde(default)]
    pub input_attestations: Vec<ResourceDescriptor>,
    pub verification_result: VerificationResult,
    pub verified_levels: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dependency_levels: BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slsa_version: Option<String>,
}

/// Who verified.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verifier {
    pub id: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub version: BTreeMap<String, String>,
}

/// `PASSED` or `FAILED`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum VerificationResult {
    Passed,
    Failed,
}

/// What the verifier passes in besides the policy and its report.
#[derive(Clone, Debug)]
pub struct VsaRequest<'a> {
    /// The verifier's identity, e.g. `https://kiln.dev/verifiers/policy/v1`.
    pub verifier_id: &'a str,
    /// The kiln version, recorded as `verifier.version.kiln`.
    pub verifier_version: Option<&'a str>,
    pub time_verified: OffsetDateTime,
    /// The artifact's name as the VSA subject, and the URI the consumer asked about.
    pub artifact_name: &'a str,
    pub artifact: Sha256Digest,
    pub resource_uri: &'a str,
    /// The policy's URI when the policy gives none (e.g. `file:verify-policy.yaml`).
    pub default_policy_uri: &'a str,
    /// The provenance file the check read: its URI and the SHA-256 of its bytes.
    pub input_uri: &'a str,
    pub input_sha256: Sha256Digest,
}

/// Builds the VSA statement for a finished check.
///
/// `verifiedLevels` is `["FAILED"]` when the check failed. When it passed, it is the SLSA
/// Build level the policy assigns to its trusted builder (`builder.slsa_build_level`), or
/// `SLSA_BUILD_LEVEL_1` when the policy states none: a verified, signed provenance is all this
/// verifier observed itself; higher levels are properties of the builder that only the
/// consumer's trust in it can supply.
pub fn build_vsa(
    req: &VsaRequest<'_>,
    policy: &VerifyPolicy,
    report: &PolicyReport,
) -> Statement<VerificationSummary> {
    let passed = report.passed();
    let level = policy.slsa_build_level().unwrap_or(1);
    Statement {
        statement_type: intoto::STATEMENT_TYPE.to_owned(),
        subject: vec![ResourceDescriptor {
            name: Some(req.artifact_name.to_owned()),
            digest: DigestSet::sha256(req.artifact),
            ..Default::default()
        }],
        predicate_type: VSA_PREDICATE_TYPE.to_owned(),
        predicate: VerificationSummary {
            verifier: Verifier {
                id: req.verifier_id.to_owned(),
                version: req
                    .verifier_version
                    .iter()
                    .map(|v| ("kiln".to_owned(), (*v).to_owned()))
                    .collect(),
            },
            time_verified: req.time_verified.to_offset(time::UtcOffset::UTC),
            resource_uri: req.resource_uri.to_owned(),
            policy: ResourceDescriptor {
                uri: Some(policy.uri().unwrap_or(req.default_policy_uri).to_owned()),
                digest: DigestSet::sha256(policy.sha256()),
                ..Default::default()
            },
            input_attestations: vec![ResourceDescriptor {
                uri: Some(req.input_uri.to_owned()),
                digest: DigestSet::sha256(req.input_sha256),
                ..Default::default()
            }],
            verification_result: if passed {
                VerificationResult::Passed
            } else {
                VerificationResult::Failed
            },
            verified_levels: vec![if passed {
                format!("SLSA_BUILD_LEVEL_{level}")
            } else {
                "FAILED".to_owned()
            }],
            dependency_levels: BTreeMap::new(),
            slsa_version: Some(SLSA_VERSION.to_owned()),
        },
    }
}

/// Why a VSA file does not vouch for an artifact.
#[derive(Debug, thiserror::Error)]
pub enum VsaError {
    #[error("the VSA file holds no envelope")]
    Empty,
    #[error("not a DSSE JSON envelope")]
    Envelope(#[source] serde_json::Error),
    #[error("signature invalid: {0}")]
    Signature(#[source] DsseError),
    #[error("payloadType is {found:?}, expected {:?}", intoto::PAYLOAD_TYPE)]
    PayloadType { found: String },
    #[error("the payload is not an in-toto statement with a VSA v1 predicate")]
    Statement(#[source] serde_json::Error),
    #[error("statement _type is {found:?}, expected {:?}", intoto::STATEMENT_TYPE)]
    StatementType { found: String },
    #[error("predicateType is {found:?}, expected {VSA_PREDICATE_TYPE:?}")]
    PredicateType { found: String },
    #[error("artifact sha256:{digest} is not a subject of this VSA")]
    NotASubject { digest: Sha256Digest },
}

/// Checks the first envelope of `jsonl` (a `.intoto.jsonl` file holding a VSA): a signature
/// under `key` first, then the types, then that `artifact` is a subject. Returns the
/// authenticated statement; whether its result is `PASSED` is the caller's to read.
pub fn verify_vsa(
    jsonl: &str,
    key: &PublicKey,
    artifact: Sha256Digest,
) -> Result<Statement<VerificationSummary>, VsaError> {
    let line = jsonl
        .lines()
        .find(|l| !l.trim().is_empty())
        .ok_or(VsaError::Empty)?;
    let env: Envelope = serde_json::from_str(line).map_err(VsaError::Envelope)?;
    let payload = dsse::verify(&env, key).map_err(VsaError::Signature)?;
    if env.payload_type != intoto::PAYLOAD_TYPE {
        return Err(VsaError::PayloadType {
            found: env.payload_type.clone(),
        });
    }
    let statement: Statement<serde_json::Value> =
        serde_json::from_slice(payload).map_err(VsaError::Statement)?;
    if statement.statement_type != intoto::STATEMENT_TYPE {
        return Err(VsaError::StatementType {
            found: statement.statement_type,
        });
    }
    if statement.predicate_type != VSA_PREDICATE_TYPE {
        return Err(VsaError::PredicateType {
            found: statement.predicate_type,
        });
    }
    let predicate: VerificationSummary =
        serde_json::from_value(statement.predicate).map_err(VsaError::Statement)?;
    if !statement
        .subject
        .iter()
        .any(|s| s.digest.sha256 == Some(artifact))
    {
        return Err(VsaError::NotASubject { digest: artifact });
    }
    Ok(Statement {
        statement_type: statement.statement_type,
        subject: statement.subject,
        predicate_type: statement.predicate_type,
        predicate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predicate_serialises_with_the_spec_field_names() {
        let p = VerificationSummary {
            verifier: Verifier {
                id: "https://kiln.dev/verifiers/policy/v1".into(),
                version: BTreeMap::new(),
            },
            time_verified: time::macros::datetime!(2026-03-01 00:00:00 UTC),
            resource_uri: "file:hello".into(),
            policy: ResourceDescriptor::default(),
            input_attestations: vec![],
            verification_result: VerificationResult::Passed,
            verified_levels: vec!["SLSA_BUILD_LEVEL_1".into()],
            dependency_levels: BTreeMap::new(),
            slsa_version: Some("1.0".into()),
        };
        let v = serde_json::to_value(&p).unwrap();
        for field in [
            "verifier",
            "timeVerified",
            "resourceUri",
            "policy",
            "inputAttestations",
            "verificationResult",
            "verifiedLevels",
            "slsaVersion",
        ] {
            assert!(v.get(field).is_some(), "{field} missing: {v}");
        }
        assert_eq!(v["verificationResult"], "PASSED");
        assert_eq!(v["timeVerified"], "2026-03-01T00:00:00Z");
    }
}
