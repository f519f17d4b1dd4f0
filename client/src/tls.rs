//! The one place where the client's transport security is decided.
//!
//! Plain HTTP to a controller on loopback, or TLS with the controller's own CA as the only
//! root ([`TransportSecurity::Tls`]), optionally presenting a worker's client certificate.
//! Nothing outside this module builds a `reqwest::Client` for the controller (the one other
//! client, in [`crate::fetch`], downloads from the public web for `kiln mirror fetch`).

use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;

use crate::ClientError;

/// How long establishing a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the controller may stay silent in the middle of an answer (blobs have no total
/// timeout, so a large transfer is fine as long as bytes keep coming).
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// How the client protects its connection to the controller.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportSecurity {
    /// Plain `http://`, for a controller on the same machine. Nothing is authenticated or
    /// encrypted; `https://` URLs are refused rather than trusted against public web roots.
    #[default]
    PlainHttp,
    /// `https://`, trusting only `ca_pem` (the controller's CA), presenting `identity` when
    /// given.
    Tls {
        ca_pem: String,
        identity: Option<ClientIdentity>,
    },
    /// `https://` to a controller whose CA is not known yet, only its fingerprint (lowercase hex
    /// sha256 of its DER): the controller must send that CA along with its certificate. For
    /// joining (`POST /v1/join`); no client certificate.
    PinnedCa { fingerprint: String },
}

/// A client certificate and its PKCS#8 key, PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity").finish_non_exhaustive()
    }
}

impl TransportSecurity {
    /// Refuses a URL this security mode cannot serve.
    pub(crate) fn check_url(&self, url: &Url) -> Result<(), ClientError> {
        match (self, url.scheme()) {
            (Self::PlainHttp, "http") => {
                let host = url.host_str().unwrap_or_default();
                let loopback = host == "localhost"
                    || host
                        .trim_matches(['[', ']'])
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback());
                if !loopback {
                    tracing::warn!(
                        %url,
                        "plain HTTP to a controller that is not on loopback: \
                         nothing is authenticated or encrypted"
                    );
                }
                Ok(())
            }
            (Self::PlainHttp, "https") => Err(ClientError::InvalidUrl {
                url: url.to_string(),
                reason: "https needs the controller's CA, which this kiln does not support yet; \
                         use http:// on loopback"
                    .into(),
            }),
            (Self::Tls { .. } | Self::PinnedCa { .. }, "https") => Ok(()),
            (_, scheme) => Err(ClientError::InvalidUrl {
                url: url.to_string(),
                reason: format!("unsupported scheme {scheme:?}; use http://"),
            }),
        }
    }

    /// The HTTP client for this mode.
    pub(crate) fn http_client(&self) -> Result<reqwest::Client, ClientError> {
        reqwest::Client::builder()
            .use_preconfigured_tls(self.rustls_config()?)
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            // A controller never redirects; following one would leave the pinned peer.
            .redirect(reqwest::redirect::Policy::none())
            // Workers talk to one controller they were told about, never through a proxy.
            .no_proxy()
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(ClientError::Setup)
    }

    /// The rustls configuration reqwest is given. With plain HTTP it is never used for a
    /// connection, but reqwest needs one since no TLS provider is compiled into it.
    fn rustls_config(&self) -> Result<rustls::ClientConfig, ClientError> {
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("the aws-lc-rs provider supports the default protocol versions");
        let bad = |what: &str, err: &dyn std::fmt::Display| ClientError::TlsSetup {
            reason: format!("{what}: {err}"),
        };
        Ok(match self {
            Self::PinnedCa { fingerprint } => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(crate::enroll::PinnedCaVerifier {
                    fingerprint: fingerprint.clone(),
                    provider,
                }))
                .with_no_client_auth(),
            Self::PlainHttp => builder
                // Trusts nobody: a plain-HTTP client must never complete a TLS handshake.
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
            Self::Tls { ca_pem, identity } => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
                    let cert = cert.map_err(|e| bad("the controller CA does not parse", &e))?;
                    roots
                        .add(cert)
                        .map_err(|e| bad("the controller CA is not usable", &e))?;
                }
                if roots.is_empty() {
                    return Err(ClientError::TlsSetup {
                        reason: "the controller CA PEM holds no certificate".into(),
                    });
                }
                let builder = builder.with_root_certificates(roots);
                match identity {
                    None => builder.with_no_client_auth(),
                    Some(id) => {
                        let chain = CertificateDer::pem_slice_iter(id.cert_pem.as_bytes())
                            .collect::<Result<Vec<_>, _>>()
                            .map_err(|e| bad("the client certificate does not parse", &e))?;
                        let key = PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes())
                            .map_err(|e| bad("the client key does not parse", &e))?;
                        builder
                            .with_client_auth_cert(chain, key)
                            .map_err(|e| bad("the client certificate is not usable", &e))?
                    }
                }
            }
        })
    }
}
