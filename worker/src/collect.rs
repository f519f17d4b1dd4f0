//! Output collection: take the declared outputs from a finished step's `/out` into the store.
//!
//! Only regular files and directories are taken. Anything else anywhere under `/out` — a
//! symlink (wherever it points), a file with more than one hard link, a device node, a fifo, a
//! socket — fails the step: a step's output is data, never a pointer into the host. All access
//! goes through a cap-std `Dir`, so no path the step left behind can lead outside `/out`.

use std::io;
use std::path::{Path, PathBuf};

use cap_std::ambient_authority;
use cap_std::fs::{Dir, FileType, Metadata};
use kiln_core::OutputRecord;
use kiln_mirror::BlobStore;

/// Why a step's outputs were refused.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("cannot read /out/{path}")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "output /out/{path} is a symlink (to {target}); only regular files and directories are collected"
    )]
    Symlink { path: String, target: String },
    #[error(
        "output /out/{path} has {links} hard links; only files with a single link are collected"
    )]
    HardLink { path: String, links: u64 },
    #[error("output /out/{path} is a {kind}; only regular files and directories are collected")]
    Special { path: String, kind: &'static str },
    #[error("/out holds {total} bytes, over the output limit of {max_bytes} bytes")]
    TooLarge { total: u64, max_bytes: u64 },
    #[error("declared output /out/{path} was not produced by the step")]
    Missing { path: String },
    #[error("cannot store output /out/{path}")]
    Store {
        path: String,
        #[source]
        source: Box<kiln_mirror::StoreError>,
    },
}

fn kind_name(ft: FileType) -> &'static str {
    use cap_std::fs::FileTypeExt;
    if ft.is_block_device() {
        "block device"
    } else if ft.is_char_device() {
        "character device"
    } else if ft.is_fifo() {
        "fifo"
    } else if ft.is_socket() {
        "socket"
    } else {
        "special file"
    }
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}/{name}")
    }
}

/// Refuses the whole tree if anything in it is not a plain file or directory; adds the sizes of
/// its files to `total`.
fn check_tree(dir: &Dir, prefix: &str, total: &mut u64) -> Result<(), CollectError> {
    let read = |source| CollectError::Read {
        path: prefix.to_owned(),
        source,
    };
    for entry in dir.entries().map_err(read)? {
        let entry = entry.map_err(read)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = join(prefix, &name);
        let meta = entry.metadata().map_err(|source| CollectError::Read {
            path: path.clone(),
            source,
        })?;
        check_entry(dir, &name, &path, &meta)?;
        *total = total.saturating_add(if meta.is_file() { meta.len() } else { 0 });
        if meta.is_dir() {
            let sub = dir.open_dir(&name).map_err(|source| CollectError::Read {
                path: path.clone(),
                source,
            })?;
            check_tree(&sub, &path, total)?;
        }
    }
    Ok(())
}

fn check_entry(dir: &Dir, name: &str, path: &str, meta: &Metadata) -> Result<(), CollectError> {
    use cap_std::fs::MetadataExt;
    let ft = meta.file_type();
    if ft.is_symlink() {
        let target = dir
            .read_link_contents(name)
            .map(|t| t.display().to_string())
            .unwrap_or_else(|_| "an unreadable target".into());
        return Err(CollectError::Symlink {
            path: path.to_owned(),
            target,
        });
    }
    if ft.is_file() && meta.nlink() > 1 {
        return Err(CollectError::HardLink {
            path: path.to_owned(),
            links: meta.nlink(),
        });
    }
    if !ft.is_file() && !ft.is_dir() {
        return Err(CollectError::Special {
            path: path.to_owned(),
            kind: kind_name(ft),
        });
    }
    Ok(())
}

fn store_file(
    dir: &Dir,
    path: &str,
    store: &BlobStore,
    out: &mut Vec<OutputRecord>,
) -> Result<(), CollectError> {
    use cap_std::fs::PermissionsExt;
    let file = dir.open(path).map_err(|source| CollectError::Read {
        path: path.to_owned(),
        source,
    })?;
    let meta = file.metadata().map_err(|source| CollectError::Read {
        path: path.to_owned(),
        source,
    })?;
    let stored = store
        .put_reader(file.into_std())
        .map_err(|source| CollectError::Store {
            path: path.to_owned(),
            source: Box::new(source),
        })?;
    out.push(OutputRecord {
        path: path.to_owned(),
        sha256: stored.sha256,
        size: stored.size,
        executable: meta.permissions().mode() & 0o111 != 0,
    });
    Ok(())
}

fn store_dir(
    dir: &Dir,
    prefix: &str,
    store: &BlobStore,
    out: &mut Vec<OutputRecord>,
) -> Result<(), CollectError> {
    let sub = dir.open_dir(prefix).map_err(|source| CollectError::Read {
        path: prefix.to_owned(),
        source,
    })?;
    let mut names: Vec<String> = sub
        .entries()
        .map_err(|source| CollectError::Read {
            path: prefix.to_owned(),
            source,
        })?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in &names {
        let path = join(prefix, name);
        let meta = dir
            .symlink_metadata(&path)
            .map_err(|source| CollectError::Read {
                path: path.clone(),
                source,
            })?;
        if meta.is_dir() {
            store_dir(dir, &path, store, out)?;
        } else {
            store_file(dir, &path, store, out)?;
        }
    }
    Ok(())
}

/// Checks everything under `out_dir`, then stores each declared output (a file, or a directory
/// taken whole) and returns the records sorted by path.
pub fn collect(
    out_dir: &Path,
    declared: &[String],
    store: &BlobStore,
    max_bytes: u64,
) -> Result<Vec<OutputRecord>, CollectError> {
    let dir = Dir::open_ambient_dir(out_dir, ambient_authority()).map_err(|source| {
        CollectError::Read {
            path: String::new(),
            source,
        }
    })?;
    let mut total = 0;
    check_tree(&dir, "", &mut total)?;
    if total > max_bytes {
        return Err(CollectError::TooLarge { total, max_bytes });
    }
    let mut records = Vec::new();
    for path in declared {
        let meta = match dir.symlink_metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(CollectError::Missing { path: path.clone() });
            }
            Err(source) => {
                return Err(CollectError::Read {
                    path: path.clone(),
                    source,
                });
            }
        };
        if meta.is_dir() {
            store_dir(&dir, path, store, &mut records)?;
        } else {
            store_file(&dir, path, store, &mut records)?;
        }
    }
    records.sort_by(|a, b| a.path.cmp(&b.path));
    records.dedup_by(|a, b| a.path == b.path);
    Ok(records)
}

/// The host path of an output inside a staged directory, refusing any path that could leave it.
pub(crate) fn safe_relative(root: &Path, rel: &str) -> Option<PathBuf> {
    let p = Path::new(rel);
    let ok = !rel.is_empty()
        && p.components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
    ok.then(|| root.join(p))
}
