//! The step log end to end: a daemon and a worker run real pipelines; `kiln audit
//! checkpoint`, `prove`, `consistency` and `verify` read the daemon's log; the artifact's
//! provenance carries each step record's log entry with an inclusion proof that verifies with
//! `kiln_attest::tlog` alone; and each rewrite of history made directly in the database is
//! named by `kiln audit verify`, which then exits 1.

mod common;

use std::fs;
use std::time::Duration;

use base64::Engine as _;
use common::cluster::Cluster;
use common::text;
use kiln_attest::tlog::{Checkpoint, LogVerifier, NoteSigner, NoteVerifier, TlogProof};
use kiln_core::Sha256Digest;
use kiln_daemon::state::testing::tamper;
use kiln_daemon::state::{Backend, Database, State};
use serde_json::Value;

cluster_tests! {
    the_step_log_proves_a_run_and_names_every_rewrite_of_history;
}

const PAIR: &str = "version: 1\nname: pair\nrootfs: busybox@1\nsteps:\n  - name: left\n    run: echo l > /out/x\n    outputs: [x]\n  - name: right\n    run: echo r > /out/x\n    outputs: [x]\n  - name: both\n    needs: [left, right]\n    run: cat /in/left/x /in/right/x > /out/x\n    outputs: [x]\nartifacts:\n  - { name: x, from: both, path: x }\n";

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn run_to_end(cluster: &Cluster) -> String {
    let run = cluster.submit("pair.yaml", PAIR);
    cluster.wait_for_success(&run, Duration::from_secs(120));
    run
}

/// The latest checkpoint once it covers the run's end (the daemon signs after finishing).
fn latest_checkpoint(cluster: &Cluster, log: &LogVerifier, at_least: u64) -> Checkpoint {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let out = cluster.kiln_ok(&["audit", "checkpoint"]);
        let checkpoint = log
            .open(&out.stdout)
            .unwrap_or_else(|e| panic!("the checkpoint verifies: {e}\n{}", stdout(&out)));
        if checkpoint.size >= at_least {
            return checkpoint;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint of {at_least}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn database(cluster: &Cluster) -> Database {
    match &cluster.env.database_url {
        Some(url) => Database::Postgres(url.clone()),
        None => Database::Sqlite(cluster.env.data_dir().join("state.sqlite")),
    }
}

fn tamper_with(cluster: &Cluster, sql: &str) -> u64 {
    let db = database(cluster);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let state = State::connect(&db).await.unwrap();
            let n = tamper(&state, sql).await;
            state.close().await;
            n
        })
}

fn verify(cluster: &Cluster) -> (Option<i32>, String) {
    let out = cluster.kiln(&["audit", "verify"]);
    (out.status.code(), format!("{}{}", stdout(&out), text(&out)))
}

fn the_step_log_proves_a_run_and_names_every_rewrite_of_history(backend: Backend) {
    let mut cluster = Cluster::start_on(30, backend);
    cluster.worker("w1", 2);
    let first = run_to_end(&cluster);

    let vkey_out = cluster.kiln_ok(&["audit", "checkpoint", "--verifier-key"]);
    let vkey: NoteVerifier = stdout(&vkey_out).trim().parse().unwrap();
    assert!(vkey.name().starts_with("kiln/") && vkey.name().ends_with("/steps"));
    let log = LogVerifier::new(vkey.name(), vkey.clone());
    // run started + 3 step records + run finished.
    let after_first = latest_checkpoint(&cluster, &log, 5);
    assert_eq!(after_first.size, 5);

    // The artifact's provenance carries every step record it relies on, with a proof.
    let out_dir = cluster.env.path("artifacts");
    cluster.kiln_ok(&["artifacts", &first, "--out", out_dir.to_str().unwrap()]);
    let envelope: Value =
        serde_json::from_str(&fs::read_to_string(out_dir.join("x.intoto.jsonl")).unwrap()).unwrap();
    let statement: Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(envelope["payload"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    let records: std::collections::BTreeMap<String, String> = cluster
        .records(&first)
        .into_iter()
        .map(|r| (r.step.clone(), serde_json::to_string(&r).unwrap()))
        .collect();
    let logged: Vec<&Value> = statement["predicate"]["runDetails"]["byproducts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["uri"].as_str().unwrap().starts_with("kiln:steplog/"))
        .collect();
    assert_eq!(logged.len(), 3, "{statement:#}");
    for b in logged {
        let entry = b["annotations"]["entry"].as_str().unwrap();
        let proof =
            TlogProof::parse(b["annotations"]["tlogProof"].as_str().unwrap().as_bytes()).unwrap();
        let checkpoint = proof.verify(entry.as_bytes(), &log).unwrap();
        assert_eq!(b["uri"], format!("kiln:steplog/{}", proof.index), "{b:#}");
        assert_eq!(b["annotations"]["logIndex"], proof.index);
        assert!(checkpoint.size <= after_first.size);
        // The entry ties the provenance to the exact record the daemon stored.
        let entry: Value = serde_json::from_str(entry).unwrap();
        let step = entry["step"].as_str().unwrap();
        assert_eq!(
            entry["record"]["sha256"],
            Sha256Digest::of(records[step].as_bytes()).to_string()
        );
        assert_eq!(entry["run"], first);
    }

    // `kiln audit prove` hands out an offline proof.
    let entry_file = cluster.env.path("entry-1");
    let proved = cluster.kiln_ok(&[
        "audit",
        "prove",
        "1",
        "--entry-out",
        entry_file.to_str().unwrap(),
    ]);
    let proof = TlogProof::parse(&proved.stdout).unwrap();
    assert_eq!(proof.index, 1);
    proof.verify(&fs::read(&entry_file).unwrap(), &log).unwrap();

    // A second run grows the log; `kiln audit consistency` proves it only grew.
    let _second = run_to_end(&cluster);
    let after_second = latest_checkpoint(&cluster, &log, 10);
    let consistent = cluster.kiln(&[
        "audit",
        "consistency",
        &after_first.size.to_string(),
        &after_second.size.to_string(),
    ]);
    assert!(consistent.status.success(), "{}", text(&consistent));
    assert!(
        text(&consistent).contains("consistent"),
        "{}",
        text(&consistent)
    );

    let (code, report) = verify(&cluster);
    assert_eq!(code, Some(0), "{report}");
    assert!(report.contains("ok: 10 entries"), "{report}");

    // History rewritten in the database, one way after another; each is named.
    assert_eq!(
        tamper_with(
            &cluster,
            &format!(
                "UPDATE step_records SET record_json = replace(record_json, 'echo l', 'echo L') WHERE run_id = '{first}' AND step = 'left'"
            ),
        ),
        1
    );
    let (code, report) = verify(&cluster);
    assert_eq!(code, Some(1), "{report}");
    assert!(
        report.contains(&format!("step record {first}/left was modified")),
        "{report}"
    );

    assert_eq!(
        tamper_with(
            &cluster,
            &format!("DELETE FROM step_records WHERE run_id = '{first}' AND step = 'right'"),
        ),
        1
    );
    let (code, report) = verify(&cluster);
    assert_eq!(code, Some(1), "{report}");
    assert!(
        report.contains(&format!("step record {first}/right (log entry")),
        "{report}"
    );
    assert!(report.contains("was deleted from step_records"), "{report}");

    // Swap the second run's start with its end.
    tamper_with(&cluster, "UPDATE log_entries SET idx = -1 WHERE idx = 5");
    tamper_with(&cluster, "UPDATE log_entries SET idx = 5 WHERE idx = 9");
    tamper_with(&cluster, "UPDATE log_entries SET idx = 9 WHERE idx = -1");
    let (code, report) = verify(&cluster);
    assert_eq!(code, Some(1), "{report}");
    assert!(
        report.contains(&format!("checkpoint stored as size {}", after_second.size))
            && report.contains("entries hash to"),
        "{report}"
    );
    assert!(report.contains("entries below 5 match"), "{report}");

    // A checkpoint signed by another key under the log's name replaces the latest.
    let forger = NoteSigner::generate(vkey.name()).unwrap();
    let forged = Checkpoint {
        origin: vkey.name().to_owned(),
        ..after_second.clone()
    }
    .sign(&forger)
    .unwrap();
    tamper_with(
        &cluster,
        &format!(
            "UPDATE log_checkpoints SET note = '{}' WHERE size = {}",
            forged.replace('\'', "''"),
            after_second.size
        ),
    );
    let (code, report) = verify(&cluster);
    assert_eq!(code, Some(1), "{report}");
    assert!(
        report.contains("the latest checkpoint is rejected"),
        "{report}"
    );
}
