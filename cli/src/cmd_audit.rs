//! `kiln audit`: evidence for security reviewers, read from the controller's data dir on the
//! controller's machine (like `kiln admin`): the step-separation report, and the step log's
//! checkpoints, proofs and whole-log audit (docs/step-log.md).

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use kiln_attest::tlog::{self, NoteVerifier};
use kiln_daemon::Controller;
use kiln_daemon::audit::{render_text, separation_report};
use kiln_daemon::state::Database;
use kiln_daemon::steplog;

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
    /// The step log's latest signed checkpoint (a C2SP signed note), or with --verifier-key
    /// the log's verifier key string, which checks it (docs/step-log.md).
    Checkpoint {
        /// Print the verifier key string (`<name>+<key ID>+<key>`) instead.
        #[arg(long)]
        verifier_key: bool,
        /// Sign a checkpoint of the log as it is now first, if it grew.
        #[arg(long)]
        sign: bool,
    },
    /// An inclusion proof of step log entry INDEX (C2SP tlog-proof text, checkable offline
    /// with the entry bytes and the verifier key).
    Prove {
        /// The entry's 0-based index.
        index: u64,
        /// The checkpoint to prove against, by tree size (default: the latest).
        #[arg(long)]
        size: Option<u64>,
        /// Also write the entry's exact bytes to this file.
        #[arg(long, value_name = "PATH")]
        entry_out: Option<std::path::PathBuf>,
    },
    /// A consistency proof that the log of NEW entries extends the log of OLD entries,
    /// checked against the two stored signed checkpoints. Prints the proof (base64 hashes, one
    /// a line); exits 1 when it does not verify.
    Consistency {
        old: u64,
        new: u64,
        /// The verifier key to check the checkpoints with (default: the data dir's).
        #[arg(long, value_name = "VKEY")]
        verifier_key: Option<String>,
    },
    /// Audits the whole step log: every entry rehashed against every stored signed
    /// checkpoint, and every logged step record against the record stored now. Prints one
    /// line per problem; exits 0 when the log is intact, 1 otherwise.
    Verify {
        /// The verifier key to trust (default: the data dir's `keys/steplog.vkey`). Pass the
        /// key you obtained independently to catch a replaced key file too.
        #[arg(long, value_name = "VKEY")]
        verifier_key: Option<String>,
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
            AuditCommand::Checkpoint { verifier_key, sign } => {
                checkpoint(&controller, verifier_key, sign).await
            }
            AuditCommand::Prove {
                index,
                size,
                entry_out,
            } => prove(&controller, index, size, entry_out.as_deref()).await,
            AuditCommand::Consistency {
                old,
                new,
                verifier_key,
            } => consistency(&controller, old, new, verifier_key.as_deref()).await,
            AuditCommand::Verify { verifier_key } => {
                verify(&controller, verifier_key.as_deref()).await
            }
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

fn verifier(controller: &Controller, given: Option<&str>) -> anyhow::Result<NoteVerifier> {
    match given {
        Some(text) => text
            .trim()
            .parse()
            .map_err(|e| anyhow::anyhow!("--verifier-key: {e}")),
        None => controller
            .log_verifier()
            .context("cannot read the step log's verifier key (no checkpoint was signed yet?)"),
    }
}

async fn checkpoint(
    controller: &Controller,
    verifier_key: bool,
    sign: bool,
) -> anyhow::Result<ExitCode> {
    if sign {
        let signer = controller.log_signer()?;
        steplog::sign_checkpoint(controller.state(), &signer, time::OffsetDateTime::now_utc())
            .await?;
    }
    if verifier_key {
        println!("{}", verifier(controller, None)?);
        return Ok(ExitCode::SUCCESS);
    }
    let latest = controller
        .state()
        .latest_checkpoint()
        .await?
        .context("no step log checkpoint was signed yet (`kiln audit checkpoint --sign`)")?;
    print!("{}", latest.note);
    Ok(ExitCode::SUCCESS)
}

async fn prove(
    controller: &Controller,
    index: u64,
    size: Option<u64>,
    entry_out: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let (proof, entry) = steplog::prove(controller.state(), index, size).await?;
    // Check what we hand out: a proof that does not verify means the database changed.
    let log = steplog::log_verifier(&verifier(controller, None)?);
    proof
        .verify(entry.entry.as_bytes(), &log)
        .with_context(|| {
            format!("the stored log does not prove entry {index}; run `kiln audit verify`")
        })?;
    if let Some(path) = entry_out {
        std::fs::write(path, entry.entry.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    print!("{}", proof.to_text());
    Ok(ExitCode::SUCCESS)
}

async fn consistency(
    controller: &Controller,
    old: u64,
    new: u64,
    verifier_key: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let (proof, old_note, new_note) = steplog::consistency(controller.state(), old, new).await?;
    for hash in &proof {
        println!("{}", hash.to_base64());
    }
    let log = steplog::log_verifier(&verifier(controller, verifier_key)?);
    let checked = (|| -> anyhow::Result<()> {
        let old_cp = log
            .open(old_note.as_bytes())
            .context("the checkpoint of the old size is rejected")?;
        let new_cp = log
            .open(new_note.as_bytes())
            .context("the checkpoint of the new size is rejected")?;
        tlog::verify_consistency(old_cp.size, new_cp.size, &old_cp.root, &new_cp.root, &proof)
            .context("the log of the new size does not extend the old one")?;
        Ok(())
    })();
    match checked {
        Ok(()) => {
            eprintln!("consistent: the log of {new} entries extends the log of {old} entries");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("NOT consistent: {e:#}");
            Ok(ExitCode::from(1))
        }
    }
}

async fn verify(controller: &Controller, verifier_key: Option<&str>) -> anyhow::Result<ExitCode> {
    let vkey = verifier(controller, verifier_key)?;
    let report = steplog::verify(controller.state(), &vkey).await?;
    for finding in &report.findings {
        println!("FAIL: {finding}");
    }
    if report.is_ok() {
        println!(
            "ok: {} entries, {} signed checkpoints, latest of size {} verified under {}",
            report.log_size,
            report.checkpoints,
            report.latest_size.unwrap_or(0),
            vkey.name()
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "step log verification failed: {} problem(s); entries below {} match a signed checkpoint",
            report.findings.len(),
            report.verified_size
        );
        Ok(ExitCode::from(1))
    }
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
