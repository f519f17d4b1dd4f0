//! `kiln worker`: a self-hosted worker that takes its steps from a controller
//! (`kiln_worker::remote`). SIGTERM or SIGINT drains it: running steps finish and are reported,
//! no new ones are taken, and it exits 0.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use kiln_client::Client;
use kiln_mirror::BlobStore;
use kiln_sandbox::HelperCommand;
use kiln_worker::remote::{PollPolicy, RemoteConfig, RemoteWorker};
use kiln_worker::{IdRange, Worker, WorkerConfig};
use tokio::signal::unix::{SignalKind, signal};

use crate::cmd_submit::ControllerArg;

/// Most bytes a step may leave in /out (as in `kiln run`).
const MAX_OUTPUT_BYTES: u64 = 4 << 30;
/// Size cap of a step's /work and /tmp (as in `kiln run`).
const SCRATCH_BYTES: u64 = 1 << 30;

#[derive(Args, Debug)]
pub struct WorkerArgs {
    #[command(flatten)]
    controller: ControllerArg,
    /// How many steps run at once.
    #[arg(long, default_value_t = 1, value_name = "N")]
    slots: u32,
    /// The name the controller shows for this worker [default: the host name].
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// A label steps may require, e.g. `arch=x86_64`; repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Unprivileged host ids for this worker's steps, as FIRST:COUNT. Workers sharing a machine
    /// need disjoint ranges.
    #[arg(long, value_name = "FIRST:COUNT", default_value = "1000000:64", value_parser = parse_ids)]
    host_ids: IdRange,
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, found {text:?}")),
    }
}

fn parse_ids(text: &str) -> Result<IdRange, String> {
    let parsed = text
        .split_once(':')
        .and_then(|(first, count)| Some((first.parse().ok()?, count.parse().ok()?)));
    match parsed {
        Some((first, count)) if count > 0 && first > 0 => Ok(IdRange { first, count }),
        _ => Err(format!(
            "expected FIRST:COUNT with both above 0, found {text:?}"
        )),
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".into())
}

pub fn run(data_dir: &Path, args: WorkerArgs) -> anyhow::Result<ExitCode> {
    if args.slots == 0 || args.slots > args.host_ids.count {
        anyhow::bail!(
            "--slots must be between 1 and the number of host ids ({})",
            args.host_ids.count
        );
    }
    let client = Client::new(&args.controller.controller)?;
    // The sandbox wants absolute paths (rootfs, inputs, out); a relative --data-dir is fine.
    let data_dir = &std::path::absolute(data_dir)
        .with_context(|| format!("cannot resolve {}", data_dir.display()))?;
    let store_root = data_dir.join("store");
    let exe =
        std::env::current_exe().context("cannot locate the kiln binary for the sandbox helper")?;
    let config = WorkerConfig {
        work_root: data_dir.join("work"),
        helper: HelperCommand {
            program: exe,
            args: vec!["sandbox-helper".into()],
        },
        host_ids: args.host_ids,
        scratch_bytes: SCRATCH_BYTES,
        default_limits: kiln_sandbox::Limits::default(),
        max_output_bytes: MAX_OUTPUT_BYTES,
    };
    let worker = Worker::new(config, BlobStore::open(&store_root)?);
    let name = args.name.unwrap_or_else(host_name);
    let remote = RemoteWorker::new(
        client,
        worker,
        BlobStore::open(&store_root)?,
        RemoteConfig {
            name: name.clone(),
            slots: args.slots,
            labels: args.labels.into_iter().collect::<BTreeMap<_, _>>(),
            transfer_dir: data_dir.join("transfer"),
            poll: PollPolicy::default(),
        },
    );
    crate::runtime()?.block_on(async {
        let (drain_tx, drain_rx) = tokio::sync::watch::channel(false);
        let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            eprintln!("kiln worker {name}: draining: finishing running steps, taking no new ones");
            let _ = drain_tx.send(true);
            // Keep the sender alive: a dropped sender would read as "drain" anyway, but
            // later signals should not kill the process while steps finish.
            loop {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
        });
        eprintln!(
            "kiln worker: controller {}, {} slot(s), data dir {}",
            args.controller.controller,
            args.slots,
            data_dir.display()
        );
        let tally = remote
            .run(drain_rx)
            .await
            .context("the worker cannot start")?;
        eprintln!(
            "kiln worker: drained: {} step(s) reported, {} dropped (lease lost), {} abandoned",
            tally.reported, tally.dropped, tally.abandoned
        );
        Ok(ExitCode::SUCCESS)
    })
}
