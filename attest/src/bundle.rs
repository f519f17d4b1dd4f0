//! The Sigstore bundle `ARTIFACT.sigstore.json`: the provenance's DSSE envelope together with the
//! material a Sigstore client needs to verify it, in the JSON encoding of the `Bundle` message of
//! Sigstore's protobuf-specs (`sigstore_bundle.proto`), media type
//! `application/vnd.dev.sigstore.bundle.v0.3+json`.
//!
//! kiln signs with its own key, not a Fulcio certificate, so the verification material is the
//! "public key identifier" form: `verificationMaterial.publicKey.hint` holds kiln's key id
//! (lowercase hex SHA-256 of the DER SubjectPublicKeyInfo, the RFC 6962 key id the spec
//! recommends), the same string as the envelope signature's `keyid`, as the spec requires when
//! both are present. The key itself travels out of band (`kiln.pub`). kiln writes no
//! transparency-log entries and no RFC 3161 timestamps: `tlogEntries` is empty, so a Sigstore
//! client must be told to accept a bundle without them (see docs/verifying.md).
//!
//! [`verify_bundle`] decodes the bundle, checks its framing (media type, key-based material, a
//! DSSE envelope, consistent key hints), then runs exactly the checks [`crate::verify_provenance`]
//! runs on each line of `ARTIFACT.intoto.jsonl`.
//!
//! Invariant: the key hint is never used to pick or trust a key. The caller names the trusted
//! key; transparency-log entries and timestamps that another producer put in a bundle are kept
//! as opaque JSON and never consulted.

use serde::{Deserialize, Serialize};

use crate::attestation::{ArtifactRef, EnvelopeCheckError, VerifiedProvenance, check_envelope};
use crate::dsse::Envelope;
use crate::keys::PublicKey;

/// The media type of the bundles kiln writes and reads: Sigstore bundle v0.3, JSON encoding.
pub const MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";

/// The bundle file name for an artifact file name: `NAME.sigstore.json`.
pub fn bundle_file_name(artifact_name: &str) -> String {
    format!("{artifact_name}.sigstore.json")
}

/// A Sigstore bundle (`dev.sigstore.bundle.v1.Bundle`) in its JSON encoding.
///
/// A wire type: field names are the protobuf JSON names. Only the parts kiln writes are typed;
/// the other variants of the spec's `oneof`s (`messageSignature`, certificates) are ignored when
/// reading, which makes such a bundle fail [`verify_bundle`] with a precise error.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bundle {
    pub media_type: String,
    pub verification_material: VerificationMaterial,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dsse_envelope: Option<Envelope>,
    /// A signature over an artifact's bytes (`cosign sign-blob --bundle`), the other variant of
    /// the spec's `content` oneof. kiln reads it (`kiln mirror add --bundle`), never writes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_signature: Option<MessageSignature>,
}

/// `dev.sigstore.common.v1.MessageSignature`: a signature over an artifact's bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageSignature {
    /// The artifact's digest, as the signer computed it. Optional in the spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_digest: Option<HashOutput>,
    #[serde(with = "crate::dsse::b64")]
    pub signature: Vec<u8>,
}

/// `dev.sigstore.common.v1.HashOutput`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HashOutput {
    /// `SHA2_256` (the protobuf enum's JSON name) is the one kiln accepts.
    pub algorithm: String,
    #[serde(with = "crate::dsse::b64")]
    pub digest: Vec<u8>,
}

/// The media types of bundles that may carry a message signature: v0.1 to v0.3.
pub const BLOB_MEDIA_TYPES: [&str; 4] = [
    "application/vnd.dev.sigstore.bundle+json;version=0.1",
    "application/vnd.dev.sigstore.bundle+json;version=0.2",
    "application/vnd.dev.sigstore.bundle+json;version=0.3",
    MEDIA_TYPE,
];

/// A bundle's signature over a file, verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedBlobSignature {
    pub media_type: String,
    /// The raw signature (ASN.1 DER for ECDSA), as a cosign `.sig` file holds it in base64.
    pub signature: Vec<u8>,
    /// Transparency-log entries the bundle carried: kept, counted, never checked.
    pub tlog_entries: usize,
}

/// Checks that `bundle_json` holds a signature by `key` over `bytes`: a key-based bundle
/// (`verificationMaterial.publicKey`) whose `messageSignature` verifies, and whose
/// `messageDigest`, when present, is the SHA-256 of `bytes`.
///
/// As with [`verify_bundle`], the key hint never picks the key, and log entries and timestamps
/// are not consulted: the caller decides which key is trusted.
pub fn verify_blob_bundle(
    bytes: &[u8],
    bundle_json: &str,
    key: &PublicKey,
) -> Result<VerifiedBlobSignature, BundleError> {
    let bundle = Bundle::from_json(bundle_json)?;
    if !BLOB_MEDIA_TYPES.contains(&bundle.media_type.as_str()) {
        return Err(BundleError::MediaType {
            found: bundle.media_type,
        });
    }
    if bundle.verification_material.public_key.is_none() {
        return Err(BundleError::NoPublicKey);
    }
    let Some(message) = bundle.message_signature else {
        return Err(BundleError::NoMessageSignature);
    };
    if let Some(digest) = &message.message_digest {
        let actual = kiln_core::Sha256Digest::of(bytes);
        if digest.algorithm != "SHA2_256" {
            return Err(BundleError::DigestAlgorithm {
                found: digest.algorithm.clone(),
            });
        }
        if digest.digest != actual.as_bytes() {
            return Err(BundleError::MessageDigest {
                stated: hex::encode(&digest.digest),
                actual,
            });
        }
    }
    if !key.verifies(&message.signature, bytes) {
        return Err(BundleError::BadSignature {
            keyid: key.keyid().to_string(),
        });
    }
    Ok(VerifiedBlobSignature {
        media_type: bundle.media_type,
        signature: message.signature,
        tlog_entries: bundle.verification_material.tlog_entries.len(),
    })
}

/// `dev.sigstore.bundle.v1.VerificationMaterial`, key-based form.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerificationMaterial {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<PublicKeyIdentifier>,
    /// Transparency-log entries. kiln writes none (always serialised, as `[]`); entries another
    /// producer wrote are kept as JSON and not checked.
    #[serde(default)]
    pub tlog_entries: Vec<serde_json::Value>,
    /// RFC 3161 timestamps. kiln writes none; kept as JSON and not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_verification_data: Option<serde_json::Value>,
}

/// `dev.sigstore.common.v1.PublicKeyIdentifier`: an unauthenticated hint naming the key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicKeyIdentifier {
    pub hint: String,
}

impl Bundle {
    /// Parses the JSON text of a bundle. Only the JSON shape is checked here; see
    /// [`verify_bundle`] for everything else.
    pub fn from_json(text: &str) -> Result<Self, BundleError> {
        serde_json::from_str(text).map_err(BundleError::Json)
    }

    /// Renders the bundle as one line of compact JSON ending in `\n`, the contents of
    /// `ARTIFACT.sigstore.json`.
    pub fn to_json(&self) -> String {
        // Every field serialises infallibly: string map keys, strings, base64 bytes, and JSON
        // values that were parsed from text.
        let mut out = serde_json::to_string(self).expect("a bundle always serialises to JSON");
        out.push('\n');
        out
    }
}

/// Wraps `envelope`, signed by `key` (as [`crate::sign_statement`] makes it), in a v0.3 bundle
/// whose key hint is `key`'s id, with no transparency-log entries and no timestamps.
///
/// The envelope's signature `keyid`s should be `key`'s id too (kiln's own envelopes are); a
/// bundle where they differ is refused by [`verify_bundle`], as the bundle spec requires.
pub fn to_bundle(envelope: &Envelope, key: &PublicKey) -> Bundle {
    Bundle {
        media_type: MEDIA_TYPE.to_owned(),
        verification_material: VerificationMaterial {
            public_key: Some(PublicKeyIdentifier {
                hint: key.keyid().to_string(),
            }),
            tlog_entries: Vec::new(),
            timestamp_verification_data: None,
        },
        dsse_envelope: Some(envelope.clone()),
        message_signature: None,
    }
}

/// Why a bundle does not vouch for an artifact.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("not a Sigstore bundle in JSON")]
    Json(#[source] serde_json::Error),
    #[error("mediaType is {found:?}, expected {MEDIA_TYPE:?}")]
    MediaType { found: String },
    #[error(
        "the bundle has no verificationMaterial.publicKey: kiln's bundles are key-based; verify a certificate-based bundle with a Sigstore client"
    )]
    NoPublicKey,
    #[error("the bundle holds no dsseEnvelope: kiln's provenance is a DSSE envelope")]
    NoDsseEnvelope,
    #[error(
        "the bundle's key hint {hint:?} differs from the envelope signature's keyid {keyid:?}; the bundle spec requires them to be equal"
    )]
    HintMismatch { hint: String, keyid: String },
    #[error(transparent)]
    Check(EnvelopeCheckError),
    #[error(
        "the bundle holds no messageSignature (a signature over the file); a bundle with kiln provenance goes with --provenance"
    )]
    NoMessageSignature,
    #[error("the bundle's messageDigest uses {found:?}; only SHA2_256 is accepted")]
    DigestAlgorithm { found: String },
    #[error("the bundle signs a file with sha256 {stated}, not this file ({actual})")]
    MessageDigest {
        stated: String,
        actual: kiln_core::Sha256Digest,
    },
    #[error("the bundle's signature does not verify over the file with key {keyid}")]
    BadSignature { keyid: String },
}

/// A bundle whose framing checked out: what is left to check is the envelope itself.
#[derive(Debug)]
struct CheckedBundle {
    envelope: Envelope,
}

impl TryFrom<Bundle> for CheckedBundle {
    type Error = BundleError;

    fn try_from(bundle: Bundle) -> Result<Self, BundleError> {
        if bundle.media_type != MEDIA_TYPE {
            return Err(BundleError::MediaType {
                found: bundle.media_type,
            });
        }
        let hint = bundle
            .verification_material
            .public_key
            .ok_or(BundleError::NoPublicKey)?
            .hint;
        let envelope = bundle.dsse_envelope.ok_or(BundleError::NoDsseEnvelope)?;
        if let Some(keyid) = envelope
            .signatures
            .iter()
            .filter_map(|s| s.keyid.as_deref())
            .find(|keyid| !keyid.is_empty() && *keyid != hint)
        {
            return Err(BundleError::HintMismatch {
                hint,
                keyid: keyid.to_owned(),
            });
        }
        Ok(Self { envelope })
    }
}

/// Checks that `bundle_json` (the contents of `ARTIFACT.sigstore.json`) holds an envelope signed
/// by `key` whose SLSA provenance statement names `artifact` as a subject.
///
/// The envelope gets the same checks as each line of `ARTIFACT.intoto.jsonl` in
/// [`crate::verify_provenance`]. The returned [`VerifiedProvenance`] has `line` 1.
pub fn verify_bundle(
    artifact: ArtifactRef<'_>,
    bundle_json: &str,
    key: &PublicKey,
) -> Result<VerifiedProvenance, BundleError> {
    let checked = CheckedBundle::try_from(Bundle::from_json(bundle_json)?)?;
    let digest = artifact.digest();
    let statement = check_envelope(&checked.envelope, digest, key).map_err(BundleError::Check)?;
    Ok(VerifiedProvenance {
        statement,
        artifact: digest,
        keyid: key.keyid().clone(),
        line: 1,
    })
}

#[cfg(test)]
mod tests {
    use kiln_core::Sha256Digest;
    use serde_json::json;

    use super::*;
    use crate::attestation::sign_statement;
    use crate::dsse::{self, EnvelopeSignature};
    use crate::keys::KeyPair;
    use crate::provenance::{build_statement, tests as fixtures};

    struct Signed {
        key: KeyPair,
        artifact: Vec<u8>,
        bundle: Bundle,
    }

    fn signed() -> Signed {
        let steps = fixtures::three_steps();
        let statement = build_statement(&fixtures::request(&steps)).unwrap();
        let key = KeyPair::generate().unwrap();
        let env = sign_statement(&statement, &key).unwrap();
        let bundle = to_bundle(&env, key.public_key());
        Signed {
            key,
            artifact: b"ELF hello".to_vec(),
            bundle,
        }
    }

    fn verify(s: &Signed, bundle_json: &str) -> Result<VerifiedProvenance, BundleError> {
        verify_bundle(
            ArtifactRef::Bytes(&s.artifact),
            bundle_json,
            s.key.public_key(),
        )
    }

    /// Re-encodes `s.bundle` after `edit` changed its JSON form.
    fn edited(s: &Signed, edit: impl FnOnce(&mut serde_json::Value)) -> String {
        let mut v = serde_json::to_value(&s.bundle).unwrap();
        edit(&mut v);
        v.to_string()
    }

    #[test]
    fn bundle_json_has_the_spec_field_names_and_round_trips() {
        let key = KeyPair::generate().unwrap();
        let env = Envelope {
            payload_type: "application/vnd.in-toto+json".into(),
            payload: b"{}".to_vec(),
            signatures: vec![EnvelopeSignature {
                keyid: Some(key.keyid().to_string()),
                sig: vec![0xfb, 0xff],
            }],
        };
        let bundle = to_bundle(&env, key.public_key());
        let text = bundle.to_json();
        assert_eq!(text.lines().count(), 1);
        assert!(text.ends_with('\n'));
        let keyid = key.keyid().to_string();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&text).unwrap(),
            json!({
                "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
                "verificationMaterial": {
                    "publicKey": { "hint": keyid },
                    "tlogEntries": [],
                },
                "dsseEnvelope": {
                    "payloadType": "application/vnd.in-toto+json",
                    "payload": "e30=",
                    "signatures": [{ "keyid": keyid, "sig": "+/8=" }],
                },
            })
        );
        assert_eq!(Bundle::from_json(&text).unwrap(), bundle);
    }

    /// Shape of a bundle as other Sigstore producers write it (fields kiln never writes:
    /// timestamps, a log entry): it parses, and those parts survive a round trip.
    #[test]
    fn bundle_from_another_producer_keeps_log_entries_and_timestamps() {
        let text = r#"{
            "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": {
                "publicKey": {"hint": "abc"},
                "tlogEntries": [{"logIndex": "7", "kindVersion": {"kind": "dsse", "version": "0.0.1"}}],
                "timestampVerificationData": {"rfc3161Timestamps": [{"signedTimestamp": "AA=="}]}
            },
            "dsseEnvelope": {"payloadType": "t", "payload": "e30", "signatures": [{"sig": "_w"}]}
        }"#;
        let bundle = Bundle::from_json(text).unwrap();
        assert_eq!(bundle.verification_material.tlog_entries.len(), 1);
        assert_eq!(bundle.dsse_envelope.as_ref().unwrap().payload, b"{}");
        assert_eq!(Bundle::from_json(&bundle.to_json()).unwrap(), bundle);
    }

    #[test]
    fn verify_bundle_accepts_kiln_bundle_for_bytes_and_digest() {
        let s = signed();
        let v = verify(&s, &s.bundle.to_json()).unwrap();
        assert_eq!(&v.keyid, s.key.keyid());
        assert_eq!(v.line, 1);
        assert_eq!(v.artifact, Sha256Digest::of(&s.artifact));
        verify_bundle(
            ArtifactRef::Digest(Sha256Digest::of(&s.artifact)),
            &s.bundle.to_json(),
            s.key.public_key(),
        )
        .unwrap();
    }

    #[test]
    fn verify_bundle_rejects_wrong_media_type() {
        let s = signed();
        for found in [
            "application/vnd.dev.sigstore.bundle+json;version=0.2",
            "application/vnd.dev.sigstore.bundle.v0.4+json",
            "",
        ] {
            let text = edited(&s, |v| v["mediaType"] = json!(found));
            let err = verify(&s, &text).unwrap_err();
            assert!(
                matches!(&err, BundleError::MediaType { found: f } if f == found),
                "{err:?}"
            );
        }
        let text = edited(&s, |v| {
            v.as_object_mut().unwrap().remove("mediaType");
        });
        assert!(matches!(verify(&s, &text), Err(BundleError::Json(_))));
    }

    #[test]
    fn verify_bundle_rejects_tampered_payload() {
        let s = signed();
        let mut bundle = s.bundle.clone();
        let env = bundle.dsse_envelope.as_mut().unwrap();
        let text = String::from_utf8(env.payload.clone()).unwrap();
        let tampered = text.replace("make link", "make evil");
        assert_ne!(tampered, text);
        env.payload = tampered.into_bytes();
        let err = verify(&s, &bundle.to_json()).unwrap_err();
        assert!(
            matches!(
                err,
                BundleError::Check(EnvelopeCheckError::SignatureInvalid { .. })
            ),
            "{err:?}"
        );
    }

    #[test]
    fn verify_bundle_rejects_another_key_even_when_the_hint_names_the_trusted_one() {
        let s = signed();
        let other = KeyPair::generate().unwrap();
        let err = verify_bundle(
            ArtifactRef::Bytes(&s.artifact),
            &s.bundle.to_json(),
            other.public_key(),
        )
        .unwrap_err();
        assert!(
            matches!(&err, BundleError::Check(EnvelopeCheckError::SignatureInvalid { keyid }) if keyid == other.keyid()),
            "{err:?}"
        );
        // Forgery: signed by another key, hint and keyid claiming the trusted key.
        let env = s.bundle.dsse_envelope.as_ref().unwrap();
        let mut forged = dsse::sign(&env.payload_type, &env.payload, &other).unwrap();
        forged.signatures[0].keyid = Some(s.key.keyid().to_string());
        let bundle = to_bundle(&forged, s.key.public_key());
        let err = verify(&s, &bundle.to_json()).unwrap_err();
        assert!(
            matches!(
                err,
                BundleError::Check(EnvelopeCheckError::SignatureInvalid { .. })
            ),
            "{err:?}"
        );
    }

    #[test]
    fn verify_bundle_rejects_an_artifact_that_is_not_a_subject() {
        let s = signed();
        let err = verify_bundle(
            ArtifactRef::Bytes(b"ELF hellp"),
            &s.bundle.to_json(),
            s.key.public_key(),
        )
        .unwrap_err();
        assert!(
            matches!(&err, BundleError::Check(EnvelopeCheckError::ArtifactNotASubject { digest }) if *digest == Sha256Digest::of(b"ELF hellp")),
            "{err:?}"
        );
    }

    #[test]
    fn verify_bundle_rejects_certificate_and_message_signature_bundles() {
        let s = signed();
        let text = edited(&s, |v| {
            let vm = v["verificationMaterial"].as_object_mut().unwrap();
            vm.remove("publicKey");
            vm.insert("certificate".into(), json!({"rawBytes": "AA=="}));
        });
        assert!(matches!(verify(&s, &text), Err(BundleError::NoPublicKey)));

        let text = edited(&s, |v| {
            let b = v.as_object_mut().unwrap();
            b.remove("dsseEnvelope");
            b.insert(
                "messageSignature".into(),
                json!({"messageDigest": {"algorithm": "SHA2_256", "digest": "AA=="}, "signature": "AA=="}),
            );
        });
        assert!(matches!(
            verify(&s, &text),
            Err(BundleError::NoDsseEnvelope)
        ));
    }

    #[test]
    fn verify_bundle_rejects_a_hint_that_differs_from_the_envelope_keyid() {
        let s = signed();
        let text = edited(&s, |v| {
            v["verificationMaterial"]["publicKey"]["hint"] = json!("00");
        });
        let err = verify(&s, &text).unwrap_err();
        assert!(
            matches!(&err, BundleError::HintMismatch { hint, keyid } if hint == "00" && *keyid == s.key.keyid().to_string()),
            "{err:?}"
        );
    }

    #[test]
    fn bundle_file_is_named_after_the_artifact() {
        assert_eq!(bundle_file_name("hello"), "hello.sigstore.json");
    }

    /// A `cosign sign-blob --bundle` style bundle: a message signature by `key` over `file`.
    fn blob_bundle(key: &KeyPair, file: &[u8], digest: Option<Vec<u8>>) -> String {
        json!({
            "mediaType": MEDIA_TYPE,
            "verificationMaterial": {
                "publicKey": {"hint": key.keyid().to_string()},
                "tlogEntries": [{"logIndex": "7"}],
            },
            "messageSignature": {
                "messageDigest": digest.map(|d| json!({
                    "algorithm": "SHA2_256",
                    "digest": crate::dsse::encode_b64(&d),
                })),
                "signature": crate::dsse::encode_b64(&key.sign(file).unwrap()),
            },
        })
        .to_string()
    }

    #[test]
    fn a_blob_bundle_by_the_key_over_the_file_verifies() {
        let key = KeyPair::generate().unwrap();
        let file = b"gcc source tarball";
        let digest = Sha256Digest::of(file).as_bytes().to_vec();
        let bundle = blob_bundle(&key, file, Some(digest));
        let v = verify_blob_bundle(file, &bundle, key.public_key()).unwrap();
        assert_eq!(v.tlog_entries, 1);
        assert!(key.public_key().verifies(&v.signature, file));
    }

    #[test]
    fn a_blob_bundle_over_other_bytes_or_by_another_key_is_refused() {
        let key = KeyPair::generate().unwrap();
        let other = KeyPair::generate().unwrap();
        let file = b"gcc source tarball";
        let digest = Sha256Digest::of(file).as_bytes().to_vec();
        let bundle = blob_bundle(&key, file, Some(digest.clone()));
        let err = verify_blob_bundle(b"tampered", &bundle, key.public_key()).unwrap_err();
        assert!(matches!(err, BundleError::MessageDigest { .. }), "{err}");
        let err = verify_blob_bundle(file, &bundle, other.public_key()).unwrap_err();
        assert!(matches!(err, BundleError::BadSignature { .. }), "{err}");
        // Without a stated digest the signature alone decides.
        let bundle = blob_bundle(&key, file, None);
        let err = verify_blob_bundle(b"tampered", &bundle, key.public_key()).unwrap_err();
        assert!(matches!(err, BundleError::BadSignature { .. }), "{err}");
    }

    #[test]
    fn a_provenance_bundle_is_not_a_signature_over_a_file() {
        let s = signed();
        let err =
            verify_blob_bundle(&s.artifact, &s.bundle.to_json(), s.key.public_key()).unwrap_err();
        assert!(matches!(err, BundleError::NoMessageSignature), "{err}");
    }
}
