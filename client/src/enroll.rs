//! The worker's side of enrollment: a key pair and CSR made here (the private key never leaves
//! the worker), join tokens, and the certificate verifier that pins the controller's CA by
//! fingerprint before the worker has the CA itself.

use std::sync::Arc;

use rustls::DigitallySignedStruct;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::{Digest as _, Sha256};

use crate::ClientError;

/// A join token as printed by `kiln admin join-token create`: `kiln1-<fingerprint>-<secret>`.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// The whole token, as sent to the controller.
    pub token: String,
    /// The CA fingerprint embedded in the token (lowercase hex sha256 of the CA's DER).
    pub ca_fingerprint: String,
}

impl std::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinToken")
            .field("ca_fingerprint", &self.ca_fingerprint)
            .finish_non_exhaustive()
    }
}

/// A fingerprint as given on the command line: 64 hex digits, optionally `sha256:`-prefixed
/// and with colons.
pub fn parse_fingerprint(text: &str) -> Result<String, ClientError> {
    let hex: String = text
        .trim()
        .trim_start_matches("sha256:")
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(hex)
    } else {
        Err(ClientError::TlsSetup {
            reason: format!("{text:?} is not a sha256 fingerprint (64 hex digits)"),
        })
    }
}

impl JoinToken {
    /// Parses `kiln1-<fingerprint>-<secret>`.
    pub fn parse(text: &str) -> Result<Self, ClientError> {
        let text = text.trim();
        let bad = || ClientError::TlsSetup {
            reason: "a join token reads kiln1-<fingerprint>-<secret>".into(),
        };
        let rest = text.strip_prefix("kiln1-").ok_or_else(bad)?;
        let (fingerprint, secret) = rest.split_once('-').ok_or_else(bad)?;
        if secret.len() != 64 || !secret.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        Ok(Self {
            token: text.to_owned(),
            ca_fingerprint: parse_fingerprint(fingerprint)?,
        })
    }
}

/// A new ECDSA P-256 key (PKCS#8 PEM) and a CSR for it (PEM).
pub fn new_key_and_csr() -> Result<(String, String), ClientError> {
    let fail = |e: rcgen::Error| ClientError::TlsSetup {
        reason: format!("cannot make a key and CSR: {e}"),
    };
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(fail)?;
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .map_err(fail)?
        .pem()
        .map_err(fail)?;
    Ok((key.serialize_pem(), csr))
}

/// Lowercase hex sha256 of a certificate's DER.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// The fingerprint of the first certificate in `pem`.
pub fn pem_fingerprint(pem: &str) -> Option<String> {
    use rustls::pki_types::pem::PemObject as _;
    CertificateDer::from_pem_slice(pem.as_bytes())
        .ok()
        .map(|der| fingerprint(&der))
}

/// Verifies the controller's chain against the CA certificate the controller sends along, once
/// that certificate's fingerprint is the pinned one.
#[derive(Debug)]
pub(crate) struct PinnedCaVerifier {
    pub(crate) fingerprint: String,
    pub(crate) provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(ca) = intermediates
            .iter()
            .find(|c| fingerprint(c) == self.fingerprint)
        else {
            tracing::warn!(pinned = %self.fingerprint, "the controller's CA is not the pinned one");
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ));
        };
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.clone().into_owned()).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        let inner =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_join_token_carries_the_ca_fingerprint() {
        let fp = "ab".repeat(32);
        let t = JoinToken::parse(&format!("kiln1-{fp}-{}", "cd".repeat(32))).unwrap();
        assert_eq!(t.ca_fingerprint, fp);
        assert!(JoinToken::parse("kiln1-xyz").is_err());
        assert!(JoinToken::parse(&format!("kiln1-{fp}-short")).is_err());
    }

    #[test]
    fn fingerprints_may_have_a_prefix_and_colons() {
        let fp = "AB".repeat(32);
        let colons = fp
            .as_bytes()
            .chunks(2)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(
            parse_fingerprint(&format!("sha256:{colons}")).unwrap(),
            "ab".repeat(32)
        );
        assert!(parse_fingerprint("abc").is_err());
    }

    #[test]
    fn a_csr_is_made_with_a_fresh_key() {
        let (key, csr) = new_key_and_csr().unwrap();
        assert!(key.contains("PRIVATE KEY"));
        assert!(csr.contains("CERTIFICATE REQUEST"));
    }
}
