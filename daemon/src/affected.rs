//! `kiln audit affected NAME@VERSION`: every published artifact whose provenance depends on a
//! mirror entry, directly or through artifacts kiln built from it — the check that keeps
//! running after the build, for when an entry is revoked or found vulnerable.
//!
//! The walk is by digest over each artifact's signed provenance (its
//! `resolvedDependencies`), not over run records: an artifact is affected only if the steps
//! that led to it used the entry. An affected artifact's own digest then counts as tainted, so
//! a kiln-built library that was imported into the mirror and used by a later run carries the
//! taint to that run's artifacts, to any depth.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr as _;

use kiln_attest::dsse::Envelope;
use kiln_core::{MirrorRef, Sha256Digest};
use kiln_mirror::{BlobStore, StoreError};
use serde::Serialize;

use crate::state::{PublishedArtifact, State, StateError};

/// Why the walk could not be made.
#[derive(Debug, thiserror::Error)]
pub enum AffectedError {
    #[error("no mirror entry {0}: `kiln mirror list` shows what there is")]
    UnknownEntry(MirrorRef),
    #[error("the provenance of artifact {artifact} of run {run} cannot be read")]
    Provenance {
        run: String,
        artifact: String,
        #[source]
        source: StoreError,
    },
    #[error(
        "the provenance of artifact {artifact} of run {run} is not a DSSE envelope of a statement: {detail}"
    )]
    Malformed {
        run: String,
        artifact: String,
        detail: String,
    },
    #[error(transparent)]
    State(#[from] StateError),
}

/// An artifact that depends on the entry, and how.
#[derive(Clone, Debug, Serialize)]
pub struct AffectedArtifact {
    pub run: String,
    pub artifact: String,
    pub sha256: Sha256Digest,
    /// From the entry to this artifact: `NAME@VERSION sha256:…`, then each kiln-built artifact
    /// in between as `run RUN artifact NAME sha256:…`.
    pub via: Vec<String>,
}

/// What `kiln audit affected` reports.
#[derive(Clone, Debug, Serialize)]
pub struct AffectedReport {
    pub entry: String,
    pub sha256: Sha256Digest,
    pub artifacts_checked: usize,
    pub affected: Vec<AffectedArtifact>,
}

/// Walks every published artifact's provenance for dependencies on `entry`.
pub async fn affected(
    state: &State,
    store: &BlobStore,
    entry: &MirrorRef,
) -> Result<AffectedReport, AffectedError> {
    let root = state
        .mirror_entry(entry)
        .await?
        .ok_or_else(|| AffectedError::UnknownEntry(entry.clone()))?;
    let artifacts = state.published_artifacts().await?;
    let deps: Vec<BTreeSet<Sha256Digest>> = artifacts
        .iter()
        .map(|a| dependencies(store, a))
        .collect::<Result<_, _>>()?;
    let mut tainted: BTreeMap<Sha256Digest, Vec<String>> = BTreeMap::new();
    tainted.insert(root.sha256, vec![format!("{entry} sha256:{}", root.sha256)]);
    let mut found: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    // A fixpoint: each pass may taint new digests (affected artifacts), which later artifacts
    // may depend on. Artifacts are in run order, so one pass usually suffices.
    loop {
        let mut grew = false;
        for (i, artifact) in artifacts.iter().enumerate() {
            if found.contains_key(&i) {
                continue;
            }
            let Some(chain) = deps[i].iter().find_map(|d| tainted.get(d)) else {
                continue;
            };
            let mut via = chain.clone();
            via.push(format!(
                "run {} artifact {} sha256:{}",
                artifact.run_id, artifact.name, artifact.sha256
            ));
            tainted
                .entry(artifact.sha256)
                .or_insert_with(|| via.clone());
            found.insert(i, via);
            grew = true;
        }
        if !grew {
            break;
        }
    }
    Ok(AffectedReport {
        entry: entry.to_string(),
        sha256: root.sha256,
        artifacts_checked: artifacts.len(),
        affected: found
            .into_iter()
            .map(|(i, via)| AffectedArtifact {
                run: artifacts[i].run_id.clone(),
                artifact: artifacts[i].name.clone(),
                sha256: artifacts[i].sha256,
                via,
            })
            .collect(),
    })
}

/// The sha256 of every resolved dependency in an artifact's provenance (all lines).
fn dependencies(
    store: &BlobStore,
    artifact: &PublishedArtifact,
) -> Result<BTreeSet<Sha256Digest>, AffectedError> {
    let malformed = |detail: String| AffectedError::Malformed {
        run: artifact.run_id.clone(),
        artifact: artifact.name.clone(),
        detail,
    };
    let bytes = store
        .read_verified(&artifact.provenance_sha256)
        .map_err(|source| AffectedError::Provenance {
            run: artifact.run_id.clone(),
            artifact: artifact.name.clone(),
            source,
        })?;
    let text = String::from_utf8(bytes).map_err(|e| malformed(e.to_string()))?;
    let mut digests = BTreeSet::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let envelope: Envelope =
            serde_json::from_str(line).map_err(|e| malformed(e.to_string()))?;
        let statement: serde_json::Value =
            serde_json::from_slice(&envelope.payload).map_err(|e| malformed(e.to_string()))?;
        let resolved = statement["predicate"]["buildDefinition"]["resolvedDependencies"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for dep in resolved {
            if let Some(hex) = dep["digest"]["sha256"].as_str() {
                digests.insert(Sha256Digest::from_str(hex).map_err(|e| malformed(e.to_string()))?);
            }
        }
    }
    Ok(digests)
}
