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
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use cap_std::fs::{Dir, OpenOptions, OpenOptionsExt, Permissions, PermissionsExt};
use kiln_core::Sha256Digest;
use tar::EntryType;

use crate::ROOTFS_MOUNT_POINTS;
use crate::error::{HostileEntry, StoreError};

/// Permission bits kept from the archive: rwx for all, and sticky; never setuid or setgid.
const MODE_MASK: u32 = 0o1777;

/// Mode of directories the archive implies but does not list.
const IMPLIED_DIR_MODE: u32 = 0o755;

/// What an extraction produced.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Stats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
}

/// Extracts the tar stream `archive` into `dest`, which should be empty.
pub(crate) fn unpack(
    digest: &Sha256Digest,
    archive: impl Read,
    dest: &Dir,
) -> Result<Stats, StoreError> {
    let mut unpacker = Unpacker {
        digest: *digest,
        dest,
        regular_files: HashSet::new(),
        dirs: HashMap::new(),
        stats: Stats::default(),
    };
    let mut archive = tar::Archive::new(archive);
    let entries = archive.entries().map_err(|err| unpacker.bad_archive(err))?;
    for entry in entries {
        let mut entry = entry.map_err(|err| unpacker.bad_archive(err))?;
        unpacker.entry(&mut entry)?;
    }
    unpacker.finish()
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
    /// Regular files extracted so far: the only valid hard link targets.
    regular_files: HashSet<PathBuf>,
    /// Every directory created, with the mode to give it once all entries are in.
    dirs: HashMap<PathBuf, u32>,
    stats: Stats,
}

impl Unpacker<'_> {
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
                let mut options = OpenOptions::new();
                options.write(true).create_new(true).mode(0o600);
                let mut file = self
                    .dest
                    .open_with(&path, &options)
                    .map_err(|err| self.io_error(&path, err))?;
                io::copy(entry, &mut file).map_err(|err| self.io_error(&path, err))?;
                file.set_permissions(Permissions::from_mode(mode))
                    .and_then(|()| file.sync_all())
                    .map_err(|err| self.io_error(&path, err))?;
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
        for (path, _) in &dirs {
            // A read-only open: cap-std's open_dir() gives an O_PATH handle, which cannot fsync.
            self.dest
                .open(path)
                .and_then(|dir| dir.sync_all())
                .map_err(|err| self.io_error(path, err))?;
        }
        for (path, mode) in &dirs {
            self.dest
                .set_permissions(path, Permissions::from_mode(*mode))
                .map_err(|err| self.io_error(path, err))?;
        }
        self.stats.dirs = dirs.len() as u64;
        Ok(self.stats)
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
