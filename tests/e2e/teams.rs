//! Teams against a real `kiln daemon` (and a real `kiln worker`) on loopback: API tokens made
//! with `kiln admin token create`, a team seeing and cancelling only its own runs, and the team
//! commands over https with a pinned CA. Every process is killed when its guard drops.

mod common;

use std::fs;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::process::Proc;
use common::{Env, kiln_bin, text};
use serde_json::Value;

/// One step that sleeps long enough to be cancelled while it runs.
const NAP: &str = "version: 1\nname: nap\nrootfs: busybox@1\nsteps:\n  - name: nap\n    run: sleep 4; echo rested > /out/r\n    outputs: [r]\nartifacts:\n  - { name: r, from: nap, path: r }\n";

/// A daemon (plain or `--tls`) with busybox in its mirror.
struct Daemon {
    proc: Proc,
    url: String,
    /// Last, so it drops after the daemon is dead: its drop detaches leftover mounts.
    env: Env,
}

impl Daemon {
    fn start(extra: &[&str]) -> Self {
        let env = Env::new();
        env.import_busybox();
        let data = env.data_dir();
        let mut args = vec!["--data-dir", data.to_str().unwrap()];
        args.extend(["daemon", "--listen", "127.0.0.1:0", "--lease-ttl", "30"]);
        args.extend(extra);
        let proc = Proc::spawn("daemon", env.dir.path(), &args);
        let url = proc.listening_url();
        Self { env, proc, url }
    }

    /// `kiln ARGS` against this daemon with `token` (none if `None`).
    fn kiln_as(&self, token: Option<&str>, args: &[&str]) -> Output {
        let mut cmd = Command::new(kiln_bin());
        cmd.args(args)
            .env("KILN_CONTROLLER", &self.url)
            .env_remove("KILN_TOKEN")
            .env_remove("KILN_DATA_DIR")
            .env_remove("KILN_LOG")
            .current_dir(self.env.dir.path());
        if let Some(token) = token {
            cmd.env("KILN_TOKEN", token);
        }
        cmd.output().expect("spawn kiln")
    }

    fn kiln_ok(&self, token: &str, args: &[&str]) -> Output {
        let out = self.kiln_as(Some(token), args);
        assert!(
            out.status.success(),
            "kiln {args:?} failed:\n{}\n{}",
            text(&out),
            self.proc.output()
        );
        out
    }

    fn submit(&self, token: &str, extra: &[&str]) -> String {
        let pipeline = self.env.write("nap.yaml", NAP);
        let mut args = vec!["submit", pipeline.to_str().unwrap()];
        args.extend(extra);
        let out = self.kiln_ok(token, &args);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn status(&self, token: &str, run: &str) -> Value {
        let out = self.kiln_ok(token, &["status", run, "--json"]);
        serde_json::from_slice(&out.stdout).expect("status --json prints JSON")
    }

    fn worker(&self) -> Proc {
        let data = self.env.path("worker");
        Proc::spawn(
            "worker",
            self.env.dir.path(),
            &[
                "--data-dir",
                data.to_str().unwrap(),
                "worker",
                "--controller",
                &self.url,
                "--name",
                "w1",
                "--slots",
                "1",
                "--host-ids",
                "1400000:16",
            ],
        )
    }
}

fn refused(out: &Output, what: &str) {
    assert!(
        !out.status.success(),
        "{what} must be refused:\n{}",
        text(out)
    );
}

#[test]
fn a_teams_token_cannot_read_or_cancel_another_teams_run() {
    let daemon = Daemon::start(&[]);
    let blue = daemon.env.team_token("blue", "1h");
    let red = daemon.env.team_token("red", "1h");
    let run = daemon.submit(&blue, &[]);
    assert_eq!(daemon.status(&blue, &run)["id"], run.as_str());

    let out = daemon.kiln_as(Some(&red), &["status", &run, "--json"]);
    refused(&out, "another team's status");
    assert!(text(&out).contains("404"), "{}", text(&out));
    let out = daemon.kiln_as(Some(&red), &["cancel", &run]);
    refused(&out, "another team's cancel");
    let out = daemon.kiln_as(Some(&red), &["artifacts", &run, "--out", "red-out"]);
    refused(&out, "another team's artifacts");
    let listed = daemon.kiln_ok(&red, &["status", "--json"]);
    let listed: Vec<Value> = serde_json::from_slice(&listed.stdout).unwrap();
    assert!(listed.is_empty(), "red sees no runs: {listed:?}");
    // Red's attempt changed nothing.
    assert_eq!(daemon.status(&blue, &run)["state"], "running");
}

#[test]
fn requests_without_a_valid_token_are_refused() {
    let daemon = Daemon::start(&[]);
    let blue = daemon.env.team_token("blue", "1h");
    let run = daemon.submit(&blue, &[]);

    let out = daemon.kiln_as(None, &["status", &run]);
    refused(&out, "no token");
    assert!(text(&out).contains("KILN_TOKEN"), "{}", text(&out));
    let forged = format!("kiln-team-{}", "0".repeat(64));
    let out = daemon.kiln_as(Some(&forged), &["status", &run]);
    refused(&out, "an unknown token");
    assert!(text(&out).contains("401"), "{}", text(&out));

    let expiring = daemon.env.team_token("blue", "1s");
    std::thread::sleep(Duration::from_millis(1500));
    let out = daemon.kiln_as(Some(&expiring), &["status", &run]);
    refused(&out, "an expired token");
    assert!(text(&out).contains("expired"), "{}", text(&out));

    // The token is stored hashed: its secret appears nowhere in the database.
    let db = fs::read(daemon.env.data_dir().join("state.sqlite")).unwrap();
    let secret = blue.trim_start_matches("kiln-team-");
    assert!(
        !db.windows(secret.len()).any(|w| w == secret.as_bytes()),
        "the token's secret is stored in clear"
    );
}

#[test]
fn cancel_stops_a_sleeping_step_and_the_workers_late_report_is_refused() {
    let daemon = Daemon::start(&[]);
    let blue = daemon.env.team_token("blue", "1h");
    let worker = daemon.worker();
    let run = daemon.submit(&blue, &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while daemon.status(&blue, &run)["steps"][0]["state"] != "leased" {
        assert!(
            Instant::now() < deadline,
            "the step never started\n{}\n{}",
            daemon.proc.output(),
            worker.output()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let out = daemon.kiln_ok(&blue, &["cancel", &run, "--json"]);
    let view: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(view["state"], "cancelled", "{view:#}");
    assert_eq!(view["steps"][0]["state"], "cancelled", "{view:#}");

    // The step sleeps on; when it ends, the worker's result is refused (409) and dropped.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !worker.output().contains("lease lost (409)") {
        assert!(
            Instant::now() < deadline,
            "the worker's late result was not refused\n{}",
            worker.output()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let view = daemon.status(&blue, &run);
    assert_eq!(view["state"], "cancelled", "{view:#}");
    assert!(view["steps"][0]["exit"].is_null(), "no record: {view:#}");
    // A finished run cannot be cancelled again into something else; cancelling is idempotent.
    daemon.kiln_ok(&blue, &["cancel", &run]);
}

#[test]
fn submit_over_https_with_the_pinned_ca_works() {
    let daemon = Daemon::start(&["--tls"]);
    assert!(daemon.url.starts_with("https://"), "{}", daemon.url);
    let blue = daemon.env.team_token("blue", "1h");
    let pki = kiln_daemon::pki::Pki::open_or_create(&daemon.env.data_dir()).unwrap();
    let fingerprint = pki.ca_fingerprint();

    let run = daemon.submit(&blue, &["--ca-fingerprint", &fingerprint]);
    let out = daemon.kiln_ok(
        &blue,
        &["status", &run, "--json", "--ca-fingerprint", &fingerprint],
    );
    let view: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(view["id"], run.as_str());

    let ca = daemon.env.write("ca.pem", pki.ca_pem());
    let out = daemon.kiln_ok(&blue, &["status", "--json", "--ca", ca.to_str().unwrap()]);
    let runs: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(runs.len(), 1);

    // Pinning another CA refuses the daemon; plain https without a CA is refused too.
    let out = daemon.kiln_as(
        Some(&blue),
        &["status", "--ca-fingerprint", &"ab".repeat(32)],
    );
    refused(&out, "a daemon whose CA does not match the pin");
    let out = daemon.kiln_as(Some(&blue), &["status"]);
    refused(&out, "https without a CA");
    // Without a token, https does not help.
    let out = daemon.kiln_as(None, &["status", "--ca-fingerprint", &fingerprint]);
    refused(&out, "no token over https");
}
