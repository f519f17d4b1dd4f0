//! Interop: kiln's SBOMs checked by the SPDX and CycloneDX projects' own tools — spdx-tools
//! (what `pyspdxtools -i` runs) and cyclonedx-python-lib's `JsonStrictValidator` for 1.6 —
//! through tests/interop/sbom_validate.py, which switches the network off first. Broken
//! documents must fail there too, so the validators are known to be looking.
//!
//! Needs `python3` with the pinned modules (see attest/README.md). The test fails — it does
//! not skip — when they are missing. `KILN_PYTHON` overrides the interpreter.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use kiln_attest::{
    Artifact, BuilderInfo, Envelope, KeyPair, PipelineParameter, ProvenanceRequest, RootfsPackages,
    SbomFiles, SbomInputs, Statement, build_sboms, build_sboms_with,
};
use kiln_core::{
    BlobKind, ExitRecord, InputSource, LogRecord, MirrorInput, OutputRecord, SandboxRecord,
    Sha256Digest, StagedInput, StepRecord,
};
use time::macros::datetime;

const EXIT_INVALID: i32 = 1;
const EXIT_MODULE_MISSING: i32 = 3;

fn mirror(reference: &str, kind: BlobKind) -> MirrorInput {
    MirrorInput {
        reference: reference.parse().unwrap(),
        sha256: Sha256Digest::of(reference.as_bytes()),
        kind,
    }
}

fn output(path: &str, content: &[u8]) -> OutputRecord {
    OutputRecord {
        path: path.into(),
        sha256: Sha256Digest::of(content),
        size: content.len() as u64,
        executable: false,
    }
}

fn step(name: &str, inputs: Vec<StagedInput>, outputs: Vec<OutputRecord>) -> StepRecord {
    StepRecord {
        run_id: "0190b6f2-0000-7000-8000-000000000000".into(),
        step: name.into(),
        command: format!("make {name}"),
        env: BTreeMap::new(),
        rootfs: mirror("debian-rootfs@12.5+kiln1", BlobKind::Tree),
        inputs,
        outputs,
        exit: ExitRecord::Exited { code: 0 },
        started_on: datetime!(2025-01-01 00:00:00 UTC),
        finished_on: datetime!(2025-01-01 00:01:00.25 UTC),
        log: LogRecord {
            sha256: Sha256Digest::of(name.as_bytes()),
            size: 1,
        },
        sandbox: SandboxRecord {
            namespaces: vec!["mount".into(), "net".into(), "pid".into()],
            network: "none".into(),
            host_uid: 100000,
            step_uid: 1000,
            scratch_bytes: 1 << 30,
            timeout_secs: 600,
            mounts: vec!["/in:ro".into(), "/out:rw".into()],
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
    }
}

/// The example pipeline's shape: `fetch` unpacks a source tarball, `build` compiles it with a
/// toolchain tree and zlib's headers, the artifact is `build`'s `bin/hello`.
fn steps() -> Vec<StepRecord> {
    let fetch = step(
        "fetch",
        vec![StagedInput {
            mount_name: "src".into(),
            source: InputSource::Mirror(mirror(
                "hello-src@2.12.1",
                BlobKind::File {
                    file_name: "hello-2.12.1.tar.gz".into(),
                },
            )),
        }],
        vec![
            output("src/hello.c", b"int main(){}"),
            output("src/Makefile", b"all:"),
        ],
    );
    let build = step(
        "build",
        vec![
            StagedInput {
                mount_name: "src".into(),
                source: InputSource::Step {
                    step: "fetch".into(),
                    outputs: fetch.outputs.clone(),
                },
            },
            StagedInput {
                mount_name: "toolchain".into(),
                source: InputSource::Mirror(mirror("gcc-toolchain@12.2.0-14", BlobKind::Tree)),
            },
            StagedInput {
                mount_name: "zlib".into(),
                source: InputSource::Mirror(mirror("zlib1g-dev@1.2.13.dfsg-1", BlobKind::Tree)),
            },
        ],
        vec![output("bin/hello", b"ELF hello")],
    );
    vec![fetch, build]
}

fn request(steps: &[StepRecord]) -> ProvenanceRequest<'_> {
    ProvenanceRequest {
        builder: BuilderInfo {
            id: "https://kiln.dev/builders/local/v1".into(),
            version: Some("0.1.0".into()),
        },
        pipeline: PipelineParameter {
            name: "hello".into(),
            sha256: Sha256Digest::of(b"pipeline: hello"),
        },
        invocation_id: "0190b6f2-0000-7000-8000-000000000000".into(),
        started_on: datetime!(2025-01-01 00:00:00 UTC),
        finished_on: datetime!(2025-01-01 00:02:03.456 UTC),
        artifact: Artifact {
            name: "hello".into(),
            sha256: Sha256Digest::of(b"ELF hello"),
        },
        steps,
    }
}

fn sbom_files(key: &KeyPair) -> SbomFiles {
    let steps = steps();
    let req = request(&steps);
    build_sboms(&req).unwrap().to_files(&req, key).unwrap()
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/sbom_validate.py")
}

/// Runs the validator for `format` (`spdx` or `cyclonedx`) on `file`.
fn validate(format: &str, file: &Path) -> Output {
    let interpreter = std::env::var_os("KILN_PYTHON").unwrap_or_else(|| "python3".into());
    let out = std::process::Command::new(&interpreter)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .arg(script())
        .arg(format)
        .arg(file)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {interpreter:?} ({e}): install python3 and run the test command in attest/README.md"
            )
        });
    if out.status.code() == Some(EXIT_MODULE_MISSING) {
        panic!(
            "the {format} validator is missing: run the test command in attest/README.md \
             (pip install -r attest/tests/interop/requirements.txt)\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Writes `doc` after `edit` and asserts that the validator refuses it, saying `reason`.
fn assert_refused(
    format: &str,
    doc: &str,
    what: &str,
    reason: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) {
    let dir = tempfile::tempdir().unwrap();
    let mut v: serde_json::Value = serde_json::from_str(doc).unwrap();
    edit(&mut v);
    let path = write(dir.path(), "broken.json", &v.to_string());
    let out = validate(format, &path);
    assert_eq!(
        out.status.code(),
        Some(EXIT_INVALID),
        "{format} validator accepted a document with {what}:\n{}",
        describe(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(reason),
        "{format} validator refused a document with {what}, but not saying {reason:?}:\n{}",
        describe(&out)
    );
}

#[test]
fn spdx_tools_validates_kiln_spdx_and_refuses_broken_ones() {
    let key = KeyPair::generate().unwrap();
    let files = sbom_files(&key);
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "hello.spdx.json", &files.spdx);
    let out = validate("spdx", &path);
    assert!(
        out.status.success(),
        "spdx-tools refused kiln's SPDX:\n{}",
        describe(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("valid SPDX-2.3 document"),
        "{}",
        describe(&out)
    );

    assert_refused(
        "spdx",
        &files.spdx,
        "no SPDXID on a package",
        "spdx_id",
        |v| {
            v["packages"][1].as_object_mut().unwrap().remove("SPDXID");
        },
    );
    assert_refused(
        "spdx",
        &files.spdx,
        "no documentNamespace",
        "document_namespace",
        |v| {
            v.as_object_mut().unwrap().remove("documentNamespace");
        },
    );
    assert_refused(
        "spdx",
        &files.spdx,
        "a relationship to a missing package",
        "did not find the referenced spdx_id \"SPDXRef-nowhere\"",
        |v| {
            v["relationships"][1]["relatedSpdxElement"] = "SPDXRef-nowhere".into();
        },
    );
    assert_refused(
        "spdx",
        &files.spdx,
        "a truncated sha256",
        "must consist of 64 lowercase hexadecimal digits",
        |v| {
            v["packages"][1]["checksums"][0]["checksumValue"] = "abc123".into();
        },
    );
}

#[test]
fn cyclonedx_validates_kiln_bom_and_refuses_broken_ones() {
    let key = KeyPair::generate().unwrap();
    let files = sbom_files(&key);
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "hello.cdx.json", &files.cyclonedx);
    let out = validate("cyclonedx", &path);
    assert!(
        out.status.success(),
        "cyclonedx-python-lib refused kiln's BOM:\n{}",
        describe(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("valid CycloneDX 1.6 BOM"),
        "{}",
        describe(&out)
    );

    assert_refused(
        "cyclonedx",
        &files.cyclonedx,
        "no bomFormat",
        "'bomFormat' is a required property",
        |v| {
            v.as_object_mut().unwrap().remove("bomFormat");
        },
    );
    assert_refused(
        "cyclonedx",
        &files.cyclonedx,
        "a component without a name",
        "/components/0: 'name' is a required property",
        |v| {
            v["components"][0].as_object_mut().unwrap().remove("name");
        },
    );
    assert_refused(
        "cyclonedx",
        &files.cyclonedx,
        "a truncated sha256",
        "/components/0/hashes/0/content: 'abc123' does not match",
        |v| {
            v["components"][0]["hashes"][0]["content"] = "abc123".into();
        },
    );
    assert_refused(
        "cyclonedx",
        &files.cyclonedx,
        "an unknown property",
        "('kiln' was unexpected)",
        |v| {
            v["metadata"]["kiln"] = "not in the schema".into();
        },
    );
}

/// Each signed form verifies under the key, names the artifact, carries the spec's predicate
/// type, and holds exactly the document written beside it.
#[test]
fn signed_sboms_carry_the_written_documents_under_the_spec_predicate_types() {
    let key = KeyPair::generate().unwrap();
    let files = sbom_files(&key);
    for (jsonl, doc, predicate_type) in [
        (
            &files.spdx_attestation,
            &files.spdx,
            "https://spdx.dev/Document/v2.3",
        ),
        (
            &files.cyclonedx_attestation,
            &files.cyclonedx,
            "https://cyclonedx.org/bom/v1.6",
        ),
    ] {
        assert_eq!(jsonl.lines().count(), 1);
        let env: Envelope = serde_json::from_str(jsonl.trim_end()).unwrap();
        assert_eq!(env.payload_type, "application/vnd.in-toto+json");
        let payload = kiln_attest::dsse::verify(&env, key.public_key()).unwrap();
        let st: Statement<serde_json::Value> = serde_json::from_slice(payload).unwrap();
        assert_eq!(st.statement_type, "https://in-toto.io/Statement/v1");
        assert_eq!(st.predicate_type, predicate_type);
        assert_eq!(st.subject[0].name.as_deref(), Some("hello"));
        assert_eq!(
            st.subject[0].digest.sha256,
            Some(Sha256Digest::of(b"ELF hello"))
        );
        assert_eq!(
            st.predicate,
            serde_json::from_str::<serde_json::Value>(doc).unwrap()
        );

        let other = KeyPair::generate().unwrap();
        assert!(kiln_attest::dsse::verify(&env, other.public_key()).is_err());
    }
}

#[test]
fn same_run_gives_the_same_sbom_bytes() {
    let key = KeyPair::generate().unwrap();
    let a = sbom_files(&key);
    let mut reversed = steps();
    reversed.reverse();
    let req = request(&reversed);
    let b = build_sboms(&req).unwrap().to_files(&req, &key).unwrap();
    assert_eq!(a.spdx, b.spdx);
    assert_eq!(a.cyclonedx, b.cyclonedx);
}

/// The same run with the rootfs's Debian packages listed: one with a single license, one with
/// an `or` expression, one whose license is unknown (NOASSERTION / no `licenses`), one with an
/// epoch in its version. Both validators accept the documents.
#[test]
fn validators_accept_sboms_listing_rootfs_packages_with_and_without_licenses() {
    let steps = steps();
    let req = request(&steps);
    let dep5 = |license: &str| {
        format!(
            "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n\
             Files: *\nCopyright: someone\nLicense: {license}\n"
        )
    };
    let packages = RootfsPackages::parse(
        "bash 5.2.15-2+b8 amd64\ndiffutils 1:3.8-4 amd64\ngcc-12 12.2.0-14+deb12u1 amd64\nzlib1g 1:1.2.13.dfsg-1 amd64\n",
    )
    .unwrap()
    .with_licenses(|name| match name {
        "bash" => Some(dep5("GPL-3+")),
        "zlib1g" => Some(dep5("Zlib or MIT")),
        _ => None,
    });
    let inputs = SbomInputs {
        rootfs_packages: [(steps[0].rootfs.sha256, packages)].into(),
    };
    let key = KeyPair::generate().unwrap();
    let files = build_sboms_with(&req, &inputs)
        .unwrap()
        .to_files(&req, &key)
        .unwrap();
    assert!(files.spdx.contains("\"CONTAINS\""), "{}", files.spdx);
    assert!(files.spdx.contains("\"GPL-3.0-or-later\""));
    assert!(files.cyclonedx.contains("\"Zlib OR MIT\""));
    assert!(
        files
            .cyclonedx
            .contains("pkg:deb/debian/diffutils@1%3A3.8-4?arch=amd64")
    );
    let dir = tempfile::tempdir().unwrap();
    for (format, name, text) in [
        ("spdx", "hello.spdx.json", &files.spdx),
        ("cyclonedx", "hello.cdx.json", &files.cyclonedx),
    ] {
        let out = validate(format, &write(dir.path(), name, text));
        assert!(
            out.status.success(),
            "{format} validator refused kiln's SBOM with rootfs packages:\n{}",
            describe(&out)
        );
    }
}
