//! `kiln verify`: check an artifact against its signed provenance with a public key, and show
//! what it was built from; or, with `--policy`, judge it against a consumer's verification
//! policy rule by rule and optionally sign a SLSA Verification Summary Attestation.
//! Links no controller code: anyone with the public key (or the policy) can run it.
//!
//! Exit status: 0 verified / policy passed, 1 verification or policy failed, 2 usage, I/O or
//! malformed policy, revocation list or advisories (docs/verifying.md).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use kiln_attest::verify_policy::{
    self, Advisories, Evidence, Outcome, PolicyReport, RevocationList, VerifyInputs, VerifyPolicy,
    VsaRequest,
};
use kiln_attest::{
    ArtifactRef, KeyPair, PublicKey, ResourceDescriptor, sign_statement, to_jsonl, verify_bundle,
    verify_provenance,
};
use kiln_core::Sha256Digest;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The verifier id kiln writes into a VSA unless `--verifier-id` says otherwise.
const DEFAULT_VERIFIER_ID: &str = "https://kiln.dev/verifiers/policy/v1";

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The artifact file.
    artifact: PathBuf,
    /// Its provenance (ARTIFACT.intoto.jsonl).
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "bundle",
        conflicts_with = "bundle"
    )]
    provenance: Option<PathBuf>,
    /// Or its Sigstore bundle (ARTIFACT.sigstore.json).
    #[arg(long, value_name = "FILE")]
    bundle: Option<PathBuf>,
    /// The signer's public key (SPKI PEM, e.g. kiln.pub).
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present_any = ["policy", "keyring"],
        conflicts_with_all = ["policy", "keyring"]
    )]
    key: Option<PathBuf>,
    /// Or a builder's published key set (`kiln keys export --json`): the signature must be by
    /// one of its keys, valid when the build finished (keys rotate; old provenance still
    /// verifies).
    #[arg(long, value_name = "FILE", conflicts_with = "policy")]
    keyring: Option<PathBuf>,
    /// Judge the artifact against this verification policy (verify-policy.yaml): trusted
    /// builder keys and id, pipeline, sources, dependencies, maximum age. Prints PASS or FAIL
    /// and every rule's outcome.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// With --policy: a revocation list (JSON: [{name, sha256, reason, revoked_at}]).
    #[arg(long, value_name = "FILE", requires = "policy")]
    revocations: Option<PathBuf>,
    /// With --policy: vulnerability advisories in OSV JSON (one record or a list).
    #[arg(long, value_name = "FILE", requires = "policy")]
    advisories: Option<PathBuf>,
    /// With --policy: check as of this time (RFC 3339) instead of the current time.
    #[arg(long, value_name = "TIME", requires = "policy")]
    now: Option<String>,
    /// With --policy: print the result as JSON.
    #[arg(long, requires = "policy")]
    json: bool,
    /// With --policy: write a signed SLSA Verification Summary Attestation (DSSE envelope in
    /// JSON Lines) to this file, whether the policy passed or failed.
    #[arg(long, value_name = "FILE", requires_all = ["policy", "vsa_key"])]
    vsa_out: Option<PathBuf>,
    /// The VSA signing key: a PKCS#8 PEM file, or a directory holding kiln.key.
    #[arg(long, value_name = "KEYDIR_OR_PEM", requires = "vsa_out")]
    vsa_key: Option<PathBuf>,
    /// The VSA's verifier.id.
    #[arg(long, value_name = "URI", default_value = DEFAULT_VERIFIER_ID, requires = "vsa_out")]
    verifier_id: String,
    /// The VSA's resourceUri (default: file:ARTIFACT-FILE-NAME).
    #[arg(long, value_name = "URI", requires = "vsa_out")]
    resource_uri: Option<String>,
}

#[derive(Args, Debug)]
pub struct VerifyRunArgs {
    /// The run attestation (run.intoto.jsonl) of `kiln run --out DIR` or `kiln artifacts`.
    attestation: PathBuf,
    /// The signer's public key (SPKI PEM, e.g. kiln.pub).
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
}

/// `kiln verify-run`: checks a run attestation's signature and types, then prints the run's
/// outcome and each step's (docs/run-attestation.md). Exit status 0 verified, 1 refused, 2 I/O.
pub fn run_attestation(args: VerifyRunArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.attestation)
        .with_context(|| format!("cannot read {}", args.attestation.display()))?;
    let key = PublicKey::from_spki_pem_file(&args.key)?;
    let verified = match kiln_attest::verify_run_attestation(&text, &key) {
        Ok(v) => v,
        Err(err) => {
            eprintln!("{}: does NOT verify: {err}", args.attestation.display());
            return Ok(ExitCode::from(1));
        }
    };
    let p = &verified.statement.predicate;
    println!(
        "verified: run {} of pipeline {} (sha256:{}): {}",
        p.run,
        p.pipeline.name,
        p.pipeline.sha256,
        wire_word(&p.state)
    );
    println!("  signed by key {}", verified.keyid);
    println!("steps:");
    for step in &p.steps {
        let detail = match (&step.exit, &step.reason) {
            (Some(exit), _) => serde_json::to_string(exit).unwrap_or_default(),
            (None, Some(reason)) => reason.clone(),
            (None, None) => String::new(),
        };
        println!(
            "  {:<24} {:<10} {detail}",
            step.name,
            wire_word(&step.state)
        );
        for event in &step.limit_events {
            println!(
                "    limit hit: {}",
                serde_json::to_string(event).unwrap_or_default()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The lowercase wire name of an outcome, for printing.
fn wire_word<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Tries each key of the key set; the one that verifies must have been valid when the build
/// finished.
fn verify_with_keyring(
    path: &Path,
    check: impl Fn(&PublicKey) -> Result<kiln_attest::VerifiedProvenance, String>,
) -> anyhow::Result<Result<kiln_attest::VerifiedProvenance, String>> {
    let ring = kiln_attest::keyring::Keyring::load(path)?;
    let mut last = format!("{} lists no key", path.display());
    for entry in &ring.keys {
        let verified = match check(&entry.public_key()?) {
            Ok(verified) => verified,
            Err(err) => {
                last = err;
                continue;
            }
        };
        let metadata = verified.statement.predicate.run_details.metadata.as_ref();
        let finished = metadata.and_then(|m| m.finished_on);
        return Ok(match finished {
            Some(at) if entry.valid_at(at) => Ok(verified),
            Some(at) => Err(format!(
                "signed by key {}, which was not valid when the build finished ({}): valid from {}{}",
                entry.keyid,
                at.format(&Rfc3339).unwrap_or_default(),
                entry.not_before.format(&Rfc3339).unwrap_or_default(),
                entry.not_after.map_or(String::new(), |end| format!(
                    " to {}",
                    end.format(&Rfc3339).unwrap_or_default()
                ))
            )),
            None => {
                Err("the provenance has no finishedOn to check the key's validity against".into())
            }
        });
    }
    Ok(Err(format!(
        "no key of {} verifies it: {last}",
        path.display()
    )))
}

fn describe(d: &ResourceDescriptor) -> String {
    let name = d
        .name
        .as_deref()
        .or(d.uri.as_deref())
        .unwrap_or("(unnamed)");
    let digest = d
        .digest
        .sha256
        .map(|s| format!("sha256:{s}"))
        .unwrap_or_else(|| "(no sha256)".into());
    match &d.uri {
        Some(uri) if d.name.is_some() => format!("{name}  {digest}  {uri}"),
        _ => format!("{name}  {digest}"),
    }
}

pub fn run(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let file = std::fs::File::open(&args.artifact)
        .with_context(|| format!("cannot read {}", args.artifact.display()))?;
    let (digest, _) = Sha256Digest::of_reader(file)
        .with_context(|| format!("cannot read {}", args.artifact.display()))?;
    let evidence = args
        .bundle
        .as_ref()
        .or(args.provenance.as_ref())
        .expect("clap requires one");
    let text = std::fs::read_to_string(evidence)
        .with_context(|| format!("cannot read {}", evidence.display()))?;
    if let Some(policy) = &args.policy {
        return run_policy(&args, policy, digest, evidence, &text);
    }
    let check = |key: &PublicKey| {
        let artifact = ArtifactRef::Digest(digest);
        match args.bundle {
            Some(_) => verify_bundle(artifact, &text, key).map_err(|e| e.to_string()),
            None => verify_provenance(artifact, &text, key).map_err(|e| e.to_string()),
        }
    };
    let result = match &args.keyring {
        Some(path) => verify_with_keyring(path, check)?,
        None => check(&PublicKey::from_spki_pem_file(
            args.key.as_deref().expect("clap requires one"),
        )?),
    };
    let verified = match result {
        Ok(v) => v,
        Err(err) => {
            eprintln!("kiln: verification FAILED: {}: {err}", evidence.display());
            return Ok(ExitCode::from(1));
        }
    };
    let predicate = &verified.statement.predicate;
    println!(
        "verified: {} sha256:{}",
        args.artifact.display(),
        verified.artifact
    );
    println!("  signed by key {}", verified.keyid);
    println!("  builder   {}", predicate.run_details.builder.id);
    println!("  buildType {}", predicate.build_definition.build_type);
    println!(
        "  pipeline  {}",
        predicate.build_definition.external_parameters["pipeline"]
    );
    if let Some(meta) = &predicate.run_details.metadata {
        println!(
            "  run       {}",
            meta.invocation_id.as_deref().unwrap_or("-")
        );
    }
    println!("  built from:");
    for dep in &predicate.build_definition.resolved_dependencies {
        println!("    {}", describe(dep));
    }
    println!("  step logs:");
    for log in &predicate.run_details.byproducts {
        println!("    {}", describe(log));
    }
    Ok(ExitCode::SUCCESS)
}

/// `kiln verify --policy`: evaluate, print, optionally sign a VSA; exit 0 pass, 1 fail.
fn run_policy(
    args: &VerifyArgs,
    policy_path: &Path,
    digest: Sha256Digest,
    evidence_path: &Path,
    evidence_text: &str,
) -> anyhow::Result<ExitCode> {
    // Everything that can be a usage or input error is read before anything is judged.
    let policy = VerifyPolicy::load(policy_path)?;
    let now = match &args.now {
        Some(t) => OffsetDateTime::parse(t, &Rfc3339).with_context(|| {
            format!("--now {t:?} is not an RFC 3339 time such as 2026-01-01T00:00:00Z")
        })?,
        None => OffsetDateTime::now_utc(),
    };
    let revocations = match &args.revocations {
        Some(p) => Some(RevocationList::parse(p, &read(p)?)?),
        None => None,
    };
    let advisories = match &args.advisories {
        Some(p) => Some(Advisories::parse(p, &read(p)?)?),
        None => None,
    };
    let vsa_key = match &args.vsa_key {
        Some(p) => Some(load_signing_key(p)?),
        None => None,
    };
    let evidence = match args.bundle {
        Some(_) => Evidence::Bundle(evidence_text),
        None => Evidence::Jsonl(evidence_text),
    };
    let report = verify_policy::evaluate(
        &policy,
        &VerifyInputs {
            artifact: digest,
            evidence,
            now,
            revocations: revocations.as_ref(),
            advisories: advisories.as_ref(),
        },
    );

    let mut vsa_written = None;
    if let (Some(out), Some(key)) = (&args.vsa_out, &vsa_key) {
        let name = file_name(&args.artifact);
        let resource_uri = args
            .resource_uri
            .clone()
            .unwrap_or_else(|| format!("file:{name}"));
        let statement = verify_policy::build_vsa(
            &VsaRequest {
                verifier_id: &args.verifier_id,
                verifier_version: Some(env!("CARGO_PKG_VERSION")),
                time_verified: now,
                artifact_name: &name,
                artifact: digest,
                resource_uri: &resource_uri,
                default_policy_uri: &format!("file:{}", file_name(policy_path)),
                input_uri: &format!("file:{}", file_name(evidence_path)),
                input_sha256: Sha256Digest::of(evidence_text.as_bytes()),
            },
            &policy,
            &report,
        );
        let envelope = sign_statement(&statement, key).context("cannot sign the VSA")?;
        let jsonl = to_jsonl(&[envelope]).context("cannot encode the VSA")?;
        std::fs::write(out, jsonl).with_context(|| format!("cannot write {}", out.display()))?;
        vsa_written = Some(out.clone());
    }

    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json_report(
                args,
                &policy,
                digest,
                &report,
                vsa_written.as_deref()
            ))
            .context("cannot encode the result")?
        );
    } else {
        print_report(args, &policy, digest, &report, vsa_written.as_deref());
    }
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// A PKCS#8 PEM file, or a key directory holding `kiln.key`.
fn load_signing_key(path: &Path) -> anyhow::Result<KeyPair> {
    let file = if path.is_dir() {
        path.join(kiln_attest::keys::PRIVATE_KEY_FILE)
    } else {
        path.to_owned()
    };
    Ok(KeyPair::from_pkcs8_pem_file(&file)?)
}

fn print_report(
    args: &VerifyArgs,
    policy: &VerifyPolicy,
    digest: Sha256Digest,
    report: &PolicyReport,
    vsa: Option<&Path>,
) {
    let failed = report.failed().count();
    let verdict = if report.passed() {
        "PASS".to_owned()
    } else if failed == 1 {
        "FAIL (1 rule failed)".to_owned()
    } else {
        format!("FAIL ({failed} rules failed)")
    };
    println!("{verdict}");
    println!("  artifact {} sha256:{digest}", args.artifact.display());
    println!(
        "  policy   {} sha256:{}",
        policy.file().display(),
        policy.sha256()
    );
    for r in &report.results {
        println!("  {:<5} {}: {}", r.outcome.label(), r.rule, r.detail);
    }
    if let Some(vsa) = vsa {
        println!("  VSA written to {}", vsa.display());
    }
}

fn json_report(
    args: &VerifyArgs,
    policy: &VerifyPolicy,
    digest: Sha256Digest,
    report: &PolicyReport,
    vsa: Option<&Path>,
) -> serde_json::Value {
    let rules: Vec<serde_json::Value> = report
        .results
        .iter()
        .map(|r| {
            serde_json::json!({
                "rule": r.rule.name(),
                "outcome": match r.outcome {
                    Outcome::Pass => "pass",
                    Outcome::Fail => "fail",
                    Outcome::Skip => "skip",
                },
                "detail": r.detail,
            })
        })
        .collect();
    serde_json::json!({
        "version": 1,
        "result": if report.passed() { "PASS" } else { "FAIL" },
        "artifact": { "path": args.artifact.display().to_string(), "sha256": digest.to_string() },
        "policy": { "path": policy.file().display().to_string(), "sha256": policy.sha256().to_string() },
        "signer": report.signer,
        "keyid": report.verified.as_ref().map(|v| v.keyid.to_string()),
        "failed": report.failed().map(|r| r.rule.name()).collect::<Vec<_>>(),
        "rules": rules,
        "vsa": vsa.map(|p| p.display().to_string()),
    })
}
