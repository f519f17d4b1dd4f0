//! kiln's worker: runs one step. It stages the step's inputs from the store, drives the
//! sandbox, collects the declared outputs back into the store and reports a [`StepRecord`].
//!
//! Invariant: a step never sees a path that is not its rootfs, a declared input, its own `/out`
//! or its scratch space. Invariant: the worker never reads the signing key or the database.
#![forbid(unsafe_code)]

pub mod collect;
pub mod stage;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kiln_core::{ExitRecord, LogRecord, OutputRecord, SandboxRecord, StepRecord, StepSpec};
use kiln_mirror::BlobStore;
use kiln_sandbox::{HelperCommand, IdMap, Outcome, SandboxSpec};
use time::OffsetDateTime;

/// The uid and gid a step runs as inside its sandbox.
pub const STEP_ID: u32 = 1000;

/// How a worker runs steps on this machine.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Where per-step staging directories live; wiped per step.
    pub work_root: PathBuf,
    /// How to start the sandbox helper process.
    pub helper: HelperCommand,
    /// The unprivileged host uid/gid a step's uid 1000 maps to.
    pub host_id: u32,
    /// Size cap of each step's `/work` and `/tmp`.
    pub scratch_bytes: u64,
}

/// Why a step could not be run (as opposed to: it ran and failed).
#[derive(Debug, thiserror::Error)]
enum StepError {
    #[error(transparent)]
    Stage(#[from] stage::StageError),
    #[error(transparent)]
    Collect(#[from] collect::CollectError),
    #[error("cannot prepare the rootfs")]
    Rootfs(#[source] Box<kiln_mirror::StoreError>),
    #[error("cannot prepare {path}")]
    Prepare {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("sandbox")]
    Sandbox(#[from] kiln_sandbox::SandboxError),
}

/// A worker: cheap to clone, shared by concurrently running steps.
#[derive(Clone, Debug)]
pub struct Worker {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: WorkerConfig,
    store: BlobStore,
}

/// The chain of causes of an error, on one line.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}

impl Worker {
    /// A worker over `store`.
    pub fn new(config: WorkerConfig, store: BlobStore) -> Self {
        Self {
            inner: Arc::new(Inner { config, store }),
        }
    }

    /// Runs one step to completion and reports what happened. Never fails: a step that could not
    /// be run is reported with [`ExitRecord::Failed`] and the reason, also appended to its log.
    pub async fn run_step(&self, spec: StepSpec) -> StepRecord {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.run_blocking(spec))
            .await
            .expect("the step runner does not panic")
    }
}

impl Inner {
    fn run_blocking(&self, spec: StepSpec) -> StepRecord {
        let started_on = OffsetDateTime::now_utc();
        let dir = self.config.work_root.join(&spec.run_id).join(&spec.step);
        let log_path = dir.with_extension("log");
        let (exit, outputs, sandbox) = match self.execute(&spec, &dir, &log_path) {
            Ok(done) => done,
            Err(err) => {
                let reason = error_chain(&err);
                tracing::warn!(step = %spec.step, %reason, "step could not be run");
                (ExitRecord::Failed { reason }, Vec::new(), None)
            }
        };
        if let ExitRecord::Failed { reason } = &exit {
            append_line(&log_path, &format!("kiln: step failed: {reason}"));
        }
        let log = self.store_log(&log_path);
        let _ = fs::remove_dir_all(&dir);
        let _ = fs::remove_file(&log_path);
        StepRecord {
            run_id: spec.run_id.clone(),
            step: spec.step.clone(),
            command: spec.command.clone(),
            env: spec.env.clone(),
            rootfs: spec.rootfs.clone(),
            inputs: spec.inputs.clone(),
            outputs,
            exit,
            started_on,
            finished_on: OffsetDateTime::now_utc(),
            log,
            sandbox: sandbox.unwrap_or_else(|| self.sandbox_record(&spec, Vec::new())),
        }
    }

    fn execute(
        &self,
        spec: &StepSpec,
        dir: &Path,
        log_path: &Path,
    ) -> Result<(ExitRecord, Vec<OutputRecord>, Option<SandboxRecord>), StepError> {
        let _ = fs::remove_dir_all(dir);
        fs::create_dir_all(dir).map_err(prepare(dir))?;
        let log = fs::File::create(log_path).map_err(prepare(log_path))?;
        let rootfs = self
            .store
            .rootfs(&spec.rootfs.sha256)
            .map_err(|e| StepError::Rootfs(Box::new(e)))?;
        let inputs = stage::stage_inputs(&self.store, &spec.inputs, &dir.join("in"))?;
        let out_dir = dir.join("out");
        fs::create_dir(&out_dir).map_err(prepare(&out_dir))?;
        let id = Some(self.config.host_id);
        std::os::unix::fs::chown(&out_dir, id, id).map_err(prepare(&out_dir))?;
        let sandbox_spec = SandboxSpec {
            rootfs,
            inputs,
            out_dir: out_dir.clone(),
            scratch_bytes: self.config.scratch_bytes,
            argv: vec!["/bin/sh".into(), "-c".into(), spec.command.clone()],
            env: spec.effective_env(),
            ids: IdMap {
                host_uid: self.config.host_id,
                host_gid: self.config.host_id,
                step_uid: STEP_ID,
                step_gid: STEP_ID,
            },
            timeout: Duration::from_secs(spec.timeout_secs),
            hostname: "kiln".into(),
            limits: kiln_sandbox::Limits::default(),
        };
        let description = kiln_sandbox::describe(&sandbox_spec);
        let mut record = self.sandbox_record(spec, description.mounts);
        record.namespaces = description.namespaces;
        tracing::info!(step = %spec.step, run = %spec.run_id, "step started");
        let outcome = kiln_sandbox::run(&self.config.helper, &sandbox_spec, log)?;
        let exit = match outcome {
            Outcome::Exited(code) => ExitRecord::Exited { code },
            Outcome::Signaled(signal) => ExitRecord::Signaled { signal },
            Outcome::TimedOut => ExitRecord::TimedOut {
                after_secs: spec.timeout_secs,
            },
        };
        if !exit.success() {
            return Ok((exit, Vec::new(), Some(record)));
        }
        let outputs = collect::collect(&out_dir, &spec.outputs, &self.store)?;
        Ok((exit, outputs, Some(record)))
    }

    fn sandbox_record(&self, spec: &StepSpec, mounts: Vec<String>) -> SandboxRecord {
        SandboxRecord {
            namespaces: ["user", "mount", "pid", "network", "ipc", "uts"]
                .map(String::from)
                .to_vec(),
            network: "none (loopback only)".into(),
            host_uid: self.config.host_id,
            step_uid: STEP_ID,
            scratch_bytes: self.config.scratch_bytes,
            timeout_secs: spec.timeout_secs,
            mounts,
        }
    }

    fn store_log(&self, log_path: &Path) -> LogRecord {
        let stored = fs::File::open(log_path)
            .map_err(|e| e.to_string())
            .and_then(|f| self.store.put_reader(f).map_err(|e| error_chain(&e)));
        match stored {
            Ok(s) => LogRecord {
                sha256: s.sha256,
                size: s.size,
            },
            Err(reason) => {
                tracing::error!(%reason, "cannot store step log");
                let empty = self
                    .store
                    .put_reader(std::io::empty())
                    .expect("the store accepts an empty blob");
                LogRecord {
                    sha256: empty.sha256,
                    size: 0,
                }
            }
        }
    }
}

fn prepare(path: &Path) -> impl FnOnce(std::io::Error) -> StepError + '_ {
    move |source| StepError::Prepare {
        path: path.to_owned(),
        source,
    }
}

fn append_line(path: &Path, line: &str) {
    if let Ok(mut f) = fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = writeln!(f, "{line}");
    }
}
