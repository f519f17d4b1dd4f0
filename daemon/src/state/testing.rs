//! Test support, for this crate's tests and the end-to-end tests: a fresh, empty database per
//! test on each [`Backend`], and [`crate::backend_tests!`], which runs one async test body
//! once per backend.
//!
//! PostgreSQL tests need a server: `scripts/postgres.sh` starts a throwaway one and prints
//! `KILN_TEST_DATABASE_URL` (a URL whose role may create databases). Without that variable
//! the PostgreSQL variants pass without running, except under `CI=true`, where they fail: CI
//! must never skip them silently. Each [`TestDatabase`] on PostgreSQL is a database of its
//! own, `kiln_t_<uuid>`, dropped when the value is dropped.
//!
//! Not for production use: it connects with the test URL and drops databases.

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;

use sqlx::any::AnyConnectOptions;
use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Connection as _, Executor as _};

use kiln_core::{
    BlobKind, ExitRecord, LimitsRecord, LogRecord, MirrorInput, OutputRecord, SandboxRecord,
    Sha256Digest, StepRecord, StepSpec, UsageRecord,
};

use super::{Backend, Database, NewRun, NewStep, NewWorker, State, Submission};

/// The variable naming the PostgreSQL server tests use.
pub const DATABASE_URL_VAR: &str = "KILN_TEST_DATABASE_URL";

/// Whether the PostgreSQL variant of a test should run: `true` when
/// [`DATABASE_URL_VAR`] is set; `false` (with a note on stderr) when it is not.
///
/// # Panics
/// Under `CI=true` without the variable: CI must run the PostgreSQL tests.
pub fn postgres_enabled() -> bool {
    if std::env::var_os(DATABASE_URL_VAR).is_some_and(|v| !v.is_empty()) {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{DATABASE_URL_VAR} is not set, so the PostgreSQL tests cannot run; \
         run `eval \"$(bash scripts/postgres.sh)\"` first"
    );
    eprintln!(
        "not run on PostgreSQL: {DATABASE_URL_VAR} is not set (eval \"$(bash scripts/postgres.sh)\")"
    );
    false
}

/// A database for one test. On SQLite, a file named by the caller; on PostgreSQL, a new
/// database on the test server, dropped with this value.
#[derive(Debug)]
pub struct TestDatabase {
    database: Database,
    /// (server URL, database name) of a PostgreSQL database to drop.
    drop_on_drop: Option<(String, String)>,
}

impl TestDatabase {
    /// A fresh database on `backend`; `sqlite_file` is where the SQLite variant puts it.
    ///
    /// # Panics
    /// On PostgreSQL, when [`DATABASE_URL_VAR`] is unset or the server refuses; tests only.
    pub async fn new(backend: Backend, sqlite_file: &Path) -> Self {
        match backend {
            Backend::Sqlite => Self {
                database: Database::Sqlite(sqlite_file.to_owned()),
                drop_on_drop: None,
            },
            Backend::Postgres => Self::postgres().await,
        }
    }

    async fn postgres() -> Self {
        let server = std::env::var(DATABASE_URL_VAR).unwrap_or_else(|_| {
            panic!("{DATABASE_URL_VAR} is not set; run `eval \"$(bash scripts/postgres.sh)\"`")
        });
        let name = format!("kiln_t_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&server)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {DATABASE_URL_VAR}: {e}"));
        admin
            .execute(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
        let _ = admin.close().await;
        let mut url = AnyConnectOptions::from_str(&server)
            .expect("a URL that PgConnection accepted")
            .database_url;
        url.set_path(&format!("/{name}"));
        Self {
            database: Database::Postgres(url.to_string()),
            drop_on_drop: Some((server, name)),
        }
    }

    /// The database, for [`super::State::connect`] or the daemon's configuration.
    pub fn database(&self) -> &Database {
        &self.database
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some((server, name)) = self.drop_on_drop.take() else {
            return;
        };
        // Drop runs inside the test's runtime, which cannot block on its own futures: use a
        // runtime of our own on a thread of our own. FORCE ends connections a pool left open.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let mut admin = PgConnection::connect(&server)
                    .await
                    .map_err(|e| e.to_string())?;
                admin
                    .execute(AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .await
                    .map_err(|e| format!("{name}: {e}"))?;
                let _ = admin.close().await;
                Ok::<_, String>(())
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("cannot drop test database: {e}"),
            Err(_) => eprintln!("cannot drop test database: the dropping thread panicked"),
        }
    }
}

/// Runs each named `async fn NAME(backend: Backend)` as two tests, `NAME::sqlite` and
/// `NAME::postgres`, under the given test attribute:
///
/// ```ignore
/// kiln_daemon::backend_tests! {
///     #[tokio::test] claims_are_exclusive;
///     #[tokio::test(flavor = "multi_thread", worker_threads = 4)] many_claimers;
/// }
/// ```
///
/// The PostgreSQL variant runs when [`postgres_enabled`] says so.
#[macro_export]
macro_rules! backend_tests {
    ($(#[$attr:meta] $name:ident;)*) => {$(
        mod $name {
            #[$attr]
            async fn sqlite() {
                super::$name($crate::state::Backend::Sqlite).await
            }
            #[$attr]
            async fn postgres() {
                if $crate::state::testing::postgres_enabled() {
                    super::$name($crate::state::Backend::Postgres).await
                }
            }
        }
    )*};
}

/// Runs `sql` on `state`'s database as it is, bypassing every check: how tests play an
/// attacker who can write the database (`kiln audit verify` must notice). Returns the rows
/// affected.
///
/// # Panics
/// When the statement fails; tests only.
pub async fn tamper(state: &super::State, sql: &str) -> u64 {
    sqlx::query(AssertSqlSafe(sql.to_owned()))
        .execute(state.pool())
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .rows_affected()
}

/// A plausible record of a succeeded no-op step `step` of `run`, for tests that store records.
pub fn sample_record(run: &str, step: &str) -> StepRecord {
    let digest = Sha256Digest::of(step.as_bytes());
    StepRecord {
        run_id: run.into(),
        step: step.into(),
        command: "true".into(),
        env: BTreeMap::new(),
        rootfs: MirrorInput {
            reference: "busybox@1".parse().unwrap(),
            sha256: digest,
            kind: BlobKind::Tree,
        },
        inputs: Vec::new(),
        outputs: Vec::new(),
        exit: ExitRecord::Exited { code: 0 },
        started_on: sample_time(0),
        finished_on: sample_time(1),
        log: LogRecord {
            sha256: digest,
            size: 0,
        },
        sandbox: SandboxRecord {
            namespaces: vec!["user".into()],
            network: "none".into(),
            host_uid: 100_000,
            step_uid: 1000,
            scratch_bytes: 1 << 20,
            timeout_secs: 600,
            mounts: Vec::new(),
            limits: LimitsRecord {
                memory_bytes: 1 << 30,
                pids: 512,
                millicpus: 1000,
                open_files: 1024,
            },
            rlimits: String::new(),
            seccomp: "deny-list".into(),
            seccomp_sha256: "ab".repeat(32),
        },
        usage: UsageRecord::default(),
        events: Vec::new(),
    }
}

/// The record a worker would report for `spec`, ended with `exit` at the current time, with
/// `outputs` and `log` (uploaded or not, as the test needs) and a minimal sandbox record.
pub fn record_for_spec(
    spec: &StepSpec,
    exit: ExitRecord,
    outputs: Vec<OutputRecord>,
    log: LogRecord,
) -> StepRecord {
    let now = time::OffsetDateTime::now_utc();
    StepRecord {
        run_id: spec.run_id.clone(),
        step: spec.step.clone(),
        command: spec.command.clone(),
        env: spec.env.clone(),
        rootfs: spec.rootfs.clone(),
        inputs: spec.inputs.clone(),
        outputs,
        exit,
        started_on: now,
        finished_on: now,
        log,
        sandbox: SandboxRecord {
            namespaces: vec!["user".into()],
            network: "none".into(),
            host_uid: 1_000_000,
            step_uid: 1000,
            scratch_bytes: 0,
            timeout_secs: spec.timeout_secs,
            mounts: Vec::new(),
            limits: LimitsRecord {
                memory_bytes: 0,
                pids: 0,
                millicpus: 0,
                open_files: 0,
            },
            rlimits: String::new(),
            seccomp: String::new(),
            seccomp_sha256: String::new(),
        },
        usage: UsageRecord::default(),
        events: Vec::new(),
    }
}

/// A fixed instant plus `secs`, for [`sample_record`].
fn sample_time(secs: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(1_800_000_000 + secs).expect("in range")
}

/// How many chunks of `lease_id`'s live log `state` holds.
pub async fn live_log_chunks(state: &State, lease_id: &str) -> u64 {
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM live_logs WHERE lease_id = $1")
        .bind(lease_id)
        .fetch_one(&state.pool)
        .await
        .expect("count live log chunks");
    n.max(0) as u64
}

/// No labels: what most test workers offer and most test steps require.
pub static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

/// Creates run `id` of `steps`, submitted (its steps are leased to workers) at `now`, with
/// placeholder pipeline text and digest.
pub async fn submit_run(
    state: &State,
    id: &str,
    steps: Vec<NewStep<'_>>,
    now: time::OffsetDateTime,
) {
    let sha: Sha256Digest = "ab".repeat(32).parse().expect("a digest");
    state
        .create_run(&NewRun {
            id,
            pipeline_name: id,
            pipeline_file: "pipeline.yaml",
            pipeline_sha256: &sha,
            started_at: now,
            steps,
            submission: Some(Submission {
                pipeline_yaml: "version: 1",
                resolution_json: "{}".into(),
                request_id: None,
            }),
        })
        .await
        .expect("create the run");
}

/// Registers worker `id` (one slot) offering `labels`.
pub async fn register_worker(
    state: &State,
    id: &str,
    labels: &BTreeMap<String, String>,
    now: time::OffsetDateTime,
) {
    state
        .register_worker(&NewWorker {
            id,
            name: id,
            slots: 1,
            labels_json: "{}",
            labels,
            registered_at: now,
        })
        .await
        .expect("register the worker");
}
