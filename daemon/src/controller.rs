//! The controller: one handle over the data dir's state, store and signing key.
//!
//! Data dir layout: `state.sqlite` (the database), `store/` (the content-addressed store),
//! `keys/kiln.key` + `keys/kiln.pub` (the default signing key, generated on first use).

use std::fs;
use std::path::{Path, PathBuf};

use kiln_attest::keys::KeyPair;
use kiln_core::{BlobKind, MirrorRef, Sha256Digest};
use kiln_mirror::{BlobStore, StoreError};
use time::OffsetDateTime;

use crate::state::{AddOutcome, MirrorEntry, State, StateError};

/// Errors of the controller's own operations.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("cannot create data directory {path}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Key(#[from] kiln_attest::keys::KeyError),
    #[error("{path}: expected a regular file")]
    NotAFile { path: PathBuf },
    #[error("{path}: expected a directory or a tar archive")]
    NotATree { path: PathBuf },
    #[error("{path} has sha256 {actual}, but {expected} was asserted")]
    DigestMismatch {
        path: PathBuf,
        expected: Sha256Digest,
        actual: Sha256Digest,
    },
}

/// The controller's handle on its data dir.
#[derive(Debug)]
pub struct Controller {
    data_dir: PathBuf,
    state: State,
    store: BlobStore,
}

impl Controller {
    /// Opens (creating if needed) the data dir.
    pub async fn open(data_dir: &Path) -> Result<Self, ControllerError> {
        fs::create_dir_all(data_dir).map_err(|source| ControllerError::DataDir {
            path: data_dir.to_owned(),
            source,
        })?;
        let store = BlobStore::open(&data_dir.join("store"))?;
        let state = State::open(&data_dir.join("state.sqlite")).await?;
        Ok(Self {
            data_dir: data_dir.to_owned(),
            state,
            store,
        })
    }

    /// The data dir.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The state database.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The content-addressed store.
    pub fn store(&self) -> &BlobStore {
        &self.store
    }

    /// The signing key at `path`, or the data dir's default key, generated on first use.
    pub fn signing_key(&self, path: Option<&Path>) -> Result<KeyPair, ControllerError> {
        if let Some(path) = path {
            return Ok(KeyPair::from_pkcs8_pem_file(path)?);
        }
        let dir = self.data_dir.join("keys");
        let private = dir.join("kiln.key");
        if !private.exists() {
            fs::create_dir_all(&dir).map_err(|source| ControllerError::DataDir {
                path: dir.clone(),
                source,
            })?;
            let pair = KeyPair::generate()?;
            pair.write_key_files(&dir)?;
            tracing::info!(keyid = %pair.keyid(), path = %private.display(), "generated signing key");
            return Ok(pair);
        }
        Ok(KeyPair::from_pkcs8_pem_file(&private)?)
    }

    /// Adds a single file to the mirror as NAME@VERSION.
    pub async fn mirror_add_file(
        &self,
        path: &Path,
        reference: MirrorRef,
        expected: Option<Sha256Digest>,
    ) -> Result<(MirrorEntry, AddOutcome), ControllerError> {
        let meta = fs::metadata(path).map_err(|_| ControllerError::NotAFile {
            path: path.to_owned(),
        })?;
        let file_name = path.file_name().and_then(|n| n.to_str()).map(str::to_owned);
        let (true, Some(file_name)) = (meta.is_file(), file_name) else {
            return Err(ControllerError::NotAFile {
                path: path.to_owned(),
            });
        };
        let stored = self.store.put_file(path)?;
        check_expected(path, expected, stored.sha256)?;
        self.catalogue(reference, stored, BlobKind::File { file_name })
            .await
    }

    /// Adds a directory (archived deterministically) or a tar archive to the mirror as a tree.
    /// The tree is extracted once before it is catalogued, so a hostile archive is refused now.
    pub async fn mirror_add_tree(
        &self,
        path: &Path,
        reference: MirrorRef,
        as_rootfs: bool,
    ) -> Result<(MirrorEntry, AddOutcome), ControllerError> {
        let meta = fs::metadata(path).map_err(|_| ControllerError::NotATree {
            path: path.to_owned(),
        })?;
        let stored = if meta.is_dir() {
            self.store.put_dir(path)?
        } else if meta.is_file() {
            self.store.put_file(path)?
        } else {
            return Err(ControllerError::NotATree {
                path: path.to_owned(),
            });
        };
        if as_rootfs {
            self.store.rootfs(&stored.sha256)?;
        } else {
            self.store.tree(&stored.sha256)?;
        }
        self.catalogue(reference, stored, BlobKind::Tree).await
    }

    async fn catalogue(
        &self,
        reference: MirrorRef,
        stored: kiln_mirror::Stored,
        kind: BlobKind,
    ) -> Result<(MirrorEntry, AddOutcome), ControllerError> {
        let entry = MirrorEntry {
            reference,
            sha256: stored.sha256,
            kind,
            size: stored.size,
            added_at: OffsetDateTime::now_utc(),
        };
        let outcome = self.state.add_mirror_entry(&entry).await?;
        Ok((entry, outcome))
    }
}

fn check_expected(
    path: &Path,
    expected: Option<Sha256Digest>,
    actual: Sha256Digest,
) -> Result<(), ControllerError> {
    match expected {
        Some(expected) if expected != actual => Err(ControllerError::DigestMismatch {
            path: path.to_owned(),
            expected,
            actual,
        }),
        _ => Ok(()),
    }
}
