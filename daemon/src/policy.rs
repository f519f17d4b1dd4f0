//! The mirror's trust policy (`mirror-policy.yaml`): which names may enter the mirror, which
//! need a signature, whose signature counts, and how large an entry may be.
//!
//! YAML → [`RawPolicy`] (`deny_unknown_fields`, every node keeps its position) → [`MirrorPolicy`],
//! which the controller trusts. Every problem is collected at once, each as a one-line
//! `FILE:LINE:COL: MESSAGE` [`Diagnostic`], like pipelines.
//!
//! Invariant: this module verifies no signature itself; it decides whether a key that the
//! controller already verified (through `kiln_attest::keys::PublicKey`) is trusted for a name.
//! It reads the policy file and the key files it names, nothing else.

use kiln_core::glob::glob_match;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use kiln_attest::keys::{KeyId, PublicKey};
use kiln_pipelines::Diagnostic;
use serde::Deserialize;
use serde_saphyr::budget::Budget;
use serde_saphyr::options::DuplicateKeyPolicy;
use serde_saphyr::{MessageFormatter as _, Options, Spanned};

/// The policy file's name inside the data dir.
pub const POLICY_FILE: &str = "mirror-policy.yaml";

/// The largest policy file accepted, in bytes.
const MAX_POLICY_BYTES: usize = 1024 * 1024;

/// Why a policy file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read mirror policy {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", .diagnostics.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid { diagnostics: Vec<Diagnostic> },
    #[error("cannot keep the last good mirror policy at {path}")]
    KeepCopy {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    signers: BTreeMap<String, RawSigner>,
    #[serde(default)]
    builders: BTreeMap<String, RawSigner>,
    #[serde(default)]
    rules: Vec<Spanned<RawRule>>,
    #[serde(default)]
    deny: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSigner {
    key: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    names: Spanned<String>,
    #[serde(default)]
    require_signature: bool,
    #[serde(default)]
    signers: Vec<Spanned<String>>,
    #[serde(default)]
    max_size: Option<Spanned<String>>,
    #[serde(default)]
    require_provenance: bool,
    #[serde(default)]
    builders: Vec<Spanned<String>>,
    #[serde(default)]
    licenses: Option<Vec<Spanned<String>>>,
}

/// A trusted signer: a name the policy gives a public key.
#[derive(Clone, Debug)]
pub struct Signer {
    pub name: String,
    pub key: PublicKey,
}

/// One rule, 1-based as an operator counts them in the file.
#[derive(Clone, Debug)]
pub struct Rule {
    pub number: usize,
    pub names: String,
    pub require_signature: bool,
    /// Signer names (all defined under `signers:`); empty means any signer of the policy.
    pub signers: Vec<String>,
    pub max_size: Option<u64>,
    /// Entries must come with kiln provenance that verifies with a trusted builder key.
    pub require_provenance: bool,
    /// Builder names (all defined under `builders:`); empty means any builder of the policy.
    pub builders: Vec<String>,
    /// Allowed SPDX license identifiers; `None`: licenses are not checked.
    pub licenses: Option<Vec<String>>,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rule {} (names {:?})", self.number, self.names)
    }
}

/// A validated policy.
#[derive(Clone, Debug)]
pub struct MirrorPolicy {
    file: PathBuf,
    /// Read from the last good copy because the file itself has errors.
    last_good: bool,
    signers: BTreeMap<String, Signer>,
    /// Keys trusted to sign kiln provenance; empty: the controller's own keys.
    builders: BTreeMap<String, Signer>,
    rules: Vec<Rule>,
    deny: Vec<String>,
}

/// What an ingestion presents to the policy: its name, size, and the key that signed it, if a
/// signature was given and verified.
#[derive(Clone, Copy, Debug)]
pub struct Candidate<'a> {
    pub name: &'a str,
    pub size: u64,
    pub verified_signer: Option<&'a KeyId>,
}

/// The policy's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Admitted; `by` names the rule (or says no rule matched), `signer` the trusted signer.
    Admit { by: String, signer: Option<String> },
    /// Refused; the message names the rule and why.
    Refuse(String),
}

impl MirrorPolicy {
    /// Parses and validates policy text; key paths are relative to `path`'s directory.
    pub fn parse(path: &Path, text: &str) -> Result<Self, PolicyError> {
        let mut check = Checker {
            file: path.display().to_string(),
            base: path.parent().unwrap_or(Path::new(".")).to_owned(),
            diagnostics: Vec::new(),
        };
        if text.len() > MAX_POLICY_BYTES {
            check.at(1, 1, "policy file is larger than 1 MiB");
            return Err(check.into_error());
        }
        let raw: RawPolicy = match serde_saphyr::from_str_with_options(text, options()) {
            Ok(raw) => raw,
            Err(err) => {
                let (line, column) = err.location().map_or((1, 1), position);
                let message = serde_saphyr::DefaultMessageFormatter
                    .format_message(innermost(&err))
                    .into_owned();
                check.at(line, column, &message);
                return Err(check.into_error());
            }
        };
        let defined_signers = raw.signers.keys().cloned().collect();
        let defined_builders = raw.builders.keys().cloned().collect();
        let signers = check.keys(raw.signers, "signer");
        let builders = check.keys(raw.builders, "builder");
        let rules = raw
            .rules
            .into_iter()
            .enumerate()
            .map(|(i, rule)| check.rule(i + 1, rule, &defined_signers, &defined_builders))
            .collect();
        let mut deny = Vec::new();
        for d in raw.deny {
            check.glob(&d);
            deny.push(d.value);
        }
        if !check.diagnostics.is_empty() {
            return Err(check.into_error());
        }
        Ok(Self {
            file: path.to_owned(),
            last_good: false,
            signers,
            builders,
            rules,
            deny,
        })
    }

    /// The file this policy was read from.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Where the policy came from, for the evidence: the file, or its last good copy.
    pub fn origin(&self) -> String {
        if self.last_good {
            format!(
                "{} (its last good copy: the file has errors)",
                self.file.display()
            )
        } else {
            self.file.display().to_string()
        }
    }

    /// Reads the policy at `path` (`Ok((None, None))` when there is no such file: no policy),
    /// keeping the last copy that parsed in
    /// `keep_dir`. When the file has an error, the last good copy stays in force and the error
    /// comes back beside it, for the caller to report; with no good copy yet, the error is
    /// returned (fail closed). Key paths in the copy resolve as in the file.
    pub fn load_keeping_last_good(
        path: &Path,
        keep_dir: &Path,
    ) -> Result<(Option<Self>, Option<PolicyError>), PolicyError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((None, None)),
            Err(source) => {
                return Err(PolicyError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        let copy = keep_dir.join(last_good_name(path));
        match Self::parse(path, &text) {
            Ok(policy) => {
                keep_copy(&copy, &text).map_err(|source| PolicyError::KeepCopy {
                    path: copy.clone(),
                    source,
                })?;
                Ok((Some(policy), None))
            }
            Err(problem) => {
                let Ok(old_text) = std::fs::read_to_string(&copy) else {
                    return Err(problem);
                };
                match Self::parse(path, &old_text) {
                    Ok(old) => Ok((
                        Some(Self {
                            last_good: true,
                            ..old
                        }),
                        Some(problem),
                    )),
                    Err(_) => Err(problem),
                }
            }
        }
    }

    /// The rule that governs `name`: the first whose `names` glob matches.
    pub fn rule_for(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| glob_match(&r.names, name))
    }

    /// Refuses a denied name before anything is read.
    pub fn check_name(&self, name: &str) -> Result<(), String> {
        match self.deny.iter().position(|g| glob_match(g, name)) {
            Some(i) => Err(format!(
                "refused by deny entry {} ({:?}): {name} is on the deny-list",
                i + 1,
                self.deny[i]
            )),
            None => Ok(()),
        }
    }

    /// Refuses an entry larger than its rule allows, before it is read.
    pub fn check_size(&self, name: &str, size: u64) -> Result<(), String> {
        match self.rule_for(name) {
            Some(
                rule @ Rule {
                    max_size: Some(max),
                    ..
                },
            ) if size > *max => Err(format!(
                "refused by {rule}: {size} bytes is more than max_size {max}"
            )),
            _ => Ok(()),
        }
    }

    /// The full decision for a candidate whose signature (if any) has been verified.
    pub fn decide(&self, c: &Candidate<'_>) -> Decision {
        if let Err(e) = self.check_name(c.name) {
            return Decision::Refuse(e);
        }
        if let Err(e) = self.check_size(c.name, c.size) {
            return Decision::Refuse(e);
        }
        let Some(rule) = self.rule_for(c.name) else {
            let signer = c.verified_signer.and_then(|k| self.signer_name(k, &[]));
            return Decision::Admit {
                by: "no rule matched".into(),
                signer,
            };
        };
        match c.verified_signer {
            None if rule.require_signature => {
                Decision::Refuse(format!("refused by {rule}: signature required"))
            }
            None => Decision::Admit {
                by: rule.to_string(),
                signer: None,
            },
            Some(keyid) => match self.signer_name(keyid, &rule.signers) {
                Some(name) => Decision::Admit {
                    by: rule.to_string(),
                    signer: Some(name),
                },
                None => Decision::Refuse(format!(
                    "refused by {rule}: signed by key {keyid}, which the rule does not trust \
                     (trusted: {})",
                    self.trusted_list(rule)
                )),
            },
        }
    }

    /// Whether entries named `name` must come with verifying kiln provenance.
    pub fn requires_provenance(&self, name: &str) -> bool {
        self.rule_for(name).is_some_and(|r| r.require_provenance)
    }

    /// The keys trusted to sign kiln provenance for `name`: the rule's `builders:`, or every
    /// builder of the policy; `None` when the policy defines no builder, which leaves the
    /// choice to the caller (the controller trusts its own keys then).
    pub fn builders_for(&self, name: &str) -> Option<Vec<Signer>> {
        if self.builders.is_empty() {
            return None;
        }
        let allowed = self.rule_for(name).map_or(&[][..], |r| &r.builders[..]);
        Some(
            self.builders
                .values()
                .filter(|b| allowed.is_empty() || allowed.contains(&b.name))
                .cloned()
                .collect(),
        )
    }

    /// Decides a license: `Ok(decision)` or `Err(refusal)`. A rule with `licenses:` allows an
    /// SPDX expression that its list satisfies (`A OR B` needs one of them, `A AND B` both);
    /// an unknown license (`None`) is admitted and recorded as unknown.
    pub fn check_license(&self, name: &str, expression: Option<&str>) -> Result<String, String> {
        let Some((rule, allowed)) = self
            .rule_for(name)
            .and_then(|r| r.licenses.as_ref().map(|l| (r, l)))
        else {
            return Ok("no license rule".into());
        };
        let Some(expression) = expression else {
            return Ok(format!(
                "license unknown; {rule} checks licenses only where known"
            ));
        };
        let parsed = spdx::Expression::parse(expression)
            .map_err(|e| format!("license {expression:?} is not an SPDX expression: {e}"))?;
        let ok = parsed.evaluate(|req| match &req.license {
            spdx::LicenseItem::Spdx { id, .. } => allowed.iter().any(|a| a == id.name),
            spdx::LicenseItem::Other { .. } => false,
        });
        if ok {
            Ok(format!("license {expression} allowed by {rule}"))
        } else {
            Err(format!(
                "refused by {rule}: license {expression} is not allowed (allowed: {})",
                allowed.join(", ")
            ))
        }
    }

    /// The name of the signer holding `keyid`, among `allowed` (or among all when empty).
    fn signer_name(&self, keyid: &KeyId, allowed: &[String]) -> Option<String> {
        self.signers
            .values()
            .filter(|s| allowed.is_empty() || allowed.contains(&s.name))
            .find(|s| s.key.keyid() == keyid)
            .map(|s| s.name.clone())
    }

    fn trusted_list(&self, rule: &Rule) -> String {
        if rule.signers.is_empty() {
            self.signers.keys().cloned().collect::<Vec<_>>().join(", ")
        } else {
            rule.signers.join(", ")
        }
    }
}

/// Collects every problem of a policy file, each at its line and column.
struct Checker {
    file: String,
    /// Key paths are relative to the policy file's directory.
    base: PathBuf,
    diagnostics: Vec<Diagnostic>,
}

/// A YAML position as 1-based line and column.
fn position(loc: serde_saphyr::Location) -> (usize, usize) {
    (
        usize::try_from(loc.line()).unwrap_or(1),
        usize::try_from(loc.column()).unwrap_or(1),
    )
}

impl Checker {
    fn at(&mut self, line: usize, column: usize, message: &str) {
        self.diagnostics
            .push(Diagnostic::new(&self.file, line, column, message));
    }

    fn at_loc(&mut self, loc: serde_saphyr::Location, message: &str) {
        let (line, column) = position(loc);
        self.at(line, column, message);
    }

    fn into_error(mut self) -> PolicyError {
        self.diagnostics.sort_by_key(|d| (d.line, d.column));
        PolicyError::Invalid {
            diagnostics: self.diagnostics,
        }
    }

    fn glob(&mut self, glob: &Spanned<String>) {
        if let Err(e) = check_glob(&glob.value) {
            self.at_loc(glob.referenced, &e);
        }
    }

    /// Loads each named key (`signers:` or `builders:`); a key that fails to load is reported,
    /// and its name stays defined, so rules naming it are not reported twice.
    fn keys(&mut self, raw: BTreeMap<String, RawSigner>, what: &str) -> BTreeMap<String, Signer> {
        let mut keys = BTreeMap::new();
        for (name, raw) in raw {
            match load_key(&self.base, &raw.key.value) {
                Ok(key) => {
                    keys.insert(name.clone(), Signer { name, key });
                }
                Err(e) => self.at_loc(
                    raw.key.referenced,
                    &format!("{what} `{name}`: {e}; give an SPKI PEM public key or a path to one"),
                ),
            }
        }
        keys
    }

    /// Names under a rule's `signers:` or `builders:`, each checked to be defined.
    fn names(
        &mut self,
        names: &[Spanned<String>],
        defined: &BTreeSet<String>,
        what: &str,
    ) -> Vec<String> {
        for n in names.iter().filter(|n| !defined.contains(&n.value)) {
            let message = format!(
                "unknown {what} `{}`: define it under `{what}s:` first",
                n.value
            );
            self.at_loc(n.referenced, &message);
        }
        names.iter().map(|n| n.value.clone()).collect()
    }

    fn rule(
        &mut self,
        number: usize,
        rule: Spanned<RawRule>,
        defined_signers: &BTreeSet<String>,
        defined_builders: &BTreeSet<String>,
    ) -> Rule {
        let (loc, rule) = (rule.referenced, rule.value);
        self.glob(&rule.names);
        let signers = self.names(&rule.signers, defined_signers, "signer");
        let builders = self.names(&rule.builders, defined_builders, "builder");
        if rule.require_signature && rule.signers.is_empty() && defined_signers.is_empty() {
            self.at_loc(
                loc,
                "rule requires a signature but the policy trusts no signer: add `signers:`",
            );
        }
        let max_size = rule.max_size.as_ref().and_then(|s| {
            parse_size(&s.value)
                .map_err(|e| self.at_loc(s.referenced, &e))
                .ok()
        });
        let licenses = rule.licenses.as_ref().map(|list| {
            for l in list.iter().filter(|l| spdx::license_id(&l.value).is_none()) {
                let message = format!(
                    "{:?} is not an SPDX license identifier (e.g. MIT, Apache-2.0, GPL-2.0-or-later)",
                    l.value
                );
                self.at_loc(l.referenced, &message);
            }
            list.iter().map(|l| l.value.clone()).collect()
        });
        Rule {
            number,
            names: rule.names.value,
            require_signature: rule.require_signature,
            signers,
            max_size,
            require_provenance: rule.require_provenance,
            builders,
            licenses,
        }
    }
}

/// An SPKI PEM public key, inline or at a path relative to `base`; the error names every cause.
fn load_key(base: &Path, value: &str) -> Result<PublicKey, String> {
    if value.contains("-----BEGIN") {
        return PublicKey::from_spki_pem(value.as_bytes()).map_err(|e| e.to_string());
    }
    PublicKey::from_spki_pem_file(&base.join(value)).map_err(|e| {
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg.push_str(&format!(": {s}"));
            src = s.source();
        }
        msg
    })
}

/// The last good copy's file name: one per policy path, so `--policy FILE` and the data dir's
/// policy never stand in for each other.
fn last_good_name(path: &Path) -> String {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let digest = kiln_core::Sha256Digest::of(absolute.as_os_str().as_encoded_bytes());
    format!("{}.yaml", &digest.to_string()[..16])
}

/// Writes `text` to `copy` atomically (temp file, fsync, rename) unless it already holds it.
fn keep_copy(copy: &Path, text: &str) -> std::io::Result<()> {
    if std::fs::read_to_string(copy).is_ok_and(|old| old == text) {
        return Ok(());
    }
    let dir = copy.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, text.as_bytes())?;
    tmp.as_file().sync_all()?;
    tmp.persist(copy).map_err(|e| e.error)?;
    Ok(())
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

fn check_glob(glob: &str) -> Result<(), String> {
    if glob.is_empty() {
        return Err("empty name pattern: use `*` to match every name".into());
    }
    if glob.contains('@') {
        return Err(format!(
            "name pattern {glob:?} contains `@`: patterns match entry names, not versions"
        ));
    }
    Ok(())
}

/// "2GiB", "500MB", "1024" → bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let bad = || {
        format!(
            "invalid size {text:?}: expected a number of bytes with an optional unit (KiB, MiB, GiB, TiB, KB, MB, GB, TB)"
        )
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_shell_patterns() {
        assert!(glob_match("gcc-*", "gcc-13"));
        assert!(!glob_match("gcc-*", "clang"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "abbc"));
        assert!(glob_match("*-dev*", "libc-dev-x"));
    }

    #[test]
    fn sizes_take_binary_and_decimal_units() {
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("10").unwrap(), 10);
        assert_eq!(parse_size("1 MB").unwrap(), 1_000_000);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("1XB").is_err());
    }

    #[test]
    fn an_unknown_field_is_one_line_with_position() {
        let err = MirrorPolicy::parse(
            Path::new("p.yaml"),
            "rules:\n  - names: \"a*\"\n    require_sig: true\n",
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("p.yaml:3:"), "{text}");
        assert!(!text.contains('\n'), "{text}");
    }

    #[test]
    fn first_matching_rule_wins_and_deny_beats_rules() {
        let p = MirrorPolicy::parse(
            Path::new("p.yaml"),
            "rules:\n  - names: \"gcc-*\"\n    max_size: 10\n  - names: \"*\"\n    max_size: 100\ndeny: [\"bad*\"]\n",
        )
        .unwrap();
        assert_eq!(p.rule_for("gcc-1").unwrap().number, 1);
        assert_eq!(p.rule_for("zlib").unwrap().number, 2);
        assert!(p.check_size("gcc-1", 11).unwrap_err().contains("rule 1"));
        assert!(p.check_name("badger").unwrap_err().contains("deny entry 1"));
    }

    #[test]
    fn a_license_rule_allows_an_expression_its_list_satisfies() {
        let p = MirrorPolicy::parse(
            Path::new("p.yaml"),
            "rules:\n  - names: \"*\"\n    licenses: [MIT, Apache-2.0]\n",
        )
        .unwrap();
        assert!(p.check_license("x", Some("MIT")).is_ok());
        assert!(p.check_license("x", Some("MIT OR GPL-3.0-only")).is_ok());
        let refused = p
            .check_license("x", Some("MIT AND GPL-3.0-only"))
            .unwrap_err();
        assert!(refused.starts_with("refused by rule 1"), "{refused}");
        assert!(p.check_license("x", Some("not a license")).is_err());
        // Unknown is admitted, and says so.
        assert!(p.check_license("x", None).unwrap().contains("unknown"));
    }

    #[test]
    fn unknown_license_ids_and_builders_are_diagnostics_at_their_position() {
        let err = MirrorPolicy::parse(
            Path::new("p.yaml"),
            "rules:\n  - names: \"*\"\n    licenses: [MIT, Beerware-ish]\n    builders: [ci]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("p.yaml:3:21: \"Beerware-ish\" is not an SPDX license identifier"),
            "{err}"
        );
        assert!(
            err.contains("p.yaml:4:16: unknown builder `ci`: define it under `builders:` first"),
            "{err}"
        );
    }

    #[test]
    fn a_broken_policy_leaves_its_last_good_copy_in_force() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mirror-policy.yaml");
        let keep = dir.path().join("keep");
        // No good copy yet: the error refuses.
        std::fs::write(&path, "rules: [\n").unwrap();
        assert!(MirrorPolicy::load_keeping_last_good(&path, &keep).is_err());
        std::fs::write(&path, "deny: [\"evil*\"]\n").unwrap();
        let (good, problem) = MirrorPolicy::load_keeping_last_good(&path, &keep).unwrap();
        assert!(problem.is_none() && !good.unwrap().last_good);
        std::fs::write(&path, "deny: [\"evil*\"]\nrulez: []\n").unwrap();
        let (old, problem) = MirrorPolicy::load_keeping_last_good(&path, &keep).unwrap();
        let old = old.unwrap();
        assert!(
            problem
                .unwrap()
                .to_string()
                .contains("mirror-policy.yaml:2:1")
        );
        assert!(old.check_name("evil-twin").is_err());
        assert!(old.origin().contains("last good copy"));
        // Removing the file is a deliberate "no policy".
        std::fs::remove_file(&path).unwrap();
        let (none, problem) = MirrorPolicy::load_keeping_last_good(&path, &keep).unwrap();
        assert!(none.is_none() && problem.is_none());
    }
}
