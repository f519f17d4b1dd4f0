//! `GET /healthz`, `/readyz` and `/metrics` in process (docs/api.md, "Observability"): the
//! router driven with `tower::ServiceExt::oneshot`, a worker played by hand, a manual clock.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt as _;
use kiln_core::api::v1;
use kiln_core::{ExitRecord, LogRecord, Sha256Digest, StepRecord};
use kiln_daemon::http::{BodyLimits, WorkerAuth};
use kiln_daemon::state::Backend;
use kiln_daemon::state::testing::{TestDatabase, record_for_spec};
use kiln_daemon::{Clock, DispatchConfig, Server, ServerConfig};
use time::OffsetDateTime;
use tower::ServiceExt as _;

struct ManualClock(Mutex<OffsetDateTime>);

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        *self.0.lock().unwrap()
    }
}

const TTL: Duration = Duration::from_secs(30);

/// `a` → `b`, and `c` on its own: `a` and `c` are ready at once.
const THREE_STEPS: &str = "\
version: 1
name: three
rootfs: busybox@1
steps:
  - { name: a, run: 'true', outputs: [x] }
  - { name: b, needs: [a], run: 'true', outputs: [x] }
  - { name: c, run: 'true', outputs: [x] }
";

struct Env {
    dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
    server: Server,
    router: Router,
    token: String,
    /// The state database (on PostgreSQL, dropped with the `Env`).
    db: TestDatabase,
}

impl Env {
    /// A data dir with a rootfs `busybox@1` in the mirror and a token for team `blue`.
    async fn new(backend: Backend) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let db = TestDatabase::new(backend, &data.join("state.sqlite")).await;
        common::seed_mirror(&data, Some(db.database()), dir.path(), false).await;
        let token = common::team_token(
            &data,
            Some(db.database()),
            "blue",
            Duration::from_secs(3600),
        )
        .await;
        let clock = Arc::new(ManualClock(Mutex::new(OffsetDateTime::now_utc())));
        let mut config = ServerConfig::new(data);
        config.database = Some(db.database().clone());
        config.dispatch = DispatchConfig {
            lease_ttl: TTL,
            max_attempts: 3,
            clock: clock.clone(),
            ..DispatchConfig::default()
        };
        let server = Server::open(config).await.unwrap();
        let router = server.router();
        Self {
            dir,
            clock,
            server,
            router,
            token,
            db,
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn advance(&self, by: Duration) {
        *self.clock.0.lock().unwrap() += by;
    }

    /// A request without any credentials.
    async fn get_open(&self, uri: &str) -> (StatusCode, String) {
        call(&self.router, None, Method::GET, uri, Body::empty()).await
    }

    async fn post<T: serde::Serialize>(&self, uri: &str, body: &T) -> (StatusCode, String) {
        let auth = format!("Bearer {}", self.token);
        let body = Body::from(serde_json::to_vec(body).unwrap());
        call(&self.router, Some(&auth), Method::POST, uri, body).await
    }

    async fn put_blob(&self, bytes: &[u8]) -> Sha256Digest {
        let digest = Sha256Digest::of(bytes);
        let (status, body) = call(
            &self.router,
            None,
            Method::PUT,
            &format!("/v1/blobs/{digest}"),
            Body::from(bytes.to_vec()),
        )
        .await;
        assert!(status.is_success(), "{status}: {body}");
        digest
    }

    async fn submit(&self, yaml: &str) -> String {
        let (status, body) = self
            .post(
                "/v1/runs",
                &v1::SubmitRun {
                    pipeline_file: "p.yaml".into(),
                    pipeline_yaml: yaml.into(),
                    request_id: None,
                },
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        serde_json::from_str::<v1::RunView>(&body).unwrap().id
    }

    async fn register(&self, name: &str) -> String {
        let (status, body) = self
            .post(
                "/v1/workers",
                &v1::RegisterWorker {
                    name: name.into(),
                    slots: 1,
                    labels: Default::default(),
                },
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        serde_json::from_str::<v1::WorkerRegistered>(&body)
            .unwrap()
            .worker_id
    }

    async fn claim(&self, worker_id: &str) -> v1::Lease {
        let (status, body) = self
            .post(
                "/v1/leases",
                &v1::LeaseRequest {
                    worker_id: worker_id.into(),
                    wait_ms: None,
                },
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Reports `lease` as having run for `secs` seconds and ended with `exit`.
    async fn report(&self, lease: &v1::Lease, worker_id: &str, exit: ExitRecord, secs: i64) {
        let spec = &lease.spec;
        let log = format!("log of {}\n", spec.step).into_bytes();
        let log_sha = self.put_blob(&log).await;
        let finished_on = OffsetDateTime::now_utc();
        let log = LogRecord {
            sha256: log_sha,
            size: log.len() as u64,
        };
        let record = StepRecord {
            started_on: finished_on - time::Duration::seconds(secs),
            finished_on,
            ..record_for_spec(spec, exit, Vec::new(), log)
        };
        let (status, body) = self
            .post(
                &format!("/v1/leases/{}/report", lease.lease_id),
                &v1::StepReport {
                    worker_id: worker_id.into(),
                    record,
                    claim_next: false,
                },
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    }

    /// `GET /metrics`, parsed.
    async fn metrics(&self) -> Exposition {
        let (status, body) = self.get_open("/metrics").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        Exposition::parse(&body)
    }
}

async fn call(
    router: &Router,
    authorization: Option<&str>,
    method: Method,
    uri: &str,
    body: Body,
) -> (StatusCode, String) {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json");
    if let Some(auth) = authorization {
        req = req.header("authorization", auth);
    }
    let resp = router
        .clone()
        .oneshot(req.body(body).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

/// A parsed OpenMetrics text exposition: samples by `name{labels}` exactly as written.
struct Exposition {
    samples: BTreeMap<String, f64>,
}

impl Exposition {
    /// Parses `text`, failing the test on anything that is not a well-formed exposition: every
    /// sample belongs to a family declared by a `# TYPE` line (its name, or its name plus a
    /// suffix the type allows), every value is a number, and `# EOF` is the last line.
    fn parse(text: &str) -> Self {
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.last(), Some(&"# EOF"), "no EOF marker:\n{text}");
        let mut types: BTreeMap<String, String> = BTreeMap::new();
        let mut samples = BTreeMap::new();
        for line in &lines[..lines.len() - 1] {
            if let Some(rest) = line.strip_prefix("# ") {
                let mut parts = rest.splitn(3, ' ');
                let (keyword, name) = (parts.next().unwrap(), parts.next().unwrap());
                assert!(name.starts_with("kiln_"), "{line}");
                match keyword {
                    "TYPE" => {
                        let kind = parts.next().unwrap().to_owned();
                        assert!(
                            ["counter", "gauge", "histogram"].contains(&kind.as_str()),
                            "{line}"
                        );
                        assert!(types.insert(name.to_owned(), kind).is_none(), "{line}");
                    }
                    "HELP" | "UNIT" => {}
                    other => panic!("unexpected comment {other}: {line}"),
                }
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("not a number: {line}"));
            let name = series.split('{').next().unwrap();
            let family = types
                .iter()
                .find(|(family, kind)| {
                    let suffixes: &[&str] = match kind.as_str() {
                        "counter" => &["_total", "_created"],
                        "histogram" => &["_bucket", "_sum", "_count", "_created"],
                        _ => &[""],
                    };
                    suffixes.iter().any(|s| name == format!("{family}{s}"))
                })
                .unwrap_or_else(|| panic!("sample of no declared family: {line}"));
            assert!(family.0.starts_with("kiln_"));
            assert!(samples.insert(series.to_owned(), value).is_none(), "{line}");
        }
        Self { samples }
    }

    fn get(&self, series: &str) -> f64 {
        *self.samples.get(series).unwrap_or_else(|| {
            panic!(
                "no sample {series}; have {:?}",
                self.samples.keys().collect::<Vec<_>>()
            )
        })
    }
}

kiln_daemon::backend_tests! {
    #[tokio::test] healthz_answers_without_any_credentials;
    #[tokio::test] readyz_fails_while_the_blob_store_cannot_be_written;
    #[tokio::test] readyz_fails_once_the_database_is_closed;
    #[tokio::test] metrics_follow_a_run_through_claims_expiry_and_reports;
    #[tokio::test] lease_holder_is_alive_for_a_restarted_daemon;
    #[tokio::test] cancelled_run_is_counted_as_cancelled;
    #[tokio::test] metrics_names_are_the_documented_ones;
    #[tokio::test] probes_and_metrics_need_no_client_certificate_under_tls;
}

async fn healthz_answers_without_any_credentials(backend: Backend) {
    let env = Env::new(backend).await;
    let (status, body) = env.get_open("/healthz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "ok\n");
}

async fn readyz_fails_while_the_blob_store_cannot_be_written(backend: Backend) {
    let env = Env::new(backend).await;
    assert_eq!(
        env.get_open("/readyz").await,
        (StatusCode::OK, "ready\n".into())
    );

    // Blobs land in store/tmp first. A file in its place makes it unwritable even for root,
    // which a chmod would not.
    let tmp = env.data_dir().join("store/tmp");
    let aside = env.data_dir().join("store/tmp.aside");
    std::fs::rename(&tmp, &aside).unwrap();
    std::fs::write(&tmp, b"not a directory").unwrap();
    let (status, body) = env.get_open("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.starts_with("not ready: blob store "), "{body}");
    assert!(body.contains("is not writable"), "{body}");
    assert_eq!(body.lines().count(), 1, "{body}");
    // Liveness is not readiness.
    assert_eq!(env.get_open("/healthz").await.0, StatusCode::OK);

    std::fs::remove_file(&tmp).unwrap();
    std::fs::rename(&aside, &tmp).unwrap();
    assert_eq!(env.get_open("/readyz").await.0, StatusCode::OK);
    let leftovers: Vec<_> = std::fs::read_dir(&tmp).unwrap().collect();
    assert!(leftovers.is_empty(), "the probe left {leftovers:?}");
}

async fn readyz_fails_once_the_database_is_closed(backend: Backend) {
    let env = Env::new(backend).await;
    assert_eq!(env.get_open("/readyz").await.0, StatusCode::OK);
    env.server.dispatcher().controller().state().close().await;
    let (status, body) = env.get_open("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        body.starts_with("not ready: state database does not answer"),
        "{body}"
    );
    assert_eq!(body.lines().count(), 1, "{body}");
    assert_eq!(env.get_open("/healthz").await.0, StatusCode::OK);
    assert_eq!(
        env.get_open("/metrics").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

async fn metrics_follow_a_run_through_claims_expiry_and_reports(backend: Backend) {
    let env = Env::new(backend).await;
    let m = env.metrics().await;
    assert_eq!(m.get("kiln_queue_depth"), 0.0);
    assert_eq!(m.get("kiln_runs_accepted_total"), 0.0);
    assert_eq!(m.get("kiln_lease_expiries_total"), 0.0);
    assert_eq!(m.get(r#"kiln_runs_finished_total{state="failed"}"#), 0.0);

    let run = env.submit(THREE_STEPS).await;
    let m = env.metrics().await;
    // `a` and `c` are ready; `b` waits for `a`.
    assert_eq!(m.get("kiln_queue_depth"), 2.0);
    assert_eq!(m.get("kiln_steps_running"), 0.0);
    assert_eq!(m.get("kiln_runs_accepted_total"), 1.0);
    assert_eq!(m.get("kiln_workers_registered"), 0.0);

    let w = env.register("w1").await;
    let m = env.metrics().await;
    assert_eq!(m.get("kiln_workers_registered"), 1.0);
    assert_eq!(m.get("kiln_workers_alive"), 1.0);

    let lease = env.claim(&w).await;
    assert_eq!(lease.spec.step, "a");
    let m = env.metrics().await;
    assert_eq!(m.get("kiln_steps_running"), 1.0);
    assert_eq!(m.get("kiln_queue_depth"), 1.0);
    assert_eq!(m.get("kiln_claim_duration_seconds_count"), 1.0);

    // The worker goes silent: past the ttl it is no longer alive, and its lease expires.
    env.advance(TTL + Duration::from_secs(1));
    let m = env.metrics().await;
    assert_eq!(m.get("kiln_workers_alive"), 0.0);
    assert_eq!(m.get("kiln_workers_registered"), 1.0);
    env.server.dispatcher().tick().await.unwrap();
    let m = env.metrics().await;
    assert_eq!(m.get("kiln_lease_expiries_total"), 1.0);
    assert_eq!(m.get("kiln_steps_running"), 0.0);
    assert_eq!(m.get("kiln_queue_depth"), 2.0);

    let lease = env.claim(&w).await;
    assert_eq!(lease.spec.step, "a");
    env.report(&lease, &w, ExitRecord::Exited { code: 0 }, 5)
        .await;
    let m = env.metrics().await;
    assert_eq!(m.get("kiln_workers_alive"), 1.0);
    assert_eq!(m.get("kiln_queue_depth"), 2.0, "b is ready now, with c");
    assert_eq!(
        m.get(r#"kiln_step_duration_seconds_count{outcome="succeeded"}"#),
        1.0
    );
    assert_eq!(
        m.get(r#"kiln_step_duration_seconds_sum{outcome="succeeded"}"#),
        5.0
    );
    assert_eq!(
        m.get(r#"kiln_step_duration_seconds_bucket{le="2.5",outcome="succeeded"}"#),
        0.0
    );
    assert_eq!(
        m.get(r#"kiln_step_duration_seconds_bucket{le="5.0",outcome="succeeded"}"#),
        1.0
    );

    let lease = env.claim(&w).await;
    assert_eq!(lease.spec.step, "b");
    let killed = ExitRecord::Killed {
        reason: "killed: memory limit 512MiB exceeded".into(),
    };
    env.report(&lease, &w, killed, 2).await;
    let lease = env.claim(&w).await;
    assert_eq!(lease.spec.step, "c");
    let failed = ExitRecord::Failed {
        reason: "cannot stage input".into(),
    };
    env.report(&lease, &w, failed, 0).await;

    let m = env.metrics().await;
    assert_eq!(m.get(r#"kiln_sandbox_failures_total{kind="limit"}"#), 1.0);
    assert_eq!(
        m.get(r#"kiln_sandbox_failures_total{kind="failed_to_start"}"#),
        1.0
    );
    assert_eq!(m.get(r#"kiln_sandbox_failures_total{kind="killed"}"#), 0.0);
    assert_eq!(
        m.get(r#"kiln_step_duration_seconds_count{outcome="failed"}"#),
        2.0
    );
    assert_eq!(m.get(r#"kiln_runs_finished_total{state="failed"}"#), 1.0);
    assert_eq!(m.get(r#"kiln_runs_finished_total{state="succeeded"}"#), 0.0);
    assert_eq!(m.get("kiln_queue_depth"), 0.0);
    assert_eq!(m.get("kiln_steps_running"), 0.0);
    assert_eq!(m.get("kiln_claim_duration_seconds_count"), 4.0);
    let (status, body) = env
        .post(&format!("/v1/runs/{run}/cancel"), &serde_json::json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
}

/// A restarted daemon has heard from no worker yet, but one holding an unexpired lease is alive.
async fn lease_holder_is_alive_for_a_restarted_daemon(backend: Backend) {
    let env = Env::new(backend).await;
    env.submit(THREE_STEPS).await;
    let w = env.register("w1").await;
    env.claim(&w).await;
    let mut config = ServerConfig::new(env.data_dir());
    config.database = Some(env.db.database().clone());
    config.dispatch = DispatchConfig {
        lease_ttl: TTL,
        max_attempts: 3,
        clock: env.clock.clone(),
        ..DispatchConfig::default()
    };
    let restarted = Server::open(config).await.unwrap();
    let scrape = |router: Router| async move {
        let (status, body) = call(&router, None, Method::GET, "/metrics", Body::empty()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        Exposition::parse(&body)
    };
    let m = scrape(restarted.router()).await;
    assert_eq!(m.get("kiln_workers_alive"), 1.0);
    assert_eq!(m.get("kiln_steps_running"), 1.0);
    assert_eq!(
        m.get("kiln_runs_accepted_total"),
        0.0,
        "counters are per process"
    );
    env.advance(TTL + Duration::from_millis(1));
    let m = scrape(restarted.router()).await;
    assert_eq!(m.get("kiln_workers_alive"), 0.0);
}

async fn cancelled_run_is_counted_as_cancelled(backend: Backend) {
    let env = Env::new(backend).await;
    let run = env.submit(THREE_STEPS).await;
    let (status, body) = env
        .post(&format!("/v1/runs/{run}/cancel"), &serde_json::json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let m = env.metrics().await;
    assert_eq!(m.get(r#"kiln_runs_finished_total{state="cancelled"}"#), 1.0);
    assert_eq!(m.get("kiln_queue_depth"), 0.0);
}

async fn metrics_names_are_the_documented_ones(backend: Backend) {
    let env = Env::new(backend).await;
    let (status, body) = env.get_open("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let families: BTreeSet<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .collect();
    let expected: BTreeSet<&str> = [
        "kiln_claim_duration_seconds histogram",
        "kiln_lease_expiries counter",
        "kiln_queue_depth gauge",
        "kiln_runs_accepted counter",
        "kiln_runs_finished counter",
        "kiln_sandbox_failures counter",
        "kiln_step_duration_seconds histogram",
        "kiln_steps_running gauge",
        "kiln_workers_alive gauge",
        "kiln_workers_registered gauge",
    ]
    .into();
    assert_eq!(families, expected);
    // Every family is in the API document's table.
    let api =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/api.md")).unwrap();
    for family in &families {
        let name = family.split(' ').next().unwrap();
        assert!(
            api.contains(&format!("`{name}")),
            "{name} is not in docs/api.md"
        );
    }
}

/// Under `--tls` the probes and metrics need no client certificate, while worker routes do.
async fn probes_and_metrics_need_no_client_certificate_under_tls(backend: Backend) {
    let env = Env::new(backend).await;
    let dispatcher = env.server.dispatcher().clone();
    let pki = kiln_daemon::pki::Pki::open_or_create(&env.data_dir()).unwrap();
    let gate = kiln_daemon::http::enroll::WorkerGate {
        pki,
        enrollment: kiln_daemon::pki::Enrollment::new(dispatcher.controller().state().clone()),
        cert_lifetime: Duration::from_secs(3600),
    };
    let tls = kiln_daemon::http::router(
        dispatcher,
        BodyLimits::default(),
        WorkerAuth::ClientCert(Arc::new(gate)),
    );
    for uri in ["/healthz", "/readyz", "/metrics"] {
        let (status, body) = call(&tls, None, Method::GET, uri, Body::empty()).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {body}");
    }
    let register = serde_json::to_vec(&v1::RegisterWorker {
        name: "w".into(),
        slots: 1,
        labels: Default::default(),
    })
    .unwrap();
    let (status, _) = call(
        &tls,
        None,
        Method::POST,
        "/v1/workers",
        Body::from(register),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
