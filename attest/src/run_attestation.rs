//! The run attestation `run.intoto.jsonl`: a signed in-toto Statement naming how a whole run
//! ended — succeeded, failed or cancelled — and the step records behind it (predicate type
//! `https://kiln.dev/attestations/run/v1`, see docs/run-attestation.md).
//!
//! Provenance only exists for artifacts of successful steps; this statement exists for every
//! run, so a failure, a cancellation or a step stopped at a sandbox limit leaves signed evidence.
//!
//! The subject is the pipeline file that was run (`pipeline:NAME` with its sha256): in-toto
//! requires each subject to carry a digest, and a failed run may have no artifact to name.
//!
//! Verification follows the same order as [`crate::attestation`]: the DSSE signature over the
//! PAE first, then the payload type, then the statement and predicate types; nothing in the
//! payload is read before its signature verifies.

use kiln_core::{ExitRecord, LimitEventRecord, Sha256Digest, StepRecord};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::attestation::{SignError, sign_statement, to_jsonl};
use crate::dsse::{self, DsseError, Envelope};
use crate::intoto::{self, DigestSet, ResourceDescriptor, Statement};
use crate::keys::{KeyId, KeyPair, PublicKey};

/// The `predicateType` of a kiln run attestation.
pub const PREDICATE_TYPE: &str = "https://kiln.dev/attestations/run/v1";

/// The file name a run attestation is written under.
pub const FILE_NAME: &str = "run.intoto.jsonl";

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    Succeeded,
    Failed,
    Cancelled,
}

/// How one step ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepOutcome {
    Succeeded,
    Failed,
    Skipped,
    Cancelled,
    Pending,
}

/// One step of the run, as the caller knows it.
#[derive(Clone, Copy, Debug)]
pub struct StepInput<'a> {
    pub name: &'a str,
    pub outcome: StepOutcome,
    /// The step's record, if it ran.
    pub record: Option<&'a StepRecord>,
    /// Why it was skipped, cancelled or failed, when no record says so.
    pub reason: Option<&'a str>,
}

/// Everything a run attestation is built from.
#[derive(Clone, Debug)]
pub struct RunAttestationRequest<'a> {
    pub run_id: &'a str,
    pub pipeline_name: &'a str,
    pub pipeline_sha256: Sha256Digest,
    pub outcome: RunOutcome,
    pub started_on: OffsetDateTime,
    pub finished_on: OffsetDateTime,
    pub builder_id: &'a str,
    pub steps: Vec<StepInput<'a>>,
}

/// The predicate `https://kiln.dev/attestations/run/v1`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunPredicate {
    pub run: String,
    pub pipeline: PipelineRef,
    pub state: RunOutcome,
    #[serde(with = "time::serde::rfc3339")]
    pub started_on: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub finished_on: OffsetDateTime,
    pub builder: Builder,
    pub steps: Vec<StepEntry>,
}

/// The pipeline file that was run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineRef {
    pub name: String,
    pub sha256: Sha256Digest,
}

/// Who ran it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Builder {
    pub id: String,
}

/// One step's outcome and the record behind it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepEntry {
    pub name: String,
    pub state: StepOutcome,
    /// The record's exit; absent when the step never ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitRecord>,
    /// sha256 of the step record's JSON (`serde_json::to_vec` of the record, as stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_sha256: Option<Sha256Digest>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub limit_events: Vec<LimitEventRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Why a run attestation could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RunAttestationError {
    #[error("step {step}: cannot encode its record as JSON")]
    EncodeRecord {
        step: String,
        #[source]
        err: serde_json::Error,
    },
    #[error(transparent)]
    Sign(SignError),
}

/// The sha256 of a step record's canonical JSON, as named in `recordSha256`.
pub fn record_sha256(record: &StepRecord) -> Result<Sha256Digest, serde_json::Error> {
    Ok(Sha256Digest::of(&serde_json::to_vec(record)?))
}

/// Builds the run attestation statement.
pub fn build_run_statement(
    req: &RunAttestationRequest<'_>,
) -> Result<Statement<RunPredicate>, RunAttestationError> {
    let steps = req
        .steps
        .iter()
        .map(|s| {
            let record_sha256 = s.record.map(record_sha256).transpose().map_err(|err| {
                RunAttestationError::EncodeRecord {
                    step: s.name.to_owned(),
                    err,
                }
            })?;
            Ok(StepEntry {
                name: s.name.to_owned(),
                state: s.outcome,
                exit: s.record.map(|r| r.exit.clone()),
                record_sha256,
                limit_events: s.record.map(|r| r.events.clone()).unwrap_or_default(),
                reason: s.reason.map(str::to_owned),
            })
        })
        .collect::<Result<Vec<_>, RunAttestationError>>()?;
    Ok(Statement {
        statement_type: intoto::STATEMENT_TYPE.into(),
        subject: vec![ResourceDescriptor {
            name: Some(format!("pipeline:{}", req.pipeline_name)),
            digest: DigestSet::sha256(req.pipeline_sha256),
            ..Default::default()
        }],
        predicate_type: PREDICATE_TYPE.into(),
        predicate: RunPredicate {
            run: req.run_id.to_owned(),
            pipeline: PipelineRef {
                name: req.pipeline_name.to_owned(),
                sha256: req.pipeline_sha256,
            },
            state: req.outcome,
            started_on: req.started_on,
            finished_on: req.finished_on,
            builder: Builder {
                id: req.builder_id.to_owned(),
            },
            steps,
        },
    })
}

/// Builds and signs the run attestation; returns the `run.intoto.jsonl` content (one line).
pub fn sign_run_attestation(
    req: &RunAttestationRequest<'_>,
    key: &KeyPair,
) -> Result<String, RunAttestationError> {
    let statement = build_run_statement(req)?;
    let env = sign_statement(&statement, key).map_err(RunAttestationError::Sign)?;
    to_jsonl(&[env]).map_err(RunAttestationError::Sign)
}

/// A run attestation whose signature and types checked out.
#[derive(Clone, Debug)]
pub struct VerifiedRunAttestation {
    pub statement: Statement<RunPredicate>,
    pub keyid: KeyId,
}

/// Why a run attestation was refused.
#[derive(Debug, thiserror::Error)]
pub enum RunVerifyError {
    #[error("the run attestation must hold exactly one envelope")]
    EnvelopeCount,
    #[error("not a DSSE JSON envelope")]
    Envelope(#[source] serde_json::Error),
    #[error("the envelope carries no signatures")]
    NoSignatures,
    #[error("the envelope carries too many signatures ({count})")]
    TooManySignatures { count: usize },
    #[error("no signature verifies under key {keyid}")]
    SignatureInvalid { keyid: KeyId },
    #[error("payload type is {found:?}, expected {expected:?}", expected = intoto::PAYLOAD_TYPE)]
    PayloadType { found: String },
    #[error("statement type is {found:?}, expected {expected:?}", expected = intoto::STATEMENT_TYPE)]
    StatementType { found: String },
    #[error("predicate type is {found:?}, expected {expected:?}", expected = PREDICATE_TYPE)]
    PredicateType { found: String },
    #[error("the statement is not a kiln run attestation")]
    Statement(#[source] serde_json::Error),
}

#[derive(Deserialize)]
struct TypeProbe {
    #[serde(rename = "_type")]
    statement_type: Option<String>,
    #[serde(rename = "predicateType")]
    predicate_type: Option<String>,
}

/// Verifies `run.intoto.jsonl` under `key`: the DSSE signature, then the payload, statement and
/// predicate types, then the predicate's shape.
pub fn verify_run_attestation(
    jsonl: &str,
    key: &PublicKey,
) -> Result<VerifiedRunAttestation, RunVerifyError> {
    let mut lines = jsonl.lines().filter(|l| !l.trim().is_empty());
    let (Some(line), None) = (lines.next(), lines.next()) else {
        return Err(RunVerifyError::EnvelopeCount);
    };
    let env: Envelope = serde_json::from_str(line).map_err(RunVerifyError::Envelope)?;
    let payload = dsse::verify(&env, key).map_err(|e| match e {
        DsseError::NoSignatures => RunVerifyError::NoSignatures,
        DsseError::TooManySignatures { count } => RunVerifyError::TooManySignatures { count },
        DsseError::SignatureInvalid { .. } | DsseError::Sign(_) => {
            RunVerifyError::SignatureInvalid {
                keyid: key.keyid().clone(),
            }
        }
    })?;
    if env.payload_type != intoto::PAYLOAD_TYPE {
        return Err(RunVerifyError::PayloadType {
            found: env.payload_type.clone(),
        });
    }
    let probe: TypeProbe = serde_json::from_slice(payload).map_err(RunVerifyError::Statement)?;
    if probe.statement_type.as_deref() != Some(intoto::STATEMENT_TYPE) {
        return Err(RunVerifyError::StatementType {
            found: probe.statement_type.unwrap_or_default(),
        });
    }
    if probe.predicate_type.as_deref() != Some(PREDICATE_TYPE) {
        return Err(RunVerifyError::PredicateType {
            found: probe.predicate_type.unwrap_or_default(),
        });
    }
    let statement: Statement<RunPredicate> =
        serde_json::from_slice(payload).map_err(RunVerifyError::Statement)?;
    Ok(VerifiedRunAttestation {
        statement,
        keyid: key.keyid().clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provenance::tests as fixtures;

    fn request<'a>(records: &'a [StepRecord]) -> RunAttestationRequest<'a> {
        RunAttestationRequest {
            run_id: "r-1",
            pipeline_name: "hello",
            pipeline_sha256: Sha256Digest::of(b"pipeline"),
            outcome: RunOutcome::Failed,
            started_on: records[0].started_on,
            finished_on: records[0].finished_on,
            builder_id: "https://kiln.dev/builders/local/v1",
            steps: vec![
                StepInput {
                    name: &records[0].step,
                    outcome: StepOutcome::Failed,
                    record: Some(&records[0]),
                    reason: None,
                },
                StepInput {
                    name: "link",
                    outcome: StepOutcome::Skipped,
                    record: None,
                    reason: Some("needs compile, which did not succeed"),
                },
            ],
        }
    }

    fn failing_record() -> StepRecord {
        let mut r = fixtures::three_steps().remove(0);
        r.exit = ExitRecord::Killed {
            reason: "killed: memory limit 64MiB exceeded".into(),
        };
        r.events = vec![LimitEventRecord::MemoryLimit {
            limit_bytes: 64 << 20,
        }];
        r
    }

    #[test]
    fn signed_run_attestation_verifies_and_names_each_step() {
        let records = [failing_record()];
        let key = KeyPair::generate().unwrap();
        let jsonl = sign_run_attestation(&request(&records), &key).unwrap();
        assert_eq!(jsonl.lines().count(), 1);
        let v = verify_run_attestation(&jsonl, key.public_key()).unwrap();
        let p = &v.statement.predicate;
        assert_eq!(p.state, RunOutcome::Failed);
        assert_eq!(
            v.statement.subject[0].name.as_deref(),
            Some("pipeline:hello")
        );
        assert_eq!(
            v.statement.subject[0].digest.sha256,
            Some(Sha256Digest::of(b"pipeline"))
        );
        assert_eq!(p.steps.len(), 2);
        assert_eq!(p.steps[0].state, StepOutcome::Failed);
        assert_eq!(p.steps[0].exit, Some(records[0].exit.clone()));
        assert_eq!(
            p.steps[0].record_sha256,
            Some(Sha256Digest::of(&serde_json::to_vec(&records[0]).unwrap()))
        );
        assert_eq!(p.steps[0].limit_events, records[0].events);
        assert_eq!(p.steps[1].state, StepOutcome::Skipped);
        assert_eq!(p.steps[1].exit, None);
        assert!(p.steps[1].reason.as_deref().unwrap().contains("compile"));
        // The wire names are the documented ones.
        let env: Envelope = serde_json::from_str(jsonl.trim()).unwrap();
        let text = String::from_utf8(env.payload).unwrap();
        for field in [
            "\"recordSha256\"",
            "\"limitEvents\"",
            "\"startedOn\"",
            "\"state\":\"failed\"",
            PREDICATE_TYPE,
        ] {
            assert!(text.contains(field), "{field} missing from {text}");
        }
    }

    #[test]
    fn tampered_payload_is_refused() {
        let records = [failing_record()];
        let key = KeyPair::generate().unwrap();
        let jsonl = sign_run_attestation(&request(&records), &key).unwrap();
        let mut env: Envelope = serde_json::from_str(jsonl.trim()).unwrap();
        let text = String::from_utf8(env.payload.clone()).unwrap();
        let edited = text.replace("\"state\":\"failed\"", "\"state\":\"succeeded\"");
        assert_ne!(edited, text);
        env.payload = edited.into_bytes();
        let jsonl = to_jsonl(&[env]).unwrap();
        let err = verify_run_attestation(&jsonl, key.public_key()).unwrap_err();
        assert!(
            matches!(err, RunVerifyError::SignatureInvalid { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn other_key_is_refused() {
        let records = [failing_record()];
        let key = KeyPair::generate().unwrap();
        let other = KeyPair::generate().unwrap();
        let jsonl = sign_run_attestation(&request(&records), &key).unwrap();
        let err = verify_run_attestation(&jsonl, other.public_key()).unwrap_err();
        assert!(
            matches!(err, RunVerifyError::SignatureInvalid { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn provenance_is_not_accepted_as_a_run_attestation() {
        let steps = fixtures::three_steps();
        let statement = crate::provenance::build_statement(&fixtures::request(&steps)).unwrap();
        let key = KeyPair::generate().unwrap();
        let jsonl = to_jsonl(&[sign_statement(&statement, &key).unwrap()]).unwrap();
        let err = verify_run_attestation(&jsonl, key.public_key()).unwrap_err();
        assert!(
            matches!(err, RunVerifyError::PredicateType { .. }),
            "{err:?}"
        );
        // Correctly signed, wrong payload type.
        let env: Envelope = serde_json::from_str(jsonl.trim()).unwrap();
        let resigned = dsse::sign("application/json", &env.payload, &key).unwrap();
        let err =
            verify_run_attestation(&to_jsonl(&[resigned]).unwrap(), key.public_key()).unwrap_err();
        assert!(matches!(err, RunVerifyError::PayloadType { .. }), "{err:?}");
    }
}
