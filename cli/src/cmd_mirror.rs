//! `kiln mirror`: add files and root filesystems to the vetted mirror under its trust policy
//! (docs/mirror.md), list its entries and show the evidence each was admitted with.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use kiln_core::{BlobKind, MirrorRef, Sha256Digest};
use kiln_daemon::Controller;
use kiln_daemon::controller::Admission;
use kiln_daemon::state::{AddOutcome, Database, MirrorEntry, MirrorEvidence, State};

#[derive(Subcommand, Debug)]
pub enum MirrorCommand {
    /// Add a file (staged as /in/INPUT/FILE) or, with --tree, a directory or tar archive.
    Add {
        /// The file (or, with --tree, a directory or tar archive).
        path: PathBuf,
        /// The entry's immutable NAME@VERSION.
        #[arg(long)]
        name: MirrorRef,
        /// Refuse the file unless it has this sha256.
        #[arg(long, value_name = "HEX")]
        sha256: Option<Sha256Digest>,
        /// Store a directory or tar archive as a tree, staged as the directory /in/INPUT/.
        #[arg(long)]
        tree: bool,
        #[command(flatten)]
        evidence: EvidenceArgs,
    },
    /// Download a file (on a machine with network) and add it like `add`, pinned by digest:
    /// the bytes must have --sha256. The daemon never fetches; this is an operator's command.
    Fetch {
        /// An http:// or https:// URL (https is checked against this machine's root store).
        url: String,
        /// The entry's immutable NAME@VERSION.
        #[arg(long)]
        name: MirrorRef,
        /// The digest the download must have; required, so what is fetched is pinned.
        #[arg(long, value_name = "HEX")]
        sha256: Sha256Digest,
        /// The file name steps see it under [default: the URL's last path segment].
        #[arg(long)]
        file_name: Option<String>,
        #[command(flatten)]
        evidence: EvidenceArgs,
    },
    /// Import a root filesystem (a directory or a tar archive) for steps to run in.
    ImportRootfs {
        /// The directory or tar archive.
        path: PathBuf,
        /// The entry's immutable NAME@VERSION.
        #[arg(long)]
        name: MirrorRef,
        /// The trust policy to decide under [default: DATA_DIR/mirror-policy.yaml].
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
    },
    /// List the mirror's entries, with how each was admitted.
    List,
    /// Show one entry and all the evidence it was admitted with.
    Show {
        /// The entry's NAME@VERSION.
        name: MirrorRef,
    },
    /// Where an entry came from, down to the roots: for bytes kiln built, the run, the
    /// verified provenance and, in turn, each entry it resolved; for others, the evidence they
    /// were admitted on.
    Why {
        /// The entry's NAME@VERSION.
        name: MirrorRef,
        /// The chain as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke an entry: runs accepted from now on may not use it. Its evidence is kept, and
    /// `kiln audit affected NAME@VERSION` lists the artifacts built with it.
    Revoke {
        /// The entry's NAME@VERSION.
        name: MirrorRef,
        /// Why, for the record and every refusal that cites it.
        #[arg(long)]
        reason: String,
    },
    /// Vulnerability advisories (OSV JSON), matched against entries by name and version.
    #[command(subcommand)]
    Advisories(AdvisoriesCommand),
    /// Build a local package index (a tree entry) from package files already in the mirror,
    /// for package managers inside network-denied steps (docs/package-index.md).
    #[command(subcommand)]
    Index(crate::cmd_mirror_index::IndexCommand),
    /// Git mirrors: the repositories pipelines name under `sources:` (docs/git-sources.md).
    #[command(subcommand)]
    Git(crate::cmd_mirror_git::GitCommand),
}

/// The evidence a file can be presented with (docs/mirror.md, "Evidence").
#[derive(clap::Args, Debug)]
pub struct EvidenceArgs {
    /// A cosign-style signature over the file's bytes (base64, as `cosign sign-blob` writes).
    #[arg(long, value_name = "SIG", conflicts_with = "bundle")]
    signature: Option<PathBuf>,
    /// A Sigstore bundle (v0.1-v0.3 JSON) holding a signature over the file's bytes, as
    /// `cosign sign-blob --key K --bundle B` writes it; verified with --key.
    #[arg(long, value_name = "BUNDLE")]
    bundle: Option<PathBuf>,
    /// The SPKI PEM public key that verifies --signature or --bundle.
    #[arg(long, value_name = "PUB", conflicts_with = "certificate")]
    key: Option<PathBuf>,
    /// Instead of --key: an X.509 certificate (PEM) whose key verifies the signature; its
    /// identities are recorded, its key must be trusted by the policy like a --key.
    #[arg(long, value_name = "CERT")]
    certificate: Option<PathBuf>,
    /// kiln provenance for bytes kiln built (ARTIFACT.intoto.jsonl): it must verify with a
    /// trusted builder key, and every mirror entry it resolved must be in this mirror.
    #[arg(long, value_name = "FILE")]
    provenance: Option<PathBuf>,
    /// The file's license, an SPDX expression (checked against the policy's `licenses:`).
    #[arg(long, value_name = "SPDX")]
    license: Option<String>,
    /// The trust policy to decide under [default: DATA_DIR/mirror-policy.yaml].
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
}

impl EvidenceArgs {
    fn admission(&self) -> Admission<'_> {
        Admission {
            signature: self.signature.as_deref(),
            bundle: self.bundle.as_deref(),
            key: self.key.as_deref(),
            certificate: self.certificate.as_deref(),
            provenance: self.provenance.as_deref(),
            license: self.license.as_deref(),
            policy: self.policy.as_deref(),
            ..Admission::default()
        }
    }

    /// Whether anything beyond --policy was given (trees cannot carry it).
    fn any_for_files_only(&self) -> bool {
        self.signature.is_some()
            || self.bundle.is_some()
            || self.key.is_some()
            || self.certificate.is_some()
            || self.provenance.is_some()
            || self.license.is_some()
    }
}

#[derive(Subcommand, Debug)]
pub enum AdvisoriesCommand {
    /// Load an OSV file (one record or a list), offline; entries it names are flagged in
    /// `kiln mirror list` and `show`. Only explicit `versions` are matched, not `ranges`.
    Import {
        /// The OSV JSON file.
        file: std::path::PathBuf,
    },
}

pub fn run(
    data_dir: &Path,
    database: Option<&Database>,
    cmd: MirrorCommand,
) -> anyhow::Result<ExitCode> {
    crate::runtime()?.block_on(async {
        let controller = Controller::open_with(data_dir, database)
            .await
            .context("cannot open the data dir")?;
        match cmd {
            MirrorCommand::Add {
                path,
                name,
                sha256,
                tree,
                evidence,
            } => {
                let added = if tree {
                    anyhow::ensure!(
                        sha256.is_none() && !evidence.any_for_files_only(),
                        "--sha256, --signature, --bundle, --key, --provenance and --license \
                         apply to single files, not to --tree"
                    );
                    controller
                        .mirror_admit_tree(&path, name.clone(), false, evidence.policy.as_deref())
                        .await
                } else {
                    let admission = Admission {
                        expected: sha256,
                        ..evidence.admission()
                    };
                    controller
                        .mirror_admit_file(&path, name.clone(), &admission)
                        .await
                };
                let (entry, outcome) =
                    added.with_context(|| format!("cannot add {} as {name}", path.display()))?;
                print_added(&entry, outcome);
            }
            MirrorCommand::Fetch {
                url,
                name,
                sha256,
                file_name,
                evidence,
            } => {
                crate::cmd_mirror_fetch::fetch(
                    &controller,
                    &url,
                    name,
                    sha256,
                    file_name.as_deref(),
                    &evidence.admission(),
                )
                .await?;
            }
            MirrorCommand::ImportRootfs { path, name, policy } => {
                let (entry, outcome) = controller
                    .mirror_admit_tree(&path, name.clone(), true, policy.as_deref())
                    .await
                    .with_context(|| format!("cannot import {} as {name}", path.display()))?;
                print_added(&entry, outcome);
            }
            MirrorCommand::List => {
                for entry in controller.state().mirror_entries().await? {
                    let state = controller.state();
                    let evidence = state.mirror_evidence(&entry.reference).await?;
                    let mut flags = summary(evidence.as_ref());
                    if state.revocation(&entry.reference).await?.is_some() {
                        flags.push_str(",REVOKED");
                    }
                    let advisories = state.advisories(&entry.reference).await?;
                    if !advisories.is_empty() {
                        let ids: Vec<&str> = advisories.iter().map(|a| a.id.as_str()).collect();
                        flags.push_str(&format!(",VULNERABLE:{}", ids.join("+")));
                    }
                    println!(
                        "{}\tsha256:{}\t{}\t{}\t{flags}",
                        entry.reference,
                        entry.sha256,
                        kind(&entry.kind),
                        entry.size,
                    );
                }
            }
            MirrorCommand::Show { name } => {
                let Some(entry) = controller.state().mirror_entry(&name).await? else {
                    anyhow::bail!("no mirror entry {name}: `kiln mirror list` shows what there is");
                };
                let evidence = controller.state().mirror_evidence(&name).await?;
                show(&entry, evidence.as_ref());
                show_trust(controller.state(), &name).await?;
            }
            MirrorCommand::Why { name, json } => {
                let key = controller.signing_key(None)?;
                let chain = kiln_daemon::why::why(
                    controller.state(),
                    controller.store(),
                    key.public_key(),
                    &name,
                )
                .await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&chain)?);
                } else {
                    print!("{}", kiln_daemon::why::render(&chain));
                    crate::cmd_mirror_index::explain_members(&controller, &name).await?;
                }
            }
            MirrorCommand::Revoke { name, reason } => {
                anyhow::ensure!(
                    !reason.trim().is_empty() && !reason.contains('\n'),
                    "--reason must be one non-empty line"
                );
                anyhow::ensure!(
                    controller.state().mirror_entry(&name).await?.is_some(),
                    "no mirror entry {name}: `kiln mirror list` shows what there is"
                );
                let revoked = controller
                    .state()
                    .revoke(&name, reason.trim(), time::OffsetDateTime::now_utc())
                    .await?;
                println!(
                    "revoked {name} at {} ({}); see what used it: kiln audit affected {name}",
                    revoked.revoked_at, revoked.reason
                );
            }
            MirrorCommand::Advisories(AdvisoriesCommand::Import { file }) => {
                import_advisories(controller.state(), &file).await?;
            }
            MirrorCommand::Index(cmd) => crate::cmd_mirror_index::run(&controller, cmd).await?,
            MirrorCommand::Git(cmd) => crate::cmd_mirror_git::run(&controller, cmd).await?,
        }
        controller.state().close().await;
        Ok(ExitCode::SUCCESS)
    })
}

fn kind(kind: &BlobKind) -> String {
    match kind {
        BlobKind::File { file_name } => format!("file:{file_name}"),
        BlobKind::Tree => "tree".into(),
    }
}

/// One column for `mirror list`: `signed:NAME:KEYID`, `sha256-asserted`, or `unsigned`.
fn summary(evidence: Option<&MirrorEvidence>) -> String {
    let Some(ev) = evidence else {
        return "no-evidence".into();
    };
    let mut parts = Vec::new();
    if let Some(keyid) = &ev.signer_keyid {
        let who = ev.signer_name.as_deref().unwrap_or("untrusted-key");
        parts.push(format!("signed:{who}:{keyid}"));
    } else {
        parts.push("unsigned".into());
    }
    if ev.asserted.is_some() {
        parts.push("sha256-asserted".into());
    }
    parts.join(",")
}

fn show(entry: &MirrorEntry, evidence: Option<&MirrorEvidence>) {
    println!("entry:     {}", entry.reference);
    println!("sha256:    {}", entry.sha256);
    println!("kind:      {}", kind(&entry.kind));
    println!("size:      {}", entry.size);
    println!("added at:  {}", entry.added_at);
    let Some(ev) = evidence else {
        println!("evidence:  none recorded (added before evidence was kept)");
        return;
    };
    match &ev.asserted {
        Some((digest, by)) => println!("asserted:  sha256:{digest} by {by}"),
        None => println!("asserted:  no digest asserted"),
    }
    match (&ev.signature, &ev.signer_keyid) {
        (Some(sig), Some(keyid)) => {
            println!("signature: {sig} (verified)");
            println!(
                "signer:    {} key {keyid} ({})",
                ev.signer_name
                    .as_deref()
                    .unwrap_or("(not named by the policy)"),
                ev.signer_algorithm.as_deref().unwrap_or("?")
            );
        }
        _ => println!("signature: none"),
    }
    println!("policy:    {}", ev.policy_decision);
    show_details(&ev.details);
}

/// The evidence beyond the digest, signature and rule: fetch origin, bundle, provenance,
/// license and, for a root filesystem, its packages.
fn show_details(d: &kiln_daemon::evidence::EvidenceDetails) {
    if let Some(f) = &d.fetched {
        println!("fetched:   {} at {}", f.url, f.at);
    }
    if let Some(c) = &d.certificate {
        println!(
            "certificate: {} issued by {}, until {} ({}), sha256:{}",
            c.subject,
            c.issuer,
            c.not_after,
            c.identities.join(", "),
            c.sha256
        );
    }
    if let Some(b) = &d.bundle {
        println!(
            "bundle:    {} sha256:{} ({} transparency log entries, kept, not verified)",
            b.media_type, b.sha256, b.tlog_entries
        );
    }
    if let Some(p) = &d.provenance {
        println!(
            "built by:  kiln, provenance sha256:{} verified with builder {} key {}{}",
            p.document_sha256,
            p.builder_name.as_deref().unwrap_or("(this controller)"),
            p.builder_keyid,
            p.invocation
                .as_deref()
                .map(|i| format!(", run {i}"))
                .unwrap_or_default()
        );
        for dep in &p.dependencies {
            println!(
                "  from:    {} sha256:{} (in this mirror)",
                dep.entry, dep.sha256
            );
        }
    }
    if let Some(l) = &d.license {
        println!(
            "license:   {} ({}; {})",
            l.expression.as_deref().unwrap_or("unknown"),
            l.source,
            l.decision
        );
    }
    if !d.packages.is_empty() {
        let licensed = d.packages.iter().filter(|p| p.license.is_some()).count();
        println!(
            "packages:  {} Debian packages ({licensed} with a known license)",
            d.packages.len()
        );
        for p in &d.packages {
            println!(
                "  package: {} {} {} {}",
                p.name,
                p.version,
                p.architecture,
                p.license.as_deref().unwrap_or("license-unknown")
            );
        }
    }
}

/// Revocation and advisories of an entry, after its evidence.
async fn show_trust(state: &State, name: &MirrorRef) -> anyhow::Result<()> {
    match state.revocation(name).await? {
        Some(r) => println!("revoked:   at {} ({})", r.revoked_at, r.reason),
        None => println!("revoked:   no"),
    }
    let advisories = state.advisories(name).await?;
    if advisories.is_empty() {
        println!("advisories: none known");
    }
    for a in advisories {
        println!(
            "advisory:  {} (modified {}): {}",
            a.id, a.modified, a.summary
        );
    }
    Ok(())
}

async fn import_advisories(state: &State, file: &Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let parsed = kiln_daemon::advisories::parse_osv(&text)
        .with_context(|| format!("{}: cannot import advisories", file.display()))?;
    let now = time::OffsetDateTime::now_utc();
    let mut flagged = 0;
    for advisory in &parsed.matches {
        state.add_advisory(advisory, now).await?;
        if state.mirror_entry(&advisory.reference).await?.is_some() {
            flagged += 1;
            println!(
                "{}: {} ({})",
                advisory.reference, advisory.id, advisory.summary
            );
        }
    }
    println!(
        "imported {} advisory match(es); {flagged} name an entry in this mirror",
        parsed.matches.len()
    );
    for id in &parsed.without_versions {
        println!("note: {id} lists no explicit versions (ranges are not matched)");
    }
    for id in &parsed.withdrawn {
        println!("note: {id} is withdrawn; skipped");
    }
    Ok(())
}

pub(crate) fn print_added(entry: &MirrorEntry, outcome: AddOutcome) {
    let verb = match outcome {
        AddOutcome::Added => "added",
        AddOutcome::AlreadyPresent => "already present",
    };
    println!(
        "{verb} {} sha256:{} ({}, {} bytes)",
        entry.reference,
        entry.sha256,
        kind(&entry.kind),
        entry.size
    );
}
