//! Two real `kiln daemon` processes sharing one PostgreSQL database (and one data dir, for the
//! store and the key): workers claiming from both at once never get one step twice, and a
//! pipeline run by a real `kiln worker` on each daemon completes with every step run once.
//!
//! Needs `KILN_TEST_DATABASE_URL` (`eval "$(bash scripts/postgres.sh)"`); without it the tests
//! pass without running, except under `CI=true`, where they fail. The first test plays the
//! workers over HTTP; the second runs steps in the sandbox (root, like the other e2e tests).

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::symlink;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kiln_client::Client;
use kiln_core::api::v1;
use kiln_daemon::state::Backend;
use kiln_daemon::state::testing::{TestDatabase, postgres_enabled};

mod common;

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

/// Detaches every mount left under a directory when dropped: a worker killed with SIGKILL
/// leaves its staging tmpfs mounted. Declared before the processes, so it runs after them.
struct DetachMounts<'a>(&'a Path);

impl Drop for DetachMounts<'_> {
    fn drop(&mut self) {
        common::detach_mounts_under(self.0);
    }
}

/// A child process whose process group is killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `kiln daemon` listening on `url`.
struct Daemon {
    _proc: Proc,
    url: String,
}

impl Daemon {
    fn start(data: &Path, database: &str, log: &Path) -> Self {
        let mut child = Command::new(kiln_bin())
            .arg("--data-dir")
            .arg(data)
            .args(["daemon", "--listen", "127.0.0.1:0"])
            .env("KILN_DATABASE_URL", database)
            .env_remove("KILN_DATA_DIR")
            .env("KILN_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(fs::File::create(log).unwrap())
            .process_group(0)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let proc = Proc(child);
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
        Self { _proc: proc, url }
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
                    wait_ms: None,
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

/// A tiny rootfs: static busybox and the applets the pipeline uses.
fn busybox_rootfs(root: &Path) {
    for dir in ["bin", "etc"] {
        fs::create_dir_all(root.join(dir)).unwrap();
    }
    fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox-static is installed");
    for applet in ["sh", "cat", "echo", "sleep", "true"] {
        symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    fs::write(
        root.join("etc/passwd"),
        "root:x:0:0::/root:/bin/sh\nbuilder:x:1000:1000::/work:/bin/sh\n",
    )
    .unwrap();
}

/// A diamond with a fan-out: `a` feeds eight `b`s, which `c` joins into the artifact. Each `b`
/// takes a second, more than one worker's two slots can absorb, so both workers get some.
fn diamond() -> String {
    let mut yaml = String::from(
        "version: 1\nname: diamond\nrootfs: busybox@1\nsteps:\n  - name: a\n    run: echo a > /out/a\n    outputs: [a]\n",
    );
    for i in 0..8 {
        yaml.push_str(&format!(
            "  - name: b{i}\n    needs: [a]\n    run: sleep 1; cat /in/a/a > /out/b; echo {i} >> /out/b\n    outputs: [b]\n"
        ));
    }
    yaml.push_str("  - name: c\n    needs: [");
    yaml.push_str(
        &(0..8)
            .map(|i| format!("b{i}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    yaml.push_str("]\n    run: cat ");
    yaml.push_str(
        &(0..8)
            .map(|i| format!("/in/b{i}/b"))
            .collect::<Vec<_>>()
            .join(" "),
    );
    yaml.push_str(
        " > /out/all\n    outputs: [all]\nartifacts:\n  - { name: all, from: c, path: all }\n",
    );
    yaml
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_completes_across_two_daemons_on_one_database() {
    if !postgres_enabled() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let _detach = DetachMounts(dir.path());
    let data = dir.path().join("data");
    let db = TestDatabase::new(Backend::Postgres, &dir.path().join("unused.sqlite")).await;
    let kiln_daemon::state::Database::Postgres(url) = db.database().clone() else {
        unreachable!("a PostgreSQL test database")
    };
    let rootfs = dir.path().join("rootfs");
    busybox_rootfs(&rootfs);
    kiln_ok(
        &data,
        &url,
        &[
            "mirror",
            "import-rootfs",
            rootfs.to_str().unwrap(),
            "--name",
            "busybox@1",
        ],
    );
    let token = kiln_ok(&data, &url, &["admin", "token", "create", "--team", "blue"])
        .lines()
        .find_map(|l| l.strip_prefix("token: ").map(str::to_owned))
        .expect("a token line");
    kiln_ok(&data, &url, &["keys", "public"]);
    let daemons = [
        Daemon::start(&data, &url, &dir.path().join("first.log")),
        Daemon::start(&data, &url, &dir.path().join("second.log")),
    ];
    // One worker per daemon, each with its own data dir and host ids.
    let workers: Vec<Proc> = daemons
        .iter()
        .enumerate()
        .map(|(i, daemon)| {
            let log = dir.path().join(format!("worker{i}.log"));
            let ids = format!("{}:16", 1_460_000 + 100 * i);
            let child = Command::new(kiln_bin())
                .arg("--data-dir")
                .arg(dir.path().join(format!("worker{i}")))
                .args(["worker", "--controller", &daemon.url, "--name"])
                .arg(format!("w{i}"))
                .args(["--slots", "2", "--host-ids", &ids])
                .env_remove("KILN_DATA_DIR")
                .env_remove("KILN_DATABASE_URL")
                .env("KILN_LOG", "info")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(fs::File::create(&log).unwrap())
                .process_group(0)
                .spawn()
                .unwrap();
            Proc(child)
        })
        .collect();

    let team = Client::new(&daemons[0].url).unwrap().with_token(&token);
    let run = team
        .submit_run(&v1::SubmitRun {
            pipeline_file: "diamond.yaml".into(),
            pipeline_yaml: diamond(),
            request_id: None,
        })
        .await
        .unwrap()
        .run()
        .id
        .clone();
    let other = Client::new(&daemons[1].url).unwrap().with_token(&token);
    let deadline = Instant::now() + Duration::from_secs(180);
    let view = loop {
        let view = other.get_run(&run).await.unwrap();
        if view.state != v1::RunState::Running {
            break view;
        }
        assert!(
            Instant::now() < deadline,
            "the run did not finish: {view:?}\n{}",
            logs(dir.path())
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        view.state,
        v1::RunState::Succeeded,
        "{view:?}\n{}",
        logs(dir.path())
    );
    assert_eq!(view.steps.len(), 10);
    for step in &view.steps {
        assert_eq!(step.attempts, 1, "{step:?}");
    }
    let ran_on: std::collections::BTreeSet<_> =
        view.steps.iter().filter_map(|s| s.worker.clone()).collect();
    assert_eq!(ran_on.len(), 2, "both workers ran steps: {view:?}");
    // Either daemon serves the artifact, from the shared store.
    let artifact = view.artifacts.iter().find(|a| a.name == "all").unwrap();
    let out = dir.path().join("all");
    team.download_artifact(&run, "all", &artifact.sha256, &out)
        .await
        .unwrap();
    let expected: String = (0..8).map(|i| format!("a\n{i}\n")).collect();
    assert_eq!(fs::read_to_string(&out).unwrap(), expected);
    drop(workers);
    drop(daemons);
}

fn logs(dir: &Path) -> String {
    ["first.log", "second.log", "worker0.log", "worker1.log"]
        .iter()
        .map(|f| {
            format!(
                "--- {f}\n{}",
                fs::read_to_string(dir.join(f)).unwrap_or_default()
            )
        })
        .collect()
}
