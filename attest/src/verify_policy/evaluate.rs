//! Evaluating a [`VerifyPolicy`] against an artifact and its provenance.
//!
//! Order: the signature first, under each trusted key in turn (`builder-key`), then the
//! envelope's remaining checks (`statement`: payload type, statement and predicate types, the
//! artifact among the subjects), and only then the rules that read the predicate. When either
//! of the first two fails, the other rules are reported as skipped: they would be judging
//! claims nobody trusted vouched for.

use std::fmt;

use kiln_core::Sha256Digest;
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use super::feeds::{Advisories, RevocationList};
use super::parse::{DependencyMatcher, FeedRequirement, TrustedKey, VerifyPolicy};
use crate::attestation::{ArtifactRef, EnvelopeCheckError, VerifiedProvenance, VerifyError};
use crate::bundle::BundleError;
use crate::intoto::ResourceDescriptor;
use crate::{verify_bundle, verify_provenance};
use kiln_core::glob::glob_match;

/// A build claiming to have finished more than this far in the future fails `max-age`.
const CLOCK_SKEW: Duration = Duration::minutes(5);

/// The file that carries the signed provenance.
#[derive(Clone, Copy, Debug)]
pub enum Evidence<'a> {
    /// `ARTIFACT.intoto.jsonl`: one DSSE envelope per line.
    Jsonl(&'a str),
    /// `ARTIFACT.sigstore.json`: a Sigstore bundle v0.3.
    Bundle(&'a str),
}

/// Everything one policy check looks at besides the policy.
#[derive(Clone, Copy, Debug)]
pub struct VerifyInputs<'a> {
    /// SHA-256 of the artifact file the consumer holds.
    pub artifact: Sha256Digest,
    pub evidence: Evidence<'a>,
    /// The time the check is made "as of": ages are measured to it.
    pub now: OffsetDateTime,
    pub revocations: Option<&'a RevocationList>,
    pub advisories: Option<&'a Advisories>,
}

/// A policy rule; [`Rule::name`] is the stable name printed on failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rule {
    BuilderKey,
    Statement,
    BuilderId,
    Pipeline,
    Source,
    DependenciesForbidden,
    DependenciesRequired,
    MaxAge,
    Revoked,
    Vulnerable,
}

impl Rule {
    /// The rule's stable name, as printed and as written in documentation.
    pub fn name(self) -> &'static str {
        match self {
            Self::BuilderKey => "builder-key",
            Self::Statement => "statement",
            Self::BuilderId => "builder-id",
            Self::Pipeline => "pipeline",
            Self::Source => "source",
            Self::DependenciesForbidden => "dependencies-forbidden",
            Self::DependenciesRequired => "dependencies-required",
            Self::MaxAge => "max-age",
            Self::Revoked => "revoked",
            Self::Vulnerable => "vulnerable",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How one rule came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail,
    /// Not evaluated: the provenance was not verified, or an optional feed was not given.
    Skip,
}

impl Outcome {
    /// `ok`, `FAIL` or `skip`, as printed.
    pub fn label(self) -> &'static str {
        match self {
            Self::Pass => "ok",
            Self::Fail => "FAIL",
            Self::Skip => "skip",
        }
    }
}

/// One rule's outcome and what it saw, on one line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleResult {
    pub rule: Rule,
    pub outcome: Outcome,
    pub detail: String,
}

/// The outcome of every rule the policy configures.
#[derive(Clone, Debug)]
pub struct PolicyReport {
    /// In a fixed order: `builder-key`, `statement`, then the predicate's rules.
    pub results: Vec<RuleResult>,
    /// The provenance, when a trusted key's signature and the envelope checks passed.
    pub verified: Option<VerifiedProvenance>,
    /// The policy's name (file) for the key that signed, when one did.
    pub signer: Option<String>,
}

impl PolicyReport {
    /// Whether the artifact meets the policy: verified, and no rule failed.
    pub fn passed(&self) -> bool {
        self.verified.is_some() && self.results.iter().all(|r| r.outcome != Outcome::Fail)
    }

    /// The rules that failed, in report order.
    pub fn failed(&self) -> impl Iterator<Item = &RuleResult> {
        self.results.iter().filter(|r| r.outcome == Outcome::Fail)
    }

    /// The result of `rule`, when the policy configures it.
    pub fn result(&self, rule: Rule) -> Option<&RuleResult> {
        self.results.iter().find(|r| r.rule == rule)
    }
}

/// Checks the artifact and its provenance against `policy`. Never stops at the first failing
/// rule: every configured rule gets a result.
pub fn evaluate(policy: &VerifyPolicy, inputs: &VerifyInputs<'_>) -> PolicyReport {
    let mut results = Vec::new();
    let (verified, signer) = match authenticate(policy, inputs) {
        Authenticated::Yes { verified, key } => {
            results.push(pass(
                Rule::BuilderKey,
                format!(
                    "signed by {} (key {}){}",
                    key.file,
                    verified.keyid,
                    window_text(key)
                ),
            ));
            results.push(pass(
                Rule::Statement,
                "an in-toto Statement v1 with SLSA Provenance v1, and the artifact is its subject"
                    .into(),
            ));
            (Some(*verified), Some(key.file.clone()))
        }
        Authenticated::KeyFailed(detail) => {
            results.push(fail(Rule::BuilderKey, detail));
            results.push(skip(
                Rule::Statement,
                "not evaluated: no trusted key signed it".into(),
            ));
            (None, None)
        }
        Authenticated::StatementFailed { key, detail } => {
            results.push(pass(Rule::BuilderKey, format!("signed by {}", key.file)));
            results.push(fail(Rule::Statement, detail));
            (None, Some(key.file.clone()))
        }
    };
    let rules = configured_rules(policy);
    match &verified {
        None => {
            for rule in rules {
                results.push(skip(
                    rule,
                    "not evaluated: the provenance is not verified".into(),
                ));
            }
        }
        Some(v) => {
            let judge = Judge {
                policy,
                inputs,
                verified: v,
            };
            for rule in rules {
                results.push(judge.rule(rule));
            }
        }
    }
    PolicyReport {
        results,
        verified,
        signer,
    }
}

fn configured_rules(policy: &VerifyPolicy) -> Vec<Rule> {
    let mut rules = Vec::new();
    if policy.builder_id.is_some() {
        rules.push(Rule::BuilderId);
    }
    if policy.pipeline.is_some() {
        rules.push(Rule::Pipeline);
    }
    if policy.source.is_some() {
        rules.push(Rule::Source);
    }
    if !policy.forbidden.is_empty() {
        rules.push(Rule::DependenciesForbidden);
    }
    if !policy.required.is_empty() {
        rules.push(Rule::DependenciesRequired);
    }
    if policy.max_age_days.is_some() {
        rules.push(Rule::MaxAge);
    }
    rules.push(Rule::Revoked);
    rules.push(Rule::Vulnerable);
    rules
}

fn pass(rule: Rule, detail: String) -> RuleResult {
    RuleResult {
        rule,
        outcome: Outcome::Pass,
        detail: one_line(detail),
    }
}

fn fail(rule: Rule, detail: String) -> RuleResult {
    RuleResult {
        rule,
        outcome: Outcome::Fail,
        detail: one_line(detail),
    }
}

fn skip(rule: Rule, detail: String) -> RuleResult {
    RuleResult {
        rule,
        outcome: Outcome::Skip,
        detail: one_line(detail),
    }
}

enum Authenticated<'p> {
    Yes {
        verified: Box<VerifiedProvenance>,
        key: &'p TrustedKey,
    },
    /// No trusted key vouches for the provenance.
    KeyFailed(String),
    /// A trusted key signed it, but it is not provenance for this artifact.
    StatementFailed { key: &'p TrustedKey, detail: String },
}

/// Why one key did not verify the evidence.
enum KeyAttempt {
    /// The file is not an envelope file or bundle kiln can read: the same for every key.
    Framing(String),
    /// No signature verified under the key.
    Signature,
    /// The key's signature verified; a later check failed.
    Statement(String),
}

fn attempt(key: &TrustedKey, inputs: &VerifyInputs<'_>) -> Result<VerifiedProvenance, KeyAttempt> {
    let artifact = ArtifactRef::Digest(inputs.artifact);
    let is_signature = |e: &EnvelopeCheckError| {
        matches!(
            e,
            EnvelopeCheckError::NoSignatures
                | EnvelopeCheckError::TooManySignatures { .. }
                | EnvelopeCheckError::SignatureInvalid { .. }
        )
    };
    match inputs.evidence {
        Evidence::Jsonl(text) => {
            verify_provenance(artifact, text, &key.key).map_err(|e| match &e {
                VerifyError::Check { err, .. } if is_signature(err) => KeyAttempt::Signature,
                VerifyError::Check { .. } => KeyAttempt::Statement(e.to_string()),
                _ => KeyAttempt::Framing(e.to_string()),
            })
        }
        Evidence::Bundle(text) => verify_bundle(artifact, text, &key.key).map_err(|e| match &e {
            BundleError::Check(err) if is_signature(err) => KeyAttempt::Signature,
            BundleError::Check(_) => KeyAttempt::Statement(e.to_string()),
            _ => KeyAttempt::Framing(e.to_string()),
        }),
    }
}

fn authenticate<'p>(policy: &'p VerifyPolicy, inputs: &VerifyInputs<'_>) -> Authenticated<'p> {
    let mut outside_window = Vec::new();
    let mut statement_failure = None;
    let mut framing = None;
    for key in &policy.keys {
        match attempt(key, inputs) {
            Ok(verified) => {
                let finished = finished_on(&verified);
                if in_window(key, finished) {
                    return Authenticated::Yes {
                        verified: Box::new(verified),
                        key,
                    };
                }
                outside_window.push(format!(
                    "signed by {} (key {}), which the policy trusts only for builds finished{}; this build finished {}",
                    key.file,
                    key.key.keyid(),
                    window_text(key),
                    finished.map_or("at an unrecorded time".into(), fmt_time)
                ));
            }
            Err(KeyAttempt::Statement(detail)) => {
                statement_failure.get_or_insert((key, detail));
            }
            Err(KeyAttempt::Framing(detail)) => {
                framing.get_or_insert(detail);
            }
            Err(KeyAttempt::Signature) => {}
        }
    }
    if !outside_window.is_empty() {
        return Authenticated::KeyFailed(outside_window.join("; "));
    }
    if let Some((key, detail)) = statement_failure {
        return Authenticated::StatementFailed { key, detail };
    }
    if let Some(detail) = framing {
        return Authenticated::KeyFailed(format!("{detail}: nothing to verify"));
    }
    let names: Vec<String> = policy
        .keys
        .iter()
        .map(|k| format!("{} {}", k.file, short(&k.key.keyid().to_string())))
        .collect();
    Authenticated::KeyFailed(format!(
        "no signature verifies under any trusted key ({}): the provenance was altered or signed by another key",
        names.join(", ")
    ))
}

fn finished_on(v: &VerifiedProvenance) -> Option<OffsetDateTime> {
    v.statement
        .predicate
        .run_details
        .metadata
        .as_ref()
        .and_then(|m| m.finished_on)
}

fn in_window(key: &TrustedKey, finished: Option<OffsetDateTime>) -> bool {
    if key.valid_from.is_none() && key.valid_until.is_none() {
        return true;
    }
    let Some(t) = finished else {
        return false;
    };
    key.valid_from.is_none_or(|f| t >= f) && key.valid_until.is_none_or(|u| t <= u)
}

fn window_text(key: &TrustedKey) -> String {
    match (key.valid_from, key.valid_until) {
        (None, None) => String::new(),
        (Some(f), None) => format!(" from {}", fmt_time(f)),
        (None, Some(u)) => format!(" until {}", fmt_time(u)),
        (Some(f), Some(u)) => format!(" from {} until {}", fmt_time(f), fmt_time(u)),
    }
}

fn fmt_time(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

/// The first 12 characters of a digest or key id, for display.
fn short(hex: &str) -> String {
    format!("{}…", hex.chars().take(12).collect::<String>())
}

/// Details quote signed but foreign text (builder ids, names, reasons): keep each on one line.
fn one_line(detail: String) -> String {
    if !detail.chars().any(char::is_control) {
        return detail;
    }
    detail
        .chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A dependency as printed: name (or uri) and short digest.
fn describe(d: &ResourceDescriptor) -> String {
    let name = d
        .name
        .as_deref()
        .or(d.uri.as_deref())
        .unwrap_or("(unnamed)");
    match d.digest.sha256 {
        Some(s) => format!("{name} (sha256:{})", short(&s.to_string())),
        None => name.to_owned(),
    }
}

fn matches(m: &DependencyMatcher, d: &ResourceDescriptor) -> bool {
    m.name
        .as_ref()
        .is_none_or(|g| d.name.as_deref().is_some_and(|n| glob_match(g, n)))
        && m.uri
            .as_ref()
            .is_none_or(|g| d.uri.as_deref().is_some_and(|u| glob_match(g, u)))
        && m.sha256.is_none_or(|s| d.digest.sha256 == Some(s))
}

/// A git source in the SLSA convention: `git+<repo-url>@<ref>`, `digest.gitCommit`.
struct GitSource<'a> {
    repository: &'a str,
    git_ref: Option<&'a str>,
    commit: Option<&'a str>,
}

fn git_source(d: &ResourceDescriptor) -> Option<GitSource<'_>> {
    let rest = d.uri.as_deref()?.strip_prefix("git+")?;
    // The ref follows the last `@`, unless that `@` is a user name's in the URL's authority
    // (`ssh://git@host/repo` has no ref).
    let (repository, git_ref) = match rest.rsplit_once('@') {
        Some((repo, r)) => {
            let in_authority = repo
                .split_once("://")
                .is_some_and(|(_, after)| !after.contains('/'));
            if in_authority {
                (rest, None)
            } else {
                (repo, Some(r))
            }
        }
        None => (rest, None),
    };
    Some(GitSource {
        repository,
        git_ref,
        commit: d.digest.other.get("gitCommit").map(String::as_str),
    })
}

struct Judge<'a> {
    policy: &'a VerifyPolicy,
    inputs: &'a VerifyInputs<'a>,
    verified: &'a VerifiedProvenance,
}

impl Judge<'_> {
    fn deps(&self) -> &[ResourceDescriptor] {
        &self
            .verified
            .statement
            .predicate
            .build_definition
            .resolved_dependencies
    }

    fn rule(&self, rule: Rule) -> RuleResult {
        match rule {
            Rule::BuilderKey | Rule::Statement => unreachable!("judged by authenticate"),
            Rule::BuilderId => self.builder_id(),
            Rule::Pipeline => self.pipeline(),
            Rule::Source => self.source(),
            Rule::DependenciesForbidden => self.forbidden(),
            Rule::DependenciesRequired => self.required(),
            Rule::MaxAge => self.max_age(),
            Rule::Revoked => self.revoked(),
            Rule::Vulnerable => self.vulnerable(),
        }
    }

    fn builder_id(&self) -> RuleResult {
        let want = self.policy.builder_id.as_deref().unwrap_or("*");
        let id = &self.verified.statement.predicate.run_details.builder.id;
        if glob_match(want, id) {
            pass(Rule::BuilderId, format!("builder {id} matches {want:?}"))
        } else {
            fail(
                Rule::BuilderId,
                format!("builder is {id:?}, the policy requires {want:?}"),
            )
        }
    }

    fn pipeline(&self) -> RuleResult {
        let Some(want) = &self.policy.pipeline else {
            return skip(Rule::Pipeline, "not configured".into());
        };
        let def = &self.verified.statement.predicate.build_definition;
        let p = &def.external_parameters["pipeline"];
        let (Some(name), sha) = (p["name"].as_str(), p["sha256"].as_str()) else {
            return fail(
                Rule::Pipeline,
                format!(
                    "the provenance names no pipeline (buildType {}, no externalParameters.pipeline.name)",
                    def.build_type
                ),
            );
        };
        let mut problems = Vec::new();
        if !glob_match(&want.name, name) {
            problems.push(format!(
                "pipeline is {name:?}, the policy requires {:?}",
                want.name
            ));
        }
        if let Some(d) = want.sha256
            && sha != Some(d.to_string().as_str())
        {
            problems.push(format!(
                "pipeline file sha256 is {}, the policy requires {d}",
                sha.unwrap_or("absent")
            ));
        }
        if problems.is_empty() {
            let sha = sha
                .map(|s| format!(" (sha256:{})", short(s)))
                .unwrap_or_default();
            pass(Rule::Pipeline, format!("pipeline {name:?}{sha}"))
        } else {
            fail(Rule::Pipeline, problems.join("; "))
        }
    }

    fn source(&self) -> RuleResult {
        let Some(want) = &self.policy.source else {
            return skip(Rule::Source, "not configured".into());
        };
        let sources: Vec<GitSource<'_>> = self.deps().iter().filter_map(git_source).collect();
        if sources.is_empty() {
            return fail(
                Rule::Source,
                format!(
                    "the provenance records no git source (a resolvedDependencies entry git+URL@REF with digest.gitCommit); the policy requires repository {:?}",
                    want.repository
                ),
            );
        }
        let mut problems = Vec::new();
        let mut seen = Vec::new();
        for s in &sources {
            let label = format!("{}@{}", s.repository, s.git_ref.unwrap_or("(no ref)"));
            if !glob_match(&want.repository, s.repository) {
                problems.push(format!(
                    "source repository {:?} does not match {:?}",
                    s.repository, want.repository
                ));
            }
            if let Some(r) = &want.git_ref
                && !s.git_ref.is_some_and(|g| glob_match(r, g))
            {
                problems.push(format!(
                    "source {label}: ref {:?} does not match {r:?}",
                    s.git_ref.unwrap_or("(none)")
                ));
            }
            if let Some(c) = &want.commit
                && !s.commit.is_some_and(|g| glob_match(c, g))
            {
                problems.push(format!(
                    "source {label}: commit {:?} does not match {c:?}",
                    s.commit.unwrap_or("(none)")
                ));
            }
            seen.push(
                format!("{label} {}", s.commit.unwrap_or(""))
                    .trim_end()
                    .to_owned(),
            );
        }
        if problems.is_empty() {
            pass(Rule::Source, format!("git source {}", seen.join(", ")))
        } else {
            fail(Rule::Source, problems.join("; "))
        }
    }

    fn forbidden(&self) -> RuleResult {
        let mut hits = Vec::new();
        for m in &self.policy.forbidden {
            for d in self.deps().iter().filter(|d| matches(m, d)) {
                hits.push(format!("{} is forbidden ({m})", describe(d)));
            }
        }
        if hits.is_empty() {
            pass(
                Rule::DependenciesForbidden,
                format!(
                    "none of {} dependencies matches the {} forbidden entries",
                    self.deps().len(),
                    self.policy.forbidden.len()
                ),
            )
        } else {
            fail(Rule::DependenciesForbidden, hits.join("; "))
        }
    }

    fn required(&self) -> RuleResult {
        let mut missing = Vec::new();
        let mut found = Vec::new();
        for m in &self.policy.required {
            match self.deps().iter().find(|d| matches(m, d)) {
                Some(d) => found.push(describe(d)),
                None => missing.push(format!("no dependency matches required entry ({m})")),
            }
        }
        if missing.is_empty() {
            pass(
                Rule::DependenciesRequired,
                format!("present: {}", found.join(", ")),
            )
        } else {
            fail(Rule::DependenciesRequired, missing.join("; "))
        }
    }

    fn max_age(&self) -> RuleResult {
        let max = self.policy.max_age_days.unwrap_or(u32::MAX);
        let Some(finished) = finished_on(self.verified) else {
            return fail(
                Rule::MaxAge,
                "the provenance records no runDetails.metadata.finishedOn, so its age is unknown"
                    .into(),
            );
        };
        let now = self.inputs.now;
        if finished > now + CLOCK_SKEW {
            return fail(
                Rule::MaxAge,
                format!(
                    "built {} which is after now ({}): the build time is not believable",
                    fmt_time(finished),
                    fmt_time(now)
                ),
            );
        }
        let age = now - finished;
        let days = age.whole_days().max(0);
        let text = format!(
            "built {} ({days} days ago), the policy allows {max}",
            fmt_time(finished)
        );
        if age > Duration::days(i64::from(max)) {
            fail(Rule::MaxAge, text)
        } else {
            pass(Rule::MaxAge, text)
        }
    }

    fn revoked(&self) -> RuleResult {
        let Some(list) = self.inputs.revocations else {
            return match self.policy.revocations {
                FeedRequirement::Required => fail(
                    Rule::Revoked,
                    "the policy requires a revocation list and none was given: pass --revocations FILE"
                        .into(),
                ),
                FeedRequirement::IfGiven => {
                    skip(Rule::Revoked, "no revocation list given".into())
                }
            };
        };
        let finished = finished_on(self.verified);
        let mut hits = Vec::new();
        for d in self.deps() {
            let (Some(name), Some(sha)) = (d.name.as_deref(), d.digest.sha256) else {
                continue;
            };
            for r in list
                .entries
                .iter()
                .filter(|r| r.name == name && r.sha256 == sha)
            {
                let when = match finished {
                    Some(f) if r.revoked_at > f => {
                        format!("after the build, which finished {}", fmt_time(f))
                    }
                    Some(f) => format!("before the build, which finished {}", fmt_time(f)),
                    None => "the build time is not recorded".into(),
                };
                hits.push(format!(
                    "{} was revoked {} ({when}): {}",
                    describe(d),
                    fmt_time(r.revoked_at),
                    r.reason
                ));
            }
        }
        if hits.is_empty() {
            pass(
                Rule::Revoked,
                format!(
                    "no dependency is among the {} revoked entries",
                    list.entries.len()
                ),
            )
        } else {
            fail(Rule::Revoked, hits.join("; "))
        }
    }

    fn vulnerable(&self) -> RuleResult {
        let Some(advisories) = self.inputs.advisories else {
            return match self.policy.advisories {
                FeedRequirement::Required => fail(
                    Rule::Vulnerable,
                    "the policy requires advisories and none were given: pass --advisories FILE"
                        .into(),
                ),
                FeedRequirement::IfGiven => skip(Rule::Vulnerable, "no advisories given".into()),
            };
        };
        let mut hits = Vec::new();
        let mut unevaluated = Vec::new();
        for d in self.deps() {
            if d.uri.as_deref().is_some_and(|u| u.starts_with("git+")) {
                continue;
            }
            let Some((name, version)) = d.name.as_deref().and_then(|n| n.rsplit_once('@')) else {
                continue;
            };
            for rec in &advisories.records {
                for a in rec.affected.iter().filter(|a| a.name == name) {
                    if a.versions.iter().any(|v| v == version) {
                        let summary = rec
                            .summary
                            .as_deref()
                            .map(|s| format!(": {s}"))
                            .unwrap_or_default();
                        hits.push(format!(
                            "{} is affected by {}{summary}",
                            describe(d),
                            rec.id
                        ));
                    } else if a.has_ranges {
                        unevaluated.push(format!("{} for {name}", rec.id));
                    }
                }
            }
        }
        let note = if unevaluated.is_empty() {
            String::new()
        } else {
            format!(
                " (version ranges are not evaluated: {})",
                unevaluated.join(", ")
            )
        };
        if hits.is_empty() {
            pass(
                Rule::Vulnerable,
                format!(
                    "no dependency is listed as affected by the {} advisories{note}",
                    advisories.records.len()
                ),
            )
        } else {
            fail(Rule::Vulnerable, format!("{}{note}", hits.join("; ")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(uri: &str, commit: Option<&str>) -> ResourceDescriptor {
        let mut d = ResourceDescriptor {
            uri: Some(uri.into()),
            ..Default::default()
        };
        if let Some(c) = commit {
            d.digest.other.insert("gitCommit".into(), c.into());
        }
        d
    }

    #[test]
    fn details_stay_on_one_line_and_short_digests_never_split_a_character() {
        let r = fail(Rule::BuilderId, "builder is \"a\nb\" …".into());
        assert_eq!(r.detail, "builder is \"a\\nb\" …");
        assert_eq!(short("ééééééééééééééé"), "éééééééééééé…");
    }

    #[test]
    fn git_sources_split_repository_and_ref_in_the_slsa_convention() {
        let d = desc(
            "git+https://github.com/acme/app@refs/heads/main",
            Some("ab"),
        );
        let s = git_source(&d).unwrap();
        assert_eq!(s.repository, "https://github.com/acme/app");
        assert_eq!(s.git_ref, Some("refs/heads/main"));
        assert_eq!(s.commit, Some("ab"));
        let d = desc("git+ssh://git@github.com/acme/app", None);
        let s = git_source(&d).unwrap();
        assert_eq!(s.repository, "ssh://git@github.com/acme/app");
        assert_eq!(s.git_ref, None);
        let d = desc("git+ssh://git@github.com/acme/app@v1", None);
        assert_eq!(git_source(&d).unwrap().git_ref, Some("v1"));
        assert!(git_source(&desc("kiln:mirror/a@1", None)).is_none());
    }
}
