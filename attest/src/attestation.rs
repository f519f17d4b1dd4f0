//! The provenance file `ARTIFACT.intoto.jsonl` — one DSSE envelope per line, each carrying an
//! in-toto Statement — and its verification.
//!
//! Verification turns untrusted text into a [`VerifiedProvenance`] in the order DSSE
//! prescribes: decode the envelope, check a signature over the PAE under the trusted key, then
//! check the payload type, then parse the statement and check `_type`, `predicateType` and that
//! the artifact's digest is a subject. Nothing in the payload is looked at before its signature
//! verifies.
//!
//! Those checks live in one function, `check_envelope`, whichever file the envelope came from:
//! [`verify_provenance`] runs it on each line of `ARTIFACT.intoto.jsonl`, and
//! [`crate::bundle::verify_bundle`] on the envelope of `ARTIFACT.sigstore.json`.

use kiln_core::Sha256Digest;

use crate::dsse::{self, DsseError, Envelope};
use crate::intoto::{self, Statement};
use crate::keys::{KeyId, KeyPair, PublicKey};
use crate::slsa::{self, Provenance};

/// At most this many envelopes are read from one provenance file.
pub const MAX_ENVELOPES: usize = 64;

/// The provenance file name for an artifact file name: `NAME.intoto.jsonl`.
pub fn provenance_file_name(artifact_name: &str) -> String {
    format!("{artifact_name}.intoto.jsonl")
}

/// Signs an in-toto statement (SLSA provenance, or an SBOM from [`crate::sbom`]) into a DSSE
/// envelope of type `application/vnd.in-toto+json`.
pub fn sign_statement<P: serde::Serialize>(
    statement: &Statement<P>,
    key: &KeyPair,
) -> Result<Envelope, SignError> {
    let payload = serde_json::to_vec(statement).map_err(SignError::Encode)?;
    dsse::sign(intoto::PAYLOAD_TYPE, &payload, key).map_err(SignError::Dsse)
}

/// Renders envelopes as JSON Lines: one compact JSON envelope per line, each ending in `\n`.
pub fn to_jsonl(envelopes: &[Envelope]) -> Result<String, SignError> {
    let mut out = String::new();
    for env in envelopes {
        out.push_str(&serde_json::to_string(env).map_err(SignError::Encode)?);
        out.push('\n');
    }
    Ok(out)
}

/// Why a statement could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("cannot encode the statement as JSON")]
    Encode(#[source] serde_json::Error),
    #[error(transparent)]
    Dsse(DsseError),
}

/// The artifact being verified: its bytes, or a digest the caller computed while streaming it.
#[derive(Clone, Copy, Debug)]
pub enum ArtifactRef<'a> {
    Bytes(&'a [u8]),
    Digest(Sha256Digest),
}

impl ArtifactRef<'_> {
    pub(crate) fn digest(self) -> Sha256Digest {
        match self {
            Self::Bytes(b) => Sha256Digest::of(b),
            Self::Digest(d) => d,
        }
    }
}

/// Provenance whose signature, types and subject all checked out.
#[derive(Clone, Debug)]
pub struct VerifiedProvenance {
    pub statement: Statement<Provenance>,
    /// The artifact's digest, found among the statement's subjects.
    pub artifact: Sha256Digest,
    /// The key the signature verified under.
    pub keyid: KeyId,
    /// 1-based line of the envelope in the provenance file; always 1 for a Sigstore bundle,
    /// which holds exactly one envelope.
    pub line: usize,
}

/// Why a provenance file does not vouch for an artifact. `line` is 1-based.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("the provenance file holds no envelopes")]
    Empty,
    #[error("the provenance file holds more than {MAX_ENVELOPES} envelopes")]
    TooManyEnvelopes,
    #[error("line {line}: not a DSSE JSON envelope")]
    Envelope {
        line: usize,
        #[source]
        err: serde_json::Error,
    },
    /// The envelope parsed but failed a check; `err` says which. Its message is part of this
    /// one, so `err` is not also reported as the source.
    #[error("line {line}: {err}")]
    Check {
        line: usize,
        err: EnvelopeCheckError,
    },
}

impl VerifyError {
    /// How far verification got before this error; used to report the most telling failure
    /// when no line of a multi-line file verifies.
    fn stage(&self) -> u8 {
        match self {
            Self::Empty | Self::TooManyEnvelopes => 0,
            Self::Envelope { .. } => 1,
            Self::Check { err, .. } => 2 + err.stage(),
        }
    }
}

/// Why one parsed DSSE envelope does not vouch for an artifact, wherever the envelope came from.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeCheckError {
    #[error("the envelope has no signatures")]
    NoSignatures,
    #[error(
        "the envelope has {count} signatures; at most {} are accepted",
        dsse::MAX_SIGNATURES
    )]
    TooManySignatures { count: usize },
    #[error(
        "signature invalid: no signature verifies under key {keyid}; the provenance was altered or signed by another key"
    )]
    SignatureInvalid { keyid: KeyId },
    #[error("payloadType is {found:?}, expected {:?}", intoto::PAYLOAD_TYPE)]
    PayloadType { found: String },
    #[error("the payload is not an in-toto statement")]
    Statement(#[source] serde_json::Error),
    #[error("statement _type is {found:?}, expected {:?}", intoto::STATEMENT_TYPE)]
    StatementType { found: String },
    #[error("predicateType is {found:?}, expected {:?}", slsa::PREDICATE_TYPE)]
    PredicateType { found: String },
    #[error("the predicate is not SLSA provenance v1")]
    Predicate(#[source] serde_json::Error),
    #[error(
        "artifact sha256:{digest} is not a subject of this provenance: the artifact differs from the one that was built"
    )]
    ArtifactNotASubject { digest: Sha256Digest },
}

impl EnvelopeCheckError {
    /// How far the checks got: later checks mean the envelope was more nearly right.
    fn stage(&self) -> u8 {
        match self {
            Self::NoSignatures | Self::TooManySignatures { .. } => 0,
            Self::SignatureInvalid { .. } => 1,
            Self::PayloadType { .. } => 2,
            Self::Statement(_) | Self::StatementType { .. } => 3,
            Self::PredicateType { .. } | Self::Predicate(_) => 4,
            Self::ArtifactNotASubject { .. } => 5,
        }
    }
}

/// Checks that `jsonl` (the contents of `ARTIFACT.intoto.jsonl`) holds an envelope signed by
/// `key` whose SLSA provenance statement names `artifact` as a subject.
///
/// The first line that passes every check wins. When none does, the error is the one from the
/// line that got furthest (the first such line on a tie).
pub fn verify_provenance(
    artifact: ArtifactRef<'_>,
    jsonl: &str,
    key: &PublicKey,
) -> Result<VerifiedProvenance, VerifyError> {
    let digest = artifact.digest();
    let mut best: Option<VerifyError> = None;
    let mut seen = 0;
    for (i, text) in jsonl.lines().enumerate() {
        if text.trim().is_empty() {
            continue;
        }
        seen += 1;
        if seen > MAX_ENVELOPES {
            return Err(VerifyError::TooManyEnvelopes);
        }
        match verify_line(i + 1, text, digest, key) {
            Ok(v) => return Ok(v),
            Err(e) => {
                if best.as_ref().is_none_or(|b| e.stage() > b.stage()) {
                    best = Some(e);
                }
            }
        }
    }
    Err(best.unwrap_or(VerifyError::Empty))
}

#[derive(serde::Deserialize)]
struct TypeProbe {
    #[serde(rename = "_type")]
    statement_type: Option<String>,
    #[serde(rename = "predicateType")]
    predicate_type: Option<String>,
}

fn verify_line(
    line: usize,
    text: &str,
    digest: Sha256Digest,
    key: &PublicKey,
) -> Result<VerifiedProvenance, VerifyError> {
    let env: Envelope =
        serde_json::from_str(text).map_err(|err| VerifyError::Envelope { line, err })?;
    let statement =
        check_envelope(&env, digest, key).map_err(|err| VerifyError::Check { line, err })?;
    Ok(VerifiedProvenance {
        statement,
        artifact: digest,
        keyid: key.keyid().clone(),
        line,
    })
}

/// Runs every check on one envelope: a signature over the PAE verifies under `key`, then the
/// payload is an in-toto Statement v1 carrying SLSA Provenance v1 whose subjects include
/// `digest`. Returns the authenticated statement.
///
/// This is the one place these checks are made; every file format that carries an envelope
/// calls it after decoding its own framing.
pub(crate) fn check_envelope(
    env: &Envelope,
    digest: Sha256Digest,
    key: &PublicKey,
) -> Result<Statement<Provenance>, EnvelopeCheckError> {
    let payload = dsse::verify(env, key).map_err(|e| match e {
        DsseError::NoSignatures => EnvelopeCheckError::NoSignatures,
        DsseError::TooManySignatures { count } => EnvelopeCheckError::TooManySignatures { count },
        // `Sign` cannot come out of `verify`; whatever it was, nothing verified.
        DsseError::SignatureInvalid { .. } | DsseError::Sign(_) => {
            EnvelopeCheckError::SignatureInvalid {
                keyid: key.keyid().clone(),
            }
        }
    })?;
    if env.payload_type != intoto::PAYLOAD_TYPE {
        return Err(EnvelopeCheckError::PayloadType {
            found: env.payload_type.clone(),
        });
    }
    // Read the two type fields on their own first, so a statement of another kind is reported
    // as such rather than as a shape mismatch.
    let probe: TypeProbe =
        serde_json::from_slice(payload).map_err(EnvelopeCheckError::Statement)?;
    if probe.statement_type.as_deref() != Some(intoto::STATEMENT_TYPE) {
        return Err(EnvelopeCheckError::StatementType {
            found: probe.statement_type.unwrap_or_default(),
        });
    }
    if probe.predicate_type.as_deref() != Some(slsa::PREDICATE_TYPE) {
        return Err(EnvelopeCheckError::PredicateType {
            found: probe.predicate_type.unwrap_or_default(),
        });
    }
    let raw: Statement<serde_json::Value> =
        serde_json::from_slice(payload).map_err(EnvelopeCheckError::Statement)?;
    let predicate: Provenance =
        serde_json::from_value(raw.predicate).map_err(EnvelopeCheckError::Predicate)?;
    if !raw.subject.iter().any(|s| s.digest.sha256 == Some(digest)) {
        return Err(EnvelopeCheckError::ArtifactNotASubject { digest });
    }
    Ok(Statement {
        statement_type: raw.statement_type,
        subject: raw.subject,
        predicate_type: raw.predicate_type,
        predicate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provenance::{build_statement, tests as fixtures};

    struct Signed {
        key: KeyPair,
        artifact: Vec<u8>,
        jsonl: String,
    }

    fn signed() -> Signed {
        let steps = fixtures::three_steps();
        let statement = build_statement(&fixtures::request(&steps)).unwrap();
        let key = KeyPair::generate().unwrap();
        let env = sign_statement(&statement, &key).unwrap();
        Signed {
            key,
            artifact: b"ELF hello".to_vec(),
            jsonl: to_jsonl(&[env]).unwrap(),
        }
    }

    fn envelope(jsonl: &str) -> Envelope {
        serde_json::from_str(jsonl.lines().next().unwrap()).unwrap()
    }

    #[test]
    fn sign_then_verify_round_trips() {
        let s = signed();
        assert_eq!(s.jsonl.lines().count(), 1);
        assert!(s.jsonl.ends_with('\n'));
        let v = verify_provenance(
            ArtifactRef::Bytes(&s.artifact),
            &s.jsonl,
            s.key.public_key(),
        )
        .unwrap();
        assert_eq!(v.line, 1);
        assert_eq!(&v.keyid, s.key.keyid());
        assert_eq!(
            v.statement
                .predicate
                .build_definition
                .resolved_dependencies
                .len(),
            5
        );
        // Same answer from a streamed digest.
        verify_provenance(
            ArtifactRef::Digest(Sha256Digest::of(&s.artifact)),
            &s.jsonl,
            s.key.public_key(),
        )
        .unwrap();
    }

    #[test]
    fn rejects_artifact_with_one_byte_flipped() {
        let s = signed();
        let mut artifact = s.artifact.clone();
        artifact[3] ^= 0x01;
        let err = verify_provenance(ArtifactRef::Bytes(&artifact), &s.jsonl, s.key.public_key())
            .unwrap_err();
        assert!(
            matches!(err, VerifyError::Check { line: 1, err: EnvelopeCheckError::ArtifactNotASubject { digest } } if digest == Sha256Digest::of(&artifact)),
            "{err:?}"
        );
    }

    #[test]
    fn rejects_edited_and_reencoded_payload() {
        let s = signed();
        let mut env = envelope(&s.jsonl);
        let text = String::from_utf8(env.payload.clone()).unwrap();
        let edited = text.replace("make link", "make evil");
        assert_ne!(edited, text);
        env.payload = edited.into_bytes();
        let jsonl = to_jsonl(&[env]).unwrap();
        let err = verify_provenance(ArtifactRef::Bytes(&s.artifact), &jsonl, s.key.public_key())
            .unwrap_err();
        assert!(
            matches!(
                err,
                VerifyError::Check {
                    line: 1,
                    err: EnvelopeCheckError::SignatureInvalid { .. }
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn rejects_signature_by_a_different_key() {
        let s = signed();
        let other = KeyPair::generate().unwrap();
        let err = verify_provenance(
            ArtifactRef::Bytes(&s.artifact),
            &s.jsonl,
            other.public_key(),
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                VerifyError::Check {
                    err: EnvelopeCheckError::SignatureInvalid { .. },
                    ..
                }
            ),
            "{err:?}"
        );
        // And an envelope re-signed by the other key does not pass under the right one.
        let env = envelope(&s.jsonl);
        let forged = dsse::sign(&env.payload_type, &env.payload, &other).unwrap();
        let jsonl = to_jsonl(&[forged]).unwrap();
        let err = verify_provenance(ArtifactRef::Bytes(&s.artifact), &jsonl, s.key.public_key())
            .unwrap_err();
        assert!(
            matches!(
                err,
                VerifyError::Check {
                    err: EnvelopeCheckError::SignatureInvalid { .. },
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn rejects_wrong_payload_type_even_when_correctly_signed() {
        let s = signed();
        let env = envelope(&s.jsonl);
        let resigned = dsse::sign("application/json", &env.payload, &s.key).unwrap();
        let jsonl = to_jsonl(&[resigned]).unwrap();
        let err = verify_provenance(ArtifactRef::Bytes(&s.artifact), &jsonl, s.key.public_key())
            .unwrap_err();
        assert!(
            matches!(&err, VerifyError::Check { err: EnvelopeCheckError::PayloadType { found }, .. } if found == "application/json"),
            "{err:?}"
        );
        // Relabelling the type without re-signing breaks the signature instead.
        let mut relabelled = envelope(&s.jsonl);
        relabelled.payload_type = "application/json".into();
        let jsonl = to_jsonl(&[relabelled]).unwrap();
        let err = verify_provenance(ArtifactRef::Bytes(&s.artifact), &jsonl, s.key.public_key())
            .unwrap_err();
        assert!(
            matches!(
                err,
                VerifyError::Check {
                    err: EnvelopeCheckError::SignatureInvalid { .. },
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn rejects_wrong_statement_and_predicate_types() {
        let s = signed();
        let env = envelope(&s.jsonl);
        let text = String::from_utf8(env.payload).unwrap();
        for (from, to) in [
            (
                "https://in-toto.io/Statement/v1",
                "https://in-toto.io/Statement/v0.1",
            ),
            (
                "https://slsa.dev/provenance/v1",
                "https://slsa.dev/provenance/v0.2",
            ),
        ] {
            let payload = text.replace(from, to);
            let env = dsse::sign(intoto::PAYLOAD_TYPE, payload.as_bytes(), &s.key).unwrap();
            let jsonl = to_jsonl(&[env]).unwrap();
            let err =
                verify_provenance(ArtifactRef::Bytes(&s.artifact), &jsonl, s.key.public_key())
                    .unwrap_err();
            assert!(
                matches!(
                    err,
                    VerifyError::Check {
                        err: EnvelopeCheckError::StatementType { .. }
                            | EnvelopeCheckError::PredicateType { .. },
                        ..
                    }
                ),
                "{err:?}"
            );
            assert!(err.to_string().contains(to), "{err}");
        }
    }

    #[test]
    fn picks_the_verifying_line_and_reports_the_most_telling_failure() {
        let s = signed();
        let other = signed();
        // A line signed by an unknown key, then a good one: the good one wins.
        let jsonl = format!("{}\n{}", other.jsonl, s.jsonl);
        let v =
            verify_provenance(ArtifactRef::Bytes(&s.artifact), &jsonl, s.key.public_key()).unwrap();
        assert_eq!(v.line, 3);
        // Wrong artifact: the signed line's subject error beats the other line's signature error.
        let err =
            verify_provenance(ArtifactRef::Bytes(b"nope"), &jsonl, s.key.public_key()).unwrap_err();
        assert!(
            matches!(
                err,
                VerifyError::Check {
                    line: 3,
                    err: EnvelopeCheckError::ArtifactNotASubject { .. }
                }
            ),
            "{err:?}"
        );
        assert!(matches!(
            verify_provenance(ArtifactRef::Bytes(b"x"), "\n \n", s.key.public_key()),
            Err(VerifyError::Empty)
        ));
        assert!(matches!(
            verify_provenance(ArtifactRef::Bytes(b"x"), "{", s.key.public_key()),
            Err(VerifyError::Envelope { line: 1, .. })
        ));
    }

    #[test]
    fn provenance_file_is_named_after_the_artifact() {
        assert_eq!(provenance_file_name("hello"), "hello.intoto.jsonl");
    }
}
