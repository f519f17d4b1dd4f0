//! Interop: kiln's DSSE envelopes checked by securesystemslib (Python), a DSSE implementation
//! kiln did not write, in both directions, and with tampering that must fail on both sides.
//!
//! Needs `python3` with `securesystemslib[crypto]` (see attest/README.md). The test fails —
//! it does not skip — when the module is missing. `KILN_PYTHON` overrides the interpreter.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::statement_and_artifact;
use kiln_attest::{
    ArtifactRef, KeyPair, PublicKey, VerifyError, sign_statement, to_jsonl, verify_provenance,
};
use kiln_core::Sha256Digest;

const EXIT_MODULE_MISSING: i32 = 3;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/securesystemslib_dsse.py")
}

fn python(args: &[&std::ffi::OsStr]) -> Output {
    let interpreter = std::env::var_os("KILN_PYTHON").unwrap_or_else(|| "python3".into());
    let out = Command::new(&interpreter)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .arg(script())
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {interpreter:?} ({e}): install python3 and run the test command in attest/README.md"
            )
        });
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(EXIT_MODULE_MISSING) {
        panic!(
            "securesystemslib is missing: run the test command in attest/README.md \
             (pip install -r attest/tests/interop/requirements.txt)\n{stderr}"
        );
    }
    out
}

#[test]
fn securesystemslib_verifies_kiln_envelope_and_rejects_tampered_ones() {
    let dir = tempfile::tempdir().unwrap();
    let key = KeyPair::generate().unwrap();
    let files = key.write_key_files(dir.path()).unwrap();
    let (statement, artifact) = statement_and_artifact();
    let jsonl = to_jsonl(&[sign_statement(&statement, &key).unwrap()]).unwrap();
    let jsonl_path = dir.path().join("hello.intoto.jsonl");
    std::fs::write(&jsonl_path, &jsonl).unwrap();

    let digest = Sha256Digest::of(&artifact).to_string();
    let out = python(&[
        "verify".as_ref(),
        "--pub".as_ref(),
        files.public_key.as_os_str(),
        "--jsonl".as_ref(),
        jsonl_path.as_os_str(),
        "--artifact-sha256".as_ref(),
        digest.as_ref(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "securesystemslib rejected kiln's provenance:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("securesystemslib accepts kiln's envelope"),
        "{stdout}"
    );
    assert_eq!(
        stdout.matches("rejects tampered envelope").count(),
        3,
        "{stdout}"
    );

    // The same script must say no to an envelope kiln's key did not sign.
    let other = KeyPair::generate().unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let other_files = other.write_key_files(other_dir.path()).unwrap();
    let out = python(&[
        "verify".as_ref(),
        "--pub".as_ref(),
        other_files.public_key.as_os_str(),
        "--jsonl".as_ref(),
        jsonl_path.as_os_str(),
        "--artifact-sha256".as_ref(),
        digest.as_ref(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn kiln_verifies_securesystemslib_envelope_and_rejects_tampered_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (statement, artifact) = statement_and_artifact();
    let payload_path = dir.path().join("statement.json");
    std::fs::write(&payload_path, serde_json::to_vec(&statement).unwrap()).unwrap();
    let out = python(&[
        "sign".as_ref(),
        "--payload".as_ref(),
        payload_path.as_os_str(),
        "--out-dir".as_ref(),
        dir.path().as_os_str(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let key = PublicKey::from_spki_pem_file(&dir.path().join("python.pub")).unwrap();
    let jsonl = std::fs::read_to_string(dir.path().join("envelope.intoto.jsonl")).unwrap();
    let v = verify_provenance(ArtifactRef::Bytes(&artifact), &jsonl, &key).unwrap();
    assert_eq!(v.statement, statement);

    // Flip one bit of the payload as securesystemslib encoded it.
    let mut env: serde_json::Value = serde_json::from_str(jsonl.trim()).unwrap();
    let mut payload: kiln_attest::Envelope = serde_json::from_value(env.clone()).unwrap();
    payload.payload[10] ^= 1;
    env["payload"] = serde_json::to_value(&payload).unwrap()["payload"].clone();
    let err = verify_provenance(ArtifactRef::Bytes(&artifact), &env.to_string(), &key).unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::Check {
                err: kiln_attest::EnvelopeCheckError::SignatureInvalid { .. },
                ..
            }
        ),
        "{err:?}"
    );
}
