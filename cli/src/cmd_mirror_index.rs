//! `kiln mirror index`: present mirror entries to a package manager as a local package index,
//! itself a tree entry built from entries already in the mirror (docs/package-index.md).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;
use kiln_core::{BlobKind, MirrorRef};
use kiln_daemon::Controller;
use kiln_mirror::pypi::{self, IndexMember};

#[derive(Subcommand, Debug)]
pub enum IndexCommand {
    /// Build a PEP 503 "simple" index (for `pip install --index-url file:///in/INPUT/simple`)
    /// from wheel and sdist entries, and add it as a tree entry.
    Pypi {
        /// The index entry's immutable NAME@VERSION.
        #[arg(long)]
        name: MirrorRef,
        /// The members: file entries in the mirror, each holding a wheel or an sdist.
        #[arg(value_name = "NAME@VERSION", required = true)]
        members: Vec<MirrorRef>,
        /// The trust policy to decide under [default: DATA_DIR/mirror-policy.yaml].
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
    },
}

pub async fn run(controller: &Controller, cmd: IndexCommand) -> anyhow::Result<()> {
    match cmd {
        IndexCommand::Pypi {
            name,
            members,
            policy,
        } => pypi_index(controller, name, &members, policy).await,
    }
}

/// One member as found in the catalogue, checked before any byte is read.
struct Found {
    reference: MirrorRef,
    file_name: String,
    sha256: kiln_core::Sha256Digest,
}

async fn pypi_index(
    controller: &Controller,
    name: MirrorRef,
    members: &[MirrorRef],
    policy: Option<PathBuf>,
) -> anyhow::Result<()> {
    // Every member is checked (present, a file, not revoked, a wheel or sdist name) before
    // anything is read or written, so a refusal leaves nothing behind.
    let mut found = Vec::with_capacity(members.len());
    for reference in members {
        found.push(find_member(controller, reference).await?);
    }
    let mut bytes = Vec::with_capacity(found.len());
    for f in &found {
        // Re-hashed on read: what goes into the index is what the mirror admitted.
        let read = controller
            .store()
            .read_verified(&f.sha256)
            .with_context(|| format!("cannot read {} from the store", f.reference))?;
        bytes.push(read);
    }
    let index_members: Vec<IndexMember<'_>> = found
        .iter()
        .zip(&bytes)
        .map(|(f, b)| IndexMember {
            reference: &f.reference,
            file_name: &f.file_name,
            bytes: b,
        })
        .collect();

    let scratch = tempfile::tempdir().context("cannot create a scratch directory")?;
    let dir = scratch.path().join("index");
    let summary = pypi::write_simple_index(&index_members, &dir)
        .with_context(|| format!("cannot build the index {name}"))?;
    let (entry, outcome) = controller
        .mirror_admit_tree(&dir, name.clone(), false, policy.as_deref())
        .await
        .with_context(|| format!("cannot add the index as {name}"))?;
    tracing::info!(index = %name, files = summary.files, "built a pypi index");
    let verb = match outcome {
        kiln_daemon::state::AddOutcome::Added => "added",
        kiln_daemon::state::AddOutcome::AlreadyPresent => "already present",
    };
    println!(
        "{verb} {} sha256:{} (tree, {} bytes): pypi index of {} file(s), project(s) {}",
        entry.reference,
        entry.sha256,
        entry.size,
        summary.files,
        summary.projects.join(", ")
    );
    println!(
        "use it as a tree input and run: pip install --index-url file:///in/INPUT/simple PROJECT"
    );
    Ok(())
}

async fn find_member(controller: &Controller, reference: &MirrorRef) -> anyhow::Result<Found> {
    let state = controller.state();
    let Some(entry) = state.mirror_entry(reference).await? else {
        anyhow::bail!("no mirror entry {reference}: add the wheel or sdist with `kiln mirror add`");
    };
    let BlobKind::File { file_name } = entry.kind else {
        anyhow::bail!("{reference} is a tree; an index member must be a wheel or sdist file");
    };
    if let Some(revoked) = state.revocation(reference).await? {
        anyhow::bail!(
            "{reference} is revoked ({}); an index may not carry it",
            revoked.reason
        );
    }
    pypi::parse_file_name(reference, &file_name)?;
    Ok(Found {
        reference: reference.clone(),
        file_name,
        sha256: entry.sha256,
    })
}

/// Indexes bigger than this are not opened by `kiln mirror why` (it reads the archive whole).
const MAX_EXPLAINED_INDEX: u64 = 64 << 20;

/// After `kiln mirror why NAME`: if NAME is a package index, each member its `kiln-index.json`
/// lists, explained in turn (or marked MISSING when the mirror no longer holds it with those
/// bytes). Prints nothing for other entries.
pub async fn explain_members(controller: &Controller, name: &MirrorRef) -> anyhow::Result<()> {
    let state = controller.state();
    let Some(entry) = state.mirror_entry(name).await? else {
        return Ok(());
    };
    if entry.kind != BlobKind::Tree || entry.size > MAX_EXPLAINED_INDEX {
        return Ok(());
    }
    // `why` has already said what it could; a tree it cannot read just has no members shown.
    let archive = match controller.store().read_verified(&entry.sha256) {
        Ok(archive) => archive,
        Err(err) => {
            tracing::warn!(entry = %name, error = %err, "cannot read the tree to list index members");
            return Ok(());
        }
    };
    let Some(manifest) = pypi::manifest_in_archive(archive.as_slice()) else {
        return Ok(());
    };
    let manifest = pypi::IndexManifest::from_json(&manifest)
        .with_context(|| format!("{name}: {} is not a kiln index manifest", pypi::MANIFEST))?;
    println!("  members ({}):", pypi::MANIFEST);
    let key = controller.signing_key(None)?;
    for member in &manifest.members {
        let reference: MirrorRef = member
            .entry
            .parse()
            .with_context(|| format!("{name}: {}", pypi::MANIFEST))?;
        let sha256 = member.sha256;
        let held = state.mirror_entry(&reference).await?;
        if held.is_none_or(|h| h.sha256 != sha256) {
            println!(
                "  {reference} sha256:{sha256}  MISSING: the mirror no longer holds it with these bytes"
            );
            continue;
        }
        let chain =
            kiln_daemon::why::why(state, controller.store(), key.public_key(), &reference).await?;
        for line in kiln_daemon::why::render(&chain).lines() {
            println!("  {line}");
        }
        if let Some(revoked) = state.revocation(&reference).await? {
            println!("    REVOKED at {} ({})", revoked.revoked_at, revoked.reason);
        }
    }
    Ok(())
}
