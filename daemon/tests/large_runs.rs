//! A run with more steps than one statement inserts (its rows go in in batches), on each
//! backend: every step, need and requirement arrives, in pipeline order.

use std::collections::BTreeMap;
use std::time::Duration;

use kiln_daemon::state::testing::{
    NO_LABELS, TestDatabase, register_worker, sample_record, submit_run,
};
use kiln_daemon::state::{Backend, NewStep, ReportOutcome, State};
use time::OffsetDateTime;

/// More than two batches' worth of steps.
const STEPS: usize = 601;

kiln_daemon::backend_tests! {
    #[tokio::test] a_long_chain_keeps_every_step_need_and_requirement;
}

async fn a_long_chain_keeps_every_step_need_and_requirement(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::new(backend, &dir.path().join("state.sqlite")).await;
    let state = State::connect(db.database()).await.unwrap();
    let now = OffsetDateTime::now_utc();
    let names: Vec<String> = (0..STEPS).map(|i| format!("s{i:03}")).collect();
    // Step i needs step i-1 and runs only where `pool=big`.
    let needs: Vec<[String; 1]> = names.iter().map(|n| [n.clone()]).collect();
    let big = BTreeMap::from([("pool".to_owned(), "big".to_owned())]);
    let steps = names
        .iter()
        .enumerate()
        .map(|(i, name)| NewStep {
            name,
            needs: if i == 0 { &[] } else { &needs[i - 1] },
            requires: &big,
        })
        .collect();
    submit_run(&state, "r1", steps, now).await;
    let detail = state.run_detail("r1").await.unwrap().unwrap();
    let stored: Vec<&str> = detail.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(stored, names, "every step, in pipeline order");

    register_worker(&state, "plain", &NO_LABELS, now).await;
    register_worker(&state, "big", &big, now).await;
    let ttl = Duration::from_secs(60);
    for (i, name) in names.iter().enumerate() {
        let lease = format!("L{i}");
        let claimed = state.claim_step("big", &lease, now, ttl).await.unwrap();
        let claimed = claimed.unwrap_or_else(|| panic!("{name} was not ready after {i} reports"));
        assert_eq!(claimed.step, *name, "the chain runs in order");
        let needed: Vec<&String> = claimed.needs.keys().collect();
        let expected: Vec<&String> = if i == 0 { vec![] } else { vec![&names[i - 1]] };
        assert_eq!(needed, expected, "the records {name} needs");
        // Nothing else is ready: the next step needs this one, and no step runs without `pool`.
        if i % 200 == 0 {
            let other = state.claim_step("big", "other", now, ttl).await.unwrap();
            assert!(
                other.is_none(),
                "{:?} is ready before {name} ends",
                other.map(|c| c.step)
            );
            let plain = state.claim_step("plain", "plain", now, ttl).await.unwrap();
            assert!(
                plain.is_none(),
                "a worker without the label got {:?}",
                plain.map(|c| c.step)
            );
        }
        let outcome = state
            .report_step(&lease, "big", &sample_record("r1", name), now)
            .await
            .unwrap();
        assert!(
            matches!(
                outcome,
                ReportOutcome::Accepted {
                    succeeded: true,
                    ..
                }
            ),
            "{outcome:?}"
        );
    }
    assert!(
        state
            .claim_step("big", "end", now, ttl)
            .await
            .unwrap()
            .is_none()
    );
}
