//! The demo, as a test: compile a real C program with gcc in a toolchain rootfs made from
//! Debian packages, verify its provenance, and run the binary.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Env, text};

/// The toolchain rootfs: `KILN_TEST_ROOTFS` (the test command builds it once), else built here.
fn toolchain_rootfs() -> PathBuf {
    if let Some(dir) = std::env::var_os("KILN_TEST_ROOTFS") {
        return PathBuf::from(dir);
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-rootfs");
    if !dir.join("etc/kiln-rootfs-packages").exists() {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/make-toolchain-rootfs.sh");
        let status = Command::new("bash")
            .arg(script)
            .arg("--force")
            .arg(&dir)
            .status()
            .unwrap();
        assert!(status.success(), "cannot build the toolchain rootfs");
    }
    dir
}

#[test]
fn hello_compiles_hermetically_and_its_provenance_verifies() {
    let env = Env::new();
    let rootfs = toolchain_rootfs();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    env.kiln_ok(&[
        "mirror",
        "import-rootfs",
        rootfs.to_str().unwrap(),
        "--name",
        "gcc-toolchain@12",
    ]);
    let src = repo.join("pipelines/examples/hello-src/hello.c");
    env.kiln_ok(&[
        "mirror",
        "add",
        src.to_str().unwrap(),
        "--name",
        "hello-src@1.0",
    ]);
    let pipeline = repo.join("pipelines/examples/hello.yaml");
    let out = env.run(&pipeline);
    assert!(out.status.success(), "{}", text(&out));

    let public = env.kiln_ok(&["keys", "public"]);
    let key = env.write("kiln.pub", &String::from_utf8(public.stdout).unwrap());
    let artifact = env.path("out/hello");
    let provenance = env.path("out/hello.intoto.jsonl");
    let verified = env.kiln_ok(&[
        "verify",
        artifact.to_str().unwrap(),
        "--provenance",
        provenance.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    assert!(
        text(&verified).contains("gcc-toolchain@12"),
        "{}",
        text(&verified)
    );

    // The SBOMs list the toolchain rootfs's Debian packages (its /etc/kiln-rootfs-packages).
    // They still validate with the SPDX and CycloneDX projects' tools.
    let script = repo.join("attest/tests/interop/sbom_validate.py");
    for (format, sbom) in [
        ("spdx", "out/hello.spdx.json"),
        ("cyclonedx", "out/hello.cdx.json"),
    ] {
        let doc = std::fs::read_to_string(env.path(sbom)).unwrap();
        assert!(doc.contains("\"pkg:deb/debian/gcc-12@"), "{sbom}:\n{doc}");
        let checked = Command::new("python3")
            .arg(&script)
            .args([format, env.path(sbom).to_str().unwrap()])
            .output()
            .expect("python3 runs");
        assert!(
            checked.status.success(),
            "the {format} validator refused {sbom} (install it with the README's test command):\n{}",
            text(&checked)
        );
    }
    let spdx = std::fs::read_to_string(env.path("out/hello.spdx.json")).unwrap();
    assert!(spdx.contains("\"CONTAINS\""), "{spdx}");

    let ran = Command::new(&artifact).output().unwrap();
    assert!(ran.status.success());
    assert!(
        String::from_utf8_lossy(&ran.stdout).contains("hello"),
        "{}",
        text(&ran)
    );
}

/// Ordinary build work — `make -j2` over several C files, a shell script with pipes, subshells
/// and background jobs — runs unchanged under the hardened profile (seccomp, cgroups, rlimits).
#[test]
fn make_j2_and_shell_pipelines_work_under_the_hardened_profile() {
    let env = Env::new();
    let rootfs = toolchain_rootfs();
    env.kiln_ok(&[
        "mirror",
        "import-rootfs",
        rootfs.to_str().unwrap(),
        "--name",
        "gcc-toolchain@12",
    ]);
    env.write(
        "src/Makefile",
        "app: main.o util.o\n\tcc -o app main.o util.o\n%.o: %.c\n\tcc -O2 -c $< -o $@\n",
    );
    env.write("src/main.c", "#include <stdio.h>\nint util(void);\nint main(void) { printf(\"util=%d\\n\", util()); return 0; }\n");
    env.write("src/util.c", "int util(void) { return 42; }\n");
    env.kiln_ok(&[
        "mirror",
        "add",
        env.path("src").to_str().unwrap(),
        "--tree",
        "--name",
        "app-src@1",
    ]);
    let pipeline = env.write(
        "build.yaml",
        r#"version: 1
name: build
rootfs: gcc-toolchain@12
inputs:
  src: { mirror: app-src@1 }
steps:
  - name: build
    inputs: [src]
    run: cp -r /in/src /work/src && make -j2 -C /work/src && cp /work/src/app /out/app
    outputs: [app]
  - name: script
    needs: [build]
    run: |
      set -e
      (cd /work && /in/build/app | tr '=' ' ' > result) &
      wait
      read name value < /work/result
      test "$name" = util && test "$value" = 42
      echo "$(seq 1 100 | sort -rn | head -n 1)" | grep -qx 100
      echo ok > /out/ok
    outputs: [ok]
artifacts:
  - { name: app, from: build, path: app }
"#,
    );
    let out = env.run(&pipeline);
    assert!(out.status.success(), "{}", text(&out));
    let ran = Command::new(env.path("out/app")).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&ran.stdout), "util=42\n");
}
