//! The daemon's Prometheus metrics (`GET /metrics`, docs/api.md "Observability").
//!
//! Two sources: counters and histograms of events (runs accepted and finished, steps reported,
//! leases expired, claims handled) are kept in process by [`Metrics`], which the
//! [`crate::dispatch::Dispatcher`] owns and bumps where each event happens; the gauges (queue
//! depth, leased steps, workers) are read from the state database at scrape time
//! ([`Metrics::render`]), so they are right after a restart and across daemons sharing one
//! database. In-process counters start at zero with each daemon process, as Prometheus expects.
//!
//! Deliberately absent: labels with run, step or worker ids (unbounded cardinality; those ids
//! are in the structured log events instead), and anything a team could not otherwise see
//! beyond counts.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use kiln_core::{ExitRecord, StepRecord};
use prometheus_client::encoding::text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use time::OffsetDateTime;

use crate::state::{State, StateError};

/// The media type of [`Metrics::render`]'s text (OpenMetrics 1.0, which Prometheus scrapes).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// One label, e.g. `("outcome", "succeeded")`.
type Label = [(&'static str, &'static str); 1];

/// Step durations, seconds: a second to two hours.
const STEP_BUCKETS: [f64; 12] = [
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0,
];
/// Claim handling, seconds: a millisecond to a few seconds (the claim waits for SQLite's write
/// lock).
const CLAIM_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

fn step_histogram() -> Histogram {
    Histogram::new(STEP_BUCKETS)
}

/// How a sandbox failed, from a reported step's exit; `None` for a step that ran to its own
/// exit (success or a non-zero code: the step's failure, not the sandbox's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SandboxFailure {
    /// A resource limit ended the step: the timeout, or the kernel at the memory or pids limit.
    Limit,
    /// A signal ended the step.
    Killed,
    /// The step could not be started (staging, sandbox setup) or its outputs were refused.
    FailedToStart,
}

impl SandboxFailure {
    /// The failure a step record shows, if any.
    pub fn of(record: &StepRecord) -> Option<Self> {
        match &record.exit {
            ExitRecord::TimedOut { .. } | ExitRecord::Killed { .. } => Some(Self::Limit),
            ExitRecord::Signaled { .. } if !record.events.is_empty() => Some(Self::Limit),
            ExitRecord::Signaled { .. } => Some(Self::Killed),
            ExitRecord::Failed { .. } => Some(Self::FailedToStart),
            ExitRecord::Exited { .. } => None,
        }
    }

    /// The `kind` label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Limit => "limit",
            Self::Killed => "killed",
            Self::FailedToStart => "failed_to_start",
        }
    }
}

/// The daemon's metrics registry and its in-process counters.
pub struct Metrics {
    registry: Registry,
    queue_depth: Gauge,
    steps_running: Gauge,
    workers_registered: Gauge,
    workers_alive: Gauge,
    step_duration: Family<Label, Histogram, fn() -> Histogram>,
    lease_expiries: Counter,
    sandbox_failures: Family<Label, Counter>,
    runs_accepted: Counter,
    runs_finished: Family<Label, Counter>,
    claim_duration: Histogram,
    /// When each worker last registered, claimed, heartbeated or reported.
    seen: Mutex<HashMap<String, OffsetDateTime>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric registered, every label value present from the start (at zero).
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("kiln");
        let queue_depth = Gauge::default();
        registry.register(
            "queue_depth",
            "Steps ready to run (every step they need succeeded) and waiting for a lease",
            queue_depth.clone(),
        );
        let steps_running = Gauge::default();
        registry.register(
            "steps_running",
            "Steps leased to a worker and not yet reported",
            steps_running.clone(),
        );
        let workers_registered = Gauge::default();
        registry.register(
            "workers_registered",
            "Workers ever registered with this state database",
            workers_registered.clone(),
        );
        let workers_alive = Gauge::default();
        registry.register(
            "workers_alive",
            "Workers that registered, claimed, heartbeated or reported within the lease ttl, \
             or hold an unexpired lease",
            workers_alive.clone(),
        );
        let step_duration =
            Family::<Label, Histogram, fn() -> Histogram>::new_with_constructor(step_histogram);
        registry.register_with_unit(
            "step_duration",
            "Run time of reported steps (started_on to finished_on in the step record), by outcome",
            Unit::Seconds,
            step_duration.clone(),
        );
        let lease_expiries = Counter::default();
        registry.register(
            "lease_expiries",
            "Leases that ran out without a report (the step was requeued or failed)",
            lease_expiries.clone(),
        );
        let sandbox_failures = Family::<Label, Counter>::default();
        registry.register(
            "sandbox_failures",
            "Reported steps that the sandbox ended: kind is limit (timeout, memory or pids \
             limit), killed (a signal) or failed_to_start",
            sandbox_failures.clone(),
        );
        let runs_accepted = Counter::default();
        registry.register(
            "runs_accepted",
            "Runs submitted and accepted",
            runs_accepted.clone(),
        );
        let runs_finished = Family::<Label, Counter>::default();
        registry.register(
            "runs_finished",
            "Runs that ended, by state (succeeded, failed, cancelled)",
            runs_finished.clone(),
        );
        let claim_duration = Histogram::new(CLAIM_BUCKETS);
        registry.register_with_unit(
            "claim_duration",
            "Time to handle a lease claim (POST /v1/leases, or a report with claim_next, which \
             reports and claims in one transaction), whether or not a step was handed out",
            Unit::Seconds,
            claim_duration.clone(),
        );
        for outcome in ["succeeded", "failed"] {
            step_duration.get_or_create_owned(&[("outcome", outcome)]);
        }
        for kind in [
            SandboxFailure::Limit,
            SandboxFailure::Killed,
            SandboxFailure::FailedToStart,
        ] {
            sandbox_failures.get_or_create_owned(&[("kind", kind.label())]);
        }
        for state in ["succeeded", "failed", "cancelled"] {
            runs_finished.get_or_create_owned(&[("state", state)]);
        }
        Self {
            registry,
            queue_depth,
            steps_running,
            workers_registered,
            workers_alive,
            step_duration,
            lease_expiries,
            sandbox_failures,
            runs_accepted,
            runs_finished,
            claim_duration,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// A run was accepted.
    pub fn run_accepted(&self) {
        self.runs_accepted.inc();
    }

    /// A run finished: it succeeded, or it failed.
    pub fn run_finished(&self, succeeded: bool) {
        let state = if succeeded { "succeeded" } else { "failed" };
        self.runs_finished.get_or_create(&[("state", state)]).inc();
    }

    /// A run was cancelled.
    pub fn run_cancelled(&self) {
        self.runs_finished
            .get_or_create(&[("state", "cancelled")])
            .inc();
    }

    /// A step's record was accepted.
    pub fn step_reported(&self, record: &StepRecord) {
        let outcome = if record.exit.success() {
            "succeeded"
        } else {
            "failed"
        };
        let seconds = (record.finished_on - record.started_on)
            .as_seconds_f64()
            .max(0.0);
        self.step_duration
            .get_or_create(&[("outcome", outcome)])
            .observe(seconds);
        if let Some(failure) = SandboxFailure::of(record) {
            self.sandbox_failures
                .get_or_create(&[("kind", failure.label())])
                .inc();
        }
    }

    /// `n` leases expired.
    pub fn leases_expired(&self, n: usize) {
        self.lease_expiries.inc_by(n as u64);
    }

    /// A lease claim (its own request, or a report with `claim_next`, report included) took
    /// `elapsed` to handle.
    pub fn claim_handled(&self, elapsed: Duration) {
        self.claim_duration.observe(elapsed.as_secs_f64());
    }

    /// `worker` was heard from at `at`.
    pub fn worker_seen(&self, worker: &str, at: OffsetDateTime) {
        self.lock_seen().insert(worker.to_owned(), at);
    }

    fn lock_seen(&self) -> std::sync::MutexGuard<'_, HashMap<String, OffsetDateTime>> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads the gauges from `state` at `now` (a worker is alive if heard from within
    /// `lease_ttl`, or holding an unexpired lease), then encodes every metric as OpenMetrics
    /// text ([`CONTENT_TYPE`]).
    pub async fn render(
        &self,
        state: &State,
        now: OffsetDateTime,
        lease_ttl: Duration,
    ) -> Result<String, StateError> {
        let queue = state.queue_stats().await?;
        let holders = state.lease_holders(now).await?;
        let alive = {
            let mut seen = self.lock_seen();
            seen.retain(|_, at| *at + lease_ttl >= now);
            let mut alive: std::collections::BTreeSet<&str> =
                seen.keys().map(String::as_str).collect();
            alive.extend(holders.iter().map(String::as_str));
            alive.len()
        };
        self.queue_depth.set(queue.ready);
        self.steps_running.set(queue.leased);
        self.workers_registered.set(queue.workers);
        self.workers_alive
            .set(i64::try_from(alive).unwrap_or(i64::MAX));
        let mut out = String::new();
        text::encode(&mut out, &self.registry).expect("writing to a String never fails");
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(exit: ExitRecord, events: Vec<kiln_core::LimitEventRecord>) -> Option<SandboxFailure> {
        let json = serde_json::json!({
            "run_id": "r", "step": "s", "command": "true", "env": {},
            "rootfs": { "reference": "busybox@1", "sha256": "0".repeat(64), "kind": "tree" },
            "inputs": [], "outputs": [], "exit": exit,
            "started_on": "2026-01-01T00:00:00Z", "finished_on": "2026-01-01T00:00:05Z",
            "log": { "sha256": "0".repeat(64), "size": 0 },
            "sandbox": { "namespaces": [], "network": "none", "host_uid": 1, "step_uid": 1,
                "scratch_bytes": 0, "timeout_secs": 1, "mounts": [],
                "limits": { "memory_bytes": 0, "pids": 0, "millicpus": 0, "open_files": 0 },
                "rlimits": "", "seccomp": "", "seccomp_sha256": "" },
            "usage": { "peak_memory_bytes": 0, "cpu_time_ms": 0, "peak_pids": 0 },
            "events": events,
        });
        let record: StepRecord = match serde_json::from_value(json) {
            Ok(r) => r,
            Err(e) => panic!("test record does not parse: {e}"),
        };
        SandboxFailure::of(&record)
    }

    #[test]
    fn sandbox_failures_are_classified_from_the_exit() {
        use kiln_core::LimitEventRecord;
        assert_eq!(exit(ExitRecord::Exited { code: 0 }, vec![]), None);
        assert_eq!(exit(ExitRecord::Exited { code: 1 }, vec![]), None);
        assert_eq!(
            exit(ExitRecord::TimedOut { after_secs: 1 }, vec![]),
            Some(SandboxFailure::Limit)
        );
        assert_eq!(
            exit(
                ExitRecord::Killed {
                    reason: "memory limit".into()
                },
                vec![]
            ),
            Some(SandboxFailure::Limit)
        );
        assert_eq!(
            exit(
                ExitRecord::Signaled { signal: 9 },
                vec![LimitEventRecord::PidsLimit { limit: 64 }]
            ),
            Some(SandboxFailure::Limit)
        );
        assert_eq!(
            exit(ExitRecord::Signaled { signal: 9 }, vec![]),
            Some(SandboxFailure::Killed)
        );
        assert_eq!(
            exit(
                ExitRecord::Failed {
                    reason: "no rootfs".into()
                },
                vec![]
            ),
            Some(SandboxFailure::FailedToStart)
        );
    }
}
