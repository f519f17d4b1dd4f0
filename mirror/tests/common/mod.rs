//! What the store's integration tests share: a fresh store, and where it keeps a blob.

use std::path::PathBuf;

use kiln_core::Sha256Digest;
use kiln_mirror::BlobStore;

/// A fresh store in a temporary directory (kept alive by the returned guard).
pub fn store() -> (tempfile::TempDir, BlobStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(&dir.path().join("store")).unwrap();
    (dir, store)
}

/// The file the store keeps `digest`'s blob in (the layout under test, spelled out).
pub fn blob_path(store: &BlobStore, digest: &Sha256Digest) -> PathBuf {
    let hex = digest.to_string();
    store.root().join("blobs/sha256").join(&hex[..2]).join(&hex)
}
