//! `kiln run`: the all-in-one mode. Accepts a pipeline, runs its steps on a local worker, signs
//! provenance for its artifacts and writes them to `--out`, with the signed run attestation
//! `run.intoto.jsonl` of how the run ended (also when it failed).
//! `kiln check`: parse and validate only.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use kiln_core::{ExitRecord, LimitEventRecord, Sha256Digest, StepRecord, StepSpec};
use kiln_daemon::publish::PublishedArtifact;
use kiln_daemon::{BoxFuture, Controller, PipelineSource, RunEvent, StepExecutor};
use kiln_pipelines::Pipeline;
use kiln_worker::{IdRange, Worker, WorkerConfig};

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The pipeline YAML file.
    pipeline: PathBuf,
    /// Where artifacts, their provenance (ARTIFACT.intoto.jsonl, ARTIFACT.sigstore.json) and
    /// SBOMs (ARTIFACT.spdx.json, ARTIFACT.cdx.json, each also signed as .intoto.jsonl) are
    /// written, with the signed run attestation run.intoto.jsonl (also for a failed run).
    #[arg(long, default_value = "kiln-out", value_name = "DIR")]
    out: PathBuf,
    /// Sign with this PKCS#8 PEM key instead of the data dir's key.
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// How many steps may run at once.
    #[arg(long, short = 'j', value_name = "N")]
    jobs: Option<usize>,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// The pipeline YAML file.
    pipeline: PathBuf,
}

/// Reads and validates a pipeline; diagnostics are printed one per line.
fn load(path: &Path) -> anyhow::Result<Result<(Pipeline, PipelineSource), ExitCode>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let text =
        String::from_utf8(bytes).with_context(|| format!("{}: not UTF-8 text", path.display()))?;
    let file = path.display().to_string();
    match kiln_pipelines::parse(&file, &text) {
        Ok(pipeline) => {
            let source = PipelineSource {
                file,
                sha256: Sha256Digest::of(text.as_bytes()),
            };
            Ok(Ok((pipeline, source)))
        }
        Err(diagnostics) => {
            for d in diagnostics.iter() {
                eprintln!("{d}");
            }
            Ok(Err(ExitCode::from(1)))
        }
    }
}

pub fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    Ok(match load(&args.pipeline)? {
        Ok((pipeline, _)) => {
            println!(
                "{}: ok ({} steps)",
                args.pipeline.display(),
                pipeline.steps().len()
            );
            ExitCode::SUCCESS
        }
        Err(code) => code,
    })
}

struct LocalExecutor(Worker);

impl StepExecutor for LocalExecutor {
    fn execute(&self, spec: StepSpec) -> BoxFuture<StepRecord> {
        let worker = self.0.clone();
        Box::pin(async move { worker.run_step(spec).await })
    }
}

fn local_worker(controller: &Controller, data_dir: &Path) -> anyhow::Result<Worker> {
    let store = kiln_mirror::BlobStore::open(controller.store().root())?;
    let config =
        WorkerConfig::with_defaults(data_dir, crate::sandbox_helper()?, IdRange::default());
    Ok(Worker::new(config, store))
}

pub fn run(data_dir: &Path, args: RunArgs) -> anyhow::Result<ExitCode> {
    // Validate before touching the data dir: a rejected pipeline leaves nothing behind.
    let (pipeline, source) = match load(&args.pipeline)? {
        Ok(loaded) => loaded,
        Err(code) => return Ok(code),
    };
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    crate::runtime()?.block_on(async {
        let controller = Controller::open(data_dir)
            .await
            .context("cannot open the data dir")?;
        let key = controller
            .signing_key(args.key.as_deref())
            .context("cannot load the signing key")?;
        let git_dir = controller.git_dir();
        let git = kiln_daemon::run::GitSources {
            dir: &git_dir,
            store: controller.store(),
        };
        let run = kiln_daemon::run::accept(
            controller.state(),
            &|d| controller.store().contains(d),
            git,
            pipeline,
            source,
        )
        .await
        .with_context(|| format!("{}: run refused", args.pipeline.display()))?;
        eprintln!(
            "run {} of {} ({} steps)",
            run.id,
            run.pipeline.name(),
            run.pipeline.steps().len()
        );
        let executor: Arc<dyn StepExecutor> =
            Arc::new(LocalExecutor(local_worker(&controller, data_dir)?));
        let records =
            kiln_daemon::schedule::drive(controller.state(), &run, executor, jobs, &|e| {
                show_event(&controller, e)
            })
            .await?;
        let all_ok = records.len() == run.pipeline.steps().len()
            && records.values().all(|r| r.exit.success());
        let log_signer = controller
            .log_signer()
            .context("cannot load the step log key")?;
        let proofs = kiln_daemon::steplog::run_proofs(
            controller.state(),
            &log_signer,
            &run.id,
            time::OffsetDateTime::now_utc(),
        )
        .await?;
        let published = kiln_daemon::publish::publish(
            controller.state(),
            controller.store(),
            &run,
            &records,
            &key,
            Some(&proofs),
        )
        .await?;
        write_artifacts(&controller, &published, &args.out)?;
        controller
            .state()
            .finish_run(&run.id, all_ok, time::OffsetDateTime::now_utc())
            .await?;
        // Every run, failed ones too, leaves signed evidence of how it ended.
        let attestation = kiln_daemon::run_attestation::attest_run(
            controller.state(),
            controller.store(),
            &run,
            &key,
            time::OffsetDateTime::now_utc(),
        )
        .await?;
        let attestation_file = args.out.join(kiln_attest::run_attestation::FILE_NAME);
        write_atomically(&args.out, &attestation_file, &attestation.jsonl)?;
        kiln_daemon::steplog::sign_checkpoint(
            controller.state(),
            &log_signer,
            time::OffsetDateTime::now_utc(),
        )
        .await?;
        print_summary(&run.id, &records, &published, &args.out, all_ok);
        println!("run attestation:\n    {}", attestation_file.display());
        controller.state().close().await;
        Ok(if all_ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        })
    })
}

fn show_event(controller: &Controller, event: RunEvent<'_>) {
    match event {
        RunEvent::StepStarted { step } => eprintln!("  [run ] {step}"),
        RunEvent::StepSkipped { step, because } => eprintln!("  [skip] {step}: {because}"),
        RunEvent::StepFinished { record } => show_finished(controller, record),
    }
}

fn show_finished(controller: &Controller, record: &StepRecord) {
    let secs = (record.finished_on - record.started_on).as_seconds_f64();
    if record.exit.success() {
        let files = record.outputs.len();
        eprintln!(
            "  [ ok ] {} ({secs:.2}s, {files} output file(s))",
            record.step
        );
    } else {
        eprintln!(
            "  [FAIL] {} ({secs:.2}s): {}",
            record.step,
            describe_exit(&record.exit)
        );
    }
    // Memory and timeout events already explain the exit; a pids limit may not have ended it.
    for event in &record.events {
        if let LimitEventRecord::PidsLimit { limit } = event {
            eprintln!("         pids limit {limit} reached");
        }
    }
    if !record.exit.success() {
        show_log_tail(controller, record);
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

/// The last lines of a failed step's log, so the user sees why without another command.
fn show_log_tail(controller: &Controller, record: &StepRecord) {
    let Ok(log) = controller.store().read_verified(&record.log.sha256) else {
        return;
    };
    let text = String::from_utf8_lossy(&log);
    let lines: Vec<&str> = text.lines().collect();
    for line in &lines[lines.len().saturating_sub(20)..] {
        eprintln!("         | {line}");
    }
}

fn write_artifacts(
    controller: &Controller,
    published: &[PublishedArtifact],
    out: &Path,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    for artifact in published {
        let dest = out.join(&artifact.name);
        let _ = std::fs::remove_file(&dest);
        controller
            .store()
            .copy_out(&artifact.sha256, &dest, artifact.executable)?;
        let provenance = out.join(kiln_attest::provenance_file_name(&artifact.name));
        write_atomically(out, &provenance, &artifact.provenance)?;
        let bundle = out.join(kiln_attest::bundle_file_name(&artifact.name));
        write_atomically(out, &bundle, &artifact.bundle)?;
        for (file, text) in sbom_files(artifact) {
            write_atomically(out, &out.join(file), text)?;
        }
    }
    Ok(())
}

/// The SBOM files of an artifact: names and contents (see docs/sbom.md).
fn sbom_files(artifact: &PublishedArtifact) -> [(String, &str); 4] {
    let name = &artifact.name;
    let sboms = &artifact.sboms;
    [
        (kiln_attest::spdx_file_name(name), &sboms.spdx),
        (
            kiln_attest::spdx_attestation_file_name(name),
            &sboms.spdx_attestation,
        ),
        (kiln_attest::cyclonedx_file_name(name), &sboms.cyclonedx),
        (
            kiln_attest::cyclonedx_attestation_file_name(name),
            &sboms.cyclonedx_attestation,
        ),
    ]
}

/// Writes `text` to `dest` (mode 0644) through a temp file in `dir`, so no reader ever sees half
/// a file.
fn write_atomically(dir: &Path, dest: &Path, text: &str) -> anyhow::Result<()> {
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(text.as_bytes())?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    tmp.as_file().sync_all()?;
    tmp.persist(dest)
        .with_context(|| format!("cannot write {}", dest.display()))?;
    Ok(())
}

fn print_summary(
    run_id: &str,
    records: &BTreeMap<String, StepRecord>,
    published: &[PublishedArtifact],
    out: &Path,
    all_ok: bool,
) {
    println!(
        "run {run_id}: {}",
        if all_ok { "succeeded" } else { "FAILED" }
    );
    println!("steps:");
    for record in records.values() {
        let secs = (record.finished_on - record.started_on).as_seconds_f64();
        println!(
            "  {:<24} {:>8.2}s  {}",
            record.step,
            secs,
            describe_exit(&record.exit)
        );
    }
    if !published.is_empty() {
        println!("artifacts:");
    }
    for a in published {
        println!("  {}  sha256:{}  {} bytes", a.name, a.sha256, a.size);
        println!("    {}", out.join(&a.name).display());
        for file in [
            kiln_attest::provenance_file_name(&a.name),
            kiln_attest::bundle_file_name(&a.name),
        ]
        .into_iter()
        .chain(sbom_files(a).map(|(file, _)| file))
        {
            println!("    {}", out.join(file).display());
        }
    }
}
