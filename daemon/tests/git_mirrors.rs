//! Git mirrors in the state store, on each backend.

use kiln_daemon::state::testing::TestDatabase;
use kiln_daemon::state::{Backend, GitMirrorBinding, State};
use time::OffsetDateTime;

kiln_daemon::backend_tests! {
    #[tokio::test] a_git_mirror_name_stays_bound_to_its_first_origin;
}

async fn a_git_mirror_name_stays_bound_to_its_first_origin(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::new(backend, &dir.path().join("state.sqlite")).await;
    let state = State::connect(db.database()).await.unwrap();
    let now = OffsetDateTime::now_utc();

    let added = state
        .bind_git_mirror("app", "/repos/app", None, now)
        .await
        .unwrap();
    let GitMirrorBinding::Added(first) = added else {
        panic!("{added:?}")
    };
    assert_eq!(first.allowed_signers, None);

    // The same origin again: an update, which may set the allowed signers.
    let signers = "alice@example.com ssh-ed25519 AAAA";
    let updated = state
        .bind_git_mirror("app", "/repos/app", Some(signers), now)
        .await
        .unwrap();
    let GitMirrorBinding::Updated(second) = updated else {
        panic!("{updated:?}")
    };
    assert_eq!(second.added_at, first.added_at);
    assert_eq!(second.allowed_signers.as_deref(), Some(signers));
    // Fetched again without signers: the policy stays.
    let again = state
        .bind_git_mirror("app", "/repos/app", None, now)
        .await
        .unwrap();
    assert!(matches!(again, GitMirrorBinding::Updated(ref m) if *m == second));

    // Another origin: refused, and nothing changes.
    let other = state
        .bind_git_mirror("app", "/elsewhere", None, now)
        .await
        .unwrap();
    assert!(matches!(other, GitMirrorBinding::OtherOrigin(ref m) if m.origin == "/repos/app"));
    let kept = state.git_mirror("app").await.unwrap().unwrap();
    assert_eq!(kept, second);
    assert_eq!(state.git_mirrors().await.unwrap(), [second]);
    assert!(state.git_mirror("nope").await.unwrap().is_none());
    state.close().await;
}
