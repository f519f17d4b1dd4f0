//! kiln's client of the controller's HTTP API (docs/api.md): one typed method per route, over
//! the wire types of [`kiln_core::api::v1`].
//!
//! Blobs move by digest and are verified on the way in: [`Client::download_blob`] hashes every
//! byte as it is written and keeps the file only if the digest of what arrived is the one asked
//! for. Uploads stream a file; the controller re-hashes what it receives.
//!
//! Invariants: knows the API, not the store, the sandbox or the database; transport security is
//! decided in one place ([`TransportSecurity`]); never retries on its own — callers decide,
//! using [`ClientError::is_transient`], because only they know whether a request is idempotent.
#![forbid(unsafe_code)]

pub mod enroll;
mod error;
pub mod fetch;
mod tls;

pub use error::ClientError;
pub use tls::{ClientIdentity, TransportSecurity};

use std::path::Path;
use std::time::Duration;

use kiln_core::Sha256Digest;
use kiln_core::api::v1::{
    Enrolled, ErrorView, Heartbeat, JoinRequest, Lease, LeaseRequest, RegisterWorker, RenewRequest,
    ReportAnswer, RunView, StepReport, SubmitRun, WorkerRegistered,
};
use kiln_core::digest::Sha256Hasher;
use reqwest::{Method, Response, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::AsyncWriteExt as _;

/// How long a JSON request may take in total (blob, log and artifact transfers have no total
/// timeout, only a read timeout).
const JSON_TIMEOUT: Duration = Duration::from_secs(30);
/// The most of an error body that is read to explain a refusal.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// A client of one controller. Cheap to clone; clones share connections.
#[derive(Clone, Debug)]
pub struct Client {
    /// Shared by clones, so that a renewed client certificate ([`Client::set_security`]) is
    /// used by every clone from the next connection on.
    http: std::sync::Arc<std::sync::RwLock<reqwest::Client>>,
    base: Url,
    /// A team's API token, sent as `Authorization: Bearer` with every request.
    token: Option<BearerToken>,
}

/// A team's API token; kept out of `Debug` output.
#[derive(Clone)]
struct BearerToken(std::sync::Arc<str>);

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(..)")
    }
}

/// The answer to a submission.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Submitted {
    /// `201`: a new run.
    Created(RunView),
    /// `200`: the request id was seen before; this is the run it started.
    Existing(RunView),
}

impl Submitted {
    /// The run, new or not.
    pub fn run(&self) -> &RunView {
        match self {
            Self::Created(run) | Self::Existing(run) => run,
        }
    }
}

/// What an upload did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Uploaded {
    /// `201`: the controller stored the blob.
    Created,
    /// `200`: the controller already had it and did not rewrite it.
    AlreadyPresent,
}

impl Client {
    /// A client of the controller at `base_url` (e.g. `http://127.0.0.1:7070`), over plain HTTP.
    pub fn new(base_url: &str) -> Result<Self, ClientError> {
        Self::with_security(base_url, TransportSecurity::PlainHttp)
    }

    /// A client of the controller at `base_url` with the given transport security.
    pub fn with_security(base_url: &str, security: TransportSecurity) -> Result<Self, ClientError> {
        let base = Url::parse(base_url).map_err(|e| ClientError::InvalidUrl {
            url: base_url.into(),
            reason: e.to_string(),
        })?;
        if base.cannot_be_a_base() || base.query().is_some() || base.fragment().is_some() {
            return Err(ClientError::InvalidUrl {
                url: base_url.into(),
                reason: "expected scheme://host:port with no query or fragment".into(),
            });
        }
        security.check_url(&base)?;
        Ok(Self {
            http: std::sync::Arc::new(std::sync::RwLock::new(security.http_client()?)),
            base,
            token: None,
        })
    }

    /// This client, sending `token` (a team's API token, `kiln admin token create`) as
    /// `Authorization: Bearer` with every request.
    pub fn with_token(mut self, token: &str) -> Self {
        self.token = Some(BearerToken(token.trim().into()));
        self
    }

    /// Switches this client and its clones to `security` (a renewed client certificate).
    /// Connections already open finish with the old one.
    pub fn set_security(&self, security: TransportSecurity) -> Result<(), ClientError> {
        security.check_url(&self.base)?;
        let http = security.http_client()?;
        *self.http.write().unwrap_or_else(|e| e.into_inner()) = http;
        Ok(())
    }

    /// The controller's base URL.
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    // ---- teams ----

    /// `POST /v1/runs`. A malformed pipeline is [`ClientError::Http`] with status 400 and one
    /// diagnostic per line; an unresolvable mirror reference is 422.
    pub async fn submit_run(&self, submit: &SubmitRun) -> Result<Submitted, ClientError> {
        const ROUTE: &str = "POST /v1/runs";
        let resp = self
            .send_json(ROUTE, Method::POST, &["runs"], Some(submit))
            .await?;
        let created = resp.status() == StatusCode::CREATED;
        let run = decode(ROUTE, resp).await?;
        Ok(if created {
            Submitted::Created(run)
        } else {
            Submitted::Existing(run)
        })
    }

    /// `GET /v1/runs`: every run, newest first.
    pub async fn list_runs(&self) -> Result<Vec<RunView>, ClientError> {
        const ROUTE: &str = "GET /v1/runs";
        let resp = self
            .send_json::<()>(ROUTE, Method::GET, &["runs"], None)
            .await?;
        decode(ROUTE, resp).await
    }

    /// `GET /v1/runs/{run}`.
    pub async fn get_run(&self, run: &str) -> Result<RunView, ClientError> {
        const ROUTE: &str = "GET /v1/runs/{run}";
        let resp = self
            .send_json::<()>(ROUTE, Method::GET, &["runs", run], None)
            .await?;
        decode(ROUTE, resp).await
    }

    /// `POST /v1/runs/{run}/cancel`: the run, now cancelled. A run that already finished is
    /// [`ClientError::Conflict`].
    pub async fn cancel_run(&self, run: &str) -> Result<RunView, ClientError> {
        const ROUTE: &str = "POST /v1/runs/{run}/cancel";
        let resp = self
            .send_json::<()>(ROUTE, Method::POST, &["runs", run, "cancel"], None)
            .await?;
        decode(ROUTE, resp).await
    }

    /// `GET /v1/runs/{run}/steps/{step}/log`: the step's captured output, once reported.
    pub async fn step_log(&self, run: &str, step: &str) -> Result<Vec<u8>, ClientError> {
        Ok(self.read_log(run, step, 0).await?.bytes)
    }

    /// `GET /v1/runs/{run}/steps/{step}/log?offset=N`: a step's log from byte `offset` on —
    /// what its worker sent so far while it runs, the rest of its final log once it ended.
    pub async fn read_log(
        &self,
        run: &str,
        step: &str,
        offset: u64,
    ) -> Result<LogChunk, ClientError> {
        const ROUTE: &str = "GET /v1/runs/{run}/steps/{step}/log";
        let request = self
            .request(Method::GET, &["runs", run, "steps", step, "log"])
            .query(&[("offset", offset)]);
        let resp = self.send(ROUTE, request).await?;
        let complete = resp
            .headers()
            .get("kiln-log-complete")
            .is_some_and(|v| v.as_bytes() == b"true");
        Ok(LogChunk {
            bytes: body_bytes(ROUTE, resp).await?,
            complete,
        })
    }

    /// `GET /v1/runs/{run}/artifacts/{name}` into `dest` (which must not exist), kept only if
    /// its digest is `expected` (the run's [`kiln_core::api::v1::ArtifactView`] names it).
    pub async fn download_artifact(
        &self,
        run: &str,
        name: &str,
        expected: &Sha256Digest,
        dest: &Path,
    ) -> Result<u64, ClientError> {
        const ROUTE: &str = "GET /v1/runs/{run}/artifacts/{name}";
        let resp = self
            .send(
                ROUTE,
                self.request(Method::GET, &["runs", run, "artifacts", name]),
            )
            .await?;
        save_verified(ROUTE, resp, expected, dest).await
    }

    /// `GET /v1/runs/{run}/artifacts/{name}/provenance`: the `ARTIFACT.intoto.jsonl` text.
    /// Not verified here: that is `kiln verify`'s job, with the signer's public key.
    pub async fn artifact_provenance(&self, run: &str, name: &str) -> Result<String, ClientError> {
        const ROUTE: &str = "GET /v1/runs/{run}/artifacts/{name}/provenance";
        let resp = self
            .send(
                ROUTE,
                self.request(Method::GET, &["runs", run, "artifacts", name, "provenance"]),
            )
            .await?;
        let bytes = body_bytes(ROUTE, resp).await?;
        String::from_utf8(bytes).map_err(|e| ClientError::Decode {
            route: ROUTE,
            source: serde::de::Error::custom(e),
        })
    }

    /// `GET /v1/runs/{run}/attestation`: the finished run's `run.intoto.jsonl` text (any
    /// outcome). Not verified here: that is `kiln verify --run-attestation`'s job.
    pub async fn run_attestation(&self, run: &str) -> Result<String, ClientError> {
        const ROUTE: &str = "GET /v1/runs/{run}/attestation";
        let resp = self
            .send(
                ROUTE,
                self.request(Method::GET, &["runs", run, "attestation"]),
            )
            .await?;
        let bytes = body_bytes(ROUTE, resp).await?;
        String::from_utf8(bytes).map_err(|e| ClientError::Decode {
            route: ROUTE,
            source: serde::de::Error::custom(e),
        })
    }

    // ---- workers ----

    /// `POST /v1/join`: a join token and a CSR for a client certificate.
    pub async fn join(&self, request: &JoinRequest) -> Result<Enrolled, ClientError> {
        const ROUTE: &str = "POST /v1/join";
        let resp = self
            .send_json(ROUTE, Method::POST, &["join"], Some(request))
            .await?;
        decode(ROUTE, resp).await
    }

    /// `POST /v1/renew` (mutual TLS): a new certificate for this worker's identity.
    pub async fn renew(&self, request: &RenewRequest) -> Result<Enrolled, ClientError> {
        const ROUTE: &str = "POST /v1/renew";
        let resp = self
            .send_json(ROUTE, Method::POST, &["renew"], Some(request))
            .await?;
        decode(ROUTE, resp).await
    }

    /// `POST /v1/workers`.
    pub async fn register_worker(
        &self,
        register: &RegisterWorker,
    ) -> Result<WorkerRegistered, ClientError> {
        const ROUTE: &str = "POST /v1/workers";
        let resp = self
            .send_json(ROUTE, Method::POST, &["workers"], Some(register))
            .await?;
        decode(ROUTE, resp).await
    }

    /// `POST /v1/leases`: a step to run, or `None` (`204`) when nothing is ready.
    pub async fn claim_lease(&self, request: &LeaseRequest) -> Result<Option<Lease>, ClientError> {
        const ROUTE: &str = "POST /v1/leases";
        let resp = self
            .send_json(ROUTE, Method::POST, &["leases"], Some(request))
            .await?;
        match resp.status() {
            StatusCode::NO_CONTENT => Ok(None),
            StatusCode::OK | StatusCode::CREATED => decode(ROUTE, resp).await.map(Some),
            other => Err(ClientError::UnexpectedStatus {
                route: ROUTE,
                status: other.as_u16(),
            }),
        }
    }

    /// `POST /v1/leases/{lease}/heartbeat`. [`ClientError::Conflict`] once the lease is gone.
    pub async fn heartbeat(&self, lease: &str, beat: &Heartbeat) -> Result<(), ClientError> {
        const ROUTE: &str = "POST /v1/leases/{lease}/heartbeat";
        self.send_json(
            ROUTE,
            Method::POST,
            &["leases", lease, "heartbeat"],
            Some(beat),
        )
        .await
        .map(drop)
    }

    /// `POST /v1/leases/{lease}/log?worker=ID&offset=N`: appends the running step's output
    /// from byte `offset` on. [`ClientError::Conflict`] when the lease is not current.
    pub async fn append_log(
        &self,
        lease: &str,
        worker_id: &str,
        offset: u64,
        chunk: Vec<u8>,
    ) -> Result<(), ClientError> {
        const ROUTE: &str = "POST /v1/leases/{lease}/log";
        let request = self
            .request(Method::POST, &["leases", lease, "log"])
            .query(&[("worker", worker_id)])
            .query(&[("offset", offset)])
            .timeout(JSON_TIMEOUT)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(chunk);
        self.send(ROUTE, request).await.map(drop)
    }

    /// `POST /v1/leases/{lease}/report`. [`ClientError::Conflict`] when the lease is not (or
    /// no longer) this worker's: the record was refused and the step runs elsewhere.
    ///
    /// With `report.claim_next`, the worker's next lease when the answer carries one (`200
    /// ReportAnswer`); a retried report of an accepted record may carry one too. `None` for
    /// `204` (no `claim_next`, or a controller that predates it).
    pub async fn report(
        &self,
        lease: &str,
        report: &StepReport,
    ) -> Result<Option<Lease>, ClientError> {
        const ROUTE: &str = "POST /v1/leases/{lease}/report";
        let resp = self
            .send_json(
                ROUTE,
                Method::POST,
                &["leases", lease, "report"],
                Some(report),
            )
            .await?;
        match resp.status() {
            StatusCode::NO_CONTENT => Ok(None),
            StatusCode::OK => decode::<ReportAnswer>(ROUTE, resp)
                .await
                .map(|answer| answer.next),
            other => Err(ClientError::UnexpectedStatus {
                route: ROUTE,
                status: other.as_u16(),
            }),
        }
    }

    /// `HEAD /v1/blobs/{sha256}`: whether the controller has the blob. An answer other than
    /// 200 or 404 is an error, so a caller that cannot tell uploads anyway.
    pub async fn has_blob(&self, digest: &Sha256Digest) -> Result<bool, ClientError> {
        const ROUTE: &str = "HEAD /v1/blobs/{sha256}";
        let hex = digest.to_string();
        let resp = self
            .request(Method::HEAD, &["blobs", &hex])
            .timeout(JSON_TIMEOUT)
            .send()
            .await
            .map_err(|source| ClientError::Transport {
                route: ROUTE,
                source,
            })?;
        match resp.status() {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            other => Err(ClientError::UnexpectedStatus {
                route: ROUTE,
                status: other.as_u16(),
            }),
        }
    }

    /// `GET /v1/blobs/{sha256}` into `dest`, which must not exist. Every byte is hashed as it is
    /// written; unless what arrived hashes to `digest` the file is removed and the download
    /// fails with [`ClientError::DigestMismatch`]. Returns the size.
    pub async fn download_blob(
        &self,
        digest: &Sha256Digest,
        dest: &Path,
    ) -> Result<u64, ClientError> {
        const ROUTE: &str = "GET /v1/blobs/{sha256}";
        let hex = digest.to_string();
        let resp = self
            .send(ROUTE, self.request(Method::GET, &["blobs", &hex]))
            .await?;
        save_verified(ROUTE, resp, digest, dest).await
    }

    /// `PUT /v1/blobs/{sha256}`, streaming the file at `src`. The controller hashes what it
    /// receives and refuses (422) bytes that are not `digest`'s.
    pub async fn upload_blob(
        &self,
        digest: &Sha256Digest,
        src: &Path,
    ) -> Result<Uploaded, ClientError> {
        const ROUTE: &str = "PUT /v1/blobs/{sha256}";
        let file_error = |source| ClientError::File {
            path: src.to_path_buf(),
            source,
        };
        let file = tokio::fs::File::open(src).await.map_err(file_error)?;
        let len = file.metadata().await.map_err(file_error)?.len();
        let hex = digest.to_string();
        let request = self
            .request(Method::PUT, &["blobs", &hex])
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .header(reqwest::header::CONTENT_LENGTH, len)
            .body(reqwest::Body::from(file));
        let resp = self.send(ROUTE, request).await?;
        match resp.status() {
            StatusCode::CREATED => Ok(Uploaded::Created),
            StatusCode::OK | StatusCode::NO_CONTENT => Ok(Uploaded::AlreadyPresent),
            other => Err(ClientError::UnexpectedStatus {
                route: ROUTE,
                status: other.as_u16(),
            }),
        }
    }

    // ---- plumbing ----

    /// The URL of `/v1/<segments...>`, each segment percent-encoded.
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("checked in with_security: the base URL can be a base")
            .pop_if_empty()
            .push("v1")
            .extend(segments);
        url
    }

    fn request(&self, method: Method, segments: &[&str]) -> reqwest::RequestBuilder {
        let http = self.http.read().unwrap_or_else(|e| e.into_inner()).clone();
        let request = http.request(method, self.url(segments));
        match &self.token {
            Some(BearerToken(token)) => request.bearer_auth(token),
            None => request,
        }
    }

    async fn send_json<B: Serialize>(
        &self,
        route: &'static str,
        method: Method,
        segments: &[&str],
        body: Option<&B>,
    ) -> Result<Response, ClientError> {
        let mut request = self
            .request(method, segments)
            .timeout(JSON_TIMEOUT)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(body) = body {
            request = request.json(body);
        }
        self.send(route, request).await
    }

    /// Sends a request; a non-success status becomes the matching [`ClientError`].
    async fn send(
        &self,
        route: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<Response, ClientError> {
        let resp = request
            .send()
            .await
            .map_err(|source| ClientError::Transport { route, source })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let view = error_view(resp).await;
        tracing::debug!(route, status = status.as_u16(), error = %view.error, "request refused");
        Err(if status == StatusCode::CONFLICT {
            ClientError::Conflict {
                route,
                error: view.error,
            }
        } else {
            ClientError::Http {
                route,
                status: status.as_u16(),
                error: view.error,
                diagnostics: view.diagnostics,
            }
        })
    }
}

/// Part of a step's log, from [`Client::read_log`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogChunk {
    pub bytes: Vec<u8>,
    /// Nothing follows: the step ended and this reaches the end of its log.
    pub complete: bool,
}

/// The controller's explanation of a refusal: its `ErrorView`, else the start of the body as
/// text, else the status's reason phrase.
async fn error_view(mut resp: Response) -> ErrorView {
    let status = resp.status();
    let mut body = Vec::new();
    while body.len() < MAX_ERROR_BODY {
        match resp.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    body.truncate(MAX_ERROR_BODY);
    if let Ok(view) = serde_json::from_slice::<ErrorView>(&body) {
        return view;
    }
    let text = String::from_utf8_lossy(&body).trim().to_string();
    ErrorView {
        error: if text.is_empty() {
            status
                .canonical_reason()
                .unwrap_or("no explanation")
                .to_lowercase()
        } else {
            text
        },
        diagnostics: Vec::new(),
    }
}

async fn body_bytes(route: &'static str, resp: Response) -> Result<Vec<u8>, ClientError> {
    resp.bytes()
        .await
        .map(|b| b.to_vec())
        .map_err(|source| ClientError::Transport { route, source })
}

async fn decode<T: DeserializeOwned>(
    route: &'static str,
    resp: Response,
) -> Result<T, ClientError> {
    let bytes = body_bytes(route, resp).await?;
    serde_json::from_slice(&bytes).map_err(|source| ClientError::Decode { route, source })
}

/// Streams a response body into a new file at `dest`, hashing it; keeps the file only if the
/// digest is `expected`.
async fn save_verified(
    route: &'static str,
    resp: Response,
    expected: &Sha256Digest,
    dest: &Path,
) -> Result<u64, ClientError> {
    let file_error = |source| ClientError::File {
        path: dest.to_path_buf(),
        source,
    };
    // create_new: never follow a symlink planted at `dest`, never clobber a file.
    let file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dest)
        .await
        .map_err(file_error)?;
    let result = write_hashing(route, resp, file, dest)
        .await
        .and_then(|(actual, size)| {
            if actual == *expected {
                Ok(size)
            } else {
                Err(ClientError::DigestMismatch {
                    expected: *expected,
                    actual,
                    size,
                })
            }
        });
    if result.is_err()
        && let Err(err) = tokio::fs::remove_file(dest).await
    {
        tracing::warn!(dest = %dest.display(), %err, "cannot remove a refused download");
    }
    result
}

async fn write_hashing(
    route: &'static str,
    mut resp: Response,
    mut file: tokio::fs::File,
    dest: &Path,
) -> Result<(Sha256Digest, u64), ClientError> {
    let file_error = |source| ClientError::File {
        path: dest.to_path_buf(),
        source,
    };
    let mut hasher = Sha256Hasher::default();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|source| ClientError::Transport { route, source })?
    {
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(file_error)?;
    }
    file.flush().await.map_err(file_error)?;
    file.sync_all().await.map_err(file_error)?;
    Ok(hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_percent_encode_each_segment() {
        let client = Client::new("http://127.0.0.1:7070/").unwrap();
        let url = client.url(&["runs", "r/1", "steps", "a b", "log"]);
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:7070/v1/runs/r%2F1/steps/a%20b/log"
        );
    }

    #[test]
    fn a_base_path_prefix_is_kept() {
        let client = Client::new("http://localhost:7070/kiln").unwrap();
        assert_eq!(
            client.url(&["runs"]).as_str(),
            "http://localhost:7070/kiln/v1/runs"
        );
    }

    #[test]
    fn https_without_the_controller_ca_is_refused() {
        let err = Client::new("https://127.0.0.1:7070").unwrap_err();
        assert!(matches!(err, ClientError::InvalidUrl { .. }), "{err}");
    }

    #[test]
    fn a_url_with_a_query_is_refused() {
        assert!(Client::new("http://127.0.0.1:1/?x=1").is_err());
        assert!(Client::new("not a url").is_err());
        assert!(Client::new("ftp://127.0.0.1/").is_err());
    }

    #[test]
    fn transient_errors_are_server_errors_and_throttling_only() {
        let http = |status| ClientError::Http {
            route: "GET /v1/runs",
            status,
            error: String::new(),
            diagnostics: Vec::new(),
        };
        assert!(http(503).is_transient());
        assert!(http(429).is_transient());
        assert!(!http(400).is_transient());
        assert!(!http(404).is_transient());
        let conflict = ClientError::Conflict {
            route: "POST /v1/leases/{lease}/report",
            error: String::new(),
        };
        assert!(!conflict.is_transient());
        assert_eq!(conflict.status(), Some(409));
    }
}
