//! `kiln mirror git`: bare mirrors of local git repositories, the repositories pipelines name
//! under `sources:` (docs/git-sources.md).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;
use kiln_daemon::Controller;

#[derive(Subcommand, Debug)]
pub enum GitCommand {
    /// Mirror every branch and tag of a local repository as DATA_DIR/git/NAME.git, or fetch
    /// it again. Only local paths and file:// URLs: clone over the network with git first.
    Add {
        /// The repository: a path or a file:// URL.
        origin: String,
        /// The name pipelines use (`sources: { app: { git: NAME, commit: … } }`).
        #[arg(long)]
        name: String,
        /// Only admit commits carrying an SSH signature by one of these keys (git's
        /// allowed-signers format: `PRINCIPAL KEY-TYPE BASE64-KEY`). Given again on a later
        /// add, it replaces the list; left out, the mirror keeps the list it has, if any.
        #[arg(long, value_name = "FILE")]
        allowed_signers: Option<PathBuf>,
    },
    /// List the git mirrors: name, origin, when added, and whether commits must be signed.
    List,
}

/// Runs one `kiln mirror git` command against an open controller.
pub async fn run(controller: &Controller, cmd: GitCommand) -> anyhow::Result<()> {
    match cmd {
        GitCommand::Add {
            origin,
            name,
            allowed_signers,
        } => {
            let added = kiln_daemon::git_sources::add_git_mirror(
                controller.state(),
                &controller.git_dir(),
                &origin,
                &name,
                allowed_signers.as_deref(),
            )
            .await
            .with_context(|| format!("cannot mirror {origin} as {name}"))?;
            let m = &added.mirror;
            println!(
                "{} git mirror {} <- {} ({} refs){}",
                if added.new { "added" } else { "updated" },
                m.name,
                m.origin,
                added.refs,
                if m.allowed_signers.is_some() {
                    ", signed commits only"
                } else {
                    ""
                }
            );
        }
        GitCommand::List => {
            for m in controller.state().git_mirrors().await? {
                let signed = match m.allowed_signers {
                    Some(_) => "signed-only",
                    None => "any-commit",
                };
                println!("{}\t{}\t{}\t{signed}", m.name, m.origin, m.added_at);
            }
        }
    }
    Ok(())
}
