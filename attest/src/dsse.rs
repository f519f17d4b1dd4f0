//! DSSE v1: the Dead Simple Signing Envelope (<https://github.com/secure-systems-lab/dsse>).
//!
//! Signatures cover `PAE(payloadType, payload)`, never the JSON envelope, so re-encoding the
//! envelope cannot change what was signed. kiln writes standard padded base64 and reads standard
//! or URL-safe base64, padded or not, as the spec requires of verifiers.
//!
//! Invariant: an [`Envelope`] holds decoded bytes; base64 is handled only at the serde boundary.
//! This module checks signatures only: whether the payload type is acceptable is the caller's
//! decision (see [`crate::verify_provenance`] and [`crate::verify_bundle`]).

use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use serde::{Deserialize, Serialize};

use crate::keys::{KeyError, KeyPair, PublicKey};

/// At most this many signatures are tried per envelope, bounding the work a hostile file causes.
pub const MAX_SIGNATURES: usize = 16;

/// A DSSE JSON envelope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    #[serde(with = "b64")]
    pub payload: Vec<u8>,
    pub signatures: Vec<EnvelopeSignature>,
}

/// One signature in an [`Envelope`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeSignature {
    /// Unauthenticated hint naming the key; never used to decide validity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyid: Option<String>,
    /// Raw signature bytes (ASN.1 DER for ECDSA).
    #[serde(with = "b64")]
    pub sig: Vec<u8>,
}

/// DSSE signing and verification failures.
#[derive(Debug, thiserror::Error)]
pub enum DsseError {
    #[error("envelope has no signatures")]
    NoSignatures,
    #[error("envelope has {count} signatures; at most {MAX_SIGNATURES} are accepted")]
    TooManySignatures { count: usize },
    #[error(
        "no signature in the envelope verifies under key {keyid} ({tried} tried): the payload was altered or signed by another key"
    )]
    SignatureInvalid { keyid: String, tried: usize },
    #[error("cannot sign the envelope")]
    Sign(#[source] KeyError),
}

/// The DSSE v1 Pre-Authentication Encoding:
/// `"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`, lengths in ASCII decimal bytes.
pub fn pae(payload_type: &str, body: &[u8]) -> Vec<u8> {
    let ty = payload_type.as_bytes();
    let mut out = Vec::with_capacity(32 + ty.len() + body.len());
    out.extend_from_slice(b"DSSEv1 ");
    out.extend_from_slice(ty.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(ty);
    out.push(b' ');
    out.extend_from_slice(body.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(body);
    out
}

/// Signs `payload` as `payload_type` with `key`; the signature's `keyid` is the key's id.
pub fn sign(payload_type: &str, payload: &[u8], key: &KeyPair) -> Result<Envelope, DsseError> {
    let sig = key
        .sign(&pae(payload_type, payload))
        .map_err(DsseError::Sign)?;
    Ok(Envelope {
        payload_type: payload_type.to_owned(),
        payload: payload.to_vec(),
        signatures: vec![EnvelopeSignature {
            keyid: Some(key.keyid().to_string()),
            sig,
        }],
    })
}

/// Checks that at least one signature verifies under `key`; returns the authenticated payload.
///
/// Every signature is tried regardless of its `keyid`, which DSSE says must not drive security
/// decisions. The payload type is authenticated but not judged here.
pub fn verify<'e>(envelope: &'e Envelope, key: &PublicKey) -> Result<&'e [u8], DsseError> {
    let count = envelope.signatures.len();
    if count == 0 {
        return Err(DsseError::NoSignatures);
    }
    if count > MAX_SIGNATURES {
        return Err(DsseError::TooManySignatures { count });
    }
    let msg = pae(&envelope.payload_type, &envelope.payload);
    if envelope
        .signatures
        .iter()
        .any(|s| key.verifies(&s.sig, &msg))
    {
        Ok(&envelope.payload)
    } else {
        Err(DsseError::SignatureInvalid {
            keyid: key.keyid().to_string(),
            tried: count,
        })
    }
}

/// Standard or URL-safe alphabet, padding optional: what DSSE verifiers must accept.
const LENIENT_CONFIG: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const LENIENT_STANDARD: GeneralPurpose =
    GeneralPurpose::new(&base64::alphabet::STANDARD, LENIENT_CONFIG);
const LENIENT_URL_SAFE: GeneralPurpose =
    GeneralPurpose::new(&base64::alphabet::URL_SAFE, LENIENT_CONFIG);

/// Decodes standard or URL-safe base64 (padded or not).
pub(crate) fn decode_b64(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    LENIENT_STANDARD
        .decode(text)
        .or_else(|_| LENIENT_URL_SAFE.decode(text))
}

/// Encodes standard padded base64.
pub(crate) fn encode_b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

pub(crate) mod b64 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::encode_b64(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        super::decode_b64(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example in the DSSE v1 protocol spec (protocol.md, "Test Vectors").
    #[test]
    fn pae_matches_dsse_spec_golden_vector() {
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }

    #[test]
    fn pae_counts_bytes_not_chars_and_keeps_trailing_space_for_empty_body() {
        assert_eq!(pae("", b""), b"DSSEv1 0  0 ".to_vec());
        assert_eq!(
            pae("a\u{e4}", b"x"),
            "DSSEv1 3 a\u{e4} 1 x".as_bytes().to_vec()
        );
    }

    #[test]
    fn envelope_uses_spec_field_names_and_padded_standard_base64() {
        let env = Envelope {
            payload_type: "t".into(),
            payload: vec![0xfb, 0xff],
            signatures: vec![EnvelopeSignature {
                keyid: Some("k".into()),
                sig: vec![0xff],
            }],
        };
        let json = serde_json::to_string(&env).unwrap();
        assert_eq!(
            json,
            r#"{"payloadType":"t","payload":"+/8=","signatures":[{"keyid":"k","sig":"/w=="}]}"#
        );
        let url_safe = r#"{"payloadType":"t","payload":"-_8","signatures":[{"sig":"_w"}]}"#;
        let back: Envelope = serde_json::from_str(url_safe).unwrap();
        assert_eq!(back.payload, env.payload);
        assert_eq!(back.signatures[0].keyid, None);
    }

    #[test]
    fn sign_then_verify_round_trips_and_rejects_other_key_and_type() {
        let key = KeyPair::generate().unwrap();
        let env = sign("application/x-test", b"body", &key).unwrap();
        assert_eq!(verify(&env, key.public_key()).unwrap(), b"body");
        assert_eq!(
            env.signatures[0].keyid.as_deref(),
            Some(key.keyid().to_string().as_str())
        );

        let other = KeyPair::generate().unwrap();
        assert!(matches!(
            verify(&env, other.public_key()),
            Err(DsseError::SignatureInvalid { tried: 1, .. })
        ));

        let mut retyped = env.clone();
        retyped.payload_type = "application/x-other".into();
        assert!(matches!(
            verify(&retyped, key.public_key()),
            Err(DsseError::SignatureInvalid { .. })
        ));
    }

    #[test]
    fn verify_accepts_any_one_good_signature_but_not_none() {
        let key = KeyPair::generate().unwrap();
        let other = KeyPair::generate().unwrap();
        let mut env = sign("t", b"body", &other).unwrap();
        env.signatures
            .extend(sign("t", b"body", &key).unwrap().signatures);
        verify(&env, key.public_key()).unwrap();
        env.signatures.clear();
        assert!(matches!(
            verify(&env, key.public_key()),
            Err(DsseError::NoSignatures)
        ));
    }

    /// Vectors from the DSSE repository's testvectors/vectors.json (Ed25519 key "A"): a
    /// signature made by another implementation must verify here, in either base64 alphabet.
    #[test]
    fn verifies_dsse_spec_test_vectors_signed_by_another_implementation() {
        let raw = hex::decode("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
            .unwrap();
        // SPKI for an Ed25519 key is a fixed 12-byte header (RFC 8410) followed by the key.
        let mut spki = hex::decode("302a300506032b6570032100").unwrap();
        spki.extend_from_slice(&raw);
        let key = PublicKey::from_spki_der(&spki).unwrap();

        let single = r#"{"payload":"eyJfdHlwZSI6Imh0dHBzOi8vaW4tdG90by5pby9TdGF0ZW1lbnQvdjEifQ==","payloadType":"application/vnd.in-toto+json","signatures":[{"sig":"2WAfaHm5jluo0w+0rk8uVkluELJYWjSmU9x7EUzx+AyteDGJ4/nqyJXfmAUVFIAoQafWm7AxBZNw5M9ixNHiCA==","keyid":"A"}]}"#;
        let env: Envelope = serde_json::from_str(single).unwrap();
        assert_eq!(
            hex::encode(pae(&env.payload_type, &env.payload)),
            "445353457631203238206170706c69636174696f6e2f766e642e696e2d746f746f2b6a736f6e203433207b225f74797065223a2268747470733a2f2f696e2d746f746f2e696f2f53746174656d656e742f7631227d"
        );
        assert_eq!(
            verify(&env, &key).unwrap(),
            br#"{"_type":"https://in-toto.io/Statement/v1"}"#
        );

        let url_safe = r#"{"payload":"-_-_Pj8=","payloadType":"application/vnd.in-toto+json","signatures":[{"sig":"P-_KHICeR7tI6S_YyejJTRtrXhcQyQ2LYPaL8h90KjC9qN8HU_svOQ6TuDOT1HIrsGW886DbWNWcCmX5twLrAw==","keyid":"A"}]}"#;
        let env: Envelope = serde_json::from_str(url_safe).unwrap();
        verify(&env, &key).unwrap();

        // Same signature, envelope claims another payload type: must be refused.
        let swapped = single.replace(
            "application/vnd.in-toto+json",
            "application/vnd.example.other+json",
        );
        let env: Envelope = serde_json::from_str(&swapped).unwrap();
        assert!(matches!(
            verify(&env, &key),
            Err(DsseError::SignatureInvalid { .. })
        ));
    }
}
