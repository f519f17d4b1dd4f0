//! `kiln mirror add` under a trust policy: evidence is recorded, refusals name the rule that
//! refused, and a refusal stores nothing. Signatures are made with `openssl`, a signer kiln
//! did not write, so verification is checked against an independent implementation.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::openssl::{openssl, openssl_ed25519_key, openssl_key, openssl_sign};
use common::{Env, text};

/// The catalogue listing and every file under the store's blobs: what "nothing stored" means.
fn stored(env: &Env) -> (String, Vec<PathBuf>) {
    let list = text(&env.kiln_ok(&["mirror", "list"]));
    let mut blobs = Vec::new();
    let mut dirs = vec![env.data_dir().join("store")];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if !path.starts_with(env.data_dir().join("store/locks")) {
                blobs.push(path);
            }
        }
    }
    blobs.sort();
    (list, blobs)
}

/// A policy trusting `acme` for `gcc-*` (signature required, 1 KiB at most), capping every
/// other name at 64 bytes, and denying `evil*`.
fn write_policy(env: &Env, acme_pub: &Path) {
    let policy = format!(
        "signers:\n  acme: {{ key: \"{}\" }}\nrules:\n  - names: \"gcc-*\"\n    require_signature: true\n    signers: [acme]\n    max_size: 1KiB\n  - names: \"*\"\n    max_size: 64\ndeny: [ \"evil*\" ]\n",
        acme_pub.display()
    );
    std::fs::write(env.data_dir().join("mirror-policy.yaml"), policy).unwrap();
}

struct Fixture {
    env: Env,
    file: PathBuf,
    acme_pub: PathBuf,
    good_sig: PathBuf,
    other_pub: PathBuf,
    other_sig: PathBuf,
}

fn fixture() -> Fixture {
    let env = Env::new();
    let file = env.write("src/gcc.tar", "pretend this is gcc\n");
    let (acme_key, acme_pub) = openssl_key(&env, "acme");
    let (other_key, other_pub) = openssl_key(&env, "other");
    let good_sig = openssl_sign(&env, &acme_key, &file, "gcc.sig");
    let other_sig = openssl_sign(&env, &other_key, &file, "gcc.other.sig");
    // The data dir must exist before the policy is written into it.
    env.kiln_ok(&["mirror", "list"]);
    write_policy(&env, &acme_pub);
    Fixture {
        env,
        file,
        acme_pub,
        good_sig,
        other_pub,
        other_sig,
    }
}

fn add(f: &Fixture, name: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["mirror", "add", f.file.to_str().unwrap(), "--name", name];
    args.extend_from_slice(extra);
    f.env.kiln(&args)
}

fn assert_refused(f: &Fixture, out: &std::process::Output, expected: &str) {
    assert!(!out.status.success(), "admitted: {}", text(out));
    assert!(text(out).contains(expected), "{}", text(out));
    let (list, blobs) = stored(&f.env);
    assert!(list.is_empty(), "a refused entry was catalogued: {list}");
    assert!(blobs.is_empty(), "a refused entry left blobs: {blobs:?}");
}

#[test]
fn signed_by_a_trusted_key_is_admitted_with_its_evidence() {
    let f = fixture();
    let digest = common::sha256_file(&f.file);
    let out = add(
        &f,
        "gcc-13@1",
        &[
            "--signature",
            f.good_sig.to_str().unwrap(),
            "--key",
            f.acme_pub.to_str().unwrap(),
            "--sha256",
            &digest,
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let keyid = {
        let der = openssl(&[
            "pkey",
            "-pubin",
            "-in",
            f.acme_pub.to_str().unwrap(),
            "-outform",
            "DER",
        ]);
        let path = f.env.write("acme.der", "");
        std::fs::write(&path, der).unwrap();
        common::sha256_file(&path)
    };
    let list = text(&f.env.kiln_ok(&["mirror", "list"]));
    assert!(
        list.contains(&format!("gcc-13@1\tsha256:{digest}"))
            && list.contains(&format!("signed:acme:{keyid}")),
        "{list}"
    );
    let show = text(&f.env.kiln_ok(&["mirror", "show", "gcc-13@1"]));
    let sig = std::fs::read_to_string(&f.good_sig).unwrap();
    for want in [
        format!("asserted:  sha256:{digest} by operator"),
        format!("signature: {} (verified)", sig.trim()),
        format!("signer:    acme key {keyid} (ecdsa-p256-sha256)"),
        "rule 1 (names \"gcc-*\")".to_owned(),
    ] {
        assert!(show.contains(&want), "missing {want:?} in:\n{show}");
    }
}

#[test]
fn unsigned_where_a_signature_is_required_is_refused_naming_the_rule() {
    let f = fixture();
    let out = add(&f, "gcc-13@1", &[]);
    assert_refused(
        &f,
        &out,
        "refused by rule 1 (names \"gcc-*\"): signature required",
    );
}

#[test]
fn signed_is_not_enough_an_untrusted_key_is_refused() {
    let f = fixture();
    let out = add(
        &f,
        "gcc-13@1",
        &[
            "--signature",
            f.other_sig.to_str().unwrap(),
            "--key",
            f.other_pub.to_str().unwrap(),
        ],
    );
    assert_refused(
        &f,
        &out,
        "refused by rule 1 (names \"gcc-*\"): signed by key",
    );
    assert!(text(&out).contains("does not trust"), "{}", text(&out));
}

#[test]
fn a_signature_that_does_not_verify_is_refused() {
    let f = fixture();
    // Made by another key, presented with acme's key.
    let out = add(
        &f,
        "gcc-13@1",
        &[
            "--signature",
            f.other_sig.to_str().unwrap(),
            "--key",
            f.acme_pub.to_str().unwrap(),
        ],
    );
    assert_refused(&f, &out, "does not verify");
    // acme's signature over other bytes.
    let tampered = f.env.write("src/tampered.tar", "pretend this is gcc!\n");
    let out = f.env.kiln(&[
        "mirror",
        "add",
        tampered.to_str().unwrap(),
        "--name",
        "gcc-13@1",
        "--signature",
        f.good_sig.to_str().unwrap(),
        "--key",
        f.acme_pub.to_str().unwrap(),
    ]);
    assert_refused(&f, &out, "does not verify");
}

#[test]
fn a_denied_name_is_refused() {
    let f = fixture();
    let out = add(&f, "evil-tool@1", &[]);
    assert_refused(&f, &out, "refused by deny entry 1 (\"evil*\")");
}

#[test]
fn an_entry_over_max_size_is_refused() {
    let f = fixture();
    let big = f.env.write("src/big.bin", &"x".repeat(65));
    let out = f
        .env
        .kiln(&["mirror", "add", big.to_str().unwrap(), "--name", "zlib@1"]);
    assert_refused(
        &f,
        &out,
        "refused by rule 2 (names \"*\"): 65 bytes is more than max_size 64",
    );
    let dir = f.env.path("src/tree");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a"), "x".repeat(100)).unwrap();
    let out = f.env.kiln(&[
        "mirror",
        "add",
        dir.to_str().unwrap(),
        "--tree",
        "--name",
        "zlib-src@1",
    ]);
    assert_refused(&f, &out, "refused by rule 2");
}

#[test]
fn a_malformed_policy_is_a_one_line_error_with_file_line_column() {
    let f = fixture();
    let bad = f.env.write(
        "bad-policy.yaml",
        "rules:\n  - names: \"gcc-*\"\n    require_signatures: true\n",
    );
    let out = add(&f, "zlib@1", &["--policy", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = text(&out);
    let line = err
        .lines()
        .find(|l| l.contains("bad-policy.yaml:3:5: unknown field `require_signatures`"))
        .unwrap_or_else(|| panic!("no file:line:column diagnostic in:\n{err}"));
    assert!(line.contains("require_signature"), "{line}");
    let bad = f.env.write(
        "bad-policy2.yaml",
        "rules:\n  - names: \"gcc-*\"\n    signers: [nobody]\n    max_size: huge\n",
    );
    let out = add(&f, "zlib@1", &["--policy", bad.to_str().unwrap()]);
    let err = text(&out);
    assert!(
        err.contains("bad-policy2.yaml:3:15: unknown signer `nobody`"),
        "{err}"
    );
    assert!(
        err.contains("bad-policy2.yaml:4:15: invalid size \"huge\""),
        "{err}"
    );
    let (list, blobs) = stored(&f.env);
    assert!(list.is_empty() && blobs.is_empty());
}

#[test]
fn a_broken_policy_edit_is_reported_and_the_last_good_policy_stays_in_force() {
    let f = fixture();
    // The first add reads the policy and keeps it as the last good copy.
    let out = add(&f, "gcc-13@1", &[]);
    assert!(text(&out).contains("refused by rule 1"), "{}", text(&out));
    let policy = f.env.data_dir().join("mirror-policy.yaml");
    let good = std::fs::read_to_string(&policy).unwrap();
    // An edit that breaks line 5 (`require_signature` misspelt) and would, if it were read as
    // far as it goes, drop the signature requirement.
    std::fs::write(
        &policy,
        good.replace("require_signature: true", "require_signatures: false"),
    )
    .unwrap();
    let out = add(&f, "gcc-13@1", &[]);
    let err = text(&out);
    assert!(
        err.contains("mirror-policy.yaml:5:5: unknown field `require_signatures`"),
        "the error names no line and column:\n{err}"
    );
    assert_refused(
        &f,
        &out,
        "refused by rule 1 (names \"gcc-*\"): signature required",
    );
    let out = add(
        &f,
        "gcc-13@1",
        &[
            "--signature",
            f.good_sig.to_str().unwrap(),
            "--key",
            f.acme_pub.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let show = text(&f.env.kiln_ok(&["mirror", "show", "gcc-13@1"]));
    assert!(
        show.contains("(its last good copy: the file has errors): rule 1"),
        "{show}"
    );
}

#[test]
fn policy_edits_take_effect_on_the_next_add() {
    let f = fixture();
    assert!(!add(&f, "gcc-13@1", &[]).status.success());
    std::fs::write(
        f.env.data_dir().join("mirror-policy.yaml"),
        "rules:\n  - names: \"*\"\n",
    )
    .unwrap();
    let out = add(&f, "gcc-13@1", &[]);
    assert!(out.status.success(), "{}", text(&out));
    std::fs::remove_file(f.env.data_dir().join("mirror-policy.yaml")).unwrap();
    let out = add(&f, "evil@1", &[]);
    assert!(
        out.status.success(),
        "no policy file means no policy: {}",
        text(&out)
    );
    let show = text(&f.env.kiln_ok(&["mirror", "show", "evil@1"]));
    assert!(show.contains("policy:    no policy"), "{show}");
}

#[test]
fn an_ed25519_signature_from_openssl_is_verified() {
    let f = fixture();
    let (key, public) = openssl_ed25519_key(&f.env, "ed");
    let raw = openssl(&[
        "pkeyutl",
        "-sign",
        "-rawin",
        "-inkey",
        key.to_str().unwrap(),
        "-in",
        f.file.to_str().unwrap(),
    ]);
    let sig_der = f.env.path("ed.sig.raw");
    std::fs::write(&sig_der, raw).unwrap();
    let b64 = Command::new("base64")
        .args(["-w0", sig_der.to_str().unwrap()])
        .output()
        .unwrap();
    let sig = f
        .env
        .write("ed.sig", std::str::from_utf8(&b64.stdout).unwrap());
    let policy = f.env.write(
        "ed-policy.yaml",
        &format!(
            "signers:\n  ed: {{ key: \"{}\" }}\nrules:\n  - names: \"zlib\"\n    require_signature: true\n    signers: [ed]\n",
            public.display()
        ),
    );
    let args = [
        "--signature",
        sig.to_str().unwrap(),
        "--key",
        public.to_str().unwrap(),
        "--policy",
        policy.to_str().unwrap(),
    ];
    let out = add(&f, "zlib@1", &args);
    assert!(out.status.success(), "{}", text(&out));
    let show = text(&f.env.kiln_ok(&["mirror", "show", "zlib@1"]));
    assert!(show.contains("signer:    ed key"), "{show}");
    assert!(show.contains("(ed25519)"), "{show}");
    let tampered = f.env.write("src/other.tar", "other bytes\n");
    let out = f.env.kiln(&[
        "mirror",
        "add",
        tampered.to_str().unwrap(),
        "--name",
        "zlib@2",
        "--signature",
        sig.to_str().unwrap(),
        "--key",
        public.to_str().unwrap(),
        "--policy",
        policy.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(text(&out).contains("does not verify"), "{}", text(&out));
}
