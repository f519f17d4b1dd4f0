//! The networked worker (`kiln worker`): registers with a controller, then each of its slots
//! loops: claim a lease, keep it alive with heartbeats, fetch the blobs the step needs into the
//! worker's own store (verified), run the step with [`Worker::run_step`], upload the outputs
//! and the log, report the record. The report asks for the slot's next lease (`claim_next`)
//! unless the worker is draining; a lease in its answer is run next without a claim of its
//! own, and only an answer without one sends the slot back to claiming.
//!
//! Faults are the normal case here. A network error is retried with backoff and never ends a
//! loop; a `409 Conflict` on a heartbeat or a report means the lease is no longer ours, so the
//! result is dropped (the controller has handed the step to someone else); inputs that cannot
//! be fetched abandon the lease, which expires and is handed out again.
//!
//! Deliberately absent: cancelling a running step when its lease is lost (the step runs to its
//! end and its result is dropped), any retry policy of its own for a step's failure (attempts
//! are counted and bounded by the controller), and any state that survives a restart.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::hash::{BuildHasher as _, Hasher as _};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kiln_client::{Client, ClientError};
use kiln_core::api::v1::{Heartbeat, Lease, LeaseRequest, RegisterWorker, StepReport};
use kiln_core::{InputSource, Sha256Digest, StepRecord, StepSpec};
use kiln_mirror::{BlobStore, StoreError};
use tokio::sync::watch;

use crate::Worker;

/// How often, and how patiently, the worker talks to the controller.
#[derive(Clone, Copy, Debug)]
pub struct PollPolicy {
    /// How long a claim asks the controller to wait for a step before answering `204` (a long
    /// poll): an idle slot starts a new step as soon as it is ready. Zero: answer at once.
    pub claim_wait: Duration,
    /// First pause after a `204` that came without waiting (the controller does not hold
    /// claims open, or is stopping); doubles up to `idle_max`.
    pub idle_min: Duration,
    pub idle_max: Duration,
    /// First pause after a failed request; doubles up to `retry_max`.
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// How many times one blob transfer or one report is tried before the lease is given up.
    pub attempts: u32,
}

impl Default for PollPolicy {
    fn default() -> Self {
        Self {
            claim_wait: Duration::from_secs(1),
            idle_min: Duration::from_millis(100),
            idle_max: Duration::from_secs(1),
            retry_min: Duration::from_millis(250),
            retry_max: Duration::from_secs(10),
            attempts: 8,
        }
    }
}

/// Who this worker says it is and how it works.
#[derive(Clone, Debug)]
pub struct RemoteConfig {
    /// The name the controller shows for steps this worker ran.
    pub name: String,
    /// How many steps run at once.
    pub slots: u32,
    /// Labels steps may require (`arch=x86_64`).
    pub labels: BTreeMap<String, String>,
    /// Where blobs in transit live: downloads before they enter the store, verified copies of
    /// outputs while they are uploaded.
    pub transfer_dir: PathBuf,
    pub poll: PollPolicy,
}

/// Why the worker stopped before it could work.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("the controller refused to register this worker")]
    Register(#[source] ClientError),
    #[error("cannot create the transfer directory {path}")]
    TransferDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Why one blob could not be moved; the lease it was for is given up.
#[derive(Debug, thiserror::Error)]
enum TransferError {
    #[error("blob {digest}")]
    Client {
        digest: Sha256Digest,
        #[source]
        source: ClientError,
    },
    #[error("blob {digest}")]
    Store {
        digest: Sha256Digest,
        #[source]
        source: StoreError,
    },
    #[error("blob {digest}: stored as {stored}, which is not what was downloaded")]
    StoredAs {
        digest: Sha256Digest,
        stored: Sha256Digest,
    },
    #[error("cannot create a temporary directory in {path}")]
    Temp {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What became of the leases this worker took, for its exit message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Records the controller accepted.
    pub reported: u64,
    /// Results dropped because the lease was lost (`409`).
    pub dropped: u64,
    /// Leases given up: inputs or outputs could not be moved, or the report never got through.
    pub abandoned: u64,
}

#[derive(Debug, Default)]
struct Counters {
    reported: AtomicU64,
    dropped: AtomicU64,
    abandoned: AtomicU64,
}

/// A worker that takes its steps from a controller.
#[derive(Debug)]
pub struct RemoteWorker {
    client: Client,
    worker: Worker,
    store: Arc<BlobStore>,
    config: RemoteConfig,
    counters: Counters,
    /// Blobs the controller is known to hold, so that uploading them again is skipped
    /// without asking (every step's record names its log, and most logs are alike).
    held: HeldBlobs,
}

/// Digests of blobs the controller said it holds or accepted from this worker. Its store is
/// content-addressed and keeps what it holds; should a blob be gone after all, the report
/// naming it is refused with `422`, and the worker forgets everything and uploads again.
#[derive(Debug, Default)]
struct HeldBlobs(std::sync::Mutex<HashSet<Sha256Digest>>);

impl HeldBlobs {
    /// The most remembered; past it the set starts over.
    const MAX: usize = 65_536;

    fn contains(&self, digest: &Sha256Digest) -> bool {
        self.lock().contains(digest)
    }

    fn insert(&self, digest: Sha256Digest) {
        let mut held = self.lock();
        if held.len() >= Self::MAX {
            held.clear();
        }
        held.insert(digest);
    }

    fn forget(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<Sha256Digest>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// What became of one lease.
enum Outcome {
    /// The record was accepted; the answer may carry the slot's next lease.
    Reported {
        next: Option<Box<Lease>>,
    },
    Dropped,
    Abandoned,
}

impl RemoteWorker {
    /// `store` must be rooted where `worker`'s store is: fetched blobs go in, outputs come out.
    pub fn new(client: Client, worker: Worker, store: BlobStore, config: RemoteConfig) -> Self {
        Self {
            client,
            worker,
            store: Arc::new(store),
            config,
            counters: Counters::default(),
            held: HeldBlobs::default(),
        }
    }

    /// Registers, then runs `slots` lease loops until `drain` turns true: from then on no lease
    /// is claimed, running steps finish and are reported, and this returns.
    pub async fn run(self, mut drain: watch::Receiver<bool>) -> Result<Tally, RemoteError> {
        std::fs::create_dir_all(&self.config.transfer_dir).map_err(|source| {
            RemoteError::TransferDir {
                path: self.config.transfer_dir.clone(),
                source,
            }
        })?;
        let Some(worker_id) = self.register(&mut drain).await? else {
            return Ok(Tally::default());
        };
        let this = Arc::new(self);
        let loops: Vec<_> = (0..this.config.slots.max(1))
            .map(|slot| {
                let this = this.clone();
                let worker_id = worker_id.clone();
                let drain = drain.clone();
                tokio::spawn(async move { this.slot_loop(slot, &worker_id, drain).await })
            })
            .collect();
        for handle in loops {
            if let Err(err) = handle.await {
                tracing::error!(%err, "a slot loop ended abnormally");
            }
        }
        let c = &this.counters;
        Ok(Tally {
            reported: c.reported.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            abandoned: c.abandoned.load(Ordering::Relaxed),
        })
    }

    /// Registers, retrying while the controller is unreachable; `None` if drained meanwhile.
    async fn register(
        &self,
        drain: &mut watch::Receiver<bool>,
    ) -> Result<Option<String>, RemoteError> {
        let request = RegisterWorker {
            name: self.config.name.clone(),
            slots: self.config.slots,
            labels: self.config.labels.clone(),
        };
        let mut backoff = Backoff::new(self.config.poll.retry_min, self.config.poll.retry_max);
        loop {
            match self.client.register_worker(&request).await {
                Ok(registered) => {
                    tracing::info!(
                        worker = %registered.worker_id,
                        name = %self.config.name,
                        controller = %self.client.base_url(),
                        slots = self.config.slots,
                        "registered"
                    );
                    return Ok(Some(registered.worker_id));
                }
                Err(err) if err.is_transient() => {
                    tracing::warn!(err = %chain(&err), "cannot register yet; retrying");
                    if pause(backoff.next(), drain).await {
                        return Ok(None);
                    }
                }
                Err(err) => return Err(RemoteError::Register(err)),
            }
        }
    }

    async fn slot_loop(&self, slot: u32, worker_id: &str, mut drain: watch::Receiver<bool>) {
        let poll = self.config.poll;
        let mut idle = Backoff::new(poll.idle_min, poll.idle_max);
        let mut errors = Backoff::new(poll.retry_min, poll.retry_max);
        let request = LeaseRequest {
            worker_id: worker_id.to_string(),
            wait_ms: (!poll.claim_wait.is_zero())
                .then(|| u64::try_from(poll.claim_wait.as_millis()).unwrap_or(u64::MAX)),
        };
        // A lease that came with the last report's answer. It is run even when draining
        // started meanwhile: the controller handed it out, and a lease is never dropped.
        let mut next: Option<Lease> = None;
        while next.is_some() || !draining(&drain) {
            let lease = match next.take() {
                Some(lease) => {
                    // No round trip of its own; scripts/bench_dag.py pairs it like any claim.
                    tracing::debug!(slot, lease = %lease.lease_id, claim_us = 0u64, via = %"report", "claimed");
                    lease
                }
                None => {
                    let asked = Instant::now();
                    // Never cancelled, not even to drain: a lease the controller handed out is
                    // always seen, so a worker draining while its claim waits may still be
                    // handed a step, within `claim_wait`, and runs it.
                    match self.client.claim_lease(&request).await {
                        Ok(Some(lease)) => {
                            // The claim's round trip (scripts/bench-dag.sh reads it: dispatch latency).
                            tracing::debug!(slot, lease = %lease.lease_id, claim_us = micros(asked.elapsed()), "claimed");
                            lease
                        }
                        Ok(None) => {
                            errors.reset();
                            // An answer well before the wait asked for did not wait: pause, or
                            // this slot would ask again and again.
                            if asked.elapsed() < poll.claim_wait / 2 || poll.claim_wait.is_zero() {
                                pause(idle.next(), &mut drain).await;
                            }
                            continue;
                        }
                        Err(err) => {
                            tracing::warn!(slot, err = %chain(&err), "cannot claim a lease; retrying");
                            pause(errors.next(), &mut drain).await;
                            continue;
                        }
                    }
                }
            };
            idle.reset();
            errors.reset();
            let counter = match self.run_lease(worker_id, lease, &drain).await {
                Outcome::Reported { next: answered } => {
                    next = answered.map(|lease| *lease);
                    &self.counters.reported
                }
                Outcome::Dropped => &self.counters.dropped,
                Outcome::Abandoned => &self.counters.abandoned,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        tracing::info!(slot, "slot drained");
    }

    /// One lease, start to report. Heartbeats run alongside until the report is through. The
    /// report asks for the slot's next lease unless `drain` says the worker is draining.
    async fn run_lease(
        &self,
        worker_id: &str,
        lease: Lease,
        drain: &watch::Receiver<bool>,
    ) -> Outcome {
        let Lease {
            lease_id,
            ttl_secs,
            spec,
        } = lease;
        let (run, step) = (spec.run_id.clone(), spec.step.clone());
        tracing::info!(lease = %lease_id, %run, %step, "leased");
        let lost = Arc::new(AtomicBool::new(false));
        let heartbeat = tokio::spawn(heartbeat_loop(
            self.client.clone(),
            lease_id.clone(),
            worker_id.to_string(),
            heartbeat_interval(ttl_secs),
            lost.clone(),
        ));
        let outcome = self
            .lease_body(worker_id, &lease_id, spec, &lost, drain)
            .await;
        heartbeat.abort();
        match &outcome {
            Outcome::Reported { .. } => tracing::info!(lease = %lease_id, %run, %step, "reported"),
            Outcome::Dropped => tracing::warn!(
                lease = %lease_id, %run, %step,
                "lease lost (409): result dropped; the controller runs the step elsewhere"
            ),
            Outcome::Abandoned => tracing::error!(
                lease = %lease_id, %run, %step,
                "lease abandoned; it expires and the step is handed out again"
            ),
        }
        outcome
    }

    async fn lease_body(
        &self,
        worker_id: &str,
        lease_id: &str,
        spec: StepSpec,
        lost: &AtomicBool,
        drain: &watch::Receiver<bool>,
    ) -> Outcome {
        let phase = Instant::now();
        if let Err(err) = self.fetch_inputs(&spec).await {
            tracing::error!(lease = %lease_id, err = %chain(&err), "cannot fetch the step's inputs");
            return Outcome::Abandoned;
        }
        if lost.load(Ordering::SeqCst) {
            return Outcome::Dropped;
        }
        let fetch_us = micros(phase.elapsed());
        let phase = Instant::now();
        let (tap, log) = tokio::sync::oneshot::channel();
        let live = tokio::spawn(stream_log(
            self.client.clone(),
            lease_id.to_string(),
            worker_id.to_string(),
            log,
        ));
        let record = self.worker.run_step_tapped(spec, Some(tap)).await;
        live.abort();
        let run_us = micros(phase.elapsed());
        if lost.load(Ordering::SeqCst) {
            return Outcome::Dropped;
        }
        let phase = Instant::now();
        if let Err(err) = self.upload_results(&record).await {
            tracing::error!(lease = %lease_id, err = %chain(&err), "cannot upload the step's results");
            return Outcome::Abandoned;
        }
        let upload_us = micros(phase.elapsed());
        let mut report = StepReport {
            worker_id: worker_id.to_string(),
            record,
            claim_next: false,
        };
        let phase = Instant::now();
        let mut backoff = Backoff::new(self.config.poll.retry_min, self.config.poll.retry_max);
        for attempt in 1..=self.config.poll.attempts {
            // The answer carries the slot's next lease, saving a claim's round trip; a draining
            // worker takes no new work. Asked again on each attempt: a retry of an accepted
            // report is answered like the first.
            report.claim_next = !draining(drain);
            match self.client.report(lease_id, &report).await {
                Ok(next) => {
                    // Where a lease's time went (scripts/bench-dag.sh reads it).
                    tracing::debug!(lease = %lease_id, fetch_us, run_us, upload_us,
                        report_us = micros(phase.elapsed()), "lease phases");
                    return Outcome::Reported {
                        next: next.map(Box::new),
                    };
                }
                Err(ClientError::Conflict { .. }) => return Outcome::Dropped,
                // A blob this worker believed held is not (the controller's store lost it):
                // upload what the record names, asking first, and report again.
                Err(err @ ClientError::Http { status: 422, .. })
                    if attempt < self.config.poll.attempts =>
                {
                    tracing::warn!(lease = %lease_id, err = %chain(&err), "report refused for a missing blob; uploading again");
                    self.held.forget();
                    if let Err(err) = self.upload_results(&report.record).await {
                        tracing::error!(lease = %lease_id, err = %chain(&err), "cannot upload the step's results");
                        return Outcome::Abandoned;
                    }
                }
                Err(err) if err.is_transient() && attempt < self.config.poll.attempts => {
                    tracing::warn!(lease = %lease_id, attempt, err = %chain(&err), "report failed; retrying");
                    tokio::time::sleep(backoff.next()).await;
                }
                Err(err) => {
                    tracing::error!(lease = %lease_id, err = %chain(&err), "report refused");
                    return Outcome::Abandoned;
                }
            }
        }
        Outcome::Abandoned
    }

    /// Every blob the step reads that the local store lacks: its rootfs, its mirror inputs and
    /// its upstream steps' outputs.
    async fn fetch_inputs(&self, spec: &StepSpec) -> Result<(), TransferError> {
        for digest in needed_blobs(spec) {
            if self.store.contains(&digest) {
                continue;
            }
            self.retry(|| self.fetch(digest)).await?;
        }
        Ok(())
    }

    /// Downloads one blob (verified as it arrives) and moves it into the store.
    async fn fetch(&self, digest: Sha256Digest) -> Result<(), TransferError> {
        let temp = self.temp_dir()?;
        let path = temp.path().join("blob");
        let size = self
            .client
            .download_blob(&digest, &path)
            .await
            .map_err(|source| TransferError::Client { digest, source })?;
        let stored = self
            .blocking(move |store| store.put_file(&path))
            .await
            .map_err(|source| TransferError::Store { digest, source })?;
        if stored.sha256 != digest {
            return Err(TransferError::StoredAs {
                digest,
                stored: stored.sha256,
            });
        }
        tracing::debug!(%digest, size, "fetched");
        Ok(())
    }

    /// Uploads the step's outputs and its log, skipping what the controller already has.
    async fn upload_results(&self, record: &StepRecord) -> Result<(), TransferError> {
        let digests: BTreeSet<Sha256Digest> = record
            .outputs
            .iter()
            .map(|o| o.sha256)
            .chain([record.log.sha256])
            .collect();
        for digest in digests {
            self.retry(|| self.upload(digest)).await?;
        }
        Ok(())
    }

    async fn upload(&self, digest: Sha256Digest) -> Result<(), TransferError> {
        if self.held.contains(&digest) {
            return Ok(());
        }
        match self.client.has_blob(&digest).await {
            Ok(true) => {
                self.held.insert(digest);
                return Ok(());
            }
            Ok(false) => {}
            // A controller that cannot say gets the upload; a repeated one is a cheap 200.
            Err(err) if !err.is_transient() => {
                tracing::debug!(%digest, err = %chain(&err), "cannot ask for the blob; uploading")
            }
            Err(source) => return Err(TransferError::Client { digest, source }),
        }
        // A verified copy: a blob damaged in the local store is never sent.
        let temp = self.temp_dir()?;
        let path = temp.path().join("blob");
        let copy = path.clone();
        self.blocking(move |store| store.copy_out(&digest, &copy, false))
            .await
            .map_err(|source| TransferError::Store { digest, source })?;
        let uploaded = self
            .client
            .upload_blob(&digest, &path)
            .await
            .map_err(|source| TransferError::Client { digest, source })?;
        tracing::debug!(%digest, ?uploaded, "uploaded");
        self.held.insert(digest);
        Ok(())
    }

    /// Runs a transfer until it succeeds, fails for good, or runs out of attempts.
    async fn retry<F, Fut>(&self, mut transfer: F) -> Result<(), TransferError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), TransferError>>,
    {
        let mut backoff = Backoff::new(self.config.poll.retry_min, self.config.poll.retry_max);
        let mut attempt = 1;
        loop {
            match transfer().await {
                Err(TransferError::Client { digest, source })
                    if source.is_transient() && attempt < self.config.poll.attempts =>
                {
                    tracing::warn!(%digest, attempt, err = %chain(&source), "transfer failed; retrying");
                    tokio::time::sleep(backoff.next()).await;
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    fn temp_dir(&self) -> Result<tempfile::TempDir, TransferError> {
        tempfile::Builder::new()
            .prefix("blob-")
            .tempdir_in(&self.config.transfer_dir)
            .map_err(|source| TransferError::Temp {
                path: self.config.transfer_dir.clone(),
                source,
            })
    }

    /// Runs a store operation off the async threads.
    async fn blocking<T: Send + 'static>(
        &self,
        op: impl FnOnce(&BlobStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || op(&store))
            .await
            .expect("store operations do not panic")
    }
}

/// Every digest a step's staging reads from the store.
fn needed_blobs(spec: &StepSpec) -> BTreeSet<Sha256Digest> {
    let mut digests = BTreeSet::from([spec.rootfs.sha256]);
    for input in &spec.inputs {
        match &input.source {
            InputSource::Mirror(m) => {
                digests.insert(m.sha256);
            }
            InputSource::Git(g) => {
                digests.insert(g.sha256);
            }
            InputSource::Step { outputs, .. } => digests.extend(outputs.iter().map(|o| o.sha256)),
        }
    }
    digests
}

/// A duration in whole microseconds, for timing fields.
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// A third of the ttl, so that two heartbeats may be lost before the lease expires.
fn heartbeat_interval(ttl_secs: u64) -> Duration {
    Duration::from_millis(ttl_secs.saturating_mul(1000) / 3).max(Duration::from_millis(200))
}

/// Extends a lease every `every` until aborted; a refusal marks it `lost` and stops.
/// How often a running step's new output goes to the controller (`kiln logs --follow`).
const LOG_PERIOD: Duration = Duration::from_millis(500);
/// The most sent at once; the controller takes up to 1 MiB.
const LOG_CHUNK: usize = 256 << 10;

/// Sends what the step writes to its log, in order, while it runs; aborted when it ends (its
/// record carries the whole log). Best effort: a refused or failing append stops or skips
/// the live copy, never the step.
async fn stream_log(
    client: Client,
    lease_id: String,
    worker_id: String,
    log: tokio::sync::oneshot::Receiver<std::fs::File>,
) {
    use tokio::io::AsyncReadExt as _;
    let Ok(file) = log.await else { return };
    let mut file = tokio::fs::File::from_std(file);
    let mut offset = 0u64;
    let mut pending = Vec::new();
    // The first look after one period, not at once: most steps are over by then, and their
    // record carries the log (a look costs a 256 KiB buffer and a blocking read).
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + LOG_PERIOD, LOG_PERIOD);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if pending.is_empty() {
            pending.resize(LOG_CHUNK, 0);
            match file.read(&mut pending).await {
                Ok(n) => pending.truncate(n),
                Err(_) => return,
            }
        }
        if pending.is_empty() {
            continue;
        }
        match client
            .append_log(&lease_id, &worker_id, offset, pending.clone())
            .await
        {
            Ok(()) => {
                offset += pending.len() as u64;
                pending.clear();
                // More is waiting: send it without pausing.
                ticks.reset_immediately();
            }
            Err(err) if err.is_transient() => {
                tracing::debug!(lease = %lease_id, err = %chain(&err), "live log append failed; retrying");
            }
            Err(err) => {
                tracing::debug!(lease = %lease_id, err = %chain(&err), "live log refused; not streaming this step");
                return;
            }
        }
    }
}

async fn heartbeat_loop(
    client: Client,
    lease_id: String,
    worker_id: String,
    every: Duration,
    lost: Arc<AtomicBool>,
) {
    let beat = Heartbeat { worker_id };
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match client.heartbeat(&lease_id, &beat).await {
            Ok(()) => tracing::trace!(lease = %lease_id, "heartbeat"),
            Err(err) if err.is_transient() => {
                tracing::warn!(lease = %lease_id, err = %chain(&err), "heartbeat failed; retrying")
            }
            Err(err) => {
                tracing::warn!(lease = %lease_id, err = %chain(&err), "heartbeat refused: lease lost");
                lost.store(true, Ordering::SeqCst);
                return;
            }
        }
    }
}

fn draining(drain: &watch::Receiver<bool>) -> bool {
    *drain.borrow()
}

/// Sleeps for `d` unless draining starts first; true if draining.
async fn pause(d: Duration, drain: &mut watch::Receiver<bool>) -> bool {
    let slept = tokio::select! {
        () = tokio::time::sleep(d) => true,
        // A dropped sender means nobody can tell us to keep going: stop too.
        _ = drain.wait_for(|d| *d) => false,
    };
    !slept || draining(drain)
}

/// Exponential backoff with jitter, so that many workers do not retry in step.
struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            next: min,
        }
    }

    fn reset(&mut self) {
        self.next = self.min;
    }

    /// The next pause: the current step, give or take a quarter.
    fn next(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let quarter = base.as_millis() as u64 / 4;
        let jitter = if quarter == 0 {
            0
        } else {
            random % (2 * quarter + 1)
        };
        Duration::from_millis(base.as_millis() as u64 - quarter + jitter)
    }
}

/// An error and its causes on one line.
fn chain(err: &dyn std::error::Error) -> String {
    crate::error_chain(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_core::{BlobKind, MirrorInput, MirrorRef, OutputRecord, StagedInput};

    fn digest(s: &str) -> Sha256Digest {
        Sha256Digest::of(s.as_bytes())
    }

    fn mirror(name: &str, sha256: Sha256Digest) -> MirrorInput {
        MirrorInput {
            reference: name.parse::<MirrorRef>().unwrap(),
            sha256,
            kind: BlobKind::Tree,
        }
    }

    #[test]
    fn a_step_needs_its_rootfs_its_mirror_inputs_and_its_upstream_outputs() {
        let output = |s: &str| OutputRecord {
            path: s.into(),
            sha256: digest(s),
            size: 1,
            executable: false,
        };
        let spec = StepSpec {
            run_id: "r".into(),
            step: "s".into(),
            command: "true".into(),
            env: BTreeMap::new(),
            rootfs: mirror("busybox@1", digest("rootfs")),
            inputs: vec![
                StagedInput {
                    mount_name: "src".into(),
                    source: InputSource::Mirror(mirror("src@1", digest("src"))),
                },
                StagedInput {
                    mount_name: "up".into(),
                    source: InputSource::Step {
                        step: "up".into(),
                        outputs: vec![output("a"), output("b"), output("rootfs")],
                    },
                },
            ],
            outputs: Vec::new(),
            timeout_secs: 1,
            source_date_epoch: 0,
            resources: Default::default(),
        };
        let wanted: BTreeSet<_> = ["rootfs", "src", "a", "b"].map(digest).into();
        assert_eq!(needed_blobs(&spec), wanted);
    }

    #[test]
    fn heartbeats_come_three_times_per_ttl() {
        assert_eq!(heartbeat_interval(30), Duration::from_secs(10));
        assert_eq!(heartbeat_interval(0), Duration::from_millis(200));
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        let within = |d: Duration, base: u64| {
            let ms = d.as_millis() as u64;
            assert!(ms >= base * 3 / 4 && ms <= base * 5 / 4, "{ms} vs {base}");
        };
        within(b.next(), 100);
        within(b.next(), 200);
        within(b.next(), 400);
        within(b.next(), 400);
        b.reset();
        within(b.next(), 100);
    }
}
