//! The signed run attestation of every finished run — succeeded, failed or cancelled —
//! (`run.intoto.jsonl`, predicate `https://kiln.dev/attestations/run/v1`, see
//! docs/run-attestation.md): built from what the state recorded about the run's steps, signed
//! with the provenance key, kept as a blob and named on the run's row.
//!
//! Provenance ([`crate::publish`]) only vouches for artifacts of successful steps; this is the
//! evidence reviewers need when a run did not succeed.

use kiln_attest::keys::KeyPair;
use kiln_attest::{RunAttestationRequest, RunOutcome, StepInput, StepOutcome};
use kiln_core::Sha256Digest;
use kiln_mirror::BlobStore;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::publish::BUILDER_ID;
use crate::run::AcceptedRun;
use crate::state::{State, StateError};

/// Why a run attestation could not be made.
#[derive(Debug, thiserror::Error)]
pub enum RunAttestationFailure {
    #[error("run {run}: no such run")]
    UnknownRun { run: String },
    #[error("run {run}: still running; a run attestation is made when it finishes")]
    Running { run: String },
    #[error("run {run}: cannot sign the run attestation")]
    Sign {
        run: String,
        #[source]
        source: kiln_attest::RunAttestationError,
    },
    #[error("run {run}: cannot store the run attestation")]
    Store {
        run: String,
        #[source]
        source: kiln_mirror::StoreError,
    },
    #[error(transparent)]
    State(#[from] StateError),
}

/// A stored run attestation.
#[derive(Clone, Debug)]
pub struct RunAttestation {
    /// The `run.intoto.jsonl` content: one DSSE envelope, one line.
    pub jsonl: String,
    /// Its blob digest in the store.
    pub sha256: Sha256Digest,
    pub outcome: RunOutcome,
}

fn step_outcome(state: &str) -> StepOutcome {
    match state {
        "succeeded" => StepOutcome::Succeeded,
        "failed" => StepOutcome::Failed,
        "skipped" => StepOutcome::Skipped,
        "cancelled" => StepOutcome::Cancelled,
        _ => StepOutcome::Pending,
    }
}

/// Builds, signs and stores the run attestation of the finished run `run`, and records its
/// digest on the run ([`State::set_run_attestation`]). Call it after the run's end is
/// recorded ([`State::finish_run`] or [`State::cancel_run`]); making it again replaces it.
pub async fn attest_run(
    state: &State,
    store: &BlobStore,
    run: &AcceptedRun,
    key: &KeyPair,
    now: OffsetDateTime,
) -> Result<RunAttestation, RunAttestationFailure> {
    let detail =
        state
            .run_detail(&run.id)
            .await?
            .ok_or_else(|| RunAttestationFailure::UnknownRun {
                run: run.id.clone(),
            })?;
    let outcome = match detail.state.as_str() {
        "succeeded" => RunOutcome::Succeeded,
        "failed" => RunOutcome::Failed,
        "cancelled" => RunOutcome::Cancelled,
        _ => {
            return Err(RunAttestationFailure::Running {
                run: run.id.clone(),
            });
        }
    };
    let finished_on = detail
        .finished_at
        .as_deref()
        .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
        .unwrap_or(now);
    let request = RunAttestationRequest {
        run_id: &run.id,
        pipeline_name: run.pipeline.name(),
        pipeline_sha256: run.source.sha256,
        outcome,
        started_on: run.started_at,
        finished_on,
        builder_id: BUILDER_ID,
        steps: detail
            .steps
            .iter()
            .map(|s| StepInput {
                name: &s.name,
                outcome: step_outcome(&s.state),
                record: s.record.as_ref(),
                reason: if s.record.is_none() {
                    s.reason.as_deref()
                } else {
                    None
                },
            })
            .collect(),
    };
    let jsonl = kiln_attest::sign_run_attestation(&request, key).map_err(|source| {
        RunAttestationFailure::Sign {
            run: run.id.clone(),
            source,
        }
    })?;
    let stored =
        store
            .put_reader(jsonl.as_bytes())
            .map_err(|source| RunAttestationFailure::Store {
                run: run.id.clone(),
                source,
            })?;
    state.set_run_attestation(&run.id, &stored.sha256).await?;
    tracing::info!(run = %run.id, sha256 = %stored.sha256, state = ?outcome, "run attestation signed");
    Ok(RunAttestation {
        jsonl,
        sha256: stored.sha256,
        outcome,
    })
}
