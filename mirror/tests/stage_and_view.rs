//! Staged blobs (hashed into the store, committed or dropped), the sweep of temporary files a
//! dead process left, and views: directories of hard links to stored blobs, re-checked against
//! their digests on every use.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime};

use kiln_core::Sha256Digest;
use kiln_mirror::{BlobStore, StoreError, ViewFile};

mod common;
use common::{blob_path, store};

fn tmp_entries(store: &BlobStore) -> Vec<String> {
    fs::read_dir(store.root().join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// Bytes that are not a multiple of the store's 1 MiB chunks, different in every chunk.
fn odd_sized_bytes() -> Vec<u8> {
    (0..(3 << 20) + 12_345u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// Rewrites a stored blob in place with other bytes of the same size, as a tamperer would.
fn tamper(path: &Path) {
    let mut bytes = fs::read(path).unwrap();
    bytes[0] ^= 0xff;
    let mode = fs::metadata(path).unwrap().permissions().mode();
    fs::set_permissions(path, fs::Permissions::from_mode(0o644)).unwrap();
    let mut file = fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all(&bytes).unwrap();
    drop(file);
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn file<'a>(path: &'a str, sha256: Sha256Digest, executable: bool) -> ViewFile<'a> {
    ViewFile {
        path,
        sha256,
        executable,
    }
}

#[test]
fn stage_file_hashes_every_byte_across_chunks() {
    let (dir, store) = store();
    let bytes = odd_sized_bytes();
    let src = dir.path().join("src.bin");
    fs::write(&src, &bytes).unwrap();

    let staged = store.stage_file(&src).unwrap();
    assert_eq!(staged.sha256(), Sha256Digest::of(&bytes));
    assert_eq!(staged.size(), bytes.len() as u64);
    assert_eq!(fs::read(staged.path()).unwrap(), bytes);
    let stored = staged.commit().unwrap();
    assert_eq!(store.read_verified(&stored.sha256).unwrap(), bytes);
    assert!(tmp_entries(&store).is_empty(), "{:?}", tmp_entries(&store));
}

#[test]
fn a_dropped_staged_blob_leaves_no_blob_and_no_temporary_file() {
    let (_dir, store) = store();
    let bytes = odd_sized_bytes();
    let staged = store.stage_reader(&bytes[..]).unwrap();
    let digest = staged.sha256();
    let temp = staged.path().to_path_buf();
    assert!(temp.starts_with(store.root().join("tmp")));
    // Refused, e.g. its signature did not verify.
    drop(staged);
    assert!(!store.contains(&digest));
    assert!(!temp.exists());
    assert!(tmp_entries(&store).is_empty(), "{:?}", tmp_entries(&store));
}

#[test]
fn committing_bytes_already_stored_keeps_the_stored_blob() {
    let (_dir, store) = store();
    let first = store.put_reader(&b"same bytes"[..]).unwrap();
    let inode = fs::metadata(blob_path(&store, &first.sha256))
        .unwrap()
        .ino();
    let staged = store.stage_reader(&b"same bytes"[..]).unwrap();
    let temp = staged.path().to_path_buf();
    assert_eq!(staged.commit().unwrap(), first);
    assert_eq!(
        fs::metadata(blob_path(&store, &first.sha256))
            .unwrap()
            .ino(),
        inode
    );
    assert!(!temp.exists());
}

/// Yields `good` bytes, then fails.
struct FailingAfter {
    good: usize,
}

impl Read for FailingAfter {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.good == 0 {
            return Err(io::Error::other("source went away"));
        }
        let n = buf.len().min(self.good);
        buf[..n].fill(7);
        self.good -= n;
        Ok(n)
    }
}

#[test]
fn a_source_failing_mid_stream_leaves_nothing_behind() {
    let (_dir, store) = store();
    let err = store
        .stage_reader(FailingAfter { good: 5 << 20 })
        .unwrap_err();
    assert!(matches!(err, StoreError::ReadStream { .. }), "{err:?}");
    assert!(tmp_entries(&store).is_empty(), "{:?}", tmp_entries(&store));
    assert_eq!(
        fs::read_dir(store.root().join("blobs/sha256"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn open_sweeps_old_unlocked_temporary_blobs_but_not_live_ones() {
    let (_dir, store) = store();
    let old = SystemTime::now() - Duration::from_secs(3600);
    // Left by a process that died mid-write: nobody holds its lock.
    let dead = store.root().join("tmp/blob-dead");
    File::create(&dead).unwrap().set_modified(old).unwrap();
    // Being written by a live process (this one), and just as old.
    let live = store.stage_reader(&b"in flight"[..]).unwrap();
    File::options()
        .write(true)
        .open(live.path())
        .unwrap()
        .set_modified(old)
        .unwrap();

    let _again = BlobStore::open(store.root()).unwrap();
    assert!(!dead.exists(), "a dead process's temporary blob was kept");
    assert!(live.path().exists(), "a live staged blob was swept");
    live.commit().unwrap();
}

#[test]
fn a_view_links_the_stored_blob_instead_of_copying_it() {
    let (_dir, store) = store();
    let data = store.put_reader(&b"data"[..]).unwrap().sha256;
    let tool = store.put_reader(&b"#!/bin/sh\ntrue\n"[..]).unwrap().sha256;
    let view = store
        .view(&[
            file("lib/data.txt", data, false),
            file("bin/tool", tool, true),
        ])
        .unwrap();

    let linked = fs::metadata(view.join("lib/data.txt")).unwrap();
    let blob = fs::metadata(blob_path(&store, &data)).unwrap();
    assert_eq!((linked.dev(), linked.ino()), (blob.dev(), blob.ino()));
    assert_eq!(linked.permissions().mode() & 0o7777, 0o444);
    let exe = fs::metadata(view.join("bin/tool")).unwrap();
    assert_eq!(exe.permissions().mode() & 0o7777, 0o555);
    assert_eq!(
        fs::read(view.join("bin/tool")).unwrap(),
        b"#!/bin/sh\ntrue\n"
    );
    assert_eq!(
        fs::metadata(&view).unwrap().permissions().mode() & 0o777,
        0o755
    );
    // The same files, in any order, give the same shared view.
    let again = store
        .view(&[
            file("bin/tool", tool, true),
            file("lib/data.txt", data, false),
        ])
        .unwrap();
    assert_eq!(again, view);
    assert!(tmp_entries(&store).is_empty(), "{:?}", tmp_entries(&store));
}

#[test]
fn a_view_refuses_paths_that_are_not_plain_or_overlap() {
    let (_dir, store) = store();
    let d = store.put_reader(&b"x"[..]).unwrap().sha256;
    for files in [
        vec![file("../escape", d, false)],
        vec![file("/abs", d, false)],
        vec![file("", d, false)],
        vec![file("./a", d, false)],
        vec![file("a", d, false), file("a/b", d, false)],
        vec![file("a", d, false), file("a", d, true)],
    ] {
        let err = store.view(&files).unwrap_err();
        assert!(
            matches!(err, StoreError::BadViewPath { .. }),
            "{files:?}: {err:?}"
        );
    }
    assert_eq!(fs::read_dir(store.root().join("views")).unwrap().count(), 0);
}

/// Waits until a blob's ctime is old enough for the store to remember its fingerprint (writes
/// within the last 2 s are treated as racy and always re-hashed).
fn wait_out_racy_window() {
    std::thread::sleep(Duration::from_millis(2100));
}

#[test]
fn a_blob_changed_after_it_was_verified_is_refused_at_the_next_view() {
    let (_dir, store) = store();
    let data = odd_sized_bytes();
    let d = store.put_reader(&data[..]).unwrap().sha256;
    // Linking the blob into a view changes its ctime: let that age too.
    store.view(&[file("data.bin", d, false)]).unwrap();
    wait_out_racy_window();
    let view = store.view(&[file("data.bin", d, false)]).unwrap();
    let fingerprint = store.root().join("verified").join(d.to_string());
    assert!(
        fingerprint.is_file(),
        "a verified blob's fingerprint was not remembered"
    );

    tamper(&blob_path(&store, &d));
    match store.view(&[file("data.bin", d, false)]) {
        Err(err @ StoreError::Corrupt { digest, actual }) => {
            assert_eq!(digest, d);
            assert_ne!(actual, d);
            let message = err.to_string();
            assert!(message.contains(&d.to_string()), "{message}");
            assert!(message.contains("does not match"), "{message}");
        }
        other => panic!("a tampered blob was accepted: {other:?}"),
    }
    assert!(!view.exists(), "a view of a tampered blob was kept");
    assert!(!fingerprint.exists());
}

#[test]
fn a_view_file_replaced_by_another_file_is_refused() {
    let (_dir, store) = store();
    let d = store.put_reader(&b"genuine"[..]).unwrap().sha256;
    store.view(&[file("f", d, false)]).unwrap();
    wait_out_racy_window();
    let view = store.view(&[file("f", d, false)]).unwrap();
    // A new inode with the same size: not the one the store verified.
    fs::remove_file(view.join("f")).unwrap();
    fs::write(view.join("f"), b"forgery").unwrap();
    assert!(matches!(
        store.view(&[file("f", d, false)]),
        Err(StoreError::Corrupt { .. })
    ));
}

#[test]
fn reimporting_a_tampered_blob_heals_its_views() {
    let (_dir, store) = store();
    let d = store.put_reader(&b"tool bytes"[..]).unwrap().sha256;
    store.view(&[file("tool", d, true)]).unwrap();
    tamper(&blob_path(&store, &d));
    // The executable copy was made from the genuine blob; the blob itself is refused.
    assert!(matches!(
        store.verify_fast(&d),
        Err(StoreError::Corrupt { .. })
    ));
    assert!(matches!(
        store.view(&[file("data", d, false)]),
        Err(StoreError::Corrupt { .. })
    ));

    assert_eq!(store.put_reader(&b"tool bytes"[..]).unwrap().sha256, d);
    let view = store.view(&[file("data", d, false)]).unwrap();
    assert_eq!(fs::read(view.join("data")).unwrap(), b"tool bytes");
}

#[test]
fn a_fingerprint_is_not_remembered_for_a_blob_changed_just_now() {
    let (_dir, store) = store();
    let d = store.put_reader(&b"fresh"[..]).unwrap().sha256;
    // Linking it into the view changed its ctime just now: a write in the same clock tick
    // could hide behind that ctime, so this use hashes whole and remembers nothing.
    store.view(&[file("f", d, false)]).unwrap();
    assert!(!store.root().join("verified").join(d.to_string()).exists());
}
