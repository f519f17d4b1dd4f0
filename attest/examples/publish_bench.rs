//! What publishing one artifact costs when it has 1,000 dependencies: build the SLSA
//! provenance, sign it (DSSE), make its Sigstore bundle, build both SBOMs (SPDX 2.3,
//! CycloneDX 1.6), sign each, and write the six files — against an anchor run in the same
//! invocation: `openssl dgst -sha256 -sign` of the same three payloads with a P-256 key (three
//! processes: what signing them costs with the standard tool, without building anything).
//!
//! `cargo run --release -p kiln-attest --example publish_bench [-- DEPS REPS]` (defaults
//! 1000 and 21). Prints medians. The goal (issue 6): under 50 ms.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use kiln_attest::{
    Artifact, BuilderInfo, KeyPair, PipelineParameter, ProvenanceRequest, build_sboms,
    build_statement, sign_statement, to_bundle, to_jsonl,
};
use kiln_core::{
    BlobKind, ExitRecord, InputSource, LimitsRecord, LogRecord, MirrorInput, OutputRecord,
    SandboxRecord, Sha256Digest, StagedInput, StepRecord, UsageRecord,
};
use time::macros::datetime;

fn step_with_inputs(deps: usize, artifact: &[u8]) -> StepRecord {
    let inputs = (0..deps)
        .map(|i| StagedInput {
            mount_name: format!("dep-{i:04}"),
            source: InputSource::Mirror(MirrorInput {
                reference: format!("lib-{i:04}@1.{i}")
                    .parse()
                    .expect("a valid reference"),
                sha256: Sha256Digest::of(format!("dep {i}").as_bytes()),
                kind: BlobKind::File {
                    file_name: format!("lib-{i:04}.tar"),
                },
            }),
        })
        .collect();
    StepRecord {
        run_id: "01a20000-0000-7000-8000-000000000000".into(),
        step: "build".into(),
        command: "make -j2 && cp app /out/app".into(),
        env: BTreeMap::new(),
        rootfs: MirrorInput {
            reference: "debian-rootfs@12".parse().expect("a valid reference"),
            sha256: Sha256Digest::of(b"rootfs"),
            kind: BlobKind::Tree,
        },
        inputs,
        outputs: vec![OutputRecord {
            path: "app".into(),
            sha256: Sha256Digest::of(artifact),
            size: artifact.len() as u64,
            executable: true,
        }],
        exit: ExitRecord::Exited { code: 0 },
        started_on: datetime!(2026-11-22 00:00:00 UTC),
        finished_on: datetime!(2026-11-22 00:00:09 UTC),
        log: LogRecord {
            sha256: Sha256Digest::of(b"log"),
            size: 3,
        },
        sandbox: SandboxRecord {
            namespaces: vec!["user".into(), "mount".into(), "network".into()],
            network: "none (loopback only)".into(),
            host_uid: 1_000_000,
            step_uid: 1000,
            scratch_bytes: 1 << 30,
            timeout_secs: 600,
            mounts: vec!["/ <- /store/rootfs/x (bind, ro,nosuid,nodev)".into()],
            limits: LimitsRecord {
                memory_bytes: 2 << 30,
                pids: 1024,
                millicpus: 2000,
                open_files: 4096,
            },
            rlimits: "RLIMIT_CORE=0, RLIMIT_NOFILE=4096".into(),
            seccomp: "deny-list".into(),
            seccomp_sha256: "00".repeat(32),
        },
        usage: UsageRecord::default(),
        events: Vec::new(),
    }
}

/// One publication, as the daemon does it; the three signed payloads (for the anchor) and
/// the time of each phase.
fn publish(
    req: &ProvenanceRequest<'_>,
    key: &KeyPair,
    out: &Path,
) -> (Vec<Vec<u8>>, [Duration; 4]) {
    let t = Instant::now();
    let statement = build_statement(req).expect("a consistent request");
    let envelope = sign_statement(&statement, key).expect("signs");
    let bundle = to_bundle(&envelope, key.public_key()).to_json();
    let provenance = to_jsonl(std::slice::from_ref(&envelope)).expect("serialises");
    let t_prov = t.elapsed();
    let t = Instant::now();
    let sboms = build_sboms(req).expect("builds");
    let t_build = t.elapsed();
    let t = Instant::now();
    let files = sboms.to_files(req, key).expect("signs");
    let t_sign = t.elapsed();
    let t = Instant::now();
    for (name, text) in [
        ("app.intoto.jsonl", &provenance),
        ("app.sigstore.json", &bundle),
        ("app.spdx.json", &files.spdx),
        ("app.spdx.intoto.jsonl", &files.spdx_attestation),
        ("app.cdx.json", &files.cyclonedx),
        ("app.cdx.intoto.jsonl", &files.cyclonedx_attestation),
    ] {
        std::fs::write(out.join(name), text).expect("writes");
    }
    let payloads = vec![
        envelope.payload,
        files.spdx.into_bytes(),
        files.cyclonedx.into_bytes(),
    ];
    (payloads, [t_prov, t_build, t_sign, t.elapsed()])
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let deps = args.first().copied().unwrap_or(1000);
    let reps = args.get(1).copied().unwrap_or(21);
    let dir = tempfile::tempdir().expect("tempdir");
    let artifact = b"\x7fELF pretend binary".to_vec();
    let steps = [step_with_inputs(deps, &artifact)];
    let req = ProvenanceRequest {
        builder: BuilderInfo {
            id: "https://kiln.dev/builders/local/v1".into(),
            version: Some(env!("CARGO_PKG_VERSION").into()),
        },
        pipeline: PipelineParameter {
            name: "app".into(),
            sha256: Sha256Digest::of(b"pipeline"),
        },
        invocation_id: steps[0].run_id.clone(),
        started_on: steps[0].started_on,
        finished_on: steps[0].finished_on,
        artifact: Artifact {
            name: "app".into(),
            sha256: Sha256Digest::of(&artifact),
        },
        steps: &steps,
    };
    let key = KeyPair::generate().expect("a key");
    let key_files = key.write_key_files(dir.path()).expect("key files");
    let (payloads, _) = publish(&req, &key, dir.path());
    for (i, p) in payloads.iter().enumerate() {
        std::fs::write(dir.path().join(format!("payload-{i}")), p).expect("writes");
    }
    let (mut kiln, mut anchor) = (Vec::new(), Vec::new());
    let mut phases: [Vec<Duration>; 4] = Default::default();
    for _ in 0..reps {
        let started = Instant::now();
        let (_, took) = publish(&req, &key, dir.path());
        kiln.push(started.elapsed());
        for (all, one) in phases.iter_mut().zip(took) {
            all.push(one);
        }
        let started = Instant::now();
        for i in 0..payloads.len() {
            let status = Command::new("openssl")
                .args(["dgst", "-sha256", "-sign"])
                .arg(&key_files.private_key)
                .arg("-out")
                .arg(dir.path().join(format!("payload-{i}.sig")))
                .arg(dir.path().join(format!("payload-{i}")))
                .status()
                .expect("openssl runs");
            assert!(status.success(), "openssl dgst -sign failed");
        }
        anchor.push(started.elapsed());
    }
    let sizes: usize = payloads.iter().map(Vec::len).sum();
    let (kiln, anchor) = (median(kiln), median(anchor));
    println!(
        "publish_bench: {deps} dependencies, {reps} reps, signed payloads {} KiB in all",
        sizes / 1024
    );
    println!(
        "  kiln: provenance + bundle + SPDX + CycloneDX, built, signed, written: median {:.1} ms (goal < 50 ms)",
        ms(kiln)
    );
    println!(
        "  anchor: openssl dgst -sha256 -sign of the 3 payloads (3 processes): median {:.1} ms",
        ms(anchor)
    );
    println!("  ratio kiln / anchor: {:.2}", ms(kiln) / ms(anchor));
    let names = [
        "provenance built + signed + bundle",
        "SBOMs built",
        "SBOMs serialised + signed",
        "six files written",
    ];
    for (name, all) in names.iter().zip(phases) {
        println!("    {name}: median {:.1} ms", ms(median(all)));
    }
}
