//! The API's OpenAPI 3.1 description (docs/openapi.json): the routes written as data
//! ([`ROUTES`]), the bodies' schemas derived from the wire types (`kiln_core::api::v1` and what
//! it contains) by schemars, so that a changed type changes the document.
//!
//! Request bodies are described as the daemon deserializes them and answers as it serializes
//! them (schemars' two contracts: a field with a serde default is optional in a request but
//! always present in an answer). A type that travels both ways must have one shape in both.
//!
//! Invariant: the document describes [`super::router`] exactly. daemon/tests/openapi.rs sends a
//! request for every operation here to the real router, compares the paths here with the
//! routes in the source, validates sample values against the schemas, and keeps the committed
//! docs/openapi.json equal to [`openapi`] (`KILN_UPDATE_OPENAPI=1` regenerates it).
//!
//! Deliberately absent: the semantics docs/api.md explains at length (long polls, the
//! report's claim, storage notes); the descriptions here are short and point there.

use std::collections::BTreeMap;

use kiln_core::api::v1;
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::{Map, Value, json};

use super::logs;

/// Makes a schema (a `$ref` for a named type) in a generator.
type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

fn schema<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

/// An HTTP method the API uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    Get,
    Head,
    Post,
    Put,
}

impl Method {
    fn key(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::Head => "head",
            Self::Post => "post",
            Self::Put => "put",
        }
    }
}

/// Who may call a route (docs/api.md, "Teams" and "Mutual TLS").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Access {
    /// A team's bearer token, with or without `--tls`.
    Team,
    /// Without `--tls` anyone (the daemon listens on loopback); with it, a worker certificate.
    Worker,
    /// A worker certificate (`/v1/renew`, served only with `--tls`).
    WorkerOnly,
    /// Without `--tls` anyone; with it, a loopback client or a worker certificate.
    BlobRead,
    /// Nobody needs a credential: probes, metrics, `/v1/join`.
    Open,
}

/// A group of routes, as docs/api.md groups them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tag {
    Teams,
    Workers,
    Blobs,
    Enrollment,
    Observability,
}

impl Tag {
    const ALL: [Self; 5] = [
        Self::Teams,
        Self::Workers,
        Self::Blobs,
        Self::Enrollment,
        Self::Observability,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Teams => "teams",
            Self::Workers => "workers",
            Self::Blobs => "blobs",
            Self::Enrollment => "enrollment",
            Self::Observability => "observability",
        }
    }

    fn description(self) -> &'static str {
        match self {
            Self::Teams => "Runs, their logs and artifacts: a team's bearer token on every route.",
            Self::Workers => {
                "Registration, leases, heartbeats, reports and live logs: a worker client \
                 certificate under `--tls`."
            }
            Self::Blobs => "The content-addressed store, by sha256.",
            Self::Enrollment => "Worker certificates from the daemon's CA: only with `--tls`.",
            Self::Observability => "Probes and metrics: no credentials in either mode.",
        }
    }
}

/// A request or answer body.
#[derive(Clone, Copy)]
enum Body {
    None,
    /// `application/json`, of this shape.
    Json(SchemaFn),
    /// Raw bytes of this media type.
    Bytes(&'static str),
    /// One line (or more) of `text/plain`.
    Text,
    /// Either an [`v1::ErrorView`] or axum's own `text/plain` rejection.
    ErrorOrText,
}

const OCTETS: &str = "application/octet-stream";
const JSONL: &str = "application/jsonl";
const TEXT: &str = "text/plain; charset=utf-8";

/// A response header the API documents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Header {
    /// [`logs::OFFSET_HEADER`].
    LogOffset,
    /// [`logs::COMPLETE_HEADER`].
    LogComplete,
    ContentLength,
    /// `WWW-Authenticate: Bearer` on a team route's `401`.
    WwwAuthenticate,
}

/// One documented answer of a route.
struct Answer {
    status: u16,
    description: &'static str,
    body: Body,
    headers: &'static [Header],
}

const fn answer(status: u16, description: &'static str, body: Body) -> Answer {
    Answer {
        status,
        description,
        body,
        headers: &[],
    }
}

const fn error(status: u16, description: &'static str) -> Answer {
    answer(status, description, Body::Json(schema::<v1::ErrorView>))
}

const TEAM_401: Answer = Answer {
    status: 401,
    description: "No `Authorization: Bearer TOKEN`, or an unknown or expired team token.",
    body: Body::Json(schema::<v1::ErrorView>),
    headers: &[Header::WwwAuthenticate],
};
const WORKER_401: Answer = error(
    401,
    "Under `--tls`: the connection presented no worker certificate from the daemon's CA.",
);
const WORKER_403: Answer = error(
    403,
    "Under `--tls`: the body's `worker_id` was not registered by the client certificate in use.",
);
const BLOB_403: Answer = error(
    403,
    "Under `--tls`: neither a loopback client nor a worker certificate.",
);
const NO_RUN: Answer = error(
    404,
    "No such run, or another team's (which looks the same, so run ids do not leak).",
);
const BAD_DIGEST: Answer = error(400, "The path's `sha256` is not 64 lowercase hex digits.");
const INTERNAL: Answer = error(
    500,
    "The daemon failed (e.g. its database); the error is one line.",
);

/// What axum answers for a JSON body it cannot take, added to every route with one; a route
/// that documents the same status for another reason gets this reason appended.
const JSON_REJECTIONS: [(u16, &str); 4] = [
    (400, "the body is not valid JSON."),
    (
        413,
        "the body is larger than the JSON limit (16 MiB by default).",
    ),
    (
        415,
        "the request's `Content-Type` is not `application/json`.",
    ),
    (
        422,
        "the body is JSON but not of the request's shape (a missing field, a wrong type).",
    ),
];

/// One operation of the API.
struct Route {
    method: Method,
    /// As axum routes it, `{name}` for a path parameter.
    path: &'static str,
    operation_id: &'static str,
    tag: Tag,
    summary: &'static str,
    description: &'static str,
    access: Access,
    /// The query parameters: the fields of this struct as the daemon deserializes it.
    query: Option<SchemaFn>,
    request: Body,
    responses: &'static [Answer],
}

/// Every route of [`super::router`], in docs/api.md's order.
const ROUTES: &[Route] = &[
    // Teams.
    Route {
        method: Method::Post,
        path: "/v1/runs",
        operation_id: "submitRun",
        tag: Tag::Teams,
        summary: "Submit a pipeline",
        description: "The run records the submitting team. A repeated `request_id` returns the \
                      first run (`200`) instead of making another.",
        access: Access::Team,
        query: None,
        request: Body::Json(schema::<v1::SubmitRun>),
        responses: &[
            answer(
                201,
                "The run was accepted.",
                Body::Json(schema::<v1::RunView>),
            ),
            answer(
                200,
                "The `request_id` was seen before: the first run.",
                Body::Json(schema::<v1::RunView>),
            ),
            error(
                400,
                "The pipeline is malformed: `diagnostics` has one `file:line:column: message` \
                 line each.",
            ),
            TEAM_401,
            error(
                409,
                "The `request_id` came before with a different pipeline, or from another team.",
            ),
            error(422, "A mirror reference does not resolve."),
            INTERNAL,
        ],
    },
    Route {
        method: Method::Get,
        path: "/v1/runs",
        operation_id: "listRuns",
        tag: Tag::Teams,
        summary: "List the team's runs",
        description: "Only the runs the token's team submitted, newest first.",
        access: Access::Team,
        query: None,
        request: Body::None,
        responses: &[
            answer(200, "The runs.", Body::Json(schema::<Vec<v1::RunView>>)),
            TEAM_401,
            INTERNAL,
        ],
    },
    Route {
        method: Method::Get,
        path: "/v1/runs/{run}",
        operation_id: "getRun",
        tag: Tag::Teams,
        summary: "Show a run",
        description: "The run's state, its steps and its published artifacts.",
        access: Access::Team,
        query: None,
        request: Body::None,
        responses: &[
            answer(200, "The run.", Body::Json(schema::<v1::RunView>)),
            TEAM_401,
            NO_RUN,
            INTERNAL,
        ],
    },
    Route {
        method: Method::Post,
        path: "/v1/runs/{run}/cancel",
        operation_id: "cancelRun",
        tag: Tag::Teams,
        summary: "Cancel a run",
        description: "Pending steps become `cancelled`, leased steps' leases are revoked (the \
                      holder's heartbeat and report then get `409`) and the run ends \
                      `cancelled`; nothing is published. Cancelling a cancelled run again is \
                      `200`.",
        access: Access::Team,
        query: None,
        request: Body::None,
        responses: &[
            answer(200, "The cancelled run.", Body::Json(schema::<v1::RunView>)),
            TEAM_401,
            NO_RUN,
            error(409, "The run had already succeeded or failed."),
            INTERNAL,
        ],
    },
    Route {
        method: Method::Get,
        path: "/v1/runs/{run}/steps/{step}/log",
        operation_id: "readStepLog",
        tag: Tag::Teams,
        summary: "Read a step's log from an offset on",
        description: "The step's stdout and stderr from byte `offset` on: while it runs, what \
                      its worker has sent so far; once its record is accepted, the rest of its \
                      content-addressed log. `kiln logs --follow` polls this every 500 ms until \
                      `kiln-log-complete` is `true`.",
        access: Access::Team,
        query: Some(schema::<logs::ReadQuery>),
        request: Body::None,
        responses: &[
            Answer {
                status: 200,
                description: "The log's bytes from `offset` on (empty past the end, or before \
                              the step started).",
                body: Body::Bytes(OCTETS),
                headers: &[Header::LogComplete, Header::LogOffset],
            },
            answer(
                400,
                "The query does not parse (`offset` is not a number).",
                Body::Text,
            ),
            TEAM_401,
            error(
                404,
                "No such run (or another team's), or the run has no such step.",
            ),
            INTERNAL,
        ],
    },
    Route {
        method: Method::Get,
        path: "/v1/runs/{run}/artifacts/{name}",
        operation_id: "getArtifact",
        tag: Tag::Teams,
        summary: "Download a published artifact",
        description: "The artifact's bytes, re-verified against their sha256 by the store \
                      first.",
        access: Access::Team,
        query: None,
        request: Body::None,
        responses: &[
            Answer {
                status: 200,
                description: "The artifact.",
                body: Body::Bytes(OCTETS),
                headers: &[Header::ContentLength],
            },
            TEAM_401,
            error(
                404,
                "No such run (or another team's), or the run published no such artifact.",
            ),
            INTERNAL,
        ],
    },
    Route {
        method: Method::Get,
        path: "/v1/runs/{run}/artifacts/{name}/provenance",
        operation_id: "getArtifactProvenance",
        tag: Tag::Teams,
        summary: "Download an artifact's provenance",
        description: "`ARTIFACT.intoto.jsonl`: one DSSE envelope per line, each an in-toto \
                      Statement with SLSA Provenance v1 (docs/verifying.md).",
        access: Access::Team,
        query: None,
        request: Body::None,
        responses: &[
            Answer {
                status: 200,
                description: "The provenance.",
                body: Body::Bytes(JSONL),
                headers: &[Header::ContentLength],
            },
            TEAM_401,
            error(
                404,
                "No such run (or another team's), or the run published no such artifact.",
            ),
            INTERNAL,
        ],
    },
    Route {
        method: Method::Get,
        path: "/v1/runs/{run}/attestation",
        operation_id: "getRunAttestation",
        tag: Tag::Teams,
        summary: "Download a finished run's signed run attestation",
        description: "`run.intoto.jsonl`, for any outcome (succeeded, failed, cancelled): how \
                      the run and each step ended (docs/run-attestation.md).",
        access: Access::Team,
        query: None,
        request: Body::None,
        responses: &[
            Answer {
                status: 200,
                description: "The run attestation.",
                body: Body::Bytes(JSONL),
                headers: &[Header::ContentLength],
            },
            TEAM_401,
            error(
                404,
                "No such run (or another team's), or the run is still running.",
            ),
            INTERNAL,
        ],
    },
    // Workers.
    Route {
        method: Method::Post,
        path: "/v1/workers",
        operation_id: "registerWorker",
        tag: Tag::Workers,
        summary: "Register a worker",
        description: "Under `--tls` the new worker id is bound to the client certificate's \
                      identity.",
        access: Access::Worker,
        query: None,
        request: Body::Json(schema::<v1::RegisterWorker>),
        responses: &[
            answer(
                200,
                "The worker's id.",
                Body::Json(schema::<v1::WorkerRegistered>),
            ),
            error(400, "A malformed label, or too many labels."),
            WORKER_401,
            INTERNAL,
        ],
    },
    Route {
        method: Method::Post,
        path: "/v1/leases",
        operation_id: "claimLease",
        tag: Tag::Workers,
        summary: "Claim a step",
        description: "A step whose needs have all succeeded, handed to exactly one worker. With \
                      `wait_ms`, a long poll of at most 10 s (docs/api.md, \"Waiting claims\").",
        access: Access::Worker,
        query: None,
        request: Body::Json(schema::<v1::LeaseRequest>),
        responses: &[
            answer(200, "A lease on a step.", Body::Json(schema::<v1::Lease>)),
            answer(
                204,
                "Nothing is ready for this worker (at once, or once `wait_ms` passed).",
                Body::None,
            ),
            WORKER_401,
            WORKER_403,
            error(404, "The worker is not registered."),
            INTERNAL,
        ],
    },
    Route {
        method: Method::Post,
        path: "/v1/leases/{lease}/heartbeat",
        operation_id: "heartbeat",
        tag: Tag::Workers,
        summary: "Extend a lease",
        description: "Extends the lease by its ttl; a worker heartbeats every ttl/3.",
        access: Access::Worker,
        query: None,
        request: Body::Json(schema::<v1::Heartbeat>),
        responses: &[
            answer(204, "The lease was extended.", Body::None),
            WORKER_401,
            WORKER_403,
            error(
                409,
                "The lease expired, was reassigned or revoked, or is another worker's.",
            ),
            INTERNAL,
        ],
    },
    Route {
        method: Method::Post,
        path: "/v1/leases/{lease}/report",
        operation_id: "reportStep",
        tag: Tag::Workers,
        summary: "Report a step's record",
        description: "Every output and the log must already be uploaded. With `claim_next`, \
                      the answer carries the worker's next lease (docs/api.md, \"The report's \
                      answer carries the next lease\"). A refused report never claims.",
        access: Access::Worker,
        query: None,
        request: Body::Json(schema::<v1::StepReport>),
        responses: &[
            answer(
                200,
                "With `claim_next`: the report was accepted (or had been), and the next lease \
                 if one is ready.",
                Body::Json(schema::<v1::ReportAnswer>),
            ),
            answer(
                204,
                "Without `claim_next`: the report was accepted (or had been).",
                Body::None,
            ),
            WORKER_401,
            WORKER_403,
            error(
                409,
                "The lease is not (or no longer) the worker's: a late report is refused and the \
                 step runs elsewhere.",
            ),
            error(
                422,
                "A reported output or log was not uploaded, or the record is for another step.",
            ),
            INTERNAL,
        ],
    },
    Route {
        method: Method::Post,
        path: "/v1/leases/{lease}/log",
        operation_id: "appendStepLog",
        tag: Tag::Workers,
        summary: "Append to a running step's live log",
        description: "The running step's output that starts at byte `offset` of its log, at \
                      most 1 MiB a request. Idempotent: bytes already held are skipped. The \
                      live copy is dropped once the record is accepted.",
        access: Access::Worker,
        query: Some(schema::<logs::AppendQuery>),
        request: Body::Bytes(OCTETS),
        responses: &[
            Answer {
                status: 204,
                description: "Stored; `kiln-log-offset` is the length now held.",
                body: Body::None,
                headers: &[Header::LogOffset],
            },
            answer(
                400,
                "The query does not parse (`worker` or `offset` missing).",
                Body::Text,
            ),
            WORKER_401,
            error(
                403,
                "Under `--tls`: the query's `worker` was not registered by the client \
                 certificate in use.",
            ),
            error(409, "The lease is not the worker's, or not current."),
            answer(
                413,
                "The chunk is over 1 MiB, or the live log would pass 64 MiB a lease (the final \
                 log, in the record, has no such cap).",
                Body::ErrorOrText,
            ),
            Answer {
                status: 416,
                description: "`offset` is past the end: `kiln-log-offset` is the length held, \
                              send from there.",
                body: Body::Text,
                headers: &[Header::LogOffset],
            },
            INTERNAL,
        ],
    },
    // Blobs.
    Route {
        method: Method::Get,
        path: "/v1/blobs/{sha256}",
        operation_id: "getBlob",
        tag: Tag::Blobs,
        summary: "Download a blob",
        description: "Inputs by digest, re-verified by the store first; the worker verifies \
                      every byte it receives.",
        access: Access::BlobRead,
        query: None,
        request: Body::None,
        responses: &[
            Answer {
                status: 200,
                description: "The blob.",
                body: Body::Bytes(OCTETS),
                headers: &[Header::ContentLength],
            },
            BAD_DIGEST,
            BLOB_403,
            error(404, "The store has no such blob."),
            INTERNAL,
        ],
    },
    Route {
        method: Method::Head,
        path: "/v1/blobs/{sha256}",
        operation_id: "hasBlob",
        tag: Tag::Blobs,
        summary: "Whether the store has a blob",
        description: "Presence only, without re-hashing: an uploader skips what the daemon \
                      already has.",
        access: Access::BlobRead,
        query: None,
        request: Body::None,
        responses: &[
            Answer {
                status: 200,
                description: "The store has the blob; `Content-Length` is its size.",
                body: Body::None,
                headers: &[Header::ContentLength],
            },
            answer(
                400,
                "The path's `sha256` is not 64 lowercase hex digits.",
                Body::None,
            ),
            answer(
                403,
                "Under `--tls`: neither a loopback client nor a worker certificate.",
                Body::None,
            ),
            answer(404, "The store has no such blob.", Body::None),
        ],
    },
    Route {
        method: Method::Put,
        path: "/v1/blobs/{sha256}",
        operation_id: "putBlob",
        tag: Tag::Blobs,
        summary: "Upload a blob",
        description: "The daemon hashes the body as it streams it into the store and keeps it \
                      only if its sha256 is the path's.",
        access: Access::Worker,
        query: None,
        request: Body::Bytes(OCTETS),
        responses: &[
            answer(201, "Stored.", Body::None),
            answer(200, "The store already had it; not rewritten.", Body::None),
            error(
                400,
                "The path's `sha256` is not 64 lowercase hex digits, or the body could not be \
                 read.",
            ),
            WORKER_401,
            error(
                413,
                "The body is over the blob size cap (16 GiB by default).",
            ),
            error(
                422,
                "The body's sha256 is not the path's: refused, nothing kept.",
            ),
            INTERNAL,
        ],
    },
    // Enrollment.
    Route {
        method: Method::Post,
        path: "/v1/join",
        operation_id: "join",
        tag: Tag::Enrollment,
        summary: "Exchange a join token and a CSR for a worker certificate",
        description: "Only with `--tls`; no client certificate needed. The token is consumed \
                      atomically, after the CSR was checked. Only the CSR's public key is \
                      used: the certificate names an identity the daemon chose.",
        access: Access::Open,
        query: None,
        request: Body::Json(schema::<v1::JoinRequest>),
        responses: &[
            answer(200, "The certificate.", Body::Json(schema::<v1::Enrolled>)),
            error(
                400,
                "A malformed token, or a CSR that does not parse or whose signature does not \
                 verify.",
            ),
            error(403, "An unknown, used or expired join token."),
            INTERNAL,
        ],
    },
    Route {
        method: Method::Post,
        path: "/v1/renew",
        operation_id: "renew",
        tag: Tag::Enrollment,
        summary: "Renew the caller's worker certificate",
        description: "Only with `--tls`: a new certificate for the identity of the client \
                      certificate in use, for a new CSR.",
        access: Access::WorkerOnly,
        query: None,
        request: Body::Json(schema::<v1::RenewRequest>),
        responses: &[
            answer(200, "The certificate.", Body::Json(schema::<v1::Enrolled>)),
            error(
                400,
                "A CSR that does not parse or whose signature does not verify.",
            ),
            error(401, "The connection presented no worker certificate."),
            INTERNAL,
        ],
    },
    // Observability.
    Route {
        method: Method::Get,
        path: "/healthz",
        operation_id: "healthz",
        tag: Tag::Observability,
        summary: "Liveness",
        description: "Whenever the process serves requests.",
        access: Access::Open,
        query: None,
        request: Body::None,
        responses: &[answer(200, "`ok`", Body::Text)],
    },
    Route {
        method: Method::Get,
        path: "/readyz",
        operation_id: "readyz",
        tag: Tag::Observability,
        summary: "Readiness",
        description: "The state database answers a query within 2 s, and a file can be created \
                      in the blob store's `tmp/`.",
        access: Access::Open,
        query: None,
        request: Body::None,
        responses: &[
            answer(200, "`ready`", Body::Text),
            answer(503, "`not ready: REASON`, one line.", Body::Text),
        ],
    },
    Route {
        method: Method::Get,
        path: "/metrics",
        operation_id: "metrics",
        tag: Tag::Observability,
        summary: "Prometheus metrics",
        description: "OpenMetrics text; the families are listed in docs/api.md, \
                      \"Observability\".",
        access: Access::Open,
        query: None,
        request: Body::None,
        responses: &[
            answer(
                200,
                "The metrics.",
                Body::Bytes(crate::metrics::CONTENT_TYPE),
            ),
            answer(
                503,
                "The state database does not answer; the reason is one line.",
                Body::Text,
            ),
        ],
    },
];

/// Routes [`super::router`] serves only with `--tls`.
const TLS_ONLY: [&str; 2] = ["/v1/join", "/v1/renew"];

/// The description of a path parameter, by name.
fn path_parameter(name: &str, schemas: &mut SchemaGenerator) -> Value {
    let (description, schema) = match name {
        "run" => ("A run id (a UUID v7).", json!({ "type": "string" })),
        "step" => (
            "A step's name in the run's pipeline.",
            json!({ "type": "string" }),
        ),
        "name" => ("A published artifact's name.", json!({ "type": "string" })),
        "lease" => ("A lease id.", json!({ "type": "string" })),
        "sha256" => (
            "A blob's sha256, 64 lowercase hex digits.",
            schemas
                .subschema_for::<kiln_core::Sha256Digest>()
                .to_value(),
        ),
        other => panic!("path parameter {{{other}}} has no description in openapi.rs"),
    };
    json!({
        "name": name,
        "in": "path",
        "required": true,
        "description": description,
        "schema": schema,
    })
}

/// The names of `path`'s `{parameters}`, in order.
fn path_parameter_names(path: &str) -> impl Iterator<Item = &str> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
}

/// A struct's fields as query parameters, from its (deserialize) schema.
fn query_parameters(query: SchemaFn) -> Vec<Value> {
    let mut inline = SchemaSettings::draft2020_12()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .for_deserialize()
        .into_generator();
    let schema = query(&mut inline).to_value();
    let required: Vec<&str> = schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let properties = schema["properties"]
        .as_object()
        .expect("a query is a struct with named fields");
    properties
        .iter()
        .map(|(name, property)| {
            let mut property = property.clone();
            let description = property
                .as_object_mut()
                .and_then(|p| p.remove("description"))
                .unwrap_or(Value::Null);
            let mut parameter = json!({
                "name": name,
                "in": "query",
                "required": required.contains(&name.as_str()),
                "schema": property,
            });
            if !description.is_null() {
                parameter["description"] = description;
            }
            parameter
        })
        .collect()
}

fn header(header: Header) -> (&'static str, Value) {
    match header {
        Header::LogOffset => (
            logs::OFFSET_HEADER,
            json!({
                "description": "A log offset in bytes: of the body's first byte when reading, \
                                the length held when appending.",
                "required": true,
                "schema": { "type": "integer", "minimum": 0 },
            }),
        ),
        Header::LogComplete => (
            logs::COMPLETE_HEADER,
            json!({
                "description": "`true` when nothing more will come (the step ended; a skipped \
                                or cancelled step has an empty, complete log), `false` while \
                                the log may grow.",
                "required": true,
                "schema": { "type": "string", "enum": ["true", "false"] },
            }),
        ),
        Header::ContentLength => (
            "Content-Length",
            json!({
                "description": "The blob's size in bytes.",
                "required": true,
                "schema": { "type": "integer", "minimum": 0 },
            }),
        ),
        Header::WwwAuthenticate => (
            "WWW-Authenticate",
            json!({
                "description": "`Bearer`.",
                "required": true,
                "schema": { "type": "string", "const": "Bearer" },
            }),
        ),
    }
}

/// A body's `content`, or `None` for no body.
fn content(body: Body, schemas: &mut SchemaGenerator) -> Option<Value> {
    Some(match body {
        Body::None => return None,
        Body::Json(schema) => json!({ "application/json": { "schema": schema(schemas) } }),
        Body::Bytes(media) => json!({ media: {} }),
        Body::Text => json!({ TEXT: { "schema": { "type": "string" } } }),
        Body::ErrorOrText => json!({
            "application/json": { "schema": schema::<v1::ErrorView>(schemas) },
            TEXT: { "schema": { "type": "string" } },
        }),
    })
}

fn security(access: Access) -> Value {
    let certificate = json!({ "workerCertificate": [] });
    match access {
        Access::Team => json!([{ "teamToken": [] }]),
        // `{}`: no credential, as without `--tls`.
        Access::Worker | Access::BlobRead => json!([certificate, {}]),
        Access::WorkerOnly => json!([certificate]),
        Access::Open => json!([]),
    }
}

fn operation(
    route: &Route,
    requests: &mut SchemaGenerator,
    answers: &mut SchemaGenerator,
) -> Value {
    let mut parameters: Vec<Value> = path_parameter_names(route.path)
        .map(|name| path_parameter(name, answers))
        .collect();
    parameters.extend(route.query.map(query_parameters).into_iter().flatten());

    let mut responses: BTreeMap<u16, Value> = BTreeMap::new();
    for answer in route.responses {
        let mut response = json!({ "description": answer.description });
        if let Some(content) = content(answer.body, answers) {
            response["content"] = content;
        }
        if !answer.headers.is_empty() {
            let headers: Map<String, Value> = answer
                .headers
                .iter()
                .map(|&h| {
                    let (name, value) = header(h);
                    (name.to_owned(), value)
                })
                .collect();
            response["headers"] = Value::Object(headers);
        }
        let previous = responses.insert(answer.status, response);
        assert!(
            previous.is_none(),
            "{} {}: status {} twice",
            route.method.key(),
            route.path,
            answer.status
        );
    }
    if matches!(route.request, Body::Json(_)) {
        for (status, why) in JSON_REJECTIONS {
            match responses.get_mut(&status) {
                Some(response) => {
                    let own = response["description"].as_str().unwrap_or_default();
                    response["description"] = json!(format!("{own} Or {why}"));
                }
                None => {
                    let response = json!({
                        "description": format!("The request was refused: {why}"),
                        "content": content(Body::Json(schema::<v1::ErrorView>), answers),
                    });
                    responses.insert(status, response);
                }
            }
        }
    }

    let mut op = json!({
        "operationId": route.operation_id,
        "tags": [route.tag.name()],
        "summary": route.summary,
        "description": route.description,
        "security": security(route.access),
        "responses": responses
            .into_iter()
            .map(|(status, response)| (status.to_string(), response))
            .collect::<Map<String, Value>>(),
    });
    if !parameters.is_empty() {
        op["parameters"] = Value::Array(parameters);
    }
    if let Some(content) = content(route.request, requests) {
        op["requestBody"] = json!({ "required": true, "content": content });
    }
    if TLS_ONLY.contains(&route.path) {
        // An extension: served only by a daemon started with `--tls`.
        op["x-kiln-tls-only"] = json!(true);
    }
    op
}

fn generator(settings: SchemaSettings) -> SchemaGenerator {
    settings
        .with(|s| {
            s.definitions_path = "/components/schemas".into();
            s.meta_schema = None;
        })
        .into_generator()
}

/// The API's OpenAPI 3.1 document, as committed in docs/openapi.json.
///
/// # Panics
/// When the route table is inconsistent (a status twice, a path parameter without a
/// description), or a wire type has a different shape as a request than as an answer: both
/// are mistakes in this crate, which daemon/tests/openapi.rs catches.
pub fn openapi() -> Value {
    let mut requests = generator(SchemaSettings::draft2020_12().for_deserialize());
    let mut answers = generator(SchemaSettings::draft2020_12().for_serialize());

    let mut paths: BTreeMap<&str, Map<String, Value>> = BTreeMap::new();
    for route in ROUTES {
        let op = operation(route, &mut requests, &mut answers);
        let previous = paths
            .entry(route.path)
            .or_default()
            .insert(route.method.key().to_owned(), op);
        assert!(
            previous.is_none(),
            "{} {} twice",
            route.method.key(),
            route.path
        );
    }

    let mut schemas = answers.take_definitions(true);
    for (name, request) in requests.take_definitions(true) {
        match schemas.get(&name) {
            Some(answer) if *answer != request => panic!(
                "{name} is sent both ways with different shapes (a serde default?): make it one \
                 shape, or split it into a request type and an answer type"
            ),
            Some(_) => {}
            None => {
                schemas.insert(name, request);
            }
        }
    }
    let schemas: BTreeMap<String, Value> = schemas.into_iter().collect();

    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "kiln HTTP API",
            "version": "1",
            "summary": "The API of `kiln daemon`: teams submit and follow runs, workers lease \
                        and report steps.",
            "description": "Generated by `kiln_daemon::http::openapi::openapi` (the component \
                            schemas from the wire types in `kiln_core::api::v1`); semantics in \
                            docs/api.md. Regenerate with `KILN_UPDATE_OPENAPI=1 cargo test -p \
                            kiln-daemon --test openapi`.",
            "license": { "name": "Apache-2.0", "identifier": "Apache-2.0" },
        },
        "servers": [{
            "url": "http://127.0.0.1:7420",
            "description": "`kiln daemon` with its default `--listen`; with `--tls`, `https://`.",
        }],
        "tags": Tag::ALL
            .iter()
            .map(|t| json!({ "name": t.name(), "description": t.description() }))
            .collect::<Vec<_>>(),
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "teamToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A team's API token (`kiln-team-<64 hex>`, made by `kiln \
                                    admin token create --team NAME`), with or without `--tls`.",
                },
                "workerCertificate": {
                    "type": "mutualTLS",
                    "description": "Under `kiln daemon --tls`: a client certificate from the \
                                    daemon's CA naming a worker (`spiffe://kiln/worker/<id>`), \
                                    got by `POST /v1/join`. Without `--tls` the daemon listens \
                                    on loopback and worker routes take no credential (the \
                                    empty alternative in their `security`).",
                },
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The limits the descriptions name are the code's.
    #[test]
    fn described_limits_are_the_codes() {
        let limits = super::super::BodyLimits::default();
        assert_eq!(limits.json_bytes, 16 << 20, "JSON_REJECTIONS: 413");
        assert_eq!(limits.blob_bytes, 16 << 30, "putBlob: 413");
        assert_eq!(logs::LIVE_CHUNK_MAX, 1 << 20, "appendStepLog");
        assert_eq!(logs::LIVE_LOG_CAP, 64 << 20, "appendStepLog: 413");
        assert_eq!(crate::MAX_CLAIM_WAIT.as_secs(), 10, "claimLease");
    }

    /// Every path parameter has a description, and the table has each route once.
    #[test]
    fn the_table_builds() {
        let doc = openapi();
        let operations: usize = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .map(|item| item.as_object().unwrap().len())
            .sum();
        assert_eq!(operations, ROUTES.len());
        for route in ROUTES {
            let op = &doc["paths"][route.path][route.method.key()];
            let params: Vec<&str> = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "path")
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            let expected: Vec<&str> = path_parameter_names(route.path).collect();
            assert_eq!(params, expected, "{}", route.path);
        }
    }
}
