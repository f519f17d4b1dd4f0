//! Input staging: make every declared input available as a host directory that the sandbox
//! bind-mounts read-only at `/in/<name>` (git sources at `/src/<name>`).
//!
//! Nothing is copied: a tree input is the store's extracted tree, and a file input (or a
//! step's outputs) is a store *view*, a shared directory of hard links to the stored blobs
//! ([`BlobStore::view`]), so a step's start time does not grow with the size of its inputs.
//! Every file is still checked against its digest before each step: re-hashed in full unless
//! the store verified that very inode and it has not changed since (same device, inode, size,
//! mtime and ctime; docs/mirror.md, "Performance").

use std::path::{Path, PathBuf};
use std::time::Instant;

use kiln_core::{BlobKind, InputSource, MirrorInput, StagedInput};
use kiln_mirror::{BlobStore, ViewFile};
use kiln_sandbox::{InputMount, MountRoot};

use crate::collect::safe_relative;

/// Why an input could not be staged.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("input {input}: {path:?} is not a plain relative path")]
    UnsafePath { input: String, path: String },
    /// The store's error names the digest (and, for a damaged blob, what it hashes to now).
    #[error("input {input}")]
    Store {
        input: String,
        /// The blob that could not be staged, when the store's error names one.
        sha256: Option<kiln_core::Sha256Digest>,
        #[source]
        source: Box<kiln_mirror::StoreError>,
    },
}

/// Checks that every path is a plain relative path before the store sees it, so the error
/// names the input.
fn check_paths<'a>(input: &str, paths: impl Iterator<Item = &'a str>) -> Result<(), StageError> {
    for path in paths {
        if safe_relative(Path::new("/"), path).is_none() {
            return Err(StageError::UnsafePath {
                input: input.to_owned(),
                path: path.to_owned(),
            });
        }
    }
    Ok(())
}

/// The store view holding `files`, as the input `input`.
fn view(store: &BlobStore, input: &str, files: &[ViewFile<'_>]) -> Result<PathBuf, StageError> {
    check_paths(input, files.iter().map(|f| f.path))?;
    store.view(files).map_err(|source| {
        let sha256 = match &source {
            kiln_mirror::StoreError::Corrupt { digest, .. }
            | kiln_mirror::StoreError::Missing { digest }
            | kiln_mirror::StoreError::ReadBlob { digest, .. } => Some(*digest),
            _ => None,
        };
        StageError::Store {
            input: input.to_owned(),
            sha256,
            source: Box::new(source),
        }
    })
}

fn stage_mirror(store: &BlobStore, name: &str, input: &MirrorInput) -> Result<PathBuf, StageError> {
    match &input.kind {
        BlobKind::Tree => store
            .tree(&input.sha256)
            .map_err(|source| StageError::Store {
                input: name.to_owned(),
                sha256: Some(input.sha256),
                source: Box::new(source),
            }),
        BlobKind::File { file_name } => view(
            store,
            name,
            &[ViewFile {
                path: file_name,
                sha256: input.sha256,
                executable: false,
            }],
        ),
    }
}

/// Returns the mounts the sandbox needs for `inputs`, all of them directories inside the store
/// (see the module docs): nothing is staged per step.
pub fn stage_inputs(
    store: &BlobStore,
    inputs: &[StagedInput],
) -> Result<Vec<InputMount>, StageError> {
    let started = Instant::now();
    let mut mounts = Vec::with_capacity(inputs.len());
    for input in inputs {
        let name = &input.mount_name;
        let root = match &input.source {
            InputSource::Git(_) => MountRoot::Src,
            InputSource::Mirror(_) | InputSource::Step { .. } => MountRoot::In,
        };
        let source = match &input.source {
            InputSource::Mirror(mirror) => stage_mirror(store, name, mirror)?,
            // A commit's tree, shared from the store's once-per-digest extraction.
            InputSource::Git(git) => {
                store
                    .tree(&git.sha256)
                    .map_err(|source| StageError::Store {
                        input: name.clone(),
                        sha256: Some(git.sha256),
                        source: Box::new(source),
                    })?
            }
            InputSource::Step { outputs, .. } => {
                let files: Vec<ViewFile<'_>> = outputs
                    .iter()
                    .map(|output| ViewFile {
                        path: &output.path,
                        sha256: output.sha256,
                        executable: output.executable,
                    })
                    .collect();
                view(store, name, &files)?
            }
        };
        mounts.push(InputMount {
            source,
            name: name.clone(),
            root,
        });
    }
    tracing::info!(
        inputs = inputs.len(),
        stage_us = started.elapsed().as_micros() as u64,
        "inputs staged"
    );
    Ok(mounts)
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    use kiln_core::{OutputRecord, Sha256Digest};

    use super::*;

    fn mirror_file(name: &str, sha256: Sha256Digest) -> StagedInput {
        StagedInput {
            mount_name: name.into(),
            source: InputSource::Mirror(MirrorInput {
                reference: "data@1".parse().unwrap(),
                sha256,
                kind: BlobKind::File {
                    file_name: "data.bin".into(),
                },
            }),
        }
    }

    fn stage(store: &BlobStore, inputs: &[StagedInput]) -> Result<Vec<InputMount>, StageError> {
        stage_inputs(store, inputs)
    }

    /// Overwrites a stored blob's bytes in place, keeping its size.
    fn tamper(store: &BlobStore, digest: &Sha256Digest) {
        let hex = digest.to_string();
        let path = store.root().join("blobs/sha256").join(&hex[..2]).join(&hex);
        let mut bytes = fs::read(&path).unwrap();
        bytes[0] ^= 0xff;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let mut file = fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all(&bytes).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o444)).unwrap();
    }

    #[test]
    fn file_and_step_inputs_are_mounted_from_the_store_not_copied() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(&dir.path().join("store")).unwrap();
        let data = store.put_reader(&b"data"[..]).unwrap();
        let tool = store.put_reader(&b"#!/bin/sh\n"[..]).unwrap();
        let inputs = [
            mirror_file("src", data.sha256),
            StagedInput {
                mount_name: "build".into(),
                source: InputSource::Step {
                    step: "build".into(),
                    outputs: vec![OutputRecord {
                        path: "bin/tool".into(),
                        sha256: tool.sha256,
                        size: tool.size,
                        executable: true,
                    }],
                },
            },
        ];
        let mounts = stage(&store, &inputs).unwrap();
        assert_eq!(mounts.len(), 2);
        for mount in &mounts {
            assert!(mount.source.starts_with(store.root()), "{mount:?}");
        }
        assert_eq!(
            fs::read(mounts[0].source.join("data.bin")).unwrap(),
            b"data"
        );
        let tool_mode = fs::metadata(mounts[1].source.join("bin/tool"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(tool_mode & 0o777, 0o555);
    }

    #[test]
    fn a_verified_blob_changed_on_disk_fails_the_next_stage() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(&dir.path().join("store")).unwrap();
        let data = store.put_reader(&vec![3u8; 1 << 20][..]).unwrap();
        let inputs = [mirror_file("src", data.sha256)];
        stage(&store, &inputs).unwrap();
        // Old enough for the store to trust its fingerprint from now on.
        std::thread::sleep(Duration::from_millis(2100));
        stage(&store, &inputs).unwrap();

        tamper(&store, &data.sha256);
        let err = stage(&store, &inputs).unwrap_err();
        let line = crate::error_chain(&err);
        assert!(line.starts_with("input src: "), "{line}");
        assert!(line.contains(&data.sha256.to_string()), "{line}");
        assert!(line.contains("does not match"), "{line}");
        assert!(!line.contains('\n'), "{line}");
    }
}
