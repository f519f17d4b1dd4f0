//! A controller and its workers as real processes on loopback, with the test's data dirs:
//! `kiln daemon`, `kiln worker`s with their own data dirs and host ids, and the team commands
//! (`kiln submit`, `kiln status`, …) run against them with team `blue`'s token.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::process::Proc;
use super::{Env, kiln_bin, text};

/// A daemon, its workers and the environment they share.
pub struct Cluster {
    pub daemon: Proc,
    pub url: String,
    pub workers: Vec<Proc>,
    /// Team `blue`'s API token, which the team commands send.
    pub token: String,
    daemon_args: Vec<String>,
    restarts: u32,
    /// Last, so it drops after every process is dead: its drop detaches leftover mounts.
    pub env: Env,
}

impl Cluster {
    /// Imports busybox into the daemon's data dir, then starts the daemon (leases living
    /// `lease_ttl` seconds without a heartbeat) and waits until it listens.
    pub fn start(lease_ttl: u32) -> Self {
        let env = Env::new();
        env.import_busybox();
        let token = env.team_token("blue", "1h");
        // A fixed port, so that a restarted daemon is found again by its workers.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let daemon_args = vec![
            "--data-dir".to_string(),
            env.data_dir().to_str().unwrap().to_string(),
            "daemon".into(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--lease-ttl".into(),
            lease_ttl.to_string(),
        ];
        let daemon = spawn_daemon(&env, "daemon", &daemon_args);
        let url = daemon.listening_url();
        Self {
            env,
            daemon,
            url,
            workers: Vec::new(),
            token,
            daemon_args,
            restarts: 0,
        }
    }

    /// `kill -9` of the daemon, then a new daemon on the same data dir and port.
    pub fn kill9_and_restart_daemon(&mut self) {
        self.daemon.kill9();
        self.restarts += 1;
        let name = format!("daemon-{}", self.restarts + 1);
        self.daemon = spawn_daemon(&self.env, &name, &self.daemon_args);
        let url = self.daemon.listening_url();
        assert_eq!(url, self.url, "the restarted daemon listens where it did");
    }

    /// Starts `kiln worker NAME` with its own data dir and host ids; returns its index.
    pub fn worker(&mut self, name: &str, slots: u32) -> usize {
        self.worker_with(name, slots, &[])
    }

    /// [`Cluster::worker`] with extra `kiln worker` arguments (`--label k=v`, `--host-ids`
    /// replacing the disjoint range each worker gets by default, …).
    pub fn worker_with(&mut self, name: &str, slots: u32, extra: &[&str]) -> usize {
        let index = self.workers.len();
        let data = self.worker_data(name);
        let ids = format!("{}:16", 1_100_000 + 100 * index as u32);
        let slots = slots.to_string();
        let mut args = vec![
            "--data-dir",
            data.to_str().unwrap(),
            "worker",
            "--controller",
            &self.url,
            "--name",
            name,
            "--slots",
            &slots,
        ];
        if !extra.contains(&"--host-ids") {
            args.extend(["--host-ids", &ids]);
        }
        args.extend(extra);
        let worker = Proc::spawn(name, self.env.dir.path(), &args);
        self.workers.push(worker);
        index
    }

    /// The data dir of the worker started as `name`.
    pub fn worker_data(&self, name: &str) -> std::path::PathBuf {
        self.env.path(&format!("worker-{name}"))
    }

    /// `kiln ARGS` against this controller, from the test's directory.
    pub fn kiln(&self, args: &[&str]) -> Output {
        Command::new(kiln_bin())
            .args(args)
            .env("KILN_CONTROLLER", &self.url)
            .env("KILN_TOKEN", &self.token)
            .env("KILN_DATA_DIR", self.env.data_dir())
            .env_remove("KILN_LOG")
            .env_remove("KILN_CONFIG")
            .current_dir(self.env.dir.path())
            .output()
            .expect("spawn kiln")
    }

    pub fn kiln_ok(&self, args: &[&str]) -> Output {
        let out = self.kiln(args);
        assert!(
            out.status.success(),
            "kiln {args:?} failed:\n{}\n{}",
            text(&out),
            self.logs()
        );
        out
    }

    /// Everything every process printed, for failure messages.
    pub fn logs(&self) -> String {
        let mut all = self.daemon.output();
        for w in &self.workers {
            all.push_str(&w.output());
        }
        all
    }

    /// Writes `yaml` as `FILE` in the test's directory and submits it; the run id.
    pub fn submit(&self, file: &str, yaml: &str) -> String {
        let pipeline = self.env.write(file, yaml);
        let out = self.kiln_ok(&["submit", pipeline.to_str().unwrap()]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn status(&self, run: &str) -> Value {
        let out = self.kiln_ok(&["status", run, "--json"]);
        serde_json::from_slice(&out.stdout).expect("status --json prints JSON")
    }

    /// Polls the run until `done` holds for it.
    pub fn wait_for(
        &self,
        run: &str,
        timeout: Duration,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        loop {
            // A restarting daemon refuses connections for a moment: poll through it.
            let out = self.kiln(&["status", run, "--json"]);
            if out.status.success() {
                let view: Value = serde_json::from_slice(&out.stdout).expect("JSON");
                if done(&view) {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "timed out waiting for {what}; last status {view:#}\n{}",
                    self.logs()
                );
            } else {
                assert!(
                    Instant::now() < deadline,
                    "timed out waiting for {what}; status failed: {}\n{}",
                    text(&out),
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The step records the daemon accepted for `run`, read from its database.
    pub fn records(&self, run: &str) -> Vec<kiln_core::StepRecord> {
        records_of(&self.env.data_dir(), run)
    }
}

fn spawn_daemon(env: &Env, name: &str, args: &[String]) -> Proc {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Proc::spawn(name, env.dir.path(), &args)
}

/// The step named `name` in a `kiln status --json` view.
pub fn step<'a>(view: &'a Value, name: &str) -> &'a Value {
    view["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step {name} in {view:#}"))
}

/// The step records the daemon accepted for `run`, read from its database.
pub fn records_of(data_dir: &Path, run: &str) -> Vec<kiln_core::StepRecord> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let state = kiln_daemon::state::State::open(&data_dir.join("state.sqlite"))
            .await
            .unwrap();
        let records = state.step_records(run).await.unwrap();
        state.close().await;
        records
    })
}
