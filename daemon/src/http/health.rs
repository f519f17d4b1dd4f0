//! Probes and metrics: `GET /healthz`, `GET /readyz`, `GET /metrics` (docs/api.md,
//! "Observability").
//!
//! Open on both listeners: no team token, and under `--tls` no client certificate, so that a
//! load balancer, an orchestrator's probes and a Prometheus server can reach them. They answer
//! counts and one-line reasons only, never run, step or worker ids.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::App;
use super::error::one_line;

/// How long `/readyz` waits for the database before calling it unready.
const DB_TIMEOUT: Duration = Duration::from_secs(2);

/// The probe and metrics routes.
pub fn routes() -> Router<App> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

/// `200` whenever the process serves requests.
async fn healthz() -> Response {
    text(StatusCode::OK, "ok\n".into())
}

/// `200` when the state database answers a query and the blob store takes a write; `503` with
/// a one-line reason otherwise.
async fn readyz(State(app): State<App>) -> Response {
    match ready(&app).await {
        Ok(()) => text(StatusCode::OK, "ready\n".into()),
        Err(reason) => {
            tracing::warn!(%reason, "not ready");
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {reason}\n"),
            )
        }
    }
}

async fn ready(app: &App) -> Result<(), String> {
    match tokio::time::timeout(DB_TIMEOUT, app.controller().state().ping()).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => {
            return Err(format!(
                "state database does not answer: {}",
                one_line(&err)
            ));
        }
        Err(_) => {
            return Err(format!(
                "state database does not answer within {}s",
                DB_TIMEOUT.as_secs()
            ));
        }
    }
    // Blobs are written to the store's tmp/ and renamed into place: probe the same directory.
    let tmp = app.controller().store().root().join("tmp");
    let probe = tmp.join(format!(".readyz-{}", uuid::Uuid::new_v4()));
    tokio::task::spawn_blocking(move || {
        use std::io::Write as _;
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&probe)
            .and_then(|mut f| f.write_all(b"ready\n"));
        let _ = std::fs::remove_file(&probe);
        written.map_err(|err| format!("blob store {} is not writable: {err}", tmp.display()))
    })
    .await
    .map_err(|err| format!("cannot probe the blob store: {err}"))?
}

/// The metrics as OpenMetrics text; `503` when the database does not answer (the gauges come
/// from it).
async fn metrics(State(app): State<App>) -> Response {
    let rendered = app
        .metrics()
        .render(app.controller().state(), app.now(), app.config().lease_ttl)
        .await;
    match rendered {
        Ok(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
            body,
        )
            .into_response(),
        Err(err) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot read the state database: {}\n", one_line(&err)),
        ),
    }
}
