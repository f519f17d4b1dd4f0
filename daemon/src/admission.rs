//! The evidence checks of `kiln mirror add` that go beyond a digest and a plain signature:
//! kiln provenance for bytes kiln built (item 3 of docs/mirror.md, "Chains"), and the Debian
//! packages of a root filesystem with their licenses.
//!
//! Invariant: a check here only reads (the state, the store, files given on the command line);
//! the controller stores nothing until every check has passed.

use std::path::Path;
use std::str::FromStr as _;

use kiln_attest::{ArtifactRef, PublicKey, VerifiedProvenance, verify_provenance};
use kiln_core::{MirrorRef, Sha256Digest};

use crate::evidence::{CertificateEvidence, DependencyRecord, PackageRecord, ProvenanceEvidence};
use crate::policy::Signer;
use crate::state::{State, StateError};

/// A key trusted to sign kiln provenance, with the policy's name for it (none for the
/// controller's own keys).
#[derive(Clone, Debug)]
pub struct TrustedBuilder {
    pub name: Option<String>,
    pub key: PublicKey,
}

impl From<Signer> for TrustedBuilder {
    fn from(s: Signer) -> Self {
        Self {
            name: Some(s.name),
            key: s.key,
        }
    }
}

/// Checks that `document` (an `.intoto.jsonl` or one envelope line) is kiln provenance for the
/// bytes `sha256`, signed by one of `builders`, and that every mirror entry the build resolved
/// is in this mirror now with the same digest and not revoked. `Ok(Err(reason))` is a refusal.
pub async fn check_provenance(
    state: &State,
    builders: &[TrustedBuilder],
    sha256: Sha256Digest,
    document: &str,
) -> Result<Result<ProvenanceEvidence, String>, StateError> {
    let Some((verified, builder)) = verify_with_any(builders, sha256, document) else {
        let keys: Vec<String> = builders.iter().map(|b| b.key.keyid().to_string()).collect();
        let why = builders
            .first()
            .and_then(|b| verify_provenance(ArtifactRef::Digest(sha256), document, &b.key).err())
            .map_or_else(|| "no trusted builder key".to_owned(), |e| e.to_string());
        return Ok(Err(format!(
            "the provenance does not verify with a trusted builder key ({}): {why}",
            if keys.is_empty() {
                "none".into()
            } else {
                keys.join(", ")
            }
        )));
    };
    let mut dependencies = Vec::new();
    for (reference, digest) in mirror_dependencies(&verified) {
        if let Some(refusal) = dependency_problem(state, &reference, digest).await? {
            return Ok(Err(refusal));
        }
        dependencies.push(DependencyRecord {
            entry: reference.to_string(),
            sha256: digest.to_string(),
        });
    }
    Ok(Ok(ProvenanceEvidence {
        document_sha256: Sha256Digest::of(document.as_bytes()).to_string(),
        builder_keyid: verified.keyid.to_string(),
        builder_name: builder.name.clone(),
        builder_spki: Some(hex::encode(builder.key.spki_der())),
        invocation: verified
            .statement
            .predicate
            .run_details
            .metadata
            .as_ref()
            .and_then(|m| m.invocation_id.clone()),
        dependencies,
    }))
}

fn verify_with_any<'b>(
    builders: &'b [TrustedBuilder],
    sha256: Sha256Digest,
    document: &str,
) -> Option<(VerifiedProvenance, &'b TrustedBuilder)> {
    builders.iter().find_map(|b| {
        verify_provenance(ArtifactRef::Digest(sha256), document, &b.key)
            .ok()
            .map(|v| (v, b))
    })
}

/// The mirror entries a verified provenance resolved (`kiln:mirror/NAME@VERSION` with a sha256).
pub fn mirror_dependencies(verified: &VerifiedProvenance) -> Vec<(MirrorRef, Sha256Digest)> {
    verified
        .statement
        .predicate
        .build_definition
        .resolved_dependencies
        .iter()
        .filter_map(|d| {
            let name = d.uri.as_deref()?.strip_prefix("kiln:mirror/")?;
            let reference = MirrorRef::from_str(name).ok()?;
            Some((reference, d.digest.sha256?))
        })
        .collect()
}

/// Why a dependency of a kiln-built entry cannot be vouched for, if it cannot.
async fn dependency_problem(
    state: &State,
    reference: &MirrorRef,
    digest: Sha256Digest,
) -> Result<Option<String>, StateError> {
    let Some(entry) = state.mirror_entry(reference).await? else {
        return Ok(Some(format!(
            "its dependency {reference} (sha256:{digest}) is not in this mirror: add it first, \
             so the whole chain is vetted"
        )));
    };
    if entry.sha256 != digest {
        return Ok(Some(format!(
            "its dependency {reference} was built with sha256:{digest}, but this mirror holds \
             sha256:{} under that name",
            entry.sha256
        )));
    }
    if let Some(revoked) = state.revocation(reference).await? {
        return Ok(Some(format!(
            "its dependency {reference} is revoked: {}",
            revoked.reason
        )));
    }
    Ok(None)
}

/// Reads a signer's X.509 certificate (PEM): the public key it certifies, and who it names.
/// A certificate outside its validity period at `now` is refused (`Err(reason)`).
pub fn read_certificate(
    path: &Path,
    now: time::OffsetDateTime,
) -> Result<(PublicKey, CertificateEvidence), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let not_cert =
        |e: &dyn std::fmt::Display| format!("{}: not a PEM X.509 certificate: {e}", path.display());
    let (_, pem) = x509_parser::pem::parse_x509_pem(&bytes).map_err(|e| not_cert(&e))?;
    let cert = pem.parse_x509().map_err(|e| not_cert(&e))?;
    let validity = cert.validity();
    let (from, until) = (
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    );
    if now.unix_timestamp() < from || now.unix_timestamp() > until {
        return Err(format!(
            "certificate {} is valid from {} to {}, not now",
            path.display(),
            validity.not_before,
            validity.not_after
        ));
    }
    let key = PublicKey::from_spki_der(cert.public_key().raw)
        .map_err(|e| format!("certificate {}: its key: {e}", path.display()))?;
    let identities = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(identity)
                .collect()
        })
        .unwrap_or_default();
    let not_after = time::OffsetDateTime::from_unix_timestamp(until)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default();
    Ok((
        key,
        CertificateEvidence {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            identities,
            not_after,
            sha256: Sha256Digest::of(&pem.contents).to_string(),
        },
    ))
}

fn identity(name: &x509_parser::extensions::GeneralName<'_>) -> Option<String> {
    use x509_parser::extensions::GeneralName;
    match name {
        GeneralName::RFC822Name(email) => Some(format!("email:{email}")),
        GeneralName::URI(uri) => Some(format!("uri:{uri}")),
        GeneralName::DNSName(dns) => Some(format!("dns:{dns}")),
        _ => None,
    }
}

/// The Debian packages a root filesystem records (`/etc/kiln-rootfs-packages`), each with the
/// license its copyright file states; empty when the rootfs records none. `source` is a
/// directory or a tar archive, read before anything is stored.
pub fn rootfs_packages(source: &Path) -> Vec<PackageRecord> {
    let packages = if source.is_dir() {
        crate::rootfs_packages::packages_of(source)
    } else {
        crate::rootfs_packages::packages_in_tar(source)
    };
    let Some(packages) = packages else {
        return Vec::new();
    };
    packages
        .packages()
        .iter()
        .map(|p| PackageRecord {
            name: p.name.clone(),
            version: p.version.clone(),
            architecture: p.architecture.clone().unwrap_or_default(),
            license: p.license.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    /// A self-signed P-256 certificate valid through 2020, naming an email address.
    fn certificate_of_2020(dir: &Path) -> std::path::PathBuf {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "acme release");
        params.subject_alt_names = vec![rcgen::SanType::Rfc822Name(
            "release@acme.example".try_into().unwrap(),
        )];
        params.not_before = datetime!(2020-01-01 0:00 UTC);
        params.not_after = datetime!(2021-01-01 0:00 UTC);
        let cert = params.self_signed(&key).unwrap();
        let path = dir.join("acme.crt");
        std::fs::write(&path, cert.pem()).unwrap();
        path
    }

    #[test]
    fn a_certificate_gives_its_key_and_identities_within_its_validity_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = certificate_of_2020(dir.path());
        let (key, evidence) = read_certificate(&path, datetime!(2020-06-01 0:00 UTC)).unwrap();
        assert_eq!(evidence.identities, ["email:release@acme.example"]);
        assert!(
            evidence.subject.contains("acme release"),
            "{}",
            evidence.subject
        );
        assert_eq!(key.algorithm().to_string(), "ecdsa-p256-sha256");
        let expired = read_certificate(&path, datetime!(2026-11-22 0:00 UTC)).unwrap_err();
        assert!(expired.contains("not now"), "{expired}");
        std::fs::write(&path, "-----BEGIN PUBLIC KEY-----\n").unwrap();
        let err = read_certificate(&path, datetime!(2020-06-01 0:00 UTC)).unwrap_err();
        assert!(err.contains("not a PEM X.509 certificate"), "{err}");
    }
}
