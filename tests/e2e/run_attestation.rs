//! Every run leaves signed evidence of how it ended: a failed `kiln run` writes
//! `OUT/run.intoto.jsonl`, which verifies under the data dir's key and names each step's
//! outcome (docs/run-attestation.md).

mod common;

use common::{Env, text};
use kiln_attest::{PublicKey, RunOutcome, StepOutcome, verify_run_attestation};
use kiln_core::{ExitRecord, LimitEventRecord};

fn public_key(env: &Env) -> (PublicKey, std::path::PathBuf) {
    let public = env.kiln_ok(&["keys", "public"]);
    let path = env.write(
        "kiln.pub",
        &String::from_utf8(public.stdout.clone()).unwrap(),
    );
    (PublicKey::from_spki_pem(&public.stdout).unwrap(), path)
}

#[test]
fn failed_run_writes_a_signed_run_attestation_naming_the_failed_and_skipped_steps() {
    let env = Env::new();
    env.import_busybox();
    let pipeline = env.write(
        "p.yaml",
        "version: 1\nname: fails\nrootfs: busybox@1\nsteps:\n  - name: build\n    run: echo broken; exit 1\n    outputs: [x]\n  - name: package\n    needs: [build]\n    run: cp /in/build/x /out/x\n    outputs: [x]\n  - name: bomb\n    run: x=$(yes | head -c 200000000); echo done\n    resources: { memory: 16MiB }\n",
    );
    let out_dir = env.path("out");
    let out = env.kiln(&[
        "run",
        pipeline.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert!(!out.status.success(), "{}", text(&out));
    let file = out_dir.join("run.intoto.jsonl");
    let jsonl = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", file.display(), text(&out)));
    let (key, key_file) = public_key(&env);
    let verified = verify_run_attestation(&jsonl, &key).unwrap();
    let p = &verified.statement.predicate;
    assert_eq!(p.state, RunOutcome::Failed);
    assert_eq!(p.pipeline.name, "fails");
    assert_eq!(
        verified.statement.subject[0].name.as_deref(),
        Some("pipeline:fails")
    );
    let step = |name: &str| p.steps.iter().find(|s| s.name == name).unwrap();
    let build = step("build");
    assert_eq!(build.state, StepOutcome::Failed);
    assert_eq!(build.exit, Some(ExitRecord::Exited { code: 1 }));
    assert!(build.record_sha256.is_some());
    let package = step("package");
    assert_eq!(package.state, StepOutcome::Skipped);
    assert_eq!(package.exit, None);
    assert_eq!(package.record_sha256, None);
    let bomb = step("bomb");
    assert_eq!(bomb.state, StepOutcome::Failed, "{bomb:?}");
    assert!(
        bomb.limit_events
            .iter()
            .any(|e| matches!(e, LimitEventRecord::MemoryLimit { .. })),
        "{bomb:?}"
    );

    // The CLI checks it too, and refuses it under another key.
    let shown = env.kiln_ok(&[
        "verify-run",
        file.to_str().unwrap(),
        "--key",
        key_file.to_str().unwrap(),
    ]);
    let shown = text(&shown);
    assert!(shown.contains("failed"), "{shown}");
    assert!(
        shown.contains("package") && shown.contains("skipped"),
        "{shown}"
    );
    let other = env.path("other");
    env.kiln_ok(&["keys", "generate", "--out", other.to_str().unwrap()]);
    let refused = env.kiln(&[
        "verify-run",
        file.to_str().unwrap(),
        "--key",
        other.join("kiln.pub").to_str().unwrap(),
    ]);
    assert!(!refused.status.success(), "{}", text(&refused));
}
