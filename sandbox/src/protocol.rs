//! The wire between [`crate::run`] (or [`crate::Launcher`]) and the helper: one JSON
//! [`HelperRequest`] on the helper's stdin (then EOF), one JSON [`HelperReport`] on its stdout.
//! Both ends come from the same build; the version catches a helper path that points at
//! another one.
//!
//! With a launcher, stdin and stdout are one per-step stream socket whose other end the worker
//! passed over the launcher's control socket, a `SOCK_SEQPACKET` pair: each message there is
//! one byte with `SCM_RIGHTS` carrying exactly two descriptors, that stream socket and the step
//! log. Hanging up the control socket asks the launcher to exit once its steps have ended.

use serde::{Deserialize, Serialize};

use crate::error::{SandboxError, SetupError};
use crate::run::RunReport;
use crate::spec::SandboxSpec;

/// Bumped on any incompatible change of the request or report. 2: the report carries the
/// step's resource usage and limit events.
pub(crate) const VERSION: u32 = 2;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HelperRequest {
    pub version: u32,
    /// The process that started the helper: if the helper's parent is no longer this one, it
    /// was orphaned before it could ask to die with its parent, and it gives up.
    pub parent_pid: i32,
    pub spec: SandboxSpec,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum HelperReport {
    Finished(RunReport),
    Failed(SetupError),
}

/// A request for `spec` from a process whose helper is a child of `parent_pid`.
pub(crate) fn encode_request(parent_pid: u32, spec: &SandboxSpec) -> Result<Vec<u8>, SandboxError> {
    let request = HelperRequest {
        version: VERSION,
        parent_pid: parent_pid as i32,
        spec: spec.clone(),
    };
    serde_json::to_vec(&request).map_err(SandboxError::Encode)
}

/// Decodes a non-empty report.
pub(crate) fn decode_report(bytes: &[u8]) -> Result<RunReport, SandboxError> {
    match serde_json::from_slice(bytes) {
        Ok(HelperReport::Finished(report)) => Ok(report),
        Ok(HelperReport::Failed(err)) => Err(SandboxError::Setup(err)),
        Err(err) => Err(SandboxError::BadReport {
            message: err.to_string(),
        }),
    }
}

/// Decodes a request, checking the version before the rest so a mismatch says so.
pub(crate) fn decode_request(bytes: &[u8]) -> Result<HelperRequest, SetupError> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|err| SetupError::DecodeSpec {
            message: err.to_string(),
        })?;
    let got = value
        .get("version")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    if got != u64::from(VERSION) {
        return Err(SetupError::ProtocolVersion {
            got: got as u32,
            want: VERSION,
        });
    }
    serde_json::from_value(value).map_err(|err| SetupError::DecodeSpec {
        message: err.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::tests::example;

    #[test]
    fn request_round_trips() {
        let request = HelperRequest {
            version: VERSION,
            parent_pid: 42,
            spec: example(),
        };
        let decoded = decode_request(&serde_json::to_vec(&request).unwrap()).unwrap();
        assert_eq!(decoded.spec, example());
        assert_eq!(decoded.parent_pid, 42);
    }

    #[test]
    fn other_versions_are_refused_by_name() {
        let request = HelperRequest {
            version: VERSION + 1,
            parent_pid: 1,
            spec: example(),
        };
        let err = decode_request(&serde_json::to_vec(&request).unwrap()).unwrap_err();
        assert_eq!(
            err,
            SetupError::ProtocolVersion {
                got: VERSION + 1,
                want: VERSION
            }
        );
    }
}
