//! The daemon's durable transitions: workers, leases, reports, expiry, and what the API shows.
//!
//! A leased step is in state `running` with a `lease_id`, a `worker_id` and a deadline
//! (`lease_deadline_ms`, unix milliseconds). Every transition is one transaction
//! ([`State::begin_write`]). On SQLite it starts with `BEGIN IMMEDIATE`, which takes the
//! database's write lock up front: two claims never read the same pending step, and a
//! transaction never fails half-way upgrading a read lock. On PostgreSQL, where several
//! daemons may share one database, the rows a transition reads are locked as it reads them
//! (`FOR UPDATE`; a claim skips rows another claim holds, `SKIP LOCKED`), and every update
//! re-checks the state it expects.
//!
//! Time is always passed in by the caller, never read from SQLite, so tests can move a clock.
//! Deliberately absent: any knowledge of pipelines beyond the `step_needs` edges.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use kiln_core::{ExitRecord, Sha256Digest, StepRecord};
use sqlx::AnyConnection;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{Backend, State, StateError, StepState, corrupt, millis, query_err, rfc3339};

/// A worker announcing itself.
#[derive(Clone, Debug)]
pub struct NewWorker<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub slots: u32,
    pub labels_json: &'a str,
    /// The labels it offers, as in `labels_json`: what `requires:` is matched against.
    pub labels: &'a BTreeMap<String, String>,
    pub registered_at: OffsetDateTime,
}

/// A step just leased to a worker.
#[derive(Clone, Debug)]
pub struct Claimed {
    pub run_id: String,
    pub step: String,
    /// The records of the steps it needs (all succeeded).
    pub needs: BTreeMap<String, StepRecord>,
}

/// A report as [`State::report_then_claim`] stores it: the lease it is for, who sends it, the
/// record and its JSON, and the time it is judged at.
#[derive(Clone, Copy)]
struct Report<'a> {
    lease_id: &'a str,
    worker_id: &'a str,
    record: &'a StepRecord,
    json: &'a str,
    now: OffsetDateTime,
}

/// The lease a report asks for next ([`State::report_then_claim`]).
#[derive(Clone, Copy, Debug)]
pub struct NextLease<'a> {
    pub lease_id: &'a str,
    pub ttl: Duration,
}

/// Whether a lease may still be used by the worker that presents it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseStatus {
    /// Held by this worker and not expired.
    Current,
    /// Expired, reassigned, finished, unknown, or another worker's.
    NotCurrent,
}

/// The conditions that make pending step `s` ready for worker `$1`: every step it needs has
/// succeeded, and the worker offers every label it requires.
macro_rules! ready_step_conditions {
    () => {
        "s.state = 'pending'
         AND NOT EXISTS (
             SELECT 1 FROM step_needs n
             JOIN steps d ON d.run_id = n.run_id AND d.name = n.need
             WHERE n.run_id = s.run_id AND n.step = s.name AND d.state <> 'succeeded')
         AND NOT EXISTS (
             SELECT 1 FROM step_requires q
             WHERE q.run_id = s.run_id AND q.step = s.name
               AND NOT EXISTS (
                   SELECT 1 FROM worker_labels l
                   WHERE l.worker_id = $1 AND l.key = q.key AND l.value = q.value))"
    };
}

/// The oldest ready step, on SQLite: per run in age order, its first ready step in pipeline
/// order. Written so, because the plain join below makes SQLite check and sort every pending
/// step of the oldest run before it picks one (a temporary B-tree for `s.position`): ~0.5 ms
/// per claim with 500 pending steps, growing with the queue; this stops at the first ready
/// step (~20 µs).
const READY_STEP_SQLITE: &str = concat!(
    "SELECT r.id, (SELECT s.name FROM steps s WHERE s.run_id = r.id AND ",
    ready_step_conditions!(),
    " ORDER BY s.position LIMIT 1) AS step
     FROM runs r
     WHERE r.state = 'running' AND r.dispatch = 'lease' AND step IS NOT NULL
     ORDER BY r.started_at, r.id
     LIMIT 1"
);

/// The same on PostgreSQL, as a join whose step row the claim locks (`FOR UPDATE OF s SKIP
/// LOCKED`), which a scalar subquery cannot do.
const READY_STEP_POSTGRES: &str = concat!(
    "SELECT s.run_id, s.name FROM runs r CROSS JOIN steps s
     WHERE s.run_id = r.id AND r.state = 'running' AND r.dispatch = 'lease' AND ",
    ready_step_conditions!(),
    " ORDER BY r.started_at, r.id, s.position
     LIMIT 1"
);

/// What [`State::report_step`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReportOutcome {
    /// The record is stored and the step is final.
    Accepted { run_id: String, succeeded: bool },
    /// The same record was already accepted for this lease (a retried report).
    AlreadyAccepted,
    /// The lease is not this worker's current lease; nothing changed.
    NotCurrent,
    /// The record is for another step than the lease's; nothing changed.
    WrongStep { run_id: String, step: String },
}

/// A lease that ran out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpiredLease {
    pub run_id: String,
    pub step: String,
    pub lease_id: String,
    pub worker_id: String,
    pub attempts: u32,
    /// Attempts exhausted: the step failed instead of going back to pending.
    pub gave_up: bool,
}

/// What a daemon kept of a submitted run.
#[derive(Clone, Debug)]
pub struct SubmittedRun {
    pub id: String,
    pub pipeline_file: String,
    pub pipeline_sha256: Sha256Digest,
    pub pipeline_yaml: String,
    pub resolution_json: String,
    pub started_at: OffsetDateTime,
}

/// The first columns of a run's steps as its views read them: name, state (`cancelled` for a
/// step skipped by a cancel), attempts, worker, reason; `steps_of_run!` ends the query.
macro_rules! step_columns {
    () => {
        "SELECT s.name,
                CASE WHEN s.state = 'skipped' AND s.reason = 'cancelled' THEN 'cancelled'
                     ELSE s.state END,
                s.attempts, s.worker_id, s.reason"
    };
}

/// The rest of a [`step_columns!`] query: every step of run `$1` with its record, if any, in
/// pipeline order.
macro_rules! steps_of_run {
    () => {
        " FROM steps s LEFT JOIN step_records r ON r.run_id = s.run_id AND r.step = s.name
          WHERE s.run_id = $1 ORDER BY s.position"
    };
}

/// A run with its steps (in pipeline order) and artifacts, as its views read it. `T` is what
/// each step carries from its record: the whole [`StepRecord`] ([`State::run_detail`]) or only
/// its exit ([`RunStatus`]); `A` is one artifact.
#[derive(Clone, Debug)]
pub struct RunDetail<T = StepRecord, A = (String, String, String, Sha256Digest)> {
    pub id: String,
    pub pipeline_name: String,
    pub state: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub steps: Vec<StepDetail<T>>,
    /// By default (name, step, path, sha256).
    pub artifacts: Vec<A>,
}

/// One step of a [`RunDetail`].
#[derive(Clone, Debug)]
pub struct StepDetail<T = StepRecord> {
    pub name: String,
    pub state: String,
    pub attempts: u32,
    pub worker_id: Option<String>,
    /// Why it failed or was skipped without a record.
    pub reason: Option<String>,
    /// What the view takes from the step's record, once it has one.
    pub record: Option<T>,
}

/// A run as a client polls it ([`State::run_status`]): each step's exit, not its whole record.
pub type RunStatus = RunDetail<ExitRecord, ArtifactStatus>;

fn deadline(now: OffsetDateTime, ttl: Duration) -> i64 {
    millis(now).saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX))
}

/// A published artifact of a [`RunStatus`], with the size and mode its step's record gives
/// the output (0 and not executable if the record names no such output).
#[derive(Clone, Debug)]
pub struct ArtifactStatus {
    pub name: String,
    pub step: String,
    pub path: String,
    pub sha256: Sha256Digest,
    pub size: u64,
    pub executable: bool,
}

fn parse_record(json: &str) -> Result<StepRecord, StateError> {
    serde_json::from_str(json).map_err(|e| corrupt("step record")(e.to_string()))
}

impl State {
    /// A transaction for a transition: on SQLite it holds the write lock from the start; on
    /// PostgreSQL the transition locks the rows it reads (see the module docs).
    pub(super) async fn begin_write(&self) -> Result<Transaction<'static, Any>, StateError> {
        match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        }
        .map_err(query_err("begin"))
    }

    /// `sql` followed by `lock` on PostgreSQL; `sql` alone on SQLite, whose write lock is
    /// already held ([`Self::begin_write`]).
    pub(super) fn locking(
        &self,
        sql: &'static str,
        lock: &'static str,
    ) -> sqlx::AssertSqlSafe<String> {
        sqlx::AssertSqlSafe(match self.backend {
            Backend::Sqlite => sql.to_owned(),
            Backend::Postgres => format!("{sql} {lock}"),
        })
    }

    /// Records a worker.
    pub async fn register_worker(&self, worker: &NewWorker<'_>) -> Result<(), StateError> {
        let mut tx = self.pool.begin().await.map_err(query_err("begin"))?;
        sqlx::query(
            "INSERT INTO workers (id, name, slots, labels_json, registered_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(worker.id)
        .bind(worker.name)
        .bind(i64::from(worker.slots))
        .bind(worker.labels_json)
        .bind(rfc3339(worker.registered_at))
        .execute(&mut *tx)
        .await
        .map_err(query_err("insert worker"))?;
        for (key, value) in worker.labels {
            sqlx::query("INSERT INTO worker_labels (worker_id, key, value) VALUES ($1, $2, $3)")
                .bind(worker.id)
                .bind(key)
                .bind(value)
                .execute(&mut *tx)
                .await
                .map_err(query_err("insert worker label"))?;
        }
        tx.commit().await.map_err(query_err("commit worker"))
    }

    /// Whether a worker with this id registered.
    pub async fn worker_exists(&self, worker_id: &str) -> Result<bool, StateError> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM workers WHERE id = $1")
            .bind(worker_id)
            .fetch_one(&self.pool)
            .await
            .map_err(query_err("look up worker"))?;
        Ok(n > 0)
    }

    /// Leases the oldest pending step (oldest run first, then pipeline order) whose needs have
    /// all succeeded to `worker_id` under `lease_id`, until `now + ttl`. `None` when nothing is
    /// ready.
    pub async fn claim_step(
        &self,
        worker_id: &str,
        lease_id: &str,
        now: OffsetDateTime,
        ttl: Duration,
    ) -> Result<Option<Claimed>, StateError> {
        let mut tx = self.begin_write().await?;
        let claimed = self
            .claim_in(&mut tx, worker_id, lease_id, now, ttl)
            .await?;
        if claimed.is_some() {
            tx.commit().await.map_err(query_err("commit lease"))?;
        }
        Ok(claimed)
    }

    /// [`Self::claim_step`] inside `tx`: one `UPDATE … RETURNING` picks and leases the step
    /// and says whether it needs any, then the records of those it needs are read.
    async fn claim_in(
        &self,
        tx: &mut AnyConnection,
        worker_id: &str,
        lease_id: &str,
        now: OffsetDateTime,
        ttl: Duration,
    ) -> Result<Option<Claimed>, StateError> {
        // On PostgreSQL two claims (of this daemon or another on the same database) lock
        // different steps: a step another claim holds is skipped, not waited for, and one that
        // another claim leased in the meantime no longer matches `state = 'pending'`.
        let ready = match self.backend {
            Backend::Sqlite => READY_STEP_SQLITE.to_owned(),
            Backend::Postgres => format!("{READY_STEP_POSTGRES} FOR UPDATE OF s SKIP LOCKED"),
        };
        let sql = sqlx::AssertSqlSafe(format!(
            "UPDATE steps SET state = 'running', lease_id = $2, worker_id = $1, lease_deadline_ms = $3,
                              attempts = attempts + 1, reason = NULL
             WHERE (run_id, name) = ({ready}) AND state = 'pending'
             RETURNING run_id, name, (SELECT count(*) FROM step_needs n
                                      WHERE n.run_id = steps.run_id AND n.step = steps.name)"
        ));
        let row = sqlx::query(sql)
            .bind(worker_id)
            .bind(lease_id)
            .bind(deadline(now, ttl))
            .fetch_optional(&mut *tx)
            .await
            .map_err(query_err("lease a ready step"))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let run_id: String = row.get(0);
        let step: String = row.get(1);
        if row.get::<i64, _>(2) == 0 {
            return Ok(Some(Claimed {
                run_id,
                step,
                needs: BTreeMap::new(),
            }));
        }
        let rows = sqlx::query(
            "SELECT r.step, r.record_json FROM step_records r
             JOIN step_needs n ON n.run_id = r.run_id AND n.need = r.step
             WHERE n.run_id = $1 AND n.step = $2",
        )
        .bind(&run_id)
        .bind(&step)
        .fetch_all(&mut *tx)
        .await
        .map_err(query_err("read needed records"))?;
        let mut needs = BTreeMap::new();
        for r in &rows {
            needs.insert(r.get::<String, _>(0), parse_record(&r.get::<String, _>(1))?);
        }
        Ok(Some(Claimed {
            run_id,
            step,
            needs,
        }))
    }

    /// Whether `lease_id` is `worker_id`'s and unexpired at `now`. Reads only.
    pub async fn lease_status(
        &self,
        lease_id: &str,
        worker_id: &str,
        now: OffsetDateTime,
    ) -> Result<LeaseStatus, StateError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM steps WHERE lease_id = $1 AND worker_id = $2 AND state = 'running'
             AND lease_deadline_ms >= $3",
        )
        .bind(lease_id)
        .bind(worker_id)
        .bind(millis(now))
        .fetch_one(&self.pool)
        .await
        .map_err(query_err("look up lease"))?;
        Ok(if n == 1 {
            LeaseStatus::Current
        } else {
            LeaseStatus::NotCurrent
        })
    }

    /// Extends a current lease to `now + ttl`.
    pub async fn heartbeat(
        &self,
        lease_id: &str,
        worker_id: &str,
        now: OffsetDateTime,
        ttl: Duration,
    ) -> Result<LeaseStatus, StateError> {
        let done = sqlx::query(
            "UPDATE steps SET lease_deadline_ms = $1
             WHERE lease_id = $2 AND worker_id = $3 AND state = 'running' AND lease_deadline_ms >= $4",
        )
        .bind(deadline(now, ttl))
        .bind(lease_id)
        .bind(worker_id)
        .bind(millis(now))
        .execute(&self.pool)
        .await
        .map_err(query_err("extend lease"))?;
        Ok(if done.rows_affected() == 1 {
            LeaseStatus::Current
        } else {
            LeaseStatus::NotCurrent
        })
    }

    /// Accepts `record` for the step leased under `lease_id`, if that lease is `worker_id`'s
    /// and current at `now`: stores it and the step's final state, and skips every step
    /// downstream of a failure, in one transaction. Otherwise changes nothing.
    pub async fn report_step(
        &self,
        lease_id: &str,
        worker_id: &str,
        record: &StepRecord,
        now: OffsetDateTime,
    ) -> Result<ReportOutcome, StateError> {
        self.report_then_claim(lease_id, worker_id, record, now, None)
            .await
            .map(|(outcome, _)| outcome)
    }

    /// [`Self::report_step`], then, if the record is accepted (now or before) and `next` is
    /// given, [`Self::claim_step`] for the same worker, in the same transaction: one commit
    /// (and, on SQLite, one hold of the write lock) for both. An error in either leaves
    /// nothing changed.
    pub async fn report_then_claim(
        &self,
        lease_id: &str,
        worker_id: &str,
        record: &StepRecord,
        now: OffsetDateTime,
        next: Option<NextLease<'_>>,
    ) -> Result<(ReportOutcome, Option<Claimed>), StateError> {
        let json = serde_json::to_string(record).expect("a StepRecord always serialises");
        let report = Report {
            lease_id,
            worker_id,
            record,
            json: &json,
            now,
        };
        let mut tx = self.begin_write().await?;
        let outcome = self.report_in(&mut tx, &report).await?;
        let claimed = match (&outcome, next) {
            (ReportOutcome::Accepted { .. } | ReportOutcome::AlreadyAccepted, Some(next)) => {
                self.claim_in(&mut tx, worker_id, next.lease_id, now, next.ttl)
                    .await?
            }
            _ => None,
        };
        if matches!(outcome, ReportOutcome::Accepted { .. }) || claimed.is_some() {
            tx.commit().await.map_err(query_err("commit report"))?;
        }
        Ok((outcome, claimed))
    }

    /// The report's part of [`Self::report_then_claim`]. The step's row is updated first,
    /// with every condition of a current lease in its `WHERE`: when that matches, the report
    /// is accepted without reading the row first; when not, the row is read to say why.
    async fn report_in(
        &self,
        tx: &mut AnyConnection,
        report: &Report<'_>,
    ) -> Result<ReportOutcome, StateError> {
        let Report {
            lease_id,
            worker_id,
            record,
            json,
            now,
        } = *report;
        let succeeded = record.exit.success();
        let final_state = if succeeded {
            StepState::Succeeded
        } else {
            StepState::Failed
        };
        // Returns how many live log chunks the lease has: most steps end before their log is
        // streamed, and then there is nothing to drop.
        let finished = sqlx::query(
            "UPDATE steps SET state = $1, lease_deadline_ms = NULL
             WHERE lease_id = $2 AND worker_id = $3 AND state = 'running'
               AND lease_deadline_ms >= $4 AND run_id = $5 AND name = $6
             RETURNING (SELECT count(*) FROM live_logs WHERE lease_id = $2)",
        )
        .bind(final_state.as_str())
        .bind(lease_id)
        .bind(worker_id)
        .bind(millis(now))
        .bind(&record.run_id)
        .bind(&record.step)
        .fetch_optional(&mut *tx)
        .await
        .map_err(query_err("finish step"))?;
        let Some(finished) = finished else {
            return self.why_refused(tx, report).await;
        };
        let (run_id, step) = (&record.run_id, &record.step);
        insert_record(tx, record, json).await?;
        // The record's log blob is the log now; the live copy only cost space. In this
        // transaction, which holds the write lock already, rather than in one of its own.
        if finished.get::<i64, _>(0) > 0 {
            sqlx::query("DELETE FROM live_logs WHERE lease_id = $1")
                .bind(lease_id)
                .execute(&mut *tx)
                .await
                .map_err(query_err("drop live log"))?;
        }
        super::step_log::append(
            tx,
            &crate::steplog::LogEntry::StepRecord {
                run: run_id,
                step,
                worker: worker_id,
                record_json: json,
            },
        )
        .await?;
        if !succeeded {
            skip_downstream(tx, run_id, step).await?;
        }
        Ok(ReportOutcome::Accepted {
            run_id: run_id.clone(),
            succeeded,
        })
    }

    /// Why a report's update matched no row: the lease is unknown, another worker's, expired,
    /// already reported (the same record again is accepted as it was), or for another step.
    async fn why_refused(
        &self,
        tx: &mut AnyConnection,
        report: &Report<'_>,
    ) -> Result<ReportOutcome, StateError> {
        let row = sqlx::query(
            "SELECT s.run_id, s.name, s.worker_id, s.state, s.lease_deadline_ms, r.record_json
             FROM steps s LEFT JOIN step_records r ON r.run_id = s.run_id AND r.step = s.name
             WHERE s.lease_id = $1",
        )
        .bind(report.lease_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(query_err("look up lease"))?;
        let Some(row) = row else {
            return Ok(ReportOutcome::NotCurrent);
        };
        let run_id: String = row.get(0);
        let step: String = row.get(1);
        let holder: Option<String> = row.get(2);
        let state: String = row.get(3);
        let deadline_ms: Option<i64> = row.get(4);
        let stored: Option<String> = row.get(5);
        if holder.as_deref() != Some(report.worker_id) {
            return Ok(ReportOutcome::NotCurrent);
        }
        if state != StepState::Running.as_str() {
            return Ok(if stored.as_deref() == Some(report.json) {
                ReportOutcome::AlreadyAccepted
            } else {
                ReportOutcome::NotCurrent
            });
        }
        if deadline_ms.is_none_or(|d| d < millis(report.now)) {
            return Ok(ReportOutcome::NotCurrent);
        }
        if report.record.run_id != run_id || report.record.step != step {
            return Ok(ReportOutcome::WrongStep { run_id, step });
        }
        // The update matched nothing, yet every condition holds: it cannot be, under the
        // write lock (SQLite) or the row lock the update waited for (PostgreSQL).
        Ok(ReportOutcome::NotCurrent)
    }

    /// Ends every lease whose deadline passed before `now`: the step goes back to pending, or
    /// fails once `max_attempts` leases have been handed out (and its dependents are skipped).
    pub async fn expire_leases(
        &self,
        now: OffsetDateTime,
        max_attempts: u32,
    ) -> Result<Vec<ExpiredLease>, StateError> {
        // Most calls find nothing: look before taking the write lock.
        let any: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT 1 FROM steps WHERE state = 'running'
                                   AND lease_id IS NOT NULL AND lease_deadline_ms < $1 LIMIT 1) e",
        )
        .bind(millis(now))
        .fetch_one(&self.pool)
        .await
        .map_err(query_err("look for expired leases"))?;
        if any == 0 {
            return Ok(Vec::new());
        }
        let mut tx = self.begin_write().await?;
        // On PostgreSQL, a lease being reported or expired by another daemon right now is
        // left to that transaction.
        let rows = sqlx::query(self.locking(
            "SELECT run_id, name, lease_id, worker_id, attempts FROM steps
             WHERE state = 'running' AND lease_id IS NOT NULL AND lease_deadline_ms < $1
             ORDER BY run_id, name",
            "FOR UPDATE SKIP LOCKED",
        ))
        .bind(millis(now))
        .fetch_all(&mut *tx)
        .await
        .map_err(query_err("find expired leases"))?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let mut expired = Vec::new();
        for r in &rows {
            let lease = ExpiredLease {
                run_id: r.get(0),
                step: r.get(1),
                lease_id: r.get(2),
                worker_id: r.get::<Option<String>, _>(3).unwrap_or_default(),
                attempts: u32::try_from(r.get::<i64, _>(4)).unwrap_or(u32::MAX),
                gave_up: false,
            };
            let gave_up = lease.attempts >= max_attempts;
            if gave_up {
                let reason = format!(
                    "lease expired {} time(s), last held by worker {}; giving up",
                    lease.attempts, lease.worker_id
                );
                sqlx::query(
                    "UPDATE steps SET state = 'failed', lease_id = NULL, lease_deadline_ms = NULL,
                                      reason = $1
                     WHERE run_id = $2 AND name = $3",
                )
                .bind(reason)
                .bind(&lease.run_id)
                .bind(&lease.step)
                .execute(&mut *tx)
                .await
                .map_err(query_err("fail step"))?;
                skip_downstream(&mut tx, &lease.run_id, &lease.step).await?;
            } else {
                sqlx::query(
                    "UPDATE steps SET state = 'pending', lease_id = NULL, worker_id = NULL,
                                      lease_deadline_ms = NULL
                     WHERE run_id = $1 AND name = $2",
                )
                .bind(&lease.run_id)
                .bind(&lease.step)
                .execute(&mut *tx)
                .await
                .map_err(query_err("requeue step"))?;
            }
            expired.push(ExpiredLease { gave_up, ..lease });
        }
        tx.commit().await.map_err(query_err("commit expiry"))?;
        Ok(expired)
    }

    /// Leased runs still marked running whose steps are all final: ready to publish.
    pub async fn complete_runs(&self) -> Result<Vec<String>, StateError> {
        sqlx::query_scalar(
            "SELECT r.id FROM runs r WHERE r.state = 'running' AND r.dispatch = 'lease'
             AND NOT EXISTS (SELECT 1 FROM steps s WHERE s.run_id = r.id
                             AND s.state IN ('pending', 'running'))
             ORDER BY r.started_at, r.id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("find complete runs"))
    }

    /// Whether any step of `run_id` is still pending or running.
    pub async fn run_has_open_steps(&self, run_id: &str) -> Result<bool, StateError> {
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT 1 FROM steps WHERE run_id = $1
                                   AND state IN ('pending', 'running') LIMIT 1) o",
        )
        .bind(run_id)
        .fetch_one(&self.pool)
        .await
        .map_err(query_err("look for open steps"))?;
        Ok(open > 0)
    }

    /// Whether a run is still marked running.
    pub async fn run_is_running(&self, run_id: &str) -> Result<bool, StateError> {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM runs WHERE id = $1 AND state = 'running'")
                .bind(run_id)
                .fetch_one(&self.pool)
                .await
                .map_err(query_err("look up run"))?;
        Ok(n == 1)
    }

    /// A submitted (leased) run as kept for resuming it.
    pub async fn submitted_run(&self, run_id: &str) -> Result<Option<SubmittedRun>, StateError> {
        let row = sqlx::query(
            "SELECT id, pipeline_file, pipeline_sha256, pipeline_yaml, resolution_json, started_at
             FROM runs WHERE id = $1 AND dispatch = 'lease'",
        )
        .bind(run_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(query_err("look up run"))?;
        let Some(r) = row else { return Ok(None) };
        let bad = corrupt("submitted run");
        Ok(Some(SubmittedRun {
            id: r.get(0),
            pipeline_file: r.get(1),
            pipeline_sha256: Sha256Digest::from_str(&r.get::<String, _>(2))
                .map_err(|e| bad(e.to_string()))?,
            pipeline_yaml: r
                .get::<Option<String>, _>(3)
                .ok_or_else(|| bad("no pipeline text".into()))?,
            resolution_json: r
                .get::<Option<String>, _>(4)
                .ok_or_else(|| bad("no resolution".into()))?,
            started_at: OffsetDateTime::parse(&r.get::<String, _>(5), &Rfc3339)
                .map_err(|e| bad(e.to_string()))?,
        }))
    }

    /// The run a request id names, with its pipeline's sha256.
    pub async fn run_by_request_id(
        &self,
        request_id: &str,
    ) -> Result<Option<(String, String)>, StateError> {
        let row = sqlx::query("SELECT id, pipeline_sha256 FROM runs WHERE request_id = $1")
            .bind(request_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(query_err("look up request id"))?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    /// Forgets a run's artifacts, so that publishing can start over after a crash mid-way.
    pub async fn clear_artifacts(&self, run_id: &str) -> Result<(), StateError> {
        sqlx::query("DELETE FROM artifacts WHERE run_id = $1")
            .bind(run_id)
            .execute(&self.pool)
            .await
            .map_err(query_err("clear artifacts"))?;
        Ok(())
    }

    /// The digest of a reported step's log.
    pub async fn step_log(
        &self,
        run_id: &str,
        step: &str,
    ) -> Result<Option<Sha256Digest>, StateError> {
        let sha: Option<String> = sqlx::query_scalar(
            "SELECT log_sha256 FROM step_records WHERE run_id = $1 AND step = $2",
        )
        .bind(run_id)
        .bind(step)
        .fetch_optional(&self.pool)
        .await
        .map_err(query_err("look up step log"))?;
        sha.map(|s| Sha256Digest::from_str(&s).map_err(|e| corrupt("step log")(e.to_string())))
            .transpose()
    }

    /// A published artifact's digest and its provenance's digest.
    pub async fn artifact(
        &self,
        run_id: &str,
        name: &str,
    ) -> Result<Option<(Sha256Digest, Sha256Digest)>, StateError> {
        let row = sqlx::query(
            "SELECT sha256, provenance_sha256 FROM artifacts WHERE run_id = $1 AND name = $2",
        )
        .bind(run_id)
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(query_err("look up artifact"))?;
        let bad = corrupt("artifact");
        row.map(|r| {
            let a =
                Sha256Digest::from_str(&r.get::<String, _>(0)).map_err(|e| bad(e.to_string()))?;
            let p =
                Sha256Digest::from_str(&r.get::<String, _>(1)).map_err(|e| bad(e.to_string()))?;
            Ok((a, p))
        })
        .transpose()
    }

    /// Every run id, newest first.
    pub async fn run_ids(&self) -> Result<Vec<String>, StateError> {
        sqlx::query_scalar("SELECT id FROM runs ORDER BY started_at DESC, id DESC")
            .fetch_all(&self.readers)
            .await
            .map_err(query_err("list runs"))
    }

    /// The run's own columns as its views show them: id, pipeline name, state (`cancelled` for
    /// a cancelled run), started at, finished at.
    async fn run_head(&self, run_id: &str) -> Result<Option<AnyRow>, StateError> {
        sqlx::query(
            "SELECT id, pipeline_name,
                    CASE WHEN cancelled_at IS NULL THEN state ELSE 'cancelled' END,
                    started_at, finished_at
             FROM runs WHERE id = $1",
        )
        .bind(run_id)
        .fetch_optional(&self.readers)
        .await
        .map_err(query_err("look up run"))
    }

    /// A run as a client polls it: its steps in pipeline order with their exits, and its
    /// artifacts. Unlike [`Self::run_detail`] it reads no whole record but the artifacts' steps'.
    pub async fn run_status(&self, run_id: &str) -> Result<Option<RunStatus>, StateError> {
        self.run_rows(
            run_id,
            concat!(
                step_columns!(),
                ", r.exit_json, CASE WHEN r.exit_json IS NULL THEN r.record_json END",
                steps_of_run!()
            ),
            |s| parse_exit(s.get(5), s.get(6)),
            "SELECT a.name, a.step, a.path, a.sha256, r.record_json
             FROM artifacts a LEFT JOIN step_records r ON r.run_id = a.run_id AND r.step = a.step
             WHERE a.run_id = $1 ORDER BY a.name",
            artifact_status,
        )
        .await
    }

    /// A run with its steps (in pipeline order, with their records) and artifacts.
    pub async fn run_detail(&self, run_id: &str) -> Result<Option<RunDetail>, StateError> {
        self.run_rows(
            run_id,
            concat!(step_columns!(), ", r.record_json", steps_of_run!()),
            |s| {
                s.get::<Option<String>, _>(5)
                    .map(|j| parse_record(&j))
                    .transpose()
            },
            "SELECT name, step, path, sha256 FROM artifacts WHERE run_id = $1 ORDER BY name",
            |a| {
                let sha = Sha256Digest::from_str(&a.get::<String, _>(3))
                    .map_err(|e| corrupt("artifact")(e.to_string()))?;
                Ok((a.get(0), a.get(1), a.get(2), sha))
            },
        )
        .await
    }

    /// A run read for a view: its head, its steps (`steps_sql`, a [`step_columns!`] query whose
    /// further columns `from_record` reads) and its artifacts (`artifacts_sql`, each row made
    /// by `artifact`); `None` for an unknown run.
    async fn run_rows<T, A>(
        &self,
        run_id: &str,
        steps_sql: &'static str,
        from_record: impl Fn(&AnyRow) -> Result<Option<T>, StateError>,
        artifacts_sql: &'static str,
        artifact: impl Fn(&AnyRow) -> Result<A, StateError>,
    ) -> Result<Option<RunDetail<T, A>>, StateError> {
        let Some(r) = self.run_head(run_id).await? else {
            return Ok(None);
        };
        let steps = sqlx::query(steps_sql)
            .bind(run_id)
            .fetch_all(&self.readers)
            .await
            .map_err(query_err("list steps"))?
            .iter()
            .map(|s| {
                Ok(StepDetail {
                    name: s.get(0),
                    state: s.get(1),
                    attempts: u32::try_from(s.get::<i64, _>(2)).unwrap_or(u32::MAX),
                    worker_id: s.get(3),
                    reason: s.get(4),
                    record: from_record(s)?,
                })
            })
            .collect::<Result<Vec<_>, StateError>>()?;
        let artifacts = sqlx::query(artifacts_sql)
            .bind(run_id)
            .fetch_all(&self.readers)
            .await
            .map_err(query_err("list artifacts"))?
            .iter()
            .map(artifact)
            .collect::<Result<Vec<_>, StateError>>()?;
        Ok(Some(RunDetail {
            id: r.get(0),
            pipeline_name: r.get(1),
            state: r.get(2),
            started_at: r.get(3),
            finished_at: r.get(4),
            steps,
            artifacts,
        }))
    }
}

/// An artifacts row joined with its step's record (`name, step, path, sha256, record_json`).
fn artifact_status(row: &AnyRow) -> Result<ArtifactStatus, StateError> {
    let path: String = row.get(2);
    let sha256 = Sha256Digest::from_str(&row.get::<String, _>(3))
        .map_err(|e| corrupt("artifact")(e.to_string()))?;
    let record = row
        .get::<Option<String>, _>(4)
        .map(|j| parse_record(&j))
        .transpose()?;
    let output = record
        .as_ref()
        .and_then(|r| r.outputs.iter().find(|o| o.path == path));
    Ok(ArtifactStatus {
        name: row.get(0),
        step: row.get(1),
        size: output.map_or(0, |o| o.size),
        executable: output.is_some_and(|o| o.executable),
        path,
        sha256,
    })
}

/// A step's exit as [`State::run_status`] reads it: its own column, or (in a row an older
/// daemon wrote) the record's.
fn parse_exit(
    exit_json: Option<String>,
    record_json: Option<String>,
) -> Result<Option<ExitRecord>, StateError> {
    match (exit_json, record_json) {
        (Some(exit), _) => serde_json::from_str(&exit)
            .map(Some)
            .map_err(|e| corrupt("step exit")(e.to_string())),
        (None, Some(record)) => parse_record(&record).map(|r| Some(r.exit)),
        (None, None) => Ok(None),
    }
}

pub(super) async fn insert_record(
    tx: &mut AnyConnection,
    record: &StepRecord,
    json: &str,
) -> Result<(), StateError> {
    let exit = serde_json::to_value(&record.exit).expect("an ExitRecord always serialises");
    sqlx::query(
        "INSERT INTO step_records (run_id, step, exit_status, rootfs_sha256, log_sha256, started_at, finished_at, record_json, exit_json)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&record.run_id)
    .bind(&record.step)
    .bind(exit["status"].as_str().unwrap_or("unknown"))
    .bind(record.rootfs.sha256.to_string())
    .bind(record.log.sha256.to_string())
    .bind(rfc3339(record.started_on))
    .bind(rfc3339(record.finished_on))
    .bind(json)
    .bind(exit.to_string())
    .execute(&mut *tx)
    .await
    .map_err(query_err("insert step record"))?;
    Ok(())
}

/// Skips every pending step downstream of `failed`, transitively.
async fn skip_downstream(
    tx: &mut AnyConnection,
    run_id: &str,
    failed: &str,
) -> Result<(), StateError> {
    sqlx::query(
        "WITH RECURSIVE downstream(name) AS (
             SELECT step FROM step_needs WHERE run_id = $1 AND need = $2
             UNION
             SELECT n.step FROM step_needs n JOIN downstream d ON n.need = d.name WHERE n.run_id = $3)
         UPDATE steps SET state = 'skipped', reason = $4
         WHERE run_id = $5 AND state = 'pending' AND name IN (SELECT name FROM downstream)",
    )
    .bind(run_id)
    .bind(failed)
    .bind(run_id)
    .bind(format!("upstream step {failed} did not succeed"))
    .bind(run_id)
    .execute(&mut *tx)
    .await
    .map_err(query_err("skip downstream steps"))?;
    Ok(())
}
