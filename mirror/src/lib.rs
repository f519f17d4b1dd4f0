//! kiln's content-addressed store: blobs kept and served by SHA-256 digest, deterministic tar
//! archives of directory trees, and trees and root filesystems extracted from such archives.
//!
//! On disk, a [`BlobStore`] rooted at `ROOT` looks like this:
//!
//! ```text
//! ROOT/blobs/sha256/<2 hex>/<64 hex>   blobs, read-only (0444), named by their digest
//! ROOT/tmp/                            temporary files and half-extracted trees
//! ROOT/locks/                          one lock file per tree being extracted
//! ROOT/trees/<64 hex>/                 a tar blob, extracted
//! ROOT/rootfs/<64 hex>/                a tar blob, extracted, with the sandbox's mount points
//! ROOT/exec/<2 hex>/<64 hex>           an executable (0555) copy of a blob, for views
//! ROOT/views/<64 hex>/                 hard links to blobs at the paths a step expects
//! ROOT/verified/<64 hex>[.x]           fingerprint of a blob (or its exec copy) last hashed whole
//! ```
//!
//! Invariants:
//! - A name under `blobs/`, `trees/` or `rootfs/` only ever appears complete: everything is
//!   written under `tmp/` first, fsynced and renamed into place.
//! - Every read re-hashes the blob and refuses one whose content no longer matches its name
//!   ([`StoreError::Corrupt`]); a tree is only extracted from a blob that verifies. The one
//!   exception is [`BlobStore::view`] (and [`BlobStore::verify_fast`]), which skips the re-hash
//!   when the file's device, inode, size, mtime and ctime are those it had when it last hashed
//!   whole: a write through the file system changes ctime, so it is still caught at the next use.
//! - Extraction never writes outside the tree, never through a symlink, and never creates device
//!   nodes or setuid/setgid files, whatever the archive says.
//!
//! Deliberately absent: the catalogue mapping `NAME@VERSION` to a digest (it lives in the
//! controller's database), any network access, trust policy over where blobs came from, and
//! garbage collection.
#![forbid(unsafe_code)]

mod archive;
mod error;
mod extract;
pub mod git;
mod hashing;
pub mod pypi;
mod store;

pub use archive::archive_dir;
pub use error::{HostileEntry, StoreError};
pub use store::{BlobStore, StagedBlob, Stored, ViewFile};

/// The directories the sandbox mounts over, present and empty at the top of every
/// [`BlobStore::rootfs`]. (`src` is where git sources appear, in steps that have some.)
pub const ROOTFS_MOUNT_POINTS: [&str; 7] = ["in", "out", "proc", "dev", "tmp", "work", "src"];
