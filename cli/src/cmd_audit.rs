//! `kiln audit`: evidence for security reviewers, read from the controller's data dir on the
//! controller's machine (like `kiln admin`).

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use kiln_daemon::Controller;
use kiln_daemon::audit::{render_text, separation_report};
use kiln_daemon::state::Database;

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Every published artifact whose provenance depends on a mirror entry, directly or
    /// through artifacts kiln built from it (for a revoked or vulnerable entry: what to
    /// rebuild).
    Affected {
        /// The entry's NAME@VERSION.
        entry: kiln_core::MirrorRef,
        /// The report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The step-separation report of a run: what each step ran as, where and with what, and
    /// whether any two steps shared a writable path, a worker slot or a host uid. Exits 0 when
    /// separated, 1 when a check failed.
    Steps {
        /// The run id.
        run: String,
        /// The report as JSON (format `kiln.dev/step-separation/v1`).
        #[arg(long)]
        json: bool,
    },
}

pub fn run(
    data_dir: &Path,
    database: Option<&Database>,
    cmd: AuditCommand,
) -> anyhow::Result<ExitCode> {
    crate::runtime()?.block_on(async {
        let controller = Controller::open_with(data_dir, database)
            .await
            .context("cannot open the data dir")?;
        let result = match cmd {
            AuditCommand::Steps { run, json } => steps(&controller, &run, json).await,
            AuditCommand::Affected { entry, json } => affected(&controller, &entry, json).await,
        };
        controller.state().close().await;
        result
    })
}

async fn steps(controller: &Controller, run: &str, json: bool) -> anyhow::Result<ExitCode> {
    let detail = controller
        .state()
        .run_detail(run)
        .await?
        .with_context(|| format!("no run {run} in this data dir"))?;
    let report = separation_report(&detail);
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render_text(&report));
    }
    Ok(if report.separated {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn affected(
    controller: &Controller,
    entry: &kiln_core::MirrorRef,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let report =
        kiln_daemon::affected::affected(controller.state(), controller.store(), entry).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{} sha256:{}: {} of {} published artifact(s) depend on it",
        report.entry,
        report.sha256,
        report.affected.len(),
        report.artifacts_checked
    );
    for a in &report.affected {
        println!(
            "  run {} artifact {} sha256:{}",
            a.run, a.artifact, a.sha256
        );
        println!("    via {}", a.via.join(" -> "));
    }
    Ok(ExitCode::SUCCESS)
}
