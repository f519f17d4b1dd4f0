//! The step record: what a worker reports after running a step, and what provenance is built
//! from. Wire format `kiln.dev/step-record/v1`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{MirrorInput, Sha256Digest, StagedInput};

/// One output file, published into the store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OutputRecord {
    /// Path relative to `/out`, with `/` separators and no `..`.
    pub path: String,
    pub sha256: Sha256Digest,
    pub size: u64,
    pub executable: bool,
}

/// How the step's process ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
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
    /// The kernel killed the step at a resource limit, e.g. `killed: memory limit 512MiB exceeded`.
    Killed {
        reason: String,
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LogRecord {
    pub sha256: Sha256Digest,
    pub size: u64,
}

/// The sandbox settings the step ran under.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SandboxRecord {
    pub namespaces: Vec<String>,
    pub network: String,
    pub host_uid: u32,
    pub step_uid: u32,
    pub scratch_bytes: u64,
    pub timeout_secs: u64,
    pub mounts: Vec<String>,
    pub limits: LimitsRecord,
    /// Per-process limits applied inside, e.g. `RLIMIT_CORE=0, RLIMIT_NOFILE=4096`.
    pub rlimits: String,
    /// One line on the seccomp filter.
    pub seccomp: String,
    /// Hex sha256 of the seccomp filter's BPF program as installed.
    pub seccomp_sha256: String,
}

/// What the whole step (every process it started) used, read from its cgroup.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct UsageRecord {
    pub peak_memory_bytes: u64,
    /// User plus system CPU time.
    pub cpu_time_ms: u64,
    pub peak_pids: u64,
}

/// A limit the step ran into.
///
/// Counted: OOM kills, forks refused at the pids limit, the timeout. Not counted: CPU
/// throttling, a full scratch tmpfs or `/out` (the step sees ENOSPC), rlimits, and seccomp
/// denials (the filter returns EPERM; the kernel offers no per-filter counter without
/// user-notification, which would put the worker in every denied call's path).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum LimitEventRecord {
    MemoryLimit { limit_bytes: u64 },
    PidsLimit { limit: u64 },
    Timeout,
}

/// The resource limits a step ran under.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LimitsRecord {
    pub memory_bytes: u64,
    pub pids: u64,
    /// Thousandths of a CPU.
    pub millicpus: u64,
    pub open_files: u64,
}

/// Everything recorded about one executed step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
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
    #[schemars(with = "String", extend("format" = "date-time"))]
    pub started_on: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String", extend("format" = "date-time"))]
    pub finished_on: OffsetDateTime,
    pub log: LogRecord,
    pub sandbox: SandboxRecord,
    /// Resource peaks; zero when the step never started.
    pub usage: UsageRecord,
    /// Limits the step ran into, in the order memory, pids, timeout.
    pub events: Vec<LimitEventRecord>,
}

impl StepRecord {
    /// The schema identifier of this record format.
    pub const SCHEMA: &'static str = "https://kiln.dev/step-record/v2";
}
