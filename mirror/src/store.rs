//! The blob store: its layout, atomic writes, verified reads and once-per-digest extraction.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, BufReader, BufWriter, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use cap_std::ambient_authority;
use cap_std::fs::Dir;
use kiln_core::Sha256Digest;
use tempfile::NamedTempFile;

use crate::archive::archive_dir;
use crate::error::StoreError;
use crate::extract;
use crate::hashing::{CopyError, HashingReader, HashingWriter, copy_hashing};

/// A content-addressed store rooted at one directory; see the crate docs for its layout.
///
/// Safe to share between threads and between processes using the same root.
#[derive(Debug)]
pub struct BlobStore {
    root: PathBuf,
    blobs: PathBuf,
    tmp: PathBuf,
    locks: PathBuf,
    trees: PathBuf,
    rootfs: PathBuf,
}

/// A blob that is now in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Stored {
    pub sha256: Sha256Digest,
    pub size: u64,
}

/// Which kind of extracted tree is wanted: a plain tree, or a root filesystem for the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TreeKind {
    Tree,
    Rootfs,
}

impl TreeKind {
    fn name(self) -> &'static str {
        match self {
            TreeKind::Tree => "tree",
            TreeKind::Rootfs => "rootfs",
        }
    }
}

impl BlobStore {
    /// Opens the store at `root`, creating its layout if it is missing.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        let store = Self {
            root: root.to_path_buf(),
            blobs: root.join("blobs").join("sha256"),
            tmp: root.join("tmp"),
            locks: root.join("locks"),
            trees: root.join("trees"),
            rootfs: root.join("rootfs"),
        };
        for dir in [
            &store.blobs,
            &store.tmp,
            &store.locks,
            &store.trees,
            &store.rootfs,
        ] {
            fs::create_dir_all(dir).map_err(|err| StoreError::CreateDir {
                path: dir.clone(),
                err,
            })?;
        }
        Ok(store)
    }

    /// The directory the store is rooted at.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Stores the content of the file at `path`.
    pub fn put_file(&self, path: &Path) -> Result<Stored, StoreError> {
        let file = File::open(path).map_err(|err| StoreError::ReadSource {
            path: path.to_path_buf(),
            err,
        })?;
        self.put_stream(file, Some(path))
    }

    /// Stores everything `reader` yields.
    pub fn put_reader(&self, reader: impl Read) -> Result<Stored, StoreError> {
        self.put_stream(reader, None)
    }

    /// Stores the deterministic archive of `dir` (see [`archive_dir`]), so the same tree always
    /// gets the same digest.
    pub fn put_dir(&self, dir: &Path) -> Result<Stored, StoreError> {
        let temp = self.temp_file()?;
        let mut writer = HashingWriter::new(BufWriter::new(temp.as_file()));
        archive_dir(dir, &mut writer)?;
        let (_, sha256, size) = writer.finish().map_err(|err| self.write_temp_error(err))?;
        self.commit(temp, Stored { sha256, size })
    }

    /// Whether a blob is stored under `digest`. Does not verify its content.
    pub fn contains(&self, digest: &Sha256Digest) -> bool {
        fs::symlink_metadata(self.blob_path(digest)).is_ok_and(|m| m.is_file())
    }

    /// Re-hashes the blob and fails with [`StoreError::Corrupt`] if it no longer matches.
    pub fn verify(&self, digest: &Sha256Digest) -> Result<(), StoreError> {
        let (mut blob, path) = self.open_blob(digest)?;
        let (actual, _) =
            copy_hashing(&mut blob, &mut io::sink()).map_err(|e| StoreError::ReadBlob {
                digest: *digest,
                path,
                err: match e {
                    CopyError::Read(err) | CopyError::Write(err) => err,
                },
            })?;
        check(digest, actual)
    }

    /// Reads a whole blob into memory, verified. Meant for small blobs.
    pub fn read_verified(&self, digest: &Sha256Digest) -> Result<Vec<u8>, StoreError> {
        let (mut blob, path) = self.open_blob(digest)?;
        let mut bytes = Vec::new();
        blob.read_to_end(&mut bytes)
            .map_err(|err| StoreError::ReadBlob {
                digest: *digest,
                path,
                err,
            })?;
        check(digest, Sha256Digest::of(&bytes))?;
        Ok(bytes)
    }

    /// Copies a blob to `dest`, which must not exist yet, with mode 0755 if `executable` and
    /// 0644 otherwise. The copy is hashed as it is written; if the blob turns out to be corrupt
    /// or the copy fails, `dest` is removed.
    pub fn copy_out(
        &self,
        digest: &Sha256Digest,
        dest: &Path,
        executable: bool,
    ) -> Result<(), StoreError> {
        let (mut blob, path) = self.open_blob(digest)?;
        let mode = if executable { 0o755 } else { 0o644 };
        let copy_error = |err| StoreError::CopyOut {
            digest: *digest,
            dest: dest.to_path_buf(),
            err,
        };
        // create_new: never follow a symlink planted at `dest`, never clobber a file.
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(dest)
            .map_err(copy_error)?;
        let result = copy_hashing(&mut blob, &mut out)
            .map_err(|e| match e {
                CopyError::Read(err) => StoreError::ReadBlob {
                    digest: *digest,
                    path,
                    err,
                },
                CopyError::Write(err) => copy_error(err),
            })
            .and_then(|(actual, _)| check(digest, actual))
            // The mode given to open() was filtered through the umask.
            .and_then(|()| {
                out.set_permissions(Permissions::from_mode(mode))
                    .map_err(copy_error)
            });
        if result.is_err() {
            drop(out);
            if let Err(err) = fs::remove_file(dest) {
                tracing::warn!(dest = %dest.display(), %err, "cannot remove failed copy");
            }
        }
        result
    }

    /// Extracts the tar blob `digest` once and returns the directory holding the tree; later
    /// calls, from any thread or process, return the same directory.
    ///
    /// The blob is verified before extraction, and the archive must pass the checks described
    /// in the crate docs; a tree only appears under its final name once fully extracted.
    pub fn tree(&self, digest: &Sha256Digest) -> Result<PathBuf, StoreError> {
        self.extracted(digest, TreeKind::Tree)
    }

    /// Like [`BlobStore::tree`], for a root filesystem: the tree also gets the empty directories
    /// the sandbox mounts over ([`crate::ROOTFS_MOUNT_POINTS`]) before it appears under its
    /// final name. An archive that puts anything but an empty directory there is refused.
    pub fn rootfs(&self, digest: &Sha256Digest) -> Result<PathBuf, StoreError> {
        self.extracted(digest, TreeKind::Rootfs)
    }

    fn blob_path(&self, digest: &Sha256Digest) -> PathBuf {
        let hex = digest.to_string();
        self.blobs.join(&hex[..2]).join(&hex)
    }

    fn open_blob(&self, digest: &Sha256Digest) -> Result<(File, PathBuf), StoreError> {
        let path = self.blob_path(digest);
        match File::open(&path) {
            Ok(file) => Ok((file, path)),
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                Err(StoreError::Missing { digest: *digest })
            }
            Err(err) => Err(StoreError::ReadBlob {
                digest: *digest,
                path,
                err,
            }),
        }
    }

    fn temp_file(&self) -> Result<NamedTempFile, StoreError> {
        tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(&self.tmp)
            .map_err(|err| self.write_temp_error(err))
    }

    fn write_temp_error(&self, err: io::Error) -> StoreError {
        StoreError::WriteTemp {
            dir: self.tmp.clone(),
            err,
        }
    }

    fn put_stream(&self, mut src: impl Read, source: Option<&Path>) -> Result<Stored, StoreError> {
        let temp = self.temp_file()?;
        let (sha256, size) = copy_hashing(&mut src, &mut temp.as_file()).map_err(|e| match e {
            CopyError::Read(err) => match source {
                Some(path) => StoreError::ReadSource {
                    path: path.to_path_buf(),
                    err,
                },
                None => StoreError::ReadStream { err },
            },
            CopyError::Write(err) => self.write_temp_error(err),
        })?;
        self.commit(temp, Stored { sha256, size })
    }

    /// Moves a fully written temporary file into place under its digest, durably.
    fn commit(&self, temp: NamedTempFile, stored: Stored) -> Result<Stored, StoreError> {
        let digest = stored.sha256;
        match self.verify(&digest) {
            // Idempotent: an intact blob is never rewritten; the temporary file is dropped.
            Ok(()) => {
                tracing::debug!(%digest, "blob already stored");
                return Ok(stored);
            }
            Err(StoreError::Missing { .. }) => {}
            Err(err) => tracing::warn!(%digest, %err, "replacing a damaged blob"),
        }
        let file = temp.as_file();
        file.set_permissions(Permissions::from_mode(0o444))
            .map_err(|err| self.write_temp_error(err))?;
        file.sync_all().map_err(|err| StoreError::Sync {
            path: temp.path().to_path_buf(),
            err,
        })?;
        let path = self.blob_path(&digest);
        let shard = path.parent().unwrap_or(&self.blobs);
        match fs::create_dir(shard) {
            Ok(()) => sync_dir(&self.blobs)?,
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
            Err(err) => {
                return Err(StoreError::CreateDir {
                    path: shard.to_path_buf(),
                    err,
                });
            }
        }
        temp.persist(&path).map_err(|e| StoreError::Rename {
            from: e.file.path().to_path_buf(),
            to: path.clone(),
            err: e.error,
        })?;
        sync_dir(shard)?;
        tracing::debug!(%digest, size = stored.size, "stored blob");
        Ok(stored)
    }

    fn extracted(&self, digest: &Sha256Digest, kind: TreeKind) -> Result<PathBuf, StoreError> {
        let base = match kind {
            TreeKind::Tree => &self.trees,
            TreeKind::Rootfs => &self.rootfs,
        };
        let target = base.join(digest.to_string());
        if target.is_dir() {
            return Ok(target);
        }

        // One extraction per digest at a time, across threads and processes: whoever waited
        // finds the finished tree. The lock is released when `lock` is dropped.
        let lock_path = self.locks.join(format!("{}-{digest}.lock", kind.name()));
        let lock_error = |err| StoreError::Lock {
            path: lock_path.clone(),
            err,
        };
        let lock = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(lock_error)?;
        lock.lock().map_err(lock_error)?;
        if target.is_dir() {
            return Ok(target);
        }

        // A damaged blob never reaches the tar parser.
        self.verify(digest)?;

        let staging = tempfile::Builder::new()
            .prefix(&format!("{}-", kind.name()))
            .tempdir_in(&self.tmp)
            .map_err(|err| self.write_temp_error(err))?;
        let dir = Dir::open_ambient_dir(staging.path(), ambient_authority())
            .map_err(|err| self.write_temp_error(err))?;
        let (blob, path) = self.open_blob(digest)?;
        let mut reader = HashingReader::new(BufReader::new(blob));
        let stats = extract::unpack(digest, &mut reader, &dir)?;
        // Hash what was parsed as well, so a blob changed on disk since verify() is caught
        // before the tree gets its name.
        let (actual, _) = reader.drain().map_err(|err| StoreError::ReadBlob {
            digest: *digest,
            path,
            err,
        })?;
        check(digest, actual)?;
        if kind == TreeKind::Rootfs {
            extract::make_mount_points(digest, &dir)?;
        }
        // tempdir() made it 0700; the sandbox's unprivileged user must be able to enter it.
        fs::set_permissions(staging.path(), Permissions::from_mode(0o755))
            .map_err(|err| self.write_temp_error(err))?;
        sync_dir(staging.path())?;
        drop(dir);

        let staged = staging.keep();
        if let Err(err) = fs::rename(&staged, &target) {
            if let Err(err) = fs::remove_dir_all(&staged) {
                tracing::warn!(path = %staged.display(), %err, "cannot remove staging tree");
            }
            return Err(StoreError::Rename {
                from: staged,
                to: target,
                err,
            });
        }
        sync_dir(base)?;
        tracing::info!(
            %digest,
            kind = kind.name(),
            files = stats.files,
            dirs = stats.dirs,
            symlinks = stats.symlinks,
            path = %target.display(),
            "extracted tree"
        );
        Ok(target)
    }
}

/// Compares a blob's recomputed digest with the one it is stored under.
fn check(digest: &Sha256Digest, actual: Sha256Digest) -> Result<(), StoreError> {
    if actual == *digest {
        Ok(())
    } else {
        tracing::error!(%digest, %actual, "corrupt blob");
        Err(StoreError::Corrupt {
            digest: *digest,
            actual,
        })
    }
}

/// Makes a directory's entries durable.
fn sync_dir(path: &Path) -> Result<(), StoreError> {
    File::open(path)
        .and_then(|dir| dir.sync_all())
        .map_err(|err| StoreError::Sync {
            path: path.to_path_buf(),
            err,
        })
}
