//! Step logs while they run: a worker appends its running step's output under its lease
//! (`POST /v1/leases/{lease}/log?worker=ID&offset=N`), a team reads a step's log from an offset
//! on (`GET /v1/runs/{run}/steps/{step}/log?offset=N`) — the live chunks while the step runs,
//! its content-addressed log once its record is accepted. `kiln logs --follow` polls the
//! latter; the `Kiln-Log-Complete` header says when there is nothing more to wait for.

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use schemars::JsonSchema;
use serde::Deserialize;

use super::error::ApiError;
use super::teams::Team;
use super::{App, Gate, Peer, TeamExt, blobs, check_owner, check_team};
use crate::state::{LiveAppend, StepLogSource};

/// The most of one lease's live log the controller keeps (the final log has no such cap).
pub const LIVE_LOG_CAP: u64 = 64 << 20;
/// The largest chunk a worker may send at once.
pub const LIVE_CHUNK_MAX: usize = 1 << 20;

/// Whether the body is the whole rest of the log (`true`) or more may come (`false`).
pub const COMPLETE_HEADER: &str = "kiln-log-complete";
/// The log offset of the body's first byte.
pub const OFFSET_HEADER: &str = "kiln-log-offset";

/// The query of [`append`]; docs/openapi.json lists its fields as the route's parameters.
#[derive(Deserialize, JsonSchema)]
pub struct AppendQuery {
    /// The worker id that holds the lease.
    worker: String,
    /// The log offset of the body's first byte.
    offset: u64,
}

/// `POST /v1/leases/{lease}/log`: `204`, `409` for a lease that is not the worker's or not
/// current, `416` with the held length for a gap, `413` past [`LIVE_LOG_CAP`].
pub async fn append(
    State(app): State<App>,
    gate: Gate,
    peer: Peer,
    Path(lease): Path<String>,
    Query(query): Query<AppendQuery>,
    body: Bytes,
) -> Result<Response, ApiError> {
    check_owner(&gate, &peer, &query.worker).await?;
    if body.len() > LIVE_CHUNK_MAX {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a log chunk is at most {LIVE_CHUNK_MAX} bytes"),
        ));
    }
    let outcome = app
        .controller()
        .state()
        .append_live_log(
            &lease,
            &query.worker,
            query.offset,
            &body,
            app.now(),
            LIVE_LOG_CAP,
        )
        .await?;
    let len_header = |len: u64| [(OFFSET_HEADER, len.to_string())];
    Ok(match outcome {
        LiveAppend::Stored { len } => (StatusCode::NO_CONTENT, len_header(len)).into_response(),
        LiveAppend::Gap { len } => (
            StatusCode::RANGE_NOT_SATISFIABLE,
            len_header(len),
            format!("the live log is {len} bytes long; send from there"),
        )
            .into_response(),
        LiveAppend::TooLarge { cap } => {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the live log is capped at {cap} bytes; the final log keeps the rest"),
            ));
        }
        LiveAppend::NotCurrent => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("lease {lease} is not current for worker {}", query.worker),
            ));
        }
    })
}

/// The query of [`read`]; docs/openapi.json lists its fields as the route's parameters.
#[derive(Deserialize, JsonSchema)]
pub struct ReadQuery {
    /// The first byte of the log to answer (default 0); past the end, an empty body.
    #[serde(default)]
    offset: u64,
}

/// `GET /v1/runs/{run}/steps/{step}/log?offset=N`.
pub async fn read(
    State(app): State<App>,
    Extension(Team(team)): TeamExt,
    Path((run, step)): Path<(String, String)>,
    Query(query): Query<ReadQuery>,
) -> Result<Response, ApiError> {
    check_team(&app, &team, &run).await?;
    let source = app
        .controller()
        .state()
        .step_log_source(&run, &step, query.offset)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("run {run} has no step {step}")))?;
    let (mut response, complete) = match source {
        StepLogSource::NotStarted => (Vec::new().into_response(), false),
        StepLogSource::Live(live) => (live.bytes.into_response(), false),
        StepLogSource::Final(None) => (Vec::new().into_response(), true),
        StepLogSource::Final(Some(digest)) => (
            blobs::get_from(
                app.controller().clone(),
                digest,
                query.offset,
                "application/octet-stream",
            )
            .await?,
            true,
        ),
    };
    let headers = response.headers_mut();
    headers.insert(
        COMPLETE_HEADER,
        HeaderValue::from_static(if complete { "true" } else { "false" }),
    );
    headers.insert(OFFSET_HEADER, HeaderValue::from(query.offset));
    Ok(response)
}
