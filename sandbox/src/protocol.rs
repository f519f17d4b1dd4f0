//! The wire between [`crate::run`] and the helper: one JSON [`HelperRequest`] on the helper's
//! stdin (then EOF), one JSON [`HelperReport`] on its stdout. Both ends come from the same
//! build; the version catches a helper path that points at another one.

use serde::{Deserialize, Serialize};

use crate::error::SetupError;
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
