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
use std::collections::BTreeMap;
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
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    signers: BTreeMap<String, RawSigner>,
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
    signers: BTreeMap<String, Signer>,
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
    /// Reads the policy at `path`; `Ok(None)` when there is no such file (no policy).
    pub fn load(path: &Path) -> Result<Option<Self>, PolicyError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(PolicyError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        Self::parse(path, &text).map(Some)
    }

    /// Parses and validates policy text; key paths are relative to `path`'s directory.
    pub fn parse(path: &Path, text: &str) -> Result<Self, PolicyError> {
        let file = path.display().to_string();
        let diag = |line: usize, column: usize, message: &str| {
            Diagnostic::new(&file, line, column, message)
        };
        let at = |loc: serde_saphyr::Location| {
            (
                usize::try_from(loc.line()).unwrap_or(1),
                usize::try_from(loc.column()).unwrap_or(1),
            )
        };
        if text.len() > MAX_POLICY_BYTES {
            return Err(PolicyError::Invalid {
                diagnostics: vec![diag(1, 1, "policy file is larger than 1 MiB")],
            });
        }
        let raw: RawPolicy = match serde_saphyr::from_str_with_options(text, options()) {
            Ok(raw) => raw,
            Err(err) => {
                let (line, column) = err.location().map_or((1, 1), at);
                let message = serde_saphyr::DefaultMessageFormatter
                    .format_message(innermost(&err))
                    .into_owned();
                return Err(PolicyError::Invalid {
                    diagnostics: vec![diag(line, column, &message)],
                });
            }
        };
        let base = path.parent().unwrap_or(Path::new("."));
        let mut diagnostics = Vec::new();
        let mut signers = BTreeMap::new();
        // A signer whose key failed to load is still defined: its key error already names it.
        let defined: std::collections::BTreeSet<String> = raw.signers.keys().cloned().collect();
        for (name, raw) in raw.signers {
            let (line, column) = at(raw.key.referenced);
            let key = if raw.key.value.contains("-----BEGIN") {
                PublicKey::from_spki_pem(raw.key.value.as_bytes()).map_err(|e| e.to_string())
            } else {
                PublicKey::from_spki_pem_file(&base.join(&raw.key.value)).map_err(|e| {
                    let mut msg = e.to_string();
                    let mut src = std::error::Error::source(&e);
                    while let Some(s) = src {
                        msg.push_str(&format!(": {s}"));
                        src = s.source();
                    }
                    msg
                })
            };
            match key {
                Ok(key) => {
                    signers.insert(name.clone(), Signer { name, key });
                }
                Err(e) => diagnostics.push(diag(
                    line,
                    column,
                    &format!("signer `{name}`: {e}; give an SPKI PEM public key or a path to one"),
                )),
            }
        }
        let mut rules = Vec::new();
        for (i, rule) in raw.rules.into_iter().enumerate() {
            let (rline, rcol) = at(rule.referenced);
            let rule = rule.value;
            if let Err(e) = check_glob(&rule.names.value) {
                let (line, column) = at(rule.names.referenced);
                diagnostics.push(diag(line, column, &e));
            }
            let mut names = Vec::new();
            for s in &rule.signers {
                if !defined.contains(&s.value) {
                    let (line, column) = at(s.referenced);
                    diagnostics.push(diag(
                        line,
                        column,
                        &format!(
                            "unknown signer `{}`: define it under `signers:` first",
                            s.value
                        ),
                    ));
                }
                names.push(s.value.clone());
            }
            if rule.require_signature && rule.signers.is_empty() && defined.is_empty() {
                diagnostics.push(diag(
                    rline,
                    rcol,
                    "rule requires a signature but the policy trusts no signer: add `signers:`",
                ));
            }
            let max_size = match &rule.max_size {
                None => None,
                Some(s) => match parse_size(&s.value) {
                    Ok(n) => Some(n),
                    Err(e) => {
                        let (line, column) = at(s.referenced);
                        diagnostics.push(diag(line, column, &e));
                        None
                    }
                },
            };
            rules.push(Rule {
                number: i + 1,
                names: rule.names.value,
                require_signature: rule.require_signature,
                signers: names,
                max_size,
            });
        }
        let mut deny = Vec::new();
        for d in raw.deny {
            if let Err(e) = check_glob(&d.value) {
                let (line, column) = at(d.referenced);
                diagnostics.push(diag(line, column, &e));
            }
            deny.push(d.value);
        }
        if !diagnostics.is_empty() {
            diagnostics.sort_by_key(|d| (d.line, d.column));
            return Err(PolicyError::Invalid { diagnostics });
        }
        Ok(Self {
            file: path.to_owned(),
            signers,
            rules,
            deny,
        })
    }

    /// The file this policy was read from.
    pub fn file(&self) -> &Path {
        &self.file
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
}
