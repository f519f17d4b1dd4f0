//! docs/openapi.json, kept honest: it is what `kiln_daemon::http::openapi::openapi` generates,
//! every operation in it is served by the real router and every route the router serves is in
//! it, and what the daemon sends and takes validates against its schemas.
//!
//! `KILN_UPDATE_OPENAPI=1 cargo test -p kiln-daemon --test openapi` regenerates the file.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use common::TWO_STEPS;
use http_body_util::BodyExt as _;
use kiln_core::api::v1;
use kiln_core::{
    ExitRecord, GitInput, GitSigner, InputSource, LimitEventRecord, LimitsRecord, LogRecord,
    MirrorRef, OutputRecord, SandboxRecord, Sha256Digest, StagedInput, StepRecord, StepSpec,
    UsageRecord,
};
use kiln_daemon::http::openapi::openapi;
use kiln_daemon::http::{BodyLimits, WorkerAuth};
use kiln_daemon::state::testing::record_for_spec;
use kiln_daemon::{Server, ServerConfig};
use serde_json::{Value, json};
use tower::ServiceExt as _;

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn committed_openapi_matches_generated() {
    let path = manifest_dir().join("../docs/openapi.json");
    let generated = serde_json::to_string_pretty(&openapi()).unwrap() + "\n";
    if std::env::var_os("KILN_UPDATE_OPENAPI").is_some() {
        fs::write(&path, &generated).expect("write docs/openapi.json");
    }
    let committed = fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/openapi.json is stale: run KILN_UPDATE_OPENAPI=1 cargo test -p kiln-daemon --test openapi"
    );
}

// ---------------------------------------------------------------------------------------------
// The document and its schemas.

/// Every (method, path template, operation) of the document.
fn operations(doc: &Value) -> Vec<(Method, &str, &Value)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("a path item") {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            ops.push((method, path.as_str(), op));
        }
    }
    ops
}

/// The operation of `doc` that `method` on `uri` is, by the path templates.
fn operation_for<'d>(doc: &'d Value, method: &Method, uri: &str) -> (&'d str, &'d Value) {
    let path = uri.split('?').next().unwrap();
    let segments: Vec<&str> = path.split('/').collect();
    operations(doc)
        .into_iter()
        .find(|(m, template, _)| {
            let parts: Vec<&str> = template.split('/').collect();
            m == method
                && parts.len() == segments.len()
                && parts
                    .iter()
                    .zip(&segments)
                    .all(|(t, s)| t == s || (t.starts_with('{') && t.ends_with('}')))
        })
        .map(|(_, template, op)| (template, op))
        .unwrap_or_else(|| panic!("{method} {path} is not in docs/openapi.json"))
}

/// A validator for `schema`, whose `$ref`s point into `doc`'s components.
fn validator(doc: &Value, schema: &Value) -> jsonschema::Validator {
    let mut root = schema.clone();
    root.as_object_mut()
        .expect("an object schema")
        .insert("components".into(), doc["components"].clone());
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&root)
        .unwrap_or_else(|e| panic!("{schema} does not compile: {e}"))
}

/// The errors of `value` against `schema`, one line each; empty when it is valid.
fn errors(doc: &Value, schema: &Value, value: &Value) -> Vec<String> {
    validator(doc, schema)
        .iter_errors(value)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

fn component(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// Panics unless `value`, serialized, validates against the component schema `name`.
#[track_caller]
fn assert_valid<T: serde::Serialize>(doc: &Value, name: &str, value: &T) {
    let value = serde_json::to_value(value).unwrap();
    let errors = errors(doc, &component(name), &value);
    assert!(
        errors.is_empty(),
        "{name} does not describe {value:#}:\n{}",
        errors.join("\n")
    );
}

/// Checks one answer of the daemon against what `doc` says `method uri` answers: a documented
/// status, a documented content type, a JSON body that validates, every required header.
#[track_caller]
fn check_answer(doc: &Value, method: &Method, uri: &str, reply: &Reply) {
    let (template, op) = operation_for(doc, method, uri);
    let what = format!("{method} {uri} ({template}) answered {}", reply.status);
    let response = op["responses"]
        .get(reply.status.as_str())
        .unwrap_or_else(|| panic!("{what}, an undocumented status: {}", reply.text()));
    let content_type = reply
        .headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned());
    if *method != Method::HEAD {
        match response.get("content") {
            None => assert!(
                reply.body.is_empty(),
                "{what} with a body: {}",
                reply.text()
            ),
            Some(content) if !reply.body.is_empty() => {
                let ct = content_type
                    .as_deref()
                    .unwrap_or_else(|| panic!("{what} without a Content-Type"));
                let media = content
                    .get(ct)
                    .unwrap_or_else(|| panic!("{what} as {ct}, not one of {content}"));
                if ct == "application/json" {
                    let body: Value = serde_json::from_slice(&reply.body).unwrap();
                    let errors = errors(doc, &media["schema"], &body);
                    assert!(errors.is_empty(), "{what}: {body:#}\n{}", errors.join("\n"));
                }
            }
            Some(_) => {}
        }
    }
    for (name, spec) in response
        .get("headers")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        if spec["required"] != json!(true) {
            continue;
        }
        let value = reply
            .headers
            .get(name.as_str())
            .unwrap_or_else(|| panic!("{what} without the header {name}"))
            .to_str()
            .unwrap();
        let value = match spec["schema"]["type"].as_str() {
            Some("integer") => json!(
                value
                    .parse::<u64>()
                    .unwrap_or_else(|_| panic!("{what}: {name}: {value:?}"))
            ),
            _ => json!(value),
        };
        let errors = errors(doc, &spec["schema"], &value);
        assert!(errors.is_empty(), "{what}: {name}: {}", errors.join("\n"));
    }
}

// ---------------------------------------------------------------------------------------------
// A daemon in process.

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {} {}", self.status, self.text()))
    }

    /// axum's answer for a path no route matches.
    fn is_unrouted(&self) -> bool {
        self.status == StatusCode::NOT_FOUND && self.body.is_empty()
    }
}

/// A request body.
enum Payload {
    None,
    Json(Value),
    Bytes(Vec<u8>),
}

async fn send(
    router: &Router,
    method: Method,
    uri: &str,
    token: Option<&str>,
    payload: Payload,
) -> Reply {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let body = match payload {
        Payload::None => Body::empty(),
        Payload::Json(value) => {
            req = req.header(header::CONTENT_TYPE, "application/json");
            Body::from(serde_json::to_vec(&value).unwrap())
        }
        Payload::Bytes(bytes) => {
            req = req.header(header::CONTENT_TYPE, "application/octet-stream");
            Body::from(bytes)
        }
    };
    let resp = router
        .clone()
        .oneshot(req.body(body).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    Reply {
        status,
        headers,
        body,
    }
}

/// A daemon on a fresh data dir with a rootfs `busybox@1` and a file `words@1` in its mirror:
/// its router without `--tls` and with it (on the same dispatcher), and team `blue`'s token.
struct Daemon {
    _dir: tempfile::TempDir,
    _server: Server,
    plain: Router,
    tls: Router,
    token: String,
}

impl Daemon {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        common::seed_mirror(&data, None, dir.path(), true).await;
        let token = common::team_token(&data, None, "blue", Duration::from_secs(3600)).await;
        let server = Server::open(ServerConfig::new(data.clone())).await.unwrap();
        let plain = server.router();
        let dispatcher = server.dispatcher().clone();
        let gate = kiln_daemon::http::enroll::WorkerGate {
            pki: kiln_daemon::pki::Pki::open_or_create(&data).unwrap(),
            enrollment: kiln_daemon::pki::Enrollment::new(dispatcher.controller().state().clone()),
            cert_lifetime: Duration::from_secs(3600),
        };
        let tls = kiln_daemon::http::router(
            dispatcher,
            BodyLimits::default(),
            WorkerAuth::ClientCert(Arc::new(gate)),
        );
        Self {
            _dir: dir,
            _server: server,
            plain,
            tls,
            token,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The document describes the router: every operation is routed, every route is documented.

/// `template` with every `{parameter}` filled with a value that reaches the handler; `sha256`
/// is not a digest, so that blob routes answer `400` (a `HEAD` for a missing blob answers an
/// empty `404`, which looks like no route at all).
fn example_uri(template: &str, op: &Value) -> String {
    let path: Vec<String> = template
        .split('/')
        .map(|segment| match segment {
            "{run}" => "0190a1b2-0000-7000-8000-000000000000".to_owned(),
            "{sha256}" => "not-a-digest".to_owned(),
            s if s.starts_with('{') => "x".to_owned(),
            s => s.to_owned(),
        })
        .collect();
    let query: Vec<String> = op["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["in"] == "query" && p["required"] == json!(true))
        .map(|p| {
            let value = if p["schema"]["type"] == "integer" {
                "0"
            } else {
                "x"
            };
            format!("{}={value}", p["name"].as_str().unwrap())
        })
        .collect();
    let mut uri = path.join("/");
    if !query.is_empty() {
        uri = format!("{uri}?{}", query.join("&"));
    }
    uri
}

/// A body of the right media type for `op`; JSON bodies are `{}`, which no request type
/// accepts, so that nothing is created by this probe.
fn example_payload(op: &Value) -> Payload {
    match op["requestBody"]["content"].as_object() {
        None => Payload::None,
        Some(content) if content.contains_key("application/json") => Payload::Json(json!({})),
        Some(_) => Payload::Bytes(b"hello".to_vec()),
    }
}

#[tokio::test]
async fn every_documented_operation_is_routed() {
    let doc = openapi();
    let daemon = Daemon::new().await;
    let ops = operations(&doc);
    assert!(ops.len() >= 20, "only {} operations", ops.len());
    for (method, template, op) in ops {
        let uri = example_uri(template, op);
        let tls_only = op.get("x-kiln-tls-only") == Some(&json!(true));
        let mut modes = vec![("--tls", &daemon.tls)];
        if !tls_only {
            modes.push(("plain", &daemon.plain));
        }
        for (mode, router) in modes {
            for token in [Some(daemon.token.as_str()), None] {
                let reply = send(router, method.clone(), &uri, token, example_payload(op)).await;
                let what = format!("{mode}: {method} {uri}");
                assert!(!reply.is_unrouted(), "{what}: no route");
                assert_ne!(
                    reply.status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{what}: the path is routed, not the method"
                );
                check_answer(&doc, &method, &uri, &reply);
            }
        }
        if tls_only {
            let reply = send(
                &daemon.plain,
                method.clone(),
                &uri,
                None,
                example_payload(op),
            )
            .await;
            assert!(
                reply.is_unrouted(),
                "plain: {method} {uri} is routed, but documented as x-kiln-tls-only"
            );
        }
    }
}

/// The path of every `.route("PATH", ...)` call in daemon/src/http/.
fn routed_paths_in_source() -> BTreeSet<String> {
    let dir = manifest_dir().join("src/http");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect();
    files.sort();
    let mut paths = BTreeSet::new();
    for file in files {
        let source = fs::read_to_string(&file).unwrap();
        // Routes made any other way would escape the scan below.
        for call in [".nest(", ".nest_service(", ".route_service(", ".fallback("] {
            assert!(
                !source.contains(call),
                "{}: {call} routes what this test cannot see: list its paths here",
                file.display()
            );
        }
        for (i, _) in source.match_indices(".route(") {
            let rest = source[i + ".route(".len()..].trim_start();
            let path = rest
                .strip_prefix('"')
                .and_then(|r| r.split_once('"'))
                .map(|(path, _)| path)
                .unwrap_or_else(|| {
                    panic!(
                        "{}: a .route( without a literal path: {}",
                        file.display(),
                        &rest[..rest.len().min(60)]
                    )
                });
            paths.insert(path.to_owned());
        }
    }
    paths
}

#[tokio::test]
async fn every_routed_path_and_method_is_documented() {
    let doc = openapi();
    let documented: BTreeSet<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    let routed = routed_paths_in_source();
    assert!(routed.len() >= 15, "the scan found only {routed:?}");
    assert_eq!(
        routed.difference(&documented).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "routed in daemon/src/http but not in docs/openapi.json"
    );
    assert_eq!(
        documented.difference(&routed).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "in docs/openapi.json but routed nowhere in daemon/src/http"
    );

    // Every other method on a documented path is refused as such: nothing routes a method the
    // document leaves out. axum answers `HEAD` with the `GET` handler. Asked without `--tls`
    // (or with it for the routes only it serves): with it, a worker route's certificate check
    // runs before axum's method check and answers `401` for any method.
    let daemon = Daemon::new().await;
    let methods = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::OPTIONS,
        Method::TRACE,
    ];
    for (template, item) in doc["paths"].as_object().unwrap() {
        let uri = example_uri(template, &Value::Null);
        let tls_only = item
            .as_object()
            .unwrap()
            .values()
            .any(|op| op.get("x-kiln-tls-only") == Some(&json!(true)));
        let (mode, router) = if tls_only {
            ("--tls", &daemon.tls)
        } else {
            ("plain", &daemon.plain)
        };
        for method in &methods {
            let key = method.as_str().to_lowercase();
            if item.get(&key).is_some() || (*method == Method::HEAD && item.get("get").is_some()) {
                continue;
            }
            let reply = send(
                router,
                method.clone(),
                &uri,
                Some(&daemon.token),
                Payload::None,
            )
            .await;
            assert_eq!(
                reply.status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{mode}: {method} {uri}: {template} documents no {method}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The schemas describe the wire: a run through the real router, every request and answer
// checked, and hand-made values for what that run does not show.

/// A client of the plain router that checks every request it sends and every answer it gets
/// against the document.
struct Client<'a> {
    doc: &'a Value,
    daemon: &'a Daemon,
}

impl Client<'_> {
    async fn call(&self, method: Method, uri: &str, payload: Payload) -> Reply {
        if let Payload::Json(body) = &payload {
            let (template, op) = operation_for(self.doc, &method, uri);
            let schema = &op["requestBody"]["content"]["application/json"]["schema"];
            let errors = errors(self.doc, schema, body);
            assert!(
                errors.is_empty(),
                "{method} {template} takes no {body:#}:\n{}",
                errors.join("\n")
            );
        }
        let reply = send(
            &self.daemon.plain,
            method.clone(),
            uri,
            Some(&self.daemon.token),
            payload,
        )
        .await;
        check_answer(self.doc, &method, uri, &reply);
        reply
    }

    async fn post<T: serde::Serialize>(&self, uri: &str, body: &T) -> Reply {
        let body = serde_json::to_value(body).unwrap();
        self.call(Method::POST, uri, Payload::Json(body)).await
    }

    async fn get(&self, uri: &str) -> Reply {
        self.call(Method::GET, uri, Payload::None).await
    }

    /// Uploads `bytes` (twice: `201`, then `200`) and checks that the store has them.
    async fn upload(&self, bytes: &[u8]) -> Sha256Digest {
        let digest = Sha256Digest::of(bytes);
        let uri = format!("/v1/blobs/{digest}");
        let put = |bytes: &[u8]| self.call(Method::PUT, &uri, Payload::Bytes(bytes.to_vec()));
        assert_eq!(put(bytes).await.status, StatusCode::CREATED);
        assert_eq!(put(bytes).await.status, StatusCode::OK);
        let head = self.call(Method::HEAD, &uri, Payload::None).await;
        assert_eq!(head.status, StatusCode::OK);
        digest
    }

    /// Uploads the outputs and a log of `spec`'s step and makes the record a worker reports.
    async fn record(&self, spec: &StepSpec, outputs: &[(&str, &[u8])]) -> StepRecord {
        let log = format!("log of {}\n", spec.step).into_bytes();
        let mut records = Vec::new();
        for (path, bytes) in outputs {
            records.push(OutputRecord {
                path: (*path).into(),
                sha256: self.upload(bytes).await,
                size: bytes.len() as u64,
                executable: *path == "wrapped",
            });
        }
        let log_sha256 = self.upload(&log).await;
        record_for(spec, records, log_sha256, log.len() as u64)
    }
}

/// [`record_for_spec`] with every part of the sandbox record, usage and an event filled
/// in, so that the schemas see each field with a value.
fn record_for(
    spec: &StepSpec,
    outputs: Vec<OutputRecord>,
    log: Sha256Digest,
    size: u64,
) -> StepRecord {
    let log = LogRecord { sha256: log, size };
    StepRecord {
        sandbox: SandboxRecord {
            namespaces: vec!["user".into(), "mount".into(), "net".into()],
            network: "none".into(),
            host_uid: 1_000_000,
            step_uid: 1000,
            scratch_bytes: 64 << 20,
            timeout_secs: spec.timeout_secs,
            mounts: vec!["/in ro".into()],
            limits: LimitsRecord {
                memory_bytes: 512 << 20,
                pids: 256,
                millicpus: 1000,
                open_files: 4096,
            },
            rlimits: "RLIMIT_CORE=0".into(),
            seccomp: "default deny list".into(),
            seccomp_sha256: Sha256Digest::of(b"bpf").to_string(),
        },
        usage: UsageRecord {
            peak_memory_bytes: 1 << 20,
            cpu_time_ms: 3,
            peak_pids: 2,
        },
        events: vec![LimitEventRecord::PidsLimit { limit: 256 }],
        ..record_for_spec(spec, ExitRecord::Exited { code: 0 }, outputs, log)
    }
}

#[tokio::test]
async fn a_run_through_the_router_matches_the_schemas() {
    let doc = openapi();
    let daemon = Daemon::new().await;
    let api = Client {
        doc: &doc,
        daemon: &daemon,
    };

    // A malformed pipeline: an ErrorView with diagnostics.
    let refused = api
        .post(
            "/v1/runs",
            &v1::SubmitRun {
                pipeline_file: "p.yaml".into(),
                pipeline_yaml: "version: 1\nname: x\n".into(),
                request_id: None,
            },
        )
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(!refused.json::<v1::ErrorView>().diagnostics.is_empty());

    let submitted = api
        .post(
            "/v1/runs",
            &v1::SubmitRun {
                pipeline_file: "p.yaml".into(),
                pipeline_yaml: TWO_STEPS.into(),
                request_id: Some("first".into()),
            },
        )
        .await;
    assert_eq!(
        submitted.status,
        StatusCode::CREATED,
        "{}",
        submitted.text()
    );
    let run: v1::RunView = submitted.json();

    let worker = api
        .post(
            "/v1/workers",
            &v1::RegisterWorker {
                name: "w".into(),
                slots: 1,
                labels: [("arch".to_owned(), "x86_64".to_owned())].into(),
            },
        )
        .await
        .json::<v1::WorkerRegistered>()
        .worker_id;
    let claimed = api
        .post(
            "/v1/leases",
            &v1::LeaseRequest {
                worker_id: worker.clone(),
                wait_ms: None,
            },
        )
        .await;
    assert_eq!(claimed.status, StatusCode::OK);
    let make: v1::Lease = claimed.json();
    assert!(
        make.spec
            .inputs
            .iter()
            .any(|i| matches!(i.source, InputSource::Mirror(_))),
        "{:?}",
        make.spec.inputs
    );
    let heartbeat = api
        .post(
            &format!("/v1/leases/{}/heartbeat", make.lease_id),
            &v1::Heartbeat {
                worker_id: worker.clone(),
            },
        )
        .await;
    assert_eq!(heartbeat.status, StatusCode::NO_CONTENT);

    // The live log: appended, read back while incomplete, a gap refused.
    let log_uri = |offset: u64| {
        format!(
            "/v1/leases/{}/log?worker={worker}&offset={offset}",
            make.lease_id
        )
    };
    let appended = api
        .call(
            Method::POST,
            &log_uri(0),
            Payload::Bytes(b"hello\n".to_vec()),
        )
        .await;
    assert_eq!(appended.status, StatusCode::NO_CONTENT);
    let gap = api
        .call(Method::POST, &log_uri(100), Payload::Bytes(b"x".to_vec()))
        .await;
    assert_eq!(gap.status, StatusCode::RANGE_NOT_SATISFIABLE);
    let live = api
        .get(&format!("/v1/runs/{}/steps/make/log?offset=1", run.id))
        .await;
    assert_eq!(
        (live.status, live.text().as_str()),
        (StatusCode::OK, "ello\n")
    );
    assert_eq!(live.headers["kiln-log-complete"], "false");

    // The report claims the next step, whose input is the first step's output.
    let record = api.record(&make.spec, &[("greeting", b"hello\n")]).await;
    let answered = api
        .post(
            &format!("/v1/leases/{}/report", make.lease_id),
            &v1::StepReport {
                worker_id: worker.clone(),
                record,
                claim_next: true,
            },
        )
        .await;
    assert_eq!(answered.status, StatusCode::OK);
    let wrap = answered
        .json::<v1::ReportAnswer>()
        .next
        .expect("wrap is ready");
    assert!(
        wrap.spec
            .inputs
            .iter()
            .any(|i| matches!(i.source, InputSource::Step { .. })),
        "{:?}",
        wrap.spec.inputs
    );
    let record = api.record(&wrap.spec, &[("wrapped", b"[hello]")]).await;
    let reported = api
        .post(
            &format!("/v1/leases/{}/report", wrap.lease_id),
            &v1::StepReport {
                worker_id: worker.clone(),
                record,
                claim_next: false,
            },
        )
        .await;
    assert_eq!(reported.status, StatusCode::NO_CONTENT);
    let nothing = api
        .post(
            "/v1/leases",
            &v1::LeaseRequest {
                worker_id: worker.clone(),
                wait_ms: Some(0),
            },
        )
        .await;
    assert_eq!(nothing.status, StatusCode::NO_CONTENT);

    // The finished run and everything it published.
    let finished: v1::RunView = api.get(&format!("/v1/runs/{}", run.id)).await.json();
    assert_eq!(finished.state, v1::RunState::Succeeded);
    assert!(finished.finished_at.is_some() && !finished.artifacts.is_empty());
    assert!(finished.steps.iter().all(|s| s.exit.is_some()));
    let listed = api.get("/v1/runs").await;
    assert_eq!(listed.json::<Vec<v1::RunView>>().len(), 1);
    let again = api
        .post(
            "/v1/runs",
            &v1::SubmitRun {
                pipeline_file: "p.yaml".into(),
                pipeline_yaml: TWO_STEPS.into(),
                request_id: Some("first".into()),
            },
        )
        .await;
    assert_eq!(again.status, StatusCode::OK);
    let complete = api
        .get(&format!("/v1/runs/{}/steps/wrap/log", run.id))
        .await;
    assert_eq!(complete.headers["kiln-log-complete"], "true");
    for uri in [
        format!("/v1/runs/{}/artifacts/wrapped", run.id),
        format!("/v1/runs/{}/artifacts/wrapped/provenance", run.id),
        format!("/v1/runs/{}/attestation", run.id),
    ] {
        let reply = api.get(&uri).await;
        assert_eq!(reply.status, StatusCode::OK, "{uri}: {}", reply.text());
    }
    let cancelled = api
        .call(
            Method::POST,
            &format!("/v1/runs/{}/cancel", run.id),
            Payload::None,
        )
        .await;
    assert_eq!(cancelled.status, StatusCode::CONFLICT);
    let blob = api
        .get(&format!("/v1/blobs/{}", Sha256Digest::of(b"[hello]")))
        .await;
    assert_eq!(blob.body, b"[hello]");
    for uri in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(api.get(uri).await.status, StatusCode::OK, "{uri}");
    }
}

/// What the run above does not show: a git input, every exit and limit event, enrollment.
#[test]
fn hand_made_values_match_the_schemas() {
    let doc = openapi();
    let digest = Sha256Digest::of(b"x");
    let git = StagedInput {
        mount_name: "src".into(),
        source: InputSource::Git(GitInput {
            mirror: "kiln".into(),
            origin: "/srv/git/kiln.git".into(),
            commit: "0123456789abcdef0123456789abcdef01234567".into(),
            git_ref: Some("refs/heads/main".into()),
            sha256: digest,
            signer: Some(GitSigner {
                principal: "dev@example.com".into(),
                fingerprint: "SHA256:abc".into(),
            }),
        }),
    };
    assert_valid(&doc, "StagedInput", &git);
    for exit in [
        ExitRecord::Exited { code: 1 },
        ExitRecord::Signaled { signal: 9 },
        ExitRecord::TimedOut { after_secs: 60 },
        ExitRecord::Killed {
            reason: "killed: memory limit 512MiB exceeded".into(),
        },
        ExitRecord::Failed {
            reason: "output x is missing".into(),
        },
    ] {
        assert_valid(&doc, "ExitRecord", &exit);
    }
    for event in [
        LimitEventRecord::MemoryLimit {
            limit_bytes: 1 << 29,
        },
        LimitEventRecord::PidsLimit { limit: 64 },
        LimitEventRecord::Timeout,
    ] {
        assert_valid(&doc, "LimitEventRecord", &event);
    }
    let spec = StepSpec {
        run_id: "0190a1b2-0000-7000-8000-000000000000".into(),
        step: "build".into(),
        command: "make".into(),
        env: [("CC".to_owned(), "gcc".to_owned())].into(),
        rootfs: kiln_core::MirrorInput {
            reference: "busybox@1".parse().unwrap(),
            sha256: digest,
            kind: kiln_core::BlobKind::Tree,
        },
        inputs: vec![git],
        outputs: vec!["bin/hello".into()],
        timeout_secs: 600,
        source_date_epoch: 0,
        resources: kiln_core::ResourceRequest {
            memory_bytes: Some(1 << 30),
            pids: None,
            millicpus: Some(500),
        },
    };
    let mut record = record_for(&spec, Vec::new(), digest, 0);
    record.exit = ExitRecord::TimedOut { after_secs: 600 };
    record.events = vec![LimitEventRecord::Timeout];
    assert_valid(
        &doc,
        "StepReport",
        &v1::StepReport {
            worker_id: "w".into(),
            record,
            claim_next: true,
        },
    );
    let lease = v1::Lease {
        lease_id: "l".into(),
        ttl_secs: 30,
        spec,
    };
    assert_valid(&doc, "Lease", &lease);
    assert_valid(&doc, "ReportAnswer", &v1::ReportAnswer { next: None });
    assert_valid(
        &doc,
        "ErrorView",
        &v1::ErrorView {
            error: "no run x".into(),
            diagnostics: Vec::new(),
        },
    );
    assert_valid(
        &doc,
        "JoinRequest",
        &v1::JoinRequest {
            token: "kiln1-x-y".into(),
            csr_pem: "-----BEGIN CERTIFICATE REQUEST-----".into(),
        },
    );
    assert_valid(
        &doc,
        "RenewRequest",
        &v1::RenewRequest {
            csr_pem: "-----BEGIN CERTIFICATE REQUEST-----".into(),
        },
    );
    assert_valid(
        &doc,
        "Enrolled",
        &v1::Enrolled {
            identity: "0190a1b2-0000-4000-8000-000000000000".into(),
            cert_pem: "-----BEGIN CERTIFICATE-----".into(),
            ca_pem: "-----BEGIN CERTIFICATE-----".into(),
            not_before: 1_700_000_000,
            not_after: 1_700_086_400,
        },
    );
}

/// The schemas are not vacuous: values serde would not produce or accept are refused.
#[test]
fn schemas_refuse_what_serde_refuses() {
    let doc = openapi();
    let mut run = serde_json::to_value(v1::RunView {
        id: "r".into(),
        pipeline_name: "p".into(),
        state: v1::RunState::Running,
        started_at: "2025-01-01T00:00:00Z".into(),
        finished_at: None,
        steps: Vec::new(),
        artifacts: Vec::new(),
    })
    .unwrap();
    assert!(errors(&doc, &component("RunView"), &run).is_empty());
    run["state"] = json!("paused");
    assert!(!errors(&doc, &component("RunView"), &run).is_empty());
    run["state"] = json!("running");
    run.as_object_mut().unwrap().remove("steps");
    assert!(!errors(&doc, &component("RunView"), &run).is_empty());
    let exit = json!({ "status": "exited" });
    assert!(!errors(&doc, &component("ExitRecord"), &exit).is_empty());

    // The hand-written schemas of the two types serialized as strings agree with their parsers.
    let digest = Sha256Digest::of(b"x").to_string();
    for text in [
        digest.as_str(),
        &digest.to_uppercase(),
        &digest[1..],
        &format!("{digest}0"),
        "",
    ] {
        let parses = text.parse::<Sha256Digest>().is_ok();
        let valid = errors(&doc, &component("Sha256Digest"), &json!(text)).is_empty();
        assert_eq!(parses, valid, "Sha256Digest {text:?}");
    }
    let long = "a".repeat(129);
    for text in [
        "busybox@1",
        "gcc-toolchain@12.2.0+deb~1",
        "0.x_y@A",
        "busybox",
        "busybox@",
        "Busybox@1",
        "-x@1",
        "x@-1",
        "x@1 2",
        "x@1@2",
        &format!("{long}@1"),
        &format!("x@{long}"),
        &format!("{}@{}", &long[1..], &long[1..]),
    ] {
        let parses = text.parse::<MirrorRef>().is_ok();
        let valid = errors(&doc, &component("MirrorRef"), &json!(text)).is_empty();
        assert_eq!(parses, valid, "MirrorRef {text:?}");
    }
}

/// Every component schema is a valid JSON Schema 2020-12, and every `$ref` in the document
/// points at a component that exists.
#[test]
fn schemas_are_json_schema_2020_12_and_every_ref_resolves() {
    let doc = openapi();
    assert_eq!(doc["openapi"], "3.1.0");
    for (name, schema) in doc["components"]["schemas"].as_object().unwrap() {
        let mut schema = schema.clone();
        schema["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
        if let Err(e) = jsonschema::meta::validate(&schema) {
            panic!("{name} is not a 2020-12 schema: {e}");
        }
    }
    fn refs<'v>(value: &'v Value, out: &mut Vec<&'v str>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(r)) = map.get("$ref") {
                    out.push(r);
                }
                map.values().for_each(|v| refs(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    refs(&doc, &mut found);
    assert!(!found.is_empty());
    for r in found {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("{r} is not a component reference"));
        assert!(
            doc["components"]["schemas"].get(name).is_some(),
            "{r} resolves to nothing"
        );
    }
    // Every operation names its security and documents at least one success.
    for (method, path, op) in operations(&doc) {
        assert!(op["security"].is_array(), "{method} {path}: no security");
        let statuses = op["responses"].as_object().unwrap();
        assert!(
            statuses.keys().any(|s| s.starts_with('2')),
            "{method} {path}: no 2xx answer"
        );
    }
}
