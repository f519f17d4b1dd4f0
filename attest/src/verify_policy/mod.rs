//! Policy-based verification: what a consumer requires of an artifact's provenance, checked
//! rule by rule, and the signed SLSA Verification Summary Attestation (VSA) that records the
//! outcome.
//!
//! The data flow is parse, then trust, then judge:
//!
//! 1. [`VerifyPolicy::load`]: `verify-policy.yaml` → raw serde structs (`deny_unknown_fields`,
//!    budgets, every node's position kept) → a validated [`VerifyPolicy`]. Every problem is
//!    collected at once, each a one-line `FILE:LINE:COL: MESSAGE` [`PolicyDiagnostic`]. The
//!    trusted builder keys are SPKI PEM files named relative to the policy file.
//! 2. [`RevocationList::parse`] and [`Advisories::parse`]: the optional revocation list and OSV
//!    advisories, also checked before use.
//! 3. [`evaluate`]: the envelope's signature is checked first, with each trusted key in turn;
//!    only a statement that verified is read, and each configured rule yields one
//!    [`RuleResult`] (every failing rule, not just the first). Rules never see unverified data:
//!    when no trusted key signed the provenance, every other rule is skipped.
//! 4. [`vsa`]: the outcome as an in-toto statement with predicate
//!    `https://slsa.dev/verification_summary/v1`, signed with kiln's DSSE code.
//!
//! Invariant: no cryptography here either; signatures are checked through
//! [`crate::dsse`] and [`crate::attestation`]. Evaluation performs no I/O: the clock is an
//! input (`now`), so every result can be reproduced.

mod evaluate;
mod feeds;
mod parse;
pub mod vsa;

pub use evaluate::{Evidence, Outcome, PolicyReport, Rule, RuleResult, VerifyInputs, evaluate};
pub use feeds::{Advisories, Advisory, FeedError, Revocation, RevocationList};
pub use kiln_core::glob::glob_match;
pub use parse::{
    DependencyMatcher, FeedRequirement, PipelineRule, PolicyDiagnostic, SourceRule, TrustedKey,
    VerifyPolicy, VerifyPolicyError,
};
pub use vsa::{
    VSA_PREDICATE_TYPE, VerificationResult, VerificationSummary, Verifier, VsaError, VsaRequest,
    build_vsa, verify_vsa,
};
