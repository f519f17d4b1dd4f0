//! Two controllers over one database, as two daemons sharing one PostgreSQL server would be:
//! however many claimers race on either, every step is leased exactly once.

use std::collections::BTreeMap;
use std::time::Duration;

use kiln_daemon::state::testing::{NO_LABELS, TestDatabase, register_worker, submit_run};
use kiln_daemon::state::{Backend, NewStep, State};
use time::OffsetDateTime;

const STEPS: usize = 200;
const CLAIMERS_PER_STATE: usize = 8;

kiln_daemon::backend_tests! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    two_controllers_never_lease_one_step_twice;
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    two_controllers_expire_each_lease_once;
}

/// A submitted run of `steps` independent steps, created through `state`.
async fn wide_run(state: &State, steps: usize, now: OffsetDateTime) -> String {
    let names: Vec<String> = (0..steps).map(|i| format!("s{i:03}")).collect();
    let run_id = uuid::Uuid::now_v7().to_string();
    let steps = names
        .iter()
        .map(|name| NewStep {
            name,
            needs: &[],
            requires: &NO_LABELS,
        })
        .collect();
    submit_run(state, &run_id, steps, now).await;
    run_id
}

async fn two_controllers_never_lease_one_step_twice(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::new(backend, &dir.path().join("state.sqlite")).await;
    let first = State::connect(db.database()).await.unwrap();
    let second = State::connect(db.database()).await.unwrap();
    let now = OffsetDateTime::now_utc();

    let run_id = wide_run(&first, STEPS, now).await;

    // Every claimer starts at once.
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(2 * CLAIMERS_PER_STATE));
    let mut claimers = tokio::task::JoinSet::new();
    for (s, state) in [first.clone(), second.clone()].into_iter().enumerate() {
        for c in 0..CLAIMERS_PER_STATE {
            let worker = format!("w{s}-{c}");
            register_worker(&state, &worker, &NO_LABELS, now).await;
            let state = state.clone();
            let start = start.clone();
            claimers.spawn(async move {
                start.wait().await;
                let mut leased = Vec::new();
                loop {
                    let lease = uuid::Uuid::new_v4().to_string();
                    let claimed = state
                        .claim_step(&worker, &lease, now, Duration::from_secs(60))
                        .await
                        .unwrap();
                    let Some(claimed) = claimed else { break };
                    leased.push((claimed.step, worker.clone()));
                }
                leased
            });
        }
    }
    let mut by_step: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut per_state = [0usize; 2];
    for leased in claimers.join_all().await {
        for (step, worker) in leased {
            per_state[usize::from(worker.starts_with("w1"))] += 1;
            by_step.entry(step).or_default().push(worker);
        }
    }
    let twice: Vec<_> = by_step.iter().filter(|(_, w)| w.len() > 1).collect();
    assert!(twice.is_empty(), "leased more than once: {twice:?}");
    assert_eq!(by_step.len(), STEPS, "every step leased");
    // SQLite's busy handler is unfair (a waiting connection sleeps and retries), so one
    // controller may take every step; PostgreSQL queues lock waiters, and SKIP LOCKED
    // lets both controllers lease at once.
    if backend == Backend::Postgres {
        assert!(
            per_state.iter().all(|&n| n > 0),
            "both controllers leased steps: {per_state:?}"
        );
    }

    let detail = second.run_detail(&run_id).await.unwrap().unwrap();
    assert_eq!(detail.steps.len(), STEPS);
    for step in &detail.steps {
        assert_eq!(step.state, "running", "{}", step.name);
        assert_eq!(
            step.attempts, 1,
            "{} leased {} times",
            step.name, step.attempts
        );
        assert_eq!(
            step.worker_id.as_deref(),
            Some(by_step[&step.name][0].as_str()),
            "{}: the database and the claimer agree on the holder",
            step.name
        );
    }
    first.close().await;
    second.close().await;
}

/// Both controllers' ticks expire the same leases at once: each lease is ended by exactly one
/// of them, so every step goes back to pending once and no attempt is counted twice.
async fn two_controllers_expire_each_lease_once(backend: Backend) {
    const LEASES: usize = 60;
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::new(backend, &dir.path().join("state.sqlite")).await;
    let first = State::connect(db.database()).await.unwrap();
    let second = State::connect(db.database()).await.unwrap();
    let now = OffsetDateTime::now_utc();
    let run_id = wide_run(&first, LEASES, now).await;
    register_worker(&first, "w", &NO_LABELS, now).await;
    for _ in 0..LEASES {
        let lease = uuid::Uuid::new_v4().to_string();
        first
            .claim_step("w", &lease, now, Duration::from_secs(1))
            .await
            .unwrap()
            .expect("a ready step");
    }

    let later = now + Duration::from_secs(5);
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(8));
    let mut tickers = tokio::task::JoinSet::new();
    for t in 0..8 {
        let state = if t % 2 == 0 {
            first.clone()
        } else {
            second.clone()
        };
        let start = start.clone();
        tickers.spawn(async move {
            start.wait().await;
            let mut ended = Vec::new();
            for _ in 0..5 {
                ended.extend(state.expire_leases(later, 3).await.unwrap());
            }
            ended
        });
    }
    let mut by_step: BTreeMap<String, usize> = BTreeMap::new();
    for ended in tickers.join_all().await {
        for lease in ended {
            assert!(!lease.gave_up, "{lease:?}");
            *by_step.entry(lease.step).or_default() += 1;
        }
    }
    assert_eq!(by_step.len(), LEASES, "every lease expired");
    assert!(
        by_step.values().all(|&n| n == 1),
        "expired more than once: {by_step:?}"
    );
    let detail = second.run_detail(&run_id).await.unwrap().unwrap();
    for step in &detail.steps {
        assert_eq!(step.state, "pending", "{}", step.name);
        assert_eq!(step.attempts, 1, "{}", step.name);
        assert_eq!(step.worker_id, None, "{}", step.name);
    }
    first.close().await;
    second.close().await;
}
