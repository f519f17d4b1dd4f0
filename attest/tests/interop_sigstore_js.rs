//! Interop: kiln's Sigstore bundles (`ARTIFACT.sigstore.json`) verified by sigstore-js
//! (`@sigstore/verify`, `@sigstore/bundle`), a Sigstore client kiln did not write, and tampered
//! or mismatched bundles refused by it — and by kiln's own `verify_bundle`, which must agree.
//!
//! Needs `node` and the pinned packages installed by `npm ci --prefix attest/tests/interop`
//! (see attest/README.md). The test fails — it does not skip — when they are missing.
//! `KILN_NODE` overrides the node binary.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::statement_and_artifact;
use kiln_attest::{
    ArtifactRef, Bundle, BundleError, EnvelopeCheckError, KeyPair, PublicKey, bundle_file_name,
    sign_statement, to_bundle, verify_bundle,
};

const EXIT_MODULE_MISSING: i32 = 3;
const INSTALL: &str =
    "run `npm ci --prefix attest/tests/interop` (the test command in attest/README.md)";

fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop")
}

/// Runs `sigstore_js_verify.mjs BUNDLE ARTIFACT PUBKEY`; panics with what to do when sigstore-js
/// is not installed.
fn sigstore_js(bundle: &Path, artifact: &Path, pubkey: &Path) -> Output {
    let modules = interop_dir().join("node_modules/@sigstore/verify/package.json");
    assert!(
        modules.is_file(),
        "sigstore-js is not installed ({} is missing): {INSTALL}",
        modules.display()
    );
    let node = std::env::var_os("KILN_NODE").unwrap_or_else(|| "node".into());
    let out = Command::new(&node)
        .arg(interop_dir().join("sigstore_js_verify.mjs"))
        .args([bundle, artifact, pubkey])
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {node:?} ({e}): install Node.js 20.17+ and {INSTALL}")
        });
    if out.status.code() == Some(EXIT_MODULE_MISSING) {
        panic!(
            "sigstore-js is not installed: {INSTALL}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

fn show(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Asserts that sigstore-js refused the bundle, for the reason `because` (text in its message).
fn assert_refused(out: &Output, because: &str) {
    assert_eq!(
        out.status.code(),
        Some(1),
        "sigstore-js did not refuse:\n{}",
        show(out)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("verification FAILED") && stderr.contains(because),
        "sigstore-js refused for another reason than {because:?}:\n{}",
        show(out)
    );
}

struct Case {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    key: KeyPair,
    pubkey: PathBuf,
    artifact: Vec<u8>,
    artifact_path: PathBuf,
    bundle: Bundle,
}

impl Case {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_owned();
        let key = KeyPair::generate().unwrap();
        let pubkey = key.write_key_files(&dir).unwrap().public_key;
        let (statement, artifact) = statement_and_artifact();
        let artifact_path = dir.join("hello");
        std::fs::write(&artifact_path, &artifact).unwrap();
        let envelope = sign_statement(&statement, &key).unwrap();
        let bundle = to_bundle(&envelope, key.public_key());
        Self {
            _dir: tmp,
            dir,
            key,
            pubkey,
            artifact,
            artifact_path,
            bundle,
        }
    }

    /// Writes `bundle` as `NAME.sigstore.json` and returns its path and text.
    fn write(&self, name: &str, bundle: &Bundle) -> (PathBuf, String) {
        let path = self.dir.join(bundle_file_name(name));
        let text = bundle.to_json();
        std::fs::write(&path, &text).unwrap();
        (path, text)
    }
}

#[test]
fn sigstore_js_verifies_kiln_bundle() {
    let case = Case::new();
    let (path, text) = case.write("hello", &case.bundle);
    let out = sigstore_js(&path, &case.artifact_path, &case.pubkey);
    assert!(
        out.status.success(),
        "sigstore-js rejected kiln's bundle:\n{}",
        show(&out)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("sigstore-js verified") && stdout.contains(&case.key.keyid().to_string()),
        "{stdout}"
    );
    // kiln agrees.
    let key = PublicKey::from_spki_pem_file(&case.pubkey).unwrap();
    verify_bundle(ArtifactRef::Bytes(&case.artifact), &text, &key).unwrap();
}

#[test]
fn sigstore_js_refuses_bundle_with_edited_payload() {
    let case = Case::new();
    let mut bundle = case.bundle.clone();
    let env = bundle.dsse_envelope.as_mut().unwrap();
    let text = String::from_utf8(env.payload.clone()).unwrap();
    let edited = text.replace("install -m755", "install -m4755");
    assert_ne!(
        edited, text,
        "the fixture statement no longer holds the edited text"
    );
    env.payload = edited.into_bytes();
    let (path, text) = case.write("tampered", &bundle);

    let out = sigstore_js(&path, &case.artifact_path, &case.pubkey);
    assert_refused(&out, "SIGNATURE_ERROR");
    let err = verify_bundle(
        ArtifactRef::Bytes(&case.artifact),
        &text,
        case.key.public_key(),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            BundleError::Check(EnvelopeCheckError::SignatureInvalid { .. })
        ),
        "{err:?}"
    );
}

#[test]
fn sigstore_js_refuses_bundle_checked_against_a_different_key() {
    let case = Case::new();
    let (path, text) = case.write("hello", &case.bundle);
    let other = KeyPair::generate().unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let other_pub = other.write_key_files(other_dir.path()).unwrap().public_key;

    // The hint names kiln's key, which is not in the verifier's keyring.
    let out = sigstore_js(&path, &case.artifact_path, &other_pub);
    assert_refused(&out, "PUBLIC_KEY_ERROR");
    assert!(
        verify_bundle(
            ArtifactRef::Bytes(&case.artifact),
            &text,
            other.public_key()
        )
        .is_err()
    );
}

#[test]
fn sigstore_js_refuses_bundle_signed_by_another_key_claiming_kiln_key() {
    let case = Case::new();
    let other = KeyPair::generate().unwrap();
    // Same statement, signed by another key; envelope keyid and bundle hint claim kiln's key.
    let env = case.bundle.dsse_envelope.as_ref().unwrap();
    let mut forged = kiln_attest::dsse::sign(&env.payload_type, &env.payload, &other).unwrap();
    forged.signatures[0].keyid = Some(case.key.keyid().to_string());
    let bundle = to_bundle(&forged, case.key.public_key());
    let (path, text) = case.write("forged", &bundle);

    let out = sigstore_js(&path, &case.artifact_path, &case.pubkey);
    assert_refused(&out, "SIGNATURE_ERROR");
    assert!(
        verify_bundle(
            ArtifactRef::Bytes(&case.artifact),
            &text,
            case.key.public_key()
        )
        .is_err()
    );
}

#[test]
fn sigstore_js_check_refuses_an_artifact_that_is_not_a_subject() {
    let case = Case::new();
    let (path, text) = case.write("hello", &case.bundle);
    let mut other = case.artifact.clone();
    other.extend_from_slice(b"rm -rf ~\n");
    let other_path = case.dir.join("hello-modified");
    std::fs::write(&other_path, &other).unwrap();

    let out = sigstore_js(&path, &other_path, &case.pubkey);
    assert_refused(&out, "is not a subject");
    let err = verify_bundle(ArtifactRef::Bytes(&other), &text, case.key.public_key()).unwrap_err();
    assert!(
        matches!(
            err,
            BundleError::Check(EnvelopeCheckError::ArtifactNotASubject { .. })
        ),
        "{err:?}"
    );
}
