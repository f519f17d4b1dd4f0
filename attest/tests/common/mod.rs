//! Fixtures shared by the interop tests.

use std::collections::BTreeMap;

use kiln_attest::{
    Artifact, BuilderInfo, PipelineParameter, Provenance, ProvenanceRequest, Statement,
    build_statement,
};
use kiln_core::{
    BlobKind, ExitRecord, LogRecord, MirrorInput, OutputRecord, SandboxRecord, Sha256Digest,
    StepRecord,
};
use time::macros::datetime;

/// A one-step run that installs a shell script, its provenance statement, and the script.
pub fn statement_and_artifact() -> (Statement<Provenance>, Vec<u8>) {
    let artifact = b"#!/bin/sh\necho hello\n".to_vec();
    let rootfs = MirrorInput {
        reference: "debian-rootfs@12.5".parse().unwrap(),
        sha256: Sha256Digest::of(b"rootfs"),
        kind: BlobKind::Tree,
    };
    let step = StepRecord {
        run_id: "0190b6f2-0000-7000-8000-000000000000".into(),
        step: "build".into(),
        command: "install -m755 hello.sh /out/hello".into(),
        env: BTreeMap::new(),
        rootfs,
        inputs: vec![],
        outputs: vec![OutputRecord {
            path: "hello".into(),
            sha256: Sha256Digest::of(&artifact),
            size: artifact.len() as u64,
            executable: true,
        }],
        exit: ExitRecord::Exited { code: 0 },
        started_on: datetime!(2025-01-01 00:00:00 UTC),
        finished_on: datetime!(2025-01-01 00:00:01 UTC),
        log: LogRecord {
            sha256: Sha256Digest::of(b""),
            size: 0,
        },
        sandbox: SandboxRecord {
            namespaces: vec!["mount".into(), "net".into()],
            network: "none".into(),
            host_uid: 100000,
            step_uid: 1000,
            scratch_bytes: 1 << 20,
            timeout_secs: 60,
            mounts: vec![],
            limits: kiln_core::LimitsRecord {
                memory_bytes: 1 << 30,
                pids: 1024,
                millicpus: 2000,
                open_files: 4096,
            },
            rlimits: "RLIMIT_CORE=0".into(),
            seccomp: "deny-list".into(),
            seccomp_sha256: "00".repeat(32),
        },
        usage: kiln_core::UsageRecord::default(),
        events: Vec::new(),
    };
    let steps = [step];
    let statement = build_statement(&ProvenanceRequest {
        builder: BuilderInfo {
            id: "https://kiln.dev/builders/local/v1".into(),
            version: Some("0.1.0".into()),
        },
        pipeline: PipelineParameter {
            name: "hello".into(),
            sha256: Sha256Digest::of(b"pipeline"),
        },
        invocation_id: "0190b6f2-0000-7000-8000-000000000000".into(),
        started_on: datetime!(2025-01-01 00:00:00 UTC),
        finished_on: datetime!(2025-01-01 00:00:02 UTC),
        artifact: Artifact {
            name: "hello".into(),
            sha256: Sha256Digest::of(&artifact),
        },
        steps: &steps,
    })
    .unwrap();
    (statement, artifact)
}
