//! Live step logs in the state store, on each backend: chunks are bytes (BLOB / BYTEA), a
//! retried chunk is stored once, a gap is refused, and readers get the log from any offset.

use std::time::Duration;

use kiln_daemon::state::testing::{
    NO_LABELS, TestDatabase, live_log_chunks, register_worker, sample_record, submit_run,
};
use kiln_daemon::state::{
    Backend, LiveAppend, LiveLog, NewStep, ReportOutcome, State, StepLogSource,
};
use time::OffsetDateTime;

kiln_daemon::backend_tests! {
    #[tokio::test] live_log_chunks_append_once_and_read_from_any_offset;
}

async fn live_log_chunks_append_once_and_read_from_any_offset(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::new(backend, &dir.path().join("state.sqlite")).await;
    let state = State::connect(db.database()).await.unwrap();
    let now = OffsetDateTime::now_utc();
    submit_run(
        &state,
        "r1",
        vec![NewStep {
            name: "s",
            needs: &[],
            requires: &NO_LABELS,
        }],
        now,
    )
    .await;
    register_worker(&state, "w", &NO_LABELS, now).await;
    assert_eq!(
        state.step_log_source("r1", "s", 0).await.unwrap(),
        Some(StepLogSource::NotStarted)
    );
    state
        .claim_step("w", "L1", now, Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();

    // Bytes that are not UTF-8 survive the round trip.
    let append = |offset: u64, data: &'static [u8]| {
        let state = state.clone();
        async move {
            state
                .append_live_log("L1", "w", offset, data, now, 1 << 20)
                .await
                .unwrap()
        }
    };
    assert_eq!(
        append(0, b"hello \xff").await,
        LiveAppend::Stored { len: 7 }
    );
    assert_eq!(
        append(0, b"hello \xff").await,
        LiveAppend::Stored { len: 7 },
        "a retried chunk"
    );
    assert_eq!(
        append(4, b"o \xffworld").await,
        LiveAppend::Stored { len: 12 },
        "an overlapping chunk keeps only what is new"
    );
    assert_eq!(append(20, b"late").await, LiveAppend::Gap { len: 12 });
    assert_eq!(
        state
            .append_live_log("L1", "other", 12, b"x", now, 1 << 20)
            .await
            .unwrap(),
        LiveAppend::NotCurrent
    );
    assert_eq!(
        state
            .append_live_log("L1", "w", 12, b"too much", now, 16)
            .await
            .unwrap(),
        LiveAppend::TooLarge { cap: 16 }
    );

    for from in [0u64, 3, 7, 12] {
        let whole: &[u8] = b"hello \xffworld";
        assert_eq!(
            state.step_log_source("r1", "s", from).await.unwrap(),
            Some(StepLogSource::Live(LiveLog {
                bytes: whole[from as usize..].to_vec(),
                from,
            })),
            "from {from}"
        );
    }
    // Accepting the step's record drops the live copy: its log blob is the log now.
    let outcome = state
        .report_step("L1", "w", &sample_record("r1", "s"), now)
        .await
        .unwrap();
    assert!(
        matches!(outcome, ReportOutcome::Accepted { .. }),
        "{outcome:?}"
    );
    assert_eq!(live_log_chunks(&state, "L1").await, 0);
    state.close().await;
}
