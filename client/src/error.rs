//! The client's one error type.

use std::path::PathBuf;

use kiln_core::Sha256Digest;

/// Everything a call to the controller can end in, other than success.
///
/// The variants separate what a caller acts on differently: the controller refused this request
/// for good ([`ClientError::Conflict`], [`ClientError::Http`] with a 4xx status), the network or
/// the controller failed and the same request may succeed later ([`ClientError::is_transient`]),
/// or the bytes that arrived are not the ones asked for ([`ClientError::DigestMismatch`]).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The controller URL cannot be used.
    #[error("invalid controller URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    /// The HTTP client could not be built (TLS configuration).
    #[error("cannot set up the HTTP client")]
    Setup(#[source] reqwest::Error),
    /// The TLS material (controller CA, client certificate or key) cannot be used.
    #[error("cannot set up TLS: {reason}")]
    TlsSetup { reason: String },
    /// `409 Conflict`: the lease expired, was reassigned or was never this worker's.
    #[error("{route}: refused by the controller (409 conflict): {error}")]
    Conflict { route: &'static str, error: String },
    /// Any other non-success answer, with the controller's `ErrorView` when it sent one.
    #[error("{route}: the controller answered {status}: {error}")]
    Http {
        route: &'static str,
        status: u16,
        error: String,
        diagnostics: Vec<String>,
    },
    /// The request did not get an answer: connection refused or reset, timeout, broken body.
    #[error("{route}: cannot reach the controller")]
    Transport {
        route: &'static str,
        #[source]
        source: reqwest::Error,
    },
    /// The answer is not the JSON the API promises.
    #[error("{route}: the controller's answer is not valid")]
    Decode {
        route: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// The controller answered with a status the API does not define for this route.
    #[error("{route}: unexpected answer {status} from the controller")]
    UnexpectedStatus { route: &'static str, status: u16 },
    /// Downloaded bytes hash to something other than what was asked for; they were discarded.
    #[error("blob {expected}: the controller sent {size} bytes hashing to {actual}; refused")]
    DigestMismatch {
        expected: Sha256Digest,
        actual: Sha256Digest,
        size: u64,
    },
    /// A local file being downloaded to or uploaded from.
    #[error("{path}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ClientError {
    /// Whether the same request may succeed if retried later: the network failed, or the
    /// controller is restarting, overloaded or had an internal error.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transport { .. } => true,
            Self::Http { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            _ => false,
        }
    }

    /// The HTTP status of a refused request, if the controller answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Conflict { .. } => Some(409),
            Self::Http { status, .. } | Self::UnexpectedStatus { status, .. } => Some(*status),
            _ => None,
        }
    }
}
