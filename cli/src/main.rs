//! `kiln`: the command-line front of kiln's library crates. Each subcommand is thin: it parses
//! flags, calls a library, and prints.
#![forbid(unsafe_code)]

mod client_config;
mod cmd_admin;
mod cmd_audit;
mod cmd_daemon;
mod cmd_keys;
mod cmd_logs;
mod cmd_mirror;
mod cmd_mirror_fetch;
mod cmd_mirror_git;
mod cmd_mirror_index;
mod cmd_run;
mod cmd_submit;
mod cmd_verify;
mod cmd_worker;
mod data_dir;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use kiln_sandbox::{HelperImage, ImageError};

/// kiln: hermetic builds from vetted inputs, with signed provenance.
#[derive(Parser, Debug)]
#[command(name = "kiln", version, about, propagate_version = true)]
struct Cli {
    /// Where kiln keeps its state, store and key [default: $XDG_DATA_HOME/kiln or ~/.local/share/kiln].
    #[arg(long, global = true, env = "KILN_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Keep the controller's state in this database instead of DATA/state.sqlite:
    /// `postgres://USER[:PASSWORD]@HOST[:PORT]/DB` (several daemons may share one) or
    /// `sqlite:PATH`. Used by `daemon`, `mirror`, `admin` and `audit`; prefer the environment variable
    /// for a URL with a password.
    #[arg(
        long,
        global = true,
        env = "KILN_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    database_url: Option<kiln_daemon::state::Database>,
    /// Log filter, e.g. `info` or `kiln_worker=debug`.
    #[arg(long, global = true, env = "KILN_LOG", default_value = "warn")]
    log: String,
    /// Log lines on standard error as text, or as JSON objects (one a line, fields at the top level).
    #[arg(long, global = true, env = "KILN_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a pipeline: controller and one local worker in one process tree.
    Run(cmd_run::RunArgs),
    /// Serve the controller's HTTP API: accept runs, lease their steps to workers.
    Daemon(cmd_daemon::DaemonArgs),
    /// Check a pipeline file without running it.
    Check(cmd_run::CheckArgs),
    /// Manage the vetted mirror: the only source of a step's inputs.
    #[command(subcommand)]
    Mirror(cmd_mirror::MirrorCommand),
    /// Operator commands against the daemon's data dir (join tokens).
    #[command(subcommand)]
    Admin(cmd_admin::AdminCommand),
    /// Evidence for security reviewers: the step-separation report of a run.
    #[command(subcommand)]
    Audit(cmd_audit::AuditCommand),
    /// Manage provenance signing keys.
    #[command(subcommand)]
    Keys(cmd_keys::KeysCommand),
    /// Verify an artifact against its signed provenance.
    Verify(cmd_verify::VerifyArgs),
    /// Verify a run attestation (run.intoto.jsonl) and show how the run and each step ended.
    VerifyRun(cmd_verify::VerifyRunArgs),
    /// Run steps for a controller (`kiln daemon`); SIGTERM drains: running steps finish.
    Worker(cmd_worker::WorkerArgs),
    /// Submit a pipeline to a controller.
    Submit(cmd_submit::SubmitArgs),
    /// Show a controller's runs, or one run's steps.
    Status(cmd_submit::StatusArgs),
    /// Download a run's artifacts and their provenance from a controller.
    Artifacts(cmd_submit::ArtifactsArgs),
    /// Print a run's step logs; --follow keeps printing while the steps run.
    Logs(cmd_logs::LogsArgs),
    /// Cancel a run of your team: pending steps are cancelled, leased ones revoked.
    Cancel(cmd_submit::CancelArgs),
    /// Internal: the sandbox helper process the worker starts for each step.
    #[command(hide = true)]
    SandboxHelper,
}

/// How log events are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The one place the subscriber is set up: every event goes to standard error.
fn init_tracing(filter: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::SandboxHelper = cli.command {
        // Before anything else: the helper must stay single-threaded.
        kiln_sandbox::helper_main();
    }
    init_tracing(&cli.log, cli.log_format);
    let data_dir = data_dir::resolve(cli.data_dir);
    let result = match cli.command {
        Command::Run(args) => cmd_run::run(&data_dir, args),
        Command::Daemon(args) => cmd_daemon::run(&data_dir, cli.database_url, args),
        Command::Check(args) => cmd_run::check(args),
        Command::Mirror(cmd) => cmd_mirror::run(&data_dir, cli.database_url.as_ref(), cmd),
        Command::Keys(cmd) => cmd_keys::run(&data_dir, cmd),
        Command::Admin(cmd) => cmd_admin::run(&data_dir, cli.database_url.as_ref(), cmd),
        Command::Audit(cmd) => cmd_audit::run(&data_dir, cli.database_url.as_ref(), cmd),
        Command::Verify(args) => cmd_verify::run(args),
        Command::VerifyRun(args) => cmd_verify::run_attestation(args),
        Command::Worker(args) => cmd_worker::run(&data_dir, args),
        Command::Submit(args) => cmd_submit::submit(args),
        Command::Status(args) => cmd_submit::status(args),
        Command::Artifacts(args) => cmd_submit::artifacts(args),
        Command::Cancel(args) => cmd_submit::cancel(args),
        Command::Logs(args) => cmd_logs::run(args),
        Command::SandboxHelper => unreachable!("handled above"),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("kiln: error: {}", one_line(&err));
            ExitCode::from(2)
        }
    }
}

/// An error and its causes on one line.
fn one_line(err: &anyhow::Error) -> String {
    err.chain()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}

/// The sandbox helper (`kiln-sandbox-helper`) built into this binary by build.rs.
const EMBEDDED_HELPER: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/kiln-sandbox-helper"));

/// How the worker starts the sandbox: the helper built into this binary, from a sealed memfd
/// (see `kiln_sandbox::HelperImage`); else this same binary, as `kiln sandbox-helper`, which
/// does the same work with a larger process to fork per step.
fn sandbox_helper() -> anyhow::Result<kiln_sandbox::HelperCommand> {
    use anyhow::Context as _;
    static IMAGE: std::sync::OnceLock<Result<HelperImage, ImageError>> = std::sync::OnceLock::new();
    match IMAGE.get_or_init(|| HelperImage::seal("kiln-sandbox-helper", EMBEDDED_HELPER)) {
        Ok(image) => return Ok(image.command(Vec::new())),
        Err(err) => tracing::warn!(
            error = %err,
            "cannot use the built-in sandbox helper; steps start through `kiln sandbox-helper`"
        ),
    }
    let program =
        std::env::current_exe().context("cannot locate the kiln binary for the sandbox helper")?;
    Ok(kiln_sandbox::HelperCommand {
        program,
        args: vec!["sandbox-helper".into()],
    })
}

/// A tokio runtime for the async library calls.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context as _;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}
