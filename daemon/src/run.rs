//! Accepting a run: resolve every mirror reference of a validated pipeline to a digest and
//! record the run, or refuse it and record nothing.

use std::collections::BTreeMap;

use kiln_core::{BlobKind, GitInput, MirrorInput, MirrorRef, Sha256Digest};
use kiln_mirror::BlobStore;
use kiln_pipelines::{Pipeline, SourceDecl};
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
    #[error(
        "source {source_name}: there is no git mirror {git} (add it with `kiln mirror git add PATH --name {git}`)"
    )]
    UnknownGitMirror { source_name: String, git: String },
    /// The commit is missing, forged, unreachable, not at the pipeline's ref, or unsigned.
    /// The git error is part of the one-line message rather than a separate cause.
    #[error("source {source_name}: {err}")]
    Git {
        source_name: String,
        err: kiln_mirror::git::GitError,
    },
    #[error(transparent)]
    State(#[from] StateError),
}

/// Where git sources are resolved: the bare mirrors under `DATA/git` and the store their
/// trees are exported into.
#[derive(Clone, Copy, Debug)]
pub struct GitSources<'a> {
    /// `DATA/git`: one `NAME.git` per git mirror.
    pub dir: &'a std::path::Path,
    pub store: &'a BlobStore,
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
    /// Git sources, each a checked commit with its tree in the store.
    pub sources: BTreeMap<String, GitInput>,
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

/// Checks the pinned commit of source `name` in its git mirror (it exists, its id matches its
/// content, a branch or tag reaches it, the pipeline's `ref` points at it) and exports its tree
/// into the store.
///
/// The git work is synchronous file I/O on the caller's thread.
async fn resolve_source(
    state: &State,
    git: GitSources<'_>,
    name: &str,
    decl: &SourceDecl,
) -> Result<GitInput, AcceptError> {
    let mirror =
        state
            .git_mirror(&decl.git)
            .await?
            .ok_or_else(|| AcceptError::UnknownGitMirror {
                source_name: name.to_owned(),
                git: decl.git.clone(),
            })?;
    let git_error = |err| AcceptError::Git {
        source_name: name.to_owned(),
        err,
    };
    let path = git.dir.join(format!("{}.git", decl.git));
    let checked =
        kiln_mirror::git::check_commit(&path, &decl.git, &decl.commit, decl.git_ref.as_deref())
            .map_err(git_error)?;
    let signer = match &mirror.allowed_signers {
        Some(allowed) => Some(checked.check_signature(allowed).map_err(git_error)?),
        None => None,
    };
    let tree = checked.export(git.store).map_err(git_error)?;
    Ok(GitInput {
        mirror: decl.git.clone(),
        origin: mirror.origin,
        commit: checked.id(),
        git_ref: decl.git_ref.clone(),
        sha256: tree.sha256,
        signer,
    })
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
    git: GitSources<'_>,
    pipeline: Pipeline,
    source: PipelineSource,
) -> Result<AcceptedRun, AcceptError> {
    check_local_labels(&pipeline)?;
    accept_with(state, contains, git, pipeline, source, Dispatch::Local).await
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
    git: GitSources<'_>,
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
    let mut sources = BTreeMap::new();
    for (name, decl) in pipeline.sources() {
        let resolved = resolve_source(state, git, name, decl).await?;
        sources.insert(name.clone(), resolved);
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
            resolution_json: crate::state::resolution_json(&rootfs, &inputs, &sources),
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
        sources,
        started_at,
    })
}
