//! Errors at the HTTP boundary: a status and an [`ErrorView`] body.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kiln_core::api::v1::ErrorView;

use crate::dispatch::{LeaseError, SubmitError};
use crate::run::AcceptError;
use crate::state::StateError;

/// A refused or failed request.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub view: ErrorView,
}

impl ApiError {
    pub fn new(status: StatusCode, error: impl Into<String>) -> Self {
        Self {
            status,
            view: ErrorView {
                error: error.into(),
                diagnostics: Vec::new(),
            },
        }
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, what)
    }

    /// A failure of the daemon itself: logged in full, answered with 500.
    pub fn internal(err: &(dyn std::error::Error + 'static)) -> Self {
        let message = one_line(err);
        tracing::error!(error = %message, "request failed");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.view)).into_response()
    }
}

/// An error and its causes on one line.
pub fn one_line(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![err.to_string()];
    let mut source = err.source();
    while let Some(e) = source {
        parts.push(e.to_string());
        source = e.source();
    }
    parts.join(": ")
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        Self::new(rejection.status(), rejection.body_text())
    }
}

impl From<StateError> for ApiError {
    fn from(err: StateError) -> Self {
        Self::internal(&err)
    }
}

impl From<SubmitError> for ApiError {
    fn from(err: SubmitError) -> Self {
        match err {
            SubmitError::Malformed(diagnostics) => Self {
                status: StatusCode::BAD_REQUEST,
                view: ErrorView {
                    error: format!(
                        "the pipeline is malformed ({} diagnostic(s))",
                        diagnostics.len()
                    ),
                    diagnostics: diagnostics.iter().map(|d| d.to_string()).collect(),
                },
            },
            SubmitError::Refused(AcceptError::State(e)) | SubmitError::State(e) => e.into(),
            SubmitError::Refused(e) => Self::new(StatusCode::UNPROCESSABLE_ENTITY, one_line(&e)),
            e @ (SubmitError::RequestIdReused { .. } | SubmitError::RequestIdTaken { .. }) => {
                Self::new(StatusCode::CONFLICT, one_line(&e))
            }
        }
    }
}

impl From<LeaseError> for ApiError {
    fn from(err: LeaseError) -> Self {
        let status = match &err {
            LeaseError::UnknownWorker { .. } => StatusCode::NOT_FOUND,
            LeaseError::NotCurrent { .. } => StatusCode::CONFLICT,
            LeaseError::MissingBlob { .. } | LeaseError::WrongStep { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            LeaseError::Spec { .. } | LeaseError::State(_) => return Self::internal(&err),
        };
        Self::new(status, one_line(&err))
    }
}
