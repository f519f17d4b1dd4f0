//! The step log, daemon side: what an entry says, the log key, signing checkpoints, proofs, and
//! the whole-log audit behind `kiln audit verify` (docs/step-log.md, "The daemon side").
//!
//! Entries are appended by [`State`] in the transaction of the change they log (run accepted,
//! step record accepted, run finished or cancelled), so "accepted" and "logged" cannot
//! diverge. Checkpoints are signed here, after the fact, with the log key
//! ([`crate::Controller::log_signer`]); the tree is recomputed from the stored entries each
//! time, so daemons sharing one database need no shared memory.
//!
//! Invariant: the Merkle tree, proofs, notes and checkpoints are `kiln_attest::tlog`'s; this
//! module only decides what goes into the log and reads and writes the database.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::str::FromStr;

use kiln_attest::ResourceDescriptor;
use kiln_attest::tlog::{
    AuditFinding, Checkpoint, CheckpointError, CheckpointRef, Hash, LogVerifier, MerkleTree,
    NoteSigner, NoteVerifier, ProofError, TlogProof, audit_log, leaf_hash,
};
use kiln_core::Sha256Digest;
use serde_json::Value;
use time::OffsetDateTime;

use crate::state::{State, StateError, StoredEntry, TreeError};

/// The `type` of every entry.
pub const ENTRY_TYPE: &str = "kiln.dev/step-log/v1";

/// The log key's PKCS#8 PEM file in the data dir's `keys/`.
pub const LOG_KEY_FILE: &str = "steplog.key";
/// The log's verifier key string (`<name>+<key ID>+<key>`) in the data dir's `keys/`.
pub const LOG_VKEY_FILE: &str = "steplog.vkey";

/// Errors of the step log.
#[derive(Debug, thiserror::Error)]
pub enum StepLogError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("step log checkpoint")]
    Checkpoint(#[from] CheckpointError),
    #[error("step log proof")]
    Proof(#[from] ProofError),
    #[error("the step log holds {stored} of its first {size} entries: entries were deleted")]
    Gap { size: u64, stored: u64 },
    #[error("no entry {index} in the step log (it holds {size})")]
    NoEntry { index: u64, size: u64 },
    #[error(
        "no signed checkpoint of size {size} (sign one, or pick a size `kiln audit checkpoint --all` lists)"
    )]
    NoCheckpoint { size: u64 },
    #[error(
        "the stored log does not extend the signed checkpoint of size {size}: history was rewritten; not signing (run `kiln audit verify`)"
    )]
    Rewritten { size: u64 },
    #[error("entry {index} is not in the tree of size {size}")]
    IndexBeyond { index: u64, size: u64 },
}

/// What one entry records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogEntry<'a> {
    /// A run was accepted.
    RunStarted {
        run: &'a str,
        pipeline_name: &'a str,
        pipeline_file: &'a str,
        pipeline_sha256: &'a Sha256Digest,
        started_at: OffsetDateTime,
        /// `lease` (submitted to the daemon) or `local` (all-in-one).
        dispatch: &'a str,
    },
    /// A step's record was accepted; `record_json` is exactly what `step_records` stores.
    StepRecord {
        run: &'a str,
        step: &'a str,
        /// The worker whose report was accepted; `local` in the all-in-one mode.
        worker: &'a str,
        record_json: &'a str,
    },
    /// A run ended: `succeeded`, `failed` or `cancelled`, with what it published.
    RunFinished {
        run: &'a str,
        state: &'a str,
        finished_at: OffsetDateTime,
        artifacts: Vec<LoggedArtifact>,
    },
}

/// A published artifact as a run-finished entry binds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedArtifact {
    pub name: String,
    pub step: String,
    pub sha256: String,
    pub provenance_sha256: String,
}

/// The entry kinds, as the `kind` field and column say.
pub const KIND_RUN_STARTED: &str = "run-started";
pub const KIND_STEP_RECORD: &str = "step-record";
pub const KIND_RUN_FINISHED: &str = "run-finished";

fn rfc3339(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(&time::format_description::well_known::Rfc3339)
        .expect("an OffsetDateTime always formats as RFC 3339")
}

impl LogEntry<'_> {
    /// The `kind` field.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::RunStarted { .. } => KIND_RUN_STARTED,
            Self::StepRecord { .. } => KIND_STEP_RECORD,
            Self::RunFinished { .. } => KIND_RUN_FINISHED,
        }
    }

    /// The run it is about.
    pub fn run(&self) -> &str {
        match self {
            Self::RunStarted { run, .. }
            | Self::StepRecord { run, .. }
            | Self::RunFinished { run, .. } => run,
        }
    }

    /// The step, for a step record.
    pub fn step(&self) -> Option<&str> {
        match self {
            Self::StepRecord { step, .. } => Some(step),
            _ => None,
        }
    }

    /// The entry's bytes: canonical JSON (keys sorted by byte, no whitespace).
    pub fn to_bytes(&self) -> String {
        let value = match self {
            Self::RunStarted {
                run,
                pipeline_name,
                pipeline_file,
                pipeline_sha256,
                started_at,
                dispatch,
            } => serde_json::json!({
                "type": ENTRY_TYPE,
                "kind": self.kind(),
                "run": run,
                "pipeline": {
                    "name": pipeline_name,
                    "file": pipeline_file,
                    "sha256": pipeline_sha256.to_string(),
                },
                "startedAt": rfc3339(*started_at),
                "dispatch": dispatch,
            }),
            Self::StepRecord {
                run,
                step,
                worker,
                record_json,
            } => serde_json::json!({
                "type": ENTRY_TYPE,
                "kind": self.kind(),
                "run": run,
                "step": step,
                "worker": worker,
                "record": { "sha256": Sha256Digest::of(record_json.as_bytes()).to_string() },
            }),
            Self::RunFinished {
                run,
                state,
                finished_at,
                artifacts,
            } => serde_json::json!({
                "type": ENTRY_TYPE,
                "kind": self.kind(),
                "run": run,
                "state": state,
                "finishedAt": rfc3339(*finished_at),
                "artifacts": artifacts.iter().map(|a| serde_json::json!({
                    "name": a.name,
                    "step": a.step,
                    "sha256": a.sha256,
                    "provenanceSha256": a.provenance_sha256,
                })).collect::<Vec<_>>(),
            }),
        };
        canonical_json(&value)
    }
}

/// Canonical JSON: object keys sorted by their UTF-8 bytes, no insignificant whitespace,
/// strings and numbers as serde_json writes them. Independent of serde_json's map order.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        other => {
            let _ = write!(out, "{other}");
        }
    }
}

/// The default log key name and origin: `kiln/<hostname>/steps`.
pub fn default_log_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        .collect();
    let host = if host.is_empty() { "localhost" } else { &host };
    format!("kiln/{host}/steps")
}

/// The verifier of the log whose key is `vkey` (origin = key name).
pub fn log_verifier(vkey: &NoteVerifier) -> LogVerifier {
    LogVerifier::new(vkey.name(), vkey.clone())
}

/// Reads the verifier key string kept in `keys_dir` (`steplog.vkey`).
pub fn read_verifier(keys_dir: &Path) -> Option<NoteVerifier> {
    let text = std::fs::read_to_string(keys_dir.join(LOG_VKEY_FILE)).ok()?;
    NoteVerifier::from_str(text.trim()).ok()
}

/// The log's tree covering at least `size` entries ([`State::log_tree`]).
async fn tree(
    state: &State,
    size: u64,
) -> Result<tokio::sync::MutexGuard<'_, MerkleTree>, StepLogError> {
    state.log_tree(size).await.map_err(|e| match e {
        TreeError::State(e) => StepLogError::State(e),
        TreeError::Gap { index } => StepLogError::Gap {
            size,
            stored: index,
        },
    })
}

/// Signs a checkpoint of the whole log as it is now, if it grew since the latest checkpoint
/// (or none was signed yet); returns the new checkpoint's size.
pub async fn sign_checkpoint(
    state: &State,
    signer: &NoteSigner,
    now: OffsetDateTime,
) -> Result<Option<u64>, StepLogError> {
    let size = state.log_size().await?;
    let previous = state.latest_checkpoint().await?;
    if let Some(latest) = &previous
        && latest.size >= size
    {
        return Ok(None);
    }
    let tree = tree(state, size).await?;
    // Never sign a log that does not extend the last signed one: a history rewritten in the
    // database stays detectable instead of being signed over.
    if let Some(previous) = &previous {
        let signed = log_verifier(&signer.verifier()).open(previous.note.as_bytes())?;
        if signed.size != previous.size || tree.root_at(signed.size).ok() != Some(signed.root) {
            return Err(StepLogError::Rewritten {
                size: previous.size,
            });
        }
    }
    let root = tree.root_at(size)?;
    drop(tree);
    let checkpoint = Checkpoint {
        origin: signer.name().to_owned(),
        size,
        root,
        extensions: Vec::new(),
    };
    let note = checkpoint.sign(signer)?;
    state.add_checkpoint(size, &note, now).await?;
    tracing::debug!(size, "step log checkpoint signed");
    Ok(Some(size))
}

/// The C2SP tlog-proof of entry `index` against the stored signed checkpoint of `size`
/// (default: the latest).
pub async fn prove(
    state: &State,
    index: u64,
    size: Option<u64>,
) -> Result<(TlogProof, StoredEntry), StepLogError> {
    let checkpoint = match size {
        Some(size) => state
            .checkpoint_at(size)
            .await?
            .ok_or(StepLogError::NoCheckpoint { size })?,
        None => state
            .latest_checkpoint()
            .await?
            .ok_or(StepLogError::NoCheckpoint { size: 0 })?,
    };
    if index >= checkpoint.size {
        return Err(StepLogError::IndexBeyond {
            index,
            size: checkpoint.size,
        });
    }
    let entry = state.log_entry(index).await?.ok_or(StepLogError::NoEntry {
        index,
        size: checkpoint.size,
    })?;
    let path = tree(state, checkpoint.size)
        .await?
        .inclusion_proof(index, checkpoint.size)?;
    Ok((
        TlogProof {
            extra: None,
            index,
            path,
            checkpoint: checkpoint.note,
        },
        entry,
    ))
}

/// The consistency proof from the tree of `old` entries to the tree of `new`, and the two
/// stored signed checkpoint notes.
pub async fn consistency(
    state: &State,
    old: u64,
    new: u64,
) -> Result<(Vec<Hash>, String, String), StepLogError> {
    let old_note = state
        .checkpoint_at(old)
        .await?
        .ok_or(StepLogError::NoCheckpoint { size: old })?;
    let new_note = state
        .checkpoint_at(new)
        .await?
        .ok_or(StepLogError::NoCheckpoint { size: new })?;
    let proof = tree(state, new).await?.consistency_proof(old, new)?;
    Ok((proof, old_note.note, new_note.note))
}

/// Inclusion evidence for the step records of one run, against one signed checkpoint: what
/// each artifact's provenance carries as `runDetails.byproducts`.
#[derive(Clone, Debug, Default)]
pub struct RunLogProofs {
    /// By step name.
    pub steps: BTreeMap<String, ResourceDescriptor>,
}

/// The `uri` of a step log entry: `kiln:steplog/<index>`.
pub fn entry_uri(index: u64) -> String {
    format!("kiln:steplog/{index}")
}

/// Signs a checkpoint covering every entry so far and returns, for each step record of
/// `run_id` in the log, its byproduct: `{"name": "steplog/STEP", "uri": "kiln:steplog/N",
/// "digest": {"sha256": <sha256 of the entry bytes>}, "annotations": {"logIndex": N,
/// "entry": <entry bytes>, "tlogProof": <C2SP tlog-proof text>}}`.
pub async fn run_proofs(
    state: &State,
    signer: &NoteSigner,
    run_id: &str,
    now: OffsetDateTime,
) -> Result<RunLogProofs, StepLogError> {
    sign_checkpoint(state, signer, now).await?;
    let checkpoint = state
        .latest_checkpoint()
        .await?
        .ok_or(StepLogError::NoCheckpoint { size: 0 })?;
    let entries = state.run_step_entries(run_id).await?;
    let mut proofs = RunLogProofs::default();
    if entries.is_empty() {
        return Ok(proofs);
    }
    let tree = tree(state, checkpoint.size).await?;
    for e in entries {
        let Some(step) = e.step.clone() else { continue };
        if e.index >= checkpoint.size {
            continue;
        }
        let proof = TlogProof {
            extra: None,
            index: e.index,
            path: tree.inclusion_proof(e.index, checkpoint.size)?,
            checkpoint: checkpoint.note.clone(),
        };
        let descriptor = ResourceDescriptor {
            name: Some(format!("steplog/{step}")),
            uri: Some(entry_uri(e.index)),
            digest: kiln_attest::DigestSet::sha256(Sha256Digest::of(e.entry.as_bytes())),
            annotations: BTreeMap::from([
                ("logIndex".to_owned(), Value::from(e.index)),
                ("entry".to_owned(), Value::from(e.entry.clone())),
                ("tlogProof".to_owned(), Value::from(proof.to_text())),
            ]),
            ..Default::default()
        };
        proofs.steps.insert(step, descriptor);
    }
    Ok(proofs)
}

/// One problem `kiln audit verify` found.
#[derive(Debug)]
pub enum VerifyFinding {
    /// The tree does not match a signed checkpoint, or a checkpoint is rejected.
    Tree(String),
    /// Entry indices are not 0, 1, 2, … (an entry row was deleted).
    MissingEntry { index: u64 },
    /// The stored leaf hash is not the hash of the stored entry.
    LeafHash { index: u64 },
    /// An entry does not parse, or its columns disagree with its bytes.
    Malformed { index: u64, detail: String },
    /// A logged step record is no longer in `step_records`.
    RecordDeleted {
        index: u64,
        run: String,
        step: String,
    },
    /// A logged step record's stored JSON no longer hashes to what the log says.
    RecordModified {
        index: u64,
        run: String,
        step: String,
        logged: String,
        stored: String,
    },
    /// A step record in `step_records` that no entry logs.
    RecordNotLogged { run: String, step: String },
    /// No signed checkpoint at all.
    NoCheckpoint,
}

impl std::fmt::Display for VerifyFinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tree(s) => f.write_str(s),
            Self::MissingEntry { index } => {
                write!(f, "log entry {index} is missing: an entry was deleted")
            }
            Self::LeafHash { index } => write!(
                f,
                "log entry {index}: the stored leaf hash is not the hash of the stored entry"
            ),
            Self::Malformed { index, detail } => write!(f, "log entry {index}: {detail}"),
            Self::RecordDeleted { index, run, step } => write!(
                f,
                "step record {run}/{step} (log entry {index}) was deleted from step_records"
            ),
            Self::RecordModified {
                index,
                run,
                step,
                logged,
                stored,
            } => write!(
                f,
                "step record {run}/{step} was modified: log entry {index} binds sha256 {logged}, the stored record has {stored}"
            ),
            Self::RecordNotLogged { run, step } => {
                write!(f, "step record {run}/{step} is not in the step log")
            }
            Self::NoCheckpoint => f.write_str("no signed checkpoint: the log cannot be verified"),
        }
    }
}

/// The result of [`verify`].
#[derive(Debug)]
pub struct VerifyReport {
    pub log_size: u64,
    pub checkpoints: usize,
    pub latest_size: Option<u64>,
    /// The largest size at which a signed checkpoint matched the stored entries.
    pub verified_size: u64,
    pub findings: Vec<VerifyFinding>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.findings.is_empty()
    }
}

/// The whole-log audit: every entry rehashed and checked against every stored signed
/// checkpoint under `vkey` ([`audit_log`]), entry numbering, each entry's columns against its
/// bytes, and each step-record entry against the record `step_records` holds now.
pub async fn verify(state: &State, vkey: &NoteVerifier) -> Result<VerifyReport, StepLogError> {
    let log = log_verifier(vkey);
    let entries = state.log_entries_below(u64::MAX).await?;
    let mut findings = Vec::new();
    // The first index that is not where it should be (later ones are shifted by it).
    if let Some(pos) = entries
        .iter()
        .enumerate()
        .position(|(i, e)| e.index != i as u64)
    {
        findings.push(VerifyFinding::MissingEntry { index: pos as u64 });
    }
    let records: BTreeMap<(String, String), String> =
        state.all_record_jsons().await?.into_iter().collect();
    let mut logged_records = std::collections::BTreeSet::new();
    for e in &entries {
        if e.leaf_hash != leaf_hash(e.entry.as_bytes()).to_string() {
            findings.push(VerifyFinding::LeafHash { index: e.index });
        }
        let value: Value = match serde_json::from_str(&e.entry) {
            Ok(v) => v,
            Err(err) => {
                findings.push(VerifyFinding::Malformed {
                    index: e.index,
                    detail: format!("not JSON: {err}"),
                });
                continue;
            }
        };
        let (kind, run, step) = (
            value["kind"].as_str().unwrap_or_default(),
            value["run"].as_str().unwrap_or_default(),
            value["step"].as_str(),
        );
        if value["type"] != ENTRY_TYPE
            || kind != e.kind
            || run != e.run_id
            || step != e.step.as_deref()
        {
            findings.push(VerifyFinding::Malformed {
                index: e.index,
                detail: format!(
                    "its columns ({} {} {:?}) do not match its bytes",
                    e.kind, e.run_id, e.step
                ),
            });
            continue;
        }
        if kind != KIND_STEP_RECORD {
            continue;
        }
        let step = step.unwrap_or_default();
        let logged = value["record"]["sha256"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let key = (run.to_owned(), step.to_owned());
        match records.get(&key) {
            None => findings.push(VerifyFinding::RecordDeleted {
                index: e.index,
                run: key.0.clone(),
                step: key.1.clone(),
            }),
            Some(json) => {
                let stored = Sha256Digest::of(json.as_bytes()).to_string();
                if stored != logged {
                    findings.push(VerifyFinding::RecordModified {
                        index: e.index,
                        run: key.0.clone(),
                        step: key.1.clone(),
                        logged,
                        stored,
                    });
                }
            }
        }
        logged_records.insert(key);
    }
    for (run, step) in records.keys() {
        if !logged_records.contains(&(run.clone(), step.clone())) {
            findings.push(VerifyFinding::RecordNotLogged {
                run: run.clone(),
                step: step.clone(),
            });
        }
    }

    let checkpoints = state.log_checkpoints().await?;
    let Some((latest, older)) = checkpoints.split_last() else {
        findings.push(VerifyFinding::NoCheckpoint);
        return Ok(VerifyReport {
            log_size: entries.len() as u64,
            checkpoints: 0,
            latest_size: None,
            verified_size: 0,
            findings,
        });
    };
    let report = audit_log(
        entries.iter().map(|e| e.entry.as_bytes()),
        latest.note.as_bytes(),
        older.iter().map(|c| c.note.as_bytes()),
        &log,
    );
    let stored_size = |which: CheckpointRef| match which {
        CheckpointRef::Latest => latest.size,
        CheckpointRef::Older(i) => older[i].size,
    };
    for finding in &report.findings {
        let which = match finding {
            AuditFinding::CheckpointRejected { which, .. }
            | AuditFinding::RootMismatch { which, .. }
            | AuditFinding::BeyondLog { which, .. }
            | AuditFinding::NewerThanLatest { which, .. } => Some(*which),
            AuditFinding::SizeMismatch { .. } => None,
        };
        let mut text = match which {
            Some(w) => format!("checkpoint stored as size {}: {finding}", stored_size(w)),
            None => finding.to_string(),
        };
        if let AuditFinding::CheckpointRejected { error, .. } = finding {
            let _ = write!(text, ": {error}");
            let mut source = std::error::Error::source(error);
            while let Some(s) = source {
                let _ = write!(text, ": {s}");
                source = s.source();
            }
        }
        findings.push(VerifyFinding::Tree(text));
    }
    Ok(VerifyReport {
        log_size: report.log_size,
        checkpoints: checkpoints.len(),
        latest_size: report.latest.as_ref().map(|c| c.size),
        verified_size: report.verified_size,
        findings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_canonical_json_with_sorted_keys() {
        let digest = Sha256Digest::of(b"pipeline");
        let entry = LogEntry::RunStarted {
            run: "r1",
            pipeline_name: "demo",
            pipeline_file: "demo.yaml",
            pipeline_sha256: &digest,
            started_at: OffsetDateTime::UNIX_EPOCH,
            dispatch: "lease",
        };
        assert_eq!(
            entry.to_bytes(),
            format!(
                r#"{{"dispatch":"lease","kind":"run-started","pipeline":{{"file":"demo.yaml","name":"demo","sha256":"{digest}"}},"run":"r1","startedAt":"1970-01-01T00:00:00Z","type":"kiln.dev/step-log/v1"}}"#
            )
        );
        let record = LogEntry::StepRecord {
            run: "r1",
            step: "build",
            worker: "w",
            record_json: "{}",
        };
        let bytes = record.to_bytes();
        assert!(
            bytes.starts_with(r#"{"kind":"step-record","record":{"sha256":""#),
            "{bytes}"
        );
        assert!(bytes.contains(&Sha256Digest::of(b"{}").to_string()));
    }

    #[test]
    fn canonical_json_sorts_nested_keys_and_escapes_strings() {
        let v = serde_json::json!({"b": [{"z": 1, "a": "\u{1}\""}], "a": null});
        assert_eq!(
            canonical_json(&v),
            r#"{"a":null,"b":[{"a":"\u0001\"","z":1}]}"#
        );
    }
}
