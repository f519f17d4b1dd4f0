//! Revocations and advisories in the state store, on each backend.

use kiln_core::{BlobKind, MirrorRef, Sha256Digest};
use kiln_daemon::state::testing::TestDatabase;
use kiln_daemon::state::{Advisory, Backend, MirrorEntry, State};
use time::OffsetDateTime;

kiln_daemon::backend_tests! {
    #[tokio::test] a_revocation_is_kept_as_first_made;
    #[tokio::test] advisories_are_listed_per_entry_and_a_reimport_replaces_them;
}

async fn state(backend: Backend) -> (State, TestDatabase, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::new(backend, &dir.path().join("state.sqlite")).await;
    let state = State::connect(db.database()).await.unwrap();
    (state, db, dir)
}

fn entry(name: &str) -> MirrorEntry {
    MirrorEntry {
        reference: name.parse().unwrap(),
        sha256: Sha256Digest::of(name.as_bytes()),
        kind: BlobKind::Tree,
        size: 1,
        added_at: OffsetDateTime::now_utc(),
    }
}

async fn a_revocation_is_kept_as_first_made(backend: Backend) {
    let (state, _db, _dir) = state(backend).await;
    let lib: MirrorRef = "lib@1".parse().unwrap();
    state.add_mirror_entry(&entry("lib@1")).await.unwrap();
    assert!(state.revocation(&lib).await.unwrap().is_none());
    let first = state
        .revoke(&lib, "bad", OffsetDateTime::now_utc())
        .await
        .unwrap();
    let again = state
        .revoke(&lib, "worse", OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert_eq!(first, again);
    assert_eq!(again.reason, "bad");
    // Revoking never deletes the entry.
    assert!(state.mirror_entry(&lib).await.unwrap().is_some());
    state.close().await;
}

async fn advisories_are_listed_per_entry_and_a_reimport_replaces_them(backend: Backend) {
    let (state, _db, _dir) = state(backend).await;
    let zlib: MirrorRef = "zlib@1.2.13".parse().unwrap();
    let advisory = |id: &str, summary: &str| Advisory {
        id: id.into(),
        reference: zlib.clone(),
        summary: summary.into(),
        modified: "2026-11-01T00:00:00Z".into(),
    };
    let now = OffsetDateTime::now_utc();
    state
        .add_advisory(&advisory("B-2", "two"), now)
        .await
        .unwrap();
    state
        .add_advisory(&advisory("A-1", "one"), now)
        .await
        .unwrap();
    state
        .add_advisory(&advisory("A-1", "one, revised"), now)
        .await
        .unwrap();
    let listed = state.advisories(&zlib).await.unwrap();
    assert_eq!(
        listed,
        [advisory("A-1", "one, revised"), advisory("B-2", "two")]
    );
    let other: MirrorRef = "zlib@1.3".parse().unwrap();
    assert!(state.advisories(&other).await.unwrap().is_empty());
    assert!(state.published_artifacts().await.unwrap().is_empty());
    state.close().await;
}
