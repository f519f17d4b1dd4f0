//! The blob store: its layout, atomic writes, verified reads and once-per-digest extraction.

use std::fs::{self, File, Metadata, OpenOptions, Permissions};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

use cap_std::ambient_authority;
use cap_std::fs::Dir;
use kiln_core::Sha256Digest;
use tempfile::NamedTempFile;

use crate::archive::archive_dir;
use crate::error::StoreError;
use crate::extract;
use crate::hashing::{CopyError, HashingReader, PipeError, copy_hashing, write_hashing};

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
    exec: PathBuf,
    views: PathBuf,
    verified: PathBuf,
}

/// A blob that is now in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Stored {
    pub sha256: Sha256Digest,
    pub size: u64,
}

/// Temporary blob files are named `tmp/blob-*`.
const TEMP_BLOB_PREFIX: &str = "blob-";

/// An unlocked temporary blob older than this was left by a process that died.
const STALE_AFTER: Duration = Duration::from_secs(60);

/// Blobs up to this size are hashed in memory before anything is written
/// ([`BlobStore::put_reader`]).
const SMALL_BLOB: u64 = 64 * 1024;

/// A fingerprint whose change time is this close to now is not remembered: a write landing in
/// the same clock tick as the fingerprint could otherwise go unseen (git's "racy" entries).
const RACY_WINDOW: Duration = Duration::from_secs(2);

/// Bytes written into the store and hashed, not stored yet: [`StagedBlob::commit`] stores them,
/// dropping the `StagedBlob` removes them. Made by [`BlobStore::stage_file`] and
/// [`BlobStore::stage_reader`].
#[derive(Debug)]
pub struct StagedBlob<'a> {
    store: &'a BlobStore,
    temp: NamedTempFile,
    stored: Stored,
}

impl StagedBlob<'_> {
    /// The digest of the staged bytes.
    pub fn sha256(&self) -> Sha256Digest {
        self.stored.sha256
    }

    /// How many bytes were staged.
    pub fn size(&self) -> u64 {
        self.stored.size
    }

    /// The temporary file holding the staged bytes, for checks that need to read them (e.g. a
    /// signature). Do not write to it: the digest would no longer describe it.
    pub fn path(&self) -> &Path {
        self.temp.path()
    }

    /// Moves the staged bytes into place under their digest (fsynced, then atomically renamed);
    /// if an intact blob with that digest is stored already, the staged copy is dropped.
    pub fn commit(self) -> Result<Stored, StoreError> {
        self.store.commit(self.temp, self.stored)
    }
}

/// One file of a [`BlobStore::view`]: the blob `sha256` at `path` inside the view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewFile<'a> {
    /// A relative path of plain components, e.g. `hello.c` or `lib/libz.a`.
    pub path: &'a str,
    /// The blob's digest.
    pub sha256: Sha256Digest,
    /// Whether the file must be executable (mode 0555 instead of the blob's 0444).
    pub executable: bool,
}

/// Which on-disk copy of a blob a fingerprint describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Object {
    /// `blobs/sha256/..`, mode 0444.
    Blob,
    /// `exec/..`, an executable (0555) copy.
    Exec,
}

/// What identifies one state of a file on disk: any write through the file system changes its
/// change time (and the kernel cannot be told to set it back), and replacing the file changes
/// its inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Fingerprint {
    fn of(meta: &Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    fn encode(&self) -> String {
        format!(
            "v1 {} {} {} {}.{:09} {}.{:09}\n",
            self.dev, self.ino, self.size, self.mtime.0, self.mtime.1, self.ctime.0, self.ctime.1
        )
    }

    fn decode(text: &str) -> Option<Self> {
        let mut fields = text.trim_end().split(' ');
        if fields.next()? != "v1" {
            return None;
        }
        let mut int = || fields.next()?.parse::<u64>().ok();
        let (dev, ino, size) = (int()?, int()?, int()?);
        let mut time = || {
            let (secs, nanos) = fields.next()?.split_once('.')?;
            Some((secs.parse().ok()?, nanos.parse().ok()?))
        };
        let (mtime, ctime) = (time()?, time()?);
        Some(Self {
            dev,
            ino,
            size,
            mtime,
            ctime,
        })
    }

    /// Whether the file had changed so recently when this fingerprint was taken (at `taken`)
    /// that a later write in the same clock tick might not show in its change time.
    fn is_racy(&self, taken: SystemTime) -> bool {
        let changed = SystemTime::UNIX_EPOCH
            + Duration::new(
                self.ctime.0.max(0) as u64,
                self.ctime.1.clamp(0, 999_999_999) as u32,
            );
        taken
            .duration_since(changed)
            .map_or(true, |age| age < RACY_WINDOW)
    }
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
            exec: root.join("exec"),
            views: root.join("views"),
            verified: root.join("verified"),
        };
        for dir in [
            &store.blobs,
            &store.tmp,
            &store.locks,
            &store.trees,
            &store.rootfs,
            &store.exec,
            &store.views,
            &store.verified,
        ] {
            fs::create_dir_all(dir).map_err(|err| StoreError::CreateDir {
                path: dir.clone(),
                err,
            })?;
        }
        store.sweep_stale_temps();
        Ok(store)
    }

    /// The directory the store is rooted at.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Stores the content of the file at `path`.
    pub fn put_file(&self, path: &Path) -> Result<Stored, StoreError> {
        self.stage_file(path)?.commit()
    }

    /// Stores everything `reader` yields.
    ///
    /// Up to [`SMALL_BLOB`] bytes are hashed in memory first: a blob that is stored already
    /// (e.g. the same short step log again) then costs no temporary file, whose creation and
    /// removal dominate the put of a small blob on a busy ext4.
    pub fn put_reader(&self, reader: impl Read) -> Result<Stored, StoreError> {
        let mut head = Vec::new();
        let mut reader = reader;
        (&mut reader)
            .take(SMALL_BLOB + 1)
            .read_to_end(&mut head)
            .map_err(|err| StoreError::ReadStream { err })?;
        if head.len() as u64 <= SMALL_BLOB {
            let stored = Stored {
                sha256: Sha256Digest::of(&head),
                size: head.len() as u64,
            };
            if self
                .verify_cached(
                    &self.blob_path(&stored.sha256),
                    &stored.sha256,
                    Object::Blob,
                )
                .is_ok()
            {
                tracing::debug!(digest = %stored.sha256, "blob already stored");
                return Ok(stored);
            }
        }
        self.stage_reader(head.as_slice().chain(reader))?.commit()
    }

    /// Copies the file at `path` into a temporary file inside the store, hashing it on the way
    /// (reading, hashing and writing overlap on three threads), without storing it yet: check
    /// the [`StagedBlob`]'s digest, size or bytes, then [`StagedBlob::commit`] it or drop it.
    pub fn stage_file(&self, path: &Path) -> Result<StagedBlob<'_>, StoreError> {
        let file = File::open(path).map_err(|err| StoreError::ReadSource {
            path: path.to_path_buf(),
            err,
        })?;
        self.stage_stream(file, Some(path))
    }

    /// Like [`BlobStore::stage_file`], for everything `reader` yields.
    pub fn stage_reader(&self, reader: impl Read) -> Result<StagedBlob<'_>, StoreError> {
        self.stage_stream(reader, None)
    }

    /// Stores the deterministic archive of `dir` (see [`archive_dir`]), so the same tree always
    /// gets the same digest. Archiving, hashing and writing overlap on three threads.
    pub fn put_dir(&self, dir: &Path) -> Result<Stored, StoreError> {
        let temp = self.temp_file()?;
        let (sha256, size) = write_hashing(temp.as_file(), temp.path(), |chunks| {
            archive_dir(dir, chunks)
        })
        .map_err(|e| match e {
            PipeError::Produce(err) => err,
            PipeError::Write(err) => self.write_temp_error(err),
        })?;
        let staged = StagedBlob {
            store: self,
            temp,
            stored: Stored { sha256, size },
        };
        staged.commit()
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

    /// Like [`BlobStore::verify`], but only re-hashes the blob if it changed on disk since it
    /// last verified in full: the store remembers each verified blob's device, inode, size,
    /// mtime and ctime in `verified/`, and any write to the blob changes its ctime. See
    /// docs/mirror.md ("Performance") for exactly what that does and does not cover.
    pub fn verify_fast(&self, digest: &Sha256Digest) -> Result<(), StoreError> {
        self.verify_cached(&self.blob_path(digest), digest, Object::Blob)
    }

    /// A directory holding exactly `files`, each at its path, without copying their bytes:
    /// every file is a hard link to the stored blob (or, when executable, to a 0555 copy of it
    /// made once per digest). Views are made once per distinct list of files and shared, like
    /// trees; every call checks each file with [`BlobStore::verify_fast`]'s rules, so a blob
    /// changed on disk is refused with [`StoreError::Corrupt`] before anyone uses the view.
    ///
    /// The caller must only hand the view out read-only (e.g. a read-only bind mount): its
    /// files are the store's own blobs.
    pub fn view(&self, files: &[ViewFile<'_>]) -> Result<PathBuf, StoreError> {
        let key = view_key(files)?;
        let target = self.views.join(key.to_string());
        if !target.is_dir() {
            self.make_view(files, &target)?;
        }
        for file in files {
            let object = if file.executable {
                Object::Exec
            } else {
                Object::Blob
            };
            let checked = self.verify_cached(&target.join(file.path), &file.sha256, object);
            if let Err(err @ StoreError::Corrupt { .. }) = checked {
                self.discard_view(&target, file);
                return Err(err);
            }
            checked?;
        }
        Ok(target)
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

    /// A new temporary blob file, locked for as long as it is open so that
    /// [`BlobStore::sweep_stale_temps`] can tell it from one a dead process left behind.
    fn temp_file(&self) -> Result<NamedTempFile, StoreError> {
        let temp = tempfile::Builder::new()
            .prefix(TEMP_BLOB_PREFIX)
            .tempfile_in(&self.tmp)
            .map_err(|err| self.write_temp_error(err))?;
        temp.as_file()
            .lock()
            .map_err(|err| self.write_temp_error(err))?;
        Ok(temp)
    }

    /// Removes temporary blob files that no live process holds: a process that crashed
    /// mid-write leaves nothing half-written behind for long. A file is only removed when it is
    /// unlocked and older than [`STALE_AFTER`], so one just created and not locked yet is safe.
    fn sweep_stale_temps(&self) {
        let Ok(entries) = fs::read_dir(&self.tmp) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if !name.to_string_lossy().starts_with(TEMP_BLOB_PREFIX) {
                continue;
            }
            let path = entry.path();
            let old = fs::symlink_metadata(&path)
                .ok()
                .filter(Metadata::is_file)
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age >= STALE_AFTER);
            let unlocked = old
                && File::open(&path)
                    .and_then(|f| f.try_lock().map_err(io::Error::from))
                    .is_ok();
            if unlocked {
                match fs::remove_file(&path) {
                    Ok(()) => {
                        tracing::info!(path = %path.display(), "removed a stale temporary blob")
                    }
                    Err(err) => {
                        tracing::warn!(path = %path.display(), %err, "cannot remove a stale temporary blob")
                    }
                }
            }
        }
    }

    fn write_temp_error(&self, err: io::Error) -> StoreError {
        StoreError::WriteTemp {
            dir: self.tmp.clone(),
            err,
        }
    }

    fn stage_stream(
        &self,
        mut src: impl Read,
        source: Option<&Path>,
    ) -> Result<StagedBlob<'_>, StoreError> {
        let temp = self.temp_file()?;
        let read_error = |err| match source {
            Some(path) => StoreError::ReadSource {
                path: path.to_path_buf(),
                err,
            },
            None => StoreError::ReadStream { err },
        };
        let (sha256, size) = write_hashing(temp.as_file(), temp.path(), |chunks| {
            match chunks.read_from(&mut src) {
                Ok(read) => read,
                // The writer stopped; write_hashing reports its error.
                Err(_) => Ok(()),
            }
        })
        .map_err(|e| match e {
            PipeError::Produce(err) => read_error(err),
            PipeError::Write(err) => self.write_temp_error(err),
        })?;
        Ok(StagedBlob {
            store: self,
            temp,
            stored: Stored { sha256, size },
        })
    }

    /// Moves a fully written temporary file into place under its digest, durably.
    fn commit(&self, temp: NamedTempFile, stored: Stored) -> Result<Stored, StoreError> {
        let digest = stored.sha256;
        match self.verify_cached(&self.blob_path(&digest), &digest, Object::Blob) {
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

    fn exec_path(&self, digest: &Sha256Digest) -> PathBuf {
        let hex = digest.to_string();
        self.exec.join(&hex[..2]).join(&hex)
    }

    fn fingerprint_path(&self, digest: &Sha256Digest, object: Object) -> PathBuf {
        match object {
            Object::Blob => self.verified.join(digest.to_string()),
            Object::Exec => self.verified.join(format!("{digest}.x")),
        }
    }

    /// Checks that the file at `path` (the blob, a copy of it, or a hard link to either) holds
    /// the bytes of `digest`: at once if its fingerprint is the one remembered when it last
    /// hashed correctly, by hashing it in full otherwise.
    fn verify_cached(
        &self,
        path: &Path,
        digest: &Sha256Digest,
        object: Object,
    ) -> Result<(), StoreError> {
        let read_error = |err| StoreError::ReadBlob {
            digest: *digest,
            path: path.to_path_buf(),
            err,
        };
        let mut file = match File::open(path) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::Missing { digest: *digest });
            }
            Err(err) => return Err(read_error(err)),
        };
        let taken = SystemTime::now();
        let before = Fingerprint::of(&file.metadata().map_err(read_error)?);
        let remembered_at = self.fingerprint_path(digest, object);
        let remembered = fs::read_to_string(&remembered_at)
            .ok()
            .and_then(|text| Fingerprint::decode(&text));
        if remembered == Some(before) {
            return Ok(());
        }
        let (actual, _) = copy_hashing(&mut file, &mut io::sink()).map_err(|e| match e {
            CopyError::Read(err) | CopyError::Write(err) => read_error(err),
        })?;
        if let Err(err) = check(digest, actual) {
            let _ = fs::remove_file(&remembered_at);
            return Err(err);
        }
        let after = Fingerprint::of(&file.metadata().map_err(read_error)?);
        if after == before && !before.is_racy(taken) {
            self.remember(&remembered_at, &after);
        }
        tracing::debug!(%digest, path = %path.display(), size = after.size, "verified in full");
        Ok(())
    }

    /// Writes a fingerprint file atomically. Failing only costs a re-hash next time.
    fn remember(&self, at: &Path, fingerprint: &Fingerprint) {
        let written = tempfile::Builder::new()
            .prefix("fingerprint-")
            .tempfile_in(&self.tmp)
            .and_then(|mut temp| {
                io::Write::write_all(&mut temp, fingerprint.encode().as_bytes())?;
                temp.persist(at).map_err(|e| e.error)?;
                Ok(())
            });
        if let Err(err) = written {
            tracing::warn!(path = %at.display(), %err, "cannot remember a verified blob");
        }
    }

    /// The 0555 copy of a blob that executable view files link to, made (verified) if missing.
    fn exec_copy(&self, digest: &Sha256Digest) -> Result<PathBuf, StoreError> {
        let path = self.exec_path(digest);
        if path.is_file() {
            return Ok(path);
        }
        let (mut blob, blob_path) = self.open_blob(digest)?;
        let temp = self.temp_file()?;
        let (actual, _) = copy_hashing(&mut blob, &mut temp.as_file()).map_err(|e| match e {
            CopyError::Read(err) => StoreError::ReadBlob {
                digest: *digest,
                path: blob_path,
                err,
            },
            CopyError::Write(err) => self.write_temp_error(err),
        })?;
        check(digest, actual)?;
        let file = temp.as_file();
        file.set_permissions(Permissions::from_mode(0o555))
            .and_then(|()| file.sync_all())
            .map_err(|err| StoreError::Sync {
                path: temp.path().to_path_buf(),
                err,
            })?;
        let shard = path.parent().unwrap_or(&self.exec);
        create_dir(shard)?;
        // Another process may have made the same copy meanwhile; either is fine.
        match temp.persist_noclobber(&path) {
            Ok(_) => sync_dir(shard)?,
            Err(e) if path.is_file() => drop(e),
            Err(e) => {
                return Err(StoreError::Rename {
                    from: e.file.path().to_path_buf(),
                    to: path,
                    err: e.error,
                });
            }
        }
        Ok(path)
    }

    /// Removes a view that holds a damaged file, and the damaged executable copy if that is what
    /// it linked to, so the next [`BlobStore::view`] links to the store's blob again (e.g. after
    /// it was re-imported).
    fn discard_view(&self, view: &Path, damaged: &ViewFile<'_>) {
        if damaged.executable {
            let _ = fs::remove_file(self.exec_path(&damaged.sha256));
        }
        let Ok(aside) = tempfile::Builder::new()
            .prefix("stale-view-")
            .tempdir_in(&self.tmp)
        else {
            return;
        };
        let aside = aside.keep();
        let moved = aside.join("view");
        if fs::rename(view, &moved).is_ok() {
            tracing::warn!(view = %view.display(), "discarded a view holding a damaged file");
        }
        if let Err(err) = fs::remove_dir_all(&aside) {
            tracing::warn!(path = %aside.display(), %err, "cannot remove a discarded view");
        }
    }

    /// Builds a view under `tmp/` and renames it to `target`; if another thread or process got
    /// there first, theirs is kept.
    fn make_view(&self, files: &[ViewFile<'_>], target: &Path) -> Result<(), StoreError> {
        let staging = tempfile::Builder::new()
            .prefix("view-")
            .tempdir_in(&self.tmp)
            .map_err(|err| self.write_temp_error(err))?;
        let mut dirs = vec![staging.path().to_path_buf()];
        for file in files {
            let source = if file.executable {
                self.exec_copy(&file.sha256)?
            } else {
                let path = self.blob_path(&file.sha256);
                if !path.is_file() {
                    return Err(StoreError::Missing {
                        digest: file.sha256,
                    });
                }
                path
            };
            let dest = staging.path().join(file.path);
            if let Some(parent) = dest.parent().filter(|p| !p.is_dir()) {
                fs::create_dir_all(parent).map_err(|err| StoreError::CreateDir {
                    path: parent.to_path_buf(),
                    err,
                })?;
                dirs.push(parent.to_path_buf());
            }
            fs::hard_link(&source, &dest).map_err(|err| StoreError::Link {
                from: source,
                to: dest,
                err,
            })?;
        }
        for dir in dirs.iter().rev() {
            fs::set_permissions(dir, Permissions::from_mode(0o755))
                .map_err(|err| self.write_temp_error(err))?;
            sync_dir(dir)?;
        }
        let staged = staging.keep();
        match fs::rename(&staged, target) {
            Ok(()) => sync_dir(&self.views),
            Err(_) if target.is_dir() => {
                if let Err(err) = fs::remove_dir_all(&staged) {
                    tracing::warn!(path = %staged.display(), %err, "cannot remove a staged view");
                }
                Ok(())
            }
            Err(err) => {
                let _ = fs::remove_dir_all(&staged);
                Err(StoreError::Rename {
                    from: staged,
                    to: target.to_path_buf(),
                    err,
                })
            }
        }
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

/// The name of a view: the digest of its sorted list of files. Refuses paths that are not plain
/// relative paths, and lists where one path is another's parent or appears twice.
fn view_key(files: &[ViewFile<'_>]) -> Result<Sha256Digest, StoreError> {
    let mut sorted: Vec<&ViewFile<'_>> = files.iter().collect();
    sorted.sort_by_key(|f| f.path);
    let mut listing = String::new();
    for (i, file) in sorted.iter().enumerate() {
        let bad = |reason| StoreError::BadViewPath {
            path: file.path.to_owned(),
            reason,
        };
        let plain = !file.path.is_empty()
            && Path::new(file.path)
                .components()
                .all(|c| matches!(c, Component::Normal(_)));
        if !plain {
            return Err(bad("not a plain relative path"));
        }
        if let Some(previous) = i.checked_sub(1).map(|j| sorted[j].path) {
            if previous == file.path {
                return Err(bad("listed twice"));
            }
            if Path::new(file.path).starts_with(previous) {
                return Err(bad("inside another file's path"));
            }
        }
        let mode = if file.executable { "x" } else { "-" };
        listing.push_str(&format!("{}\0{}\0{mode}\n", file.path, file.sha256));
    }
    Ok(Sha256Digest::of(listing.as_bytes()))
}

/// Creates a directory if it is missing, and makes its name durable when it was.
fn create_dir(path: &Path) -> Result<(), StoreError> {
    match fs::create_dir(path) {
        Ok(()) => sync_dir(path.parent().unwrap_or(path)),
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(err) => Err(StoreError::CreateDir {
            path: path.to_path_buf(),
            err,
        }),
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
