//! Input staging: make every declared input available as a host directory that the sandbox
//! bind-mounts read-only at `/in/<name>` (git sources at `/src/<name>`). Every byte comes from
//! the store and is re-verified on the way out.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use kiln_core::{BlobKind, InputSource, MirrorInput, StagedInput};
use kiln_mirror::BlobStore;
use kiln_sandbox::{InputMount, MountRoot};

use crate::collect::safe_relative;

/// Why an input could not be staged.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("cannot create staging directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("input {input}: {path:?} is not a plain relative path")]
    UnsafePath { input: String, path: String },
    #[error("input {input}: cannot take {sha256} from the store")]
    Store {
        input: String,
        sha256: kiln_core::Sha256Digest,
        #[source]
        source: Box<kiln_mirror::StoreError>,
    },
}

fn create_dir(path: &Path) -> Result<(), StageError> {
    fs::create_dir_all(path).map_err(|source| StageError::CreateDir {
        path: path.to_owned(),
        source,
    })
}

fn copy_blob(
    store: &BlobStore,
    input: &str,
    dest_root: &Path,
    rel: &str,
    sha256: &kiln_core::Sha256Digest,
    executable: bool,
) -> Result<(), StageError> {
    let dest = safe_relative(dest_root, rel).ok_or_else(|| StageError::UnsafePath {
        input: input.to_owned(),
        path: rel.to_owned(),
    })?;
    if let Some(parent) = dest.parent() {
        create_dir(parent)?;
    }
    store
        .copy_out(sha256, &dest, executable)
        .map_err(|source| StageError::Store {
            input: input.to_owned(),
            sha256: *sha256,
            source: Box::new(source),
        })
}

fn stage_mirror(
    store: &BlobStore,
    name: &str,
    input: &MirrorInput,
    in_root: &Path,
) -> Result<PathBuf, StageError> {
    match &input.kind {
        BlobKind::Tree => store
            .tree(&input.sha256)
            .map_err(|source| StageError::Store {
                input: name.to_owned(),
                sha256: input.sha256,
                source: Box::new(source),
            }),
        BlobKind::File { file_name } => {
            let dir = in_root.join(name);
            create_dir(&dir)?;
            copy_blob(store, name, &dir, file_name, &input.sha256, false)?;
            Ok(dir)
        }
    }
}

/// Stages every input under `in_root` (mirror trees are shared from the store's extracted copy)
/// and returns the mounts the sandbox needs.
pub fn stage_inputs(
    store: &BlobStore,
    inputs: &[StagedInput],
    in_root: &Path,
) -> Result<Vec<InputMount>, StageError> {
    let mut mounts = Vec::with_capacity(inputs.len());
    for input in inputs {
        let name = &input.mount_name;
        let root = match &input.source {
            InputSource::Git(_) => MountRoot::Src,
            InputSource::Mirror(_) | InputSource::Step { .. } => MountRoot::In,
        };
        let source = match &input.source {
            InputSource::Mirror(mirror) => stage_mirror(store, name, mirror, in_root)?,
            // A commit's tree, shared from the store's once-per-digest extraction.
            InputSource::Git(git) => {
                store
                    .tree(&git.sha256)
                    .map_err(|source| StageError::Store {
                        input: name.clone(),
                        sha256: git.sha256,
                        source: Box::new(source),
                    })?
            }
            InputSource::Step { outputs, .. } => {
                let dir = in_root.join(name);
                create_dir(&dir)?;
                for output in outputs {
                    copy_blob(
                        store,
                        name,
                        &dir,
                        &output.path,
                        &output.sha256,
                        output.executable,
                    )?;
                }
                dir
            }
        };
        mounts.push(InputMount {
            source,
            name: name.clone(),
            root,
        });
    }
    Ok(mounts)
}
