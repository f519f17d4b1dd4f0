//! The step record: what a worker reports after running a step, and what provenance is built
//! from. Wire format `kiln.dev/step-record/v1`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{MirrorInput, Sha256Digest, StagedInput};

/// One output file, published into the store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputRecord {
    /// Path relative to `/out`, with `/` separators and no `..`.
    pub path: String,
    pub sha256: Sha256Digest,
    pub size: u64,
    pub executable: bool,
}

/// How the step's process ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum ExitRecord {
    Exited {
        code: i32,
    },
    Signaled {
        signal: i32,
    },
    TimedOut {
        after_secs: u64,
    },
    /// The step could not be run, or its outputs were refused.
    Failed {
        reason: String,
    },
}

impl ExitRecord {
    /// Whether the step succeeded.
    pub fn success(&self) -> bool {
        matches!(self, Self::Exited { code: 0 })
    }
}

/// The step's captured stdout and stderr.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    pub sha256: Sha256Digest,
    pub size: u64,
}

/// The sandbox settings the step ran under.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxRecord {
    pub namespaces: Vec<String>,
    pub network: String,
    pub host_uid: u32,
    pub step_uid: u32,
    pub scratch_bytes: u64,
    pub timeout_secs: u64,
    pub mounts: Vec<String>,
    pub limits: LimitsRecord,
}

/// The resource limits a step ran under.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitsRecord {
    pub memory_bytes: u64,
    pub pids: u64,
    /// Thousandths of a CPU.
    pub millicpus: u64,
    pub open_files: u64,
}

/// Everything recorded about one executed step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    pub run_id: String,
    pub step: String,
    pub command: String,
    pub env: BTreeMap<String, String>,
    pub rootfs: MirrorInput,
    pub inputs: Vec<StagedInput>,
    pub outputs: Vec<OutputRecord>,
    pub exit: ExitRecord,
    #[serde(with = "time::serde::rfc3339")]
    pub started_on: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub finished_on: OffsetDateTime,
    pub log: LogRecord,
    pub sandbox: SandboxRecord,
}

impl StepRecord {
    /// The schema identifier of this record format.
    pub const SCHEMA: &'static str = "https://kiln.dev/step-record/v1";
}
