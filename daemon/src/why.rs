//! `kiln mirror why NAME@VERSION`: where an entry came from, down to the roots. An entry whose
//! bytes kiln built (a published artifact with the same digest) is explained by that artifact's
//! signed provenance, checked against the controller's key, and each mirror entry that
//! provenance resolved is explained in turn; an entry kiln did not build is a root, shown with
//! the evidence it was admitted on.
//!
//! The reverse walk, from an entry to everything built from it, is [`crate::affected`].

use std::collections::BTreeSet;
use std::str::FromStr as _;

use kiln_attest::{ArtifactRef, PublicKey, verify_provenance};
use kiln_core::{MirrorRef, Sha256Digest};
use kiln_mirror::BlobStore;
use serde::Serialize;

use crate::state::{PublishedArtifact, State, StateError};

/// Deeper chains than this are cut (and say so).
const MAX_DEPTH: usize = 32;

/// One entry of the chain.
#[derive(Clone, Debug, Serialize)]
pub struct WhyNode {
    pub entry: String,
    pub sha256: Sha256Digest,
    pub origin: Origin,
    /// The mirror entries its provenance resolved (empty for a root).
    pub from: Vec<WhyNode>,
}

/// How an entry came to be.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Origin {
    /// Built by kiln: the run and artifact, and whether its provenance verified.
    Built {
        run: String,
        artifact: String,
        /// `verified with key KEYID`, or why not.
        provenance: String,
        verified: bool,
    },
    /// Not built by kiln here: admitted on its evidence.
    Admitted { evidence: String },
    /// Named by a provenance but not (or no longer, or with other bytes) in the mirror.
    Missing { detail: String },
    /// Already explained above (a cycle, or the chain is deeper than [`MAX_DEPTH`]).
    Cut { detail: String },
}

/// Why an explanation could not be made at all.
#[derive(Debug, thiserror::Error)]
pub enum WhyError {
    #[error("no mirror entry {0}: `kiln mirror list` shows what there is")]
    UnknownEntry(MirrorRef),
    #[error(transparent)]
    State(#[from] StateError),
}

/// Explains `entry`, trusting provenance signed by `key`.
pub async fn why(
    state: &State,
    store: &BlobStore,
    key: &PublicKey,
    entry: &MirrorRef,
) -> Result<WhyNode, WhyError> {
    let walk = Walk {
        state,
        store,
        key,
        artifacts: state.published_artifacts().await?,
    };
    let mut seen = BTreeSet::new();
    let node = walk.explain(entry, &mut seen, 0).await?;
    node.ok_or_else(|| WhyError::UnknownEntry(entry.clone()))
}

/// What every step of the walk reads.
struct Walk<'a> {
    state: &'a State,
    store: &'a BlobStore,
    key: &'a PublicKey,
    artifacts: Vec<PublishedArtifact>,
}

impl Walk<'_> {
    async fn explain(
        &self,
        reference: &MirrorRef,
        seen: &mut BTreeSet<String>,
        depth: usize,
    ) -> Result<Option<WhyNode>, WhyError> {
        let Some(entry) = self.state.mirror_entry(reference).await? else {
            return Ok(None);
        };
        let mut node = WhyNode {
            entry: reference.to_string(),
            sha256: entry.sha256,
            origin: Origin::Admitted {
                evidence: String::new(),
            },
            from: Vec::new(),
        };
        // `seen` holds this entry's ancestors: an entry that is its own ancestor is a cycle. An
        // entry shared by two branches is explained in both.
        if depth >= MAX_DEPTH || !seen.insert(reference.to_string()) {
            node.origin = Origin::Cut {
                detail: "a cycle or a chain deeper than 32: cut here".into(),
            };
            return Ok(Some(node));
        }
        let explained = self.explain_origin(reference, &mut node, seen, depth).await;
        seen.remove(&reference.to_string());
        explained?;
        Ok(Some(node))
    }

    async fn explain_origin(
        &self,
        reference: &MirrorRef,
        node: &mut WhyNode,
        seen: &mut BTreeSet<String>,
        depth: usize,
    ) -> Result<(), WhyError> {
        let entry_sha256 = node.sha256;
        // The same bytes may have been published more than once: the newest run explains them.
        let Some(built) = self.artifacts.iter().rfind(|a| a.sha256 == entry_sha256) else {
            return self.explain_admitted(reference, node, seen, depth).await;
        };
        let (provenance, verified, deps) = check(self.store, self.key, built);
        node.origin = Origin::Built {
            run: built.run_id.clone(),
            artifact: built.name.clone(),
            provenance,
            verified,
        };
        self.explain_dependencies(node, deps, seen, depth).await
    }

    /// An entry kiln did not publish here: built elsewhere and admitted on its provenance
    /// (re-verified now with the builder key recorded at admission), or a root.
    async fn explain_admitted(
        &self,
        reference: &MirrorRef,
        node: &mut WhyNode,
        seen: &mut BTreeSet<String>,
        depth: usize,
    ) -> Result<(), WhyError> {
        let evidence = self.state.mirror_evidence(reference).await?;
        let Some(p) = evidence.and_then(|e| e.details.provenance) else {
            node.origin = Origin::Admitted {
                evidence: admitted(self.state, reference).await?,
            };
            return Ok(());
        };
        let (provenance, verified, deps) = check_admitted(self.store, &p, node.sha256);
        node.origin = Origin::Built {
            run: p.invocation.clone().unwrap_or_else(|| "?".into()),
            artifact: format!(
                "(admitted on its provenance, builder {})",
                p.builder_name.as_deref().unwrap_or("this controller")
            ),
            provenance,
            verified,
        };
        self.explain_dependencies(node, deps, seen, depth).await
    }

    /// Explains each mirror entry a provenance resolved, marking those missing or changed.
    async fn explain_dependencies(
        &self,
        node: &mut WhyNode,
        deps: Vec<(MirrorRef, Sha256Digest)>,
        seen: &mut BTreeSet<String>,
        depth: usize,
    ) -> Result<(), WhyError> {
        for (dep, digest) in deps {
            let child = Box::pin(self.explain(&dep, seen, depth + 1)).await?;
            node.from.push(match child {
            Some(child) if child.sha256 == digest => child,
            Some(child) => WhyNode {
                origin: Origin::Missing {
                    detail: format!(
                        "the mirror now holds sha256:{} under this name, the build used sha256:{digest}",
                        child.sha256
                    ),
                },
                from: Vec::new(),
                ..child
            },
            None => WhyNode {
                entry: dep.to_string(),
                sha256: digest,
                origin: Origin::Missing {
                    detail: "not in this mirror".into(),
                },
                from: Vec::new(),
            },
        });
        }
        Ok(())
    }
}

/// Verifies `built`'s provenance with the controller's key; see [`verify_stored`].
fn check(
    store: &BlobStore,
    key: &PublicKey,
    built: &PublishedArtifact,
) -> (String, bool, Vec<(MirrorRef, Sha256Digest)>) {
    verify_stored(store, &built.provenance_sha256, built.sha256, key, "key")
}

/// Re-verifies provenance an entry was admitted on with the builder key recorded then; see
/// [`verify_stored`].
fn check_admitted(
    store: &BlobStore,
    evidence: &crate::evidence::ProvenanceEvidence,
    sha256: Sha256Digest,
) -> (String, bool, Vec<(MirrorRef, Sha256Digest)>) {
    let key = evidence
        .builder_spki
        .as_deref()
        .and_then(|h| hex::decode(h).ok())
        .map(|der| PublicKey::from_spki_der(&der));
    let Some(Ok(key)) = key else {
        return ("recorded without its builder key".into(), false, Vec::new());
    };
    let Ok(document) = Sha256Digest::from_str(&evidence.document_sha256) else {
        return ("recorded with a malformed digest".into(), false, Vec::new());
    };
    verify_stored(store, &document, sha256, &key, "builder key")
}

/// Verifies the provenance document kept in the store under `document` for the bytes
/// `artifact`, with `key` (named `key_name` in the status line): its status line, whether it verified, and the mirror entries it
/// resolved (as `kiln:mirror/NAME@VERSION` with a sha256).
fn verify_stored(
    store: &BlobStore,
    document: &Sha256Digest,
    artifact: Sha256Digest,
    key: &PublicKey,
    key_name: &str,
) -> (String, bool, Vec<(MirrorRef, Sha256Digest)>) {
    let text = store
        .read_verified(document)
        .map_err(|e| e.to_string())
        .and_then(|b| String::from_utf8(b).map_err(|e| e.to_string()));
    let text = match text {
        Ok(text) => text,
        Err(e) => return (format!("unreadable: {e}"), false, Vec::new()),
    };
    match verify_provenance(ArtifactRef::Digest(artifact), &text, key) {
        Ok(verified) => (
            format!("verified with {key_name} {}", verified.keyid),
            true,
            crate::admission::mirror_dependencies(&verified),
        ),
        Err(e) => (format!("does NOT verify: {e}"), false, Vec::new()),
    }
}

/// One line on how a root entry was admitted.
async fn admitted(state: &State, reference: &MirrorRef) -> Result<String, StateError> {
    let Some(ev) = state.mirror_evidence(reference).await? else {
        return Ok("no evidence recorded".into());
    };
    let signed = match (&ev.signer_name, &ev.signer_keyid) {
        (Some(name), Some(id)) => format!("signed by {name} (key {id})"),
        (None, Some(id)) => format!("signed by key {id}"),
        _ => "unsigned".into(),
    };
    let asserted = if ev.asserted.is_some() {
        ", sha256 asserted"
    } else {
        ""
    };
    Ok(format!("{signed}{asserted}; {}", ev.policy_decision))
}

/// The chain as indented text, one entry a line.
pub fn render(node: &WhyNode) -> String {
    let mut out = String::new();
    render_into(node, 0, &mut out);
    out
}

fn render_into(node: &WhyNode, depth: usize, out: &mut String) {
    let how = match &node.origin {
        Origin::Built {
            run,
            artifact,
            provenance,
            ..
        } => format!("built by kiln: run {run} artifact {artifact}; provenance {provenance}"),
        Origin::Admitted { evidence } => format!("root: admitted {evidence}"),
        Origin::Missing { detail } => format!("MISSING: {detail}"),
        Origin::Cut { detail } => detail.clone(),
    };
    out.push_str(&format!(
        "{}{} sha256:{}  {how}\n",
        "  ".repeat(depth),
        node.entry,
        node.sha256
    ));
    for child in &node.from {
        render_into(child, depth + 1, out);
    }
}
