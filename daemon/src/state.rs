//! The controller's durable state: mirror catalogue, runs, steps, step records, artifacts.
//!
//! SQLite (a file under the data dir, WAL) or PostgreSQL, through sqlx's `Any` driver with
//! one set of queries ([`database`]; schema from `migrations/sqlite` or `migrations/postgres`).
//! Every multi-row change is one transaction, so a crash or a refused input never leaves half
//! a run. The daemon's transitions (leases, reports, expiry) live in [`leases`].

mod attestations;
mod database;
mod git_mirrors;
mod leases;
mod live_logs;
pub mod stats;
mod step_log;
mod teams;
pub mod testing;
mod trust;

pub use database::{Backend, Database, DatabaseUrlError};
pub use git_mirrors::{GitMirror, GitMirrorBinding};

pub use leases::{
    ArtifactStatus, Claimed, ExpiredLease, LeaseStatus, NewWorker, NextLease, ReportOutcome,
    RunDetail, RunStatus, StepDetail, SubmittedRun,
};
pub use live_logs::{LiveAppend, LiveLog, StepLogSource};
pub use step_log::{StoredCheckpoint, StoredEntry, TreeError};
pub use teams::{
    CANCELLED_REASON, CancelOutcome, NewTeamToken, TEAM_TOKEN_PREFIX, TokenRefusal, random_secret,
    valid_team_name,
};
pub use trust::{Advisory, PublishedArtifact, Revocation};

use std::path::Path;
use std::str::FromStr;

use std::collections::BTreeMap;

use kiln_core::{BlobKind, GitInput, MirrorInput, MirrorRef, Sha256Digest, StepRecord};
use sqlx::AnyPool;
use sqlx::Row;
use sqlx::any::AnyRow;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Errors of the state store.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot open state database {database}")]
    Open {
        /// The database, without its password ([`Database`]'s `Display`).
        database: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot migrate state database schema")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    #[error("state database: {what}")]
    Query {
        what: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error(
        "mirror entry {reference} already exists with sha256 {existing}; entries are immutable (publish a new version instead of {new})"
    )]
    Immutable {
        reference: MirrorRef,
        existing: Sha256Digest,
        new: Sha256Digest,
    },
    #[error("state database holds an unreadable {what}: {detail}")]
    Corrupt { what: &'static str, detail: String },
    #[error("request id {request_id:?} already names a run")]
    DuplicateRequest { request_id: String },
}

fn query_err(what: &'static str) -> impl FnOnce(sqlx::Error) -> StateError {
    move |source| StateError::Query { what, source }
}

/// A catalogued mirror entry: an immutable NAME@VERSION → digest binding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MirrorEntry {
    pub reference: MirrorRef,
    pub sha256: Sha256Digest,
    pub kind: BlobKind,
    pub size: u64,
    pub added_at: OffsetDateTime,
}

/// How a mirror entry was admitted (table `mirror_evidence`, docs/mirror.md).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MirrorEvidence {
    /// The digest asserted with `--sha256`, and who asserted it (`operator` for now).
    pub asserted: Option<(Sha256Digest, String)>,
    /// The verified signature over the entry's bytes, base64 as cosign writes it.
    pub signature: Option<String>,
    /// The verifying key's id (sha256 of its DER SPKI) and algorithm.
    pub signer_keyid: Option<String>,
    pub signer_algorithm: Option<String>,
    /// The policy's name for that key, when the policy trusts it.
    pub signer_name: Option<String>,
    /// What admitted the entry: `no policy`, or the policy file and rule.
    pub policy_decision: String,
    /// The rest: fetch origin, bundle, provenance, license, packages (column `details`).
    pub details: crate::evidence::EvidenceDetails,
}

/// Whether [`State::add_mirror_entry`] inserted a row or found the identical one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddOutcome {
    Added,
    AlreadyPresent,
}

/// A run being accepted: the run row and its steps, written in one transaction.
#[derive(Clone, Debug)]
pub struct NewRun<'a> {
    pub id: &'a str,
    pub pipeline_name: &'a str,
    pub pipeline_file: &'a str,
    pub pipeline_sha256: &'a Sha256Digest,
    pub started_at: OffsetDateTime,
    /// In pipeline (topological) order.
    pub steps: Vec<NewStep<'a>>,
    /// `Some` for a run submitted to the daemon, whose steps are leased to workers; `None` for
    /// the all-in-one mode, which drives its steps itself.
    pub submission: Option<Submission<'a>>,
}

/// One step of a [`NewRun`].
#[derive(Clone, Debug)]
pub struct NewStep<'a> {
    pub name: &'a str,
    pub needs: &'a [String],
    /// Labels a worker must offer to be leased this step.
    pub requires: &'a BTreeMap<String, String>,
}

/// What a daemon keeps of a submitted run so that a restarted daemon can resume it.
#[derive(Clone, Debug)]
pub struct Submission<'a> {
    /// The pipeline text, verbatim.
    pub pipeline_yaml: &'a str,
    /// The rootfs and inputs as resolved at acceptance (see [`resolution_json`]).
    pub resolution_json: String,
    /// The client's idempotency key.
    pub request_id: Option<&'a str>,
}

/// The stored form of a run's resolution: `{"rootfs": MirrorInput, "inputs": {NAME:
/// MirrorInput}, "sources": {NAME: GitInput}}` (`sources` only when there are any, so the
/// resolutions of runs without sources keep their earlier form).
pub fn resolution_json(
    rootfs: &MirrorInput,
    inputs: &BTreeMap<String, MirrorInput>,
    sources: &BTreeMap<String, GitInput>,
) -> String {
    let mut value = serde_json::json!({ "rootfs": rootfs, "inputs": inputs });
    if !sources.is_empty() {
        value["sources"] = serde_json::json!(sources);
    }
    value.to_string()
}

/// A run's resolution as [`resolution_json`] stored it.
pub type Resolution = (
    MirrorInput,
    BTreeMap<String, MirrorInput>,
    BTreeMap<String, GitInput>,
);

/// Reads back [`resolution_json`].
pub fn parse_resolution(json: &str) -> Result<Resolution, StateError> {
    let bad = corrupt("run resolution");
    let mut value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
    let rootfs = serde_json::from_value(value["rootfs"].take()).map_err(|e| bad(e.to_string()))?;
    let inputs = serde_json::from_value(value["inputs"].take()).map_err(|e| bad(e.to_string()))?;
    let sources = match value["sources"].take() {
        serde_json::Value::Null => BTreeMap::new(),
        sources => serde_json::from_value(sources).map_err(|e| bad(e.to_string()))?,
    };
    Ok((rootfs, inputs, sources))
}

/// A step's scheduling state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepState {
    Pending,
    Running,
    Succeeded,
    Failed,
    Skipped,
}

impl StepState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
        }
    }
}

/// A run summary as stored.
#[derive(Clone, Debug)]
pub struct RunRow {
    pub id: String,
    pub pipeline_name: String,
    pub state: String,
}

/// A signed artifact of a finished run.
#[derive(Clone, Debug)]
pub struct ArtifactRow<'a> {
    pub run_id: &'a str,
    pub name: &'a str,
    pub step: &'a str,
    pub path: &'a str,
    pub sha256: &'a Sha256Digest,
    pub provenance_sha256: &'a Sha256Digest,
}

/// Unix milliseconds, as lease deadlines and token expiries are stored (`BIGINT`).
pub(crate) fn millis(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339)
        .expect("an OffsetDateTime always formats as RFC 3339")
}

fn kind_columns(kind: &BlobKind) -> (&'static str, Option<&str>) {
    match kind {
        BlobKind::File { file_name } => ("file", Some(file_name.as_str())),
        BlobKind::Tree => ("tree", None),
    }
}

/// The controller's database handle.
#[derive(Clone, Debug)]
pub struct State {
    /// Writes and the dispatch path's reads ([`database::Pools::writer`]).
    pool: AnyPool,
    /// Large read-only views ([`database::Pools::readers`]).
    readers: AnyPool,
    backend: Backend,
    /// The step log's Merkle tree as far as this process has read it ([`step_log`]).
    log_tree: step_log::TreeCache,
}

impl State {
    /// Opens (creating if needed) the SQLite database at `path` and brings its schema up to date.
    pub async fn open(path: &Path) -> Result<Self, StateError> {
        Self::connect(&Database::Sqlite(path.to_owned())).await
    }

    /// Opens `db` (a SQLite file, created if needed, or a PostgreSQL database) and brings its
    /// schema up to date.
    pub async fn connect(db: &Database) -> Result<Self, StateError> {
        let pools = database::connect(db).await?;
        Ok(Self {
            pool: pools.writer,
            readers: pools.readers,
            backend: db.backend(),
            log_tree: step_log::TreeCache::default(),
        })
    }

    /// The engine under this state.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The pool, for the PKI's tables ([`crate::pki::Enrollment`]).
    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Catalogues `reference` → `sha256`. Adding the identical binding again is a no-op;
    /// binding an existing NAME@VERSION to another digest is refused.
    pub async fn add_mirror_entry(&self, entry: &MirrorEntry) -> Result<AddOutcome, StateError> {
        self.add_mirror_entry_with_evidence(entry, None).await
    }

    /// Like [`Self::add_mirror_entry`], recording `evidence` in the same transaction. An entry
    /// already present keeps the evidence it was first admitted with.
    pub async fn add_mirror_entry_with_evidence(
        &self,
        entry: &MirrorEntry,
        evidence: Option<&MirrorEvidence>,
    ) -> Result<AddOutcome, StateError> {
        if let Some(existing) = self.mirror_entry(&entry.reference).await? {
            if existing.sha256 == entry.sha256 && existing.kind == entry.kind {
                return Ok(AddOutcome::AlreadyPresent);
            }
            return Err(StateError::Immutable {
                reference: entry.reference.clone(),
                existing: existing.sha256,
                new: entry.sha256,
            });
        }
        let (kind, file_name) = kind_columns(&entry.kind);
        let mut tx = self.pool.begin().await.map_err(query_err("begin"))?;
        sqlx::query(
            "INSERT INTO mirror_entries (name, version, sha256, kind, file_name, size, added_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(entry.reference.name())
        .bind(entry.reference.version())
        .bind(entry.sha256.to_string())
        .bind(kind)
        .bind(file_name)
        .bind(i64::try_from(entry.size).unwrap_or(i64::MAX))
        .bind(rfc3339(entry.added_at))
        .execute(&mut *tx)
        .await
        .map_err(query_err("insert mirror entry"))?;
        if let Some(ev) = evidence {
            sqlx::query(
                "INSERT INTO mirror_evidence (name, version, asserted_sha256, asserted_by, signature,
                     signer_keyid, signer_algorithm, signer_name, policy_decision, details)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(entry.reference.name())
            .bind(entry.reference.version())
            .bind(ev.asserted.as_ref().map(|(d, _)| d.to_string()))
            .bind(ev.asserted.as_ref().map(|(_, by)| by.as_str()))
            .bind(ev.signature.as_deref())
            .bind(ev.signer_keyid.as_deref())
            .bind(ev.signer_algorithm.as_deref())
            .bind(ev.signer_name.as_deref())
            .bind(ev.policy_decision.as_str())
            .bind(details_json(&ev.details))
            .execute(&mut *tx)
            .await
            .map_err(query_err("insert mirror evidence"))?;
        }
        tx.commit()
            .await
            .map_err(query_err("commit mirror entry"))?;
        Ok(AddOutcome::Added)
    }

    /// The evidence an entry was admitted with; `None` for entries added before evidence was
    /// recorded, or through a path that records none.
    pub async fn mirror_evidence(
        &self,
        reference: &MirrorRef,
    ) -> Result<Option<MirrorEvidence>, StateError> {
        let row = sqlx::query(
            "SELECT asserted_sha256, asserted_by, signature, signer_keyid, signer_algorithm,
                    signer_name, policy_decision, details
             FROM mirror_evidence WHERE name = $1 AND version = $2",
        )
        .bind(reference.name())
        .bind(reference.version())
        .fetch_optional(&self.pool)
        .await
        .map_err(query_err("look up mirror evidence"))?;
        let Some(r) = row else { return Ok(None) };
        let asserted = match (r.get::<Option<String>, _>(0), r.get::<Option<String>, _>(1)) {
            (Some(d), Some(by)) => Some((
                Sha256Digest::from_str(&d)
                    .map_err(|e| corrupt("mirror evidence")(e.to_string()))?,
                by,
            )),
            _ => None,
        };
        Ok(Some(MirrorEvidence {
            asserted,
            signature: r.get(2),
            signer_keyid: r.get(3),
            signer_algorithm: r.get(4),
            signer_name: r.get(5),
            policy_decision: r.get(6),
            details: parse_details(r.get::<Option<String>, _>(7))?,
        }))
    }

    /// Looks up one NAME@VERSION.
    pub async fn mirror_entry(
        &self,
        reference: &MirrorRef,
    ) -> Result<Option<MirrorEntry>, StateError> {
        let row = sqlx::query(
            "SELECT name, version, sha256, kind, file_name, size, added_at
             FROM mirror_entries WHERE name = $1 AND version = $2",
        )
        .bind(reference.name())
        .bind(reference.version())
        .fetch_optional(&self.pool)
        .await
        .map_err(query_err("look up mirror entry"))?;
        row.map(|r| entry_from_row(&r)).transpose()
    }

    /// Every catalogued entry, by name then version.
    pub async fn mirror_entries(&self) -> Result<Vec<MirrorEntry>, StateError> {
        let rows = sqlx::query(
            "SELECT name, version, sha256, kind, file_name, size, added_at
             FROM mirror_entries ORDER BY name, version",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("list mirror entries"))?;
        rows.iter().map(entry_from_row).collect()
    }

    /// Records an accepted run and its pending steps, atomically.
    /// Logs the run's start in the step log, in the same transaction.
    pub async fn create_run(&self, run: &NewRun<'_>) -> Result<(), StateError> {
        let mut tx = self.begin_write().await?;
        let sub = run.submission.as_ref();
        sqlx::query(
            "INSERT INTO runs (id, pipeline_name, pipeline_file, pipeline_sha256, state, started_at,
                               dispatch, pipeline_yaml, resolution_json, request_id)
             VALUES ($1, $2, $3, $4, 'running', $5, $6, $7, $8, $9)",
        )
        .bind(run.id)
        .bind(run.pipeline_name)
        .bind(run.pipeline_file)
        .bind(run.pipeline_sha256.to_string())
        .bind(rfc3339(run.started_at))
        .bind(if sub.is_some() { "lease" } else { "local" })
        .bind(sub.map(|s| s.pipeline_yaml))
        .bind(sub.map(|s| s.resolution_json.as_str()))
        .bind(sub.and_then(|s| s.request_id))
        .execute(&mut *tx)
        .await
        .map_err(|source| match (&source, sub.and_then(|s| s.request_id)) {
            (sqlx::Error::Database(db), Some(request_id)) if db.is_unique_violation() => {
                StateError::DuplicateRequest {
                    request_id: request_id.to_owned(),
                }
            }
            _ => StateError::Query {
                what: "insert run",
                source,
            },
        })?;
        insert_steps(&mut tx, run).await?;
        step_log::append(
            &mut tx,
            &crate::steplog::LogEntry::RunStarted {
                run: run.id,
                pipeline_name: run.pipeline_name,
                pipeline_file: run.pipeline_file,
                pipeline_sha256: run.pipeline_sha256,
                started_at: run.started_at,
                dispatch: if sub.is_some() { "lease" } else { "local" },
            },
        )
        .await?;
        tx.commit().await.map_err(query_err("commit run"))
    }

    /// Moves a step to `state`.
    pub async fn set_step_state(
        &self,
        run_id: &str,
        step: &str,
        state: StepState,
    ) -> Result<(), StateError> {
        sqlx::query("UPDATE steps SET state = $1 WHERE run_id = $2 AND name = $3")
            .bind(state.as_str())
            .bind(run_id)
            .bind(step)
            .execute(&self.pool)
            .await
            .map_err(query_err("update step state"))?;
        Ok(())
    }

    /// Stores a step's record and its final state in one transaction, and logs the record in
    /// the step log (worker `local`: the all-in-one mode).
    pub async fn record_step(&self, record: &StepRecord) -> Result<(), StateError> {
        let json = serde_json::to_string(record).expect("a StepRecord always serialises");
        let state = if record.exit.success() {
            StepState::Succeeded
        } else {
            StepState::Failed
        };
        let mut tx = self.begin_write().await?;
        leases::insert_record(&mut tx, record, &json).await?;
        step_log::append(
            &mut tx,
            &crate::steplog::LogEntry::StepRecord {
                run: &record.run_id,
                step: &record.step,
                worker: "local",
                record_json: &json,
            },
        )
        .await?;
        sqlx::query("UPDATE steps SET state = $1 WHERE run_id = $2 AND name = $3")
            .bind(state.as_str())
            .bind(&record.run_id)
            .bind(&record.step)
            .execute(&mut *tx)
            .await
            .map_err(query_err("update step state"))?;
        tx.commit().await.map_err(query_err("commit step record"))
    }

    /// The step records of a run, in step order.
    pub async fn step_records(&self, run_id: &str) -> Result<Vec<StepRecord>, StateError> {
        let rows = sqlx::query(
            "SELECT r.record_json FROM step_records r JOIN steps s ON s.run_id = r.run_id AND s.name = r.step
             WHERE r.run_id = $1 ORDER BY s.position",
        )
        .bind(run_id)
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("list step records"))?;
        rows.iter()
            .map(|r| {
                let json: String = r.get(0);
                serde_json::from_str(&json).map_err(|e| StateError::Corrupt {
                    what: "step record",
                    detail: e.to_string(),
                })
            })
            .collect()
    }

    /// Records a signed artifact.
    pub async fn add_artifact(&self, artifact: &ArtifactRow<'_>) -> Result<(), StateError> {
        sqlx::query(
            "INSERT INTO artifacts (run_id, name, step, path, sha256, provenance_sha256) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(artifact.run_id)
        .bind(artifact.name)
        .bind(artifact.step)
        .bind(artifact.path)
        .bind(artifact.sha256.to_string())
        .bind(artifact.provenance_sha256.to_string())
        .execute(&self.pool)
        .await
        .map_err(query_err("insert artifact"))?;
        Ok(())
    }

    /// Marks a run finished and, if it was running, logs its end with the artifacts it
    /// published in the step log, in one transaction.
    pub async fn finish_run(
        &self,
        run_id: &str,
        succeeded: bool,
        at: OffsetDateTime,
    ) -> Result<(), StateError> {
        let mut tx = self.begin_write().await?;
        let was: Option<String> =
            sqlx::query_scalar(self.locking("SELECT state FROM runs WHERE id = $1", "FOR UPDATE"))
                .bind(run_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(query_err("look up run"))?;
        let state = if succeeded { "succeeded" } else { "failed" };
        sqlx::query("UPDATE runs SET state = $1, finished_at = $2 WHERE id = $3")
            .bind(state)
            .bind(rfc3339(at))
            .bind(run_id)
            .execute(&mut *tx)
            .await
            .map_err(query_err("finish run"))?;
        if was.as_deref() == Some("running") {
            let rows = sqlx::query(
                "SELECT name, step, sha256, provenance_sha256 FROM artifacts WHERE run_id = $1 ORDER BY name",
            )
            .bind(run_id)
            .fetch_all(&mut *tx)
            .await
            .map_err(query_err("list artifacts"))?;
            let artifacts = rows
                .iter()
                .map(|r| crate::steplog::LoggedArtifact {
                    name: r.get(0),
                    step: r.get(1),
                    sha256: r.get(2),
                    provenance_sha256: r.get(3),
                })
                .collect();
            step_log::append(
                &mut tx,
                &crate::steplog::LogEntry::RunFinished {
                    run: run_id,
                    state,
                    finished_at: at,
                    artifacts,
                },
            )
            .await?;
        }
        tx.commit().await.map_err(query_err("commit finish run"))
    }

    /// Every run, newest first.
    pub async fn runs(&self) -> Result<Vec<RunRow>, StateError> {
        let rows = sqlx::query(
            "SELECT id, pipeline_name, state FROM runs ORDER BY started_at DESC, id DESC",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("list runs"))?;
        Ok(rows
            .iter()
            .map(|r| RunRow {
                id: r.get(0),
                pipeline_name: r.get(1),
                state: r.get(2),
            })
            .collect())
    }

    /// How many rows each table holds: lets tests prove a refused input wrote nothing.
    pub async fn row_counts(&self) -> Result<Vec<(&'static str, i64)>, StateError> {
        // `mirror_evidence` is left out: its rows are written only with their mirror entry,
        // in the same transaction (see `add_mirror_entry_with_evidence`).
        const TABLES: [(&str, &str); 7] = [
            ("mirror_entries", "SELECT count(*) FROM mirror_entries"),
            ("runs", "SELECT count(*) FROM runs"),
            ("steps", "SELECT count(*) FROM steps"),
            ("step_needs", "SELECT count(*) FROM step_needs"),
            ("workers", "SELECT count(*) FROM workers"),
            ("step_records", "SELECT count(*) FROM step_records"),
            ("artifacts", "SELECT count(*) FROM artifacts"),
        ];
        let mut counts = Vec::new();
        for (table, sql) in TABLES {
            let n: i64 = sqlx::query_scalar(sql)
                .fetch_one(&self.pool)
                .await
                .map_err(query_err("count rows"))?;
            counts.push((table, n));
        }
        Ok(counts)
    }

    /// Closes the pools (on SQLite, the writer last, which checkpoints the WAL).
    pub async fn close(&self) {
        self.readers.close().await;
        self.pool.close().await;
    }
}

fn corrupt(what: &'static str) -> impl Fn(String) -> StateError {
    move |detail| StateError::Corrupt { what, detail }
}

/// The rows of a new run's `steps`, `step_requires` and `step_needs`, a few statements per table
/// ([`ROWS_PER_INSERT`] rows each) rather than one per row: each statement is a round trip to the
/// database (on SQLite, to its connection's thread), and a 1,000-step chain made 2,000 of them
/// while its submitter waited.
async fn insert_steps(tx: &mut sqlx::AnyConnection, run: &NewRun<'_>) -> Result<(), StateError> {
    let id = Cell::Text(run.id);
    let steps: Vec<_> = (run.steps.iter().enumerate())
        .map(|(position, step)| {
            let position = i64::try_from(position).unwrap_or(i64::MAX);
            let name = Cell::Text(step.name);
            [id, name, Cell::Int(position), Cell::Text("pending")]
        })
        .collect();
    insert_rows(tx, "steps (run_id, name, position, state)", &steps)
        .await
        .map_err(query_err("insert steps"))?;
    let requires: Vec<_> = (run.steps.iter())
        .flat_map(|step| {
            let name = Cell::Text(step.name);
            (step.requires.iter())
                .map(move |(key, value)| [id, name, Cell::Text(key), Cell::Text(value)])
        })
        .collect();
    insert_rows(tx, "step_requires (run_id, step, key, value)", &requires)
        .await
        .map_err(query_err("insert step requirements"))?;
    let needs: Vec<_> = (run.steps.iter())
        .flat_map(|step| {
            let name = Cell::Text(step.name);
            (step.needs.iter()).map(move |need| [id, name, Cell::Text(need)])
        })
        .collect();
    insert_rows(tx, "step_needs (run_id, step, need)", &needs)
        .await
        .map_err(query_err("insert step needs"))
}

/// Rows per multi-row `INSERT`: well under both engines' limits on bound values (SQLite 32,766,
/// PostgreSQL 65,535) at four columns.
const ROWS_PER_INSERT: usize = 250;

/// One bound value of [`insert_rows`].
#[derive(Clone, Copy)]
enum Cell<'a> {
    Text(&'a str),
    Int(i64),
}

/// `INSERT INTO {into} VALUES (…), (…), …` of `rows`, [`ROWS_PER_INSERT`] per statement.
async fn insert_rows<const N: usize>(
    tx: &mut sqlx::AnyConnection,
    into: &str,
    rows: &[[Cell<'_>; N]],
) -> Result<(), sqlx::Error> {
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        let values: Vec<String> = (0..chunk.len())
            .map(|row| {
                let params: Vec<String> = (1..=N).map(|c| format!("${}", row * N + c)).collect();
                format!("({})", params.join(", "))
            })
            .collect();
        let sql = format!("INSERT INTO {into} VALUES {}", values.join(", "));
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for cell in chunk.iter().flatten() {
            query = match *cell {
                Cell::Text(text) => query.bind(text),
                Cell::Int(int) => query.bind(int),
            };
        }
        query.execute(&mut *tx).await?;
    }
    Ok(())
}

fn entry_from_row(r: &AnyRow) -> Result<MirrorEntry, StateError> {
    let bad = corrupt("mirror entry");
    let reference = MirrorRef::from_str(&format!(
        "{}@{}",
        r.get::<String, _>(0),
        r.get::<String, _>(1)
    ))
    .map_err(|e| bad(e.to_string()))?;
    let sha256 = Sha256Digest::from_str(&r.get::<String, _>(2)).map_err(|e| bad(e.to_string()))?;
    let kind = match (
        r.get::<String, _>(3).as_str(),
        r.get::<Option<String>, _>(4),
    ) {
        ("file", Some(file_name)) => BlobKind::File { file_name },
        ("tree", None) => BlobKind::Tree,
        (k, _) => return Err(bad(format!("unknown kind {k:?}"))),
    };
    let added_at =
        OffsetDateTime::parse(&r.get::<String, _>(6), &Rfc3339).map_err(|e| bad(e.to_string()))?;
    Ok(MirrorEntry {
        reference,
        sha256,
        kind,
        size: r.get::<i64, _>(5).max(0) as u64,
        added_at,
    })
}

/// The `details` column: NULL when there is nothing beyond the other columns.
fn details_json(details: &crate::evidence::EvidenceDetails) -> Option<String> {
    if details.is_empty() {
        return None;
    }
    let current = crate::evidence::EvidenceDetails {
        version: crate::evidence::EVIDENCE_VERSION,
        ..details.clone()
    };
    Some(serde_json::to_string(&current).expect("evidence details serialise"))
}

fn parse_details(text: Option<String>) -> Result<crate::evidence::EvidenceDetails, StateError> {
    let bad = corrupt("mirror evidence details");
    let Some(text) = text else {
        return Ok(crate::evidence::EvidenceDetails::new());
    };
    let details: crate::evidence::EvidenceDetails =
        serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    if details.version > crate::evidence::EVIDENCE_VERSION {
        return Err(bad(format!(
            "version {} is newer than this kiln reads ({})",
            details.version,
            crate::evidence::EVIDENCE_VERSION
        )));
    }
    Ok(details)
}
