//! Keys and signatures made with `openssl`, a signer kiln did not write, so kiln's
//! verification is checked against an independent implementation.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::Env;

/// An ECDSA P-256 key pair made by openssl: (private PEM, SPKI PEM public key).
pub fn openssl_key(env: &Env, name: &str) -> (PathBuf, PathBuf) {
    let key = env.path(&format!("{name}.key"));
    openssl(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        key.to_str().unwrap(),
    ]);
    let public = public_key_of(env, name, &key);
    (key, public)
}

/// An Ed25519 key pair made by openssl: (private PEM, SPKI PEM public key).
#[allow(dead_code)] // not every e2e binary signs with Ed25519
pub fn openssl_ed25519_key(env: &Env, name: &str) -> (PathBuf, PathBuf) {
    let key = env.path(&format!("{name}.key"));
    openssl(&[
        "genpkey",
        "-algorithm",
        "ed25519",
        "-out",
        key.to_str().unwrap(),
    ]);
    let public = public_key_of(env, name, &key);
    (key, public)
}

/// Writes `key`'s public key (SPKI PEM) to `NAME.pub`; its path.
fn public_key_of(env: &Env, name: &str, key: &Path) -> PathBuf {
    let public = env.path(&format!("{name}.pub"));
    openssl(&[
        "pkey",
        "-in",
        key.to_str().unwrap(),
        "-pubout",
        "-out",
        public.to_str().unwrap(),
    ]);
    public
}

/// `openssl dgst -sha256 -sign KEY FILE`: the raw (DER) signature.
pub fn openssl_sign_der(key: &Path, file: &Path) -> Vec<u8> {
    openssl(&[
        "dgst",
        "-sha256",
        "-sign",
        key.to_str().unwrap(),
        file.to_str().unwrap(),
    ])
}

/// `openssl dgst -sha256 -sign KEY FILE`, base64-encoded as `cosign sign-blob` writes it.
pub fn openssl_sign(env: &Env, key: &Path, file: &Path, out: &str) -> PathBuf {
    let der = openssl_sign_der(key, file);
    let b64 = Command::new("base64")
        .arg("-w0")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            child.stdin.take().unwrap().write_all(&der)?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(b64.status.success());
    env.write(out, std::str::from_utf8(&b64.stdout).unwrap())
}

pub fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
