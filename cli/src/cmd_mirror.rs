//! `kiln mirror`: add files and root filesystems to the vetted mirror, list its entries.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use kiln_core::{BlobKind, MirrorRef, Sha256Digest};
use kiln_daemon::Controller;
use kiln_daemon::state::{AddOutcome, MirrorEntry};

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
    },
    /// Import a root filesystem (a directory or a tar archive) for steps to run in.
    ImportRootfs {
        /// The directory or tar archive.
        path: PathBuf,
        /// The entry's immutable NAME@VERSION.
        #[arg(long)]
        name: MirrorRef,
    },
    /// List the mirror's entries.
    List,
}

pub fn run(data_dir: &Path, cmd: MirrorCommand) -> anyhow::Result<ExitCode> {
    crate::runtime()?.block_on(async {
        let controller = Controller::open(data_dir)
            .await
            .context("cannot open the data dir")?;
        match cmd {
            MirrorCommand::Add {
                path,
                name,
                sha256,
                tree,
            } => {
                let added = if tree {
                    anyhow::ensure!(
                        sha256.is_none(),
                        "--sha256 applies to single files, not to --tree"
                    );
                    controller.mirror_add_tree(&path, name.clone(), false).await
                } else {
                    controller
                        .mirror_add_file(&path, name.clone(), sha256)
                        .await
                };
                let (entry, outcome) =
                    added.with_context(|| format!("cannot add {} as {name}", path.display()))?;
                print_added(&entry, outcome);
            }
            MirrorCommand::ImportRootfs { path, name } => {
                let (entry, outcome) = controller
                    .mirror_add_tree(&path, name.clone(), true)
                    .await
                    .with_context(|| format!("cannot import {} as {name}", path.display()))?;
                print_added(&entry, outcome);
            }
            MirrorCommand::List => {
                for entry in controller.state().mirror_entries().await? {
                    println!(
                        "{}\tsha256:{}\t{}\t{}",
                        entry.reference,
                        entry.sha256,
                        kind(&entry.kind),
                        entry.size
                    );
                }
            }
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

fn print_added(entry: &MirrorEntry, outcome: AddOutcome) {
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
