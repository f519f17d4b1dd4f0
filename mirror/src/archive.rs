//! Deterministic tar archives of directory trees.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use tar::{EntryType, Header};

use crate::error::StoreError;

/// Writes a tar archive of everything under `dir` (not `dir` itself) to `out`.
///
/// The archive depends only on the tree's names, contents, modes and symlink targets, so the
/// same tree always archives to the same bytes and therefore the same digest: entries are sorted
/// by name byte-wise, depth first; mtime, uid and gid are 0; user and group names are empty.
/// Regular files, directories and symlinks (as symlinks, never followed) are archived; hard
/// links become independent copies; device nodes, fifos and sockets are skipped with a warning.
pub fn archive_dir(dir: &Path, out: impl Write) -> Result<(), StoreError> {
    let mut builder = tar::Builder::new(out);
    append_children(&mut builder, dir, Path::new(""))?;
    builder
        .into_inner()
        .and_then(|mut out| out.flush())
        .map_err(|err| StoreError::Archive {
            path: dir.to_path_buf(),
            err,
        })
}

fn append_children<W: Write>(
    builder: &mut tar::Builder<W>,
    root: &Path,
    rel: &Path,
) -> Result<(), StoreError> {
    let abs = root.join(rel);
    let archive_error = |path: &Path, err| StoreError::Archive {
        path: path.to_path_buf(),
        err,
    };
    let mut names = fs::read_dir(&abs)
        .and_then(|entries| {
            entries
                .map(|e| e.map(|e| e.file_name()))
                .collect::<io::Result<Vec<OsString>>>()
        })
        .map_err(|err| archive_error(&abs, err))?;
    // OsString orders by bytes on Unix, independent of locale and readdir order.
    names.sort();

    for name in names {
        let rel_child = rel.join(&name);
        let abs_child = root.join(&rel_child);
        let meta =
            fs::symlink_metadata(&abs_child).map_err(|err| archive_error(&abs_child, err))?;
        let file_type = meta.file_type();
        let mut header = Header::new_gnu();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mode(meta.permissions().mode() & 0o7777);
        header.set_size(0);

        if file_type.is_dir() {
            header.set_entry_type(EntryType::Directory);
            builder
                .append_data(&mut header, &rel_child, io::empty())
                .map_err(|err| archive_error(&abs_child, err))?;
            append_children(builder, root, &rel_child)?;
        } else if file_type.is_file() {
            header.set_entry_type(EntryType::Regular);
            header.set_size(meta.len());
            let file = File::open(&abs_child).map_err(|err| archive_error(&abs_child, err))?;
            // Read exactly the size in the header; a file that changes size while being read
            // would otherwise produce a broken archive.
            let mut reader = file.take(meta.len());
            builder
                .append_data(&mut header, &rel_child, &mut reader)
                .map_err(|err| archive_error(&abs_child, err))?;
            if reader.limit() != 0 {
                return Err(archive_error(
                    &abs_child,
                    io::Error::other("file shrank while being archived; archive it again"),
                ));
            }
        } else if file_type.is_symlink() {
            header.set_entry_type(EntryType::Symlink);
            let target = fs::read_link(&abs_child).map_err(|err| archive_error(&abs_child, err))?;
            builder
                .append_link(&mut header, &rel_child, &target)
                .map_err(|err| archive_error(&abs_child, err))?;
        } else {
            tracing::warn!(
                path = %abs_child.display(),
                "skipping a device node, fifo or socket: it cannot be archived"
            );
        }
    }
    Ok(())
}
