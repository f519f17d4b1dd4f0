//! Signed commits: git's allowed-signers file (`gpg.ssh.allowedSignersFile`) and the SSH
//! signature (sshsig, namespace `git`) a commit carries in its `gpgsig` header.
//!
//! Only the subset of the allowed-signers format kiln can honour exactly is accepted:
//! `PRINCIPALS [namespaces="…"] KEY-TYPE BASE64-KEY [COMMENT]`. Certificate authorities and
//! validity windows are refused when the file is read, rather than ignored. GPG signatures are
//! refused: kiln verifies SSH signatures only.

use ssh_key::{HashAlg, PublicKey, SshSig};

/// The sshsig namespace git signs commits in.
const GIT_NAMESPACE: &str = "git";

/// One line of an allowed-signers file.
#[derive(Clone, Debug)]
struct AllowedSigner {
    /// The principals field as written, e.g. `alice@example.com,alice@corp.example`.
    principals: String,
    key: PublicKey,
}

/// A parsed allowed-signers file.
#[derive(Clone, Debug, Default)]
pub struct AllowedSigners(Vec<AllowedSigner>);

/// Key types an allowed-signers line may name (the ones kiln can verify).
const KEY_TYPES: [&str; 2] = ["ssh-ed25519", "ecdsa-sha2-nistp256"];

impl AllowedSigners {
    /// Parses git's allowed-signers format; the error names the line and what was expected.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut signers = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let signer = parse_line(line).map_err(|e| format!("line {}: {e}", i + 1))?;
            if let Some(signer) = signer {
                signers.push(signer);
            }
        }
        Ok(Self(signers))
    }

    /// Whether no signer is listed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Parses one non-empty line; `None` for a line whose `namespaces` exclude git.
fn parse_line(line: &str) -> Result<Option<AllowedSigner>, String> {
    let mut fields = line.split_whitespace();
    let principals = fields
        .next()
        .ok_or("expected `PRINCIPALS KEY-TYPE BASE64-KEY`")?;
    if principals.starts_with('"') {
        return Err("quoted principals are not supported: list them comma-separated".into());
    }
    let mut field = fields
        .next()
        .ok_or("expected a key type after the principals")?;
    let mut for_git = true;
    if !KEY_TYPES.contains(&field) && !field.starts_with("ssh-") && !field.starts_with("ecdsa-") {
        for option in split_options(field) {
            match option.split_once('=') {
                Some(("namespaces", list)) => {
                    for_git = list
                        .trim_matches('"')
                        .split(',')
                        .any(|n| n == GIT_NAMESPACE);
                }
                _ => {
                    return Err(format!(
                        "option {option:?} is not supported (only namespaces=\"…\" is)"
                    ));
                }
            }
        }
        field = fields
            .next()
            .ok_or("expected a key type after the options")?;
    }
    if !KEY_TYPES.contains(&field) {
        return Err(format!(
            "key type {field:?} is not supported: use ssh-ed25519 or ecdsa-sha2-nistp256"
        ));
    }
    let base64 = fields
        .next()
        .ok_or("expected the base64 key after its type")?;
    let key = PublicKey::from_openssh(&format!("{field} {base64}"))
        .map_err(|e| format!("the {field} key does not parse: {e}"))?;
    Ok(for_git.then(|| AllowedSigner {
        principals: principals.to_owned(),
        key,
    }))
}

/// Splits `a,b="x,y",c` at the commas outside double quotes.
fn split_options(field: &str) -> Vec<&str> {
    let mut options = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in field.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                options.push(&field[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    options.push(&field[start..]);
    options
}

/// Why a commit's signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureProblem {
    /// An OpenPGP signature.
    Gpg,
    /// Not an sshsig, or one that does not parse.
    Malformed(String),
    /// Signed by a key no allowed-signers line lists; the key's fingerprint.
    UnknownKey(String),
    /// Signed by a listed key, but the signature does not verify over the commit (or was made
    /// for another namespace).
    Invalid(String),
}

/// The signer of a verified commit: the principals of the line that matched, and the key's
/// SHA-256 fingerprint (`SHA256:…`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub principals: String,
    pub fingerprint: String,
}

/// Verifies `signature` (the `gpgsig` header's value) over `payload` (the commit without that
/// header) against `allowed`.
pub fn verify(
    allowed: &AllowedSigners,
    signature: &[u8],
    payload: &[u8],
) -> Result<Verified, SignatureProblem> {
    if signature.starts_with(b"-----BEGIN PGP SIGNATURE-----") {
        return Err(SignatureProblem::Gpg);
    }
    let sig =
        SshSig::from_pem(signature).map_err(|e| SignatureProblem::Malformed(e.to_string()))?;
    let signer_key = PublicKey::from(sig.public_key().clone());
    let fingerprint = signer_key.fingerprint(HashAlg::Sha256).to_string();
    let Some(signer) = allowed
        .0
        .iter()
        .find(|s| s.key.key_data() == sig.public_key())
    else {
        return Err(SignatureProblem::UnknownKey(fingerprint));
    };
    signer
        .key
        .verify(GIT_NAMESPACE, payload, &sig)
        .map_err(|e| SignatureProblem::Invalid(e.to_string()))?;
    Ok(Verified {
        principals: signer.principals.clone(),
        fingerprint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIC/8s+t/IJxVEeD2tUOmFMVzdIKh4nnk1O5x/ekTbfmw";

    #[test]
    fn lines_with_unsupported_options_or_key_types_are_refused() {
        let cases = [
            (
                format!("a@x cert-authority ssh-ed25519 {KEY}"),
                "not supported",
            ),
            (
                format!("a@x valid-after=\"2024\" ssh-ed25519 {KEY}"),
                "not supported",
            ),
            (format!("a@x ssh-rsa {KEY}"), "key type"),
            ("a@x ssh-ed25519".to_owned(), "base64"),
            ("a@x ssh-ed25519 !!!".to_owned(), "does not parse"),
        ];
        for (line, expected) in cases {
            let err = AllowedSigners::parse(&format!("# comment\n\n{line}\n")).unwrap_err();
            assert!(err.starts_with("line 3: "), "{line}: {err}");
            assert!(err.contains(expected), "{line}: {err}");
        }
    }

    #[test]
    fn lines_for_other_namespaces_are_skipped() {
        let text = format!(
            "a@x namespaces=\"file\" ssh-ed25519 {KEY}\nb@x namespaces=\"file,git\" ssh-ed25519 {KEY}\n"
        );
        let signers = AllowedSigners::parse(&text).unwrap();
        assert_eq!(signers.0.len(), 1);
        assert_eq!(signers.0[0].principals, "b@x");
    }

    #[test]
    fn gpg_and_garbage_signatures_are_refused() {
        let allowed = AllowedSigners::parse(&format!("a@x ssh-ed25519 {KEY}")).unwrap();
        let gpg = b"-----BEGIN PGP SIGNATURE-----\n\nxx\n-----END PGP SIGNATURE-----\n";
        assert_eq!(verify(&allowed, gpg, b"p"), Err(SignatureProblem::Gpg));
        assert!(matches!(
            verify(&allowed, b"nonsense", b"p"),
            Err(SignatureProblem::Malformed(_))
        ));
    }
}
