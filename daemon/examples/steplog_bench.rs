//! Step log benchmark, daemon side, on SQLite (docs/step-log.md, "Figures"):
//!
//! 1. appends: ENTRIES entries through [`State::append_log_entry`], one transaction each (as
//!    the daemon appends: one per accepted run, report or run end), against the anchor of
//!    `sqlite3` inserting the same rows in as many autocommit transactions, same pragmas (WAL,
//!    `synchronous = NORMAL`), and of the same with an fsync per commit (SQLite's default);
//! 2. a realistic log: runs of 8 steps created, recorded and finished through the state (each
//!    state change with its entry), ENTRIES entries in all, a checkpoint signed per run;
//! 3. `kiln audit verify` of that log: [`steplog::verify`] in process and, with `KILN_BIN`
//!    set, the `kiln audit verify` process itself, against the anchor of `openssl dgst
//!    -sha256` over the same entry bytes (process included).
//!
//! ```text
//! cargo run --release -p kiln-daemon --example steplog_bench
//! REPS=5 ENTRIES=10000 KILN_BIN=target/release/kiln cargo run --release -p kiln-daemon --example steplog_bench
//! ```
//!
//! Prints medians over REPS runs. Needs `sqlite3` and `openssl` on PATH for the anchors. Not
//! a test: nothing here asserts a time.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kiln_core::{Sha256Digest, StepRecord};
use kiln_daemon::Controller;
use kiln_daemon::state::testing::sample_record;
use kiln_daemon::state::{NewRun, NewStep, State};
use kiln_daemon::steplog::{self, LogEntry};
use time::OffsetDateTime;

const STEPS_PER_RUN: usize = 8;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn median_f(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn record(run: &str, step: &str) -> StepRecord {
    // A record of a realistic size: a build command, an environment, a 4 KiB log.
    let mut record = sample_record(run, step);
    record.command = "make -j4 && make install DESTDIR=/out".into();
    record.env = BTreeMap::from([("CC".into(), "gcc".into())]);
    record.started_on = OffsetDateTime::now_utc();
    record.finished_on = OffsetDateTime::now_utc();
    record.log.size = 4096;
    let sandbox = &mut record.sandbox;
    sandbox.namespaces = vec!["user".into(), "mount".into(), "pid".into(), "net".into()];
    sandbox.scratch_bytes = 1 << 30;
    sandbox.mounts = vec![
        "/ <- /store/trees/x (bind, ro,nosuid,nodev)".into(),
        "/out <- /scratch/out (bind, rw,nosuid,nodev)".into(),
    ];
    sandbox.rlimits = "RLIMIT_CORE=0, RLIMIT_NOFILE=1024".into();
    record
}

/// The entry appended as entry `i` in the append benchmark: a step record's entry.
fn bench_entry(i: usize) -> (String, String) {
    (
        format!("0191c3a0-7d2e-7000-8000-{:012x}", i / 8),
        format!("build-{i}"),
    )
}

async fn appends(dir: &Path, n: usize) -> Duration {
    let state = State::open(&dir.join("append.sqlite")).await.unwrap();
    let record_json = serde_json::to_string(&record("r", "s")).unwrap();
    let start = Instant::now();
    for i in 0..n {
        let (run, step) = bench_entry(i);
        state
            .append_log_entry(&LogEntry::StepRecord {
                run: &run,
                step: &step,
                worker: "w1",
                record_json: &record_json,
            })
            .await
            .unwrap();
    }
    let took = start.elapsed();
    assert_eq!(state.log_size().await.unwrap(), n as u64);
    state.close().await;
    took
}

/// `sqlite3` inserting the same rows, one autocommit transaction each, WAL.
fn anchor_sqlite3(dir: &Path, n: usize, synchronous: &str) -> Duration {
    let db = dir.join(format!("anchor-{synchronous}.sqlite"));
    let mut sql = format!("PRAGMA journal_mode = WAL;\nPRAGMA synchronous = {synchronous};\n");
    sql.push_str(
        "CREATE TABLE log_entries (idx INTEGER PRIMARY KEY, kind TEXT NOT NULL, run_id TEXT NOT NULL, step TEXT, entry TEXT NOT NULL, leaf_hash TEXT NOT NULL);\n",
    );
    let record_json = serde_json::to_string(&record("r", "s")).unwrap();
    for i in 0..n {
        let (run, step) = bench_entry(i);
        let entry = LogEntry::StepRecord {
            run: &run,
            step: &step,
            worker: "w1",
            record_json: &record_json,
        }
        .to_bytes();
        sql.push_str(&format!(
            "INSERT INTO log_entries VALUES ({i}, 'step-record', '{run}', '{step}', '{}', '{}');\n",
            entry.replace('\'', "''"),
            kiln_attest::tlog::leaf_hash(entry.as_bytes())
        ));
    }
    let start = Instant::now();
    let mut child = Command::new("sqlite3")
        .arg(&db)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("sqlite3 on PATH");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(sql.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
    start.elapsed()
}

/// A data dir whose log holds `n` entries from real runs; returns (controller, build time).
async fn realistic_log(dir: &Path, n: usize) -> (Controller, Duration) {
    let controller = Controller::open(dir).await.unwrap();
    let state = controller.state();
    let signer = controller.log_signer().unwrap();
    let sha = Sha256Digest::of(b"pipeline");
    let names: Vec<String> = (0..STEPS_PER_RUN).map(|i| format!("step-{i}")).collect();
    let no_labels = BTreeMap::new();
    let per_run = STEPS_PER_RUN + 2;
    let start = Instant::now();
    for r in 0..n.div_ceil(per_run) {
        let run = format!("0191c3a0-7d2e-7000-8000-{r:012x}");
        state
            .create_run(&NewRun {
                id: &run,
                pipeline_name: "bench",
                pipeline_file: "bench.yaml",
                pipeline_sha256: &sha,
                started_at: OffsetDateTime::now_utc(),
                steps: names
                    .iter()
                    .map(|name| NewStep {
                        name,
                        needs: &[],
                        requires: &no_labels,
                    })
                    .collect(),
                submission: None,
            })
            .await
            .unwrap();
        for name in &names {
            state.record_step(&record(&run, name)).await.unwrap();
        }
        state
            .finish_run(&run, true, OffsetDateTime::now_utc())
            .await
            .unwrap();
        steplog::sign_checkpoint(state, &signer, OffsetDateTime::now_utc())
            .await
            .unwrap();
    }
    (controller, start.elapsed())
}

fn anchor_openssl(dir: &Path, entries: &[u8]) -> Duration {
    let file = dir.join("entries.bin");
    std::fs::write(&file, entries).unwrap();
    let start = Instant::now();
    let out = Command::new("openssl")
        .args(["dgst", "-sha256"])
        .arg(&file)
        .output()
        .expect("openssl on PATH");
    let took = start.elapsed();
    assert!(out.status.success());
    took
}

fn main() {
    let reps = env_usize("REPS", 5);
    let n = env_usize("ENTRIES", 10_000);
    let kiln_bin = std::env::var("KILN_BIN").ok();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (mut append, mut anchor_ins, mut ins_ratio) = (Vec::new(), Vec::new(), Vec::new());
    let mut anchor_full = Vec::new();
    let (mut build, mut verify, mut verify_cli, mut dgst) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut verify_ratio, mut cli_ratio) = (Vec::new(), Vec::new());
    let mut log_bytes = 0;
    let mut checkpoints = 0;
    for _ in 0..reps {
        let dir = tempfile::tempdir_in(std::env::current_dir().unwrap()).unwrap();
        let a = runtime.block_on(appends(dir.path(), n));
        let s = anchor_sqlite3(dir.path(), n, "NORMAL");
        anchor_full.push(anchor_sqlite3(dir.path(), n, "FULL"));
        append.push(a);
        anchor_ins.push(s);
        ins_ratio.push(a.as_secs_f64() / s.as_secs_f64());

        let data = dir.path().join("data");
        let (controller, built) = runtime.block_on(realistic_log(&data, n));
        build.push(built);
        let vkey = controller.log_verifier().unwrap();
        let start = Instant::now();
        let report = runtime
            .block_on(steplog::verify(controller.state(), &vkey))
            .unwrap();
        let v = start.elapsed();
        assert!(report.is_ok(), "{:?}", report.findings);
        checkpoints = report.checkpoints;
        let entries: Vec<u8> = runtime
            .block_on(controller.state().log_entries_below(u64::MAX))
            .unwrap()
            .into_iter()
            .flat_map(|e| e.entry.into_bytes())
            .collect();
        log_bytes = entries.len();
        runtime.block_on(controller.state().close());
        let d = anchor_openssl(dir.path(), &entries);
        verify.push(v);
        dgst.push(d);
        verify_ratio.push(v.as_secs_f64() / d.as_secs_f64());
        if let Some(bin) = &kiln_bin {
            let start = Instant::now();
            let out = Command::new(bin)
                .arg("--data-dir")
                .arg(&data)
                .args(["audit", "verify"])
                .env_remove("KILN_DATABASE_URL")
                .output()
                .unwrap();
            let c = start.elapsed();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stdout)
            );
            verify_cli.push(c);
            cli_ratio.push(c.as_secs_f64() / d.as_secs_f64());
        }
    }
    let per_sec = |d: Duration| n as f64 / d.as_secs_f64();
    let a = median(append);
    let s = median(anchor_ins);
    let b = median(build);
    println!("step log on SQLite: {n} entries, medians of {reps} runs");
    println!(
        "append (one transaction each)          {:>9.1} ms  {:>8.0} entries/s",
        a.as_secs_f64() * 1e3,
        per_sec(a)
    );
    println!(
        "anchor: sqlite3, same rows, autocommit {:>9.1} ms  {:>8.0} rows/s",
        s.as_secs_f64() * 1e3,
        per_sec(s)
    );
    println!(
        "append / sqlite3                       {:>9.2}x",
        median_f(ins_ratio)
    );
    let f = median(anchor_full);
    println!(
        "anchor: sqlite3, fsync every commit    {:>9.1} ms  {:>8.0} rows/s",
        f.as_secs_f64() * 1e3,
        per_sec(f)
    );
    println!(
        "runs of {STEPS_PER_RUN} steps through the state  {:>9.1} ms  {:>8.0} entries/s (run, records, end; a checkpoint per run)",
        b.as_secs_f64() * 1e3,
        per_sec(b)
    );
    println!(
        "verify ({n} entries, {log_bytes} bytes, {checkpoints} checkpoints, in process) {:>8.1} ms",
        median(verify).as_secs_f64() * 1e3
    );
    if !verify_cli.is_empty() {
        println!(
            "`kiln audit verify` (process)          {:>9.1} ms",
            median(verify_cli).as_secs_f64() * 1e3
        );
    }
    println!(
        "anchor: openssl dgst -sha256 (process) {:>9.1} ms",
        median(dgst).as_secs_f64() * 1e3
    );
    println!(
        "verify / openssl dgst                  {:>9.2}x",
        median_f(verify_ratio)
    );
    if !cli_ratio.is_empty() {
        println!(
            "kiln audit verify / openssl dgst       {:>9.2}x",
            median_f(cli_ratio)
        );
    }
}
