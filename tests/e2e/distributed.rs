//! The distributed mode as real processes on loopback: `kiln daemon`, two `kiln worker`s with
//! their own data dirs, and the team commands (`kiln submit`, `kiln status`, `kiln artifacts`).
//! Every process is killed when its guard drops, also when a test fails.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::process::Command;
use std::time::{Duration, Instant};

use common::cluster::{Cluster, step};
use common::process::Proc;
use common::{Env, kiln_bin, text};
use kiln_daemon::state::Backend;
use serde_json::Value;

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

    // Each worker's sandbox launcher is the helper built into kiln, run from its sealed memfd.
    for worker in &cluster.workers {
        let exes = children_executables(worker.pid());
        assert!(
            exes.iter()
                .any(|exe| exe.starts_with("/memfd:kiln-sandbox-helper")),
            "worker {} has no launcher from the built-in helper; its children run {exes:?}",
            worker.pid()
        );
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

/// What the child processes of `pid` run (`/proc/<child>/exe`).
fn children_executables(pid: u32) -> Vec<String> {
    let mut exes = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // The command name may hold spaces; the parent pid is the second field after it.
        let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let is_child = after_name.split_whitespace().nth(1) == Some(&pid.to_string());
        if let (true, Ok(exe)) = (is_child, fs::read_link(entry.path().join("exe"))) {
            exes.push(exe.to_string_lossy().into_owned());
        }
    }
    exes
}

/// Lease ttl of the fault tests, so that a dead worker's lease expires quickly.
const FAULT_TTL: u32 = 4;

/// One step that runs long enough to be caught mid-step.
const SLOW: &str = "version: 1\nname: slow\nrootfs: busybox@1\nsteps:\n  - name: nap\n    run: sleep 3; echo rested > /out/r\n    outputs: [r]\nartifacts:\n  - { name: r, from: nap, path: r }\n";

fn submit(cluster: &Cluster, yaml: &str) -> String {
    cluster.submit("slow.yaml", yaml)
}

fn leased_to(view: &Value, worker: &str) -> bool {
    let s = step(view, "nap");
    s["state"] == "leased" && s["worker"] == worker
}

fn a_step_whose_worker_is_killed_completes_on_another_exactly_once(backend: Backend) {
    let mut cluster = Cluster::start_on(FAULT_TTL, backend);
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
    let view = cluster.wait_for_success(&run, Duration::from_secs(120));
    let nap = step(&view, "nap");
    assert_eq!(nap["worker"], survivor_id.as_str(), "{nap:#}");
    assert_eq!(nap["attempts"], 2, "{nap:#}");
    assert_eq!(
        cluster.records(&run).len(),
        1,
        "exactly one record is accepted"
    );
    let log = cluster.workers[survivor].output();
    assert_eq!(log.matches("reported").count(), 1, "{log}");
}

fn a_stalled_workers_late_result_is_refused_and_the_step_runs_once_elsewhere(backend: Backend) {
    let mut cluster = Cluster::start_on(FAULT_TTL, backend);
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
    cluster.wait_for_end(&run, Duration::from_secs(120));
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
    assert_eq!(cluster.records(&run).len(), 1);
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

/// Five layers of ten steps; each step past the first layer needs two of the layer before and
/// adds their numbers: 50 steps whose last layer's sums prove every edge carried its input.
fn fifty_step_pipeline() -> String {
    let mut yaml = String::from("version: 1\nname: layers\nrootfs: busybox@1\nsteps:\n");
    for i in 0..10 {
        yaml.push_str(&format!(
            "  - name: l0-{i}\n    run: sleep 0.3; echo 1 > /out/n\n    outputs: [n]\n"
        ));
    }
    for layer in 1..5 {
        for i in 0..10 {
            let (a, b) = (
                format!("l{}-{i}", layer - 1),
                format!("l{}-{}", layer - 1, (i + 1) % 10),
            );
            yaml.push_str(&format!(
                "  - name: l{layer}-{i}\n    needs: [{a}, {b}]\n    run: sleep 0.3; echo $(( $(cat /in/{a}/n) + $(cat /in/{b}/n) )) > /out/n\n    outputs: [n]\n"
            ));
        }
    }
    yaml.push_str("artifacts:\n  - { name: n, from: l4-0, path: n }\n");
    yaml
}

fn a_fifty_step_dag_completes_on_three_workers_each_step_once(backend: Backend) {
    let mut cluster = Cluster::start_on(30, backend);
    for name in ["w1", "w2", "w3"] {
        cluster.worker(name, 2);
    }
    let run = cluster.submit("layers.yaml", &fifty_step_pipeline());
    let view = cluster.wait_for_success(&run, Duration::from_secs(300));
    let steps = view["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 50);
    for s in steps {
        assert_eq!(s["state"], "succeeded", "{s:#}");
        assert_eq!(s["attempts"], 1, "{s:#}");
    }
    let workers: BTreeSet<&str> = steps.iter().filter_map(|s| s["worker"].as_str()).collect();
    assert_eq!(workers.len(), 3, "not every worker ran a step: {view:#}");
    assert_fifty_steps_recorded_once_and_summed(&cluster, &run);
}

/// One accepted record per step of [`fifty_step_pipeline`] (nothing lost, nothing twice), and
/// its artifact: four layers of pairwise sums of ones, 2^4.
fn assert_fifty_steps_recorded_once_and_summed(cluster: &Cluster, run: &str) {
    let records = cluster.records(run);
    let names: BTreeSet<&str> = records.iter().map(|r| r.step.as_str()).collect();
    assert_eq!(
        (records.len(), names.len()),
        (50, 50),
        "one record per step"
    );
    let out_dir = cluster.env.path("artifacts");
    cluster.kiln_ok(&["artifacts", run, "--out", out_dir.to_str().unwrap()]);
    assert_eq!(fs::read_to_string(out_dir.join("n")).unwrap(), "16\n");
}

fn a_run_completes_after_the_daemon_is_killed_mid_run_and_restarted(backend: Backend) {
    let mut cluster = Cluster::start_on(30, backend);
    cluster.worker("w1", 2);
    cluster.worker("w2", 2);
    let run = cluster.submit("layers.yaml", &fifty_step_pipeline());
    // Mid-run: some steps done, some leased.
    cluster.wait_for(
        &run,
        Duration::from_secs(120),
        "the run to be under way",
        |v| {
            let steps = v["steps"].as_array().unwrap();
            let done = steps.iter().filter(|s| s["state"] == "succeeded").count();
            let leased = steps.iter().filter(|s| s["state"] == "leased").count();
            done >= 5 && leased >= 1
        },
    );
    cluster.kill9_and_restart_daemon();
    let view = cluster.wait_for_success(&run, Duration::from_secs(300));
    for s in view["steps"].as_array().unwrap() {
        assert_eq!(s["state"], "succeeded", "{s:#}");
    }
    assert_fifty_steps_recorded_once_and_summed(&cluster, &run);
}

#[test]
fn kiln_worker_drain_lets_the_running_step_finish_then_the_worker_exits() {
    let mut cluster = Cluster::start(30);
    let w = cluster.worker("drained", 1);
    let id = cluster.workers[w].worker_id();
    let data = cluster.worker_data("drained");
    let data = data.to_str().unwrap();

    // One worker per data dir: a second one is refused, naming the first's pid.
    let second = cluster.kiln(&[
        "--data-dir",
        data,
        "worker",
        "--controller",
        &cluster.url,
        "--host-ids",
        "1900000:4",
    ]);
    assert_eq!(second.status.code(), Some(2), "{}", text(&second));
    let pid = cluster.workers[w].pid().to_string();
    assert!(
        text(&second).contains(&format!("another kiln worker runs on {data} (pid {pid})")),
        "{}",
        text(&second)
    );

    let run = submit(&cluster, SLOW);
    cluster.wait_for(&run, Duration::from_secs(30), "the step to start", |v| {
        leased_to(v, &id)
    });
    let drained = cluster.kiln(&["--data-dir", data, "worker", "drain"]);
    assert!(
        drained.status.success(),
        "{}\n{}",
        text(&drained),
        cluster.logs()
    );
    assert!(
        text(&drained).contains("drained and exited"),
        "{}",
        text(&drained)
    );
    let status = cluster.workers[w].wait_exit(Duration::from_secs(5));
    assert!(status.success(), "{status:?}");
    // The step it was running finished there and was accepted, once.
    let view = cluster.status(&run);
    assert_eq!(view["state"], "succeeded", "{view:#}\n{}", cluster.logs());
    assert_eq!(step(&view, "nap")["attempts"], 1);
    assert_eq!(step(&view, "nap")["worker"], id.as_str());

    // Nothing runs there any more.
    let again = cluster.kiln(&["--data-dir", data, "worker", "drain"]);
    assert_eq!(again.status.code(), Some(2), "{}", text(&again));
    assert!(
        text(&again).contains(&format!("no kiln worker runs on {data}")),
        "{}",
        text(&again)
    );
}

/// One step that writes a line a second for a few seconds.
const TICKER: &str = "version: 1\nname: ticker\nrootfs: busybox@1\nsteps:\n  - name: tick\n    run: for i in 1 2 3 4 5; do echo tick $i; sleep 1; done; echo -n done\n    outputs: []\n";

fn kiln_logs_follow_prints_a_steps_output_while_it_runs_then_the_whole_log(backend: Backend) {
    let mut cluster = Cluster::start_on(30, backend);
    cluster.worker("w1", 1);
    let run = cluster.submit("ticker.yaml", TICKER);
    let env = [
        ("KILN_CONTROLLER", cluster.url.as_str()),
        ("KILN_TOKEN", cluster.token.as_str()),
    ];
    let mut follow = Proc::spawn_with_env(
        "logs-follow",
        cluster.env.dir.path(),
        &["logs", &run, "tick", "--follow"],
        &env,
    );
    // Streamed: the first line shows while the step is still running.
    follow.wait_for_line(Duration::from_secs(60), "the first line", |l| {
        (l == "tick 1").then_some(())
    });
    let view = cluster.status(&run);
    assert_eq!(step(&view, "tick")["state"], "leased", "{view:#}");
    let status = follow.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "{}", follow.output());
    let whole = "tick 1\ntick 2\ntick 3\ntick 4\ntick 5\ndone";
    assert_eq!(follow.stdout(), whole, "{}", cluster.logs());

    // After the run: the same bytes, from the step's content-addressed log.
    let view = cluster.status(&run);
    assert_eq!(view["state"], "succeeded", "{view:#}");
    let again = cluster.kiln_ok(&["logs", &run, "tick"]);
    assert_eq!(String::from_utf8_lossy(&again.stdout), whole);
    // Every step, prefixed; and as JSON lines.
    let all = cluster.kiln_ok(&["logs", &run]);
    let all = String::from_utf8_lossy(&all.stdout);
    assert_eq!(all.lines().next(), Some("[tick] tick 1"), "{all}");
    assert_eq!(all.lines().last(), Some("[tick] done"), "{all}");
    let json = cluster.kiln_ok(&["logs", &run, "--json"]);
    let lines: Vec<Value> = String::from_utf8_lossy(&json.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object a line"))
        .collect();
    assert_eq!(lines.len(), 6);
    assert_eq!(
        lines[4],
        serde_json::json!({"step": "tick", "line": "tick 5"})
    );
    // An unknown step is an error naming it.
    let unknown = cluster.kiln(&["logs", &run, "nope"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(
        text(&unknown).contains("has no step \"nope\""),
        "{}",
        text(&unknown)
    );
}

#[test]
fn the_team_commands_read_the_controller_and_token_from_the_config_file() {
    let cluster = Cluster::start(30);
    let config = cluster.env.write(
        "kiln-config.yaml",
        &format!("controller: {}\ntoken: {}\n", cluster.url, cluster.token),
    );
    let kiln = |args: &[&str]| {
        Command::new(kiln_bin())
            .args(args)
            .env_remove("KILN_CONTROLLER")
            .env_remove("KILN_TOKEN")
            .env("KILN_CONFIG", &config)
            .output()
            .unwrap()
    };
    // Readable by others while it holds a token: refused, saying how to fix it.
    fs::set_permissions(&config, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let loose = kiln(&["status"]);
    assert_eq!(loose.status.code(), Some(2), "{}", text(&loose));
    assert!(text(&loose).contains("chmod 600"), "{}", text(&loose));

    fs::set_permissions(&config, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let listed = kiln(&["status", "--json"]);
    assert!(listed.status.success(), "{}", text(&listed));
    let runs: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(runs, serde_json::json!([]));
    // A flag still wins over the file.
    let elsewhere = kiln(&["status", "--controller", "http://127.0.0.1:9"]);
    assert!(
        text(&elsewhere).contains("cannot reach the controller"),
        "{}",
        text(&elsewhere)
    );
}

/// Two independent steps that overlap in time, and one that gathers them.
const PAIR: &str = "version: 1\nname: pair\nrootfs: busybox@1\nsteps:\n  - name: left\n    run: sleep 2; echo l > /out/x\n    outputs: [x]\n  - name: right\n    run: sleep 2; echo r > /out/x\n    outputs: [x]\n  - name: both\n    needs: [left, right]\n    run: cat /in/left/x /in/right/x > /out/x; chmod +x /out/x\n    outputs: [x]\nartifacts:\n  - { name: x, from: both, path: x }\n";

fn audit_steps(cluster: &Cluster, run: &str) -> (Option<i32>, String, Value) {
    let text_out = cluster.kiln(&["audit", "steps", run]);
    let json_out = cluster.kiln(&["audit", "steps", run, "--json"]);
    let report: Value = serde_json::from_slice(&json_out.stdout)
        .unwrap_or_else(|_| panic!("audit steps --json prints JSON: {}", text(&json_out)));
    assert_eq!(text_out.status.code(), json_out.status.code());
    (
        text_out.status.code(),
        String::from_utf8_lossy(&text_out.stdout).into_owned(),
        report,
    )
}

fn the_step_separation_report_passes_for_a_run_on_two_workers(backend: Backend) {
    let mut cluster = Cluster::start_on(30, backend);
    cluster.worker("w1", 1);
    cluster.worker("w2", 1);
    let run = cluster.submit("pair.yaml", PAIR);
    cluster.wait_for_end(&run, Duration::from_secs(120));
    let (code, text, report) = audit_steps(&cluster, &run);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("Verdict: SEPARATED"), "{text}");
    assert_eq!(text.matches("  PASS  ").count(), 3, "{text}");
    assert_eq!(report["format"], "kiln.dev/step-separation/v1");
    assert_eq!(report["separated"], true);
    let steps = report["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 3);
    for s in steps {
        let sandbox = &s["sandbox"];
        assert_eq!(sandbox["network"], "none (loopback only)", "{s:#}");
        assert!(
            sandbox["mounts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m.as_str().unwrap().starts_with("/out <- ")),
            "{s:#}"
        );
    }
    assert_eq!(
        step(&report, "both")["sandbox"]["inputs"]
            .as_object()
            .unwrap()
            .len(),
        2
    );

    // The artifact comes down executable, as the step left it, and --json says what was written.
    let out_dir = cluster.env.path("artifacts");
    let listed = cluster.kiln_ok(&[
        "artifacts",
        &run,
        "--out",
        out_dir.to_str().unwrap(),
        "--json",
    ]);
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed[0]["name"], "x", "{listed:#}");
    assert_eq!(listed[0]["path"], out_dir.join("x").to_str().unwrap());
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &fs::metadata(out_dir.join("x")).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o755);
    assert_eq!(fs::read_to_string(out_dir.join("x")).unwrap(), "l\nr\n");
}

#[test]
fn two_workers_given_one_host_uid_range_fail_the_uid_check() {
    let mut cluster = Cluster::start(30);
    // A misconfiguration the separation report exists to catch: both workers run their
    // steps as host uid 1950000.
    cluster.worker_with("w1", 1, &["--host-ids", "1950000:1"]);
    cluster.worker_with("w2", 1, &["--host-ids", "1950000:1"]);
    let run = cluster.submit("pair.yaml", PAIR);
    let view = cluster.wait_for_end(&run, Duration::from_secs(120));
    assert_ne!(
        step(&view, "left")["worker"],
        step(&view, "right")["worker"],
        "{view:#}"
    );
    let (code, text, report) = audit_steps(&cluster, &run);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("Verdict: NOT SEPARATED"), "{text}");
    let uids = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "uids")
        .unwrap();
    assert_eq!(uids["passed"], false, "{report:#}");
    assert!(
        uids["evidence"][0]
            .as_str()
            .unwrap()
            .contains("both ran as host uid 1950000"),
        "{uids:#}"
    );
}

/// Two steps for a GPU worker, one for any worker, one for a machine nobody here has.
const LABELLED: &str = "version: 1\nname: labelled\nrootfs: busybox@1\nsteps:\n  - name: train-1\n    run: echo t1 > /out/x\n    outputs: [x]\n    requires: { gpu: a100 }\n  - name: train-2\n    run: echo t2 > /out/x\n    outputs: [x]\n    requires: { gpu: a100, os: linux }\n  - name: plain\n    run: echo p > /out/x\n    outputs: [x]\n  - name: arm\n    run: echo a > /out/x\n    outputs: [x]\n    requires: { arch: riscv64 }\n";

fn steps_go_only_to_workers_offering_the_labels_they_require(backend: Backend) {
    let mut cluster = Cluster::start_on(30, backend);
    let plain = cluster.worker("plain", 2);
    let gpu = cluster.worker_with("gpu", 1, &["--label", "gpu=a100"]);
    let (plain_id, gpu_id) = (
        cluster.workers[plain].worker_id(),
        cluster.workers[gpu].worker_id(),
    );
    let run = cluster.submit("labelled.yaml", LABELLED);
    cluster.wait_for(&run, Duration::from_secs(120), "the runnable steps", |v| {
        ["train-1", "train-2", "plain"]
            .iter()
            .all(|s| step(v, s)["state"] == "succeeded")
    });
    let view = cluster.status(&run);
    assert_eq!(
        step(&view, "train-1")["worker"],
        gpu_id.as_str(),
        "{view:#}"
    );
    assert_eq!(
        step(&view, "train-2")["worker"],
        gpu_id.as_str(),
        "{view:#}"
    );
    assert!(
        [plain_id.as_str(), gpu_id.as_str()]
            .contains(&step(&view, "plain")["worker"].as_str().unwrap()),
        "{view:#}"
    );
    // No worker offers arch=riscv64: the step waits, and the run with it.
    std::thread::sleep(Duration::from_secs(2));
    let view = cluster.status(&run);
    assert_eq!(step(&view, "arm")["state"], "pending", "{view:#}");
    assert_eq!(view["state"], "running", "{view:#}");
    cluster.kiln_ok(&["cancel", &run]);

    // A cancelled run has no artifacts, but `kiln artifacts` still brings down its signed run
    // attestation, which names the step that never got a worker.
    let out_dir = cluster.env.path("cancelled");
    let fetched = cluster.kiln_ok(&["artifacts", &run, "--out", out_dir.to_str().unwrap()]);
    assert!(text(&fetched).contains("cancelled"), "{}", text(&fetched));
    let written: Vec<_> = fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(written, ["run.intoto.jsonl"]);
    let public = cluster.kiln_ok(&["keys", "public"]);
    let key = kiln_attest::PublicKey::from_spki_pem(&public.stdout).unwrap();
    let jsonl = fs::read_to_string(out_dir.join("run.intoto.jsonl")).unwrap();
    let verified = kiln_attest::verify_run_attestation(&jsonl, &key).unwrap();
    let p = &verified.statement.predicate;
    assert_eq!(p.state, kiln_attest::RunOutcome::Cancelled);
    let arm = p.steps.iter().find(|s| s.name == "arm").unwrap();
    assert_eq!(arm.state, kiln_attest::StepOutcome::Cancelled);
    assert_eq!(arm.exit, None);
}

#[test]
fn malformed_labels_and_labels_kiln_run_cannot_offer_are_refused() {
    let env = Env::new();
    let bad = env.kiln(&[
        "worker",
        "--controller",
        "http://127.0.0.1:9",
        "--label",
        "gpu=a 100",
    ]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    assert!(
        text(&bad).contains("label gpu's value \"a 100\""),
        "{}",
        text(&bad)
    );

    env.import_busybox();
    let pipeline = env.write("labelled.yaml", LABELLED);
    let out = env.run(&pipeline);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains(
            "step train-1 requires gpu=a100, but `kiln run` runs every step on this machine"
        ),
        "{}",
        text(&out)
    );
}

/// A chain on one single-slot worker: every report's answer carries the next step's lease, so
/// the worker claims once for the whole run (issue 4: a round trip less per step). The
/// `claimed` events keep what scripts/bench_dag.py pairs leases by.
fn a_chain_runs_on_the_leases_its_reports_answers_carry(backend: Backend) {
    const STEPS: usize = 5;
    let mut cluster = Cluster::start_on(30, backend);
    let w = cluster.worker_with("w1", 1, &["--log", "info,kiln_worker::remote=debug"]);
    let mut yaml = String::from("version: 1\nname: chain\nrootfs: busybox@1\nsteps:\n");
    yaml.push_str("  - { name: s0, run: 'true' }\n");
    for i in 1..STEPS {
        yaml.push_str(&format!(
            "  - {{ name: s{i}, needs: [s{}], run: 'true' }}\n",
            i - 1
        ));
    }
    let run = cluster.submit("chain.yaml", &yaml);
    cluster.wait_for_success(&run, Duration::from_secs(120));
    let log = cluster.workers[w].output();
    let claimed: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("kiln_worker::remote: claimed "))
        .collect();
    assert_eq!(claimed.len(), STEPS, "one per step:\n{log}");
    let via_report = claimed.iter().filter(|l| l.contains("via=report")).count();
    assert_eq!(via_report, STEPS - 1, "all but the first step:\n{log}");
    for line in claimed {
        assert!(
            line.contains(" lease=") && line.contains(" claim_us="),
            "{line}"
        );
    }
}

/// A worker remembers which blobs the controller holds and skips asking about them again
/// (every step's record names its log, and steps that print the same have the same log). If
/// the controller's store lost one after all, the report naming it is refused (`422`), and the
/// worker uploads it again and reports: the run still succeeds.
#[test]
fn a_log_blob_the_controller_lost_is_uploaded_again_and_the_step_reported() {
    let mut cluster = Cluster::start(30);
    cluster.worker("w1", 1);
    let yaml = "version: 1\nname: same-log\nrootfs: busybox@1\nsteps:\n  - { name: s, run: 'echo same' }\n";
    let first = cluster.submit("first.yaml", yaml);
    cluster.wait_for_success(&first, Duration::from_secs(120));
    let log = cluster.records(&first)[0].log.sha256.to_string();
    let blob = cluster
        .env
        .data_dir()
        .join("store/blobs/sha256")
        .join(&log[..2])
        .join(&log);
    std::fs::remove_file(&blob).unwrap_or_else(|e| panic!("{}: {e}", blob.display()));

    let second = cluster.submit("second.yaml", yaml);
    cluster.wait_for_success(&second, Duration::from_secs(120));
    assert_eq!(cluster.records(&second)[0].log.sha256.to_string(), log);
    assert!(blob.is_file(), "the log blob was not uploaded again");
    assert!(
        cluster
            .logs()
            .contains("report refused for a missing blob; uploading again"),
        "{}",
        cluster.logs()
    );
}

cluster_tests! {
    a_chain_runs_on_the_leases_its_reports_answers_carry;
    a_fifty_step_dag_completes_on_three_workers_each_step_once;
    a_step_whose_worker_is_killed_completes_on_another_exactly_once;
    a_run_completes_after_the_daemon_is_killed_mid_run_and_restarted;
    a_stalled_workers_late_result_is_refused_and_the_step_runs_once_elsewhere;
    steps_go_only_to_workers_offering_the_labels_they_require;
    kiln_logs_follow_prints_a_steps_output_while_it_runs_then_the_whole_log;
    the_step_separation_report_passes_for_a_run_on_two_workers;
}
