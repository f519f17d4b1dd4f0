//! Extraction of untrusted tar archives into a directory.
//!
//! Every entry is written relative to a cap-std [`Dir`], so nothing can land outside the tree
//! even if a check here were wrong; on top of that each path is checked before use: no absolute
//! paths, no `..`, no symlinked or non-directory parents, no entry extracted twice. Files are
//! created with `O_CREAT|O_EXCL`, which does not follow a symlink. Device nodes, fifos and
//! sparse or unknown entries are refused; setuid and setgid bits are dropped; hard links may only
//! point at regular files already extracted from the same archive. Ownership and mtimes are not
//! restored: files belong to whoever extracts them.
//!
//! Deliberately absent: size or entry-count limits (blobs come from kiln's own importer).

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::Scope;

use cap_std::fs::{Dir, OpenOptions, OpenOptionsExt, Permissions, PermissionsExt};
use kiln_core::Sha256Digest;
use tar::EntryType;

use crate::ROOTFS_MOUNT_POINTS;
use crate::error::{HostileEntry, StoreError};

/// Permission bits kept from the archive: rwx for all, and sticky; never setuid or setgid.
const MODE_MASK: u32 = 0o1777;

/// Mode of directories the archive implies but does not list.
const IMPLIED_DIR_MODE: u32 = 0o755;

/// Files up to this size are read into memory and written by the pool.
const POOLED_FILE_MAX: u64 = 1 << 20;

/// Threads writing and fsyncing files. fsync mostly waits for the disk, and the file system
/// commits concurrent fsyncs together, so more threads than cores pay off.
const POOL_THREADS: usize = 16;

/// What an extraction produced.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Stats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
}

/// Extracts the tar stream `archive` into `dest`, which should be empty.
///
/// The tar stream is parsed and checked on the calling thread; regular files are written,
/// given their mode and fsynced by a small pool of threads (see [`Pool`]), because a tree of
/// thousands of small files otherwise spends its time waiting for one fsync after another.
pub(crate) fn unpack(
    digest: &Sha256Digest,
    archive: impl Read,
    dest: &Dir,
) -> Result<Stats, StoreError> {
    std::thread::scope(|scope| {
        let pool = Pool::start(scope, *digest, dest);
        let mut unpacker = Unpacker {
            digest: *digest,
            dest,
            pool: &pool,
            regular_files: HashSet::new(),
            dirs: HashMap::new(),
            stats: Stats::default(),
        };
        let result = unpacker.unpack_all(archive);
        let stats = result.and_then(|()| unpacker.finish());
        let pooled = pool.stop();
        let stats = stats?;
        pooled?;
        Ok(stats)
    })
}

/// Ensures the sandbox's mount points exist at the top of a rootfs as empty directories.
pub(crate) fn make_mount_points(digest: &Sha256Digest, dest: &Dir) -> Result<(), StoreError> {
    for name in ROOTFS_MOUNT_POINTS {
        let refuse = |reason| StoreError::MountPoint {
            digest: *digest,
            entry: PathBuf::from(name),
            reason,
        };
        let io_error = |err| StoreError::Extract {
            digest: *digest,
            entry: PathBuf::from(name),
            err,
        };
        match dest.symlink_metadata(name) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                dest.create_dir(name).map_err(io_error)?;
                dest.set_permissions(name, Permissions::from_mode(IMPLIED_DIR_MODE))
                    .map_err(io_error)?;
            }
            Err(err) => return Err(io_error(err)),
            Ok(meta) if !meta.is_dir() => return Err(refuse("not a directory")),
            Ok(_) => {
                if dest.read_dir(name).map_err(io_error)?.next().is_some() {
                    return Err(refuse("a directory that is not empty"));
                }
            }
        }
    }
    Ok(())
}

struct Unpacker<'a> {
    digest: Sha256Digest,
    dest: &'a Dir,
    pool: &'a Pool,
    /// Regular files extracted so far: the only valid hard link targets.
    regular_files: HashSet<PathBuf>,
    /// Every directory created, with the mode to give it once all entries are in.
    dirs: HashMap<PathBuf, u32>,
    stats: Stats,
}

impl Unpacker<'_> {
    fn unpack_all(&mut self, archive: impl Read) -> Result<(), StoreError> {
        let mut archive = tar::Archive::new(archive);
        let entries = archive.entries().map_err(|err| self.bad_archive(err))?;
        for entry in entries {
            let mut entry = entry.map_err(|err| self.bad_archive(err))?;
            self.entry(&mut entry)?;
            // Stop early once a pooled write failed; its error is reported by `unpack`.
            if self.pool.failed() {
                return Ok(());
            }
        }
        Ok(())
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), StoreError> {
        let kind = entry.header().entry_type();
        let raw_path = entry
            .path()
            .map_err(|err| self.bad_archive(err))?
            .into_owned();
        let path = self.sanitise(&raw_path)?;
        let mode = entry.header().mode().map_err(|err| self.bad_archive(err))? & MODE_MASK;

        match kind {
            // Extended headers are consumed by the tar crate; tolerate them if one slips through.
            EntryType::XGlobalHeader
            | EntryType::XHeader
            | EntryType::GNULongName
            | EntryType::GNULongLink => return Ok(()),
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                return Err(self.hostile(&raw_path, HostileEntry::SpecialFile));
            }
            _ => {}
        }

        if path.as_os_str().is_empty() {
            // "./": the tree's own root, whose mode the store decides.
            return if kind == EntryType::Directory {
                Ok(())
            } else {
                Err(self.hostile(&raw_path, HostileEntry::Duplicate))
            };
        }
        self.ensure_parents(&raw_path, &path)?;
        // A file still being written by the pool may not be visible on disk yet.
        if self.regular_files.contains(&path) {
            return Err(self.hostile(&raw_path, HostileEntry::Duplicate));
        }

        let existing = match self.dest.symlink_metadata(&path) {
            Ok(meta) => Some(meta),
            Err(err) if err.kind() == io::ErrorKind::NotFound => None,
            Err(err) => return Err(self.io_error(&path, err)),
        };
        match (kind, existing) {
            // A directory listed twice, or after one of its children: only its mode changes.
            (EntryType::Directory, Some(meta)) if meta.is_dir() => {
                if let Some(slot) = self.dirs.get_mut(&path) {
                    *slot = mode;
                }
                return Ok(());
            }
            (_, Some(_)) => return Err(self.hostile(&raw_path, HostileEntry::Duplicate)),
            (_, None) => {}
        }

        match kind {
            EntryType::Regular | EntryType::Continuous => {
                self.regular_file(entry, &path, mode)?;
                self.regular_files.insert(path);
                self.stats.files += 1;
            }
            EntryType::Directory => {
                self.dest
                    .create_dir(&path)
                    .map_err(|err| self.io_error(&path, err))?;
                self.dirs.insert(path, mode);
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|err| self.bad_archive(err))?
                    .ok_or_else(|| self.hostile(&raw_path, HostileEntry::Unsupported))?
                    .into_owned();
                // The target is stored as is: extraction never follows it, and inside the
                // sandbox the rootfs is `/`, so absolute targets resolve within it.
                self.dest
                    .symlink_contents(&target, &path)
                    .map_err(|err| self.io_error(&path, err))?;
                self.stats.symlinks += 1;
            }
            EntryType::Link => {
                let raw_target = entry
                    .link_name()
                    .map_err(|err| self.bad_archive(err))?
                    .ok_or_else(|| self.hostile(&raw_path, HostileEntry::BadHardLink))?
                    .into_owned();
                let target = self.sanitise(&raw_target)?;
                if !self.regular_files.contains(&target) {
                    return Err(self.hostile(&raw_path, HostileEntry::BadHardLink));
                }
                // The target may still be in the pool's hands.
                self.pool.wait_idle();
                self.dest
                    .hard_link(&target, self.dest, &path)
                    .map_err(|err| self.io_error(&path, err))?;
                self.regular_files.insert(path);
                self.stats.files += 1;
            }
            _ => return Err(self.hostile(&raw_path, HostileEntry::Unsupported)),
        }
        Ok(())
    }

    /// Turns an archive path into a relative path with only normal components.
    fn sanitise(&self, raw: &Path) -> Result<PathBuf, StoreError> {
        let mut out = PathBuf::new();
        for component in raw.components() {
            match component {
                Component::Normal(name) => out.push(name),
                Component::CurDir => {}
                Component::ParentDir => {
                    return Err(self.hostile(raw, HostileEntry::ParentDir));
                }
                Component::RootDir | Component::Prefix(_) => {
                    return Err(self.hostile(raw, HostileEntry::AbsolutePath));
                }
            }
        }
        Ok(out)
    }

    /// Checks that every parent of `path` is a real directory, creating missing ones.
    fn ensure_parents(&mut self, raw: &Path, path: &Path) -> Result<(), StoreError> {
        let Some(parent) = path.parent() else {
            return Ok(());
        };
        let mut prefix = PathBuf::new();
        for component in parent.components() {
            prefix.push(component);
            if self.regular_files.contains(&prefix) {
                return Err(self.hostile(raw, HostileEntry::ThroughSymlink));
            }
            match self.dest.symlink_metadata(&prefix) {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => return Err(self.hostile(raw, HostileEntry::ThroughSymlink)),
                Err(err) if err.kind() == io::ErrorKind::NotFound => {
                    self.dest
                        .create_dir(&prefix)
                        .map_err(|err| self.io_error(&prefix, err))?;
                    self.dirs.insert(prefix.clone(), IMPLIED_DIR_MODE);
                }
                Err(err) => return Err(self.io_error(&prefix, err)),
            }
        }
        Ok(())
    }

    /// Makes directory entries durable and gives directories their modes, deepest first so a
    /// read-only parent does not stop its children from being updated.
    fn finish(mut self) -> Result<Stats, StoreError> {
        let mut dirs: Vec<_> = self.dirs.drain().collect();
        dirs.sort_by_key(|(path, _)| std::cmp::Reverse(path.components().count()));
        // Every file's fsync must be done before the directories are synced and closed up.
        self.pool.wait_idle();
        for (path, _) in &dirs {
            self.pool.submit(Job::SyncDir(path.clone()));
        }
        self.pool.wait_idle();
        if self.pool.failed() {
            return Ok(self.stats);
        }
        for (path, mode) in &dirs {
            self.dest
                .set_permissions(path, Permissions::from_mode(*mode))
                .map_err(|err| self.io_error(path, err))?;
        }
        self.stats.dirs = dirs.len() as u64;
        Ok(self.stats)
    }

    /// Creates a regular file; small ones are read into memory and written by the pool, large
    /// ones written here (so memory stays bounded) and only fsynced by the pool.
    fn regular_file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        path: &Path,
        mode: u32,
    ) -> Result<(), StoreError> {
        let size = entry.header().size().map_err(|err| self.bad_archive(err))?;
        if size <= POOLED_FILE_MAX {
            let mut data = Vec::with_capacity(size as usize);
            entry
                .read_to_end(&mut data)
                .map_err(|err| self.bad_archive(err))?;
            self.pool.submit(Job::Write {
                path: path.to_path_buf(),
                data,
                mode,
            });
            return Ok(());
        }
        let mut file = create_file(self.dest, path).map_err(|err| self.io_error(path, err))?;
        io::copy(entry, &mut file).map_err(|err| self.io_error(path, err))?;
        file.set_permissions(Permissions::from_mode(mode))
            .map_err(|err| self.io_error(path, err))?;
        self.pool.submit(Job::Sync {
            path: path.to_path_buf(),
            file,
        });
        Ok(())
    }

    fn hostile(&self, entry: &Path, reason: HostileEntry) -> StoreError {
        tracing::warn!(digest = %self.digest, entry = %entry.display(), %reason, "hostile archive entry");
        StoreError::Hostile {
            digest: self.digest,
            entry: entry.to_path_buf(),
            reason,
        }
    }

    fn io_error(&self, entry: &Path, err: io::Error) -> StoreError {
        StoreError::Extract {
            digest: self.digest,
            entry: entry.to_path_buf(),
            err,
        }
    }

    fn bad_archive(&self, err: io::Error) -> StoreError {
        StoreError::BadArchive {
            digest: self.digest,
            err,
        }
    }
}

/// Creates a new regular file for writing, never following a symlink at `path`.
fn create_file(dest: &Dir, path: &Path) -> io::Result<cap_std::fs::File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true).mode(0o600);
    dest.open_with(path, &options)
}

/// Work for the [`Pool`].
enum Job {
    /// Create `path`, write `data`, set `mode`, fsync.
    Write {
        path: PathBuf,
        data: Vec<u8>,
        mode: u32,
    },
    /// fsync a file already written.
    Sync {
        path: PathBuf,
        file: cap_std::fs::File,
    },
    /// fsync a directory's entries.
    SyncDir(PathBuf),
}

impl Job {
    fn run(self, dest: &Dir) -> Result<(), (PathBuf, io::Error)> {
        match self {
            Job::Write { path, data, mode } => create_file(dest, &path)
                .and_then(|mut file| {
                    file.write_all(&data)?;
                    file.set_permissions(Permissions::from_mode(mode))?;
                    file.sync_all()
                })
                .map_err(|err| (path, err)),
            Job::Sync { path, file } => file.sync_all().map_err(|err| (path, err)),
            // A read-only open: cap-std's open_dir() gives an O_PATH handle, which cannot fsync.
            Job::SyncDir(path) => dest
                .open(&path)
                .and_then(|dir| dir.sync_all())
                .map_err(|err| (path, err)),
        }
    }
}

/// Jobs submitted and not finished yet, and the first failure.
#[derive(Default)]
struct PoolState {
    pending: usize,
    failure: Option<(PathBuf, io::Error)>,
}

/// A fixed set of threads running [`Job`]s for one extraction, inside the extraction's thread
/// scope (which joins them).
struct Pool {
    digest: Sha256Digest,
    jobs: Mutex<Option<SyncSender<Job>>>,
    state: Arc<(Mutex<PoolState>, Condvar)>,
}

impl Pool {
    fn start<'scope>(
        scope: &'scope Scope<'scope, '_>,
        digest: Sha256Digest,
        dest: &'scope Dir,
    ) -> Self {
        let (tx, rx) = sync_channel::<Job>(4 * POOL_THREADS);
        let rx = Arc::new(Mutex::new(rx));
        let state = Arc::new((Mutex::new(PoolState::default()), Condvar::new()));
        for _ in 0..POOL_THREADS {
            let rx = Arc::clone(&rx);
            let state = Arc::clone(&state);
            scope.spawn(move || work(&rx, &state, dest));
        }
        Pool {
            digest,
            jobs: Mutex::new(Some(tx)),
            state,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a job; waits while the queue is full.
    fn submit(&self, job: Job) {
        self.lock().pending += 1;
        let sent = match &*self.jobs.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(tx) => tx.send(job).is_ok(),
            None => false,
        };
        if !sent {
            finish_job(
                &self.state,
                Err((PathBuf::new(), io::Error::other("extraction pool stopped"))),
            );
        }
    }

    /// Whether a job has failed.
    fn failed(&self) -> bool {
        self.lock().failure.is_some()
    }

    /// Waits until every job submitted so far has finished.
    fn wait_idle(&self) {
        let mut state = self.lock();
        while state.pending > 0 {
            state = self.state.1.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Waits for the queued jobs, stops the threads and returns the first failure.
    fn stop(&self) -> Result<(), StoreError> {
        self.wait_idle();
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).take();
        match self.lock().failure.take() {
            None => Ok(()),
            Some((entry, err)) => Err(StoreError::Extract {
                digest: self.digest,
                entry,
                err,
            }),
        }
    }
}

/// A pool thread: runs jobs until the queue is closed.
fn work(jobs: &Mutex<Receiver<Job>>, state: &(Mutex<PoolState>, Condvar), dest: &Dir) {
    loop {
        let job = match jobs.lock().unwrap_or_else(|e| e.into_inner()).recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        finish_job(state, job.run(dest));
    }
}

fn finish_job(state: &(Mutex<PoolState>, Condvar), result: Result<(), (PathBuf, io::Error)>) {
    let mut guard = state.0.lock().unwrap_or_else(|e| e.into_inner());
    guard.pending -= 1;
    if let Err(failure) = result {
        guard.failure.get_or_insert(failure);
    }
    if guard.pending == 0 {
        state.1.notify_all();
    }
}
