//! kiln's evidence: signing keys, DSSE envelopes, in-toto statements, SLSA provenance,
//! Sigstore bundles and SBOMs.
//!
//! The daemon uses this crate to sign what a run produced; `kiln verify` uses it to check an
//! artifact against its `ARTIFACT.intoto.jsonl` without linking the controller, and
//! [`verify_bundle`] checks the Sigstore bundle `ARTIFACT.sigstore.json` the same way.
//!
//! - [`keys`]: ECDSA P-256 key files (`kiln.key`, `kiln.pub`) and key ids.
//! - [`dsse`]: the DSSE v1 envelope, PAE, signing and signature checking.
//! - [`intoto`], [`slsa`]: wire types of the in-toto Statement v1 and SLSA Provenance v1.
//! - [`provenance`]: builds the statement for one artifact from step records
//!   (build type `https://kiln.dev/buildtypes/pipeline/v1`, see docs/build-type.md).
//! - [`attestation`]: the `.intoto.jsonl` file and [`verify_provenance`].
//! - [`run_attestation`]: the signed `run.intoto.jsonl` naming how a whole run ended
//!   (succeeded, failed or cancelled) and its step records (see docs/run-attestation.md).
//! - [`bundle`]: the `.sigstore.json` file (Sigstore bundle v0.3, key-based) and
//!   [`verify_bundle`], which makes the same envelope checks as [`verify_provenance`].
//! - [`sbom`]: the SPDX 2.3 and CycloneDX 1.6 SBOMs of an artifact (`.spdx.json`,
//!   `.cdx.json`) and their signed in-toto forms (`.spdx.intoto.jsonl`, `.cdx.intoto.jsonl`),
//!   built from the same request and checks as the provenance (see docs/sbom.md).
//! - [`verify_policy`]: a consumer's verification policy (`verify-policy.yaml`) evaluated
//!   against verified provenance, rule by rule, and the signed SLSA Verification Summary
//!   Attestation that records the outcome (see docs/verifying.md).
//! - [`tlog`]: the step log: RFC 6962 Merkle tree hashing and proofs, C2SP checkpoints signed
//!   as notes with the daemon's Ed25519 log key, and the whole-log audit (see docs/step-log.md).
//!
//! Invariant: no cryptography is implemented here. Key generation, signing and signature
//! verification all go through the `sigstore` crate; this crate only encodes what is signed.
//! It performs no network I/O, and touches the filesystem only to read and write key files
//! and to read a verification policy.
#![forbid(unsafe_code)]

pub mod attestation;
pub mod bundle;
pub mod dsse;
pub mod intoto;
pub mod keyring;
pub mod keys;
pub mod provenance;
pub mod run_attestation;
pub mod sbom;
pub mod slsa;
pub mod tlog;
pub mod verify_policy;

pub use attestation::{
    ArtifactRef, EnvelopeCheckError, SignError, VerifiedProvenance, VerifyError,
    provenance_file_name, sign_statement, to_jsonl, verify_provenance,
};
pub use bundle::{
    Bundle, BundleError, PublicKeyIdentifier, VerificationMaterial, bundle_file_name, to_bundle,
    verify_bundle,
};
pub use dsse::{DsseError, Envelope, EnvelopeSignature};
pub use intoto::{DigestSet, ResourceDescriptor, Statement};
pub use keys::{KeyAlgorithm, KeyError, KeyFiles, KeyId, KeyPair, KeyParseError, PublicKey};
pub use provenance::{
    Artifact, BuilderInfo, PipelineParameter, ProvenanceError, ProvenanceRequest, build_statement,
};
pub use run_attestation::{
    RunAttestationError, RunAttestationRequest, RunOutcome, RunVerifyError, StepInput, StepOutcome,
    VerifiedRunAttestation, sign_run_attestation, verify_run_attestation,
};
pub use sbom::{
    RootfsPackage, RootfsPackages, RootfsPackagesError, SbomFiles, SbomInputs, Sboms, build_sboms,
    build_sboms_with, cyclonedx_attestation_file_name, cyclonedx_file_name,
    spdx_attestation_file_name, spdx_file_name,
};
pub use slsa::Provenance;
