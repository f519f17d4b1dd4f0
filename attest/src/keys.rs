//! Signing keys and verification keys.
//!
//! kiln signs with ECDSA P-256 / SHA-256 (ASN.1 DER signatures). The private key lives in a
//! PKCS#8 PEM file (`kiln.key`, mode 0600), the public key in an SPKI PEM file (`kiln.pub`).
//! A key's id is the lowercase hex SHA-256 of its DER SubjectPublicKeyInfo.
//!
//! All key generation, signing and verification goes through the `sigstore` crate; this module
//! only moves bytes between files and sigstore's types.
//!
//! Invariant: key material is never logged, printed by `Debug`, or written with permissions
//! wider than 0600.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use kiln_core::Sha256Digest;
use sigstore::crypto::signing_key::SigStoreKeyPair;
use sigstore::crypto::{CosignVerificationKey, SigStoreSigner, Signature, SigningScheme};
use sigstore::errors::SigstoreError;

/// File name of the private key inside a key directory.
pub const PRIVATE_KEY_FILE: &str = "kiln.key";
/// File name of the public key inside a key directory.
pub const PUBLIC_KEY_FILE: &str = "kiln.pub";

/// The signature algorithms kiln accepts. Keys kiln generates are always [`Self::EcdsaP256Sha256`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyAlgorithm {
    /// ECDSA over NIST P-256 with SHA-256, ASN.1 DER signatures.
    EcdsaP256Sha256,
    /// Ed25519 (verification only: lets kiln check envelopes from other DSSE signers).
    Ed25519,
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::EcdsaP256Sha256 => "ecdsa-p256-sha256",
            Self::Ed25519 => "ed25519",
        })
    }
}

/// A key id: lowercase hex SHA-256 of the DER-encoded SubjectPublicKeyInfo.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(Sha256Digest);

impl KeyId {
    /// The key id of a DER-encoded SubjectPublicKeyInfo.
    pub fn of_spki_der(spki_der: &[u8]) -> Self {
        Self(Sha256Digest::of(spki_der))
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// Why bytes are not a key kiln can use. Carries no path: see [`KeyError::Parse`].
#[derive(Debug, thiserror::Error)]
pub enum KeyParseError {
    #[error("not a PKCS#8 PEM private key (\"-----BEGIN PRIVATE KEY-----\")")]
    PrivateKey(#[source] SigstoreError),
    #[error("private key is not an ECDSA P-256 key: kiln signs with ECDSA P-256 only")]
    NotP256(#[source] SigstoreError),
    #[error("not an SPKI PEM public key (\"-----BEGIN PUBLIC KEY-----\")")]
    PublicKey(#[source] SigstoreError),
    #[error("unsupported public key algorithm: expected ECDSA P-256 or Ed25519")]
    UnsupportedAlgorithm,
    #[error("cannot export the public key")]
    ExportPublic(#[source] SigstoreError),
}

/// Key handling failures, each with the file involved where there is one.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot generate an ECDSA P-256 key")]
    Generate(#[source] SigstoreError),
    #[error("the generated key's public half does not parse")]
    Generated(#[source] KeyParseError),
    #[error("cannot export the key")]
    Export(#[source] SigstoreError),
    #[error("cannot read key file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        err: io::Error,
    },
    #[error("key file {} already exists: refusing to overwrite it; move it away first", path.display())]
    Exists { path: PathBuf },
    #[error("cannot write key file {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        err: io::Error,
    },
    #[error("invalid key file {}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        err: KeyParseError,
    },
    #[error("signing failed")]
    Sign(#[source] SigstoreError),
}

/// A public key that signatures can be checked against.
#[derive(Clone)]
pub struct PublicKey {
    key: CosignVerificationKey,
    algorithm: KeyAlgorithm,
    spki_der: Vec<u8>,
    keyid: KeyId,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("algorithm", &self.algorithm)
            .field("keyid", &self.keyid.to_string())
            .finish()
    }
}

impl PublicKey {
    /// Parses a DER SubjectPublicKeyInfo; the algorithm is read from the key itself.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, KeyParseError> {
        let key = CosignVerificationKey::try_from_der(der).map_err(KeyParseError::PublicKey)?;
        let algorithm = match key {
            CosignVerificationKey::ECDSA_P256_SHA256_ASN1(_) => KeyAlgorithm::EcdsaP256Sha256,
            CosignVerificationKey::ED25519(_) => KeyAlgorithm::Ed25519,
            _ => return Err(KeyParseError::UnsupportedAlgorithm),
        };
        Ok(Self {
            key,
            algorithm,
            spki_der: der.to_vec(),
            keyid: KeyId::of_spki_der(der),
        })
    }

    /// Parses an SPKI PEM public key (`-----BEGIN PUBLIC KEY-----`).
    pub fn from_spki_pem(pem: &[u8]) -> Result<Self, KeyParseError> {
        // Let sigstore parse the PEM; then re-read the DER it holds, so the key id is computed
        // over exactly the bytes that verification uses.
        let key = CosignVerificationKey::try_from_pem(pem).map_err(KeyParseError::PublicKey)?;
        let der = match &key {
            CosignVerificationKey::ECDSA_P256_SHA256_ASN1(der)
            | CosignVerificationKey::ED25519(der) => der.clone(),
            _ => return Err(KeyParseError::UnsupportedAlgorithm),
        };
        Self::from_spki_der(&der)
    }

    /// Reads an SPKI PEM public key file such as `kiln.pub`.
    pub fn from_spki_pem_file(path: &Path) -> Result<Self, KeyError> {
        let pem = fs::read(path).map_err(|err| KeyError::Read {
            path: path.to_owned(),
            err,
        })?;
        Self::from_spki_pem(&pem).map_err(|err| KeyError::Parse {
            path: path.to_owned(),
            err,
        })
    }

    /// The key id: lowercase hex SHA-256 of [`Self::spki_der`].
    pub fn keyid(&self) -> &KeyId {
        &self.keyid
    }

    /// The key's signature algorithm.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    /// The DER-encoded SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// Whether `sig` (raw signature bytes: ASN.1 DER for ECDSA) is valid for `msg` under this key.
    pub fn verifies(&self, sig: &[u8], msg: &[u8]) -> bool {
        self.key.verify_signature(Signature::Raw(sig), msg).is_ok()
    }
}

/// A kiln signing key: ECDSA P-256 private key with its public half.
pub struct KeyPair {
    signer: SigStoreSigner,
    public: PublicKey,
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair")
            .field("keyid", &self.public.keyid.to_string())
            .finish_non_exhaustive()
    }
}

/// Where [`KeyPair::write_key_files`] put the keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyFiles {
    pub private_key: PathBuf,
    pub public_key: PathBuf,
}

impl KeyPair {
    /// Generates a fresh ECDSA P-256 key pair.
    pub fn generate() -> Result<Self, KeyError> {
        let signer = SigningScheme::ECDSA_P256_SHA256_ASN1
            .create_signer()
            .map_err(KeyError::Generate)?;
        let spki_der = signer
            .to_sigstore_keypair()
            .and_then(|kp| kp.public_key_to_der())
            .map_err(KeyError::Export)?;
        let public = PublicKey::from_spki_der(&spki_der).map_err(KeyError::Generated)?;
        Ok(Self { signer, public })
    }

    /// Parses an unencrypted PKCS#8 PEM private key (`-----BEGIN PRIVATE KEY-----`), which must
    /// be an ECDSA P-256 key.
    pub fn from_pkcs8_pem(pem: &[u8]) -> Result<Self, KeyParseError> {
        let pair = SigStoreKeyPair::from_pem(pem).map_err(KeyParseError::PrivateKey)?;
        let signer = pair
            .to_sigstore_signer(&SigningScheme::ECDSA_P256_SHA256_ASN1)
            .map_err(KeyParseError::NotP256)?;
        let spki_der = pair
            .public_key_to_der()
            .map_err(KeyParseError::ExportPublic)?;
        let public = PublicKey::from_spki_der(&spki_der)?;
        Ok(Self { signer, public })
    }

    /// Reads a PKCS#8 PEM private key file such as `kiln.key`.
    pub fn from_pkcs8_pem_file(path: &Path) -> Result<Self, KeyError> {
        let pem = fs::read(path).map_err(|err| KeyError::Read {
            path: path.to_owned(),
            err,
        })?;
        Self::from_pkcs8_pem(&pem).map_err(|err| KeyError::Parse {
            path: path.to_owned(),
            err,
        })
    }

    /// The public half.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// The key id of the public half.
    pub fn keyid(&self) -> &KeyId {
        self.public.keyid()
    }

    /// The public key as SPKI PEM.
    pub fn public_key_pem(&self) -> Result<String, KeyError> {
        self.signer
            .to_sigstore_keypair()
            .and_then(|kp| kp.public_key_to_pem())
            .map_err(KeyError::Export)
    }

    /// Signs `msg` (ECDSA P-256 over SHA-256(msg)); returns the ASN.1 DER signature.
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, KeyError> {
        self.signer.sign(msg).map_err(KeyError::Sign)
    }

    /// Writes `DIR/kiln.key` (PKCS#8 PEM, created with mode 0600) and `DIR/kiln.pub` (SPKI PEM,
    /// mode 0644). Refuses to overwrite either file.
    ///
    /// The private key file is created with its final mode in the `open` call itself, so it is
    /// never readable by others, not even between creation and a later `chmod`.
    pub fn write_key_files(&self, dir: &Path) -> Result<KeyFiles, KeyError> {
        let private_key = dir.join(PRIVATE_KEY_FILE);
        let public_key = dir.join(PUBLIC_KEY_FILE);
        for path in [&private_key, &public_key] {
            if fs::symlink_metadata(path).is_ok() {
                return Err(KeyError::Exists { path: path.clone() });
            }
        }
        let pair = self
            .signer
            .to_sigstore_keypair()
            .map_err(KeyError::Export)?;
        let pkcs8_pem = pair.private_key_to_pem().map_err(KeyError::Export)?;
        let spki_pem = pair.public_key_to_pem().map_err(KeyError::Export)?;
        write_new_file(&private_key, 0o600, pkcs8_pem.as_bytes())?;
        write_new_file(&public_key, 0o644, spki_pem.as_bytes())?;
        Ok(KeyFiles {
            private_key,
            public_key,
        })
    }
}

/// Creates `path` (which must not exist) with `mode` and writes `bytes` to it, durably.
fn write_new_file(path: &Path, mode: u32, bytes: &[u8]) -> Result<(), KeyError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|err| match err.kind() {
            io::ErrorKind::AlreadyExists => KeyError::Exists {
                path: path.to_owned(),
            },
            _ => KeyError::Write {
                path: path.to_owned(),
                err,
            },
        })?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|err| KeyError::Write {
            path: path.to_owned(),
            err,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::process::{Command, Stdio};

    #[test]
    fn private_key_file_is_created_mode_0600_and_public_0644() {
        let dir = tempfile::tempdir().unwrap();
        let key = KeyPair::generate().unwrap();
        let files = key.write_key_files(dir.path()).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&files.private_key), 0o600);
        // umask may narrow the public key's mode, never widen it.
        assert_eq!(mode(&files.public_key) & !0o644, 0);
        let pem = fs::read_to_string(&files.private_key).unwrap();
        assert!(
            pem.starts_with("-----BEGIN PRIVATE KEY-----"),
            "{}",
            &pem[..30]
        );
    }

    #[test]
    fn write_key_files_refuses_to_overwrite_an_existing_key() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(PRIVATE_KEY_FILE), b"old").unwrap();
        let err = KeyPair::generate()
            .unwrap()
            .write_key_files(dir.path())
            .unwrap_err();
        assert!(matches!(err, KeyError::Exists { .. }), "{err:?}");
        assert_eq!(fs::read(dir.path().join(PRIVATE_KEY_FILE)).unwrap(), b"old");
    }

    #[test]
    fn key_files_load_back_to_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = KeyPair::generate().unwrap();
        let files = key.write_key_files(dir.path()).unwrap();
        let loaded = KeyPair::from_pkcs8_pem_file(&files.private_key).unwrap();
        let public = PublicKey::from_spki_pem_file(&files.public_key).unwrap();
        assert_eq!(loaded.keyid(), key.keyid());
        assert_eq!(public.keyid(), key.keyid());
        assert_eq!(public.algorithm(), KeyAlgorithm::EcdsaP256Sha256);
        let sig = loaded.sign(b"msg").unwrap();
        assert!(public.verifies(&sig, b"msg"));
        assert!(!public.verifies(&sig, b"msh"));
    }

    #[test]
    fn keyid_is_sha256_of_der_spki_as_computed_by_openssl() {
        let dir = tempfile::tempdir().unwrap();
        let key = KeyPair::generate().unwrap();
        let files = key.write_key_files(dir.path()).unwrap();
        let out = Command::new("openssl")
            .args(["pkey", "-pubin", "-outform", "DER", "-in"])
            .arg(&files.public_key)
            .stderr(Stdio::inherit())
            .output()
            .expect("openssl must be installed for this test");
        assert!(out.status.success(), "openssl pkey failed");
        let der = out.stdout;
        // Independent hash: sha256sum, not the sha2 crate kiln uses.
        let mut child = Command::new("sha256sum")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("sha256sum must be installed for this test");
        child.stdin.take().unwrap().write_all(&der).unwrap();
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let expected = text.split_whitespace().next().unwrap();
        assert_eq!(key.keyid().to_string(), expected);
        // And the private key file's public half agrees, as openssl derives it.
        let out = Command::new("openssl")
            .args(["pkey", "-pubout", "-outform", "DER", "-in"])
            .arg(&files.private_key)
            .output()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(KeyId::of_spki_der(&out.stdout), *key.keyid());
    }

    #[test]
    fn key_generated_by_openssl_loads_and_non_p256_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p256 = dir.path().join("p256.key");
        let p384 = dir.path().join("p384.key");
        for (curve, path) in [("P-256", &p256), ("P-384", &p384)] {
            let st = Command::new("openssl")
                .args(["genpkey", "-algorithm", "EC", "-pkeyopt"])
                .arg(format!("ec_paramgen_curve:{curve}"))
                .arg("-out")
                .arg(path)
                .status()
                .unwrap();
            assert!(st.success());
        }
        KeyPair::from_pkcs8_pem_file(&p256).unwrap();
        let err = KeyPair::from_pkcs8_pem_file(&p384).unwrap_err();
        assert!(
            matches!(&err, KeyError::Parse { path, err: KeyParseError::NotP256(_) } if *path == p384),
            "{err:?}"
        );
    }

    #[test]
    fn missing_key_file_error_names_the_path() {
        let err = PublicKey::from_spki_pem_file(Path::new("/nonexistent/kiln.pub")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/kiln.pub"), "{err}");
    }

    #[test]
    fn debug_does_not_print_key_material() {
        let key = KeyPair::generate().unwrap();
        let dbg = format!("{key:?}");
        assert!(!dbg.contains("BEGIN"));
        assert!(dbg.contains(&key.keyid().to_string()));
    }
}
