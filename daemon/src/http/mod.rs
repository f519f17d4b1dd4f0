//! The daemon's HTTP API (docs/api.md): a thin axum front over the [`Dispatcher`].
//!
//! [`router`] builds every route in one place, so another acceptor (mutual TLS) can serve the
//! same router; [`Server::serve`] is the plain-TCP acceptor plus the background tick that
//! expires leases.
//!
//! With `--tls` ([`Server::serve_tls`], [`tls`]) the same router runs behind tokio-rustls and
//! the worker routes (`/v1/workers`, `/v1/leases/*`, blob `PUT`) need a client certificate from
//! the daemon's CA ([`WorkerAuth::ClientCert`]).
//!
//! Team routes (`/v1/runs*`) need a team's bearer token in both modes ([`teams`]); a team
//! sees only its own runs.
//!
//! `/healthz`, `/readyz` and `/metrics` ([`health`]) are open in both modes: no token, no
//! client certificate.
//!
//! [`openapi`] describes every route here as OpenAPI 3.1 (docs/openapi.json); a route added
//! here without an entry there fails daemon/tests/openapi.rs.
//!
//! Deliberately absent in this increment: log streaming while a step runs.

mod blobs;
pub mod enroll;
mod error;
mod health;
mod logs;
pub mod openapi;
pub mod teams;
pub mod tls;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json};
use kiln_core::api::v1;
use tokio::net::TcpListener;

pub use error::ApiError;
pub use teams::Team;
pub use tls::{PeerIdentity, WorkerAuth};

use crate::controller::{Controller, ControllerError};
use crate::dispatch::{DispatchConfig, Dispatcher, Submitted};

/// Size limits of request bodies.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimits {
    /// JSON bodies (submissions, reports).
    pub json_bytes: usize,
    /// One uploaded blob (a rootfs tarball is ~200 MB).
    pub blob_bytes: u64,
}

impl Default for BodyLimits {
    fn default() -> Self {
        Self {
            json_bytes: 16 << 20,
            blob_bytes: 16 << 30,
        }
    }
}

/// How to run a daemon.
#[derive(Clone)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    /// Where the state lives; `None`: the data dir's `state.sqlite`.
    pub database: Option<crate::state::Database>,
    /// Sign with this PKCS#8 PEM key instead of the data dir's.
    pub key: Option<PathBuf>,
    pub dispatch: DispatchConfig,
    pub limits: BodyLimits,
    /// How often leases are expired and finished runs published.
    pub tick: Duration,
}

impl ServerConfig {
    /// Defaults for everything but the data dir.
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            database: None,
            key: None,
            dispatch: DispatchConfig::default(),
            limits: BodyLimits::default(),
            tick: Duration::from_secs(1),
        }
    }
}

/// Why the daemon could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot open the data dir {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: ControllerError,
    },
    #[error("cannot load the signing key")]
    Key(#[source] ControllerError),
    #[error("cannot serve HTTP")]
    Serve(#[source] std::io::Error),
    #[error("cannot open the daemon's CA")]
    Pki(#[source] crate::pki::PkiError),
    #[error("cannot set up TLS")]
    Tls(#[source] tls::TlsSetupError),
}

/// A daemon with its data dir open, ready to serve.
#[derive(Debug)]
pub struct Server {
    data_dir: PathBuf,
    dispatcher: Arc<Dispatcher>,
    limits: BodyLimits,
    tick: Duration,
}

impl Server {
    /// Opens (creating if needed) the data dir and the signing key.
    pub async fn open(config: ServerConfig) -> Result<Self, ServerError> {
        let controller = Controller::open_with(&config.data_dir, config.database.as_ref())
            .await
            .map_err(|source| ServerError::Open {
                path: config.data_dir.clone(),
                source,
            })?;
        let key = controller
            .signing_key(config.key.as_deref())
            .map_err(ServerError::Key)?;
        let dispatcher = Dispatcher::new(Arc::new(controller), key, config.dispatch);
        Ok(Self {
            data_dir: config.data_dir,
            dispatcher: Arc::new(dispatcher),
            limits: config.limits,
            tick: config.tick,
        })
    }

    pub fn dispatcher(&self) -> &Arc<Dispatcher> {
        &self.dispatcher
    }

    /// Every route of the API over plain HTTP: worker routes unauthenticated (loopback), team
    /// routes behind team tokens.
    pub fn router(&self) -> Router {
        router(self.dispatcher.clone(), self.limits, WorkerAuth::None)
    }

    /// Like [`Self::serve`], over TLS with a server certificate for `names` from the data
    /// dir's CA (made on first use); worker routes need a client certificate from that CA.
    pub async fn serve_tls(
        self,
        listener: TcpListener,
        names: &[String],
        cert_lifetime: Duration,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let pki = crate::pki::Pki::open_or_create(&self.data_dir).map_err(ServerError::Pki)?;
        let config = tls::server_config(&pki, names).map_err(ServerError::Tls)?;
        let gate = enroll::WorkerGate {
            pki,
            enrollment: crate::pki::Enrollment::new(self.dispatcher.controller().state().clone()),
            cert_lifetime,
        };
        let router = router(
            self.dispatcher.clone(),
            self.limits,
            WorkerAuth::ClientCert(Arc::new(gate)),
        );
        self.serve_with(shutdown, move |shutdown| {
            tls::serve(listener, config, router, shutdown)
        })
        .await
    }

    /// Resumes (expires what expired while stopped, publishes runs that finished), then serves
    /// `listener` and ticks every `tick` until `shutdown` completes; then closes the database.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let router = self.router();
        self.serve_with(shutdown, move |shutdown| async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await
        })
        .await
    }

    /// Resumes, ticks and runs `accept` (an acceptor serving until its shutdown future
    /// completes), then closes the database.
    async fn serve_with<S, F, A>(self, shutdown: S, accept: A) -> Result<(), ServerError>
    where
        S: Future<Output = ()> + Send + 'static,
        A: FnOnce(Shutdown) -> F,
        F: Future<Output = std::io::Result<()>>,
    {
        if let Err(err) = self.dispatcher.tick().await {
            tracing::error!(error = %error::one_line(&err), "cannot resume");
        }
        // Live logs of leases that ended while no daemon ran (expired, or reported then
        // crashed before the live copy was dropped).
        if let Err(err) = self.dispatcher.controller().state().sweep_live_logs().await {
            tracing::warn!(error = %err, "cannot sweep live logs");
        }
        let ticker = {
            let dispatcher = self.dispatcher.clone();
            let period = self.tick;
            tokio::spawn(async move {
                let mut interval = tokio::time::interval(period);
                interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    interval.tick().await;
                    if let Err(err) = dispatcher.tick().await {
                        tracing::error!(error = %error::one_line(&err), "lease tick failed");
                    }
                }
            })
        };
        // Waiting claims answer at once when shutdown begins; it waits for open requests.
        let dispatcher = self.dispatcher.clone();
        let served = accept(Box::pin(async move {
            shutdown.await;
            dispatcher.stop_waiting();
        }))
        .await;
        ticker.abort();
        let _ = ticker.await;
        self.dispatcher.controller().state().close().await;
        tracing::info!("daemon stopped");
        served.map_err(ServerError::Serve)
    }
}

type App = Arc<Dispatcher>;

/// The future an acceptor serves until.
type Shutdown = std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// The API's routes over `dispatcher`; `auth` decides who may use the worker routes.
pub fn router(dispatcher: Arc<Dispatcher>, limits: BodyLimits, auth: WorkerAuth) -> Router {
    let blob_limit = limits.blob_bytes;
    let upload = put(
        move |State(app): State<App>, Path(sha): Path<String>, body: Body| async move {
            let digest = blobs::parse_digest(&sha)?;
            blobs::put(app.controller().clone(), digest, body, blob_limit).await
        },
    );
    let workers = Router::new()
        .route("/v1/workers", post(register_worker))
        .route("/v1/leases", post(claim_lease))
        .route("/v1/leases/{lease}/heartbeat", post(heartbeat))
        .route("/v1/leases/{lease}/report", post(report))
        .route(
            "/v1/leases/{lease}/log",
            post(logs::append).layer(DefaultBodyLimit::max(logs::LIVE_CHUNK_MAX)),
        );
    let (workers, upload, enrollment) = match &auth {
        WorkerAuth::None => (workers, upload, Router::new()),
        WorkerAuth::ClientCert(gate) => (
            workers
                .layer(axum::Extension(gate.clone()))
                .route_layer(axum::middleware::from_fn(tls::require_worker)),
            upload.route_layer(axum::middleware::from_fn(tls::require_worker)),
            Router::new()
                .route(
                    "/v1/renew",
                    post(enroll::renew).route_layer(axum::middleware::from_fn(tls::require_worker)),
                )
                .route("/v1/join", post(enroll::join))
                .with_state(gate.clone()),
        ),
    };
    let team_routes = Router::new()
        .route("/v1/runs", post(submit_run).get(list_runs))
        .route("/v1/runs/{run}", get(show_run))
        .route("/v1/runs/{run}/cancel", post(cancel_run))
        .route("/v1/runs/{run}/attestation", get(run_attestation))
        .route("/v1/runs/{run}/steps/{step}/log", get(logs::read))
        .route("/v1/runs/{run}/artifacts/{name}", get(artifact))
        .route(
            "/v1/runs/{run}/artifacts/{name}/provenance",
            get(provenance),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            dispatcher.clone(),
            teams::require_team,
        ));
    let open = Router::new().route("/v1/blobs/{sha256}", get(get_blob).head(head_blob));
    let open = match auth {
        WorkerAuth::None => open,
        WorkerAuth::ClientCert(_) => {
            open.route_layer(axum::middleware::from_fn(tls::require_local_or_worker))
        }
    };
    open.route("/v1/blobs/{sha256}", upload)
        .merge(health::routes())
        .merge(team_routes)
        .merge(workers)
        .merge(enrollment)
        .layer(DefaultBodyLimit::max(limits.json_bytes))
        .with_state(dispatcher)
}

type TeamExt = Extension<Team>;

fn no_run(run: &str) -> ApiError {
    ApiError::not_found(format!("no run {run}"))
}

/// `404` unless `team` submitted `run`: another team's run looks like an unknown one.
async fn check_team(app: &App, team: &str, run: &str) -> Result<(), ApiError> {
    if app.owns(team, run).await? {
        Ok(())
    } else {
        Err(no_run(run))
    }
}

async fn submit_run(
    State(app): State<App>,
    Extension(Team(team)): TeamExt,
    body: Result<Json<v1::SubmitRun>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body?;
    let (status, run_id) = match app.submit_for(&team, &req).await? {
        Submitted::Created { run_id } => (StatusCode::CREATED, run_id),
        Submitted::Existing { run_id } => (StatusCode::OK, run_id),
    };
    let view = app
        .run_view(&run_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no run {run_id}")))?;
    Ok((status, Json(view)).into_response())
}

async fn list_runs(
    State(app): State<App>,
    Extension(Team(team)): TeamExt,
) -> Result<Json<Vec<v1::RunView>>, ApiError> {
    Ok(Json(app.run_views_for(&team).await?))
}

async fn show_run(
    State(app): State<App>,
    Extension(Team(team)): TeamExt,
    Path(run): Path<String>,
) -> Result<Json<v1::RunView>, ApiError> {
    app.run_view_for(&team, &run)
        .await?
        .map(Json)
        .ok_or_else(|| no_run(&run))
}

/// `POST /v1/runs/{run}/cancel`: the cancelled run; `409` if it had already finished.
async fn cancel_run(
    State(app): State<App>,
    Extension(Team(team)): TeamExt,
    Path(run): Path<String>,
) -> Result<Json<v1::RunView>, ApiError> {
    use crate::state::CancelOutcome;
    match app.cancel_for(&team, &run).await? {
        CancelOutcome::Unknown => return Err(no_run(&run)),
        CancelOutcome::AlreadyFinished => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("run {run} has already finished"),
            ));
        }
        CancelOutcome::Cancelled => {}
    }
    app.run_view(&run)
        .await?
        .map(Json)
        .ok_or_else(|| no_run(&run))
}

/// `GET /v1/runs/{run}/attestation`: the finished run's signed run attestation
/// (`run.intoto.jsonl`, docs/run-attestation.md); `404` while it runs.
async fn run_attestation(
    State(app): State<App>,
    Extension(Team(team)): TeamExt,
    Path(run): Path<String>,
) -> Result<Response, ApiError> {
    check_team(&app, &team, &run).await?;
    let digest = app
        .run_attestation_for(&team, &run)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("run {run} has no run attestation yet")))?;
    blobs::get(app.controller().clone(), digest, "application/jsonl").await
}

async fn artifact(
    State(app): State<App>,
    Extension(Team(team)): TeamExt,
    Path((run, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    check_team(&app, &team, &run).await?;
    let (digest, _) = published(&app, &run, &name).await?;
    blobs::get(app.controller().clone(), digest, "application/octet-stream").await
}

async fn provenance(
    State(app): State<App>,
    Extension(Team(team)): TeamExt,
    Path((run, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    check_team(&app, &team, &run).await?;
    let (_, digest) = published(&app, &run, &name).await?;
    blobs::get(app.controller().clone(), digest, "application/jsonl").await
}

async fn published(
    app: &App,
    run: &str,
    name: &str,
) -> Result<(kiln_core::Sha256Digest, kiln_core::Sha256Digest), ApiError> {
    app.controller()
        .state()
        .artifact(run, name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("run {run} has no published artifact {name}")))
}

/// The TLS mode's gate and the connection's identity, when serving TLS.
type Gate = Option<Extension<Arc<enroll::WorkerGate>>>;
type Peer = Option<Extension<PeerIdentity>>;

/// Under TLS, `403` unless the connection's certificate registered `worker_id`.
async fn check_owner(gate: &Gate, peer: &Peer, worker_id: &str) -> Result<(), ApiError> {
    match gate {
        Some(Extension(gate)) => {
            gate.check_owner(peer.as_ref().map(|Extension(p)| p), worker_id)
                .await
        }
        None => Ok(()),
    }
}

async fn register_worker(
    State(app): State<App>,
    gate: Gate,
    peer: Peer,
    body: Result<Json<v1::RegisterWorker>, JsonRejection>,
) -> Result<Json<v1::WorkerRegistered>, ApiError> {
    let Json(req) = body?;
    let malformed = req
        .labels
        .iter()
        .find_map(|(k, v)| kiln_core::labels::label_problem(k, v));
    if let Some(problem) = malformed.or_else(|| {
        (req.labels.len() > kiln_core::labels::MAX_LABELS)
            .then(|| format!("at most {} labels", kiln_core::labels::MAX_LABELS))
    }) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, problem));
    }
    let worker_id = app.register(&req).await?;
    app.metrics().worker_seen(&worker_id, app.now());
    if let Some(Extension(gate)) = &gate {
        let identity = peer
            .and_then(|Extension(p)| p.worker)
            .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "no client certificate"))?;
        gate.enrollment
            .bind_worker(&worker_id, &identity)
            .await
            .map_err(|e| ApiError::internal(&e))?;
    }
    Ok(Json(v1::WorkerRegistered { worker_id }))
}

async fn claim_lease(
    State(app): State<App>,
    gate: Gate,
    peer: Peer,
    body: Result<Json<v1::LeaseRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body?;
    check_owner(&gate, &peer, &req.worker_id).await?;
    let wait = std::time::Duration::from_millis(req.wait_ms.unwrap_or(0));
    let claimed = app.claim_waiting(&req.worker_id, wait).await?;
    app.metrics().worker_seen(&req.worker_id, app.now());
    Ok(match claimed {
        Some(lease) => Json(lease).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    })
}

async fn heartbeat(
    State(app): State<App>,
    gate: Gate,
    peer: Peer,
    Path(lease): Path<String>,
    body: Result<Json<v1::Heartbeat>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let Json(req) = body?;
    check_owner(&gate, &peer, &req.worker_id).await?;
    app.heartbeat(&lease, &req.worker_id).await?;
    app.metrics().worker_seen(&req.worker_id, app.now());
    Ok(StatusCode::NO_CONTENT)
}

/// `204`, or with `claim_next` a `200 ReportAnswer` carrying what `POST /v1/leases` would
/// have handed the same worker (the id `check_owner` let through, as the claim route does).
async fn report(
    State(app): State<App>,
    gate: Gate,
    peer: Peer,
    Path(lease): Path<String>,
    body: Result<Json<v1::StepReport>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body?;
    check_owner(&gate, &peer, &req.worker_id).await?;
    if !req.claim_next {
        app.report(&lease, &req).await?;
        app.metrics().worker_seen(&req.worker_id, app.now());
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    // A refused report returns here: it never claims, nor counts as a claim.
    let started = std::time::Instant::now();
    let next = app.report_then_claim(&lease, &req).await?;
    app.metrics().claim_handled(started.elapsed());
    app.metrics().worker_seen(&req.worker_id, app.now());
    Ok(Json(v1::ReportAnswer { next }).into_response())
}

async fn get_blob(State(app): State<App>, Path(sha): Path<String>) -> Result<Response, ApiError> {
    let digest = blobs::parse_digest(&sha)?;
    blobs::get(app.controller().clone(), digest, "application/octet-stream").await
}

/// `HEAD /v1/blobs/{sha256}`: whether the store has the blob (without re-hashing it), so an
/// uploader can skip it.
async fn head_blob(State(app): State<App>, Path(sha): Path<String>) -> Result<Response, ApiError> {
    let digest = blobs::parse_digest(&sha)?;
    blobs::head(app.controller(), &digest)
}
