//! Two real `kiln daemon` processes sharing one PostgreSQL database (and one data dir, for the
//! store and the key): workers claiming from both at once never get one step twice.
//!
//! Needs `KILN_TEST_DATABASE_URL` (`eval "$(bash scripts/postgres.sh)"`); without it the test
//! passes without running, except under `CI=true`, where it fails. No step runs: the test plays
//! the workers over HTTP, so it needs neither root nor a sandbox.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead as _, BufReader};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kiln_client::Client;
use kiln_core::api::v1;
use kiln_daemon::state::Backend;
use kiln_daemon::state::testing::{TestDatabase, postgres_enabled};

const STEPS: usize = 120;
const WORKERS_PER_DAEMON: usize = 4;

fn kiln_bin() -> &'static str {
    env!("CARGO_BIN_EXE_kiln")
}

/// `kiln ARGS` against `data` and `database`; its stdout, or a panic with its output.
fn kiln_ok(data: &Path, database: &str, args: &[&str]) -> String {
    let out = Command::new(kiln_bin())
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env("KILN_DATABASE_URL", database)
        .env_remove("KILN_CONTROLLER")
        .env_remove("KILN_TOKEN")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "kiln {args:?}: {text}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A `kiln daemon` whose process group is killed on drop.
struct Daemon {
    child: Child,
    url: String,
}

impl Daemon {
    fn start(data: &Path, database: &str, log: &Path) -> Self {
        let mut child = Command::new(kiln_bin())
            .arg("--data-dir")
            .arg(data)
            .args(["daemon", "--listen", "127.0.0.1:0"])
            .env("KILN_DATABASE_URL", database)
            .env("KILN_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(fs::File::create(log).unwrap())
            .process_group(0)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("listening on ") {
                    let _ = tx.send(url.to_owned());
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| {
                panic!(
                    "the daemon did not start: {}",
                    fs::read_to_string(log).unwrap_or_default()
                )
            });
        Self { child, url }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_daemons_on_one_database_never_lease_a_step_twice() {
    if !postgres_enabled() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let db = TestDatabase::new(Backend::Postgres, &dir.path().join("unused.sqlite")).await;
    let kiln_daemon::state::Database::Postgres(url) = db.database().clone() else {
        unreachable!("a PostgreSQL test database")
    };

    // The operator's side, against the shared database: a rootfs, a team token, the key.
    let rootfs = dir.path().join("rootfs");
    fs::create_dir_all(rootfs.join("bin")).unwrap();
    fs::write(rootfs.join("bin/sh"), b"never run").unwrap();
    let rootfs_arg = rootfs.to_str().unwrap();
    kiln_ok(
        &data,
        &url,
        &["mirror", "add", "--tree", rootfs_arg, "--name", "busybox@1"],
    );
    let token = kiln_ok(&data, &url, &["admin", "token", "create", "--team", "blue"])
        .lines()
        .find_map(|l| l.strip_prefix("token: ").map(str::to_owned))
        .expect("a token line");
    kiln_ok(&data, &url, &["keys", "public"]);

    let first = Daemon::start(&data, &url, &dir.path().join("first.log"));
    let second = Daemon::start(&data, &url, &dir.path().join("second.log"));
    assert_ne!(first.url, second.url);

    let mut yaml = String::from("version: 1\nname: wide\nrootfs: busybox@1\nsteps:\n");
    for i in 0..STEPS {
        yaml.push_str(&format!("  - {{ name: s{i:03}, run: 'true' }}\n"));
    }
    let team = Client::new(&first.url).unwrap().with_token(&token);
    let run = team
        .submit_run(&v1::SubmitRun {
            pipeline_file: "wide.yaml".into(),
            pipeline_yaml: yaml,
            request_id: None,
        })
        .await
        .unwrap()
        .run()
        .id
        .clone();

    // Workers on both daemons claim as fast as they can, all at once.
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(2 * WORKERS_PER_DAEMON));
    let mut workers = tokio::task::JoinSet::new();
    for (d, daemon) in [&first, &second].into_iter().enumerate() {
        for w in 0..WORKERS_PER_DAEMON {
            let client = Client::new(&daemon.url).unwrap();
            let registered = client
                .register_worker(&v1::RegisterWorker {
                    name: format!("d{d}w{w}"),
                    slots: 1,
                    labels: BTreeMap::new(),
                })
                .await
                .unwrap();
            let start = start.clone();
            workers.spawn(async move {
                start.wait().await;
                let request = v1::LeaseRequest {
                    worker_id: registered.worker_id.clone(),
                };
                let mut got = Vec::new();
                let deadline = Instant::now() + Duration::from_secs(120);
                while let Some(lease) = client.claim_lease(&request).await.unwrap() {
                    got.push((lease.spec.step, d));
                    assert!(Instant::now() < deadline, "claiming took too long");
                }
                got
            });
        }
    }
    let mut by_step: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for got in workers.join_all().await {
        for (step, daemon) in got {
            by_step.entry(step).or_default().push(daemon);
        }
    }
    let twice: Vec<_> = by_step.iter().filter(|(_, d)| d.len() > 1).collect();
    assert!(twice.is_empty(), "leased more than once: {twice:?}");
    assert_eq!(by_step.len(), STEPS, "every step leased");
    for d in 0..2 {
        assert!(
            by_step.values().any(|ds| ds[0] == d),
            "daemon {d} leased no step"
        );
    }

    // Either daemon shows the same: every step leased once.
    let view = Client::new(&second.url)
        .unwrap()
        .with_token(&token)
        .get_run(&run)
        .await
        .unwrap();
    assert_eq!(view.steps.len(), STEPS);
    for step in &view.steps {
        assert_eq!(step.state, v1::StepState::Leased, "{}", step.name);
        assert_eq!(step.attempts, 1, "{}", step.name);
    }
    drop(first);
    drop(second);
}
