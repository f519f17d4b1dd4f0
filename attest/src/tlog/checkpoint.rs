//! C2SP tlog checkpoints (<https://c2sp.org/tlog-checkpoint>): the signed statement "the log
//! `origin` had `size` entries and this root".
//!
//! ```text
//! <origin>
//! <tree size, ASCII decimal, no leading zeros>
//! <root hash, standard base64 of 32 bytes>
//! [<extension line>]...
//! ```
//!
//! Every line ends in a newline; the note signature ([`super::note`]) covers all of it.
//! Encoding and parsing are exact: [`Checkpoint::parse`] accepts only what
//! [`Checkpoint::to_text`] could have written, so a checkpoint has one text form.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sigstore::errors::SigstoreError;

use super::merkle::Hash;
use super::note::{NoteKeyId, NoteSigner, NoteVerifier, open_note, sign_note};

/// Everything that can be wrong with a checkpoint, a signed note or a note key.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    // Note framing.
    #[error("note is not UTF-8 (invalid byte at offset {offset})")]
    NotUtf8 { offset: usize },
    #[error(
        "note contains control character 0x{byte:02x} at offset {offset}; only newlines are allowed"
    )]
    ControlCharacter { offset: usize, byte: u8 },
    #[error(
        "note has no signature block: text, a blank line and newline-terminated signature lines are required"
    )]
    NoSignatureBlock,
    #[error("signature line {line} is malformed: {reason}")]
    SignatureLineMalformed { line: usize, reason: &'static str },
    #[error("note has more than {max} signature lines")]
    TooManySignatures { max: usize },
    #[error("note text must be non-empty and end in a newline")]
    TextUnterminated,

    // Signatures.
    #[error(
        "the signature by key {name}+{key_id} on line {line} does not verify: the note was altered or forged"
    )]
    SignatureInvalid {
        name: String,
        key_id: NoteKeyId,
        line: usize,
    },
    #[error(
        "note carries no signature by key {name}+{key_id} ({ignored} signatures by other keys ignored): it was not signed by the trusted log key"
    )]
    NotSignedByKey {
        name: String,
        key_id: NoteKeyId,
        ignored: usize,
    },

    // Keys.
    #[error("invalid key name {name:?}: it must be non-empty, without spaces or '+'")]
    KeyName { name: String },
    #[error("malformed verifier key: {reason} (expected <name>+<8 hex digits>+<base64 key>)")]
    VerifierKeyMalformed { reason: &'static str },
    #[error(
        "malformed signer key: {reason} (expected PRIVATE+KEY+<name>+<8 hex digits>+<base64 key>)"
    )]
    SignerKeyMalformed { reason: &'static str },
    #[error("unsupported note key type 0x{alg:02x}: kiln's log keys are Ed25519 (0x01)")]
    UnsupportedKeyType { alg: u8 },
    #[error("the key states key ID {stated} but its name and public key give {computed}")]
    KeyIdMismatch {
        stated: NoteKeyId,
        computed: NoteKeyId,
    },
    #[error("not an Ed25519 private key in unencrypted PKCS#8")]
    PrivateKey(#[source] SigstoreError),
    #[error("the private key's public half is not an Ed25519 key")]
    NotEd25519,
    #[error("cannot generate an Ed25519 key")]
    KeyGenerate(#[source] SigstoreError),
    #[error("signing the note failed")]
    Sign(#[source] SigstoreError),

    // Checkpoint body.
    #[error("checkpoint has {lines} lines; origin, tree size and root hash are required")]
    TooFewLines { lines: usize },
    #[error("checkpoint origin line is empty")]
    OriginEmpty,
    #[error(
        "checkpoint origin is {found:?}, expected {expected:?}: this checkpoint is from another log"
    )]
    OriginMismatch { expected: String, found: String },
    #[error("checkpoint tree size {text:?} is not a decimal number without leading zeros")]
    SizeMalformed { text: String },
    #[error("checkpoint root hash {text:?} is not the standard base64 of 32 bytes")]
    RootMalformed { text: String },
    #[error("checkpoint extension line {line} is empty")]
    ExtensionEmpty { line: usize },
    #[error("checkpoint {field} contains a newline or control character")]
    FieldCharacters { field: &'static str },
}

/// A log checkpoint: the log's identity, its size and the RFC 6962 root of its first `size`
/// entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's identity, e.g. `kiln.example/steps` (kiln uses the log key's name).
    pub origin: String,
    /// The number of entries.
    pub size: u64,
    /// `MTH` of the first `size` entries.
    pub root: Hash,
    /// Opaque extra lines, each non-empty. kiln writes none; the spec discourages them.
    pub extensions: Vec<String>,
}

fn has_control(s: &str) -> bool {
    s.bytes().any(|b| b < 0x20)
}

impl Checkpoint {
    /// The checkpoint's note text, every line newline-terminated.
    pub fn to_text(&self) -> Result<String, CheckpointError> {
        if self.origin.is_empty() {
            return Err(CheckpointError::OriginEmpty);
        }
        if has_control(&self.origin) {
            return Err(CheckpointError::FieldCharacters { field: "origin" });
        }
        let mut text = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            self.root.to_base64()
        );
        for (i, ext) in self.extensions.iter().enumerate() {
            if ext.is_empty() {
                return Err(CheckpointError::ExtensionEmpty { line: 4 + i });
            }
            if has_control(ext) {
                return Err(CheckpointError::FieldCharacters {
                    field: "extension line",
                });
            }
            text.push_str(ext);
            text.push('\n');
        }
        Ok(text)
    }

    /// Parses a checkpoint's note text (without signatures).
    pub fn parse(text: &str) -> Result<Self, CheckpointError> {
        let body = text
            .strip_suffix('\n')
            .ok_or(CheckpointError::TextUnterminated)?;
        if let Some(offset) = text.bytes().position(|b| b < 0x20 && b != b'\n') {
            return Err(CheckpointError::ControlCharacter {
                offset,
                byte: text.as_bytes()[offset],
            });
        }
        let lines: Vec<&str> = body.split('\n').collect();
        let [origin, size, root, extensions @ ..] = lines.as_slice() else {
            return Err(CheckpointError::TooFewLines { lines: lines.len() });
        };
        if origin.is_empty() {
            return Err(CheckpointError::OriginEmpty);
        }
        let size = parse_size(size)?;
        let root = parse_root(root)?;
        if let Some(i) = extensions.iter().position(|e| e.is_empty()) {
            return Err(CheckpointError::ExtensionEmpty { line: 4 + i });
        }
        Ok(Self {
            origin: (*origin).to_owned(),
            size,
            root,
            extensions: extensions.iter().map(|e| (*e).to_owned()).collect(),
        })
    }

    /// Signs the checkpoint as a note with the log key.
    pub fn sign(&self, signer: &NoteSigner) -> Result<String, CheckpointError> {
        sign_note(&self.to_text()?, signer)
    }
}

fn parse_size(text: &str) -> Result<u64, CheckpointError> {
    let malformed = || CheckpointError::SizeMalformed {
        text: text.to_owned(),
    };
    let canonical = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    if !canonical {
        return Err(malformed());
    }
    text.parse().map_err(|_| malformed())
}

fn parse_root(text: &str) -> Result<Hash, CheckpointError> {
    let malformed = || CheckpointError::RootMalformed {
        text: text.to_owned(),
    };
    // STANDARD insists on canonical padding and zero trailing bits, so one root has one text.
    let bytes = STANDARD.decode(text).map_err(|_| malformed())?;
    let bytes: [u8; 32] = bytes.try_into().map_err(|_| malformed())?;
    Ok(Hash(bytes))
}

/// What a verifier trusts about one log: its origin and its checkpoint key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogVerifier {
    origin: String,
    key: NoteVerifier,
}

impl LogVerifier {
    /// Trusts checkpoints of the log `origin` signed by `key`.
    pub fn new(origin: &str, key: NoteVerifier) -> Self {
        Self {
            origin: origin.to_owned(),
            key,
        }
    }

    /// The log's origin.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The log's key.
    pub fn key(&self) -> &NoteVerifier {
        &self.key
    }

    /// Verifies a signed checkpoint note and parses it; the origin must be this log's.
    pub fn open(&self, note: &[u8]) -> Result<Checkpoint, CheckpointError> {
        let opened = open_note(note, &self.key)?;
        let checkpoint = Checkpoint::parse(&opened.text)?;
        if checkpoint.origin != self.origin {
            return Err(CheckpointError::OriginMismatch {
                expected: self.origin.clone(),
                found: checkpoint.origin,
            });
        }
        Ok(checkpoint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tlog::merkle::leaf_hash;

    fn sample() -> Checkpoint {
        Checkpoint {
            origin: "kiln.example/steps".into(),
            size: 13,
            root: leaf_hash(b"x"),
            extensions: vec![],
        }
    }

    #[test]
    fn text_round_trips_exactly() {
        let mut cp = sample();
        let text = cp.to_text().unwrap();
        assert_eq!(
            text,
            format!("kiln.example/steps\n13\n{}\n", cp.root.to_base64())
        );
        assert_eq!(Checkpoint::parse(&text).unwrap(), cp);
        cp.extensions = vec!["ext one".into(), "two".into()];
        let text = cp.to_text().unwrap();
        assert!(text.ends_with("\next one\ntwo\n"), "{text}");
        assert_eq!(Checkpoint::parse(&text).unwrap(), cp);
    }

    #[test]
    fn malformed_bodies_are_refused_with_what_was_wrong() {
        let root = sample().root.to_base64();
        type Expect = fn(&CheckpointError) -> bool;
        let cases: Vec<(String, Expect)> = vec![
            (format!("o\n1\n{root}"), |e| {
                matches!(e, CheckpointError::TextUnterminated)
            }),
            ("o\n1\n".into(), |e| {
                matches!(e, CheckpointError::TooFewLines { lines: 2 })
            }),
            (format!("\n1\n{root}\n"), |e| {
                matches!(e, CheckpointError::OriginEmpty)
            }),
            (format!("o\n01\n{root}\n"), |e| {
                matches!(e, CheckpointError::SizeMalformed { .. })
            }),
            (format!("o\n+1\n{root}\n"), |e| {
                matches!(e, CheckpointError::SizeMalformed { .. })
            }),
            (format!("o\n\n{root}\n"), |e| {
                matches!(e, CheckpointError::SizeMalformed { .. })
            }),
            (format!("o\n18446744073709551616\n{root}\n"), |e| {
                matches!(e, CheckpointError::SizeMalformed { .. })
            }),
            (format!("o\n1 \n{root}\n"), |e| {
                matches!(e, CheckpointError::SizeMalformed { .. })
            }),
            (format!("o\n1\n{}\n", &root[..43]), |e| {
                matches!(e, CheckpointError::RootMalformed { .. })
            }),
            ("o\n1\nAAAA\n".into(), |e| {
                matches!(e, CheckpointError::RootMalformed { .. })
            }),
            (format!("o\n1\n{root}\n\n"), |e| {
                matches!(e, CheckpointError::ExtensionEmpty { line: 4 })
            }),
            (format!("o\r\n1\n{root}\n"), |e| {
                matches!(e, CheckpointError::ControlCharacter { offset: 1, .. })
            }),
        ];
        for (text, expected) in cases {
            let err = Checkpoint::parse(&text).unwrap_err();
            assert!(expected(&err), "{text:?}: {err:?}");
        }
        // A root with non-zero trailing bits decodes to the same bytes under a lax decoder;
        // only the canonical text is accepted.
        const ALPHABET: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let last = ALPHABET.find(&root[42..43]).unwrap();
        assert_eq!(last & 3, 0, "canonical: the two padding bits are zero");
        let mut lax = root.clone();
        lax.replace_range(42..43, &ALPHABET[last | 1..=last | 1]);
        assert!(matches!(
            Checkpoint::parse(&format!("o\n1\n{lax}\n")),
            Err(CheckpointError::RootMalformed { .. })
        ));
    }

    #[test]
    fn to_text_refuses_what_parse_would_refuse() {
        let mut cp = sample();
        cp.origin = String::new();
        assert!(matches!(cp.to_text(), Err(CheckpointError::OriginEmpty)));
        cp.origin = "a\nb".into();
        assert!(matches!(
            cp.to_text(),
            Err(CheckpointError::FieldCharacters { .. })
        ));
        let mut cp = sample();
        cp.extensions = vec![String::new()];
        assert!(matches!(
            cp.to_text(),
            Err(CheckpointError::ExtensionEmpty { line: 4 })
        ));
    }

    #[test]
    fn zero_size_is_written_as_0() {
        let cp = Checkpoint {
            size: 0,
            ..sample()
        };
        assert!(cp.to_text().unwrap().contains("\n0\n"));
        assert_eq!(Checkpoint::parse(&cp.to_text().unwrap()).unwrap().size, 0);
    }
}
