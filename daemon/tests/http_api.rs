//! The daemon's HTTP API in process: each test opens its own data dir, builds the router and
//! drives it with `tower::ServiceExt::oneshot`, playing the worker by hand (leases, uploads,
//! hand-made step records). Time is a manual clock, so lease expiry needs no sleeping.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::TWO_STEPS;
use http_body_util::BodyExt as _;
use kiln_core::api::v1;
use kiln_core::{ExitRecord, LogRecord, OutputRecord, Sha256Digest, StepRecord, StepSpec};
use kiln_daemon::state::testing::{TestDatabase, record_for_spec, tamper};
use kiln_daemon::state::{Backend, Database};
use kiln_daemon::{Clock, DispatchConfig, Server, ServerConfig};
use time::OffsetDateTime;
use tower::ServiceExt as _;

/// A clock that moves only when told.
struct ManualClock(Mutex<OffsetDateTime>);

impl ManualClock {
    fn advance(&self, by: Duration) {
        *self.0.lock().unwrap() += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        *self.0.lock().unwrap()
    }
}

const TTL: Duration = Duration::from_secs(30);

struct Env {
    dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
    server: Option<Server>,
    router: Router,
    /// Team `blue`'s bearer token, sent with every request.
    token: String,
    /// The state database (on PostgreSQL, dropped with the `Env`).
    db: TestDatabase,
}

impl Env {
    /// A data dir with a rootfs `busybox@1` and a file input `words@1` in the mirror.
    async fn new(backend: Backend) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let db = TestDatabase::new(backend, &data.join("state.sqlite")).await;
        common::seed_mirror(&data, Some(db.database()), dir.path(), true).await;
        let token = common::team_token(
            &data,
            Some(db.database()),
            "blue",
            Duration::from_secs(3600),
        )
        .await;
        let clock = Arc::new(ManualClock(Mutex::new(OffsetDateTime::now_utc())));
        let server = open_server(&data, db.database(), clock.clone()).await;
        let router = server.router();
        Self {
            dir,
            clock,
            server: Some(server),
            router,
            token,
            db,
        }
    }

    /// A bearer token for `team`, made like `kiln admin token create`.
    async fn make_token(&self, team: &str, ttl: Duration) -> String {
        common::team_token(&self.data_dir(), Some(self.db.database()), team, ttl).await
    }

    fn data_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    /// Stops the daemon (closing its database) and opens a new one on the same data dir.
    async fn restart(&mut self) {
        let old = self.server.take().unwrap();
        old.dispatcher().controller().state().close().await;
        drop(old);
        let server = open_server(&self.data_dir(), self.db.database(), self.clock.clone()).await;
        server.dispatcher().tick().await.unwrap();
        self.router = server.router();
        self.server = Some(server);
    }

    async fn tick(&self) {
        self.server
            .as_ref()
            .unwrap()
            .dispatcher()
            .tick()
            .await
            .unwrap();
    }

    async fn call(&self, method: Method, uri: &str, body: Body) -> (StatusCode, Vec<u8>) {
        let auth = format!("Bearer {}", self.token);
        self.call_as(Some(&auth), method, uri, body).await
    }

    /// A request with `authorization` as its `Authorization` header (none if `None`).
    async fn call_as(
        &self,
        authorization: Option<&str>,
        method: Method,
        uri: &str,
        body: Body,
    ) -> (StatusCode, Vec<u8>) {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json");
        if let Some(auth) = authorization {
            req = req.header("authorization", auth);
        }
        let req = req.body(body).unwrap();
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, bytes.to_vec())
    }

    async fn post<T: serde::Serialize>(&self, uri: &str, body: &T) -> (StatusCode, Vec<u8>) {
        let json = serde_json::to_vec(body).unwrap();
        self.call(Method::POST, uri, Body::from(json)).await
    }

    async fn get(&self, uri: &str) -> (StatusCode, Vec<u8>) {
        self.call(Method::GET, uri, Body::empty()).await
    }

    async fn submit(&self, yaml: &str, request_id: Option<&str>) -> (StatusCode, Vec<u8>) {
        self.post(
            "/v1/runs",
            &v1::SubmitRun {
                pipeline_file: "p.yaml".into(),
                pipeline_yaml: yaml.into(),
                request_id: request_id.map(str::to_owned),
            },
        )
        .await
    }

    async fn submit_ok(&self, yaml: &str) -> v1::RunView {
        let (status, body) = self.submit(yaml, None).await;
        assert_eq!(
            status,
            StatusCode::CREATED,
            "{}",
            String::from_utf8_lossy(&body)
        );
        serde_json::from_slice(&body).unwrap()
    }

    async fn run(&self, id: &str) -> v1::RunView {
        let (status, body) = self.get(&format!("/v1/runs/{id}")).await;
        assert_eq!(status, StatusCode::OK);
        serde_json::from_slice(&body).unwrap()
    }

    async fn register(&self, name: &str) -> String {
        self.register_with(name, &[]).await
    }

    async fn register_with(&self, name: &str, labels: &[(&str, &str)]) -> String {
        let (status, body) = self
            .post(
                "/v1/workers",
                &v1::RegisterWorker {
                    name: name.into(),
                    slots: 1,
                    labels: labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                },
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        serde_json::from_slice::<v1::WorkerRegistered>(&body)
            .unwrap()
            .worker_id
    }

    async fn claim(&self, worker_id: &str) -> Option<v1::Lease> {
        self.claim_waiting(worker_id, None).await
    }

    /// A claim that may wait up to `wait` for a step (a long poll).
    async fn claim_waiting(&self, worker_id: &str, wait: Option<Duration>) -> Option<v1::Lease> {
        let (status, body) = self
            .post(
                "/v1/leases",
                &v1::LeaseRequest {
                    worker_id: worker_id.into(),
                    wait_ms: wait.map(|w| w.as_millis() as u64),
                },
            )
            .await;
        match status {
            StatusCode::OK => Some(serde_json::from_slice(&body).unwrap()),
            StatusCode::NO_CONTENT => None,
            other => panic!("claim: {other}: {}", String::from_utf8_lossy(&body)),
        }
    }

    async fn heartbeat(&self, lease: &v1::Lease, worker_id: &str) -> StatusCode {
        self.post(
            &format!("/v1/leases/{}/heartbeat", lease.lease_id),
            &v1::Heartbeat {
                worker_id: worker_id.into(),
            },
        )
        .await
        .0
    }

    async fn report(&self, lease: &v1::Lease, worker_id: &str, record: StepRecord) -> StatusCode {
        let (status, body) = self.report_with(lease, worker_id, record, false).await;
        assert!(status != StatusCode::NO_CONTENT || body.is_empty());
        status
    }

    /// A report asking for the worker's next lease: the status and, for `200`, the answer.
    async fn report_claiming(
        &self,
        lease: &v1::Lease,
        worker_id: &str,
        record: StepRecord,
    ) -> (StatusCode, Option<v1::ReportAnswer>) {
        let (status, body) = self.report_with(lease, worker_id, record, true).await;
        let answer = (status == StatusCode::OK).then(|| {
            serde_json::from_slice(&body)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&body)))
        });
        (status, answer)
    }

    async fn report_with(
        &self,
        lease: &v1::Lease,
        worker_id: &str,
        record: StepRecord,
        claim_next: bool,
    ) -> (StatusCode, Vec<u8>) {
        self.post(
            &format!("/v1/leases/{}/report", lease.lease_id),
            &v1::StepReport {
                worker_id: worker_id.into(),
                record,
                claim_next,
            },
        )
        .await
    }

    /// `kiln_claim_duration_seconds_count` from `GET /metrics`: how many claims were handled.
    async fn claims_handled(&self) -> u64 {
        let (status, body) = self.get("/metrics").await;
        assert_eq!(status, StatusCode::OK);
        let text = String::from_utf8(body).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("kiln_claim_duration_seconds_count "))
            .unwrap_or_else(|| panic!("no claim count in\n{text}"))
            .trim()
            .parse()
            .unwrap()
    }

    async fn put_blob(&self, digest: &Sha256Digest, bytes: &[u8]) -> StatusCode {
        self.call(
            Method::PUT,
            &format!("/v1/blobs/{digest}"),
            Body::from(bytes.to_vec()),
        )
        .await
        .0
    }

    /// Uploads `outputs` and a log, and makes the record a worker would report for `spec`.
    async fn record(&self, spec: &StepSpec, code: i32, outputs: &[(&str, &[u8])]) -> StepRecord {
        let log = format!("log of {}\n", spec.step).into_bytes();
        let log_sha = Sha256Digest::of(&log);
        assert!(self.put_blob(&log_sha, &log).await.is_success());
        let mut records = Vec::new();
        for (path, bytes) in outputs {
            let sha256 = Sha256Digest::of(bytes);
            assert!(self.put_blob(&sha256, bytes).await.is_success());
            records.push(OutputRecord {
                path: (*path).into(),
                sha256,
                size: bytes.len() as u64,
                executable: false,
            });
        }
        let log = LogRecord {
            sha256: log_sha,
            size: log.len() as u64,
        };
        record_for_spec(spec, ExitRecord::Exited { code }, records, log)
    }
}

/// A bearer token for `team`, made in the data dir like `kiln admin token create`.
async fn open_server(data: &Path, db: &Database, clock: Arc<ManualClock>) -> Server {
    let mut config = ServerConfig::new(data.to_owned());
    config.database = Some(db.clone());
    // Small JSON limit: blob bodies must not be subject to it.
    config.limits.json_bytes = 1 << 20;
    config.dispatch = DispatchConfig {
        lease_ttl: TTL,
        max_attempts: 3,
        // Waiting claims look again only when woken (or at their end).
        claim_recheck: LONG_WAIT,
        clock,
    };
    Server::open(config).await.unwrap()
}

/// `a` → `b` → `c`, and `d` on its own.
const CHAIN: &str = "\
version: 1
name: chain
rootfs: busybox@1
steps:
  - { name: a, run: 'true', outputs: [x] }
  - { name: b, needs: [a], run: 'true', outputs: [x] }
  - { name: c, needs: [b], run: 'true', outputs: [x] }
  - { name: d, run: 'true', outputs: [x] }
";

kiln_daemon::backend_tests! {
    #[tokio::test] submitted_run_is_leased_reported_and_published;
    #[tokio::test] malformed_pipeline_is_refused_with_one_line_diagnostics_and_nothing_recorded;
    #[tokio::test] repeated_request_id_returns_the_same_run;
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)] concurrent_claims_never_hand_out_one_step_twice;
    #[tokio::test] expired_lease_is_leased_again_and_the_old_report_is_refused;
    #[tokio::test] report_from_another_worker_is_refused;
    #[tokio::test] report_naming_a_blob_that_was_not_uploaded_is_refused;
    #[tokio::test] blob_upload_with_wrong_bytes_is_refused_and_not_kept;
    #[tokio::test] large_blob_round_trips_through_the_streamed_routes;
    #[tokio::test] failed_step_skips_its_dependents;
    #[tokio::test] step_fails_once_its_attempts_are_exhausted;
    #[tokio::test] restarted_daemon_resumes_runs_and_keeps_leases;
    #[tokio::test] run_finished_just_before_a_crash_is_published_on_restart;
    #[tokio::test] team_routes_refuse_a_missing_malformed_or_unknown_token;
    #[tokio::test] expired_team_token_is_refused;
    #[tokio::test] a_team_cannot_see_another_teams_run;
    #[tokio::test] cancel_revokes_leases_and_the_late_report_is_refused;
    #[tokio::test] a_step_is_leased_only_to_a_worker_offering_every_label_it_requires;
    #[tokio::test] a_worker_with_a_malformed_label_is_refused;
    #[tokio::test] cancelled_and_failed_runs_serve_a_signed_run_attestation;
    #[tokio::test] report_with_claim_next_answers_with_the_workers_next_lease;
    #[tokio::test] report_without_claim_next_answers_204_and_leases_nothing;
    #[tokio::test] refused_report_with_claim_next_leases_nothing;
    #[tokio::test] report_with_claim_next_leases_only_what_the_worker_may_claim;
    #[tokio::test] a_waiting_claim_is_answered_as_soon_as_a_run_is_accepted;
    #[tokio::test] a_waiting_claim_with_nothing_ready_answers_204_after_its_wait;
    #[tokio::test] a_report_that_frees_two_steps_wakes_a_waiting_claim;
    #[tokio::test] a_report_that_claims_the_one_step_it_freed_wakes_nobody;
    #[tokio::test] stopping_answers_a_waiting_claim_at_once;
    #[tokio::test] a_run_view_shows_the_exits_of_records_written_before_schema_14;
}

async fn a_run_view_shows_the_exits_of_records_written_before_schema_14(backend: Backend) {
    let env = Env::new(backend).await;
    let run = env.submit_ok(PAIR).await;
    let w = env.register("w").await;
    let a = env.claim(&w).await.expect("a is ready");
    let record = env.record(&a.spec, 3, &[("x", b"from a")]).await;
    let exit = record.exit.clone();
    assert_eq!(env.report(&a, &w, record).await, StatusCode::NO_CONTENT);
    let view = env.run(&run.id).await;
    assert_eq!(step(&view, "a").exit.as_ref(), Some(&exit));
    let state = env
        .server
        .as_ref()
        .unwrap()
        .dispatcher()
        .controller()
        .state();
    // A row without the column (an older daemon wrote it): the exit comes from the record.
    assert_eq!(
        tamper(state, "UPDATE step_records SET exit_json = NULL").await,
        1
    );
    assert_eq!(env.run(&run.id).await, view);
    // Schema 14's backfill, as it runs on a database made before it, fills the column in.
    let migration = match backend {
        Backend::Sqlite => include_str!("../migrations/sqlite/0014_step_exit.sql"),
        Backend::Postgres => include_str!("../migrations/postgres/0014_step_exit.sql"),
    };
    let backfill = migration.lines().find(|l| l.starts_with("UPDATE")).unwrap();
    assert_eq!(tamper(state, backfill).await, 1);
    let filled = "UPDATE step_records SET exit_status = exit_status WHERE exit_json IS NOT NULL";
    assert_eq!(tamper(state, filled).await, 1);
    assert_eq!(
        env.run(&run.id).await,
        view,
        "read from the backfilled column"
    );
}

/// The longest a claim waits: one answered sooner was woken (these tests never recheck).
const LONG_WAIT: Duration = kiln_daemon::MAX_CLAIM_WAIT;

async fn a_waiting_claim_is_answered_as_soon_as_a_run_is_accepted(backend: Backend) {
    let env = Env::new(backend).await;
    let w = env.register("w").await;
    let started = std::time::Instant::now();
    let (lease, _) = tokio::join!(env.claim_waiting(&w, Some(LONG_WAIT)), async {
        // Submitted while the claim waits: nothing was ready when it first looked.
        tokio::time::sleep(Duration::from_millis(200)).await;
        env.submit_ok(PAIR).await
    });
    let lease = lease.expect("the accepted run's first step");
    assert_eq!(lease.spec.step, "a");
    assert!(started.elapsed() < LONG_WAIT, "woken, not timed out");
    assert!(
        env.claims_handled().await >= 2,
        "every attempt is a claim in the histogram"
    );
}

async fn a_waiting_claim_with_nothing_ready_answers_204_after_its_wait(backend: Backend) {
    let env = Env::new(backend).await;
    let w = env.register("w").await;
    let wait = Duration::from_millis(300);
    let started = std::time::Instant::now();
    assert!(env.claim_waiting(&w, Some(wait)).await.is_none());
    assert!(
        started.elapsed() >= wait,
        "answered after {:?}",
        started.elapsed()
    );
}

/// `a` → `b` and `a` → `c`.
const FORK: &str = "\
version: 1
name: fork
rootfs: busybox@1
steps:
  - { name: a, run: 'true', outputs: [x] }
  - { name: b, needs: [a], run: 'true', outputs: [x] }
  - { name: c, needs: [a], run: 'true', outputs: [x] }
";

async fn a_report_that_frees_two_steps_wakes_a_waiting_claim(backend: Backend) {
    let env = Env::new(backend).await;
    env.submit_ok(FORK).await;
    let (w1, w2) = (env.register("w1").await, env.register("w2").await);
    let a = env.claim(&w1).await.expect("a is ready");
    let started = std::time::Instant::now();
    let (waited, next) = tokio::join!(env.claim_waiting(&w2, Some(LONG_WAIT)), async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let record = env.record(&a.spec, 0, &[("x", b"from a")]).await;
        let (status, answer) = env.report_claiming(&a, &w1, record).await;
        assert_eq!(status, StatusCode::OK);
        answer.unwrap().next.expect("b or c for the reporter")
    });
    let waited = waited.expect("the step the reporter left");
    let mut got = [waited.spec.step, next.spec.step];
    got.sort();
    assert_eq!(got, ["b", "c"]);
    assert!(started.elapsed() < LONG_WAIT, "woken, not timed out");
}

async fn a_report_that_claims_the_one_step_it_freed_wakes_nobody(backend: Backend) {
    let env = Env::new(backend).await;
    env.submit_ok(PAIR).await;
    let (w1, w2) = (env.register("w1").await, env.register("w2").await);
    let a = env.claim(&w1).await.expect("a is ready");
    let before = env.claims_handled().await;
    let (waited, next) = tokio::join!(
        env.claim_waiting(&w2, Some(Duration::from_millis(600))),
        async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let record = env.record(&a.spec, 0, &[("x", b"from a")]).await;
            let (status, answer) = env.report_claiming(&a, &w1, record).await;
            assert_eq!(status, StatusCode::OK);
            answer.unwrap().next
        }
    );
    assert_eq!(next.expect("b, freed by a").spec.step, "b");
    assert!(waited.is_none());
    // The reporter's claim, and the waiting claim's first and last look: it was not woken
    // for a step that was never there for it to take.
    assert_eq!(env.claims_handled().await - before, 3);
}

async fn stopping_answers_a_waiting_claim_at_once(backend: Backend) {
    let env = Env::new(backend).await;
    let w = env.register("w").await;
    let started = std::time::Instant::now();
    let (lease, ()) = tokio::join!(env.claim_waiting(&w, Some(LONG_WAIT)), async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        env.server.as_ref().unwrap().dispatcher().stop_waiting();
    });
    assert!(lease.is_none());
    assert!(started.elapsed() < LONG_WAIT, "answered when stopping");
    // A claim made after that does not wait either.
    let started = std::time::Instant::now();
    assert!(env.claim_waiting(&w, Some(LONG_WAIT)).await.is_none());
    assert!(started.elapsed() < LONG_WAIT);
}

/// `a` → `b`.
const PAIR: &str = "\
version: 1
name: pair
rootfs: busybox@1
steps:
  - { name: a, run: 'true', outputs: [x] }
  - { name: b, needs: [a], run: 'true', outputs: [x] }
";

async fn report_with_claim_next_answers_with_the_workers_next_lease(backend: Backend) {
    let env = Env::new(backend).await;
    let run = env.submit_ok(PAIR).await;
    let w = env.register("w").await;
    let a = env.claim(&w).await.expect("a is ready");
    assert_eq!(a.spec.step, "a");
    assert_eq!(env.claims_handled().await, 1);
    let record = env.record(&a.spec, 0, &[("x", b"from a")]).await;
    let (status, answer) = env.report_claiming(&a, &w, record.clone()).await;
    assert_eq!(status, StatusCode::OK);
    let b = answer
        .unwrap()
        .next
        .expect("b became ready with a's report");
    assert_eq!(b.spec.step, "b");
    assert_eq!(b.ttl_secs, TTL.as_secs());
    // The same spec a claim would have carried: a's outputs travel in it.
    let staged = serde_json::to_string(&b.spec.inputs).unwrap();
    assert!(
        staged.contains(&Sha256Digest::of(b"from a").to_string()),
        "{staged}"
    );
    let view = env.run(&run.id).await;
    assert_eq!(step(&view, "a").state, v1::StepState::Succeeded);
    assert_eq!(step(&view, "b").state, v1::StepState::Leased);
    assert_eq!(step(&view, "b").worker.as_deref(), Some(w.as_str()));
    assert_eq!(step(&view, "b").attempts, 1);
    // The piggy-backed claim is a claim like any other, in the histogram too.
    assert_eq!(env.claims_handled().await, 2);
    // It is a real lease: heartbeats extend it, nobody else gets b.
    assert_eq!(env.heartbeat(&b, &w).await, StatusCode::NO_CONTENT);
    let other = env.register("other").await;
    assert!(env.claim(&other).await.is_none());

    // A retried report of the accepted record is answered like the first, with whatever is
    // ready now (nothing: b is leased).
    let (status, answer) = env.report_claiming(&a, &w, record).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer.unwrap().next, None);

    let record = env.record(&b.spec, 0, &[("x", b"from b")]).await;
    let (status, answer) = env.report_claiming(&b, &w, record).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer.unwrap().next, None, "nothing left to run");
    assert_eq!(env.run(&run.id).await.state, v1::RunState::Succeeded);
}

async fn report_without_claim_next_answers_204_and_leases_nothing(backend: Backend) {
    let env = Env::new(backend).await;
    let run = env.submit_ok(PAIR).await;
    let w = env.register("w").await;
    let a = env.claim(&w).await.expect("a is ready");
    let report = v1::StepReport {
        worker_id: w.clone(),
        record: env.record(&a.spec, 0, &[("x", b"from a")]).await,
        claim_next: false,
    };
    // What a worker that predates `claim_next` sends: the field is not on the wire.
    let json = serde_json::to_value(&report).unwrap();
    assert!(json.get("claim_next").is_none(), "{json}");
    let (status, body) = env
        .post(&format!("/v1/leases/{}/report", a.lease_id), &json)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(body.is_empty(), "{}", String::from_utf8_lossy(&body));
    let view = env.run(&run.id).await;
    assert_eq!(step(&view, "a").state, v1::StepState::Succeeded);
    assert_eq!(step(&view, "b").state, v1::StepState::Pending);
    assert_eq!(step(&view, "b").attempts, 0);
    assert_eq!(env.claims_handled().await, 1);
    // A retried report without it: 204 again, still nothing leased.
    let (status, _) = env.report_with(&a, &w, report.record, false).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        step(&env.run(&run.id).await, "b").state,
        v1::StepState::Pending
    );
    let b = env.claim(&w).await.expect("b waits for a claim");
    assert_eq!(b.spec.step, "b");
}

async fn refused_report_with_claim_next_leases_nothing(backend: Backend) {
    let env = Env::new(backend).await;
    // `a` → `b` → `c`, and `d` on its own: d is ready throughout.
    let run = env.submit_ok(CHAIN).await;
    let w1 = env.register("w1").await;
    let w2 = env.register("w2").await;
    let a = env.claim(&w1).await.unwrap();
    assert_eq!(a.spec.step, "a");
    let record = env.record(&a.spec, 0, &[("x", b"forged")]).await;
    // Another worker's report of w1's lease: 409, and no lease for w2.
    let (status, answer) = env.report_claiming(&a, &w2, record.clone()).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(answer.is_none());
    // The holder's report naming a blob never uploaded: 422, and no lease for w1.
    let mut missing = record.clone();
    missing.log.sha256 = Sha256Digest::of(b"no such log");
    let (status, _) = env.report_claiming(&a, &w1, missing).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let view = env.run(&run.id).await;
    assert_eq!(step(&view, "d").state, v1::StepState::Pending);
    assert_eq!(step(&view, "d").attempts, 0);
    assert_eq!(step(&view, "a").worker.as_deref(), Some(w1.as_str()));
    assert_eq!(env.claims_handled().await, 1, "only w1's claim of a");
    let d = env.claim(&w2).await.expect("d is still claimable");
    assert_eq!(d.spec.step, "d");
}

async fn report_with_claim_next_leases_only_what_the_worker_may_claim(backend: Backend) {
    let env = Env::new(backend).await;
    let run = env
        .submit_ok(
            "version: 1\nname: l\nrootfs: busybox@1\nsteps:\n  - { name: a, run: 'true' }\n  - { name: gpu, needs: [a], run: 'true', requires: { gpu: a100 } }\n",
        )
        .await;
    let plain = env.register("plain").await;
    let a = env.claim(&plain).await.unwrap();
    let record = env.record(&a.spec, 0, &[]).await;
    let (status, answer) = env.report_claiming(&a, &plain, record).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer.unwrap().next, None, "plain lacks the gpu label");
    assert_eq!(
        step(&env.run(&run.id).await, "gpu").state,
        v1::StepState::Pending
    );
    let gpu = env.register_with("gpu", &[("gpu", "a100")]).await;
    assert_eq!(env.claim(&gpu).await.unwrap().spec.step, "gpu");
}

async fn a_step_is_leased_only_to_a_worker_offering_every_label_it_requires(backend: Backend) {
    let env = Env::new(backend).await;
    env.submit_ok(
        "version: 1\nname: l\nrootfs: busybox@1\nsteps:\n  - { name: gpu, run: 'true', requires: { gpu: a100, arch: x86_64 } }\n",
    )
    .await;
    let none = env.register("none").await;
    let half = env.register_with("half", &[("gpu", "a100")]).await;
    let wrong = env
        .register_with("wrong", &[("gpu", "h100"), ("arch", "x86_64")])
        .await;
    for w in [&none, &half, &wrong] {
        assert!(env.claim(w).await.is_none(), "{w} lacks a label");
    }
    let both = env
        .register_with(
            "both",
            &[("gpu", "a100"), ("arch", "x86_64"), ("extra", "1")],
        )
        .await;
    let lease = env.claim(&both).await.expect("offers every label");
    assert_eq!(lease.spec.step, "gpu");
}

async fn a_worker_with_a_malformed_label_is_refused(backend: Backend) {
    let env = Env::new(backend).await;
    let (status, body) = env
        .post(
            "/v1/workers",
            &v1::RegisterWorker {
                name: "w".into(),
                slots: 1,
                labels: [("gpu".to_string(), "a 100".to_string())].into(),
            },
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&body).contains("label gpu's value"));
}

fn step<'a>(run: &'a v1::RunView, name: &str) -> &'a v1::StepView {
    run.steps.iter().find(|s| s.name == name).unwrap()
}

async fn submitted_run_is_leased_reported_and_published(backend: Backend) {
    let env = Env::new(backend).await;
    let run = env.submit_ok(TWO_STEPS).await;
    assert_eq!(run.state, v1::RunState::Running);
    assert!(run.steps.iter().all(|s| s.state == v1::StepState::Pending));
    let w = env.register("w1").await;

    let lease = env.claim(&w).await.expect("make is ready");
    assert_eq!(lease.spec.step, "make");
    assert_eq!(lease.ttl_secs, TTL.as_secs());
    // `wrap` needs `make`: nothing else is ready yet.
    assert!(env.claim(&w).await.is_none());
    assert_eq!(
        step(&env.run(&run.id).await, "make").state,
        v1::StepState::Leased
    );
    let record = env.record(&lease.spec, 0, &[("greeting", b"hello")]).await;
    assert_eq!(env.report(&lease, &w, record).await, StatusCode::NO_CONTENT);

    let lease = env.claim(&w).await.expect("wrap is ready");
    assert_eq!(lease.spec.step, "wrap");
    // The upstream step's outputs travel in the spec.
    let staged = serde_json::to_string(&lease.spec.inputs).unwrap();
    assert!(
        staged.contains(&Sha256Digest::of(b"hello").to_string()),
        "{staged}"
    );
    let record = env.record(&lease.spec, 0, &[("wrapped", b"[hello]")]).await;
    assert_eq!(env.report(&lease, &w, record).await, StatusCode::NO_CONTENT);

    let done = env.run(&run.id).await;
    assert_eq!(done.state, v1::RunState::Succeeded);
    assert!(done.finished_at.is_some());
    assert_eq!(step(&done, "wrap").worker.as_deref(), Some(w.as_str()));
    assert_eq!(step(&done, "wrap").attempts, 1);
    assert_eq!(done.artifacts.len(), 1);
    assert_eq!(done.artifacts[0].sha256, Sha256Digest::of(b"[hello]"));
    assert_eq!(done.artifacts[0].size, 7);

    let (status, bytes) = env
        .get(&format!("/v1/runs/{}/artifacts/wrapped", run.id))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(bytes, b"[hello]");
    let (status, prov) = env
        .get(&format!("/v1/runs/{}/artifacts/wrapped/provenance", run.id))
        .await;
    assert_eq!(status, StatusCode::OK);
    let key =
        kiln_attest::PublicKey::from_spki_pem_file(&env.data_dir().join("keys/kiln.pub")).unwrap();
    kiln_attest::verify_provenance(
        kiln_attest::ArtifactRef::Bytes(b"[hello]"),
        std::str::from_utf8(&prov).unwrap(),
        &key,
    )
    .expect("the published provenance verifies with the daemon's key");
    let (status, log) = env
        .get(&format!("/v1/runs/{}/steps/make/log", run.id))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(log, b"log of make\n");
    let (status, list) = env.get("/v1/runs").await;
    assert_eq!(status, StatusCode::OK);
    let list: Vec<v1::RunView> = serde_json::from_slice(&list).unwrap();
    assert_eq!(list.len(), 1);
}

async fn malformed_pipeline_is_refused_with_one_line_diagnostics_and_nothing_recorded(
    backend: Backend,
) {
    let env = Env::new(backend).await;
    let state = env
        .server
        .as_ref()
        .unwrap()
        .dispatcher()
        .controller()
        .state();
    let before = state.row_counts().await.unwrap();
    let yaml = "version: 1\nname: bad\nrootfs: busybox@1\nsteps:\n  - { name: a, run: 'true', bogus: 1 }\n  - { name: a, run: 'true', needs: [zzz] }\n";
    let (status, body) = env.submit(yaml, Some("req-bad")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let err: v1::ErrorView = serde_json::from_slice(&body).unwrap();
    assert!(!err.diagnostics.is_empty(), "{err:?}");
    for d in &err.diagnostics {
        assert!(!d.contains('\n'), "{d:?}");
        assert!(d.starts_with("p.yaml:"), "{d:?}");
    }
    // Unresolvable references are refused at acceptance (422), also recording nothing.
    let (status, body) = env
        .submit(
            "version: 1\nname: x\nrootfs: nothing@1\nsteps:\n  - { name: a, run: 'true' }\n",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let err: v1::ErrorView = serde_json::from_slice(&body).unwrap();
    assert!(
        err.error.contains("nothing@1 is not in the mirror"),
        "{err:?}"
    );
    // A body that is not a submission at all.
    let (status, body) = env
        .call(Method::POST, "/v1/runs", Body::from("{\"nope\":1}"))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    serde_json::from_slice::<v1::ErrorView>(&body).unwrap();
    assert_eq!(state.row_counts().await.unwrap(), before);
}

async fn repeated_request_id_returns_the_same_run(backend: Backend) {
    let env = Env::new(backend).await;
    let (first, body) = env.submit(TWO_STEPS, Some("req-1")).await;
    assert_eq!(first, StatusCode::CREATED);
    let a: v1::RunView = serde_json::from_slice(&body).unwrap();
    let (again, body) = env.submit(TWO_STEPS, Some("req-1")).await;
    assert_eq!(again, StatusCode::OK);
    let b: v1::RunView = serde_json::from_slice(&body).unwrap();
    assert_eq!(a.id, b.id);
    // Concurrent retries still make one run.
    let tries = (0..8).map(|_| env.submit(TWO_STEPS, Some("req-2")));
    let ids: BTreeSet<String> = futures_util::future::join_all(tries)
        .await
        .into_iter()
        .map(|(status, body)| {
            assert!(status.is_success(), "{status}");
            serde_json::from_slice::<v1::RunView>(&body).unwrap().id
        })
        .collect();
    assert_eq!(ids.len(), 1);
    let (_, list) = env.get("/v1/runs").await;
    assert_eq!(
        serde_json::from_slice::<Vec<v1::RunView>>(&list)
            .unwrap()
            .len(),
        2
    );
    // The same id for another pipeline is a conflict, not a silent alias.
    let (status, _) = env.submit(CHAIN, Some("req-1")).await;
    assert_eq!(status, StatusCode::CONFLICT);
}

async fn concurrent_claims_never_hand_out_one_step_twice(backend: Backend) {
    let env = Arc::new(Env::new(backend).await);
    let mut yaml = String::from("version: 1\nname: wide\nrootfs: busybox@1\nsteps:\n");
    const STEPS: usize = 60;
    for i in 0..STEPS {
        yaml.push_str(&format!("  - {{ name: s{i}, run: 'true' }}\n"));
    }
    let run = env.submit_ok(&yaml).await;
    let mut workers = Vec::new();
    for w in 0..6 {
        workers.push(env.register(&format!("w{w}")).await);
    }
    let mut set = tokio::task::JoinSet::new();
    for w in workers {
        let env = env.clone();
        set.spawn(async move {
            let mut got = Vec::new();
            while let Some(lease) = env.claim(&w).await {
                got.push(lease.spec.step);
            }
            got
        });
    }
    let all: Vec<String> = set.join_all().await.into_iter().flatten().collect();
    let distinct: BTreeSet<&String> = all.iter().collect();
    assert_eq!(all.len(), STEPS, "every step leased exactly once");
    assert_eq!(distinct.len(), STEPS);
    let view = env.run(&run.id).await;
    assert!(
        view.steps
            .iter()
            .all(|s| s.state == v1::StepState::Leased && s.attempts == 1)
    );
}

async fn expired_lease_is_leased_again_and_the_old_report_is_refused(backend: Backend) {
    let env = Env::new(backend).await;
    let run = env.submit_ok(TWO_STEPS).await;
    let w1 = env.register("w1").await;
    let w2 = env.register("w2").await;
    let old = env.claim(&w1).await.unwrap();
    // Heartbeats keep it alive past the first ttl.
    env.clock.advance(TTL - Duration::from_secs(1));
    assert_eq!(env.heartbeat(&old, &w1).await, StatusCode::NO_CONTENT);
    env.clock.advance(TTL - Duration::from_secs(1));
    env.tick().await;
    assert!(env.claim(&w2).await.is_none(), "still w1's");
    // Then w1 goes silent.
    env.clock.advance(TTL + Duration::from_secs(1));
    let new = env
        .claim(&w2)
        .await
        .expect("the expired step is leased again");
    assert_eq!(new.spec.step, "make");
    assert_ne!(new.lease_id, old.lease_id);
    let view = env.run(&run.id).await;
    assert_eq!(step(&view, "make").attempts, 2);
    assert_eq!(step(&view, "make").worker.as_deref(), Some(w2.as_str()));

    assert_eq!(env.heartbeat(&old, &w1).await, StatusCode::CONFLICT);
    let late = env.record(&old.spec, 0, &[("greeting", b"late")]).await;
    assert_eq!(env.report(&old, &w1, late).await, StatusCode::CONFLICT);
    let view = env.run(&run.id).await;
    assert_eq!(
        step(&view, "make").state,
        v1::StepState::Leased,
        "the late report changed nothing"
    );

    let record = env.record(&new.spec, 0, &[("greeting", b"hello")]).await;
    assert_eq!(
        env.report(&new, &w2, record.clone()).await,
        StatusCode::NO_CONTENT
    );
    // A retried report of the accepted record is answered as the first one.
    assert_eq!(env.report(&new, &w2, record).await, StatusCode::NO_CONTENT);
    let (_, log) = env
        .get(&format!("/v1/runs/{}/steps/make/log", run.id))
        .await;
    assert_eq!(log, b"log of make\n");
}

async fn report_from_another_worker_is_refused(backend: Backend) {
    let env = Env::new(backend).await;
    let run = env.submit_ok(TWO_STEPS).await;
    let w1 = env.register("w1").await;
    let w2 = env.register("w2").await;
    let lease = env.claim(&w1).await.unwrap();
    let record = env.record(&lease.spec, 0, &[("greeting", b"forged")]).await;
    assert_eq!(
        env.report(&lease, &w2, record.clone()).await,
        StatusCode::CONFLICT
    );
    assert_eq!(env.heartbeat(&lease, &w2).await, StatusCode::CONFLICT);
    let view = env.run(&run.id).await;
    assert_eq!(step(&view, "make").state, v1::StepState::Leased);
    assert_eq!(step(&view, "make").worker.as_deref(), Some(w1.as_str()));
    // An unregistered worker gets no lease at all.
    let (status, _) = env
        .post(
            "/v1/leases",
            &v1::LeaseRequest {
                worker_id: "nobody".into(),
                wait_ms: None,
            },
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // The holder's own report still goes through.
    assert_eq!(
        env.report(&lease, &w1, record).await,
        StatusCode::NO_CONTENT
    );
}

async fn report_naming_a_blob_that_was_not_uploaded_is_refused(backend: Backend) {
    let env = Env::new(backend).await;
    let run = env.submit_ok(TWO_STEPS).await;
    let w = env.register("w").await;
    let lease = env.claim(&w).await.unwrap();
    let mut record = env.record(&lease.spec, 0, &[("greeting", b"hello")]).await;
    record.outputs[0].sha256 = Sha256Digest::of(b"never uploaded");
    let (status, body) = env
        .post(
            &format!("/v1/leases/{}/report", lease.lease_id),
            &v1::StepReport {
                worker_id: w.clone(),
                record: record.clone(),
                claim_next: false,
            },
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let err: v1::ErrorView = serde_json::from_slice(&body).unwrap();
    assert!(err.error.contains("output greeting"), "{err:?}");
    // The log too.
    let mut record = env.record(&lease.spec, 0, &[("greeting", b"hello")]).await;
    record.log.sha256 = Sha256Digest::of(b"no such log");
    assert_eq!(
        env.report(&lease, &w, record).await,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    // A record for another step than the lease's.
    let mut record = env.record(&lease.spec, 0, &[("greeting", b"hello")]).await;
    record.step = "wrap".into();
    assert_eq!(
        env.report(&lease, &w, record).await,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let view = env.run(&run.id).await;
    assert_eq!(step(&view, "make").state, v1::StepState::Leased);
}

async fn blob_upload_with_wrong_bytes_is_refused_and_not_kept(backend: Backend) {
    let env = Env::new(backend).await;
    let claimed = Sha256Digest::of(b"the real bytes");
    assert_eq!(
        env.put_blob(&claimed, b"other bytes").await,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let store = env
        .server
        .as_ref()
        .unwrap()
        .dispatcher()
        .controller()
        .store();
    assert!(!store.contains(&claimed));
    assert!(
        !store.contains(&Sha256Digest::of(b"other bytes")),
        "refused bytes were kept"
    );
    let (status, _) = env.get(&format!("/v1/blobs/{claimed}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        env.put_blob(&claimed, b"the real bytes").await,
        StatusCode::CREATED
    );
    assert_eq!(
        env.put_blob(&claimed, b"the real bytes").await,
        StatusCode::OK
    );
    let (status, bytes) = env.get(&format!("/v1/blobs/{claimed}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(bytes, b"the real bytes");
    let (status, _) = env.get("/v1/blobs/not-a-digest").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

async fn large_blob_round_trips_through_the_streamed_routes(backend: Backend) {
    let env = Env::new(backend).await;
    // Larger than the JSON body limit (and axum's default 2 MiB), in many chunks.
    let bytes: Vec<u8> = (0..(5u32 << 20)).map(|i| (i % 251) as u8).collect();
    let digest = Sha256Digest::of(&bytes);
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        bytes.chunks(64 << 10).map(|c| Ok(c.to_vec())).collect();
    let body = Body::from_stream(futures_util::stream::iter(chunks));
    let (status, _) = env
        .call(Method::PUT, &format!("/v1/blobs/{digest}"), body)
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, back) = env.get(&format!("/v1/blobs/{digest}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(back == bytes, "the blob came back different");
}

async fn failed_step_skips_its_dependents(backend: Backend) {
    let env = Env::new(backend).await;
    let run = env.submit_ok(CHAIN).await;
    let w = env.register("w").await;
    let a = env.claim(&w).await.unwrap();
    assert_eq!(a.spec.step, "a");
    let d = env.claim(&w).await.unwrap();
    assert_eq!(d.spec.step, "d");
    let record = env.record(&a.spec, 1, &[]).await;
    assert_eq!(env.report(&a, &w, record).await, StatusCode::NO_CONTENT);
    assert!(env.claim(&w).await.is_none(), "b and c were skipped");
    let view = env.run(&run.id).await;
    assert_eq!(step(&view, "a").state, v1::StepState::Failed);
    assert_eq!(step(&view, "a").exit, Some(ExitRecord::Exited { code: 1 }));
    assert_eq!(step(&view, "b").state, v1::StepState::Skipped);
    assert_eq!(step(&view, "c").state, v1::StepState::Skipped);
    assert_eq!(view.state, v1::RunState::Running, "d is still leased");
    let record = env.record(&d.spec, 0, &[("x", b"x")]).await;
    assert_eq!(env.report(&d, &w, record).await, StatusCode::NO_CONTENT);
    let view = env.run(&run.id).await;
    assert_eq!(view.state, v1::RunState::Failed);
    assert_eq!(step(&view, "d").state, v1::StepState::Succeeded);
}

async fn step_fails_once_its_attempts_are_exhausted(backend: Backend) {
    let env = Env::new(backend).await;
    let run = env.submit_ok(TWO_STEPS).await;
    let w = env.register("w").await;
    for attempt in 1..=3 {
        let lease = env.claim(&w).await.expect("leased again");
        assert_eq!(lease.spec.step, "make");
        assert_eq!(step(&env.run(&run.id).await, "make").attempts, attempt);
        env.clock.advance(TTL + Duration::from_secs(1));
    }
    env.tick().await;
    assert!(env.claim(&w).await.is_none());
    let view = env.run(&run.id).await;
    let make = step(&view, "make");
    assert_eq!(make.state, v1::StepState::Failed);
    assert_eq!(make.attempts, 3);
    match &make.exit {
        Some(ExitRecord::Failed { reason }) => {
            assert!(reason.contains("lease expired 3 time(s)"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(step(&view, "wrap").state, v1::StepState::Skipped);
    assert_eq!(view.state, v1::RunState::Failed);
    assert!(view.artifacts.is_empty());
}

async fn restarted_daemon_resumes_runs_and_keeps_leases(backend: Backend) {
    let mut env = Env::new(backend).await;
    let run = env.submit_ok(TWO_STEPS).await;
    let w = env.register("w").await;
    let make = env.claim(&w).await.unwrap();
    env.restart().await;
    // The lease survived the restart: it still heartbeats and reports.
    assert_eq!(env.heartbeat(&make, &w).await, StatusCode::NO_CONTENT);
    let record = env.record(&make.spec, 0, &[("greeting", b"hello")]).await;
    assert_eq!(env.report(&make, &w, record).await, StatusCode::NO_CONTENT);
    env.restart().await;
    // The restarted daemon rebuilds the next spec from the stored pipeline and records.
    let wrap = env
        .claim(&w)
        .await
        .expect("wrap is ready after the restart");
    assert_eq!(wrap.spec.step, "wrap");
    assert!(
        serde_json::to_string(&wrap.spec.inputs)
            .unwrap()
            .contains(&Sha256Digest::of(b"hello").to_string())
    );
    assert_eq!(wrap.spec.rootfs.reference.to_string(), "busybox@1");
    let record = env.record(&wrap.spec, 0, &[("wrapped", b"[hello]")]).await;
    assert_eq!(env.report(&wrap, &w, record).await, StatusCode::NO_CONTENT);
    assert_eq!(env.run(&run.id).await.state, v1::RunState::Succeeded);
}

async fn run_finished_just_before_a_crash_is_published_on_restart(backend: Backend) {
    let mut env = Env::new(backend).await;
    let run = env.submit_ok(TWO_STEPS).await;
    let w = env.register("w").await;
    let make = env.claim(&w).await.unwrap();
    let record = env.record(&make.spec, 0, &[("greeting", b"hello")]).await;
    assert_eq!(env.report(&make, &w, record).await, StatusCode::NO_CONTENT);
    let wrap = env.claim(&w).await.unwrap();
    let record = env.record(&wrap.spec, 0, &[("wrapped", b"[hello]")]).await;
    // The last report lands in the database, but the daemon "crashes" before publishing.
    let state = env
        .server
        .as_ref()
        .unwrap()
        .dispatcher()
        .controller()
        .state()
        .clone();
    let now = env.clock.now();
    state
        .report_step(&wrap.lease_id, &w, &record, now)
        .await
        .unwrap();
    assert_eq!(env.run(&run.id).await.state, v1::RunState::Running);
    env.restart().await;
    let view = env.run(&run.id).await;
    assert_eq!(view.state, v1::RunState::Succeeded);
    assert_eq!(view.artifacts.len(), 1);
}

async fn team_routes_refuse_a_missing_malformed_or_unknown_token(backend: Backend) {
    let env = Env::new(backend).await;
    let run = env.submit_ok(TWO_STEPS).await;
    let uri = format!("/v1/runs/{}", run.id);
    for auth in [
        None,
        Some("Basic Ymx1ZTpibHVl"),
        Some("Bearer"),
        Some("Bearer kiln-team-0000000000000000000000000000000000000000000000000000000000000000"),
    ] {
        let (status, _) = env.call_as(auth, Method::GET, &uri, Body::empty()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth:?}");
        let (status, _) = env
            .call_as(auth, Method::GET, "/v1/runs", Body::empty())
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth:?}");
    }
}

async fn expired_team_token_is_refused(backend: Backend) {
    let env = Env::new(backend).await;
    let token = env.make_token("blue", Duration::from_secs(60)).await;
    let auth = format!("Bearer {token}");
    let (status, _) = env
        .call_as(Some(&auth), Method::GET, "/v1/runs", Body::empty())
        .await;
    assert_eq!(status, StatusCode::OK);
    env.clock.advance(Duration::from_secs(61));
    let (status, body) = env
        .call_as(Some(&auth), Method::GET, "/v1/runs", Body::empty())
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(String::from_utf8_lossy(&body).contains("expired"));
}

async fn a_team_cannot_see_another_teams_run(backend: Backend) {
    let env = Env::new(backend).await;
    let run = env.submit_ok(TWO_STEPS).await;
    let red = format!(
        "Bearer {}",
        env.make_token("red", Duration::from_secs(3600)).await
    );
    for uri in [
        format!("/v1/runs/{}", run.id),
        format!("/v1/runs/{}/steps/make/log", run.id),
        format!("/v1/runs/{}/artifacts/wrapped", run.id),
        format!("/v1/runs/{}/artifacts/wrapped/provenance", run.id),
    ] {
        let (status, _) = env
            .call_as(Some(&red), Method::GET, &uri, Body::empty())
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
    }
    let (status, list) = env
        .call_as(Some(&red), Method::GET, "/v1/runs", Body::empty())
        .await;
    assert_eq!(status, StatusCode::OK);
    let list: Vec<v1::RunView> = serde_json::from_slice(&list).unwrap();
    assert!(list.is_empty());
    let (_, list) = env.get("/v1/runs").await;
    let list: Vec<v1::RunView> = serde_json::from_slice(&list).unwrap();
    assert_eq!(list.len(), 1);
}

async fn cancel_revokes_leases_and_the_late_report_is_refused(backend: Backend) {
    let env = Env::new(backend).await;
    let run = env.submit_ok(TWO_STEPS).await;
    let w1 = env.register("w1").await;
    let lease = env.claim(&w1).await.unwrap();
    let record = env.record(&lease.spec, 0, &[("greeting", b"hi")]).await;
    let red = format!(
        "Bearer {}",
        env.make_token("red", Duration::from_secs(3600)).await
    );
    let uri = format!("/v1/runs/{}/cancel", run.id);
    let (status, _) = env
        .call_as(Some(&red), Method::POST, &uri, Body::empty())
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "only the owning team cancels"
    );
    assert_eq!(env.run(&run.id).await.state, v1::RunState::Running);

    let (status, body) = env.call(Method::POST, &uri, Body::empty()).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let view: v1::RunView = serde_json::from_slice(&body).unwrap();
    assert_eq!(view.state, v1::RunState::Cancelled);
    assert!(
        view.steps
            .iter()
            .all(|s| s.state == v1::StepState::Cancelled),
        "{view:#?}"
    );
    assert_eq!(env.heartbeat(&lease, &w1).await, StatusCode::CONFLICT);
    assert_eq!(env.report(&lease, &w1, record).await, StatusCode::CONFLICT);
    assert!(env.claim(&w1).await.is_none(), "nothing left to lease");
    env.tick().await;
    let view = env.run(&run.id).await;
    assert_eq!(view.state, v1::RunState::Cancelled);
    assert!(view.artifacts.is_empty());
    // Cancelling again is harmless.
    let (status, _) = env.call(Method::POST, &uri, Body::empty()).await;
    assert_eq!(status, StatusCode::OK);
}

async fn cancelled_and_failed_runs_serve_a_signed_run_attestation(backend: Backend) {
    use kiln_attest::{RunOutcome, StepOutcome};
    let env = Env::new(backend).await;
    let key =
        kiln_attest::PublicKey::from_spki_pem_file(&env.data_dir().join("keys/kiln.pub")).unwrap();

    // Cancelled: one step reported, one leased when the run was cancelled.
    let run = env.submit_ok(CHAIN).await;
    let uri = format!("/v1/runs/{}/attestation", run.id);
    let (status, _) = env.get(&uri).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "no attestation while it runs"
    );
    let w = env.register("w").await;
    let a = env.claim(&w).await.unwrap();
    assert_eq!(a.spec.step, "a");
    let record = env.record(&a.spec, 0, &[("x", b"x")]).await;
    assert_eq!(env.report(&a, &w, record).await, StatusCode::NO_CONTENT);
    let _b = env.claim(&w).await.unwrap();
    let (status, _) = env
        .call(
            Method::POST,
            &format!("/v1/runs/{}/cancel", run.id),
            Body::empty(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let red = format!(
        "Bearer {}",
        env.make_token("red", Duration::from_secs(3600)).await
    );
    let (status, _) = env
        .call_as(Some(&red), Method::GET, &uri, Body::empty())
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another team's run");
    let (status, body) = env.get(&uri).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let verified =
        kiln_attest::verify_run_attestation(std::str::from_utf8(&body).unwrap(), &key).unwrap();
    let p = &verified.statement.predicate;
    assert_eq!(p.run, run.id);
    assert_eq!(p.state, RunOutcome::Cancelled);
    let states: Vec<(&str, StepOutcome)> =
        p.steps.iter().map(|s| (s.name.as_str(), s.state)).collect();
    assert_eq!(
        states,
        [
            ("a", StepOutcome::Succeeded),
            ("b", StepOutcome::Cancelled),
            ("c", StepOutcome::Cancelled),
            ("d", StepOutcome::Cancelled),
        ]
    );
    assert_eq!(p.steps[0].exit, Some(ExitRecord::Exited { code: 0 }));
    assert!(p.steps[0].record_sha256.is_some());
    assert_eq!(p.steps[1].exit, None);

    // Failed: the failing step with its exit, its dependents skipped.
    let run = env.submit_ok(TWO_STEPS).await;
    let first = env.claim(&w).await.unwrap();
    let record = env.record(&first.spec, 3, &[]).await;
    assert_eq!(env.report(&first, &w, record).await, StatusCode::NO_CONTENT);
    env.tick().await;
    assert_eq!(env.run(&run.id).await.state, v1::RunState::Failed);
    let (status, body) = env.get(&format!("/v1/runs/{}/attestation", run.id)).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let verified =
        kiln_attest::verify_run_attestation(std::str::from_utf8(&body).unwrap(), &key).unwrap();
    let p = &verified.statement.predicate;
    assert_eq!(p.state, RunOutcome::Failed);
    let failed = p.steps.iter().find(|s| s.name == first.spec.step).unwrap();
    assert_eq!(failed.state, StepOutcome::Failed);
    assert_eq!(failed.exit, Some(ExitRecord::Exited { code: 3 }));
    assert!(
        p.steps
            .iter()
            .any(|s| s.state == StepOutcome::Skipped && s.exit.is_none()),
        "{p:?}"
    );
}
