//! The published set of provenance keys, so that rotating the signing key does not orphan what
//! the old one signed: `DIR/keyring.json` lists every key the data dir ever signed with, its
//! public half and its validity (`not_before`, and `not_after` once retired). `kiln keys
//! rotate` makes a new key, retires the old one (its private half is deleted; its public half
//! stays here) and `kiln keys export` prints the set; `kiln verify --keyring` accepts a
//! signature by any key of the set whose validity covers the build's finish time.
//!
//! Format (`kiln.dev/keyring/v1`, JSON):
//!
//! ```json
//! { "format": "kiln.dev/keyring/v1",
//!   "keys": [ { "keyid": "…", "algorithm": "ecdsa-p256-sha256", "public_key": "-----BEGIN PUBLIC KEY-----…",
//!               "not_before": "2026-11-22T00:00:00Z", "not_after": null } ] }
//! ```

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::keys::{KeyError, KeyPair, PRIVATE_KEY_FILE, PUBLIC_KEY_FILE, PublicKey};

/// File name of the keyring inside a key directory.
pub const KEYRING_FILE: &str = "keyring.json";
/// The keyring's format identifier.
pub const KEYRING_FORMAT: &str = "kiln.dev/keyring/v1";

/// Why a keyring cannot be read, written or rotated.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("cannot read keyring {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        err: std::io::Error,
    },
    #[error("keyring {} is not a {KEYRING_FORMAT} document: {detail}", path.display())]
    Parse { path: PathBuf, detail: String },
    #[error("cannot write keyring {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        err: std::io::Error,
    },
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// One key of the set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyringEntry {
    pub keyid: String,
    pub algorithm: String,
    /// SPKI PEM.
    pub public_key: String,
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    /// `None` while the key signs.
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub not_after: Option<OffsetDateTime>,
}

impl KeyringEntry {
    /// Whether the key was valid at `at`.
    pub fn valid_at(&self, at: OffsetDateTime) -> bool {
        self.not_before <= at && self.not_after.is_none_or(|end| at <= end)
    }

    /// The parsed public key.
    pub fn public_key(&self) -> Result<PublicKey, KeyError> {
        PublicKey::from_spki_pem(self.public_key.as_bytes()).map_err(|err| KeyError::Parse {
            path: PathBuf::from(format!("keyring entry {}", self.keyid)),
            err,
        })
    }
}

/// Every key a data dir signed with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Keyring {
    pub format: String,
    pub keys: Vec<KeyringEntry>,
}

impl Keyring {
    /// Reads a keyring file (as `kiln keys export --json` writes it).
    pub fn load(path: &Path) -> Result<Self, KeyringError> {
        let text = fs::read_to_string(path).map_err(|err| KeyringError::Read {
            path: path.to_owned(),
            err,
        })?;
        let ring: Self = serde_json::from_str(&text).map_err(|e| KeyringError::Parse {
            path: path.to_owned(),
            detail: e.to_string(),
        })?;
        if ring.format != KEYRING_FORMAT {
            return Err(KeyringError::Parse {
                path: path.to_owned(),
                detail: format!("format is {:?}", ring.format),
            });
        }
        Ok(ring)
    }

    /// The keyring of key directory `dir`: its file, or — before the first rotation — one
    /// made from the active key, valid since its file was written.
    pub fn of_dir(dir: &Path) -> Result<Self, KeyringError> {
        let path = dir.join(KEYRING_FILE);
        if path.exists() {
            return Self::load(&path);
        }
        let pair = KeyPair::from_pkcs8_pem_file(&dir.join(PRIVATE_KEY_FILE))?;
        let since = fs::metadata(dir.join(PRIVATE_KEY_FILE))
            .and_then(|m| m.modified())
            .map(OffsetDateTime::from)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        Ok(Self {
            format: KEYRING_FORMAT.into(),
            keys: vec![entry(&pair, since)?],
        })
    }

    /// The keys valid at `at`.
    pub fn valid_at(&self, at: OffsetDateTime) -> impl Iterator<Item = &KeyringEntry> {
        self.keys.iter().filter(move |k| k.valid_at(at))
    }
}

fn entry(pair: &KeyPair, since: OffsetDateTime) -> Result<KeyringEntry, KeyError> {
    Ok(KeyringEntry {
        keyid: pair.keyid().to_string(),
        algorithm: pair.public_key().algorithm().to_string(),
        public_key: pair.public_key_pem()?,
        not_before: since,
        not_after: None,
    })
}

/// Retires the active key of `dir` at `now` and makes a new one: the keyring gains the new key
/// and the old one's `not_after`; the old private key is deleted. Returns the new key.
///
/// Order, so that a crash at any point leaves a usable directory: the new pair is written
/// under temporary names, the keyring (listing both) is replaced, then the new pair is renamed
/// over the old one.
pub fn rotate(dir: &Path, now: OffsetDateTime) -> Result<KeyPair, KeyringError> {
    let mut ring = Keyring::of_dir(dir)?;
    let new = KeyPair::generate()?;
    let staging = dir.join(".rotating");
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir(&staging).map_err(|err| KeyringError::Write {
        path: staging.clone(),
        err,
    })?;
    new.write_key_files(&staging)?;
    for key in ring.keys.iter_mut().filter(|k| k.not_after.is_none()) {
        key.not_after = Some(now);
    }
    ring.keys.push(entry(&new, now)?);
    write_atomically(&dir.join(KEYRING_FILE), &ring)?;
    for file in [PRIVATE_KEY_FILE, PUBLIC_KEY_FILE] {
        let (from, to) = (staging.join(file), dir.join(file));
        fs::rename(&from, &to).map_err(|err| KeyringError::Write { path: to, err })?;
    }
    let _ = fs::remove_dir(&staging);
    Ok(new)
}

fn write_atomically(path: &Path, ring: &Keyring) -> Result<(), KeyringError> {
    let write_err = |err| KeyringError::Write {
        path: path.to_owned(),
        err,
    };
    let tmp = path.with_extension("json.tmp");
    let mut text = serde_json::to_string_pretty(ring).expect("a keyring serialises");
    text.push('\n');
    let mut file = fs::File::create(&tmp).map_err(write_err)?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(write_err)?;
    fs::rename(&tmp, path).map_err(write_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_retires_the_old_key_and_keeps_its_public_half() {
        let dir = tempfile::tempdir().unwrap();
        let old = KeyPair::generate().unwrap();
        old.write_key_files(dir.path()).unwrap();
        // Rotated a while after the old key was written (its file's time is its not_before).
        let t0 = OffsetDateTime::now_utc() + time::Duration::seconds(10);
        let new = rotate(dir.path(), t0).unwrap();
        let ring = Keyring::load(&dir.path().join(KEYRING_FILE)).unwrap();
        assert_eq!(ring.keys.len(), 2);
        assert_eq!(ring.keys[0].keyid, old.keyid().to_string());
        assert_eq!(ring.keys[0].not_after, Some(t0));
        assert_eq!(ring.keys[1].keyid, new.keyid().to_string());
        assert_eq!(ring.keys[1].not_after, None);
        // The active key on disk is the new one; the old private key is gone.
        let active = KeyPair::from_pkcs8_pem_file(&dir.path().join(PRIVATE_KEY_FILE)).unwrap();
        assert_eq!(active.keyid(), new.keyid());
        assert!(!dir.path().join(".rotating").exists());
        // Validity: the old key before t0, the new one after.
        let before = t0 - time::Duration::seconds(1);
        let after = t0 + time::Duration::seconds(1);
        let ids = |at| {
            ring.valid_at(at)
                .map(|k| k.keyid.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(after), [new.keyid().to_string()]);
        assert!(ids(before).contains(&old.keyid().to_string()));
        assert!(!ids(before).contains(&new.keyid().to_string()));
        ring.keys[0].public_key().unwrap();
    }

    #[test]
    fn a_keyring_of_another_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ring.json");
        fs::write(&path, r#"{"format": "other/v1", "keys": []}"#).unwrap();
        assert!(matches!(
            Keyring::load(&path),
            Err(KeyringError::Parse { .. })
        ));
    }
}
