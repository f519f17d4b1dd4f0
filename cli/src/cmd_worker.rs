//! `kiln worker`: a self-hosted worker that takes its steps from a controller
//! (`kiln_worker::remote`). SIGTERM or SIGINT drains it: running steps finish and are reported,
//! no new ones are taken, and it exits 0. `kiln worker drain` does that for an operator: it
//! finds the worker of a data dir through `DATA/worker.lock` (held locked while the worker
//! runs, with its pid inside), signals it and waits for it to exit.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use kiln_client::Client;
use kiln_mirror::BlobStore;
use kiln_worker::remote::{PollPolicy, RemoteConfig, RemoteWorker};
use kiln_worker::{IdRange, Worker, WorkerConfig};
use tokio::signal::unix::{SignalKind, signal};

use crate::cmd_submit::ControllerArg;

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct WorkerArgs {
    #[command(subcommand)]
    action: Option<WorkerAction>,
    #[command(flatten)]
    controller: ControllerArg,
    /// How many steps run at once.
    #[arg(long, default_value_t = 1, value_name = "N")]
    slots: u32,
    /// The name the controller shows for this worker [default: the host name].
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// A label steps may require (`requires:` in a pipeline), e.g. `gpu=a100`; repeatable.
    /// Every worker also offers `arch` and `os` (`arch=x86_64`, `os=linux`) unless given here.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Unprivileged host ids for this worker's steps, as FIRST:COUNT. Workers sharing a machine
    /// need disjoint ranges.
    #[arg(long, value_name = "FIRST:COUNT", default_value = "1000000:64", value_parser = parse_ids)]
    host_ids: IdRange,
    /// With an `https://` controller: a one-time token from `kiln admin join-token create`
    /// (`kiln1-<fingerprint>-<secret>`), exchanged for a client certificate kept in the data dir.
    /// Not needed once joined.
    #[arg(
        long,
        env = "KILN_JOIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    join_token: Option<String>,
    /// The controller CA's sha256 fingerprint to pin; must match the one in the join token.
    #[arg(long, value_name = "HEX")]
    ca_fingerprint: Option<String>,
}

#[derive(Subcommand, Debug)]
enum WorkerAction {
    /// Drain the worker running on this data dir: its running steps finish and are reported,
    /// it takes no new ones, then it exits. Waits for that unless --no-wait.
    Drain {
        /// Return once the worker was told, without waiting for it to exit.
        #[arg(long)]
        no_wait: bool,
        /// Give up waiting after this many seconds (the worker keeps draining).
        #[arg(long, default_value_t = 3600, value_name = "SECONDS")]
        timeout: u64,
    },
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE, found {text:?}"))?;
    match kiln_core::labels::label_problem(key, value) {
        Some(problem) => Err(problem),
        None => Ok((key.to_string(), value.to_string())),
    }
}

/// `--label`s over the labels every worker offers: `arch` (e.g. `x86_64`) and `os` (`linux`),
/// so that a step can ask for the machine it needs without operators labelling the obvious.
fn worker_labels(given: Vec<(String, String)>) -> BTreeMap<String, String> {
    let mut labels = kiln_core::labels::host_labels();
    labels.extend(given);
    labels
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
    if let Some(WorkerAction::Drain { no_wait, timeout }) = args.action {
        return lock::drain(data_dir, !no_wait, std::time::Duration::from_secs(timeout));
    }
    if args.slots == 0 || args.slots > args.host_ids.count {
        anyhow::bail!(
            "--slots must be between 1 and the number of host ids ({})",
            args.host_ids.count
        );
    }
    // The sandbox wants absolute paths (rootfs, inputs, out); a relative --data-dir is fine.
    let data_dir = &std::path::absolute(data_dir)
        .with_context(|| format!("cannot resolve {}", data_dir.display()))?;
    let controller = args.controller.url()?;
    let tls = controller.starts_with("https://");
    anyhow::ensure!(
        tls || (args.join_token.is_none() && args.ca_fingerprint.is_none()),
        "--join-token and --ca-fingerprint need an https:// controller"
    );
    let _lock = lock::WorkerLock::acquire(data_dir)?;
    let identity_dir = data_dir.join("identity");
    let (client, identity) = if tls {
        let rt = crate::runtime()?;
        let identity = rt.block_on(identity::obtain(
            &controller,
            &identity_dir,
            args.join_token.as_deref(),
            args.ca_fingerprint.as_deref(),
        ))?;
        let client = Client::with_security(&controller, identity.security())?;
        (client, Some(identity))
    } else {
        (Client::new(&controller)?, None)
    };
    let store_root = data_dir.join("store");
    let config = WorkerConfig::with_defaults(data_dir, crate::sandbox_helper()?, args.host_ids);
    let worker = Worker::new(config, BlobStore::open(&store_root)?);
    let name = args.name.unwrap_or_else(host_name);
    let client_for_renewal = client.clone();
    let remote = RemoteWorker::new(
        client,
        worker,
        BlobStore::open(&store_root)?,
        RemoteConfig {
            name: name.clone(),
            slots: args.slots,
            labels: worker_labels(args.labels),
            transfer_dir: data_dir.join("transfer"),
            poll: PollPolicy::default(),
        },
    );
    worker_runtime()?.block_on(async {
        if let Some(identity) = identity {
            tokio::spawn(identity::renew_forever(
                client_for_renewal,
                identity,
                identity_dir,
            ));
        }
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
            controller,
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

/// `DATA/worker.lock`: one worker per data dir, and how `kiln worker drain` finds it.
mod lock {
    use std::fs;
    use std::io::{Read as _, Seek as _, Write as _};
    use std::path::Path;
    use std::process::ExitCode;
    use std::time::{Duration, Instant};

    use anyhow::Context as _;
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;

    /// Held (an exclusive `flock`) for as long as the worker runs; the kernel drops it when
    /// the process dies, whatever the way.
    pub struct WorkerLock {
        _file: fs::File,
    }

    impl WorkerLock {
        pub fn acquire(data_dir: &Path) -> anyhow::Result<Self> {
            fs::create_dir_all(data_dir)
                .with_context(|| format!("cannot create {}", data_dir.display()))?;
            let path = data_dir.join("worker.lock");
            let mut file = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            if file.try_lock().is_err() {
                anyhow::bail!(
                    "another kiln worker runs on {} (pid {}); one worker per data dir",
                    data_dir.display(),
                    read_pid(&mut file).map_or("unknown".into(), |p| p.to_string())
                );
            }
            file.set_len(0)
                .and_then(|()| file.rewind())
                .and_then(|()| writeln!(file, "{}", std::process::id()))
                .and_then(|()| file.sync_all())
                .with_context(|| format!("cannot write {}", path.display()))?;
            Ok(Self { _file: file })
        }
    }

    fn read_pid(file: &mut fs::File) -> Option<i32> {
        let mut text = String::new();
        file.rewind().ok()?;
        file.read_to_string(&mut text).ok()?;
        text.trim().parse().ok()
    }

    /// Signals the data dir's worker to drain (SIGTERM) and, with `wait`, waits until it exits.
    pub fn drain(data_dir: &Path, wait: bool, timeout: Duration) -> anyhow::Result<ExitCode> {
        let path = data_dir.join("worker.lock");
        let mut file = fs::File::open(&path)
            .with_context(|| format!("no kiln worker runs on {}", data_dir.display()))?;
        if file.try_lock().is_ok() {
            anyhow::bail!("no kiln worker runs on {}", data_dir.display());
        }
        let pid =
            read_pid(&mut file).with_context(|| format!("{} holds no pid", path.display()))?;
        kill(Pid::from_raw(pid), Signal::SIGTERM)
            .with_context(|| format!("cannot signal the worker (pid {pid})"))?;
        eprintln!("kiln worker drain: told worker pid {pid} to drain");
        if !wait {
            return Ok(ExitCode::SUCCESS);
        }
        let deadline = Instant::now() + timeout;
        while file.try_lock().is_err() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the worker (pid {pid}) is still draining after {}s",
                timeout.as_secs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        eprintln!("kiln worker drain: worker pid {pid} drained and exited");
        Ok(ExitCode::SUCCESS)
    }
}

/// The worker's TLS identity in `DATA/identity/`: `key.pem` (0600, made here and never sent),
/// `cert.pem`, `ca.pem` and `identity.json` (validity, for renewal).
mod identity {
    use std::fs;
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    use std::path::Path;
    use std::time::Duration;

    use anyhow::Context as _;
    use kiln_client::enroll::{self, JoinToken};
    use kiln_client::{Client, ClientIdentity, TransportSecurity};
    use kiln_core::api::v1::{Enrolled, JoinRequest, RenewRequest};
    use serde::{Deserialize, Serialize};

    /// A client certificate and what goes with it.
    #[derive(Clone, Serialize, Deserialize)]
    pub struct Identity {
        pub identity: String,
        pub not_before: i64,
        pub not_after: i64,
        /// When this worker received the certificate (its own clock; `not_before` is
        /// backdated by the controller for clock skew).
        #[serde(default)]
        pub received_at: i64,
        #[serde(skip)]
        pub cert_pem: String,
        #[serde(skip)]
        pub key_pem: String,
        #[serde(skip)]
        pub ca_pem: String,
    }

    impl Identity {
        pub fn security(&self) -> TransportSecurity {
            TransportSecurity::Tls {
                ca_pem: self.ca_pem.clone(),
                identity: Some(ClientIdentity {
                    cert_pem: self.cert_pem.clone(),
                    key_pem: self.key_pem.clone(),
                }),
            }
        }

        fn from_enrolled(enrolled: Enrolled, key_pem: String) -> Self {
            Self {
                identity: enrolled.identity,
                not_before: enrolled.not_before,
                not_after: enrolled.not_after,
                received_at: now(),
                cert_pem: enrolled.cert_pem,
                key_pem,
                ca_pem: enrolled.ca_pem,
            }
        }

        /// When to renew: at 2/3 of the lifetime left when it arrived (unix seconds).
        fn renew_at(&self) -> i64 {
            let from = self.received_at.max(self.not_before);
            from + (self.not_after - from) * 2 / 3
        }
    }

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)
    }

    fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
        let tmp = path.with_extension("tmp");
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
    }

    fn save(dir: &Path, id: &Identity) -> anyhow::Result<()> {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        write_private(&dir.join("key.pem"), id.key_pem.as_bytes())?;
        write_private(&dir.join("cert.pem"), id.cert_pem.as_bytes())?;
        write_private(&dir.join("ca.pem"), id.ca_pem.as_bytes())?;
        write_private(
            &dir.join("identity.json"),
            &serde_json::to_vec_pretty(id).expect("an identity serialises"),
        )
    }

    fn load(dir: &Path) -> anyhow::Result<Option<Identity>> {
        let meta = dir.join("identity.json");
        if !meta.exists() {
            return Ok(None);
        }
        let read = |name: &str| {
            fs::read_to_string(dir.join(name))
                .with_context(|| format!("cannot read {}", dir.join(name).display()))
        };
        let mut id: Identity = serde_json::from_str(&read("identity.json")?)
            .with_context(|| format!("{} is not an identity", meta.display()))?;
        id.cert_pem = read("cert.pem")?;
        id.key_pem = read("key.pem")?;
        id.ca_pem = read("ca.pem")?;
        Ok(Some(id))
    }

    /// The stored identity if it is still valid, else a new one from a join.
    pub async fn obtain(
        url: &str,
        dir: &Path,
        token: Option<&str>,
        fingerprint: Option<&str>,
    ) -> anyhow::Result<Identity> {
        let pinned = fingerprint.map(enroll::parse_fingerprint).transpose()?;
        if let Some(id) = load(dir)? {
            let ca = enroll::pem_fingerprint(&id.ca_pem);
            let pin_ok = pinned.is_none() || ca == pinned;
            if id.not_after > now() + 60 && pin_ok {
                tracing::info!(identity = %id.identity, "using the stored client certificate");
                return Ok(id);
            }
            tracing::info!("the stored client certificate expired or names another CA; joining");
        }
        let token = token.context(
            "no valid client certificate in the data dir: pass --join-token (from \
             `kiln admin join-token create` on the controller)",
        )?;
        let token = JoinToken::parse(token)?;
        if let Some(pinned) = &pinned {
            anyhow::ensure!(
                *pinned == token.ca_fingerprint,
                "--ca-fingerprint does not match the fingerprint in the join token"
            );
        }
        let (key_pem, csr_pem) = enroll::new_key_and_csr()?;
        let client = Client::with_security(
            url,
            TransportSecurity::PinnedCa {
                fingerprint: token.ca_fingerprint.clone(),
            },
        )?;
        let enrolled = client
            .join(&JoinRequest {
                token: token.token.clone(),
                csr_pem,
            })
            .await
            .context("the controller refused to let this worker join")?;
        anyhow::ensure!(
            enroll::pem_fingerprint(&enrolled.ca_pem).as_deref()
                == Some(token.ca_fingerprint.as_str()),
            "the controller answered with a CA other than the pinned one"
        );
        let id = Identity::from_enrolled(enrolled, key_pem);
        save(dir, &id)?;
        tracing::info!(identity = %id.identity, "joined; client certificate stored");
        Ok(id)
    }

    /// Renews the certificate at 2/3 of its lifetime, forever; retries every 30 s on failure.
    pub async fn renew_forever(client: Client, mut id: Identity, dir: std::path::PathBuf) {
        loop {
            let wait = (id.renew_at() - now()).max(0) as u64;
            tokio::time::sleep(Duration::from_secs(wait)).await;
            match renew(&client, &id, &dir).await {
                Ok(new) => {
                    tracing::info!(identity = %new.identity, not_after = new.not_after, "client certificate renewed");
                    id = new;
                }
                Err(err) => {
                    tracing::warn!(error = %format!("{err:#}"), "cannot renew the client certificate; retrying in 30s");
                    tokio::time::sleep(Duration::from_secs(30)).await;
                }
            }
        }
    }

    async fn renew(client: &Client, id: &Identity, dir: &Path) -> anyhow::Result<Identity> {
        let (key_pem, csr_pem) = enroll::new_key_and_csr()?;
        let enrolled = client.renew(&RenewRequest { csr_pem }).await?;
        anyhow::ensure!(
            enrolled.identity == id.identity,
            "the controller renewed another identity"
        );
        anyhow::ensure!(
            enroll::pem_fingerprint(&enrolled.ca_pem) == enroll::pem_fingerprint(&id.ca_pem),
            "the controller renewed with another CA"
        );
        let new = Identity::from_enrolled(enrolled, key_pem);
        save(dir, &new)?;
        client.set_security(new.security())?;
        Ok(new)
    }
}

/// The worker's runtime: one thread. Its async side only moves bytes and waits: steps run in
/// the launcher's processes, store work and each step's blocking half in tokio's blocking pool.
/// With a second runtime thread the two mostly woke each other (docs/benchmarks.md, session 7).
fn worker_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}
