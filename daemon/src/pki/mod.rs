//! The daemon's private CA (docs/api.md, "Mutual TLS").
//!
//! On first start the daemon makes an ECDSA P-256 CA in `DATA/pki/` (`ca.key`, mode 0600, and
//! `ca.pem`); every later start loads it. The CA issues the daemon's own server certificate for
//! the names it listens on (made afresh on each start, kept in memory only) and the client
//! certificates workers present. Workers pin the CA by [`Pki::ca_fingerprint`], the sha256 of
//! its certificate's DER.
//!
//! [`Enrollment`] keeps the one-time join tokens (hashed) and which certificate identity
//! registered which worker id.
//!
//! Deliberately absent: intermediate CAs, revocation lists (client certificates are short-lived
//! instead) and any key storage other than a file in the data dir.

mod enroll;

pub use enroll::{EnrollError, Enrollment, NewJoinToken, TOKEN_PREFIX};

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;

/// The trust domain in the SPIFFE ids of kiln's certificates.
pub const TRUST_DOMAIN: &str = "kiln";
/// How long the CA is valid.
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long the daemon's server certificate is valid (it is re-issued on every start).
const SERVER_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);
/// Clock skew tolerated between the daemon and its workers.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// Why the CA could not be made, loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot create {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is readable by others (mode {mode:o}); chmod 600 it")]
    Permissions { path: PathBuf, mode: u32 },
    #[error("{path} holds no usable CA ({what}); move the pki directory away to make a new CA")]
    Load {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error("cannot {what}")]
    Issue {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
}

/// A certificate and its private key, in PEM.
#[derive(Clone)]
pub struct IssuedCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCert").finish_non_exhaustive()
    }
}

/// The daemon's CA, loaded.
pub struct Pki {
    dir: PathBuf,
    ca_der: CertificateDer<'static>,
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("dir", &self.dir)
            .field("ca_fingerprint", &self.ca_fingerprint())
            .finish_non_exhaustive()
    }
}

impl Pki {
    /// The CA in `data_dir/pki`, made on first use.
    pub fn open_or_create(data_dir: &Path) -> Result<Self, PkiError> {
        let dir = data_dir.join("pki");
        let key_path = dir.join("ca.key");
        let cert_path = dir.join("ca.pem");
        if !key_path.exists() {
            create_ca(&dir, &key_path, &cert_path)?;
        }
        let mode = fs::metadata(&key_path)
            .map_err(|source| PkiError::Read {
                path: key_path.clone(),
                source,
            })?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(PkiError::Permissions {
                path: key_path,
                mode: mode & 0o777,
            });
        }
        let read = |path: &Path| {
            fs::read_to_string(path).map_err(|source| PkiError::Read {
                path: path.to_owned(),
                source,
            })
        };
        let key_pem = read(&key_path)?;
        let ca_pem = read(&cert_path)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|source| PkiError::Load {
            path: key_path.clone(),
            what: "the key does not parse",
            source,
        })?;
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, key).map_err(|source| PkiError::Load {
            path: cert_path.clone(),
            what: "the certificate does not parse",
            source,
        })?;
        let ca_der = pem_to_der(&ca_pem).ok_or_else(|| PkiError::Load {
            path: cert_path.clone(),
            what: "no CERTIFICATE block",
            source: rcgen::Error::CouldNotParseCertificate,
        })?;
        Ok(Self {
            dir,
            ca_der,
            ca_pem,
            issuer,
        })
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The CA certificate, DER.
    pub fn ca_der(&self) -> &CertificateDer<'static> {
        &self.ca_der
    }

    /// Lowercase hex sha256 of the CA certificate's DER: what a worker pins.
    pub fn ca_fingerprint(&self) -> String {
        fingerprint(&self.ca_der)
    }

    /// A server certificate for `names` (IP addresses or DNS names), valid from now.
    pub fn issue_server(&self, names: &[String]) -> Result<IssuedCert, PkiError> {
        let key = new_key()?;
        let mut params =
            CertificateParams::new(names.to_vec()).map_err(|source| PkiError::Issue {
                what: "use the listen address as a certificate name",
                source,
            })?;
        params.distinguished_name = name("kiln daemon");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + SERVER_LIFETIME;
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|source| PkiError::Issue {
                what: "issue the server certificate",
                source,
            })?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A worker client certificate for `public_key` whose URI SAN is
    /// `spiffe://kiln/worker/<worker>`, valid over `[not_before, not_after)`. Tests pass a past
    /// window to make an expired certificate.
    pub fn issue_worker(
        &self,
        worker: &str,
        public_key: &impl rcgen::PublicKeyData,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<String, PkiError> {
        let mut params = CertificateParams::default();
        let uri = worker_uri(worker);
        params.subject_alt_names =
            vec![SanType::URI(uri.as_str().try_into().map_err(|source| {
                PkiError::Issue {
                    what: "use the worker id in a URI",
                    source,
                }
            })?)];
        params.distinguished_name = name(&format!("kiln worker {worker}"));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = not_before;
        params.not_after = not_after;
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(public_key, &self.issuer)
            .map_err(|source| PkiError::Issue {
                what: "issue the worker certificate",
                source,
            })?;
        Ok(cert.pem())
    }

    /// Like [`Self::issue_worker`], with a key made here; for tests and tools that stand in for
    /// a worker.
    pub fn issue_worker_with_key(
        &self,
        worker: &str,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<IssuedCert, PkiError> {
        let key = new_key()?;
        let cert_pem = self.issue_worker(worker, &key, not_before, not_after)?;
        Ok(IssuedCert {
            cert_pem,
            key_pem: key.serialize_pem(),
        })
    }
}

/// `spiffe://kiln/worker/<worker>`.
pub fn worker_uri(worker: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/worker/{worker}")
}

/// Lowercase hex sha256 of a certificate's DER.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// The DER of the first certificate in `pem`.
pub fn pem_to_der(pem: &str) -> Option<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject as _;
    CertificateDer::from_pem_slice(pem.as_bytes()).ok()
}

/// The PKCS#8 private key in `pem`.
pub fn pem_to_key(pem: &str) -> Option<PrivateKeyDer<'static>> {
    use rustls::pki_types::pem::PemObject as _;
    PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes())
        .ok()
        .map(PrivateKeyDer::Pkcs8)
}

/// The worker id in a client certificate's `spiffe://kiln/worker/<id>` URI SAN, if it has one.
pub fn worker_id_of(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    let prefix = worker_uri("");
    san.value.general_names.iter().find_map(|name| match name {
        x509_parser::extensions::GeneralName::URI(uri) => uri
            .strip_prefix(&prefix)
            .filter(|id| !id.is_empty() && !id.contains('/'))
            .map(str::to_owned),
        _ => None,
    })
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "kiln");
    dn.push(DnType::CommonName, common_name);
    dn
}

fn new_key() -> Result<KeyPair, PkiError> {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|source| PkiError::Issue {
        what: "generate an ECDSA P-256 key",
        source,
    })
}

fn create_ca(dir: &Path, key_path: &Path, cert_path: &Path) -> Result<(), PkiError> {
    fs::create_dir_all(dir).map_err(|source| PkiError::CreateDir {
        path: dir.to_owned(),
        source,
    })?;
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
    let key = new_key()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = name("kiln CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + CA_LIFETIME;
    let cert = params.self_signed(&key).map_err(|source| PkiError::Issue {
        what: "make the CA certificate",
        source,
    })?;
    write_new(key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_new(cert_path, cert.pem().as_bytes(), 0o644)?;
    tracing::info!(dir = %dir.display(), fingerprint = %fingerprint(cert.der()), "made a new CA");
    Ok(())
}

/// Writes a new file with `mode` from the start (never a window with wider permissions).
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), PkiError> {
    let write_error = |source| PkiError::Write {
        path: path.to_owned(),
        source,
    };
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(write_error)?;
    file.write_all(bytes).map_err(write_error)?;
    file.sync_all().map_err(write_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_is_made_once_with_a_private_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let first = Pki::open_or_create(dir.path()).unwrap();
        let mode = fs::metadata(dir.path().join("pki/ca.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = Pki::open_or_create(dir.path()).unwrap();
        assert_eq!(first.ca_fingerprint(), again.ca_fingerprint());
        assert_eq!(first.ca_fingerprint().len(), 64);
    }

    #[test]
    fn a_world_readable_ca_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        Pki::open_or_create(dir.path()).unwrap();
        let key = dir.path().join("pki/ca.key");
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        let err = Pki::open_or_create(dir.path()).unwrap_err();
        assert!(matches!(err, PkiError::Permissions { .. }), "{err}");
    }

    #[test]
    fn a_worker_certificate_names_the_worker_in_its_uri_san() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::open_or_create(dir.path()).unwrap();
        let now = OffsetDateTime::now_utc();
        let issued = pki
            .issue_worker_with_key("w-1", now, now + Duration::from_secs(60))
            .unwrap();
        let der = pem_to_der(&issued.cert_pem).unwrap();
        assert_eq!(worker_id_of(&der).as_deref(), Some("w-1"));
        let server = pki.issue_server(&["127.0.0.1".into()]).unwrap();
        assert_eq!(worker_id_of(&pem_to_der(&server.cert_pem).unwrap()), None);
    }
}
