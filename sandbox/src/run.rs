//! The worker's side: start the helper, hand it the spec, read how the step ended.

use std::fs::File;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::SandboxError;
use crate::protocol;
use crate::spec::SandboxSpec;

/// How to start the helper process, e.g. `kiln sandbox-helper`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HelperCommand {
    /// Executable; started directly, with an empty environment.
    pub program: PathBuf,
    /// Arguments after the program name.
    pub args: Vec<String>,
}

/// How the command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// It exited with this code.
    Exited(i32),
    /// It was killed by this signal.
    Signaled(i32),
    /// It ran past the spec's timeout; everything in its pid namespace was killed.
    TimedOut,
}

/// Where the time went, as measured by the helper.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timing {
    /// From the helper's start to the command's `execve`: mounts, namespaces, privilege drop.
    pub setup: Duration,
    /// From the command's `execve` to its exit (or its kill at the deadline).
    pub command: Duration,
}

/// An [`Outcome`] with its [`Timing`], what the step used and the limits it ran into.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunReport {
    pub outcome: Outcome,
    pub timing: Timing,
    /// Read from the step's cgroup after every process of the step was killed.
    pub usage: ResourceUsage,
    /// Limits the step ran into, at most one of each kind, in a fixed order: memory, pids,
    /// timeout. Empty for a step that stayed within its limits.
    pub events: Vec<LimitEvent>,
}

impl RunReport {
    /// The memory limit event, if the kernel OOM-killed a process of the step. When present it
    /// explains the outcome better than the signal does (an OOM kill is a SIGKILL, and a shell
    /// reports a killed child as exit code 137).
    pub fn memory_limit(&self) -> Option<LimitEvent> {
        self.events
            .iter()
            .copied()
            .find(|e| matches!(e, LimitEvent::MemoryLimit { .. }))
    }
}

/// What the whole step (every process it started, together) used, from its cgroup.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceUsage {
    /// Highest memory charge of the step: RSS, page cache and tmpfs pages it wrote.
    pub peak_memory_bytes: u64,
    /// CPU time, user plus system, of every process of the step.
    pub cpu_time: Duration,
    /// Most processes and threads alive at once (where the kernel keeps a peak, `pids.peak`,
    /// since Linux 6.1; otherwise the count at the end, which is 0 after the kill).
    pub peak_pids: u64,
}

/// A limit the step ran into. Closed: the step record and the worker's messages match on it.
///
/// Counted: OOM kills inside the step's cgroup (the kernel's own counter, so kills of any
/// process of the step count, not only of its main command), forks refused at the pids limit,
/// and the wall-clock timeout. Not counted here: CPU throttling (a limit that slows, not one
/// that stops), scratch tmpfs full (the step sees `ENOSPC`), rlimits and seccomp denials.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum LimitEvent {
    /// The kernel OOM-killed at least one process of the step at this memory limit.
    MemoryLimit { limit_bytes: u64 },
    /// At least one fork or clone failed because the step had this many processes.
    PidsLimit { limit: u64 },
    /// The step ran past its timeout and was killed.
    Timeout,
}

impl std::fmt::Display for LimitEvent {
    /// `killed: memory limit 512MiB exceeded`, `pids limit 256 reached`, `killed: timeout`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::MemoryLimit { limit_bytes } => {
                write!(f, "killed: memory limit {} exceeded", Bytes(*limit_bytes))
            }
            Self::PidsLimit { limit } => write!(f, "pids limit {limit} reached"),
            Self::Timeout => f.write_str("killed: timeout"),
        }
    }
}

/// A byte count in the largest binary unit that divides it exactly, else with one decimal.
struct Bytes(u64);

impl std::fmt::Display for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const UNITS: [(&str, u64); 4] = [
            ("TiB", 1 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ];
        let n = self.0;
        for (unit, size) in UNITS {
            if n >= size {
                return if n.is_multiple_of(size) {
                    write!(f, "{}{unit}", n / size)
                } else {
                    write!(f, "{:.1}{unit}", n as f64 / size as f64)
                };
            }
        }
        write!(f, "{n}B")
    }
}

/// Runs `spec` in a sandbox built by a helper started for this step alone (`helper`); the
/// command's stdout and stderr go to `log`. A worker running many steps uses a
/// [`crate::Launcher`] instead, which saves starting a process per step. Synchronous: blocks the calling thread until the command ended (call it from
/// `spawn_blocking`). That thread must stay alive meanwhile: the helper dies with it.
pub fn run(helper: &HelperCommand, spec: &SandboxSpec, log: File) -> Result<Outcome, SandboxError> {
    run_report(helper, spec, log).map(|report| report.outcome)
}

/// [`run`], with timings.
pub fn run_report(
    helper: &HelperCommand,
    spec: &SandboxSpec,
    log: File,
) -> Result<RunReport, SandboxError> {
    spec.check()?;
    let request = protocol::encode_request(std::process::id(), spec)?;
    let spawn = |source| SandboxError::SpawnHelper {
        program: helper.program.clone(),
        source,
    };
    let mut child = Command::new(&helper.program)
        .args(&helper.args)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .map_err(spawn)?;
    // The helper reads the whole request before doing anything else, then closes stdin.
    let sent = child
        .stdin
        .take()
        .map_or(Ok(()), |mut stdin| stdin.write_all(&request));
    let mut report = Vec::new();
    let read = child
        .stdout
        .take()
        .map_or(Ok(0), |mut stdout| stdout.read_to_end(&mut report));
    let status = child.wait().map_err(SandboxError::WaitHelper)?;
    read.map_err(SandboxError::ReadReport)?;
    if report.is_empty() {
        // Whether or not the request got through, the helper died without a word.
        tracing::warn!(%status, send_error = ?sent.err(), "sandbox helper died without a report");
        return Err(SandboxError::HelperDied { status });
    }
    protocol::decode_report(&report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_events_read_like_the_step_record_message() {
        let event = LimitEvent::MemoryLimit {
            limit_bytes: 512 << 20,
        };
        assert_eq!(event.to_string(), "killed: memory limit 512MiB exceeded");
        let odd = LimitEvent::MemoryLimit {
            limit_bytes: (3 << 29) + 1,
        };
        assert_eq!(odd.to_string(), "killed: memory limit 1.5GiB exceeded");
        let tiny = LimitEvent::MemoryLimit { limit_bytes: 1000 };
        assert_eq!(tiny.to_string(), "killed: memory limit 1000B exceeded");
        assert_eq!(
            LimitEvent::PidsLimit { limit: 64 }.to_string(),
            "pids limit 64 reached"
        );
        assert_eq!(LimitEvent::Timeout.to_string(), "killed: timeout");
    }

    #[test]
    fn limit_events_have_a_tagged_wire_form() {
        let json = serde_json::to_string(&LimitEvent::PidsLimit { limit: 8 }).unwrap();
        assert_eq!(json, r#"{"kind":"pids_limit","limit":8}"#);
    }
}
