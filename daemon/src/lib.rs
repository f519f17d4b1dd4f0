//! kiln's controller: durable state, the mirror catalogue, scheduling of a run's steps onto
//! workers, and provenance signing.
//!
//! Invariant: the daemon never runs step code and never links the sandbox; it hands
//! [`kiln_core::StepSpec`]s to an executor and receives [`kiln_core::StepRecord`]s back.
//! Invariant: the signing key is read only here.
//!
//! Two ways to drive a run: the all-in-one mode calls [`run::accept`], [`schedule::drive`] and
//! [`publish::publish`] in one process; `kiln daemon` ([`http::Server`]) accepts runs over
//! HTTP and leases their steps to workers through the [`dispatch::Dispatcher`].
#![forbid(unsafe_code)]

pub mod admission;
pub mod advisories;
pub mod affected;
pub mod audit;
pub mod controller;
pub mod dispatch;
pub mod evidence;
pub mod git_sources;
pub mod http;
pub mod metrics;
pub mod pki;
pub mod policy;
pub mod publish;
pub mod rootfs_packages;
pub mod run;
pub mod run_attestation;
pub mod schedule;
pub mod state;
pub mod steplog;
pub mod why;

pub use controller::{Controller, ControllerError};
pub use dispatch::{Clock, DispatchConfig, Dispatcher, MAX_CLAIM_WAIT, SystemClock};
pub use http::{Server, ServerConfig, ServerError};
pub use run::{AcceptError, AcceptedRun, PipelineSource};
pub use schedule::{BoxFuture, RunEvent, StepExecutor};
