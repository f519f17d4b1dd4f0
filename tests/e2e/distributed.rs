//! The distributed mode as real processes on loopback: `kiln daemon`, two `kiln worker`s with
//! their own data dirs, and the team commands (`kiln submit`, `kiln status`, `kiln artifacts`).
//! Every process is killed when its guard drops, also when a test fails.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Env, kiln_bin, text};
use serde_json::Value;

/// A child process whose whole process group is killed (SIGKILL) and reaped on drop.
struct Proc {
    name: String,
    child: Option<Child>,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Proc {
    fn spawn(name: &str, dir: &Path, args: &[&str]) -> Self {
        let stdout = dir.join(format!("{name}.stdout"));
        let stderr = dir.join(format!("{name}.stderr"));
        let child = Command::new(kiln_bin())
            .args(args)
            .env_remove("KILN_DATA_DIR")
            .env_remove("KILN_CONTROLLER")
            .env("KILN_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(fs::File::create(&stdout).unwrap())
            .stderr(fs::File::create(&stderr).unwrap())
            // Its own process group, so that the guard can kill what it started too.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        Self {
            name: name.into(),
            child: Some(child),
            stdout,
            stderr,
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// What it printed so far, for assertions and failure messages.
    fn output(&self) -> String {
        format!(
            "--- {} stdout ---\n{}--- {} stderr ---\n{}",
            self.name,
            fs::read_to_string(&self.stdout).unwrap_or_default(),
            self.name,
            fs::read_to_string(&self.stderr).unwrap_or_default()
        )
    }

    /// `kill -9` of the process itself (its sandbox helpers die with it: parent-death signal).
    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            kill_group(child.id());
        }
    }

    /// Sends a signal to the process (not its group).
    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{sig} {}", self.name);
    }

    /// The id the controller gave this worker, from its "registered" log line.
    fn worker_id(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let printed = self.output();
            if let Some(id) = printed
                .lines()
                .filter(|l| l.contains("registered"))
                .find_map(|l| l.split("worker=").nth(1))
                .and_then(|rest| rest.split_whitespace().next())
            {
                return id.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "{} never registered\n{printed}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the process to exit on its own; its exit status.
    fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {timeout:?}\n{}",
                self.name,
                self.output()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(child.id());
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status();
}

/// A controller and its workers, with the test's data dirs.
struct Cluster {
    daemon: Proc,
    url: String,
    workers: Vec<Proc>,
    /// Team `blue`'s API token, which the team commands send.
    token: String,
    /// Last, so it drops after every process is dead: its drop detaches leftover mounts.
    env: Env,
}

impl Cluster {
    /// Imports busybox into the daemon's data dir, then starts the daemon (leases living
    /// `lease_ttl` seconds without a heartbeat) and waits until it listens.
    fn start(lease_ttl: u32) -> Self {
        let env = Env::new();
        env.import_busybox();
        let token = env.team_token("blue", "1h");
        let data = env.data_dir();
        let daemon = Proc::spawn(
            "daemon",
            env.dir.path(),
            &[
                "--data-dir",
                data.to_str().unwrap(),
                "daemon",
                "--listen",
                "127.0.0.1:0",
                "--lease-ttl",
                &lease_ttl.to_string(),
            ],
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = loop {
            let printed = daemon.output();
            if let Some(url) = printed
                .lines()
                .find_map(|l| l.split("listening on ").nth(1))
                .map(|u| u.trim().to_string())
            {
                break url;
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not start listening\n{printed}"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        Self {
            env,
            daemon,
            url,
            workers: Vec::new(),
            token,
        }
    }

    /// Starts `kiln worker NAME` with its own data dir and host ids; returns its index.
    fn worker(&mut self, name: &str, slots: u32) -> usize {
        let index = self.workers.len();
        let data = self.env.path(&format!("worker-{name}"));
        let ids = format!("{}:16", 1_100_000 + 100 * index as u32);
        let slots = slots.to_string();
        let worker = Proc::spawn(
            name,
            self.env.dir.path(),
            &[
                "--data-dir",
                data.to_str().unwrap(),
                "worker",
                "--controller",
                &self.url,
                "--name",
                name,
                "--slots",
                &slots,
                "--host-ids",
                &ids,
            ],
        );
        self.workers.push(worker);
        index
    }

    /// `kiln ARGS` against this controller, from the test's directory.
    fn kiln(&self, args: &[&str]) -> Output {
        Command::new(kiln_bin())
            .args(args)
            .env("KILN_CONTROLLER", &self.url)
            .env("KILN_TOKEN", &self.token)
            .env("KILN_DATA_DIR", self.env.data_dir())
            .env_remove("KILN_LOG")
            .current_dir(self.env.dir.path())
            .output()
            .expect("spawn kiln")
    }

    /// Everything every process printed, for failure messages.
    fn logs(&self) -> String {
        let mut all = self.daemon.output();
        for w in &self.workers {
            all.push_str(&w.output());
        }
        all
    }

    fn kiln_ok(&self, args: &[&str]) -> Output {
        let out = self.kiln(args);
        assert!(
            out.status.success(),
            "kiln {args:?} failed:\n{}\n{}",
            text(&out),
            self.logs()
        );
        out
    }

    fn status(&self, run: &str) -> Value {
        let out = self.kiln_ok(&["status", run, "--json"]);
        serde_json::from_slice(&out.stdout).expect("status --json prints JSON")
    }

    /// Polls the run until `done` holds for it.
    fn wait_for(&self, run: &str, timeout: Duration, what: &str, done: impl Fn(&Value) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            let view = self.status(run);
            if done(&view) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; last status {view:#}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn step<'a>(view: &'a Value, name: &str) -> &'a Value {
    view["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step {name} in {view:#}"))
}

/// 16 independent steps, two that gather eight each, one that joins them and one that
/// publishes: 20 steps.
fn twenty_step_pipeline() -> String {
    let mut yaml = String::from("version: 1\nname: fan\nrootfs: busybox@1\nsteps:\n");
    for i in 0..16 {
        yaml.push_str(&format!(
            "  - name: gen-{i:02}\n    run: sleep 1; echo {i} > /out/n\n    outputs: [n]\n"
        ));
    }
    for (name, range) in [("sum-a", 0..8), ("sum-b", 8..16)] {
        let needs: Vec<String> = range.map(|i| format!("gen-{i:02}")).collect();
        yaml.push_str(&format!(
            "  - name: {name}\n    needs: [{}]\n    run: cat {} > /out/part\n    outputs: [part]\n",
            needs.join(", "),
            needs
                .iter()
                .map(|n| format!("/in/{n}/n"))
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }
    yaml.push_str(
        "  - name: join\n    needs: [sum-a, sum-b]\n    run: cat /in/sum-a/part /in/sum-b/part > /out/all\n    outputs: [all]\n\
         \x20 - name: total\n    needs: [join]\n    run: 'echo \"$(wc -l < /in/join/all) numbers\" > /out/total'\n    outputs: [total]\n\
         artifacts:\n  - { name: total, from: total, path: total }\n",
    );
    yaml
}

#[test]
fn a_twenty_step_dag_completes_on_two_workers_with_verifiable_provenance() {
    // The default ttl: no lease may expire under load here, every step runs once.
    let mut cluster = Cluster::start(30);
    cluster.worker("w1", 2);
    cluster.worker("w2", 2);
    let pipeline = cluster.env.write("fan.yaml", &twenty_step_pipeline());
    let out = cluster.kiln(&[
        "submit",
        pipeline.to_str().unwrap(),
        "--wait",
        "--json",
        "--request-id",
        "fan-1",
    ]);
    assert!(
        out.status.success(),
        "kiln submit --wait failed:\n{}\n{}",
        text(&out),
        cluster.logs()
    );
    let view: Value = serde_json::from_slice(&out.stdout).expect("--json prints the run");
    assert_eq!(view["state"], "succeeded", "{view:#}");
    let run = view["id"].as_str().unwrap().to_string();

    // Both workers ran steps, and every step ran exactly once.
    let status = cluster.status(&run);
    let steps = status["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 20);
    let workers: BTreeSet<&str> = steps
        .iter()
        .map(|s| s["worker"].as_str().expect("every step names its worker"))
        .collect();
    assert_eq!(workers.len(), 2, "one worker ran everything: {status:#}");
    for s in steps {
        assert_eq!(s["state"], "succeeded", "{s:#}");
        assert_eq!(s["attempts"], 1, "{s:#}");
    }

    // Resubmitting with the same request id returns the same run.
    let again = cluster.kiln_ok(&[
        "submit",
        pipeline.to_str().unwrap(),
        "--request-id",
        "fan-1",
    ]);
    assert_eq!(String::from_utf8_lossy(&again.stdout).trim(), run);

    // The artifact and its provenance come down and verify against the daemon's key.
    let out_dir = cluster.env.path("artifacts");
    cluster.kiln_ok(&["artifacts", &run, "--out", out_dir.to_str().unwrap()]);
    assert_eq!(
        fs::read_to_string(out_dir.join("total")).unwrap(),
        "16 numbers\n"
    );
    let public = cluster.kiln_ok(&["keys", "public"]);
    let key = cluster
        .env
        .write("kiln.pub", &String::from_utf8(public.stdout).unwrap());
    let verified = cluster.kiln(&[
        "verify",
        out_dir.join("total").to_str().unwrap(),
        "--provenance",
        out_dir.join("total.intoto.jsonl").to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    assert!(verified.status.success(), "{}", text(&verified));
}

/// Lease ttl of the fault tests, so that a dead worker's lease expires quickly.
const FAULT_TTL: u32 = 4;

/// One step that runs long enough to be caught mid-step.
const SLOW: &str = "version: 1\nname: slow\nrootfs: busybox@1\nsteps:\n  - name: nap\n    run: sleep 3; echo rested > /out/r\n    outputs: [r]\nartifacts:\n  - { name: r, from: nap, path: r }\n";

fn submit(cluster: &Cluster, yaml: &str) -> String {
    let pipeline = cluster.env.write("slow.yaml", yaml);
    let out = cluster.kiln_ok(&["submit", pipeline.to_str().unwrap()]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn leased_to(view: &Value, worker: &str) -> bool {
    let s = step(view, "nap");
    s["state"] == "leased" && s["worker"] == worker
}

#[test]
fn a_step_whose_worker_is_killed_completes_on_another_exactly_once() {
    let mut cluster = Cluster::start(FAULT_TTL);
    let doomed = cluster.worker("doomed", 1);
    let doomed_id = cluster.workers[doomed].worker_id();
    let run = submit(&cluster, SLOW);
    cluster.wait_for(&run, Duration::from_secs(30), "the step to start", |v| {
        leased_to(v, &doomed_id)
    });
    std::thread::sleep(Duration::from_millis(500));
    cluster.workers[doomed].kill9();

    let survivor = cluster.worker("survivor", 1);
    let survivor_id = cluster.workers[survivor].worker_id();
    // The lease expires (FAULT_TTL), then the survivor gets the step.
    cluster.wait_for(&run, Duration::from_secs(120), "the run to end", |v| {
        v["state"] != "running"
    });
    let view = cluster.status(&run);
    assert_eq!(view["state"], "succeeded", "{view:#}\n{}", cluster.logs());
    let nap = step(&view, "nap");
    assert_eq!(nap["worker"], survivor_id.as_str(), "{nap:#}");
    assert_eq!(nap["attempts"], 2, "{nap:#}");
    assert_eq!(
        records_of(&cluster.env.data_dir(), &run).len(),
        1,
        "exactly one record is accepted"
    );
    let log = cluster.workers[survivor].output();
    assert_eq!(log.matches("reported").count(), 1, "{log}");
}

#[test]
fn a_stalled_workers_late_result_is_refused_and_the_step_runs_once_elsewhere() {
    let mut cluster = Cluster::start(FAULT_TTL);
    let stalled = cluster.worker("stalled", 1);
    let stalled_id = cluster.workers[stalled].worker_id();
    let run = submit(&cluster, SLOW);
    cluster.wait_for(&run, Duration::from_secs(30), "the step to start", |v| {
        leased_to(v, &stalled_id)
    });
    // Frozen: no heartbeats, so its lease expires while its step still sleeps.
    cluster.workers[stalled].signal("STOP");
    let rescuer = cluster.worker("rescuer", 1);
    let rescuer_id = cluster.workers[rescuer].worker_id();
    cluster.wait_for(&run, Duration::from_secs(120), "the run to end", |v| {
        v["state"] != "running"
    });
    // Thawed: its next heartbeat or its report is refused (409) and its result dropped.
    cluster.workers[stalled].signal("CONT");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cluster.workers[stalled]
        .output()
        .contains("lease lost (409)")
    {
        assert!(
            Instant::now() < deadline,
            "the stalled worker never learned it lost its lease\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let view = cluster.status(&run);
    assert_eq!(view["state"], "succeeded", "{view:#}");
    let nap = step(&view, "nap");
    assert_eq!(nap["worker"], rescuer_id.as_str(), "{nap:#}");
    assert_eq!(records_of(&cluster.env.data_dir(), &run).len(), 1);
    let rescuer_log = cluster.workers[rescuer].output();
    assert_eq!(rescuer_log.matches("reported").count(), 1, "{rescuer_log}");

    // SIGTERM drains: nothing is running, so it exits 0 promptly.
    cluster.workers[stalled].signal("TERM");
    let status = cluster.workers[stalled].wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{status:?}");
}

#[test]
fn sigterm_lets_a_running_step_finish_and_be_reported_then_exits_zero() {
    let mut cluster = Cluster::start(FAULT_TTL);
    let w = cluster.worker("drainer", 1);
    let drainer_id = cluster.workers[w].worker_id();
    let run = submit(&cluster, SLOW);
    cluster.wait_for(&run, Duration::from_secs(30), "the step to start", |v| {
        leased_to(v, &drainer_id)
    });
    cluster.workers[w].signal("TERM");
    let status = cluster.workers[w].wait_exit(Duration::from_secs(60));
    assert!(status.success(), "{status:?}\n{}", cluster.logs());
    let view = cluster.status(&run);
    assert_eq!(view["state"], "succeeded", "{view:#}\n{}", cluster.logs());
    assert_eq!(step(&view, "nap")["attempts"], 1);
}

#[test]
fn a_malformed_pipeline_is_refused_with_one_diagnostic_per_line() {
    let cluster = Cluster::start(30);
    let pipeline = cluster.env.write(
        "bad.yaml",
        "version: 1\nname: bad\nrootfs: busybox@1\nsteps:\n  - name: a\n    run: true\n    bogus: 1\n    outputs: [../x]\n",
    );
    let out = cluster.kiln(&["submit", pipeline.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let diagnostics: Vec<&str> = stderr.lines().filter(|l| l.contains("bad.yaml:")).collect();
    assert!(!diagnostics.is_empty(), "{stderr}");
    assert!(out.stdout.is_empty(), "no run id for a refused pipeline");
}

#[test]
fn submitting_to_an_unreachable_controller_is_an_error_naming_the_network() {
    let env = Env::new();
    let pipeline = env.write("p.yaml", "version: 1\n");
    let out = Command::new(kiln_bin())
        .args(["submit", pipeline.to_str().unwrap()])
        // Nothing listens on the discard port of loopback.
        .env("KILN_CONTROLLER", "http://127.0.0.1:9")
        .env("KILN_TOKEN", "kiln-team-unused")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("cannot reach the controller"),
        "{}",
        text(&out)
    );
}

/// The step records the daemon accepted for `run`, read from its database.
fn records_of(data_dir: &Path, run: &str) -> Vec<kiln_core::StepRecord> {
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
