//! `verify-policy.yaml` → [`VerifyPolicy`].
//!
//! YAML → raw structs (`deny_unknown_fields`, each node's position kept) → a validated policy
//! that [`super::evaluate`] trusts: globs checked, digests parsed, times parsed, key files read
//! and parsed. Every problem is collected, each a one-line `FILE:LINE:COL: MESSAGE`.

use std::fmt;
use std::path::{Path, PathBuf};

use kiln_core::Sha256Digest;
use serde::Deserialize;
use serde_saphyr::budget::Budget;
use serde_saphyr::options::DuplicateKeyPolicy;
use serde_saphyr::{MessageFormatter as _, Options, Spanned};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::keys::PublicKey;

/// The largest policy file accepted, in bytes.
const MAX_POLICY_BYTES: usize = 1024 * 1024;
/// At most this many trusted keys, dependency matchers of each kind.
const MAX_ENTRIES: usize = 256;

/// One problem in a policy file, at the node that causes it. Displays as
/// `FILE:LINE:COL: MESSAGE`, always on one line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyDiagnostic {
    pub file: String,
    /// 1-based.
    pub line: usize,
    /// 1-based.
    pub column: usize,
    pub message: String,
}

impl PolicyDiagnostic {
    fn new(file: &str, line: usize, column: usize, message: &str) -> Self {
        let one_line = |s: &str| {
            s.chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect()
        };
        Self {
            file: one_line(file),
            line: line.max(1),
            column: column.max(1),
            message: one_line(message),
        }
    }
}

impl fmt::Display for PolicyDiagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

/// Why a verification policy cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum VerifyPolicyError {
    #[error("cannot read verification policy {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Every problem found, in file order; never empty.
    #[error("{}", .diagnostics.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid { diagnostics: Vec<PolicyDiagnostic> },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    version: Spanned<u32>,
    #[serde(default)]
    uri: Option<Spanned<String>>,
    builder: RawBuilder,
    #[serde(default)]
    pipeline: Option<RawPipeline>,
    #[serde(default)]
    source: Option<RawSource>,
    #[serde(default)]
    dependencies: Option<RawDependencies>,
    #[serde(default)]
    max_age_days: Option<Spanned<u32>>,
    #[serde(default)]
    revocations: Option<Spanned<String>>,
    #[serde(default)]
    advisories: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBuilder {
    keys: Spanned<Vec<RawKey>>,
    #[serde(default)]
    id: Option<Spanned<String>>,
    #[serde(default)]
    slsa_build_level: Option<Spanned<u8>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    file: Spanned<String>,
    #[serde(default)]
    valid_from: Option<Spanned<String>>,
    #[serde(default)]
    valid_until: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPipeline {
    name: Spanned<String>,
    #[serde(default)]
    sha256: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    repository: Spanned<String>,
    #[serde(default, rename = "ref")]
    git_ref: Option<Spanned<String>>,
    #[serde(default)]
    commit: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDependencies {
    #[serde(default)]
    forbidden: Vec<Spanned<RawMatcher>>,
    #[serde(default)]
    required: Vec<Spanned<RawMatcher>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMatcher {
    #[serde(default)]
    name: Option<Spanned<String>>,
    #[serde(default)]
    uri: Option<Spanned<String>>,
    #[serde(default)]
    sha256: Option<Spanned<String>>,
}

/// A builder key the consumer trusts, with the window of build times it may sign for.
#[derive(Clone, Debug)]
pub struct TrustedKey {
    /// The file as the policy names it (relative to the policy file), used in messages.
    pub file: String,
    pub key: PublicKey,
    /// The key signs for builds that finished at or after this time.
    pub valid_from: Option<OffsetDateTime>,
    /// The key signs for builds that finished at or before this time.
    pub valid_until: Option<OffsetDateTime>,
}

/// The `pipeline` rule: `externalParameters.pipeline`.
#[derive(Clone, Debug)]
pub struct PipelineRule {
    /// Glob over the pipeline's name.
    pub name: String,
    pub sha256: Option<Sha256Digest>,
}

/// The `source` rule: git sources among `resolvedDependencies`.
#[derive(Clone, Debug)]
pub struct SourceRule {
    /// Glob over the repository URL (the `uri` without `git+` and without `@REF`).
    pub repository: String,
    /// Glob over the ref after `@` in the `uri`.
    pub git_ref: Option<String>,
    /// Glob over `digest.gitCommit` (lowercase hex).
    pub commit: Option<String>,
}

/// Matches a resolved dependency: every field given must match.
#[derive(Clone, Debug)]
pub struct DependencyMatcher {
    /// Glob over the dependency's `name` (`NAME@VERSION` for mirror inputs).
    pub name: Option<String>,
    /// Glob over the dependency's `uri`.
    pub uri: Option<String>,
    pub sha256: Option<Sha256Digest>,
}

impl fmt::Display for DependencyMatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(n) = &self.name {
            parts.push(format!("name {n:?}"));
        }
        if let Some(u) = &self.uri {
            parts.push(format!("uri {u:?}"));
        }
        if let Some(d) = &self.sha256 {
            parts.push(format!("sha256 {d}"));
        }
        f.write_str(&parts.join(", "))
    }
}

/// Whether a feed (revocation list, advisories) must be given for the policy to pass.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FeedRequirement {
    /// Checked when given; without it the rule is reported as skipped.
    #[default]
    IfGiven,
    /// Without it the rule fails: the consumer does not admit what it could not check.
    Required,
}

/// A validated verification policy.
#[derive(Clone, Debug)]
pub struct VerifyPolicy {
    pub(super) file: PathBuf,
    pub(super) sha256: Sha256Digest,
    pub(super) uri: Option<String>,
    pub(super) keys: Vec<TrustedKey>,
    pub(super) builder_id: Option<String>,
    pub(super) slsa_build_level: Option<u8>,
    pub(super) pipeline: Option<PipelineRule>,
    pub(super) source: Option<SourceRule>,
    pub(super) forbidden: Vec<DependencyMatcher>,
    pub(super) required: Vec<DependencyMatcher>,
    pub(super) max_age_days: Option<u32>,
    pub(super) revocations: FeedRequirement,
    pub(super) advisories: FeedRequirement,
}

impl VerifyPolicy {
    /// Reads and validates the policy at `path`; key files are relative to its directory.
    pub fn load(path: &Path) -> Result<Self, VerifyPolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| VerifyPolicyError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// The file the policy was read from.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// SHA-256 of the policy file's bytes: what a VSA names as the policy's digest.
    pub fn sha256(&self) -> Sha256Digest {
        self.sha256
    }

    /// The policy's own `uri`, when it gives one.
    pub fn uri(&self) -> Option<&str> {
        self.uri.as_deref()
    }

    /// The trusted builder keys, in policy order.
    pub fn keys(&self) -> &[TrustedKey] {
        &self.keys
    }

    /// The SLSA Build level the consumer assigns to the trusted builder, if stated.
    pub fn slsa_build_level(&self) -> Option<u8> {
        self.slsa_build_level
    }

    /// Parses and validates policy text read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Self, VerifyPolicyError> {
        let file = path.display().to_string();
        let mut diags = Diags {
            file: &file,
            list: Vec::new(),
        };
        if text.len() > MAX_POLICY_BYTES {
            diags.push_at(1, 1, "policy file is larger than 1 MiB");
            return Err(diags.into_error());
        }
        let raw: RawPolicy = match serde_saphyr::from_str_with_options(text, options()) {
            Ok(raw) => raw,
            Err(err) => {
                let (line, column) = err.location().map_or((1, 1), position);
                let message = serde_saphyr::DefaultMessageFormatter
                    .format_message(innermost(&err))
                    .into_owned();
                diags.push_at(line, column, &message);
                return Err(diags.into_error());
            }
        };
        let base = path.parent().unwrap_or(Path::new("."));
        let policy = validate(raw, base, text, path, &mut diags);
        if diags.list.is_empty() {
            Ok(policy)
        } else {
            Err(diags.into_error())
        }
    }
}

struct Diags<'a> {
    file: &'a str,
    list: Vec<PolicyDiagnostic>,
}

impl Diags<'_> {
    fn push_at(&mut self, line: usize, column: usize, message: &str) {
        self.list
            .push(PolicyDiagnostic::new(self.file, line, column, message));
    }

    fn push(&mut self, at: serde_saphyr::Location, message: &str) {
        let (line, column) = position(at);
        self.push_at(line, column, message);
    }

    fn into_error(mut self) -> VerifyPolicyError {
        self.list.sort_by_key(|d| (d.line, d.column));
        VerifyPolicyError::Invalid {
            diagnostics: self.list,
        }
    }
}

fn validate(
    raw: RawPolicy,
    base: &Path,
    text: &str,
    path: &Path,
    diags: &mut Diags<'_>,
) -> VerifyPolicy {
    if raw.version.value != 1 {
        diags.push(
            raw.version.referenced,
            &format!(
                "unsupported policy version {}: this kiln reads version 1",
                raw.version.value
            ),
        );
    }
    let uri = raw.uri.map(|u| {
        if u.value.trim().is_empty() || u.value.chars().any(char::is_whitespace) {
            diags.push(u.referenced, "uri must be a URI without spaces");
        }
        u.value
    });

    let keys = validate_keys(&raw.builder.keys, base, diags);
    let builder_id = raw.builder.id.map(|id| {
        if id.value.is_empty() {
            diags.push(
                id.referenced,
                "empty builder id: give the id or a glob such as `https://kiln.dev/builders/*`",
            );
        }
        id.value
    });
    let slsa_build_level = raw.builder.slsa_build_level.map(|l| {
        if l.value > 3 {
            diags.push(
                l.referenced,
                &format!(
                    "slsa_build_level {} does not exist: use 0, 1, 2 or 3",
                    l.value
                ),
            );
        } else if l.value >= 2 && builder_id.is_none() {
            diags.push(
                l.referenced,
                "slsa_build_level 2 or 3 is a claim about one builder: also give `builder.id`",
            );
        }
        l.value
    });

    let pipeline = raw.pipeline.map(|p| {
        non_empty_glob(&p.name, "pipeline name", diags);
        PipelineRule {
            name: p.name.value,
            sha256: p.sha256.and_then(|d| digest(&d, diags)),
        }
    });

    let source = raw.source.map(|s| {
        non_empty_glob(&s.repository, "source repository", diags);
        if let Some(r) = &s.git_ref {
            non_empty_glob(r, "source ref", diags);
        }
        if let Some(c) = &s.commit {
            let ok = !c.value.is_empty()
                && c.value
                    .chars()
                    .all(|ch| matches!(ch, '0'..='9' | 'a'..='f' | '*' | '?'));
            if !ok {
                diags.push(
                    c.referenced,
                    &format!(
                        "commit pattern {:?} is not lowercase hex (with `*` or `?`): give the 40-hex commit or a glob over it",
                        c.value
                    ),
                );
            }
        }
        SourceRule {
            repository: s.repository.value,
            git_ref: s.git_ref.map(|r| r.value),
            commit: s.commit.map(|c| c.value),
        }
    });

    let (mut forbidden, mut required) = (Vec::new(), Vec::new());
    if let Some(deps) = raw.dependencies {
        for (list, out) in [
            (deps.forbidden, &mut forbidden),
            (deps.required, &mut required),
        ] {
            if list.len() > MAX_ENTRIES {
                diags.push_at(1, 1, &format!("more than {MAX_ENTRIES} dependency entries"));
            }
            for m in list {
                out.push(matcher(m, diags));
            }
        }
    }

    let max_age_days = raw.max_age_days.map(|d| {
        if d.value == 0 {
            diags.push(
                d.referenced,
                "max_age_days must be at least 1; leave it out to accept any age",
            );
        }
        d.value
    });

    VerifyPolicy {
        file: path.to_owned(),
        sha256: Sha256Digest::of(text.as_bytes()),
        uri,
        keys,
        builder_id,
        slsa_build_level,
        pipeline,
        source,
        forbidden,
        required,
        max_age_days,
        revocations: requirement(raw.revocations, "revocations", diags),
        advisories: requirement(raw.advisories, "advisories", diags),
    }
}

fn validate_keys(
    raw: &Spanned<Vec<RawKey>>,
    base: &Path,
    diags: &mut Diags<'_>,
) -> Vec<TrustedKey> {
    if raw.value.is_empty() {
        diags.push(
            raw.referenced,
            "builder.keys is empty: name at least one trusted builder public key (SPKI PEM file)",
        );
    }
    if raw.value.len() > MAX_ENTRIES {
        diags.push(raw.referenced, &format!("more than {MAX_ENTRIES} keys"));
    }
    let mut keys = Vec::new();
    for k in &raw.value {
        let from = k.valid_from.as_ref().and_then(|t| time_of(t, diags));
        let until = k.valid_until.as_ref().and_then(|t| time_of(t, diags));
        if let (Some(f), Some(u), Some(at)) = (from, until, &k.valid_until)
            && u < f
        {
            diags.push(at.referenced, "valid_until is before valid_from");
        }
        if k.file.value.is_empty() {
            diags.push(k.file.referenced, "empty key file name");
            continue;
        }
        match PublicKey::from_spki_pem_file(&base.join(&k.file.value)) {
            Ok(key) => keys.push(TrustedKey {
                file: k.file.value.clone(),
                key,
                valid_from: from,
                valid_until: until,
            }),
            Err(e) => diags.push(
                k.file.referenced,
                &format!(
                    "{}; give the path of an SPKI PEM public key, relative to the policy file",
                    chain(&e)
                ),
            ),
        }
    }
    keys
}

fn matcher(m: Spanned<RawMatcher>, diags: &mut Diags<'_>) -> DependencyMatcher {
    let at = m.referenced;
    let m = m.value;
    if m.name.is_none() && m.uri.is_none() {
        diags.push(
            at,
            "a dependency entry needs `name` or `uri` (and optionally `sha256`)",
        );
    }
    for g in [&m.name, &m.uri].into_iter().flatten() {
        non_empty_glob(g, "dependency pattern", diags);
    }
    DependencyMatcher {
        name: m.name.map(|n| n.value),
        uri: m.uri.map(|u| u.value),
        sha256: m.sha256.and_then(|d| digest(&d, diags)),
    }
}

fn requirement(
    raw: Option<Spanned<String>>,
    field: &str,
    diags: &mut Diags<'_>,
) -> FeedRequirement {
    let Some(raw) = raw else {
        return FeedRequirement::IfGiven;
    };
    match raw.value.as_str() {
        "if-given" => FeedRequirement::IfGiven,
        "required" => FeedRequirement::Required,
        other => {
            diags.push(
                raw.referenced,
                &format!("{field}: {other:?} is not `required` or `if-given`"),
            );
            FeedRequirement::IfGiven
        }
    }
}

fn non_empty_glob(g: &Spanned<String>, what: &str, diags: &mut Diags<'_>) {
    if g.value.is_empty() {
        diags.push(
            g.referenced,
            &format!("empty {what}: use `*` to match anything"),
        );
    }
}

fn digest(d: &Spanned<String>, diags: &mut Diags<'_>) -> Option<Sha256Digest> {
    match d.value.parse::<Sha256Digest>() {
        Ok(digest) => Some(digest),
        Err(_) => {
            diags.push(
                d.referenced,
                &format!(
                    "{:?} is not a sha256 digest: give 64 lowercase hex digits",
                    d.value
                ),
            );
            None
        }
    }
}

fn time_of(t: &Spanned<String>, diags: &mut Diags<'_>) -> Option<OffsetDateTime> {
    match OffsetDateTime::parse(&t.value, &Rfc3339) {
        Ok(time) => Some(time),
        Err(_) => {
            diags.push(
                t.referenced,
                &format!(
                    "{:?} is not an RFC 3339 time such as 2026-01-01T00:00:00Z",
                    t.value
                ),
            );
            None
        }
    }
}

/// An error and its sources on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    msg
}

fn position(loc: serde_saphyr::Location) -> (usize, usize) {
    (
        usize::try_from(loc.line()).unwrap_or(1),
        usize::try_from(loc.column()).unwrap_or(1),
    )
}

fn options() -> Options {
    let mut budget = Budget::default();
    budget.max_documents = 1;
    budget.max_depth = 16;
    budget.max_nodes = 50_000;
    budget.max_aliases = 100;
    budget.max_anchors = 100;
    budget.max_total_scalar_bytes = MAX_POLICY_BYTES;
    let mut options = Options::default();
    options.budget = Some(budget);
    options.duplicate_keys = DuplicateKeyPolicy::Error;
    options.strict_booleans = true;
    options.with_snippet = false;
    options
}

fn innermost(mut err: &serde_saphyr::Error) -> &serde_saphyr::Error {
    loop {
        err = match err {
            serde_saphyr::Error::WithSnippet { error, .. }
            | serde_saphyr::Error::AliasError { error, .. } => error,
            other => return other,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyPair;

    fn dir_with_key() -> (tempfile::TempDir, KeyPair) {
        let dir = tempfile::tempdir().unwrap();
        let key = KeyPair::generate().unwrap();
        key.write_key_files(dir.path()).unwrap();
        (dir, key)
    }

    #[test]
    fn a_full_policy_parses_and_keys_resolve_relative_to_the_policy() {
        let (dir, key) = dir_with_key();
        let path = dir.path().join("verify-policy.yaml");
        let text = "version: 1\nuri: https://example.com/p.yaml\nbuilder:\n  keys:\n    - file: kiln.pub\n      valid_until: 2030-01-01T00:00:00Z\n  id: \"https://kiln.dev/builders/*\"\n  slsa_build_level: 2\npipeline: { name: greet }\nsource: { repository: \"https://github.com/acme/*\", ref: refs/heads/main }\ndependencies:\n  forbidden: [{ name: \"openssl@1.0*\" }]\n  required: [{ uri: \"kiln:mirror/busybox@*\" }]\nmax_age_days: 30\nrevocations: required\n";
        let p = VerifyPolicy::parse(&path, text).unwrap();
        assert_eq!(p.keys().len(), 1);
        assert_eq!(p.keys()[0].key.keyid(), key.keyid());
        assert_eq!(p.uri(), Some("https://example.com/p.yaml"));
        assert_eq!(p.sha256(), Sha256Digest::of(text.as_bytes()));
        assert_eq!(p.revocations, FeedRequirement::Required);
        assert_eq!(p.advisories, FeedRequirement::IfGiven);
        assert_eq!(p.max_age_days, Some(30));
    }

    #[test]
    fn every_problem_is_reported_at_once_each_on_one_line_with_its_position() {
        let (dir, _key) = dir_with_key();
        let path = dir.path().join("p.yaml");
        let text = "version: 1\nbuilder:\n  keys:\n    - file: missing.pub\n    - file: kiln.pub\n      valid_from: yesterday\n  slsa_build_level: 3\npipeline: { name: \"\", sha256: abc }\nmax_age_days: 0\nrevocations: always\n";
        let err = VerifyPolicy::parse(&path, text).unwrap_err();
        let VerifyPolicyError::Invalid { diagnostics } = &err else {
            panic!("{err:?}")
        };
        let lines: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
        assert_eq!(lines.len(), 7, "{lines:#?}");
        assert!(
            lines[0].starts_with(&format!("{}:4:", path.display())),
            "{lines:#?}"
        );
        assert!(lines[0].contains("missing.pub"), "{lines:#?}");
        for (i, needle) in [
            (1, "RFC 3339"),
            (2, "builder.id"),
            (3, "empty pipeline name"),
            (4, "not a sha256"),
            (5, "max_age_days"),
            (6, "`required` or `if-given`"),
        ] {
            assert!(lines[i].contains(needle), "{i}: {lines:#?}");
        }
        assert!(lines.iter().all(|l| !l.contains('\n')));
    }

    #[test]
    fn unknown_fields_and_missing_keys_are_refused_with_position() {
        let (dir, _key) = dir_with_key();
        let path = dir.path().join("p.yaml");
        let err = VerifyPolicy::parse(
            &path,
            "version: 1\nbuilder:\n  keys: [{ file: kiln.pub }]\n  ids: x\n",
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("{}:4:", path.display())),
            "{err}"
        );
        let err = VerifyPolicy::parse(&path, "version: 1\nbuilder:\n  keys: []\n").unwrap_err();
        assert!(err.to_string().contains("builder.keys is empty"), "{err}");
        let err = VerifyPolicy::parse(&path, "version: 2\nbuilder: { keys: [{file: kiln.pub}] }\n")
            .unwrap_err();
        assert!(err.to_string().contains("version 2"), "{err}");
    }
}
