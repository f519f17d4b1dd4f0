//! Policy-based verification (`kiln_attest::verify_policy`): one test per rule that must fail,
//! the good case that must pass, and the signed VSA, checked by kiln and by securesystemslib.
//!
//! Every statement here is built from the shared fixture, edited, and signed in the test, so
//! each failure is caused by exactly the edit the test makes.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_attest::verify_policy::{
    Advisories, Evidence, Outcome, PolicyReport, RevocationList, Rule, VerificationResult,
    VerifyInputs, VerifyPolicy, VsaError, VsaRequest, build_vsa, evaluate, verify_vsa,
};
use kiln_attest::{
    DigestSet, KeyPair, Provenance, ResourceDescriptor, Statement, sign_statement, to_bundle,
    to_jsonl,
};
use kiln_core::Sha256Digest;
use time::OffsetDateTime;
use time::macros::datetime;

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const FINISHED: OffsetDateTime = datetime!(2026-03-01 00:00:00 UTC);
const NOW: OffsetDateTime = datetime!(2026-03-10 00:00:00 UTC);

/// Requires every rule; the fixture meets all of them.
const GOOD_POLICY: &str = r#"version: 1
uri: https://example.com/policies/hello.yaml
builder:
  keys:
    - file: kiln.pub
  id: "https://kiln.dev/builders/*"
  slsa_build_level: 3
pipeline:
  name: hello
source:
  repository: "https://github.com/acme/*"
  ref: refs/heads/main
  commit: "0123456789abcdef0123456789abcdef01234567"
dependencies:
  forbidden:
    - name: "openssl@1.0*"
  required:
    - name: "words@1"
max_age_days: 30
revocations: required
advisories: required
"#;

struct Fixture {
    dir: tempfile::TempDir,
    key: KeyPair,
    artifact: Vec<u8>,
    statement: Statement<Provenance>,
}

fn words_digest() -> Sha256Digest {
    Sha256Digest::of(b"hello kiln\n")
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let key = KeyPair::generate().unwrap();
    key.write_key_files(dir.path()).unwrap();
    let (mut statement, artifact) = common::statement_and_artifact();
    let deps = &mut statement.predicate.build_definition.resolved_dependencies;
    deps.push(ResourceDescriptor {
        name: Some("words@1".into()),
        uri: Some("kiln:mirror/words@1".into()),
        digest: DigestSet::sha256(words_digest()),
        ..Default::default()
    });
    let mut git = ResourceDescriptor {
        uri: Some("git+https://github.com/acme/hello@refs/heads/main".into()),
        ..Default::default()
    };
    git.digest.other.insert("gitCommit".into(), COMMIT.into());
    deps.push(git);
    statement
        .predicate
        .run_details
        .metadata
        .as_mut()
        .unwrap()
        .finished_on = Some(FINISHED);
    Fixture {
        dir,
        key,
        artifact,
        statement,
    }
}

#[derive(Default)]
struct Feeds {
    revocations: Option<RevocationList>,
    advisories: Option<Advisories>,
}

fn revocations(json: &str) -> RevocationList {
    RevocationList::parse(Path::new("revoked.json"), json).unwrap()
}

fn advisories(json: &str) -> Advisories {
    Advisories::parse(Path::new("osv.json"), json).unwrap()
}

/// Feeds that name other things: checked, and clean.
fn clean_feeds() -> Feeds {
    let other = Sha256Digest::of(b"other");
    Feeds {
        revocations: Some(revocations(&format!(
            r#"[{{"name":"words@1","sha256":"{other}","reason":"a different build of words@1","revoked_at":"2026-03-05T00:00:00Z"}}]"#
        ))),
        advisories: Some(advisories(
            r#"[{"id":"OSV-2026-1","summary":"old words","affected":[{"package":{"ecosystem":"kiln","name":"words"},"versions":["0.9"]}]}]"#,
        )),
    }
}

impl Fixture {
    fn jsonl_signed_by(&self, statement: &Statement<Provenance>, key: &KeyPair) -> String {
        to_jsonl(&[sign_statement(statement, key).unwrap()]).unwrap()
    }

    fn jsonl(&self) -> String {
        self.jsonl_signed_by(&self.statement, &self.key)
    }

    fn policy(&self, text: &str) -> VerifyPolicy {
        let path = self.dir.path().join("verify-policy.yaml");
        std::fs::write(&path, text).unwrap();
        VerifyPolicy::load(&path).unwrap()
    }

    fn check_with(
        &self,
        policy: &VerifyPolicy,
        evidence: Evidence<'_>,
        now: OffsetDateTime,
        feeds: &Feeds,
    ) -> PolicyReport {
        evaluate(
            policy,
            &VerifyInputs {
                artifact: Sha256Digest::of(&self.artifact),
                evidence,
                now,
                revocations: feeds.revocations.as_ref(),
                advisories: feeds.advisories.as_ref(),
            },
        )
    }

    /// The good policy against `jsonl`, with clean feeds, as of [`NOW`].
    fn check(&self, jsonl: &str) -> PolicyReport {
        self.check_with(
            &self.policy(GOOD_POLICY),
            Evidence::Jsonl(jsonl),
            NOW,
            &clean_feeds(),
        )
    }

    /// The fixture statement after `edit`, signed by the fixture key, checked by the good policy.
    fn check_edited(&self, edit: impl FnOnce(&mut Statement<Provenance>)) -> PolicyReport {
        let mut st = self.statement.clone();
        edit(&mut st);
        self.check(&self.jsonl_signed_by(&st, &self.key))
    }
}

fn outcome(report: &PolicyReport, rule: Rule) -> Outcome {
    report
        .result(rule)
        .unwrap_or_else(|| panic!("no result for {rule}: {report:#?}"))
        .outcome
}

fn detail(report: &PolicyReport, rule: Rule) -> &str {
    &report.result(rule).unwrap().detail
}

/// Fails unless exactly `rules` failed.
fn assert_failed(report: &PolicyReport, rules: &[Rule]) {
    let failed: Vec<Rule> = report.failed().map(|r| r.rule).collect();
    assert_eq!(failed, rules, "{report:#?}");
    assert!(!report.passed());
}

#[test]
fn good_provenance_passes_every_rule() {
    let f = fixture();
    let report = f.check(&f.jsonl());
    assert!(report.passed(), "{report:#?}");
    let rules: Vec<Rule> = report.results.iter().map(|r| r.rule).collect();
    assert_eq!(
        rules,
        [
            Rule::BuilderKey,
            Rule::Statement,
            Rule::BuilderId,
            Rule::Pipeline,
            Rule::Source,
            Rule::DependenciesForbidden,
            Rule::DependenciesRequired,
            Rule::MaxAge,
            Rule::Revoked,
            Rule::Vulnerable,
        ]
    );
    assert!(
        report.results.iter().all(|r| r.outcome == Outcome::Pass),
        "{report:#?}"
    );
    assert!(detail(&report, Rule::MaxAge).contains("(9 days ago), the policy allows 30"));
    // The same evidence as a Sigstore bundle passes the same way.
    let bundle = to_bundle(
        &sign_statement(&f.statement, &f.key).unwrap(),
        f.key.public_key(),
    )
    .to_json();
    let report = f.check_with(
        &f.policy(GOOD_POLICY),
        Evidence::Bundle(&bundle),
        NOW,
        &clean_feeds(),
    );
    assert!(report.passed(), "{report:#?}");
}

#[test]
fn wrong_builder_key_fails_builder_key_and_judges_nothing_else() {
    let f = fixture();
    let other = KeyPair::generate().unwrap();
    let report = f.check(&f.jsonl_signed_by(&f.statement, &other));
    assert_failed(&report, &[Rule::BuilderKey]);
    assert!(
        detail(&report, Rule::BuilderKey).contains("no signature verifies under any trusted key"),
        "{report:#?}"
    );
    assert!(report.verified.is_none());
    for r in &report.results[1..] {
        assert_eq!(r.outcome, Outcome::Skip, "{r:?}");
    }
}

#[test]
fn an_edited_payload_fails_builder_key() {
    let f = fixture();
    let line = f.jsonl();
    let mut env: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    let payload = String::from_utf8(b64.decode(env["payload"].as_str().unwrap()).unwrap()).unwrap();
    let edited = payload.replace("acme/hello", "evil/hello");
    assert_ne!(edited, payload);
    env["payload"] = b64.encode(edited).into();
    let report = f.check(&format!("{env}\n"));
    assert_failed(&report, &[Rule::BuilderKey]);
}

#[test]
fn a_rotated_key_is_trusted_within_its_window_only() {
    let f = fixture();
    let old = KeyPair::generate().unwrap();
    let old_dir = f.dir.path().join("old");
    std::fs::create_dir(&old_dir).unwrap();
    old.write_key_files(&old_dir).unwrap();
    let jsonl = f.jsonl_signed_by(&f.statement, &old);
    let two_keys = |until: &str| {
        GOOD_POLICY.replace(
            "    - file: kiln.pub\n",
            &format!(
                "    - file: kiln.pub\n    - file: old/kiln.pub\n      valid_until: {until}\n"
            ),
        )
    };
    // Built before the old key was retired: trusted.
    let policy = f.policy(&two_keys("2026-06-01T00:00:00Z"));
    let report = f.check_with(&policy, Evidence::Jsonl(&jsonl), NOW, &clean_feeds());
    assert!(report.passed(), "{report:#?}");
    assert_eq!(report.signer.as_deref(), Some("old/kiln.pub"));
    // Built after it was retired: the builder-key rule fails and says why.
    let policy = f.policy(&two_keys("2026-02-01T00:00:00Z"));
    let report = f.check_with(&policy, Evidence::Jsonl(&jsonl), NOW, &clean_feeds());
    assert_failed(&report, &[Rule::BuilderKey]);
    assert!(
        detail(&report, Rule::BuilderKey).contains("until 2026-02-01T00:00:00Z"),
        "{report:#?}"
    );
}

#[test]
fn an_artifact_that_is_not_the_subject_fails_statement() {
    let f = fixture();
    let report = evaluate(
        &f.policy(GOOD_POLICY),
        &VerifyInputs {
            artifact: Sha256Digest::of(b"another artifact"),
            evidence: Evidence::Jsonl(&f.jsonl()),
            now: NOW,
            revocations: None,
            advisories: None,
        },
    );
    assert_eq!(outcome(&report, Rule::BuilderKey), Outcome::Pass);
    assert_failed(&report, &[Rule::Statement]);
    assert!(detail(&report, Rule::Statement).contains("not a subject"));
}

#[test]
fn wrong_builder_id_fails_builder_id() {
    let f = fixture();
    let report = f.check_edited(|st| {
        st.predicate.run_details.builder.id = "https://evil.example/builder".into();
    });
    assert_failed(&report, &[Rule::BuilderId]);
    assert!(detail(&report, Rule::BuilderId).contains("https://evil.example/builder"));
}

#[test]
fn wrong_pipeline_name_or_digest_fails_pipeline() {
    let f = fixture();
    let report = f.check_edited(|st| {
        st.predicate.build_definition.external_parameters["pipeline"]["name"] = "other".into();
    });
    assert_failed(&report, &[Rule::Pipeline]);
    let pinned = GOOD_POLICY.replace(
        "  name: hello\n",
        &format!(
            "  name: hello\n  sha256: {}\n",
            Sha256Digest::of(b"another pipeline")
        ),
    );
    let report = f.check_with(
        &f.policy(&pinned),
        Evidence::Jsonl(&f.jsonl()),
        NOW,
        &clean_feeds(),
    );
    assert_failed(&report, &[Rule::Pipeline]);
    assert!(detail(&report, Rule::Pipeline).contains("sha256"));
}

#[test]
fn wrong_source_repository_fails_source() {
    let f = fixture();
    let report = f.check_edited(|st| {
        for d in &mut st.predicate.build_definition.resolved_dependencies {
            if let Some(uri) = &mut d.uri {
                *uri = uri.replace("github.com/acme/", "github.com/evil/");
            }
        }
    });
    assert_failed(&report, &[Rule::Source]);
    assert!(
        detail(&report, Rule::Source).contains("https://github.com/evil/hello"),
        "{report:#?}"
    );
}

#[test]
fn wrong_commit_and_missing_source_fail_source() {
    let f = fixture();
    let report = f.check_edited(|st| {
        for d in &mut st.predicate.build_definition.resolved_dependencies {
            if d.digest.other.contains_key("gitCommit") {
                d.digest.other.insert("gitCommit".into(), "f".repeat(40));
            }
        }
    });
    assert_failed(&report, &[Rule::Source]);
    assert!(detail(&report, Rule::Source).contains("commit"));
    let report = f.check_edited(|st| {
        st.predicate
            .build_definition
            .resolved_dependencies
            .retain(|d| !d.uri.as_deref().unwrap_or("").starts_with("git+"));
    });
    assert_failed(&report, &[Rule::Source]);
    assert!(detail(&report, Rule::Source).contains("no git source"));
}

#[test]
fn a_forbidden_dependency_fails_dependencies_forbidden() {
    let f = fixture();
    let report = f.check_edited(|st| {
        st.predicate
            .build_definition
            .resolved_dependencies
            .push(ResourceDescriptor {
                name: Some("openssl@1.0.2".into()),
                uri: Some("kiln:mirror/openssl@1.0.2".into()),
                digest: DigestSet::sha256(Sha256Digest::of(b"openssl")),
                ..Default::default()
            });
    });
    assert_failed(&report, &[Rule::DependenciesForbidden]);
    assert!(detail(&report, Rule::DependenciesForbidden).contains("openssl@1.0.2"));
}

#[test]
fn a_missing_required_dependency_fails_dependencies_required() {
    let f = fixture();
    let report = f.check_edited(|st| {
        st.predicate
            .build_definition
            .resolved_dependencies
            .retain(|d| d.name.as_deref() != Some("words@1"));
    });
    assert_failed(&report, &[Rule::DependenciesRequired]);
    // A required digest that differs fails too.
    let pinned = GOOD_POLICY.replace(
        "    - name: \"words@1\"\n",
        &format!(
            "    - name: \"words@1\"\n      sha256: {}\n",
            Sha256Digest::of(b"other words")
        ),
    );
    let report = f.check_with(
        &f.policy(&pinned),
        Evidence::Jsonl(&f.jsonl()),
        NOW,
        &clean_feeds(),
    );
    assert_failed(&report, &[Rule::DependenciesRequired]);
}

#[test]
fn provenance_past_its_maximum_age_fails_max_age() {
    let f = fixture();
    let policy = f.policy(GOOD_POLICY);
    let jsonl = f.jsonl();
    let later = datetime!(2026-04-11 00:00:00 UTC);
    let report = f.check_with(&policy, Evidence::Jsonl(&jsonl), later, &clean_feeds());
    assert_failed(&report, &[Rule::MaxAge]);
    assert_eq!(
        detail(&report, Rule::MaxAge),
        "built 2026-03-01T00:00:00Z (41 days ago), the policy allows 30"
    );
    // Exactly 30 days is still within the limit.
    let edge = datetime!(2026-03-31 00:00:00 UTC);
    let report = f.check_with(&policy, Evidence::Jsonl(&jsonl), edge, &clean_feeds());
    assert!(report.passed(), "{report:#?}");
    // A build time in the future cannot make provenance young.
    let early = datetime!(2026-02-01 00:00:00 UTC);
    let report = f.check_with(&policy, Evidence::Jsonl(&jsonl), early, &clean_feeds());
    assert_failed(&report, &[Rule::MaxAge]);
    assert!(detail(&report, Rule::MaxAge).contains("after now"));
}

#[test]
fn a_dependency_revoked_after_the_build_fails_revoked() {
    let f = fixture();
    let d = words_digest();
    let feeds = Feeds {
        revocations: Some(revocations(&format!(
            r#"[{{"name":"words@1","sha256":"{d}","reason":"upstream tarball was trojaned","revoked_at":"2026-03-05T12:00:00Z"}}]"#
        ))),
        ..clean_feeds()
    };
    let report = f.check_with(
        &f.policy(GOOD_POLICY),
        Evidence::Jsonl(&f.jsonl()),
        NOW,
        &feeds,
    );
    assert_failed(&report, &[Rule::Revoked]);
    let text = detail(&report, Rule::Revoked);
    assert!(text.contains("words@1"), "{text}");
    assert!(text.contains("revoked 2026-03-05T12:00:00Z"), "{text}");
    assert!(text.contains("after the build"), "{text}");
    assert!(text.contains("upstream tarball was trojaned"), "{text}");
}

#[test]
fn a_required_revocation_list_that_is_missing_fails_revoked() {
    let f = fixture();
    let feeds = Feeds {
        revocations: None,
        ..clean_feeds()
    };
    let report = f.check_with(
        &f.policy(GOOD_POLICY),
        Evidence::Jsonl(&f.jsonl()),
        NOW,
        &feeds,
    );
    assert_failed(&report, &[Rule::Revoked]);
    // When the policy does not require one, the rule is skipped and the policy passes.
    let optional = GOOD_POLICY.replace("revocations: required\n", "");
    let report = f.check_with(
        &f.policy(&optional),
        Evidence::Jsonl(&f.jsonl()),
        NOW,
        &feeds,
    );
    assert!(report.passed(), "{report:#?}");
    assert_eq!(outcome(&report, Rule::Revoked), Outcome::Skip);
}

#[test]
fn a_dependency_listed_in_an_osv_advisory_fails_vulnerable() {
    let f = fixture();
    let feeds = Feeds {
        advisories: Some(advisories(
            r#"{"id":"OSV-2026-7","summary":"words prints the wrong greeting","affected":[{"package":{"ecosystem":"kiln","name":"words"},"versions":["0.9","1"]}]}"#,
        )),
        ..clean_feeds()
    };
    let report = f.check_with(
        &f.policy(GOOD_POLICY),
        Evidence::Jsonl(&f.jsonl()),
        NOW,
        &feeds,
    );
    assert_failed(&report, &[Rule::Vulnerable]);
    assert!(detail(&report, Rule::Vulnerable).contains("OSV-2026-7"));
    // A record that gives only ranges is not matched, and the message says so.
    let feeds = Feeds {
        advisories: Some(advisories(
            r#"[{"id":"OSV-2026-8","affected":[{"package":{"ecosystem":"kiln","name":"words"},"ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"}]}]}]}]"#,
        )),
        ..clean_feeds()
    };
    let report = f.check_with(
        &f.policy(GOOD_POLICY),
        Evidence::Jsonl(&f.jsonl()),
        NOW,
        &feeds,
    );
    assert!(report.passed(), "{report:#?}");
    assert!(
        detail(&report, Rule::Vulnerable)
            .contains("ranges are not evaluated: OSV-2026-8 for words"),
        "{report:#?}"
    );
}

#[test]
fn every_failing_rule_is_reported_not_just_the_first() {
    let f = fixture();
    let mut st = f.statement.clone();
    st.predicate.run_details.builder.id = "https://evil.example/builder".into();
    st.predicate.build_definition.external_parameters["pipeline"]["name"] = "other".into();
    let d = words_digest();
    let feeds = Feeds {
        revocations: Some(revocations(&format!(
            r#"[{{"name":"words@1","sha256":"{d}","reason":"bad","revoked_at":"2026-01-01T00:00:00Z"}}]"#
        ))),
        ..clean_feeds()
    };
    let report = f.check_with(
        &f.policy(GOOD_POLICY),
        Evidence::Jsonl(&f.jsonl_signed_by(&st, &f.key)),
        datetime!(2026-06-01 00:00:00 UTC),
        &feeds,
    );
    assert_failed(
        &report,
        &[Rule::BuilderId, Rule::Pipeline, Rule::MaxAge, Rule::Revoked],
    );
    assert!(detail(&report, Rule::Revoked).contains("before the build"));
}

fn vsa_request<'a>(artifact: Sha256Digest, input: &'a str) -> VsaRequest<'a> {
    VsaRequest {
        verifier_id: "https://kiln.dev/verifiers/policy/v1",
        verifier_version: Some("0.1.0"),
        time_verified: NOW,
        artifact_name: "hello",
        artifact,
        resource_uri: "file:hello",
        default_policy_uri: "file:verify-policy.yaml",
        input_uri: "file:hello.intoto.jsonl",
        input_sha256: Sha256Digest::of(input.as_bytes()),
    }
}

#[test]
fn vsa_records_the_result_and_verifies_with_kiln() {
    let f = fixture();
    let policy = f.policy(GOOD_POLICY);
    let jsonl = f.jsonl();
    let digest = Sha256Digest::of(&f.artifact);
    let verifier = KeyPair::generate().unwrap();

    let report = f.check(&jsonl);
    let vsa = build_vsa(&vsa_request(digest, &jsonl), &policy, &report);
    let signed = to_jsonl(&[sign_statement(&vsa, &verifier).unwrap()]).unwrap();
    let back = verify_vsa(&signed, verifier.public_key(), digest).unwrap();
    let p = &back.predicate;
    assert_eq!(p.verification_result, VerificationResult::Passed);
    assert_eq!(p.verified_levels, ["SLSA_BUILD_LEVEL_3"]);
    assert_eq!(
        p.policy.uri.as_deref(),
        Some("https://example.com/policies/hello.yaml")
    );
    assert_eq!(p.policy.digest.sha256, Some(policy.sha256()));
    assert_eq!(
        p.input_attestations[0].digest.sha256,
        Some(Sha256Digest::of(jsonl.as_bytes()))
    );
    assert_eq!(p.time_verified, NOW);

    // A failed check yields FAILED and no level.
    let late = f.check_with(
        &policy,
        Evidence::Jsonl(&jsonl),
        datetime!(2027-01-01 00:00:00 UTC),
        &clean_feeds(),
    );
    let vsa = build_vsa(&vsa_request(digest, &jsonl), &policy, &late);
    assert_eq!(
        vsa.predicate.verification_result,
        VerificationResult::Failed
    );
    assert_eq!(vsa.predicate.verified_levels, ["FAILED"]);

    // Another key, an edited payload and another artifact are refused.
    let other = KeyPair::generate().unwrap();
    assert!(matches!(
        verify_vsa(&signed, other.public_key(), digest),
        Err(VsaError::Signature(_))
    ));
    let tampered = signed.replacen("\"payload\":\"", "\"payload\":\"A", 1);
    assert!(verify_vsa(&tampered, verifier.public_key(), digest).is_err());
    assert!(matches!(
        verify_vsa(&signed, verifier.public_key(), Sha256Digest::of(b"x")),
        Err(VsaError::NotASubject { .. })
    ));
    // Provenance signed by the same key is not a VSA.
    let provenance = f.jsonl_signed_by(&f.statement, &verifier);
    assert!(matches!(
        verify_vsa(&provenance, verifier.public_key(), digest),
        Err(VsaError::PredicateType { .. })
    ));
}

#[test]
fn without_a_stated_level_a_passing_vsa_claims_build_level_1() {
    let f = fixture();
    let policy_text = GOOD_POLICY.replace("  slsa_build_level: 3\n", "");
    let policy = f.policy(&policy_text);
    let jsonl = f.jsonl();
    let report = f.check_with(&policy, Evidence::Jsonl(&jsonl), NOW, &clean_feeds());
    assert!(report.passed());
    let digest = Sha256Digest::of(&f.artifact);
    let vsa = build_vsa(&vsa_request(digest, &jsonl), &policy, &report);
    assert_eq!(vsa.predicate.verified_levels, ["SLSA_BUILD_LEVEL_1"]);
}

fn interop_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/securesystemslib_vsa.py")
}

#[test]
fn vsa_verifies_with_securesystemslib() {
    let f = fixture();
    let policy = f.policy(GOOD_POLICY);
    let jsonl = f.jsonl();
    let digest = Sha256Digest::of(&f.artifact);
    let verifier_dir = f.dir.path().join("verifier");
    std::fs::create_dir(&verifier_dir).unwrap();
    let verifier = KeyPair::generate().unwrap();
    let files = verifier.write_key_files(&verifier_dir).unwrap();

    for (now, expect) in [
        (NOW, "PASSED"),
        (datetime!(2027-01-01 00:00:00 UTC), "FAILED"),
    ] {
        let report = f.check_with(&policy, Evidence::Jsonl(&jsonl), now, &clean_feeds());
        let vsa = build_vsa(&vsa_request(digest, &jsonl), &policy, &report);
        let path = f.dir.path().join("hello.vsa.intoto.jsonl");
        std::fs::write(
            &path,
            to_jsonl(&[sign_statement(&vsa, &verifier).unwrap()]).unwrap(),
        )
        .unwrap();
        let run = |pub_key: &Path, expect: &str| {
            let interpreter = std::env::var_os("KILN_PYTHON").unwrap_or_else(|| "python3".into());
            Command::new(interpreter)
                .env("PYTHONDONTWRITEBYTECODE", "1")
                .arg(interop_script())
                .arg("--pub")
                .arg(pub_key)
                .arg("--jsonl")
                .arg(&path)
                .args(["--artifact-sha256", &digest.to_string()])
                .args(["--expect-result", expect])
                .output()
                .expect("python3 runs (see attest/README.md)")
        };
        let out = run(&files.public_key, expect);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "securesystemslib rejected kiln's VSA (pip install -r attest/tests/interop/requirements.txt):\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("rejects a tampered VSA"), "{stdout}");
        // Under the builder's key (not the verifier's), the same script says no.
        let out = run(&f.dir.path().join("kiln.pub"), expect);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_documented_example_policy_parses() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples/verify-policy.yaml");
    let text = std::fs::read_to_string(&example).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for name in ["kiln-2026", "kiln-2025"] {
        let keys = dir.path().join(name);
        std::fs::create_dir(&keys).unwrap();
        let files = KeyPair::generate().unwrap().write_key_files(&keys).unwrap();
        std::fs::create_dir_all(dir.path().join("keys")).unwrap();
        std::fs::copy(
            files.public_key,
            dir.path().join(format!("keys/{name}.pub")),
        )
        .unwrap();
    }
    let path = dir.path().join("verify-policy.yaml");
    std::fs::write(&path, &text).unwrap();
    let policy = VerifyPolicy::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(policy.keys().len(), 2);
    assert_eq!(policy.slsa_build_level(), Some(2));
    assert!(policy.keys()[0].valid_from.is_some() && policy.keys()[1].valid_until.is_some());
}
