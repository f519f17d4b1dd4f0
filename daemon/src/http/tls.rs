//! The TLS acceptor: the same router as plain HTTP, behind tokio-rustls.
//!
//! The handshake asks every client for a certificate and verifies one that is offered against
//! the daemon's CA (a certificate from another CA, or an expired one, fails the handshake), but
//! lets a client without one through, because submitters and `POST /v1/join` have none yet.
//! The verified worker id of each connection travels to the handlers as a [`PeerIdentity`]
//! request extension; [`require_worker`] turns worker routes away without one.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use super::error::ApiError;
use crate::pki::{self, IssuedCert, Pki, PkiError};

/// Who is at the other end of a TLS connection: the worker named by its verified client
/// certificate, or nobody (no certificate, or one without a worker id).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerIdentity {
    pub worker: Option<String>,
    /// Whether the connection comes from a loopback address.
    pub loopback: bool,
}

/// Which requests to worker routes are let through.
#[derive(Clone, Debug, Default)]
pub enum WorkerAuth {
    /// Plain HTTP on loopback: no worker is authenticated (team routes still need a token).
    #[default]
    None,
    /// Only requests over a connection with a verified worker certificate, for the worker ids
    /// that certificate registered; `POST /v1/join` and `/v1/renew` enroll workers.
    ClientCert(Arc<super::enroll::WorkerGate>),
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("cannot issue the server certificate")]
    Pki(#[from] PkiError),
    #[error("cannot build the TLS configuration")]
    Rustls(#[source] rustls::Error),
    #[error("cannot build the client certificate verifier")]
    Verifier(#[source] rustls::server::VerifierBuilderError),
}

/// The rustls server configuration: a server certificate for `names` issued by `pki`, client
/// certificates verified against `pki`'s CA and optional.
pub fn server_config(pki: &Pki, names: &[String]) -> Result<rustls::ServerConfig, TlsSetupError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let IssuedCert { cert_pem, key_pem } = pki.issue_server(names)?;
    let cert = pki::pem_to_der(&cert_pem).expect("rcgen writes a CERTIFICATE block");
    let key = pki::pem_to_key(&key_pem).expect("rcgen writes a PKCS#8 key");
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(pki.ca_der().clone())
        .map_err(TlsSetupError::Rustls)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(TlsSetupError::Verifier)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsSetupError::Rustls)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![cert, pki.ca_der().clone()], key)
        .map_err(TlsSetupError::Rustls)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Serves `router` over TLS on `listener` until `shutdown` completes, then waits for open
/// connections to finish their requests.
pub async fn serve(
    listener: TcpListener,
    config: rustls::ServerConfig,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(%err, "cannot accept a connection");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let handshake =
                tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp));
            let tls = match handshake.await {
                Ok(Ok(tls)) => tls,
                Ok(Err(err)) => {
                    tracing::info!(%remote, %err, "TLS handshake refused");
                    return;
                }
                Err(_) => {
                    tracing::info!(%remote, "TLS handshake timed out");
                    return;
                }
            };
            let identity = PeerIdentity {
                worker: tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .and_then(|leaf| pki::worker_id_of(leaf)),
                loopback: remote.ip().is_loopback(),
            };
            tracing::debug!(%remote, worker = ?identity.worker, "TLS connection");
            let service = tower::service_fn(move |mut req: Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(identity.clone());
                router.clone().oneshot(req.map(axum::body::Body::new))
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), TowerToHyperService::new(service));
            if let Err(err) = watcher.watch(conn).await {
                tracing::debug!(%remote, %err, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Middleware of the worker routes under [`WorkerAuth::ClientCert`]: `401` unless the
/// connection presented a worker certificate from the daemon's CA.
pub async fn require_worker(req: Request, next: Next) -> Response {
    let worker = req
        .extensions()
        .get::<PeerIdentity>()
        .and_then(|peer| peer.worker.clone());
    if worker.is_none() {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "worker routes need a client certificate from this daemon's CA; \
             join with `kiln worker --join-token`",
        )
        .into_response();
    }
    next.run(req).await
}

/// Middleware of the blob reads under [`WorkerAuth::ClientCert`]: only a loopback client or a
/// worker may read the store by digest (`403` otherwise). Teams read their artifacts through
/// the team routes, which check their token and the run's owner instead.
pub async fn require_local_or_worker(req: Request, next: Next) -> Response {
    let allowed = req
        .extensions()
        .get::<PeerIdentity>()
        .is_some_and(|peer| peer.loopback || peer.worker.is_some());
    if !allowed {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "blob reads are open to workers and loopback clients only",
        )
        .into_response();
    }
    next.run(req).await
}
