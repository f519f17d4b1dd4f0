//! What the controller asks a worker to run: one step, with every input pinned by digest.
//!
//! `StepSpec` is a wire format (worker protocol v1): the all-in-one mode passes it in memory,
//! the networked mode (issue 4) sends it as JSON.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{MirrorRef, OutputRecord, Sha256Digest};

/// How a mirror blob is presented to a step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum BlobKind {
    /// A single file, staged as `/in/<input>/<file_name>`.
    File { file_name: String },
    /// A deterministic tar archive, extracted and staged as the directory `/in/<input>/`.
    Tree,
}

/// A mirror entry resolved to its digest when the run was accepted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MirrorInput {
    pub reference: MirrorRef,
    pub sha256: Sha256Digest,
    #[serde(flatten)]
    pub kind: BlobKind,
}

/// A git source resolved when the run was accepted: one commit of a git mirror, exported as a
/// deterministic tree into the store and staged read-only at `/src/<name>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct GitInput {
    /// The git mirror's name (`kiln mirror git add --name`).
    pub mirror: String,
    /// Where the mirror was fetched from (an absolute path), as recorded when it was added.
    pub origin: String,
    /// The full commit id, 40 lowercase hex digits, checked against the commit's content.
    pub commit: String,
    /// The branch or tag the pipeline cross-checked against `commit`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    /// The commit's tree as a deterministic tar archive in the store.
    pub sha256: Sha256Digest,
    /// Who signed the commit, when the mirror only admits signed commits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<GitSigner>,
}

/// The allowed signer whose SSH signature on a commit verified.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct GitSigner {
    /// The principal of the allowed-signers line that matched, e.g. an email address.
    pub principal: String,
    /// The key's fingerprint, `SHA256:<base64>` as `ssh-keygen -l` prints it.
    pub fingerprint: String,
}

/// Where a staged input comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", tag = "source")]
pub enum InputSource {
    /// A vetted mirror entry.
    Mirror(MirrorInput),
    /// A commit of a git mirror, staged at `/src/<mount_name>` rather than under `/in`.
    Git(GitInput),
    /// The published outputs of an upstream step of the same run.
    Step {
        step: String,
        outputs: Vec<OutputRecord>,
    },
}

/// One input as the step sees it: read-only at `/in/<mount_name>` (`/src/<mount_name>` for a
/// git source).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StagedInput {
    pub mount_name: String,
    #[serde(flatten)]
    pub source: InputSource,
}

/// Everything a worker needs to run one step, and nothing it may choose for itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StepSpec {
    /// The run this step belongs to (a UUID v7).
    pub run_id: String,
    pub step: String,
    /// Run by `/bin/sh -c` inside the sandbox.
    pub command: String,
    /// Declared environment; the worker adds only PATH, HOME and SOURCE_DATE_EPOCH.
    pub env: BTreeMap<String, String>,
    /// The root filesystem: a mirror entry of kind `Tree`.
    pub rootfs: MirrorInput,
    pub inputs: Vec<StagedInput>,
    /// Paths under `/out` that the step must leave behind.
    pub outputs: Vec<String>,
    pub timeout_secs: u64,
    pub source_date_epoch: i64,
    /// Resource limits the pipeline asks for; the worker's defaults fill the gaps.
    #[serde(default)]
    pub resources: ResourceRequest,
}

/// Per-step resource limits a pipeline may ask for (`resources:` in the YAML).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ResourceRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
    /// Thousandths of a CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub millicpus: Option<u64>,
}

impl StepSpec {
    /// The environment the step's process gets: exactly the declared variables plus the fixed ones.
    pub fn effective_env(&self) -> BTreeMap<String, String> {
        let mut env = self.env.clone();
        env.insert(
            "PATH".into(),
            "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin".into(),
        );
        env.insert("HOME".into(), "/work".into());
        env.insert(
            "SOURCE_DATE_EPOCH".into(),
            self.source_date_epoch.to_string(),
        );
        env
    }
}
