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
