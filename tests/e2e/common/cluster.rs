//! A controller and its workers as real processes on loopback, with the test's data dirs:
//! `kiln daemon`, `kiln worker`s with their own data dirs and host ids, and the team commands
//! (`kiln submit`, `kiln status`, …) run against them with team `blue`'s token.

use std::net::TcpListener;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use kiln_daemon::state::testing::TestDatabase;
use kiln_daemon::state::{Backend, Database, State};
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
    /// The PostgreSQL database of a cluster on PostgreSQL, dropped after the processes die.
    _database: Option<TestDatabase>,
    /// Last, so it drops after every process is dead: its drop detaches leftover mounts.
    pub env: Env,
}

/// Runs each named `fn NAME(backend: Backend)` as two tests, `NAME::sqlite` and
/// `NAME::postgres` (which passes without running outside CI when no test server is set up;
/// see `kiln_daemon::state::testing`).
#[macro_export]
macro_rules! cluster_tests {
    ($($name:ident;)*) => {$(
        mod $name {
            #[test]
            fn sqlite() {
                super::$name(kiln_daemon::state::Backend::Sqlite);
            }
            #[test]
            fn postgres() {
                if kiln_daemon::state::testing::postgres_enabled() {
                    super::$name(kiln_daemon::state::Backend::Postgres);
                }
            }
        }
    )*};
}

impl Cluster {
    /// Imports busybox into the daemon's data dir, then starts the daemon (leases living
    /// `lease_ttl` seconds without a heartbeat) and waits until it listens.
    pub fn start(lease_ttl: u32) -> Self {
        Self::start_on(lease_ttl, Backend::Sqlite)
    }

    /// [`Cluster::start`] with the controller's state on `backend` (a fresh PostgreSQL
    /// database of the test server for [`Backend::Postgres`]).
    pub fn start_on(lease_ttl: u32, backend: Backend) -> Self {
        let mut env = Env::new();
        let database = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(runtime().block_on(TestDatabase::new(
                backend,
                &env.data_dir().join("state.sqlite"),
            ))),
        };
        if let Some(db) = &database {
            let Database::Postgres(url) = db.database() else {
                unreachable!("a PostgreSQL test database")
            };
            env.database_url = Some(url.clone());
        }
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
            _database: database,
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
            .env_remove("KILN_DATABASE_URL")
            .envs(
                self.env
                    .database_url
                    .iter()
                    .map(|u| ("KILN_DATABASE_URL", u)),
            )
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

    /// Waits up to `timeout` for `run` to end (any state but running); returns its view then.
    pub fn wait_for_end(&self, run: &str, timeout: Duration) -> Value {
        self.wait_for(run, timeout, "the run to end", |v| v["state"] != "running");
        self.status(run)
    }

    /// [`Self::wait_for_end`], and the run must have succeeded.
    pub fn wait_for_success(&self, run: &str, timeout: Duration) -> Value {
        let view = self.wait_for_end(run, timeout);
        assert_eq!(view["state"], "succeeded", "{view:#}\n{}", self.logs());
        view
    }

    /// The step records the daemon accepted for `run`, read from its database.
    pub fn records(&self, run: &str) -> Vec<kiln_core::StepRecord> {
        let database = match &self.env.database_url {
            Some(url) => Database::Postgres(url.clone()),
            None => Database::Sqlite(self.env.data_dir().join("state.sqlite")),
        };
        runtime().block_on(async {
            let state = State::connect(&database).await.unwrap();
            let records = state.step_records(run).await.unwrap();
            state.close().await;
            records
        })
    }
}

fn spawn_daemon(env: &Env, name: &str, args: &[String]) -> Proc {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let database: Vec<(&str, &str)> = env
        .database_url
        .iter()
        .map(|url| ("KILN_DATABASE_URL", url.as_str()))
        .collect();
    Proc::spawn_with_env(name, env.dir.path(), &args, &database)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
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
