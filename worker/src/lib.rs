//! kiln's worker: runs one step. It stages the step's inputs from the store, drives the
//! sandbox, collects the declared outputs back into the store and reports a [`StepRecord`].
//!
//! Invariant: a step never sees a path that is not its rootfs, a declared input, its own `/out`
//! or its scratch space. Invariant: the worker never reads the signing key or the database.
#![forbid(unsafe_code)]

pub mod collect;
mod out_fs;
pub mod remote;
mod slots;
pub mod stage;
mod step_log;

pub use slots::IdRange;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kiln_core::{
    ExitRecord, LimitEventRecord, LimitsRecord, LogRecord, OutputRecord, SandboxRecord, StepRecord,
    StepSpec, UsageRecord,
};
use kiln_mirror::BlobStore;
use kiln_sandbox::{
    HelperCommand, IdMap, Launcher, LimitEvent, Limits, Outcome, RunReport, SandboxError,
    SandboxSpec,
};
use out_fs::Tmpfs;
use slots::{Slot, SlotPool};
use step_log::StepLog;
use time::OffsetDateTime;

/// The uid and gid a step runs as inside its sandbox.
pub const STEP_ID: u32 = 1000;

/// How a worker runs steps on this machine.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Where per-step staging directories (each holds the step's `/out` mount point) live, on
    /// a small tmpfs the worker mounts there while it runs.
    pub work_root: PathBuf,
    /// How to start the sandbox helper process (the worker keeps one running as its launcher).
    pub helper: HelperCommand,
    /// Unprivileged host ids; each running step's uid 1000 maps to one of its own.
    pub host_ids: IdRange,
    /// Size cap of each step's `/work` and `/tmp`.
    pub scratch_bytes: u64,
    /// Limits for steps whose pipeline does not set them.
    pub default_limits: Limits,
    /// Most bytes a step's declared outputs may add up to.
    pub max_output_bytes: u64,
}

impl WorkerConfig {
    /// Size cap of a step's `/work` and `/tmp` unless configured otherwise.
    pub const DEFAULT_SCRATCH_BYTES: u64 = 1 << 30;
    /// Most bytes a step may leave in `/out` unless configured otherwise.
    pub const DEFAULT_MAX_OUTPUT_BYTES: u64 = 4 << 30;

    /// A worker under `data_dir` (`work/` for staging) with the default scratch, output and
    /// resource limits, starting its sandbox with `helper`.
    pub fn with_defaults(data_dir: &Path, helper: HelperCommand, host_ids: IdRange) -> Self {
        Self {
            work_root: data_dir.join("work"),
            helper,
            host_ids,
            scratch_bytes: Self::DEFAULT_SCRATCH_BYTES,
            default_limits: Limits::default(),
            max_output_bytes: Self::DEFAULT_MAX_OUTPUT_BYTES,
        }
    }
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
    #[error("cannot make the step's log")]
    Log(#[source] std::io::Error),
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
    slots: SlotPool,
    /// Builds every step's sandbox; started on first use, and again after it died.
    launcher: Mutex<Option<Arc<Launcher>>>,
    /// Removes finished steps' staging directories, off the steps' critical path.
    cleaner: Cleaner,
    /// The tmpfs at `config.work_root`, if it could be mounted. Declared after the cleaner,
    /// so it is unmounted once the cleaner has removed everything queued.
    _staging: Option<Tmpfs>,
}

/// Removes finished steps' staging directories on a thread of its own. The step's record does
/// not need them gone, and where the staging tmpfs could not be mounted removing them is slow:
/// on this VM's ext4 (mounted `discard`), with other builds writing, each `rmdir` took
/// 6 ms median per step (p90 15 ms) on the report's critical path. Dropping
/// it waits until everything queued is removed, so a worker that exits leaves nothing behind.
#[derive(Debug)]
struct Cleaner {
    queue: Option<mpsc::Sender<PathBuf>>,
    thread: Option<JoinHandle<()>>,
}

impl Cleaner {
    fn start() -> Self {
        let (queue, paths) = mpsc::channel::<PathBuf>();
        let thread = std::thread::Builder::new()
            .name("kiln-cleaner".into())
            .spawn(move || paths.into_iter().for_each(|path| remove_path(&path)))
            .ok();
        Self {
            queue: thread.is_some().then_some(queue),
            thread,
        }
    }

    /// Removes `path` (a directory tree or a file) soon; at once if the thread is missing.
    fn remove(&self, path: PathBuf) {
        match &self.queue {
            Some(queue) => {
                if let Err(mpsc::SendError(path)) = queue.send(path) {
                    remove_path(&path);
                }
            }
            None => remove_path(&path),
        }
    }
}

impl Drop for Cleaner {
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn remove_path(path: &Path) {
    let removed = match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err),
    };
    if let Err(err) = removed {
        tracing::warn!(path = %path.display(), %err, "cannot remove a finished step's files");
    }
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
        let slots = SlotPool::new(config.host_ids);
        out_fs::sweep_stale_mounts(&config.work_root);
        let staging = match Tmpfs::staging(&config.work_root) {
            Ok(staging) => Some(staging),
            Err(err) => {
                tracing::warn!(path = %config.work_root.display(), %err,
                    "cannot mount the staging tmpfs; staging on disk");
                None
            }
        };
        Self {
            inner: Arc::new(Inner {
                config,
                store,
                slots,
                launcher: Mutex::new(None),
                cleaner: Cleaner::start(),
                _staging: staging,
            }),
        }
    }

    /// Runs one step to completion and reports what happened. Never fails: a step that could not
    /// be run is reported with [`ExitRecord::Failed`] and the reason, also appended to its log.
    pub async fn run_step(&self, spec: StepSpec) -> StepRecord {
        self.run_step_tapped(spec, None).await
    }

    /// [`Worker::run_step`], handing `tap` a reader of the step's log as soon as the log exists,
    /// so that a caller can stream it while the step runs (the record's log is still the whole
    /// log). `tap` is dropped unsent when the step fails before its log is made.
    pub async fn run_step_tapped(&self, spec: StepSpec, tap: Option<LogTap>) -> StepRecord {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.run_blocking(spec, tap))
            .await
            .expect("the step runner does not panic")
    }
}

/// Receives a reader of a running step's log ([`Worker::run_step_tapped`]).
pub type LogTap = tokio::sync::oneshot::Sender<fs::File>;

/// What running a step produced, whether or not it succeeded.
struct Executed {
    exit: ExitRecord,
    outputs: Vec<OutputRecord>,
    sandbox: Option<SandboxRecord>,
    usage: UsageRecord,
    events: Vec<LimitEventRecord>,
    /// Where the sandbox's part of the step went, for the `sandbox phases` debug event.
    phases: Option<SandboxPhases>,
}

/// Microseconds per phase from the sandbox's start to the outputs collected: the launcher's
/// round trip (`sandbox_us`), of which the helper's `setup_us` (start to the step's exec) and
/// `command_us` (exec to pid 1's exit); then `collect_us`. Measured on the worker's monotonic
/// clock; `scripts/bench-dag.sh` reads them.
struct SandboxPhases {
    sandbox_us: u128,
    setup_us: u128,
    command_us: u128,
    collect_us: u128,
    /// When the outputs were collected: the `/out` unmount follows.
    collected: Instant,
}

impl Inner {
    fn run_blocking(&self, spec: StepSpec, tap: Option<LogTap>) -> StepRecord {
        let slot = self.slots.acquire();
        let started_on = OffsetDateTime::now_utc();
        // Named by slot too: a step handed out again (its first lease expired while it still
        // ran here) must not share the first attempt's directory. Flat, so that nothing is
        // left per run once the cleaner removed it.
        let dir = self
            .config
            .work_root
            .join(format!("{}.{}@{}", spec.run_id, spec.step, slot.host_id));
        let mut log = None;
        let executed = StepLog::new()
            .map_err(StepError::Log)
            .and_then(|made| self.execute(&spec, &slot, &dir, log.insert(made), tap))
            .unwrap_or_else(|err| {
                let reason = error_chain(&err);
                tracing::warn!(step = %spec.step, %reason, "step could not be run");
                Executed {
                    exit: ExitRecord::Failed { reason },
                    outputs: Vec::new(),
                    sandbox: None,
                    usage: UsageRecord::default(),
                    events: Vec::new(),
                    phases: None,
                }
            });
        let executed_at = Instant::now();
        if let (ExitRecord::Failed { reason } | ExitRecord::Killed { reason }, Some(log)) =
            (&executed.exit, &log)
        {
            log.append_line(&format!("kiln: step failed: {reason}"));
        }
        let log = self.store_log(log.as_ref());
        let logged_at = Instant::now();
        if !spec.outputs.is_empty() {
            self.cleaner.remove(dir);
        }
        if let Some(p) = &executed.phases {
            tracing::debug!(step = %spec.step, run = %spec.run_id, sandbox_us = p.sandbox_us,
                setup_us = p.setup_us, command_us = p.command_us, collect_us = p.collect_us,
                unmount_us = executed_at.duration_since(p.collected).as_micros(),
                store_log_us = logged_at.duration_since(executed_at).as_micros(),
                cleanup_us = logged_at.elapsed().as_micros(), "sandbox phases");
        }
        let limits = self.limits(&spec);
        StepRecord {
            run_id: spec.run_id.clone(),
            step: spec.step.clone(),
            command: spec.command.clone(),
            env: spec.env.clone(),
            rootfs: spec.rootfs.clone(),
            inputs: spec.inputs.clone(),
            outputs: executed.outputs,
            exit: executed.exit,
            started_on,
            finished_on: OffsetDateTime::now_utc(),
            log,
            usage: executed.usage,
            events: executed.events,
            sandbox: executed
                .sandbox
                .unwrap_or_else(|| self.sandbox_record(&spec, slot.host_id, &limits, None)),
        }
    }

    /// Runs `spec` through the worker's launcher (see [`Launcher`]), starting it if needed. A
    /// launcher found dead is forgotten, so the next step starts a new one.
    fn run_sandbox(&self, spec: &SandboxSpec, log: fs::File) -> Result<RunReport, SandboxError> {
        let launcher = {
            let mut current = self.launcher.lock().unwrap_or_else(PoisonError::into_inner);
            match &*current {
                Some(launcher) => launcher.clone(),
                None => current
                    .insert(Arc::new(Launcher::start(&self.config.helper)?))
                    .clone(),
            }
        };
        let report = launcher.run_report(spec, log);
        if let Err(SandboxError::LauncherGone) = report {
            tracing::warn!("the sandbox launcher is gone; the next step starts a new one");
            let mut current = self.launcher.lock().unwrap_or_else(PoisonError::into_inner);
            if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, &launcher)) {
                *current = None;
            }
        }
        report
    }

    /// The pipeline's requests, with this worker's defaults where it is silent.
    fn limits(&self, spec: &StepSpec) -> Limits {
        let defaults = self.config.default_limits;
        Limits {
            memory_bytes: spec.resources.memory_bytes.unwrap_or(defaults.memory_bytes),
            pids: spec.resources.pids.unwrap_or(defaults.pids),
            millicpus: spec.resources.millicpus.unwrap_or(defaults.millicpus),
            open_files: defaults.open_files,
        }
    }

    fn sandbox_spec(
        &self,
        spec: &StepSpec,
        host_id: u32,
        rootfs: PathBuf,
        inputs: Vec<kiln_sandbox::InputMount>,
        out_dir: Option<PathBuf>,
    ) -> SandboxSpec {
        SandboxSpec {
            rootfs,
            inputs,
            out_dir,
            scratch_bytes: self.config.scratch_bytes,
            argv: vec!["/bin/sh".into(), "-c".into(), spec.command.clone()],
            env: spec.effective_env(),
            ids: IdMap {
                host_uid: host_id,
                host_gid: host_id,
                step_uid: STEP_ID,
                step_gid: STEP_ID,
            },
            timeout: Duration::from_secs(spec.timeout_secs),
            hostname: "kiln".into(),
            limits: self.limits(spec),
        }
    }

    fn execute(
        &self,
        spec: &StepSpec,
        slot: &Slot<'_>,
        dir: &Path,
        log: &StepLog,
        tap: Option<LogTap>,
    ) -> Result<Executed, StepError> {
        if let (Some(tap), Ok(reader)) = (tap, log.reader()) {
            let _ = tap.send(reader);
        }
        let rootfs = self
            .store
            .rootfs(&spec.rootfs.sha256)
            .map_err(|e| StepError::Rootfs(Box::new(e)))?;
        let inputs = stage::stage_inputs(&self.store, &spec.inputs)?;
        // Unmounted when this function returns, after the outputs are collected. A step that
        // declares no outputs gets a `/out` of the sandbox's own instead (see `SandboxSpec`).
        let out = match spec.outputs.is_empty() {
            true => None,
            false => Some(self.out_fs(dir, slot)?),
        };
        let out_dir = out.as_ref().map(|(dir, _)| dir.clone());
        let sandbox_spec = self.sandbox_spec(spec, slot.host_id, rootfs, inputs, out_dir);
        let description = kiln_sandbox::describe(&sandbox_spec);
        let record =
            self.sandbox_record(spec, slot.host_id, &sandbox_spec.limits, Some(description));
        tracing::info!(step = %spec.step, run = %spec.run_id, host_uid = slot.host_id, "step started");
        let sandbox_started = Instant::now();
        let report = self.run_sandbox(&sandbox_spec, log.writer().map_err(StepError::Log)?)?;
        let sandbox_us = sandbox_started.elapsed().as_micros();
        let exit = exit_record(&report, spec.timeout_secs);
        let collected = match &out {
            Some((out_dir, _)) if exit.success() => collect::collect(
                out_dir,
                &spec.outputs,
                &self.store,
                self.config.max_output_bytes,
            ),
            _ => Ok(Vec::new()),
        };
        let collected_at = Instant::now();
        let (exit, outputs) = match collected {
            Ok(outputs) => (exit, outputs),
            Err(err) => (
                ExitRecord::Failed {
                    reason: error_chain(&err),
                },
                Vec::new(),
            ),
        };
        Ok(Executed {
            exit,
            outputs,
            sandbox: Some(record),
            usage: UsageRecord {
                peak_memory_bytes: report.usage.peak_memory_bytes,
                cpu_time_ms: report.usage.cpu_time.as_millis() as u64,
                peak_pids: report.usage.peak_pids,
            },
            events: report.events.iter().map(|e| event_record(*e)).collect(),
            phases: Some(SandboxPhases {
                sandbox_us,
                setup_us: report.timing.setup.as_micros(),
                command_us: report.timing.command.as_micros(),
                collect_us: collected_at.duration_since(sandbox_started).as_micros() - sandbox_us,
                collected: collected_at,
            }),
        })
    }

    /// A fresh staging directory `dir` with the step's `/out` tmpfs mounted in it.
    fn out_fs(&self, dir: &Path, slot: &Slot<'_>) -> Result<(PathBuf, Tmpfs), StepError> {
        let _ = fs::remove_dir_all(dir);
        fs::create_dir_all(dir).map_err(prepare(dir))?;
        let out_dir = dir.join("out");
        fs::create_dir(&out_dir).map_err(prepare(&out_dir))?;
        let mounted = Tmpfs::out(&out_dir, self.config.max_output_bytes, slot.host_id)
            .map_err(prepare(&out_dir))?;
        Ok((out_dir, mounted))
    }

    fn sandbox_record(
        &self,
        spec: &StepSpec,
        host_id: u32,
        limits: &Limits,
        description: Option<kiln_sandbox::Description>,
    ) -> SandboxRecord {
        // A step that never reached the sandbox ran under nothing: empty settings.
        let d = description.unwrap_or_else(|| kiln_sandbox::Description {
            namespaces: Vec::new(),
            mounts: Vec::new(),
            identity: String::new(),
            seccomp: String::new(),
            seccomp_sha256: String::new(),
            rlimits: String::new(),
        });
        SandboxRecord {
            namespaces: d.namespaces,
            network: "none (loopback only)".into(),
            host_uid: host_id,
            step_uid: STEP_ID,
            scratch_bytes: self.config.scratch_bytes,
            timeout_secs: spec.timeout_secs,
            mounts: d.mounts,
            limits: LimitsRecord {
                memory_bytes: limits.memory_bytes,
                pids: limits.pids,
                millicpus: limits.millicpus,
                open_files: limits.open_files,
            },
            rlimits: d.rlimits,
            seccomp: d.seccomp,
            seccomp_sha256: d.seccomp_sha256,
        }
    }

    fn store_log(&self, log: Option<&StepLog>) -> LogRecord {
        let stored = log
            .ok_or_else(|| "no log was made".to_owned())
            .and_then(|log| log.reader().map_err(|e| e.to_string()))
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

/// How the step ended; an OOM kill explains a death better than the signal or the shell's 137.
fn exit_record(report: &RunReport, timeout_secs: u64) -> ExitRecord {
    if let Some(event) = report.memory_limit() {
        return ExitRecord::Killed {
            reason: event.to_string(),
        };
    }
    match report.outcome {
        Outcome::Exited(code) => ExitRecord::Exited { code },
        Outcome::Signaled(signal) => ExitRecord::Signaled { signal },
        Outcome::TimedOut => ExitRecord::TimedOut {
            after_secs: timeout_secs,
        },
    }
}

fn event_record(event: LimitEvent) -> LimitEventRecord {
    match event {
        LimitEvent::MemoryLimit { limit_bytes } => LimitEventRecord::MemoryLimit { limit_bytes },
        LimitEvent::PidsLimit { limit } => LimitEventRecord::PidsLimit { limit },
        LimitEvent::Timeout => LimitEventRecord::Timeout,
    }
}

fn prepare(path: &Path) -> impl FnOnce(std::io::Error) -> StepError + '_ {
    move |source| StepError::Prepare {
        path: path.to_owned(),
        source,
    }
}
