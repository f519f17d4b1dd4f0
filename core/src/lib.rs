//! Domain types that more than one kiln crate needs: content digests, mirror references, the
//! step specification the controller hands to a worker, and the step record a worker reports.
//!
//! Invariant: this crate performs no I/O beyond hashing a reader it is handed, and knows nothing
//! of YAML, Linux or databases. Types here that derive `Serialize` are wire formats: changing
//! their shape is a versioned change.
#![forbid(unsafe_code)]

pub mod api;
pub mod digest;
pub mod glob;
pub mod labels;
pub mod mirror_ref;
pub mod record;
pub mod spec;

pub use digest::{DigestError, Sha256Digest};
pub use mirror_ref::{MirrorRef, MirrorRefError};
pub use record::{
    ExitRecord, LimitEventRecord, LimitsRecord, LogRecord, OutputRecord, SandboxRecord, StepRecord,
    UsageRecord,
};
pub use spec::{
    BlobKind, GitInput, GitSigner, InputSource, MirrorInput, ResourceRequest, StagedInput, StepSpec,
};
