//! Worker enrollment over TLS: `POST /v1/join` (join token + CSR → client certificate) and
//! `POST /v1/renew` (mutual TLS + CSR → a new certificate for the same identity), and the
//! check that binds worker ids to certificate identities.
//!
//! Only the CSR's public key is used: whatever names or extensions it asks for, the certificate
//! names the identity the daemon chose (`spiffe://kiln/worker/<uuid>`), for client auth only.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use kiln_core::api::v1;
use time::OffsetDateTime;

use super::error::ApiError;
use super::tls::PeerIdentity;
use crate::pki::{EnrollError, Enrollment, Pki};

/// Clock skew tolerated between the daemon and its workers.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// What the TLS mode needs beyond the dispatcher: the CA, the enrollment tables and how long
/// worker certificates live.
pub struct WorkerGate {
    pub pki: Pki,
    pub enrollment: Enrollment,
    pub cert_lifetime: Duration,
}

impl std::fmt::Debug for WorkerGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerGate")
            .field("pki", &self.pki)
            .field("cert_lifetime", &self.cert_lifetime)
            .finish_non_exhaustive()
    }
}

impl WorkerGate {
    fn issue(&self, identity: &str, csr_pem: &str) -> Result<v1::Enrolled, ApiError> {
        let csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("the CSR does not parse or its signature does not verify: {e}"),
            )
        })?;
        let now = OffsetDateTime::now_utc();
        let not_before = now - BACKDATE;
        let not_after = now + self.cert_lifetime;
        let cert_pem = self
            .pki
            .issue_worker(identity, &csr.public_key, not_before, not_after)
            .map_err(|e| ApiError::internal(&e))?;
        tracing::info!(identity, not_after = %not_after, "worker certificate issued");
        Ok(v1::Enrolled {
            identity: identity.to_owned(),
            cert_pem,
            ca_pem: self.pki.ca_pem().to_owned(),
            not_before: not_before.unix_timestamp(),
            not_after: not_after.unix_timestamp(),
        })
    }

    /// `403` unless the connection's certificate identity registered `worker_id`.
    pub async fn check_owner(
        &self,
        peer: Option<&PeerIdentity>,
        worker_id: &str,
    ) -> Result<(), ApiError> {
        let Some(identity) = peer.and_then(|p| p.worker.as_deref()) else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "worker routes need a client certificate from this daemon's CA",
            ));
        };
        if self
            .enrollment
            .owns(identity, worker_id)
            .await
            .map_err(|e| ApiError::internal(&e))?
        {
            Ok(())
        } else {
            tracing::warn!(identity, worker_id, "a worker spoke for another worker id");
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("worker {worker_id} was not registered by this client certificate"),
            ))
        }
    }
}

fn enroll_error(err: EnrollError) -> ApiError {
    match err {
        EnrollError::Malformed => ApiError::new(StatusCode::BAD_REQUEST, err.to_string()),
        EnrollError::Unknown | EnrollError::Used | EnrollError::Expired => {
            tracing::warn!(error = %err, "join refused");
            ApiError::new(StatusCode::FORBIDDEN, err.to_string())
        }
        EnrollError::Query { .. } | EnrollError::Random => ApiError::internal(&err),
    }
}

/// `POST /v1/join`.
pub async fn join(
    State(gate): State<Arc<WorkerGate>>,
    body: Result<Json<v1::JoinRequest>, JsonRejection>,
) -> Result<Json<v1::Enrolled>, ApiError> {
    let Json(req) = body?;
    // Parse the CSR before spending the token on it.
    rcgen::CertificateSigningRequestParams::from_pem(&req.csr_pem).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("the CSR does not parse or its signature does not verify: {e}"),
        )
    })?;
    let identity = uuid::Uuid::new_v4().to_string();
    gate.enrollment
        .consume_token(&req.token, &identity, OffsetDateTime::now_utc())
        .await
        .map_err(enroll_error)?;
    gate.issue(&identity, &req.csr_pem).map(Json)
}

/// `POST /v1/renew`: behind [`super::tls::require_worker`].
pub async fn renew(
    State(gate): State<Arc<WorkerGate>>,
    peer: Option<axum::Extension<PeerIdentity>>,
    body: Result<Json<v1::RenewRequest>, JsonRejection>,
) -> Result<Json<v1::Enrolled>, ApiError> {
    let Json(req) = body?;
    let identity = peer
        .and_then(|axum::Extension(p)| p.worker)
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "renewal needs mutual TLS"))?;
    gate.issue(&identity, &req.csr_pem).map(Json)
}
