//! `kiln run` signs provenance for its artifacts; `kiln verify` accepts it and rejects every
//! tampering; an independent DSSE implementation (Python securesystemslib) accepts it too.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use common::{Env, text};

const PIPELINE: &str = "version: 1
name: greet
rootfs: busybox@1
inputs:
  words: { mirror: words@1 }
steps:
  - name: make
    inputs: [words]
    run: cat /in/words/words.txt > /out/greeting && mkdir -p /out/sub && echo x > /out/sub/x
    outputs: [greeting, sub]
  - name: wrap
    needs: [make]
    run: 'echo \"[$(cat /in/make/greeting)]\" > /out/wrapped'
    outputs: [wrapped]
artifacts:
  - { name: wrapped, from: wrap, path: wrapped }
";

struct Built {
    env: Env,
    artifact: PathBuf,
    provenance: PathBuf,
    public_key: PathBuf,
}

fn build() -> Built {
    let env = Env::new();
    env.import_busybox();
    let words = env.write("words/words.txt", "hello kiln\n");
    env.kiln_ok(&[
        "mirror",
        "add",
        words.to_str().unwrap(),
        "--name",
        "words@1",
    ]);
    let pipeline = env.write("greet.yaml", PIPELINE);
    let out = env.run(&pipeline);
    assert!(out.status.success(), "{}", text(&out));
    let public = env.kiln_ok(&["keys", "public"]);
    let public_key = env.write("kiln.pub", &String::from_utf8(public.stdout).unwrap());
    Built {
        artifact: env.path("out/wrapped"),
        provenance: env.path("out/wrapped.intoto.jsonl"),
        public_key,
        env,
    }
}

impl Built {
    fn verify(&self, artifact: &Path, provenance: &Path, key: &Path) -> std::process::Output {
        self.env.kiln(&[
            "verify",
            artifact.to_str().unwrap(),
            "--provenance",
            provenance.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ])
    }
}

#[test]
fn provenance_verifies_and_names_every_dependency() {
    let b = build();
    assert_eq!(fs::read_to_string(&b.artifact).unwrap(), "[hello kiln]\n");
    let out = b.verify(&b.artifact, &b.provenance, &b.public_key);
    assert!(out.status.success(), "{}", text(&out));
    let all = text(&out);
    for expected in ["busybox@1", "words@1", "make/greeting", "make/sub/x"] {
        assert!(
            all.contains(expected),
            "verify output lacks {expected}:\n{all}"
        );
    }
}

#[test]
fn verify_rejects_a_flipped_byte_in_the_artifact() {
    let b = build();
    let mut bytes = fs::read(&b.artifact).unwrap();
    bytes[0] ^= 1;
    let tampered = b.env.path("tampered");
    fs::write(&tampered, bytes).unwrap();
    let out = b.verify(&tampered, &b.provenance, &b.public_key);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("not a subject"), "{}", text(&out));
}

#[test]
fn verify_rejects_an_edited_payload() {
    let b = build();
    let line = fs::read_to_string(&b.provenance).unwrap();
    let mut envelope: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let payload = b64.decode(envelope["payload"].as_str().unwrap()).unwrap();
    let edited = String::from_utf8(payload)
        .unwrap()
        .replace("words@1", "words@2");
    envelope["payload"] = b64.encode(edited).into();
    let edited_path = b.env.write("edited.intoto.jsonl", &format!("{envelope}\n"));
    let out = b.verify(&b.artifact, &edited_path, &b.public_key);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("signature"), "{}", text(&out));
}

#[test]
fn verify_rejects_a_different_public_key() {
    let b = build();
    let other = b.env.path("other-keys");
    b.env
        .kiln_ok(&["keys", "generate", "--out", other.to_str().unwrap()]);
    let out = b.verify(&b.artifact, &b.provenance, &other.join("kiln.pub"));
    assert!(!out.status.success(), "{}", text(&out));
}

#[test]
fn provenance_verifies_with_securesystemslib() {
    let b = build();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../attest/tests/interop/securesystemslib_dsse.py"
    );
    let digest = common::sha256_file(&b.artifact);
    let out = Command::new("python3")
        .arg(script)
        .args(["verify", "--pub", b.public_key.to_str().unwrap()])
        .args([
            "--jsonl",
            b.provenance.to_str().unwrap(),
            "--artifact-sha256",
            &digest,
        ])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "securesystemslib did not verify kiln's provenance (install it with the README's test command):\n{}",
        text(&out)
    );
}

#[test]
fn bundle_verifies_with_kiln_and_with_sigstore_js_and_tampering_fails_there_too() {
    let b = build();
    let bundle = b.env.path("out/wrapped.sigstore.json");
    let out = b.env.kiln(&[
        "verify",
        b.artifact.to_str().unwrap(),
        "--bundle",
        bundle.to_str().unwrap(),
        "--key",
        b.public_key.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));

    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../attest/tests/interop/sigstore_js_verify.mjs"
    );
    let sigstore_js = |bundle: &Path| {
        Command::new("node")
            .args([
                script,
                bundle.to_str().unwrap(),
                b.artifact.to_str().unwrap(),
                b.public_key.to_str().unwrap(),
            ])
            .output()
            .expect("node runs")
    };
    let good = sigstore_js(&bundle);
    assert!(
        good.status.success(),
        "sigstore-js did not verify kiln's bundle (run `npm ci --prefix attest/tests/interop`):\n{}",
        text(&good)
    );

    let mut json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&bundle).unwrap()).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let payload = b64
        .decode(json["dsseEnvelope"]["payload"].as_str().unwrap())
        .unwrap();
    let edited = String::from_utf8(payload)
        .unwrap()
        .replace("busybox@1", "busybox@9");
    json["dsseEnvelope"]["payload"] = b64.encode(edited).into();
    let tampered = b.env.write("tampered.sigstore.json", &json.to_string());
    let bad = sigstore_js(&tampered);
    assert_eq!(
        bad.status.code(),
        Some(1),
        "sigstore-js accepted a tampered bundle:\n{}",
        text(&bad)
    );
}

#[test]
fn sboms_beside_the_artifact_validate_with_spdx_tools_and_cyclonedx() {
    let b = build();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../attest/tests/interop/sbom_validate.py"
    );
    for (format, file) in [
        ("spdx", "out/wrapped.spdx.json"),
        ("cyclonedx", "out/wrapped.cdx.json"),
    ] {
        let path = b.env.path(file);
        let out = Command::new("python3")
            .arg(script)
            .args([format, path.to_str().unwrap()])
            .output()
            .expect("python3 runs");
        assert!(
            out.status.success(),
            "the {format} validator refused kiln's {file} (install it with the README's test command):\n{}",
            text(&out)
        );
        let doc = fs::read_to_string(&path).unwrap();
        for expected in [
            "pkg:generic/busybox@1?checksum=sha256:",
            "pkg:generic/words@1?checksum=sha256:",
            "kiln:step/make/greeting",
            "kiln:step/make/sub/x",
            &common::sha256_file(&b.artifact),
        ] {
            assert!(doc.contains(expected), "{file} lacks {expected}:\n{doc}");
        }
    }
    for file in [
        "out/wrapped.spdx.intoto.jsonl",
        "out/wrapped.cdx.intoto.jsonl",
    ] {
        let jsonl = fs::read_to_string(b.env.path(file)).unwrap();
        assert_eq!(jsonl.lines().count(), 1, "{file}: {jsonl}");
    }
}

fn verify_with_keyring(
    built: &Built,
    artifact: &Path,
    provenance: &Path,
    ring: &Path,
) -> std::process::Output {
    built.env.kiln(&[
        "verify",
        artifact.to_str().unwrap(),
        "--provenance",
        provenance.to_str().unwrap(),
        "--keyring",
        ring.to_str().unwrap(),
    ])
}

#[test]
fn after_key_rotation_old_and_new_provenance_verify_against_the_exported_key_set() {
    let built = build();
    let env = &built.env;
    // Keep the first run's outputs: the next run writes to the same place.
    let old_dir = env.path("old");
    fs::create_dir_all(&old_dir).unwrap();
    let (old_artifact, old_prov) = (
        old_dir.join("wrapped"),
        old_dir.join("wrapped.intoto.jsonl"),
    );
    fs::copy(&built.artifact, &old_artifact).unwrap();
    fs::copy(&built.provenance, &old_prov).unwrap();

    let rotated = env.kiln_ok(&["keys", "rotate"]);
    assert!(
        String::from_utf8_lossy(&rotated.stdout).contains("retired key"),
        "{}",
        text(&rotated)
    );
    // The retired private key is gone; the new one signs the next run.
    let pipeline = env.path("greet.yaml");
    let out = env.run(&pipeline);
    assert!(out.status.success(), "{}", text(&out));
    let new_public = env.kiln_ok(&["keys", "public"]);
    let new_key = env.write("new.pub", &String::from_utf8(new_public.stdout).unwrap());
    assert!(
        !built
            .verify(&old_artifact, &old_prov, &new_key)
            .status
            .success(),
        "the old provenance is not the new key's"
    );
    assert!(
        !built
            .verify(&built.artifact, &built.provenance, &built.public_key)
            .status
            .success(),
        "the new provenance is not the old key's"
    );

    let exported = env.kiln_ok(&["keys", "export", "--json"]);
    let ring_path = env.write("keyring.json", &String::from_utf8(exported.stdout).unwrap());
    let ring: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&ring_path).unwrap()).unwrap();
    let keys = ring["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2, "{ring:#}");
    assert!(
        keys[0]["not_after"].is_string() && keys[1]["not_after"].is_null(),
        "{ring:#}"
    );
    for (artifact, provenance) in [
        (&old_artifact, &old_prov),
        (&built.artifact, &built.provenance),
    ] {
        let out = verify_with_keyring(&built, artifact, provenance, &ring_path);
        assert!(out.status.success(), "{}", text(&out));
    }
    let listed = env.kiln_ok(&["keys", "export"]);
    assert_eq!(
        String::from_utf8_lossy(&listed.stdout)
            .matches("BEGIN PUBLIC KEY")
            .count(),
        2
    );

    // A key set whose retired key's validity ended before the old build finished refuses it.
    let mut shifted = ring.clone();
    shifted["keys"][0]["not_after"] = serde_json::json!("2000-01-01T00:00:00Z");
    shifted["keys"][0]["not_before"] = serde_json::json!("1999-01-01T00:00:00Z");
    let shifted_path = env.write("shifted.json", &shifted.to_string());
    let out = verify_with_keyring(&built, &old_artifact, &old_prov, &shifted_path);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("which was not valid when the build finished"),
        "{}",
        text(&out)
    );
}
