//! The HTTP API between `kiln daemon`, `kiln worker` and the team CLI: versioned wire types.
//! Routes and semantics are documented in docs/api.md. Changing a shape here is an API change.

/// Version 1 of the API (`/v1/...`).
pub mod v1 {
    use std::collections::BTreeMap;

    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};

    use crate::{ExitRecord, Sha256Digest, StepRecord, StepSpec};

    /// `POST /v1/runs`: submit a pipeline.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
    pub struct SubmitRun {
        /// The file name the user gave; diagnostics and provenance name it.
        pub pipeline_file: String,
        /// The pipeline YAML, verbatim (its sha256 is what provenance records).
        pub pipeline_yaml: String,
        /// Client-chosen idempotency key: submitting the same id twice returns the first run.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub request_id: Option<String>,
    }

    /// A refused submission: every diagnostic, one line each (`file:line:column: message`).
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
    pub struct ErrorView {
        pub error: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub diagnostics: Vec<String>,
    }

    /// A run's state.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
    #[serde(rename_all = "snake_case")]
    pub enum RunState {
        Running,
        Succeeded,
        Failed,
        Cancelled,
    }

    /// A step's state.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
    #[serde(rename_all = "snake_case")]
    pub enum StepState {
        Pending,
        Leased,
        Succeeded,
        Failed,
        Skipped,
        Cancelled,
    }

    /// `GET /v1/runs/{id}`.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
    pub struct RunView {
        pub id: String,
        pub pipeline_name: String,
        pub state: RunState,
        /// RFC 3339.
        #[schemars(extend("format" = "date-time"))]
        pub started_at: String,
        /// RFC 3339; absent while the run is running.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(extend("format" = "date-time"))]
        pub finished_at: Option<String>,
        pub steps: Vec<StepView>,
        pub artifacts: Vec<ArtifactView>,
    }

    /// One step of a run.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
    pub struct StepView {
        pub name: String,
        pub state: StepState,
        /// How many leases were handed out for this step.
        pub attempts: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub worker: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub exit: Option<ExitRecord>,
    }

    /// A published artifact; its bytes are at `GET /v1/runs/{id}/artifacts/{name}` and its
    /// provenance at `.../{name}/provenance`.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
    pub struct ArtifactView {
        pub name: String,
        pub step: String,
        pub sha256: Sha256Digest,
        pub size: u64,
        /// Whether the step left it executable; `kiln artifacts` writes it mode 0755 then.
        #[serde(default)]
        pub executable: bool,
    }

    /// `POST /v1/join` (TLS, no client certificate): a worker exchanges a one-time join token
    /// and a PKCS#10 CSR (its private key never leaves it) for a client certificate.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
    pub struct JoinRequest {
        pub token: String,
        pub csr_pem: String,
    }

    /// `POST /v1/renew` (mutual TLS): a new certificate for the caller's identity, for a new CSR.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
    pub struct RenewRequest {
        pub csr_pem: String,
    }

    /// The answer to [`JoinRequest`] and [`RenewRequest`]: a client certificate whose URI SAN is
    /// `spiffe://kiln/worker/<identity>`, valid over `[not_before, not_after)` (unix seconds).
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
    pub struct Enrolled {
        pub identity: String,
        pub cert_pem: String,
        pub ca_pem: String,
        pub not_before: i64,
        pub not_after: i64,
    }

    /// `POST /v1/workers`: a worker announces itself.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
    pub struct RegisterWorker {
        pub name: String,
        pub slots: u32,
        #[serde(default)]
        pub labels: BTreeMap<String, String>,
    }

    /// The answer to [`RegisterWorker`].
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
    pub struct WorkerRegistered {
        pub worker_id: String,
    }

    /// `POST /v1/leases`: a worker with a free slot asks for a step. `204 No Content` when
    /// nothing is ready, at once or, with `wait_ms`, after waiting that long for a step.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
    pub struct LeaseRequest {
        pub worker_id: String,
        /// How long the controller may hold the request open until a step is ready (a long
        /// poll), in milliseconds; it may answer `204` sooner. Absent: answer at once.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub wait_ms: Option<u64>,
    }

    /// A step handed to one worker until `deadline`, which heartbeats extend.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
    pub struct Lease {
        pub lease_id: String,
        /// Seconds the lease lives without a heartbeat.
        pub ttl_secs: u64,
        pub spec: StepSpec,
    }

    /// `POST /v1/leases/{lease_id}/heartbeat`; `409 Conflict` once the lease is gone.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
    pub struct Heartbeat {
        pub worker_id: String,
    }

    /// `POST /v1/leases/{lease_id}/report`: the step's record. Every output and the log must
    /// already be uploaded (`PUT /v1/blobs/{sha256}`). `409 Conflict` for a lease that expired
    /// or was never this worker's: the report is refused and the step runs elsewhere.
    ///
    /// Answered `204 No Content`, or with `claim_next` a `200` [`ReportAnswer`].
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
    pub struct StepReport {
        pub worker_id: String,
        pub record: StepRecord,
        /// Ask for the worker's next lease in the answer.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        pub claim_next: bool,
    }

    /// The answer to an accepted (or already accepted) [`StepReport`] with `claim_next`: what
    /// `POST /v1/leases` would have handed this worker, saving that round trip.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
    pub struct ReportAnswer {
        /// The worker's next lease; `null` when nothing is ready for it (or the claim failed:
        /// the worker then claims as usual).
        pub next: Option<Lease>,
    }
}
