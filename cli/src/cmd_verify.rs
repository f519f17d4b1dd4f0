//! `kiln verify`: check an artifact against its signed provenance with a public key, and show
//! what it was built from. Links no controller code: anyone with the public key can run it.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use kiln_attest::{ArtifactRef, PublicKey, ResourceDescriptor, verify_bundle, verify_provenance};
use kiln_core::Sha256Digest;

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
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
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
    let key = PublicKey::from_spki_pem_file(&args.key)?;
    let artifact = ArtifactRef::Digest(digest);
    let result = match args.bundle {
        Some(_) => verify_bundle(artifact, &text, &key).map_err(|e| e.to_string()),
        None => verify_provenance(artifact, &text, &key).map_err(|e| e.to_string()),
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
