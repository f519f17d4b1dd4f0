//! Publishing a run's artifacts: for each artifact whose step succeeded, build its SLSA
//! provenance and its SBOMs (SPDX 2.3, CycloneDX 1.6) from the step records that reached it,
//! sign each as an in-toto statement (DSSE, the same key), and keep them.

use std::collections::{BTreeMap, BTreeSet};

use kiln_attest::keys::KeyPair;
use kiln_attest::{BuilderInfo, PipelineParameter, ProvenanceRequest, SbomFiles};
use kiln_core::{Sha256Digest, StepRecord};
use kiln_mirror::BlobStore;
use kiln_pipelines::{Artifact, Pipeline};
use time::OffsetDateTime;

use crate::run::AcceptedRun;
use crate::state::{ArtifactRow, State, StateError};
use crate::steplog::RunLogProofs;

/// The builder identity kiln's all-in-one mode signs as.
pub const BUILDER_ID: &str = "https://kiln.dev/builders/local/v1";

/// Why an artifact could not be published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("artifact {artifact}: step {step} has no output {path}")]
    MissingOutput {
        artifact: String,
        step: String,
        path: String,
    },
    #[error("artifact {artifact}: cannot sign provenance or SBOMs")]
    Sign {
        artifact: String,
        #[source]
        source: SignFailure,
    },
    #[error("artifact {artifact}: cannot store provenance")]
    Store {
        artifact: String,
        #[source]
        source: kiln_mirror::StoreError,
    },
    #[error(transparent)]
    State(#[from] StateError),
}

/// What went wrong while making a signed statement.
#[derive(Debug, thiserror::Error)]
pub enum SignFailure {
    #[error(transparent)]
    Build(kiln_attest::ProvenanceError),
    #[error(transparent)]
    Sign(kiln_attest::SignError),
}

/// An artifact with its signed provenance.
#[derive(Clone, Debug)]
pub struct PublishedArtifact {
    pub name: String,
    pub step: String,
    pub sha256: Sha256Digest,
    pub size: u64,
    pub executable: bool,
    /// The `.intoto.jsonl` content: one DSSE envelope, one line.
    pub provenance: String,
    /// The `.sigstore.json` content: the same envelope in a Sigstore bundle v0.3.
    pub bundle: String,
    /// The `.spdx.json`, `.cdx.json` and their signed `.spdx.intoto.jsonl`,
    /// `.cdx.intoto.jsonl` contents (see docs/sbom.md).
    pub sboms: SbomFiles,
}

/// `step` and every step it transitively needs, as records, in pipeline order.
fn chain<'r>(
    pipeline: &Pipeline,
    step: &str,
    records: &'r BTreeMap<String, StepRecord>,
) -> Vec<&'r StepRecord> {
    let mut reached = BTreeSet::new();
    let mut todo = vec![step.to_owned()];
    while let Some(name) = todo.pop() {
        if reached.insert(name.clone())
            && let Some(s) = pipeline.step(&name)
        {
            todo.extend(s.needs().iter().cloned());
        }
    }
    pipeline
        .steps()
        .iter()
        .filter(|s| reached.contains(s.name()))
        .filter_map(|s| records.get(s.name()))
        .collect()
}

fn publish_one(
    run: &AcceptedRun,
    artifact: &Artifact,
    records: &BTreeMap<String, StepRecord>,
    key: &KeyPair,
    log: Option<&RunLogProofs>,
    store: &BlobStore,
) -> Result<Option<PublishedArtifact>, PublishError> {
    let Some(record) = records.get(artifact.from()).filter(|r| r.exit.success()) else {
        return Ok(None);
    };
    let output = record
        .outputs
        .iter()
        .find(|o| o.path == artifact.path())
        .ok_or_else(|| PublishError::MissingOutput {
            artifact: artifact.name().to_owned(),
            step: artifact.from().to_owned(),
            path: artifact.path().to_owned(),
        })?;
    let steps = chain(&run.pipeline, artifact.from(), records);
    let finished_on = steps
        .iter()
        .map(|r| r.finished_on)
        .max()
        .unwrap_or_else(OffsetDateTime::now_utc);
    let owned: Vec<StepRecord> = steps.into_iter().cloned().collect();
    let request = ProvenanceRequest {
        builder: BuilderInfo {
            id: BUILDER_ID.into(),
            version: Some(env!("CARGO_PKG_VERSION").into()),
        },
        pipeline: PipelineParameter {
            name: run.pipeline.name().into(),
            sha256: run.source.sha256,
        },
        invocation_id: run.id.clone(),
        started_on: run.started_at,
        finished_on,
        artifact: kiln_attest::Artifact {
            name: artifact.name().into(),
            sha256: output.sha256,
        },
        steps: &owned,
    };
    let sign_err = |source: SignFailure| PublishError::Sign {
        artifact: artifact.name().to_owned(),
        source,
    };
    let mut statement =
        kiln_attest::build_statement(&request).map_err(|e| sign_err(SignFailure::Build(e)))?;
    if let Some(log) = log {
        // Each step record the artifact relies on, with its step log index and an inclusion
        // proof against a signed checkpoint (docs/build-type.md, "Step log byproducts").
        let byproducts = &mut statement.predicate.run_details.byproducts;
        byproducts.extend(owned.iter().filter_map(|r| log.steps.get(&r.step)).cloned());
        byproducts.sort_by(|a, b| a.uri.cmp(&b.uri));
    }
    let envelope =
        kiln_attest::sign_statement(&statement, key).map_err(|e| sign_err(SignFailure::Sign(e)))?;
    let bundle = kiln_attest::to_bundle(&envelope, key.public_key()).to_json();
    let line = kiln_attest::to_jsonl(&[envelope]).map_err(|e| sign_err(SignFailure::Sign(e)))?;
    let sbom_inputs = crate::rootfs_packages::sbom_inputs(store, &owned);
    let sboms = kiln_attest::build_sboms_with(&request, &sbom_inputs)
        .map_err(|e| sign_err(SignFailure::Build(e)))?
        .to_files(&request, key)
        .map_err(|e| sign_err(SignFailure::Sign(e)))?;
    Ok(Some(PublishedArtifact {
        name: artifact.name().to_owned(),
        step: artifact.from().to_owned(),
        sha256: output.sha256,
        size: output.size,
        executable: output.executable,
        provenance: line,
        bundle,
        sboms,
    }))
}

/// Signs and records provenance for every artifact whose producing step succeeded. With
/// `log`, each provenance carries the step log entries of the records it relies on, with
/// their inclusion proofs ([`crate::steplog::run_proofs`]).
pub async fn publish(
    state: &State,
    store: &BlobStore,
    run: &AcceptedRun,
    records: &BTreeMap<String, StepRecord>,
    key: &KeyPair,
    log: Option<&RunLogProofs>,
) -> Result<Vec<PublishedArtifact>, PublishError> {
    let mut published = Vec::new();
    for artifact in run.pipeline.artifacts() {
        let Some(p) = publish_one(run, artifact, records, key, log, store)? else {
            continue;
        };
        let stored = store
            .put_reader(p.provenance.as_bytes())
            .map_err(|source| PublishError::Store {
                artifact: p.name.clone(),
                source,
            })?;
        state
            .add_artifact(&ArtifactRow {
                run_id: &run.id,
                name: &p.name,
                step: &p.step,
                path: artifact.path(),
                sha256: &p.sha256,
                provenance_sha256: &stored.sha256,
            })
            .await?;
        published.push(p);
    }
    Ok(published)
}
