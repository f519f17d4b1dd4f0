//! The controller under a mirror policy: evidence is kept with the entry, and a refusal
//! leaves the catalogue and the store as they were.

use std::path::Path;

use kiln_attest::keys::KeyPair;
use kiln_daemon::Controller;
use kiln_daemon::controller::{Admission, ControllerError};
use kiln_daemon::state::testing::TestDatabase;
use kiln_daemon::state::{AddOutcome, Backend};

kiln_daemon::backend_tests! {
    #[tokio::test] a_refusal_does_not_remove_a_blob_another_entry_uses;
    #[tokio::test] a_kiln_signature_from_a_policy_signer_is_admitted_and_kept;
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

async fn a_refusal_does_not_remove_a_blob_another_entry_uses(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let db = TestDatabase::new(backend, &data.join("state.sqlite")).await;
    let controller = Controller::open_with(&data, Some(db.database()))
        .await
        .unwrap();
    let file = dir.path().join("src/lib.tar");
    write(&file, "shared bytes\n");
    let (zlib, _) = controller
        .mirror_add_file(&file, "zlib@1".parse().unwrap(), None)
        .await
        .unwrap();
    write(
        &data.join("mirror-policy.yaml"),
        "signers:\n  k: { key: k.pub }\nrules:\n  - names: \"gcc-*\"\n    require_signature: true\n",
    );
    let pair = KeyPair::generate().unwrap();
    write(&data.join("k.pub"), &pair.public_key_pem().unwrap());

    let refused = controller
        .mirror_add_file(&file, "gcc-1@1".parse().unwrap(), None)
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, ControllerError::Refused { reason } if reason.contains("rule 1")),
        "{refused}"
    );
    assert!(controller.store().contains(&zlib.sha256));
    controller.store().verify(&zlib.sha256).unwrap();
    let entries = controller.state().mirror_entries().await.unwrap();
    assert_eq!(entries.len(), 1, "{entries:?}");
}

async fn a_kiln_signature_from_a_policy_signer_is_admitted_and_kept(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let db = TestDatabase::new(backend, &data.join("state.sqlite")).await;
    let controller = Controller::open_with(&data, Some(db.database()))
        .await
        .unwrap();
    let pair = KeyPair::generate().unwrap();
    let public = dir.path().join("k.pub");
    write(&public, &pair.public_key_pem().unwrap());
    write(
        &data.join("mirror-policy.yaml"),
        &format!(
            "signers:\n  k: {{ key: \"{}\" }}\nrules:\n  - names: \"gcc-*\"\n    require_signature: true\n    signers: [k]\n",
            public.display()
        ),
    );
    let file = dir.path().join("gcc.tar");
    write(&file, "gcc\n");
    let sig = pair.sign(b"gcc\n").unwrap();
    let sig_path = dir.path().join("gcc.sig");
    {
        use base64::Engine as _;
        write(
            &sig_path,
            &base64::engine::general_purpose::STANDARD.encode(&sig),
        );
    }
    let admission = Admission {
        signature: Some(&sig_path),
        key: Some(&public),
        ..Admission::default()
    };
    let reference: kiln_core::MirrorRef = "gcc-13@1".parse().unwrap();
    let (_, outcome) = controller
        .mirror_admit_file(&file, reference.clone(), &admission)
        .await
        .unwrap();
    assert_eq!(outcome, AddOutcome::Added);
    let evidence = controller
        .state()
        .mirror_evidence(&reference)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(evidence.signer_name.as_deref(), Some("k"));
    assert_eq!(
        evidence.signer_keyid.as_deref(),
        Some(pair.keyid().to_string().as_str())
    );
    assert!(
        evidence
            .policy_decision
            .ends_with("rule 1 (names \"gcc-*\")"),
        "{}",
        evidence.policy_decision
    );
    // Adding it again (unsigned) is refused by the rule, not treated as already present.
    assert!(
        controller
            .mirror_add_file(&file, reference.clone(), None)
            .await
            .is_err()
    );
}
