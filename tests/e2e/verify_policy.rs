//! `kiln verify --policy` on a real artifact of `kiln run`: PASS on the good case, FAIL with
//! the right rule named for a wrong builder key, a missing or wrong source, provenance past its
//! maximum age and a dependency revoked after the build; exit codes 0, 1 and 2; and the signed
//! VSA, checked by securesystemslib.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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
    run: cat /in/words/words.txt > /out/greeting
    outputs: [greeting]
artifacts:
  - { name: greeting, from: make, path: greeting }
";

/// What a consumer of `greeting` requires; `kiln.pub` sits next to the policy.
const POLICY: &str = r#"version: 1
builder:
  keys:
    - file: kiln.pub
  id: "https://kiln.dev/builders/local/*"
pipeline:
  name: greet
dependencies:
  required:
    - name: "busybox@*"
    - name: "words@1"
  forbidden:
    - name: "openssl@*"
max_age_days: 30
revocations: required
"#;

struct Built {
    env: Env,
    artifact: PathBuf,
    provenance: PathBuf,
    bundle: PathBuf,
    policy: PathBuf,
    /// An empty revocation list.
    no_revocations: PathBuf,
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
    env.write(
        "consumer/kiln.pub",
        &String::from_utf8(public.stdout).unwrap(),
    );
    Built {
        artifact: env.path("out/greeting"),
        provenance: env.path("out/greeting.intoto.jsonl"),
        bundle: env.path("out/greeting.sigstore.json"),
        policy: env.write("consumer/verify-policy.yaml", POLICY),
        no_revocations: env.write("consumer/revoked.json", "[]"),
        env,
    }
}

impl Built {
    /// `kiln verify ARTIFACT --bundle B --policy P EXTRA…`.
    fn verify(&self, policy: &Path, extra: &[&str]) -> Output {
        let mut args = vec![
            "verify",
            self.artifact.to_str().unwrap(),
            "--bundle",
            self.bundle.to_str().unwrap(),
            "--policy",
            policy.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        self.env.kiln(&args)
    }

    /// The digest the signed provenance records for a dependency.
    fn dependency_sha256(&self, name: &str) -> String {
        let line = fs::read_to_string(&self.provenance).unwrap();
        let env: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
        let payload = base64::engine::general_purpose::STANDARD
            .decode(env["payload"].as_str().unwrap())
            .unwrap();
        let statement: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        statement["predicate"]["buildDefinition"]["resolvedDependencies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == name)
            .unwrap_or_else(|| panic!("{name} is not a dependency"))["digest"]["sha256"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    fn finished_on(&self) -> time::OffsetDateTime {
        let line = fs::read_to_string(&self.provenance).unwrap();
        let env: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
        let payload = base64::engine::general_purpose::STANDARD
            .decode(env["payload"].as_str().unwrap())
            .unwrap();
        let statement: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        let text = statement["predicate"]["runDetails"]["metadata"]["finishedOn"]
            .as_str()
            .unwrap();
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).unwrap()
    }
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn good_artifact_passes_and_its_vsa_verifies_with_securesystemslib() {
    let b = build();
    let vsa = b.env.path("consumer/greeting.vsa.intoto.jsonl");
    let verifier_keys = b.env.path("verifier-keys");
    b.env
        .kiln_ok(&["keys", "generate", "--out", verifier_keys.to_str().unwrap()]);
    let out = b.verify(
        &b.policy,
        &[
            "--revocations",
            b.no_revocations.to_str().unwrap(),
            "--vsa-out",
            vsa.to_str().unwrap(),
            "--vsa-key",
            verifier_keys.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let s = stdout(&out);
    assert!(s.starts_with("PASS\n"), "{s}");
    for rule in [
        "builder-key",
        "statement",
        "builder-id",
        "pipeline",
        "dependencies-forbidden",
        "dependencies-required",
        "max-age",
        "revoked",
    ] {
        assert!(s.contains(&format!("  ok    {rule}: ")), "{rule}:\n{s}");
    }
    assert!(!s.contains("FAIL"), "{s}");

    // The same check over the .intoto.jsonl file, as JSON.
    let out = b.env.kiln(&[
        "verify",
        b.artifact.to_str().unwrap(),
        "--provenance",
        b.provenance.to_str().unwrap(),
        "--policy",
        b.policy.to_str().unwrap(),
        "--revocations",
        b.no_revocations.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["result"], "PASS");
    assert_eq!(json["failed"], serde_json::json!([]));

    // kiln's own envelope check accepts the VSA under the verifier's key, and it says PASSED.
    let verifier_pub =
        kiln_attest::PublicKey::from_spki_pem_file(&verifier_keys.join("kiln.pub")).unwrap();
    let artifact_digest = kiln_core::Sha256Digest::of(&fs::read(&b.artifact).unwrap());
    let statement = kiln_attest::verify_policy::verify_vsa(
        &fs::read_to_string(&vsa).unwrap(),
        &verifier_pub,
        artifact_digest,
    )
    .unwrap();
    assert_eq!(
        statement.predicate.verification_result,
        kiln_attest::verify_policy::VerificationResult::Passed
    );
    assert_eq!(statement.predicate.verified_levels, ["SLSA_BUILD_LEVEL_1"]);
    assert_eq!(
        statement.predicate.policy.digest.sha256,
        Some(kiln_core::Sha256Digest::of(POLICY.as_bytes()))
    );

    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../attest/tests/interop/securesystemslib_vsa.py"
    );
    let digest = common::sha256_file(&b.artifact);
    let check = |key: &Path| {
        Command::new("python3")
            .arg(script)
            .arg("--pub")
            .arg(key)
            .arg("--jsonl")
            .arg(&vsa)
            .args(["--artifact-sha256", &digest, "--expect-result", "PASSED"])
            .output()
            .expect("python3 runs")
    };
    let out = check(&verifier_keys.join("kiln.pub"));
    assert!(
        out.status.success(),
        "securesystemslib did not verify kiln's VSA (pip install -r attest/tests/interop/requirements.txt):\n{}",
        text(&out)
    );
    // Signed by the verifier's key, not the builder's.
    let out = check(&b.env.path("consumer/kiln.pub"));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
}

#[test]
fn wrong_builder_key_fails_builder_key() {
    let b = build();
    let other = b.env.path("other-keys");
    b.env
        .kiln_ok(&["keys", "generate", "--out", other.to_str().unwrap()]);
    fs::copy(other.join("kiln.pub"), b.env.path("consumer/other.pub")).unwrap();
    let policy = b.env.write(
        "consumer/other-key-policy.yaml",
        &POLICY.replace("file: kiln.pub", "file: other.pub"),
    );
    let out = b.verify(
        &policy,
        &["--revocations", b.no_revocations.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let s = stdout(&out);
    assert!(s.starts_with("FAIL"), "{s}");
    assert!(s.contains("  FAIL  builder-key: "), "{s}");
    assert!(s.contains("  skip  pipeline: "), "{s}");
    assert_eq!(s.matches("  FAIL  ").count(), 1, "{s}");
    // The JSON form names the same failing rule.
    let out = b.verify(
        &policy,
        &[
            "--revocations",
            b.no_revocations.to_str().unwrap(),
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["result"], "FAIL");
    assert_eq!(json["failed"], serde_json::json!(["builder-key"]));
}

#[test]
fn provenance_past_its_maximum_age_fails_max_age() {
    let b = build();
    let later = b.finished_on() + time::Duration::days(41);
    let out = b.verify(
        &b.policy,
        &[
            "--revocations",
            b.no_revocations.to_str().unwrap(),
            "--now",
            &rfc3339(later),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let s = stdout(&out);
    assert!(
        s.contains("  FAIL  max-age: built ") && s.contains("(41 days ago), the policy allows 30"),
        "{s}"
    );
    assert_eq!(s.matches("  FAIL  ").count(), 1, "{s}");
    // The same provenance 29 days on still passes.
    let sooner = b.finished_on() + time::Duration::days(29);
    let out = b.verify(
        &b.policy,
        &[
            "--revocations",
            b.no_revocations.to_str().unwrap(),
            "--now",
            &rfc3339(sooner),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn a_dependency_revoked_after_the_build_fails_revoked() {
    let b = build();
    let digest = b.dependency_sha256("words@1");
    let revoked_at = rfc3339(b.finished_on() + time::Duration::hours(1));
    let list = b.env.write(
        "consumer/revoked-words.json",
        &format!(
            r#"[{{"name":"words@1","sha256":"{digest}","reason":"the word list was tampered with upstream","revoked_at":"{revoked_at}"}}]"#
        ),
    );
    let now = rfc3339(b.finished_on() + time::Duration::days(1));
    let out = b.verify(
        &b.policy,
        &["--revocations", list.to_str().unwrap(), "--now", &now],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let s = stdout(&out);
    assert!(s.contains("  FAIL  revoked: words@1"), "{s}");
    assert!(s.contains("after the build"), "{s}");
    assert!(s.contains("tampered with upstream"), "{s}");
    assert_eq!(s.matches("  FAIL  ").count(), 1, "{s}");
}

#[test]
fn a_policy_requiring_a_source_repository_fails_source() {
    let b = build();
    let policy = b.env.write(
        "consumer/source-policy.yaml",
        &format!("{POLICY}source:\n  repository: \"https://github.com/acme/*\"\n"),
    );
    let out = b.verify(
        &policy,
        &["--revocations", b.no_revocations.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let s = stdout(&out);
    assert!(s.contains("  FAIL  source: "), "{s}");
    assert!(s.contains("no git source"), "{s}");
}

#[test]
fn usage_errors_and_malformed_policies_exit_2() {
    let b = build();
    let bad = b.env.write(
        "consumer/bad-policy.yaml",
        "version: 1\nbuilder:\n  keys: [{ file: missing.pub }]\nmax_age_dayz: 3\n",
    );
    let out = b.verify(&bad, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad-policy.yaml:4:"), "{err}");
    let out = b.verify(&b.policy, &["--now", "yesterday"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let broken = b.env.write("consumer/broken.json", "[{");
    let out = b.verify(&b.policy, &["--revocations", broken.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    // Without the required revocation list the policy fails (exit 1), naming the rule.
    let out = b.verify(&b.policy, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stdout(&out).contains("  FAIL  revoked: "), "{}", text(&out));
}
