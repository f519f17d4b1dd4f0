//! kiln's controller: durable state, the mirror catalogue, scheduling of a run's steps onto
//! workers, and provenance signing.
//!
//! Invariant: the daemon never runs step code and never links the sandbox; it hands
//! [`kiln_core::StepSpec`]s to an executor and receives [`kiln_core::StepRecord`]s back.
//! Invariant: the signing key is read only here.
#![forbid(unsafe_code)]

pub mod controller;
pub mod publish;
pub mod run;
pub mod schedule;
pub mod state;

pub use controller::{Controller, ControllerError};
pub use run::{AcceptError, AcceptedRun, PipelineSource};
pub use schedule::{BoxFuture, RunEvent, StepExecutor};
