//! Accepting a run: resolve every mirror reference of a validated pipeline to a digest and
//! record the run, or refuse it and record nothing.

use std::collections::BTreeMap;

use kiln_core::{BlobKind, MirrorInput, MirrorRef, Sha256Digest};
use kiln_pipelines::Pipeline;
use time::OffsetDateTime;

use crate::state::{MirrorEntry, NewRun, NewStep, State, StateError, Submission};

/// Why a pipeline's run was refused at acceptance.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    #[error(
        "{role} {reference} is not in the mirror (add it with `kiln mirror add` or `kiln mirror import-rootfs`)"
    )]
    UnknownEntry { role: String, reference: MirrorRef },
    #[error(
        "rootfs {reference} is a single file; a rootfs must be a tree (use `kiln mirror import-rootfs`)"
    )]
    RootfsNotTree { reference: MirrorRef },
    #[error(
        "input {input}: {reference} has sha256 {actual} in the mirror, but the pipeline asserts {asserted}"
    )]
    DigestMismatch {
        input: String,
        reference: MirrorRef,
        actual: Sha256Digest,
        asserted: Sha256Digest,
    },
    #[error("{role} {reference}: blob {sha256} is catalogued but missing from the store")]
    MissingBlob {
        role: String,
        reference: MirrorRef,
        sha256: Sha256Digest,
    },
    #[error(transparent)]
    LocalLabel(#[from] LocalLabelError),
    #[error(
        "{role} {reference} was revoked at {revoked_at} ({reason}); pin another version (`kiln mirror show {reference}` has the evidence)"
    )]
    Revoked {
        role: String,
        reference: MirrorRef,
        reason: String,
        revoked_at: String,
    },
    #[error(transparent)]
    State(#[from] StateError),
}

/// A step requires a label the machine `kiln run` runs on does not offer.
#[derive(Debug, thiserror::Error)]
#[error(
    "step {step} requires {key}={value}, but `kiln run` runs every step on this machine, which offers {offered}; submit the pipeline to a controller with such a worker (`kiln submit`)"
)]
pub struct LocalLabelError {
    step: String,
    key: String,
    value: String,
    offered: String,
}

/// The submitted pipeline file, as provenance names it.
#[derive(Clone, Debug)]
pub struct PipelineSource {
    /// The file name the user gave.
    pub file: String,
    pub sha256: Sha256Digest,
}

/// A run that has been accepted: its id and every mirror reference pinned to a digest.
#[derive(Clone, Debug)]
pub struct AcceptedRun {
    /// A UUID v7: sorts by start time.
    pub id: String,
    pub pipeline: Pipeline,
    pub source: PipelineSource,
    pub rootfs: MirrorInput,
    pub inputs: BTreeMap<String, MirrorInput>,
    pub started_at: OffsetDateTime,
}

fn to_input(entry: MirrorEntry) -> MirrorInput {
    MirrorInput {
        reference: entry.reference,
        sha256: entry.sha256,
        kind: entry.kind,
    }
}

async fn resolve(
    state: &State,
    contains: &(dyn Fn(&Sha256Digest) -> bool + Sync),
    role: &str,
    reference: &MirrorRef,
) -> Result<MirrorInput, AcceptError> {
    let entry = state
        .mirror_entry(reference)
        .await?
        .ok_or_else(|| AcceptError::UnknownEntry {
            role: role.to_owned(),
            reference: reference.clone(),
        })?;
    if let Some(revoked) = state.revocation(reference).await? {
        return Err(AcceptError::Revoked {
            role: role.to_owned(),
            reference: reference.clone(),
            reason: revoked.reason,
            revoked_at: revoked.revoked_at,
        });
    }
    if !contains(&entry.sha256) {
        return Err(AcceptError::MissingBlob {
            role: role.to_owned(),
            reference: reference.clone(),
            sha256: entry.sha256,
        });
    }
    Ok(to_input(entry))
}

/// How an accepted run's steps will be dispatched.
#[derive(Clone, Copy, Debug)]
pub enum Dispatch<'a> {
    /// The caller drives the steps itself ([`crate::schedule::drive`], the all-in-one mode).
    Local,
    /// The daemon leases the steps to workers; the pipeline text is kept so that a restarted
    /// daemon can resume the run.
    Leased {
        pipeline_yaml: &'a str,
        request_id: Option<&'a str>,
    },
}

/// Resolves and records a run whose steps the caller drives. On any error nothing has been
/// written.
pub async fn accept(
    state: &State,
    contains: &(dyn Fn(&Sha256Digest) -> bool + Sync),
    pipeline: Pipeline,
    source: PipelineSource,
) -> Result<AcceptedRun, AcceptError> {
    check_local_labels(&pipeline)?;
    accept_with(state, contains, pipeline, source, Dispatch::Local).await
}

/// Refuses a pipeline with a step that requires a label this machine does not offer.
fn check_local_labels(pipeline: &Pipeline) -> Result<(), LocalLabelError> {
    let offered = kiln_core::labels::host_labels();
    for step in pipeline.steps() {
        for (key, value) in step.requires() {
            if offered.get(key) != Some(value) {
                return Err(LocalLabelError {
                    step: step.name().to_owned(),
                    key: key.clone(),
                    value: value.clone(),
                    offered: offered
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
        }
    }
    Ok(())
}

/// Resolves and records a run dispatched as `dispatch` says. On any error nothing has been
/// written; a repeated request id is [`StateError::DuplicateRequest`].
pub async fn accept_with(
    state: &State,
    contains: &(dyn Fn(&Sha256Digest) -> bool + Sync),
    pipeline: Pipeline,
    source: PipelineSource,
    dispatch: Dispatch<'_>,
) -> Result<AcceptedRun, AcceptError> {
    let rootfs = resolve(state, contains, "rootfs", pipeline.rootfs()).await?;
    if rootfs.kind != BlobKind::Tree {
        return Err(AcceptError::RootfsNotTree {
            reference: rootfs.reference,
        });
    }
    let mut inputs = BTreeMap::new();
    for (name, decl) in pipeline.inputs() {
        let input = resolve(state, contains, &format!("input {name}"), &decl.mirror).await?;
        if let Some(asserted) = decl.sha256
            && asserted != input.sha256
        {
            return Err(AcceptError::DigestMismatch {
                input: name.clone(),
                reference: input.reference,
                actual: input.sha256,
                asserted,
            });
        }
        inputs.insert(name.clone(), input);
    }
    let id = uuid::Uuid::now_v7().to_string();
    let started_at = OffsetDateTime::now_utc();
    let steps = pipeline
        .steps()
        .iter()
        .map(|s| NewStep {
            name: s.name(),
            needs: s.needs(),
            requires: s.requires(),
        })
        .collect();
    let submission = match dispatch {
        Dispatch::Local => None,
        Dispatch::Leased {
            pipeline_yaml,
            request_id,
        } => Some(Submission {
            pipeline_yaml,
            resolution_json: crate::state::resolution_json(&rootfs, &inputs),
            request_id,
        }),
    };
    state
        .create_run(&NewRun {
            id: &id,
            pipeline_name: pipeline.name(),
            pipeline_file: &source.file,
            pipeline_sha256: &source.sha256,
            started_at,
            steps,
            submission,
        })
        .await?;
    Ok(AcceptedRun {
        id,
        pipeline,
        source,
        rootfs,
        inputs,
        started_at,
    })
}
