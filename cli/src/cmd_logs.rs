//! `kiln logs RUN [STEP] [--follow]`: a run's step logs from the controller, while the steps run
//! (what their workers sent so far) and after (their content-addressed logs).
//!
//! With STEP, the log's bytes as they are. Without, every step's log, each line prefixed with
//! `[step] `, in pipeline order — or, following, in the order lines arrive.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use kiln_client::Client;
use kiln_core::api::v1::RunState;

use crate::cmd_submit::{TeamArgs, WAIT_POLL, WAIT_RETRY_MAX};

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// The run id.
    run: String,
    /// One step's log; without it, every step's.
    step: Option<String>,
    #[command(flatten)]
    team: TeamArgs,
    /// Keep printing as the steps write, until the run ends.
    #[arg(long, short = 'f')]
    follow: bool,
    /// One JSON object a line: `{"step": NAME, "line": TEXT}`.
    #[arg(long)]
    json: bool,
}

/// One step's log being read: how far, and the unfinished last line (prefixed modes only).
struct Cursor {
    step: String,
    offset: u64,
    partial: Vec<u8>,
    complete: bool,
}

pub fn run(args: LogsArgs) -> anyhow::Result<ExitCode> {
    let client = args.team.client()?;
    crate::runtime()?.block_on(async {
        let view = client
            .get_run(&args.run)
            .await
            .with_context(|| format!("cannot read run {}", args.run))?;
        let names: Vec<String> = match &args.step {
            Some(step) => {
                anyhow::ensure!(
                    view.steps.iter().any(|s| &s.name == step),
                    "run {} has no step {step:?}",
                    args.run
                );
                vec![step.clone()]
            }
            None => view.steps.iter().map(|s| s.name.clone()).collect(),
        };
        let mut cursors: Vec<Cursor> = names
            .into_iter()
            .map(|step| Cursor {
                step,
                offset: 0,
                partial: Vec::new(),
                complete: false,
            })
            .collect();
        let printer = Printer {
            raw: args.step.is_some() && !args.json,
            json: args.json,
        };
        follow(&client, &args.run, &mut cursors, &printer, args.follow).await
    })
}

/// Reads every cursor once; with `follow`, again every [`WAIT_POLL`] until the run is final
/// and every log complete.
async fn follow(
    client: &Client,
    run: &str,
    cursors: &mut [Cursor],
    printer: &Printer,
    follow: bool,
) -> anyhow::Result<ExitCode> {
    let mut retry = WAIT_POLL;
    loop {
        // The run's state before the logs: a run seen final here has no step left to write.
        let final_run = match client.get_run(run).await {
            Ok(view) => view.state != RunState::Running,
            Err(err) if follow && err.is_transient() => {
                eprintln!("kiln: {}; retrying", crate::one_line(&err.into()));
                retry = (retry * 2).min(WAIT_RETRY_MAX);
                tokio::time::sleep(retry).await;
                continue;
            }
            Err(err) => return Err(err).with_context(|| format!("cannot read run {run}")),
        };
        let mut failed = BTreeSet::new();
        for cursor in cursors.iter_mut().filter(|c| !c.complete) {
            match client.read_log(run, &cursor.step, cursor.offset).await {
                Ok(chunk) => {
                    cursor.offset += chunk.bytes.len() as u64;
                    cursor.complete = chunk.complete;
                    printer.print(cursor, &chunk.bytes, chunk.complete || !follow)?;
                }
                Err(err) if follow && err.is_transient() => {
                    failed.insert(cursor.step.clone());
                }
                Err(err) => {
                    return Err(err)
                        .with_context(|| format!("cannot read the log of {}", cursor.step));
                }
            }
        }
        let all_complete = cursors.iter().all(|c| c.complete);
        if !follow || all_complete || (final_run && failed.is_empty()) {
            return Ok(ExitCode::SUCCESS);
        }
        retry = WAIT_POLL;
        tokio::time::sleep(retry).await;
    }
}

struct Printer {
    /// One step's bytes, unchanged.
    raw: bool,
    json: bool,
}

impl Printer {
    /// Prints `bytes` of `cursor`'s log; `flush` also prints an unfinished last line.
    fn print(&self, cursor: &mut Cursor, bytes: &[u8], flush: bool) -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        if self.raw {
            out.write_all(bytes)?;
            out.flush()?;
            return Ok(());
        }
        cursor.partial.extend_from_slice(bytes);
        let mut lines: Vec<Vec<u8>> = Vec::new();
        while let Some(end) = cursor.partial.iter().position(|&b| b == b'\n') {
            let rest = cursor.partial.split_off(end + 1);
            let mut line = std::mem::replace(&mut cursor.partial, rest);
            line.pop();
            lines.push(line);
        }
        if flush && !cursor.partial.is_empty() {
            lines.push(std::mem::take(&mut cursor.partial));
        }
        for line in lines {
            let text = String::from_utf8_lossy(&line);
            if self.json {
                let object = serde_json::json!({ "step": cursor.step, "line": text });
                writeln!(out, "{object}")?;
            } else {
                writeln!(out, "[{}] {text}", cursor.step)?;
            }
        }
        out.flush()?;
        Ok(())
    }
}
