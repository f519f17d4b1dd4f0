//! The daemon's dispatcher: submitted runs, worker leases, reports, lease expiry and
//! publishing a finished run. Transport-neutral: the HTTP layer ([`crate::http`]) is a thin
//! front over it.
//!
//! Every transition is one transaction in [`State`], so a restarted daemon resumes where it
//! stopped: runs that were running stay running, leased steps keep their leases until they
//! expire, and a run whose last step reported just before a crash is published by the next
//! [`Dispatcher::tick`].
//!
//! Invariant: the dispatcher never runs step code; it hands out `StepSpec`s and receives
//! `StepRecord`s.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln_attest::keys::KeyPair;
use kiln_core::api::v1;
use kiln_core::{ExitRecord, Sha256Digest};
use kiln_pipelines::Diagnostics;
use time::OffsetDateTime;

use crate::controller::Controller;
use crate::run::{AcceptError, AcceptedRun, Dispatch, PipelineSource};
use crate::schedule::SpecError;
use crate::state::{Claimed, LeaseStatus, NewWorker, NextLease, ReportOutcome, StateError};

/// Where the dispatcher reads the time: the system clock, or a test's.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> OffsetDateTime;
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// Lease policy.
#[derive(Clone)]
pub struct DispatchConfig {
    /// How long a lease lives without a heartbeat.
    pub lease_ttl: Duration,
    /// How many leases a step gets before it fails.
    pub max_attempts: u32,
    /// How often a waiting claim looks again without being woken. Steps become ready here
    /// only through this dispatcher, which wakes its waiting claims; but daemons sharing a
    /// PostgreSQL database do not wake each other's, so a step submitted to or freed by
    /// another daemon is seen within this.
    pub claim_recheck: Duration,
    pub clock: Arc<dyn Clock>,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        Self {
            lease_ttl: Duration::from_secs(30),
            max_attempts: 3,
            claim_recheck: Duration::from_secs(1),
            clock: Arc::new(SystemClock),
        }
    }
}

/// Why a submission was refused.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("the pipeline is malformed")]
    Malformed(Diagnostics),
    #[error("the run was refused")]
    Refused(#[source] AcceptError),
    #[error("request id {request_id:?} was already used for another pipeline (sha256 {existing})")]
    RequestIdReused {
        request_id: String,
        existing: String,
    },
    #[error("request id {request_id:?} was already used by another team; pick another")]
    RequestIdTaken { request_id: String },
    #[error(transparent)]
    State(#[from] StateError),
}

/// What a submission led to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Submitted {
    /// A new run was accepted.
    Created { run_id: String },
    /// The request id names an earlier run of the same pipeline.
    Existing { run_id: String },
}

/// Why a worker's lease operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("worker {worker_id} is not registered (register with POST /v1/workers first)")]
    UnknownWorker { worker_id: String },
    #[error(
        "lease {lease_id} is not current for worker {worker_id}: it expired, was reassigned, or is another worker's"
    )]
    NotCurrent { lease_id: String, worker_id: String },
    #[error("the reported {what} (sha256 {sha256}) was not uploaded; PUT /v1/blobs/{sha256} first")]
    MissingBlob { what: String, sha256: Sha256Digest },
    #[error("lease {lease_id} is for step {step} of run {run_id}, but the record is for another")]
    WrongStep {
        lease_id: String,
        run_id: String,
        step: String,
    },
    #[error("run {run_id}: cannot build the step's spec")]
    Spec {
        run_id: String,
        #[source]
        source: SpecError,
    },
    #[error(transparent)]
    State(#[from] StateError),
}

/// How often claims look for expired leases at most, in ms (see `Dispatcher::expire_soon`).
const EXPIRY_EVERY_MS: i64 = 250;

/// The longest a claim is held open waiting for a step ([`Dispatcher::claim_waiting`]); a
/// longer `wait_ms` is cut to this. Well under the 30 s a `kiln` client gives a request.
pub const MAX_CLAIM_WAIT: Duration = Duration::from_secs(10);

/// The dispatcher: one per daemon.
pub struct Dispatcher {
    controller: Arc<Controller>,
    key: KeyPair,
    config: DispatchConfig,
    /// Accepted runs by id; immutable once accepted, so a cache of what the database holds.
    runs: Mutex<HashMap<String, Arc<AcceptedRun>>>,
    /// Serialises publishing, so a run is published once even when a report and the expiry
    /// tick finish it at the same time.
    finishing: tokio::sync::Mutex<()>,
    /// Counters of what happened here, for `GET /metrics`.
    metrics: crate::metrics::Metrics,
    /// Workers known to be registered. Workers are never unregistered, so a cache of the
    /// database; it spares every claim a query.
    known_workers: Mutex<HashSet<String>>,
    /// When a claim last looked for expired leases, in unix ms ([`Self::expire_soon`]).
    last_expiry_ms: AtomicI64,
    /// Wakes claims waiting for a step ([`Self::claim_waiting`]) when one may have become
    /// ready: a run was accepted, a step reported (its dependents, or its retry), a lease expired.
    work: tokio::sync::Notify,
    /// Set once the daemon stops: waiting claims answer at once, so that shutdown, which
    /// waits for open requests, is not held up by them.
    stopping: AtomicBool,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("data_dir", &self.controller.data_dir())
            .field("lease_ttl", &self.config.lease_ttl)
            .field("max_attempts", &self.config.max_attempts)
            .finish_non_exhaustive()
    }
}

impl Dispatcher {
    pub fn new(controller: Arc<Controller>, key: KeyPair, config: DispatchConfig) -> Self {
        Self {
            controller,
            key,
            config,
            runs: Mutex::new(HashMap::new()),
            finishing: tokio::sync::Mutex::new(()),
            known_workers: Mutex::new(HashSet::new()),
            last_expiry_ms: AtomicI64::new(i64::MIN),
            metrics: crate::metrics::Metrics::new(),
            work: tokio::sync::Notify::new(),
            stopping: AtomicBool::new(false),
        }
    }

    /// The daemon's metrics.
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    /// The controller (state, store).
    pub fn controller(&self) -> &Arc<Controller> {
        &self.controller
    }

    /// The lease policy.
    pub fn config(&self) -> &DispatchConfig {
        &self.config
    }

    /// The dispatcher's clock (faked in tests).
    pub fn now(&self) -> OffsetDateTime {
        self.config.clock.now()
    }

    /// Parses, accepts and records a submitted pipeline; a repeated request id returns the
    /// first run. Nothing is recorded for a refused submission.
    pub async fn submit(&self, req: &v1::SubmitRun) -> Result<Submitted, SubmitError> {
        let sha256 = Sha256Digest::of(req.pipeline_yaml.as_bytes());
        if let Some(request_id) = &req.request_id
            && let Some(existing) = self.existing(request_id, &sha256).await?
        {
            return Ok(existing);
        }
        let pipeline = kiln_pipelines::parse(&req.pipeline_file, &req.pipeline_yaml)
            .map_err(SubmitError::Malformed)?;
        let source = PipelineSource {
            file: req.pipeline_file.clone(),
            sha256,
        };
        let store = self.controller.store();
        let git_dir = self.controller.git_dir();
        let git = crate::run::GitSources {
            dir: &git_dir,
            store,
        };
        let accepted = crate::run::accept_with(
            self.controller.state(),
            &|d| store.contains(d),
            git,
            pipeline,
            source,
            Dispatch::Leased {
                pipeline_yaml: &req.pipeline_yaml,
                request_id: req.request_id.as_deref(),
            },
        )
        .await;
        let run = match accepted {
            Ok(run) => run,
            // Two submissions with one request id raced; the other one won.
            Err(AcceptError::State(StateError::DuplicateRequest { request_id })) => {
                return match self.existing(&request_id, &sha256).await? {
                    Some(existing) => Ok(existing),
                    None => Err(StateError::DuplicateRequest { request_id }.into()),
                };
            }
            Err(e) => return Err(SubmitError::Refused(e)),
        };
        tracing::info!(run = %run.id, pipeline = run.pipeline.name(), steps = run.pipeline.steps().len(), "run accepted");
        self.metrics.run_accepted();
        let run_id = run.id.clone();
        self.lock_runs().insert(run_id.clone(), Arc::new(run));
        self.work.notify_waiters();
        Ok(Submitted::Created { run_id })
    }

    async fn existing(
        &self,
        request_id: &str,
        sha256: &Sha256Digest,
    ) -> Result<Option<Submitted>, SubmitError> {
        let Some((run_id, existing)) = self
            .controller
            .state()
            .run_by_request_id(request_id)
            .await?
        else {
            return Ok(None);
        };
        if existing != sha256.to_string() {
            return Err(SubmitError::RequestIdReused {
                request_id: request_id.to_owned(),
                existing,
            });
        }
        Ok(Some(Submitted::Existing { run_id }))
    }

    fn lock_runs(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<AcceptedRun>>> {
        self.runs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An accepted run, from the cache or rebuilt from what the database kept.
    async fn accepted_run(&self, run_id: &str) -> Result<Arc<AcceptedRun>, StateError> {
        if let Some(run) = self.lock_runs().get(run_id) {
            return Ok(run.clone());
        }
        let bad = |detail: String| StateError::Corrupt {
            what: "submitted run",
            detail,
        };
        let kept = self
            .controller
            .state()
            .submitted_run(run_id)
            .await?
            .ok_or_else(|| bad(format!("run {run_id} was not submitted to the daemon")))?;
        let pipeline =
            kiln_pipelines::parse(&kept.pipeline_file, &kept.pipeline_yaml).map_err(|d| {
                let first = d.iter().next().map(|d| d.to_string()).unwrap_or_default();
                bad(format!(
                    "run {run_id}: stored pipeline no longer parses: {first}"
                ))
            })?;
        let (rootfs, inputs, sources) = crate::state::parse_resolution(&kept.resolution_json)?;
        let run = Arc::new(AcceptedRun {
            id: kept.id,
            pipeline,
            source: PipelineSource {
                file: kept.pipeline_file,
                sha256: kept.pipeline_sha256,
            },
            rootfs,
            inputs,
            sources,
            started_at: kept.started_at,
        });
        self.lock_runs().insert(run_id.to_owned(), run.clone());
        Ok(run)
    }

    /// Records a worker and returns its id.
    pub async fn register(&self, req: &v1::RegisterWorker) -> Result<String, StateError> {
        let id = uuid::Uuid::new_v4().to_string();
        let labels = serde_json::to_string(&req.labels).expect("labels always serialise");
        self.controller
            .state()
            .register_worker(&NewWorker {
                id: &id,
                name: &req.name,
                slots: req.slots,
                labels_json: &labels,
                labels: &req.labels,
                registered_at: self.now(),
            })
            .await?;
        tracing::info!(worker = %id, name = %req.name, slots = req.slots, "worker registered");
        Ok(id)
    }

    /// [`Self::claim`], but when nothing is ready, waits up to `wait` (at most
    /// [`MAX_CLAIM_WAIT`]) for a step to become ready before answering `None`: a long poll, so
    /// that an idle worker starts a new run's first steps at once instead of at its next poll.
    /// Each attempt counts in the claim histogram on its own; the waits between do not.
    pub async fn claim_waiting(
        &self,
        worker_id: &str,
        wait: Duration,
    ) -> Result<Option<v1::Lease>, LeaseError> {
        let deadline = tokio::time::Instant::now() + wait.min(MAX_CLAIM_WAIT);
        loop {
            // Listening before the attempt: a step made ready during it still wakes us.
            let woken = self.work.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let started = std::time::Instant::now();
            let claimed = self.claim(worker_id).await;
            self.metrics.claim_handled(started.elapsed());
            let now = tokio::time::Instant::now();
            if !matches!(claimed, Ok(None)) || now >= deadline || self.stopping() {
                return claimed;
            }
            tokio::select! {
                () = woken => {}
                () = tokio::time::sleep_until(deadline.min(now + self.config.claim_recheck)) => {}
            }
        }
    }

    /// Answers every waiting claim now and every later one at once; called when the daemon
    /// stops serving.
    pub fn stop_waiting(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.work.notify_waiters();
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Leases the oldest ready step to `worker_id`; `None` when nothing is ready.
    pub async fn claim(&self, worker_id: &str) -> Result<Option<v1::Lease>, LeaseError> {
        let asked = std::time::Instant::now();
        if !self.worker_known(worker_id).await? {
            return Err(LeaseError::UnknownWorker {
                worker_id: worker_id.to_owned(),
            });
        }
        // Hand out nothing a dead worker still holds on paper.
        self.expire_soon().await?;
        let lease_id = uuid::Uuid::new_v4().to_string();
        let Some(claimed) = self
            .controller
            .state()
            .claim_step(worker_id, &lease_id, self.now(), self.config.lease_ttl)
            .await?
        else {
            return Ok(None);
        };
        self.lease(worker_id, lease_id, &claimed, asked)
            .await
            .map(Some)
    }

    /// The lease for a step just claimed: its spec, with the records of the steps it needs.
    async fn lease(
        &self,
        worker_id: &str,
        lease_id: String,
        claimed: &Claimed,
        asked: std::time::Instant,
    ) -> Result<v1::Lease, LeaseError> {
        let run = self.accepted_run(&claimed.run_id).await?;
        let spec_err = |source| LeaseError::Spec {
            run_id: claimed.run_id.clone(),
            source,
        };
        let step = run.pipeline.step(&claimed.step).ok_or_else(|| {
            spec_err(SpecError::UnknownStep {
                step: claimed.step.clone(),
            })
        })?;
        let spec = crate::schedule::step_spec(&run, step, &claimed.needs).map_err(spec_err)?;
        // `claim_us`: the controller's part of the dispatch latency (scripts/bench-dag.sh).
        tracing::info!(run = %claimed.run_id, step = %claimed.step, worker = %worker_id, lease = %lease_id,
            claim_us = asked.elapsed().as_micros() as u64, "step leased");
        Ok(v1::Lease {
            lease_id,
            ttl_secs: self.config.lease_ttl.as_secs().max(1),
            spec,
        })
    }

    /// Whether `worker_id` is registered (here or, on a shared database, with another daemon).
    async fn worker_known(&self, worker_id: &str) -> Result<bool, StateError> {
        if self.lock_known_workers().contains(worker_id) {
            return Ok(true);
        }
        let exists = self.controller.state().worker_exists(worker_id).await?;
        if exists {
            self.lock_known_workers().insert(worker_id.to_owned());
        }
        Ok(exists)
    }

    fn lock_known_workers(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.known_workers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// [`Self::expire`], unless a claim did so less than [`EXPIRY_EVERY_MS`] ago: leases live for
    /// seconds, so looking on every claim (two queries) bought nothing but load when steps are
    /// handed out hundreds of times a second. The tick still expires every second.
    async fn expire_soon(&self) -> Result<(), StateError> {
        let now = crate::state::millis(self.now());
        let last = self.last_expiry_ms.load(Ordering::Relaxed);
        let due = last == i64::MIN || now.saturating_sub(last) >= EXPIRY_EVERY_MS || now < last;
        if due
            && self
                .last_expiry_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.expire().await?;
        }
        Ok(())
    }

    /// Extends a current lease by its ttl.
    pub async fn heartbeat(&self, lease_id: &str, worker_id: &str) -> Result<(), LeaseError> {
        match self
            .controller
            .state()
            .heartbeat(lease_id, worker_id, self.now(), self.config.lease_ttl)
            .await?
        {
            LeaseStatus::Current => Ok(()),
            LeaseStatus::NotCurrent => Err(not_current(lease_id, worker_id)),
        }
    }

    /// Accepts a step's record from the worker holding its lease; publishes the run when it
    /// was the last step.
    pub async fn report(&self, lease_id: &str, report: &v1::StepReport) -> Result<(), LeaseError> {
        self.report_inner(lease_id, report, None).await.map(drop)
    }

    /// [`Self::report`], then [`Self::claim`] for the same worker in the same transaction
    /// (`claim_next`). A refused report claims nothing. If the claim fails, the report is
    /// made alone: an accepted report must not look refused because of its claim.
    pub async fn report_then_claim(
        &self,
        lease_id: &str,
        report: &v1::StepReport,
    ) -> Result<Option<v1::Lease>, LeaseError> {
        let asked = std::time::Instant::now();
        let worker_id = &report.worker_id;
        if !self.worker_known(worker_id).await? {
            self.report(lease_id, report).await?;
            return Ok(None);
        }
        // Hand out nothing a dead worker still holds on paper.
        self.expire_soon().await?;
        let next_lease = uuid::Uuid::new_v4().to_string();
        let next = NextLease {
            lease_id: &next_lease,
            ttl: self.config.lease_ttl,
        };
        let claimed = match self.report_inner(lease_id, report, Some(next)).await {
            Ok(claimed) => claimed,
            Err(LeaseError::State(err)) => {
                tracing::warn!(lease = %lease_id, worker = %worker_id, %err,
                    "cannot report and claim at once; reporting alone");
                self.report(lease_id, report).await?;
                return Ok(None);
            }
            Err(err) => return Err(err),
        };
        let Some(claimed) = claimed else {
            return Ok(None);
        };
        // The report is committed: a lease that cannot be built must not make it look
        // refused. The step's lease runs out and it is handed out again.
        match self.lease(worker_id, next_lease, &claimed, asked).await {
            Ok(lease) => Ok(Some(lease)),
            Err(err) => {
                tracing::warn!(lease = %lease_id, worker = %worker_id, %err,
                    "report accepted, but cannot build the next lease; the worker claims again");
                Ok(None)
            }
        }
    }

    /// Checks the report's blobs, stores it (and claims `next`, if given), then publishes the
    /// run if it is complete.
    async fn report_inner(
        &self,
        lease_id: &str,
        report: &v1::StepReport,
        next: Option<NextLease<'_>>,
    ) -> Result<Option<Claimed>, LeaseError> {
        let state = self.controller.state();
        let worker_id = &report.worker_id;
        let record = &report.record;
        let store = self.controller.store();
        let mut blobs = std::iter::once(("log".to_owned(), record.log.sha256)).chain(
            record
                .outputs
                .iter()
                .map(|o| (format!("output {}", o.path), o.sha256)),
        );
        if let Some((what, sha256)) = blobs.find(|(_, sha256)| !store.contains(sha256)) {
            // A lease that is not current is refused as such whatever it reports, and a
            // retried report of an accepted record is answered as the first was.
            if state.lease_status(lease_id, worker_id, self.now()).await? != LeaseStatus::Current {
                return match state
                    .report_step(lease_id, worker_id, record, self.now())
                    .await?
                {
                    ReportOutcome::AlreadyAccepted => Ok(None),
                    _ => Err(not_current(lease_id, worker_id)),
                };
            }
            return Err(LeaseError::MissingBlob { what, sha256 });
        }
        let (outcome, claimed) = state
            .report_then_claim(lease_id, worker_id, record, self.now(), next)
            .await?;
        match outcome {
            ReportOutcome::Accepted { run_id, succeeded } => {
                tracing::info!(run = %run_id, step = %record.step, worker = %worker_id, lease = %lease_id, succeeded, exit = ?record.exit, "step reported");
                self.metrics.step_reported(record);
                if succeeded
                    && self
                        .frees_others(&run_id, &record.step, claimed.as_ref())
                        .await
                {
                    self.work.notify_waiters();
                }
                // Asked after the commit, so that of two last steps reported at once (on a
                // shared database) at least the later one sees the run complete.
                match state.run_has_open_steps(&run_id).await {
                    Ok(false) => self.finish_if_complete(&run_id).await,
                    Ok(true) => {}
                    // The tick publishes it.
                    Err(err) => {
                        tracing::warn!(run = %run_id, %err, "cannot tell whether the run is complete")
                    }
                }
                Ok(claimed)
            }
            ReportOutcome::AlreadyAccepted => Ok(claimed),
            ReportOutcome::NotCurrent => Err(not_current(lease_id, worker_id)),
            ReportOutcome::WrongStep { run_id, step } => Err(LeaseError::WrongStep {
                lease_id: lease_id.to_owned(),
                run_id,
                step,
            }),
        }
    }

    /// Whether the success of `step` may have made steps ready that the reporting worker did
    /// not take itself (`claimed`); only then are waiting claims woken. A chain's next step,
    /// claimed by the report that freed it, wakes nobody: waking every idle slot on each
    /// report would cost each of them a claim for nothing.
    async fn frees_others(&self, run_id: &str, step: &str, claimed: Option<&Claimed>) -> bool {
        let Ok(run) = self.accepted_run(run_id).await else {
            return true;
        };
        let mut dependents = run.pipeline.dependents(step);
        match (dependents.next(), dependents.next()) {
            (None, _) => false,
            (Some(only), None) => {
                !claimed.is_some_and(|c| c.run_id == run_id && c.step == only.name())
            }
            (Some(_), Some(_)) => true,
        }
    }

    /// Ends expired leases and publishes runs they finished.
    async fn expire(&self) -> Result<(), StateError> {
        let expired = self
            .controller
            .state()
            .expire_leases(self.now(), self.config.max_attempts)
            .await?;
        self.metrics.leases_expired(expired.len());
        if !expired.is_empty() {
            // Their steps are ready again (or failed, which may cancel; either way, look).
            self.work.notify_waiters();
        }
        for lease in &expired {
            tracing::warn!(run = %lease.run_id, step = %lease.step, worker = %lease.worker_id,
                lease = %lease.lease_id, attempts = lease.attempts, gave_up = lease.gave_up,
                "lease expired");
        }
        for lease in expired.iter().filter(|l| l.gave_up) {
            self.finish_if_complete(&lease.run_id).await;
        }
        Ok(())
    }

    /// The periodic work: expire leases, and publish every run whose steps are all final but
    /// which is still marked running (e.g. the daemon stopped between the last report and
    /// publishing). Run once at startup and then every second.
    pub async fn tick(&self) -> Result<(), StateError> {
        self.expire().await?;
        for run_id in self.controller.state().complete_runs().await? {
            self.finish_if_complete(&run_id).await;
        }
        self.sign_checkpoint().await;
        Ok(())
    }

    /// Signs a step log checkpoint if the log grew since the last one. Failures are logged;
    /// the next tick retries.
    async fn sign_checkpoint(&self) {
        let signed = match self.controller.log_signer() {
            Ok(signer) => {
                crate::steplog::sign_checkpoint(self.controller.state(), &signer, self.now())
                    .await
                    .map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        if let Err(error) = signed {
            tracing::error!(%error, "cannot sign a step log checkpoint; will retry");
        }
    }

    /// Publishes and finishes `run_id` if all its steps are final. Failures are logged; the
    /// run is then left running and retried by the next [`Self::tick`].
    async fn finish_if_complete(&self, run_id: &str) {
        if let Err(err) = self.try_finish(run_id).await {
            tracing::error!(run = %run_id, error = %err, "cannot finish run; will retry");
        }
    }

    async fn try_finish(&self, run_id: &str) -> Result<(), StateError> {
        let _one_at_a_time = self.finishing.lock().await;
        let state = self.controller.state();
        if !state.complete_runs().await?.iter().any(|r| r == run_id) {
            return Ok(());
        }
        let run = self.accepted_run(run_id).await?;
        let records: BTreeMap<_, _> = state
            .step_records(run_id)
            .await?
            .into_iter()
            .map(|r| (r.step.clone(), r))
            .collect();
        let mut all_ok = records.len() == run.pipeline.steps().len()
            && records.values().all(|r| r.exit.success());
        // Publishing again from scratch is how a crash half-way through is recovered.
        state.clear_artifacts(run_id).await?;
        let signer = self
            .controller
            .log_signer()
            .map_err(|e| StateError::Corrupt {
                what: "step log key",
                detail: e.to_string(),
            })?;
        let proofs = crate::steplog::run_proofs(state, &signer, run_id, self.now())
            .await
            .map_err(|e| match e {
                crate::steplog::StepLogError::State(e) => e,
                other => StateError::Corrupt {
                    what: "step log",
                    detail: other.to_string(),
                },
            })?;
        match crate::publish::publish(
            state,
            self.controller.store(),
            &run,
            &records,
            &self.key,
            Some(&proofs),
        )
        .await
        {
            Ok(published) => {
                for a in &published {
                    tracing::info!(run = %run_id, artifact = %a.name, sha256 = %a.sha256, "artifact published");
                }
            }
            Err(crate::publish::PublishError::State(e)) => return Err(e),
            Err(err) => {
                tracing::error!(run = %run_id, error = %err, "cannot publish the run's artifacts; the run fails");
                state.clear_artifacts(run_id).await?;
                all_ok = false;
            }
        }
        state.finish_run(run_id, all_ok, self.now()).await?;
        self.attest(&run).await;
        self.sign_checkpoint().await;
        tracing::info!(run = %run_id, succeeded = all_ok, "run finished");
        self.metrics.run_finished(all_ok);
        self.lock_runs().remove(run_id);
        Ok(())
    }

    /// Signs and stores the run attestation of the finished `run`
    /// ([`crate::run_attestation::attest_run`]). A failure is logged; the run's end stands.
    async fn attest(&self, run: &AcceptedRun) {
        if let Err(error) = crate::run_attestation::attest_run(
            self.controller.state(),
            self.controller.store(),
            run,
            &self.key,
            self.now(),
        )
        .await
        {
            tracing::error!(run = %run.id, %error, "cannot sign the run attestation");
        }
    }

    /// The blob digest of the signed run attestation of `team`'s finished run; `None` for
    /// another team's run, an unknown run, or one still running.
    pub async fn run_attestation_for(
        &self,
        team: &str,
        run_id: &str,
    ) -> Result<Option<Sha256Digest>, StateError> {
        if !self.owns(team, run_id).await? {
            return Ok(None);
        }
        self.controller.state().run_attestation(run_id).await
    }

    /// Like [`Self::submit`], for `team`: a new run records the team; a request id that names
    /// another team's run is refused like a reused one, without naming that run.
    pub async fn submit_for(
        &self,
        team: &str,
        req: &v1::SubmitRun,
    ) -> Result<Submitted, SubmitError> {
        let submitted = self.submit(req).await?;
        let run_id = match &submitted {
            Submitted::Created { run_id } | Submitted::Existing { run_id } => run_id,
        };
        let state = self.controller.state();
        // A crash between the run's insert and this update leaves a run no team can see
        // (team NULL); nothing leaks.
        state.set_run_team(run_id, team).await?;
        if state.run_team(run_id).await?.as_deref() != Some(team) {
            return Err(SubmitError::RequestIdTaken {
                request_id: req.request_id.clone().unwrap_or_default(),
            });
        }
        Ok(submitted)
    }

    /// Whether `team` submitted `run_id` (false for an unknown run).
    pub async fn owns(&self, team: &str, run_id: &str) -> Result<bool, StateError> {
        Ok(self.controller.state().run_team(run_id).await?.as_deref() == Some(team))
    }

    /// `team`'s run as the API shows it; `None` for another team's run, as for an unknown one.
    pub async fn run_view_for(
        &self,
        team: &str,
        run_id: &str,
    ) -> Result<Option<v1::RunView>, StateError> {
        if !self.owns(team, run_id).await? {
            return Ok(None);
        }
        self.run_view(run_id).await
    }

    /// Cancels `team`'s run `run_id` (see [`crate::state::State::cancel_run`]); another
    /// team's run is [`CancelOutcome::Unknown`], like a run that does not exist.
    pub async fn cancel_for(
        &self,
        team: &str,
        run_id: &str,
    ) -> Result<crate::state::CancelOutcome, StateError> {
        if !self.owns(team, run_id).await? {
            return Ok(crate::state::CancelOutcome::Unknown);
        }
        let outcome = self
            .controller
            .state()
            .cancel_run(run_id, self.now())
            .await?;
        if outcome == crate::state::CancelOutcome::Cancelled {
            tracing::info!(run = %run_id, %team, "run cancelled");
            self.metrics.run_cancelled();
            match self.accepted_run(run_id).await {
                Ok(run) => self.attest(&run).await,
                Err(error) => {
                    tracing::error!(run = %run_id, %error, "cannot sign the run attestation");
                }
            }
            self.lock_runs().remove(run_id);
        }
        Ok(outcome)
    }

    /// `team`'s runs, newest first.
    pub async fn run_views_for(&self, team: &str) -> Result<Vec<v1::RunView>, StateError> {
        let mut views = Vec::new();
        for id in self.controller.state().run_ids().await? {
            if self.owns(team, &id).await?
                && let Some(v) = self.run_view(&id).await?
            {
                views.push(v);
            }
        }
        Ok(views)
    }

    /// A run as the API shows it.
    pub async fn run_view(&self, run_id: &str) -> Result<Option<v1::RunView>, StateError> {
        let Some(status) = self.controller.state().run_status(run_id).await? else {
            return Ok(None);
        };
        Ok(Some(view(status)))
    }

    /// Every run, newest first.
    pub async fn run_views(&self) -> Result<Vec<v1::RunView>, StateError> {
        let mut views = Vec::new();
        for id in self.controller.state().run_ids().await? {
            if let Some(v) = self.run_view(&id).await? {
                views.push(v);
            }
        }
        Ok(views)
    }
}

fn not_current(lease_id: &str, worker_id: &str) -> LeaseError {
    LeaseError::NotCurrent {
        lease_id: lease_id.to_owned(),
        worker_id: worker_id.to_owned(),
    }
}

/// The versioned view of a stored run: the API boundary.
fn view(status: crate::state::RunStatus) -> v1::RunView {
    let run_state = match status.state.as_str() {
        "succeeded" => v1::RunState::Succeeded,
        "failed" => v1::RunState::Failed,
        "cancelled" => v1::RunState::Cancelled,
        _ => v1::RunState::Running,
    };
    let artifacts = status
        .artifacts
        .into_iter()
        .map(|a| v1::ArtifactView {
            name: a.name,
            step: a.step,
            sha256: a.sha256,
            size: a.size,
            executable: a.executable,
        })
        .collect();
    let steps = status
        .steps
        .into_iter()
        .map(|s| {
            let state = match s.state.as_str() {
                "running" => v1::StepState::Leased,
                "succeeded" => v1::StepState::Succeeded,
                "failed" => v1::StepState::Failed,
                "skipped" => v1::StepState::Skipped,
                "cancelled" => v1::StepState::Cancelled,
                _ => v1::StepState::Pending,
            };
            let exit = match (s.record, s.reason) {
                (Some(exit), _) => Some(exit),
                (None, Some(reason)) if state == v1::StepState::Failed => {
                    Some(ExitRecord::Failed { reason })
                }
                _ => None,
            };
            v1::StepView {
                name: s.name,
                state,
                attempts: s.attempts,
                worker: s.worker_id,
                exit,
            }
        })
        .collect();
    v1::RunView {
        id: status.id,
        pipeline_name: status.pipeline_name,
        state: run_state,
        started_at: status.started_at,
        finished_at: status.finished_at,
        steps,
        artifacts,
    }
}
