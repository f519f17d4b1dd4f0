//! The worker's side: start the helper, hand it the spec, read how the step ended.

use std::fs::File;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::SandboxError;
use crate::protocol::{self, HelperReport, HelperRequest};
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

/// An [`Outcome`] with its [`Timing`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunReport {
    pub outcome: Outcome,
    pub timing: Timing,
}

/// Runs `spec` in a sandbox built by the helper `helper`; the command's stdout and stderr go to
/// `log`. Synchronous: blocks the calling thread until the command ended (call it from
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
    let request = HelperRequest {
        version: protocol::VERSION,
        parent_pid: std::process::id() as i32,
        spec: spec.clone(),
    };
    let request = serde_json::to_vec(&request).map_err(SandboxError::Encode)?;
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
    match serde_json::from_slice(&report) {
        Ok(HelperReport::Finished(report)) => Ok(report),
        Ok(HelperReport::Failed(err)) => Err(SandboxError::Setup(err)),
        Err(err) => Err(SandboxError::BadReport {
            message: err.to_string(),
        }),
    }
}
