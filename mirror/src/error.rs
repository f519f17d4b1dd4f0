//! The store's one error type.

use std::io;
use std::path::PathBuf;

use kiln_core::Sha256Digest;

/// Everything that can go wrong while storing, reading, archiving or extracting.
///
/// Variants name the operation that failed and carry the digest or path it was working on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create store directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        err: io::Error,
    },
    #[error("cannot read {path}")]
    ReadSource {
        path: PathBuf,
        #[source]
        err: io::Error,
    },
    #[error("cannot read the blob's source stream")]
    ReadStream {
        #[source]
        err: io::Error,
    },
    #[error("cannot write a temporary file in {dir}")]
    WriteTemp {
        dir: PathBuf,
        #[source]
        err: io::Error,
    },
    #[error("cannot move {from} into place as {to}")]
    Rename {
        from: PathBuf,
        to: PathBuf,
        #[source]
        err: io::Error,
    },
    #[error("cannot fsync {path}")]
    Sync {
        path: PathBuf,
        #[source]
        err: io::Error,
    },
    #[error("blob {digest} is not in the store; import it first")]
    Missing { digest: Sha256Digest },
    #[error("cannot read blob {digest} at {path}")]
    ReadBlob {
        digest: Sha256Digest,
        path: PathBuf,
        #[source]
        err: io::Error,
    },
    #[error(
        "the store's copy of blob {digest} does not match its digest (its content hashes to \
         {actual}): the blob was changed on disk; re-import it"
    )]
    Corrupt {
        digest: Sha256Digest,
        actual: Sha256Digest,
    },
    #[error("cannot copy blob {digest} to {dest}")]
    CopyOut {
        digest: Sha256Digest,
        dest: PathBuf,
        #[source]
        err: io::Error,
    },
    #[error("cannot take the extraction lock {path}")]
    Lock {
        path: PathBuf,
        #[source]
        err: io::Error,
    },
    #[error("cannot extract entry {entry} of tree {digest}")]
    Extract {
        digest: Sha256Digest,
        entry: PathBuf,
        #[source]
        err: io::Error,
    },
    #[error("tree {digest} is not a readable tar archive")]
    BadArchive {
        digest: Sha256Digest,
        #[source]
        err: io::Error,
    },
    #[error("refusing entry {entry} of tree {digest}: {reason}")]
    Hostile {
        digest: Sha256Digest,
        entry: PathBuf,
        reason: HostileEntry,
    },
    #[error("rootfs {digest} has {entry} where an empty mount-point directory must be: {reason}")]
    MountPoint {
        digest: Sha256Digest,
        entry: PathBuf,
        reason: &'static str,
    },
    #[error("cannot link {from} as {to}")]
    Link {
        from: PathBuf,
        to: PathBuf,
        #[source]
        err: io::Error,
    },
    #[error("view path {path:?}: {reason}")]
    BadViewPath { path: String, reason: &'static str },
    #[error("cannot archive {path}")]
    Archive {
        path: PathBuf,
        #[source]
        err: io::Error,
    },
}

/// Why an archive entry was refused during extraction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HostileEntry {
    #[error("absolute path")]
    AbsolutePath,
    #[error("path contains `..`")]
    ParentDir,
    #[error("a parent of the path is a symlink or not a directory")]
    ThroughSymlink,
    #[error("the path was already extracted")]
    Duplicate,
    #[error("device nodes, fifos and sockets are not allowed")]
    SpecialFile,
    #[error("hard link target is not a regular file extracted earlier in the tree")]
    BadHardLink,
    #[error("unsupported tar entry type")]
    Unsupported,
}
