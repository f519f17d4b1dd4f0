//! The one place where the client's transport security is decided.
//!
//! Increment 1 of issue 4 speaks plain HTTP to a controller on loopback. Mutual TLS comes next:
//! a `TransportSecurity::MutualTls { ca, identity }` variant whose rustls config pins the
//! controller's CA (instead of an empty root store) and presents the worker's certificate
//! (instead of `with_no_client_auth`). Nothing outside this module builds a `reqwest::Client`.

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
            (_, scheme) => Err(ClientError::InvalidUrl {
                url: url.to_string(),
                reason: format!("unsupported scheme {scheme:?}; use http://"),
            }),
        }
    }

    /// The HTTP client for this mode.
    pub(crate) fn http_client(&self) -> Result<reqwest::Client, ClientError> {
        reqwest::Client::builder()
            .use_preconfigured_tls(self.rustls_config())
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
    fn rustls_config(&self) -> rustls::ClientConfig {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        match self {
            Self::PlainHttp => rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("the aws-lc-rs provider supports the default protocol versions")
                // Trusts nobody: a plain-HTTP client must never complete a TLS handshake.
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        }
    }
}
