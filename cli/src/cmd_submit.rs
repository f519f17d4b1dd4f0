//! The team commands, clients of a controller (`kiln daemon`): `kiln submit`, `kiln status`,
//! `kiln artifacts`, `kiln cancel`. Each sends the team's API token; a team sees only its runs.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;

use crate::client_config::ClientConfig;
use clap::Args;
use kiln_client::{Client, ClientError, Submitted, TransportSecurity};
use kiln_core::ExitRecord;
use kiln_core::api::v1::{RunState, RunView, StepState, StepView, SubmitRun};

/// How often `--wait` asks for the run's state, and the most it backs off to on errors.
pub const WAIT_POLL: Duration = Duration::from_millis(500);
pub const WAIT_RETRY_MAX: Duration = Duration::from_secs(5);

/// Which controller to talk to.
#[derive(Args, Debug)]
pub struct ControllerArg {
    /// The controller's URL, e.g. `http://127.0.0.1:7070` or `https://ci.example:7070`
    /// [default: `controller:` in the config file].
    #[arg(long, env = "KILN_CONTROLLER", value_name = "URL")]
    controller: Option<String>,
}

impl ControllerArg {
    /// The flag or variable, else the config file's `controller:`.
    pub fn url(&self) -> anyhow::Result<String> {
        match &self.controller {
            Some(url) => Ok(url.clone()),
            None => self.url_or(ClientConfig::load()?.controller),
        }
    }

    /// The flag or variable, else `configured`.
    fn url_or(&self, configured: Option<String>) -> anyhow::Result<String> {
        self.controller.clone().or(configured).context(
            "no controller: pass --controller URL, set KILN_CONTROLLER, or put              `controller: URL` in ~/.config/kiln/config.yaml",
        )
    }
}

/// Which controller to talk to, as which team, trusting which CA: the team commands' flags.
#[derive(Args, Debug)]
pub struct TeamArgs {
    #[command(flatten)]
    controller: ControllerArg,
    /// The team's API token (`kiln admin token create --team NAME`).
    #[arg(long, env = "KILN_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// For https: the controller's CA certificate (PEM), the only root trusted.
    #[arg(
        long,
        env = "KILN_CA",
        value_name = "FILE",
        conflicts_with = "ca_fingerprint"
    )]
    ca: Option<PathBuf>,
    /// For https: the sha256 (hex) of the controller's CA certificate, which the controller
    /// sends along with its own (`kiln admin join-token create` prints it).
    #[arg(long, env = "KILN_CA_FINGERPRINT", value_name = "HEX")]
    ca_fingerprint: Option<String>,
}

impl TeamArgs {
    pub fn client(&self) -> anyhow::Result<Client> {
        let config = ClientConfig::load()?;
        let url = self.controller.url_or(config.controller)?;
        // The CA settings come together: a flag replaces both of the file's.
        let (ca, ca_fingerprint) = if self.ca.is_some() || self.ca_fingerprint.is_some() {
            (self.ca.clone(), self.ca_fingerprint.clone())
        } else {
            (config.ca, config.ca_fingerprint)
        };
        let security = match (&ca, &ca_fingerprint) {
            (Some(_), Some(_)) => {
                anyhow::bail!("the config file sets both `ca` and `ca_fingerprint`: keep one")
            }
            (Some(path), None) => TransportSecurity::Tls {
                ca_pem: std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read the CA file {}", path.display()))?,
                identity: None,
            },
            (None, Some(hex)) => {
                let fingerprint = hex
                    .trim()
                    .strip_prefix("sha256:")
                    .unwrap_or(hex.trim())
                    .to_ascii_lowercase();
                anyhow::ensure!(
                    fingerprint.len() == 64 && fingerprint.bytes().all(|b| b.is_ascii_hexdigit()),
                    "--ca-fingerprint must be 64 hex digits (the CA certificate's sha256)"
                );
                TransportSecurity::PinnedCa { fingerprint }
            }
            (None, None) => TransportSecurity::PlainHttp,
        };
        let token = self
            .token
            .clone()
            .or(config.token)
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        let token = token.context(
            "no API token: pass --token, set KILN_TOKEN or put `token:` in the config file \
             (an operator makes one with `kiln admin token create --team NAME`)",
        )?;
        Ok(Client::with_security(&url, security)?.with_token(&token))
    }
}

#[derive(Args, Debug)]
pub struct SubmitArgs {
    /// The pipeline YAML file.
    pipeline: PathBuf,
    #[command(flatten)]
    team: TeamArgs,
    /// Wait until the run is final; exit 0 if it succeeded, 1 otherwise.
    #[arg(long)]
    wait: bool,
    /// An idempotency key: submitting it again returns the first run instead of a new one.
    #[arg(long, value_name = "ID")]
    request_id: Option<String>,
    /// Print the run as JSON (the final run with `--wait`).
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// A run id; without it, every run, newest first.
    run: Option<String>,
    #[command(flatten)]
    team: TeamArgs,
    /// Print JSON (`RunView`, or a list of them).
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct ArtifactsArgs {
    /// The run id.
    run: String,
    #[command(flatten)]
    team: TeamArgs,
    /// Where ARTIFACT and ARTIFACT.intoto.jsonl are written.
    #[arg(long, default_value = "kiln-out", value_name = "DIR")]
    out: PathBuf,
    /// Print what was written as JSON: `[{name, sha256, size, path, provenance}]`.
    #[arg(long)]
    json: bool,
}

pub fn submit(args: SubmitArgs) -> anyhow::Result<ExitCode> {
    let path = &args.pipeline;
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let pipeline_yaml =
        String::from_utf8(bytes).with_context(|| format!("{}: not UTF-8 text", path.display()))?;
    let request = SubmitRun {
        pipeline_file: path.display().to_string(),
        pipeline_yaml,
        request_id: args.request_id.clone(),
    };
    let client = args.team.client()?;
    crate::runtime()?.block_on(async {
        let submitted = match client.submit_run(&request).await {
            Ok(submitted) => submitted,
            Err(ClientError::Http {
                status: 400 | 422,
                error,
                diagnostics,
                ..
            }) => {
                if diagnostics.is_empty() {
                    eprintln!("{}: {error}", path.display());
                }
                for d in &diagnostics {
                    eprintln!("{d}");
                }
                return Ok(ExitCode::from(1));
            }
            Err(err) => {
                return Err(anyhow::Error::new(err).context(format!(
                    "{}: cannot submit to {}",
                    path.display(),
                    client.base_url()
                )));
            }
        };
        let run = submitted.run();
        let again = matches!(submitted, Submitted::Existing(_));
        eprintln!(
            "run {} of {} ({} steps){}",
            run.id,
            run.pipeline_name,
            run.steps.len(),
            if again {
                " (already submitted with this request id)"
            } else {
                ""
            }
        );
        if !args.wait {
            if args.json {
                print_json(run)?;
            } else {
                println!("{}", run.id);
            }
            return Ok(ExitCode::SUCCESS);
        }
        let done = wait(&client, run.clone()).await?;
        if args.json {
            print_json(&done)?;
        } else {
            print_run(&done);
        }
        Ok(if done.state == RunState::Succeeded {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        })
    })
}

/// Polls until the run is final, showing each step as it finishes. Network errors and a
/// restarting controller are waited out.
async fn wait(client: &Client, mut run: RunView) -> anyhow::Result<RunView> {
    let mut shown: BTreeMap<String, StepState> = BTreeMap::new();
    let mut retry = WAIT_POLL;
    loop {
        for step in &run.steps {
            if shown.get(&step.name) != Some(&step.state) {
                show_step(step);
                if step.state == StepState::Failed {
                    show_log_tail(client, &run.id, &step.name).await;
                }
                shown.insert(step.name.clone(), step.state);
            }
        }
        if run.state != RunState::Running {
            return Ok(run);
        }
        tokio::time::sleep(retry).await;
        match client.get_run(&run.id).await {
            Ok(next) => {
                run = next;
                retry = WAIT_POLL;
            }
            Err(err) if err.is_transient() => {
                eprintln!("kiln: {}; retrying", crate::one_line(&err.into()));
                retry = (retry * 2).min(WAIT_RETRY_MAX);
            }
            Err(err) => return Err(err).context("cannot follow the run"),
        }
    }
}

fn show_step(step: &StepView) {
    let worker = step
        .worker
        .as_deref()
        .map(|w| format!(" on {w}"))
        .unwrap_or_default();
    match step.state {
        StepState::Pending => {}
        StepState::Leased => eprintln!("  [run ] {}{worker}", step.name),
        StepState::Succeeded => eprintln!("  [ ok ] {}{worker}", step.name),
        StepState::Failed => eprintln!(
            "  [FAIL] {}{worker}: {}",
            step.name,
            step.exit.as_ref().map_or("failed".into(), describe_exit)
        ),
        StepState::Skipped => eprintln!("  [skip] {}", step.name),
        StepState::Cancelled => eprintln!("  [cncl] {}", step.name),
    }
}

/// The last lines of a failed step's log, so the user sees why without another command.
async fn show_log_tail(client: &Client, run: &str, step: &str) {
    let Ok(log) = client.step_log(run, step).await else {
        return;
    };
    let text = String::from_utf8_lossy(&log);
    let lines: Vec<&str> = text.lines().collect();
    for line in &lines[lines.len().saturating_sub(20)..] {
        eprintln!("         | {line}");
    }
}

#[derive(Args, Debug)]
pub struct CancelArgs {
    /// The run id.
    run: String,
    #[command(flatten)]
    team: TeamArgs,
    /// Print the cancelled run as JSON (`RunView`).
    #[arg(long)]
    json: bool,
}

/// `kiln cancel RUN`: exit 0 once the run is cancelled, 1 if it had already finished.
pub fn cancel(args: CancelArgs) -> anyhow::Result<ExitCode> {
    let client = args.team.client()?;
    crate::runtime()?.block_on(async {
        let run = match client.cancel_run(&args.run).await {
            Ok(run) => run,
            Err(ClientError::Conflict { error, .. }) => {
                eprintln!("{error}");
                return Ok(ExitCode::from(1));
            }
            Err(err) => {
                return Err(anyhow::Error::new(err))
                    .with_context(|| format!("cannot cancel run {}", args.run));
            }
        };
        if args.json {
            print_json(&run)?;
        } else {
            print_run(&run);
        }
        Ok(ExitCode::SUCCESS)
    })
}

pub fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let client = args.team.client()?;
    crate::runtime()?.block_on(async {
        match &args.run {
            Some(id) => {
                let run = client
                    .get_run(id)
                    .await
                    .with_context(|| format!("cannot read run {id}"))?;
                if args.json {
                    print_json(&run)?;
                } else {
                    print_run(&run);
                }
            }
            None => {
                let runs = client.list_runs().await.context("cannot list runs")?;
                if args.json {
                    print_json(&runs)?;
                } else {
                    for run in &runs {
                        let ok = run
                            .steps
                            .iter()
                            .filter(|s| s.state == StepState::Succeeded)
                            .count();
                        println!(
                            "{}  {:<10} {:<20} {}/{} steps  {}",
                            run.id,
                            word(&run.state),
                            run.pipeline_name,
                            ok,
                            run.steps.len(),
                            run.started_at
                        );
                    }
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

pub fn artifacts(args: ArtifactsArgs) -> anyhow::Result<ExitCode> {
    let client = args.team.client()?;
    let out = &args.out;
    crate::runtime()?.block_on(async {
        let run = client
            .get_run(&args.run)
            .await
            .with_context(|| format!("cannot read run {}", args.run))?;
        if matches!(run.state, RunState::Failed | RunState::Cancelled) {
            // No artifacts to fetch; the signed run attestation says what happened.
            std::fs::create_dir_all(out)
                .with_context(|| format!("cannot create {}", out.display()))?;
            let dest = write_run_attestation(&client, &run.id, out).await?;
            println!(
                "run {} {}; its signed run attestation was written to {}",
                run.id,
                word(&run.state),
                dest.display()
            );
            return Ok(ExitCode::SUCCESS);
        }
        if run.artifacts.is_empty() {
            eprintln!(
                "run {} ({}) has no published artifacts",
                run.id,
                word(&run.state)
            );
            return Ok(ExitCode::from(1));
        }
        std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
        if matches!(run.state, RunState::Succeeded) {
            let dest = write_run_attestation(&client, &run.id, out).await?;
            if !args.json {
                println!("run attestation\n  {}", dest.display());
            }
        }
        let mut written = Vec::new();
        for artifact in &run.artifacts {
            let name = &artifact.name;
            if name.is_empty() || name.contains('/') || name.starts_with('.') {
                anyhow::bail!("the controller named an artifact {name:?}; refusing to write it");
            }
            let dest = out.join(name);
            let temp = tempfile::tempdir_in(out)?;
            let downloaded = temp.path().join("artifact");
            client
                .download_artifact(&run.id, name, &artifact.sha256, &downloaded)
                .await
                .with_context(|| format!("cannot download artifact {name}"))?;
            let mode = if artifact.executable { 0o755 } else { 0o644 };
            std::fs::set_permissions(&downloaded, std::fs::Permissions::from_mode(mode))?;
            std::fs::rename(&downloaded, &dest)
                .with_context(|| format!("cannot write {}", dest.display()))?;
            let provenance = client
                .artifact_provenance(&run.id, name)
                .await
                .with_context(|| format!("cannot download the provenance of {name}"))?;
            let prov = out.join(format!("{name}.intoto.jsonl"));
            write_file(out, &prov, provenance.as_bytes())?;
            if args.json {
                written.push(serde_json::json!({
                    "name": name,
                    "sha256": artifact.sha256,
                    "size": artifact.size,
                    "path": dest,
                    "provenance": prov,
                }));
            } else {
                println!(
                    "{}  sha256:{}  {} bytes",
                    name, artifact.sha256, artifact.size
                );
                println!("  {}", dest.display());
                println!("  {}", prov.display());
            }
        }
        if args.json {
            print_json(&written)?;
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Downloads the run's signed run attestation into `out/run.intoto.jsonl`.
async fn write_run_attestation(client: &Client, run: &str, out: &Path) -> anyhow::Result<PathBuf> {
    let text = client
        .run_attestation(run)
        .await
        .with_context(|| format!("cannot download the run attestation of run {run}"))?;
    let dest = out.join(kiln_attest::run_attestation::FILE_NAME);
    write_file(out, &dest, text.as_bytes())?;
    Ok(dest)
}

/// Writes `bytes` to `dest` atomically (temp file in `dir`, fsync, rename), mode 0644.
fn write_file(dir: &Path, dest: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    tmp.as_file().sync_all()?;
    tmp.persist(dest)
        .with_context(|| format!("cannot write {}", dest.display()))?;
    Ok(())
}

fn print_run(run: &RunView) {
    println!(
        "run {} of {}: {}",
        run.id,
        run.pipeline_name,
        word(&run.state)
    );
    println!("steps:");
    for step in &run.steps {
        println!(
            "  {:<24} {:<10} attempts {:<2} {:<16} {}",
            step.name,
            word(&step.state),
            step.attempts,
            step.worker.as_deref().unwrap_or("-"),
            step.exit.as_ref().map(describe_exit).unwrap_or_default()
        );
    }
    if !run.artifacts.is_empty() {
        println!("artifacts:");
    }
    for a in &run.artifacts {
        println!(
            "  {}  from {}  sha256:{}  {} bytes",
            a.name, a.step, a.sha256, a.size
        );
    }
}

fn describe_exit(exit: &ExitRecord) -> String {
    match exit {
        ExitRecord::Exited { code } => format!("exited with status {code}"),
        ExitRecord::Signaled { signal } => format!("killed by signal {signal}"),
        ExitRecord::TimedOut { after_secs } => format!("timed out after {after_secs}s"),
        ExitRecord::Killed { reason } | ExitRecord::Failed { reason } => reason.clone(),
    }
}

/// A state's wire name (`succeeded`, `leased`, …).
fn word<T: serde::Serialize>(state: &T) -> String {
    serde_json::to_value(state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut stdout, value)?;
    writeln!(stdout)?;
    Ok(())
}
