//! Integration tests for the blob store: round trips, atomicity, corruption, determinism of
//! archives, hostile archives and concurrent extraction.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::{Duration, SystemTime};

use kiln_core::Sha256Digest;
use kiln_mirror::{BlobStore, HostileEntry, ROOTFS_MOUNT_POINTS, StoreError, archive_dir};

mod common;
use common::{blob_path, store};
use tar::{EntryType, Header};

fn tmp_is_empty(store: &BlobStore) -> bool {
    fs::read_dir(store.root().join("tmp"))
        .unwrap()
        .next()
        .is_none()
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

/// A small tree with a subdirectory, an executable, a symlink and an empty directory.
fn sample_tree(root: &Path) {
    fs::create_dir_all(root.join("src/empty")).unwrap();
    fs::write(root.join("src/main.c"), "int main(void) { return 0; }\n").unwrap();
    fs::write(root.join("build.sh"), "#!/bin/sh\ncc src/main.c\n").unwrap();
    fs::set_permissions(root.join("build.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    symlink("src/main.c", root.join("main-link")).unwrap();
}

/// One raw tar entry, written without the tar crate's path checks so tests can build hostile
/// archives.
struct Raw<'a> {
    name: &'a [u8],
    kind: EntryType,
    data: &'a [u8],
    link: &'a [u8],
    mode: u32,
}

impl<'a> Raw<'a> {
    fn file(name: &'a str, data: &'a str) -> Self {
        Raw {
            name: name.as_bytes(),
            kind: EntryType::Regular,
            data: data.as_bytes(),
            link: b"",
            mode: 0o644,
        }
    }

    fn dir(name: &'a str) -> Self {
        Raw {
            kind: EntryType::Directory,
            mode: 0o755,
            ..Raw::file(name, "")
        }
    }

    fn link(kind: EntryType, name: &'a str, target: &'a str) -> Self {
        Raw {
            kind,
            link: target.as_bytes(),
            mode: 0o777,
            ..Raw::file(name, "")
        }
    }
}

fn raw_tar(entries: &[Raw<'_>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for e in entries {
        let mut header = Header::new_gnu();
        header.as_old_mut().name[..e.name.len()].copy_from_slice(e.name);
        header.as_old_mut().linkname[..e.link.len()].copy_from_slice(e.link);
        header.set_entry_type(e.kind);
        header.set_mode(e.mode);
        header.set_size(e.data.len() as u64);
        header.set_mtime(0);
        if matches!(e.kind, EntryType::Char | EntryType::Block) {
            header.set_device_major(1).unwrap();
            header.set_device_minor(3).unwrap();
        }
        header.set_cksum();
        builder.append(&header, e.data).unwrap();
    }
    builder.into_inner().unwrap()
}

#[test]
fn put_then_every_read_path_returns_the_same_bytes() {
    let (dir, store) = store();
    let content = b"hello, kiln\n".repeat(10_000);
    let stored = store.put_reader(&content[..]).unwrap();
    assert_eq!(stored.sha256, Sha256Digest::of(&content));
    assert_eq!(stored.size, content.len() as u64);
    assert!(store.contains(&stored.sha256));
    assert!(!store.contains(&Sha256Digest::of(b"something else")));
    assert_eq!(mode(&blob_path(&store, &stored.sha256)), 0o444);

    store.verify(&stored.sha256).unwrap();
    assert_eq!(store.read_verified(&stored.sha256).unwrap(), content);

    let plain = dir.path().join("plain");
    store.copy_out(&stored.sha256, &plain, false).unwrap();
    assert_eq!(fs::read(&plain).unwrap(), content);
    assert_eq!(mode(&plain), 0o644);
    let exe = dir.path().join("exe");
    store.copy_out(&stored.sha256, &exe, true).unwrap();
    assert_eq!(mode(&exe), 0o755);

    let source = dir.path().join("source");
    fs::write(&source, &content).unwrap();
    assert_eq!(store.put_file(&source).unwrap(), stored);
    assert!(tmp_is_empty(&store));
}

#[test]
fn put_is_idempotent_and_does_not_rewrite_the_blob() {
    let (_dir, store) = store();
    let first = store.put_reader(&b"same bytes"[..]).unwrap();
    let path = blob_path(&store, &first.sha256);
    let before = fs::metadata(&path).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let second = store.put_reader(&b"same bytes"[..]).unwrap();
    let after = fs::metadata(&path).unwrap();
    assert_eq!(first, second);
    assert_eq!(before.ino(), after.ino(), "the blob was replaced");
    assert_eq!(before.mtime_nsec(), after.mtime_nsec());
    assert!(tmp_is_empty(&store));
}

#[test]
fn putting_a_small_blob_that_is_stored_writes_no_temporary_file() {
    let (_dir, store) = store();
    let first = store.put_reader(&b"a short step log"[..]).unwrap();
    let tmp = store.root().join("tmp");
    let before = fs::metadata(&tmp).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(store.put_reader(&b"a short step log"[..]).unwrap(), first);
    let after = fs::metadata(&tmp).unwrap();
    // Making and removing a temporary file there would have changed the directory.
    assert_eq!(
        (before.mtime(), before.mtime_nsec()),
        (after.mtime(), after.mtime_nsec()),
        "a temporary file came and went"
    );
}

#[test]
fn putting_a_small_blob_again_repairs_a_corrupted_copy() {
    let (_dir, store) = store();
    let content = vec![7u8; 1000];
    let d = store.put_reader(&content[..]).unwrap().sha256;
    corrupt(&store, &d);
    assert_corrupt(store.verify(&d), &d);
    assert_eq!(store.put_reader(&content[..]).unwrap().sha256, d);
    store.verify(&d).unwrap();
    assert!(tmp_is_empty(&store));
}

#[test]
fn blobs_around_the_in_memory_size_are_stored_whole() {
    let (_dir, store) = store();
    for len in [0, 1, 64 * 1024 - 1, 64 * 1024, 64 * 1024 + 1, 3 * 64 * 1024] {
        let content: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let stored = store.put_reader(&content[..]).unwrap();
        assert_eq!(stored.sha256, Sha256Digest::of(&content), "{len} bytes");
        assert_eq!(stored.size, len as u64);
        assert_eq!(store.read_verified(&stored.sha256).unwrap(), content);
        // Again, now that it is stored.
        assert_eq!(
            store.put_reader(&content[..]).unwrap(),
            stored,
            "{len} bytes"
        );
    }
    assert!(tmp_is_empty(&store));
}

#[test]
fn missing_blob_is_reported_as_missing() {
    let (dir, store) = store();
    let digest = Sha256Digest::of(b"never stored");
    assert!(matches!(
        store.verify(&digest),
        Err(StoreError::Missing { .. })
    ));
    assert!(matches!(
        store.tree(&digest),
        Err(StoreError::Missing { .. })
    ));
    let dest = dir.path().join("out");
    assert!(matches!(
        store.copy_out(&digest, &dest, false),
        Err(StoreError::Missing { .. })
    ));
    assert!(!dest.exists());
}

/// Flips one byte of a stored blob in place, as disk corruption would.
fn corrupt(store: &BlobStore, digest: &Sha256Digest) {
    let path = blob_path(store, digest);
    let mut bytes = fs::read(&path).unwrap();
    bytes[100] ^= 0x01;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&path, &bytes).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o444)).unwrap();
}

fn assert_corrupt(result: Result<impl std::fmt::Debug, StoreError>, digest: &Sha256Digest) {
    match result {
        Err(StoreError::Corrupt {
            digest: reported,
            actual,
        }) => {
            assert_eq!(reported, *digest);
            assert_ne!(actual, *digest);
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn corrupted_blob_is_refused_by_every_read_path() {
    let (dir, store) = store();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    sample_tree(&src);
    let stored = store.put_dir(&src).unwrap();
    let d = stored.sha256;
    corrupt(&store, &d);

    assert_corrupt(store.verify(&d), &d);
    assert_corrupt(store.read_verified(&d), &d);
    let dest = dir.path().join("copied");
    assert_corrupt(store.copy_out(&d, &dest, false), &d);
    assert!(!dest.exists(), "copy_out left a corrupt copy behind");
    assert_corrupt(store.tree(&d), &d);
    assert_corrupt(store.rootfs(&d), &d);
    assert!(!store.root().join("trees").join(d.to_string()).exists());
    assert!(!store.root().join("rootfs").join(d.to_string()).exists());
    assert!(tmp_is_empty(&store));

    // Importing the same content again repairs the blob.
    assert_eq!(store.put_dir(&src).unwrap(), stored);
    store.verify(&d).unwrap();
    store.tree(&d).unwrap();
}

#[test]
fn archive_dir_digest_ignores_mtimes_and_creation_order() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    fs::create_dir(&a).unwrap();
    sample_tree(&a);
    let digest_of = |path: &Path| {
        let mut out = Vec::new();
        archive_dir(path, &mut out).unwrap();
        Sha256Digest::of(&out)
    };
    let first = digest_of(&a);
    assert_eq!(digest_of(&a), first);

    // Touch every file's mtime.
    let later = SystemTime::now() + Duration::from_secs(3600);
    for name in ["src/main.c", "build.sh", "src", "src/empty"] {
        let file = fs::File::open(a.join(name)).unwrap();
        file.set_modified(later).unwrap();
    }
    assert_eq!(digest_of(&a), first);

    // The same tree built in another order.
    let b = dir.path().join("b");
    fs::create_dir(&b).unwrap();
    symlink("src/main.c", b.join("main-link")).unwrap();
    fs::write(b.join("build.sh"), "#!/bin/sh\ncc src/main.c\n").unwrap();
    fs::set_permissions(b.join("build.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::create_dir_all(b.join("src/empty")).unwrap();
    fs::write(b.join("src/main.c"), "int main(void) { return 0; }\n").unwrap();
    assert_eq!(digest_of(&b), first);

    // Content and modes do count.
    fs::set_permissions(b.join("build.sh"), fs::Permissions::from_mode(0o644)).unwrap();
    assert_ne!(digest_of(&b), first);
    fs::set_permissions(b.join("build.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(b.join("src/main.c"), "int main(void) { return 1; }\n").unwrap();
    assert_ne!(digest_of(&b), first);
}

#[test]
fn archive_dir_entries_are_sorted_and_anonymous() {
    let dir = tempfile::tempdir().unwrap();
    sample_tree(dir.path());
    let mut out = Vec::new();
    archive_dir(dir.path(), &mut out).unwrap();
    let mut archive = tar::Archive::new(&out[..]);
    let mut names = Vec::new();
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        let h = entry.header();
        assert_eq!(h.mtime().unwrap(), 0);
        assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (0, 0));
        assert_eq!(h.username_bytes().unwrap_or_default(), b"");
        assert_eq!(h.groupname_bytes().unwrap_or_default(), b"");
        names.push(entry.path().unwrap().to_string_lossy().into_owned());
    }
    assert_eq!(
        names,
        ["build.sh", "main-link", "src", "src/empty", "src/main.c"]
    );
}

#[test]
fn archive_dir_skips_fifos() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("file"), "x").unwrap();
    let status = std::process::Command::new("mkfifo")
        .arg(dir.path().join("fifo"))
        .status()
        .unwrap();
    assert!(status.success());
    let mut out = Vec::new();
    archive_dir(dir.path(), &mut out).unwrap();
    let mut archive = tar::Archive::new(&out[..]);
    let names: Vec<_> = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().into_owned())
        .collect();
    assert_eq!(names, [PathBuf::from("file")]);
}

#[test]
fn tree_extracts_once_and_preserves_content_modes_and_symlinks() {
    let (dir, store) = store();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    sample_tree(&src);
    let d = store.put_dir(&src).unwrap().sha256;

    let tree = store.tree(&d).unwrap();
    assert_eq!(tree, store.root().join("trees").join(d.to_string()));
    assert_eq!(
        fs::read_to_string(tree.join("src/main.c")).unwrap(),
        "int main(void) { return 0; }\n"
    );
    assert_eq!(mode(&tree.join("build.sh")), 0o755);
    assert_eq!(mode(&tree.join("src/main.c")), 0o644);
    assert_eq!(
        fs::read_link(tree.join("main-link")).unwrap(),
        Path::new("src/main.c")
    );
    assert!(tree.join("src/empty").is_dir());

    // A second call reuses the tree rather than extracting again.
    let inode = fs::metadata(&tree).unwrap().ino();
    assert_eq!(store.tree(&d).unwrap(), tree);
    assert_eq!(fs::metadata(&tree).unwrap().ino(), inode);

    // Re-archiving the extracted tree gives the same digest.
    assert_eq!(store.put_dir(&tree).unwrap().sha256, d);
    assert!(tmp_is_empty(&store));
}

/// Stores a raw archive, extracts it, and returns the refusal reason.
fn hostile_reason(store: &BlobStore, entries: &[Raw<'_>]) -> HostileEntry {
    let d = store.put_reader(&raw_tar(entries)[..]).unwrap().sha256;
    let result = store.tree(&d);
    assert!(
        !store.root().join("trees").join(d.to_string()).exists(),
        "a refused tree appeared under its name"
    );
    assert!(tmp_is_empty(store), "a refused tree was left in tmp/");
    match result {
        Err(StoreError::Hostile { reason, .. }) => reason,
        other => panic!("expected a hostile entry, got {other:?}"),
    }
}

#[test]
fn tree_refuses_absolute_paths() {
    let (dir, store) = store();
    let victim = dir.path().join("victim");
    let name = victim.to_str().unwrap();
    let reason = hostile_reason(&store, &[Raw::file(name, "pwned")]);
    assert_eq!(reason, HostileEntry::AbsolutePath);
    assert!(!victim.exists());
}

#[test]
fn tree_refuses_parent_dir_components() {
    let (_dir, store) = store();
    for name in ["../x", "a/../../x", "a/b/../../../x"] {
        let reason = hostile_reason(&store, &[Raw::dir("a"), Raw::file(name, "pwned")]);
        assert_eq!(reason, HostileEntry::ParentDir, "{name}");
    }
    assert!(!store.root().join("x").exists());
    assert!(!store.root().join("tmp/x").exists());
}

#[test]
fn tree_refuses_writing_through_a_symlink() {
    let (dir, store) = store();
    let outside = dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let reason = hostile_reason(
        &store,
        &[
            Raw::link(EntryType::Symlink, "escape", outside.to_str().unwrap()),
            Raw::file("escape/pwned", "pwned"),
        ],
    );
    assert_eq!(reason, HostileEntry::ThroughSymlink);
    assert!(!outside.join("pwned").exists());

    // Even a symlink that stays inside the tree is not written through.
    let reason = hostile_reason(
        &store,
        &[
            Raw::dir("real"),
            Raw::link(EntryType::Symlink, "alias", "real"),
            Raw::file("alias/file", "x"),
        ],
    );
    assert_eq!(reason, HostileEntry::ThroughSymlink);

    // Nor is a symlink replaced by a later file of the same name (which would write through it
    // if followed).
    let reason = hostile_reason(
        &store,
        &[
            Raw::link(EntryType::Symlink, "f", outside.join("f").to_str().unwrap()),
            Raw::file("f", "pwned"),
        ],
    );
    assert_eq!(reason, HostileEntry::Duplicate);
    assert!(!outside.join("f").exists());
}

#[test]
fn tree_refuses_device_nodes_and_fifos() {
    let (_dir, store) = store();
    for kind in [EntryType::Char, EntryType::Block, EntryType::Fifo] {
        let reason = hostile_reason(
            &store,
            &[Raw {
                kind,
                mode: 0o666,
                ..Raw::file("dev-null", "")
            }],
        );
        assert_eq!(reason, HostileEntry::SpecialFile, "{kind:?}");
    }
}

#[test]
fn tree_refuses_hard_links_to_anything_but_earlier_files() {
    let (_dir, store) = store();
    // To a path outside the tree, to a file not extracted yet, and to a directory.
    for entries in [
        vec![Raw::link(EntryType::Link, "passwd", "/etc/passwd")],
        vec![
            Raw::link(EntryType::Link, "early", "later"),
            Raw::file("later", "x"),
        ],
        vec![Raw::dir("d"), Raw::link(EntryType::Link, "dlink", "d")],
    ] {
        let reason = hostile_reason(&store, &entries);
        assert!(
            matches!(
                reason,
                HostileEntry::BadHardLink | HostileEntry::AbsolutePath
            ),
            "{reason:?}"
        );
    }

    // A hard link to an earlier file is fine.
    let d = store
        .put_reader(&raw_tar(&[Raw::file("a", "same"), Raw::link(EntryType::Link, "b", "a")])[..])
        .unwrap()
        .sha256;
    let tree = store.tree(&d).unwrap();
    assert_eq!(fs::read_to_string(tree.join("b")).unwrap(), "same");
}

#[test]
fn tree_strips_setuid_and_setgid_bits() {
    let (_dir, store) = store();
    let d = store
        .put_reader(
            &raw_tar(&[
                Raw {
                    mode: 0o6755,
                    ..Raw::file("su", "x")
                },
                Raw {
                    mode: 0o3775,
                    ..Raw::dir("shared")
                },
            ])[..],
        )
        .unwrap()
        .sha256;
    let tree = store.tree(&d).unwrap();
    assert_eq!(mode(&tree.join("su")), 0o755);
    assert_eq!(mode(&tree.join("shared")), 0o1775);
}

#[test]
fn tree_refuses_a_truncated_archive() {
    let (_dir, store) = store();
    let mut tar = raw_tar(&[Raw::file("big", &"x".repeat(4096))]);
    tar.truncate(1024);
    let d = store.put_reader(&tar[..]).unwrap().sha256;
    assert!(store.tree(&d).is_err());
    assert!(!store.root().join("trees").join(d.to_string()).exists());
}

#[test]
fn rootfs_creates_empty_mount_points_and_tree_does_not() {
    let (dir, store) = store();
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("usr/bin")).unwrap();
    fs::create_dir(src.join("tmp")).unwrap(); // an existing, empty mount point is kept
    fs::write(src.join("usr/bin/tool"), "#!/bin/sh\n").unwrap();
    let d = store.put_dir(&src).unwrap().sha256;

    let rootfs = store.rootfs(&d).unwrap();
    assert_eq!(rootfs, store.root().join("rootfs").join(d.to_string()));
    for name in ROOTFS_MOUNT_POINTS {
        let path = rootfs.join(name);
        assert!(path.is_dir() && !path.is_symlink(), "{name} missing");
        assert!(
            fs::read_dir(&path).unwrap().next().is_none(),
            "{name} not empty"
        );
    }
    assert!(rootfs.join("usr/bin/tool").is_file());
    assert_eq!(mode(&rootfs), 0o755);

    let tree = store.tree(&d).unwrap();
    assert!(!tree.join("proc").exists());
}

#[test]
fn rootfs_refuses_a_symlinked_or_non_empty_mount_point() {
    let (_dir, store) = store();
    for entries in [
        vec![Raw::link(EntryType::Symlink, "proc", "/")],
        vec![Raw::dir("tmp"), Raw::file("tmp/left-over", "x")],
        vec![Raw::file("work", "not a dir")],
    ] {
        let d = store.put_reader(&raw_tar(&entries)[..]).unwrap().sha256;
        let result = store.rootfs(&d);
        assert!(
            matches!(result, Err(StoreError::MountPoint { .. })),
            "{result:?}"
        );
        assert!(!store.root().join("rootfs").join(d.to_string()).exists());
    }
}

#[test]
fn concurrent_tree_calls_on_one_digest_agree() {
    let (dir, store) = store();
    let src = dir.path().join("src");
    for i in 0..200 {
        let sub = src.join(format!("d{}", i % 10));
        fs::create_dir_all(&sub).unwrap();
        fs::write(sub.join(format!("f{i}")), format!("file {i}\n")).unwrap();
    }
    let d = store.put_dir(&src).unwrap().sha256;
    let store = Arc::new(store);
    let threads = 8;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let store = Arc::clone(&store);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                store.tree(&d).unwrap()
            })
        })
        .collect();
    let paths: Vec<PathBuf> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(paths.iter().all(|p| *p == paths[0]));
    assert_eq!(
        fs::read_to_string(paths[0].join("d7/f197")).unwrap(),
        "file 197\n"
    );
    assert_eq!(store.put_dir(&paths[0]).unwrap().sha256, d);
    assert!(tmp_is_empty(&store));
}

#[test]
fn copy_out_does_not_follow_a_planted_symlink() {
    let (dir, store) = store();
    let d = store.put_reader(&b"payload"[..]).unwrap().sha256;
    let victim = dir.path().join("victim");
    fs::write(&victim, "original").unwrap();
    let dest = dir.path().join("dest");
    symlink(&victim, &dest).unwrap();
    assert!(matches!(
        store.copy_out(&d, &dest, false),
        Err(StoreError::CopyOut { .. })
    ));
    assert_eq!(fs::read_to_string(&victim).unwrap(), "original");
}

#[test]
fn put_reader_reports_a_failing_source() {
    struct Failing;
    impl std::io::Read for Failing {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("disk on fire"))
        }
    }
    let (_dir, store) = store();
    assert!(matches!(
        store.put_reader(Failing),
        Err(StoreError::ReadStream { .. })
    ));
    assert!(tmp_is_empty(&store));
}

#[test]
fn errors_name_the_digest_and_keep_their_source() {
    let (dir, store) = store();
    let d = store.put_reader(&b"payload"[..]).unwrap().sha256;
    let dest = dir.path().join("exists");
    fs::File::create(&dest).unwrap().write_all(b"x").unwrap();
    let err = store.copy_out(&d, &dest, false).unwrap_err();
    assert!(err.to_string().contains(&d.to_string()), "{err}");
    assert!(std::error::Error::source(&err).is_some());
}
