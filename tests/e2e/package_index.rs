//! The package-manager view, end to end with pip (docs/package-index.md): wheels admitted to
//! the mirror become a PEP 503 index entry, which a network-denied step installs from.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use common::{Env, text};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The python3 + pip rootfs: `KILN_TEST_PYTHON_ROOTFS` (scripts/test.sh builds it once), else
/// target/test-rootfs-python, built here the first time.
fn python_rootfs() -> PathBuf {
    if let Some(dir) = std::env::var_os("KILN_TEST_PYTHON_ROOTFS") {
        return PathBuf::from(dir);
    }
    let dir = repo().join("target/test-rootfs-python");
    if !dir.join("etc/kiln-rootfs-packages").exists() {
        let status = Command::new("bash")
            .arg(repo().join("scripts/make-toolchain-rootfs.sh"))
            .args(["--force", "--packages", "python3 python3-pip"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(status.success(), "cannot build the python rootfs");
    }
    dir
}

/// Imports the python rootfs as `python3-pip@1`.
fn import_python_rootfs(env: &Env) {
    let rootfs = python_rootfs();
    env.kiln_ok(&[
        "mirror",
        "import-rootfs",
        rootfs.to_str().unwrap(),
        "--name",
        "python3-pip@1",
    ]);
}

/// Builds the example wheel and adds it as `kiln-hello@1.0.0`; returns its sha256.
fn add_example_wheel(env: &Env) -> String {
    let built = Command::new("python3")
        .arg(repo().join("pipelines/examples/pip-offline/build_wheel.py"))
        .arg(env.path("wheels"))
        .output()
        .unwrap();
    assert!(built.status.success(), "{}", text(&built));
    let wheel = String::from_utf8(built.stdout).unwrap();
    let added = env.kiln_ok(&["mirror", "add", wheel.trim(), "--name", "kiln-hello@1.0.0"]);
    reported_digest(&added)
}

/// The in-toto statement inside a DSSE provenance envelope.
fn provenance_statement(path: &Path) -> serde_json::Value {
    let envelope: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let payload = base64::engine::general_purpose::STANDARD
        .decode(envelope["payload"].as_str().unwrap())
        .unwrap();
    serde_json::from_slice(&payload).unwrap()
}

/// The `sha256:HEX` an `added`/`already present` line reports.
fn reported_digest(out: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .split_whitespace()
        .find_map(|w| w.strip_prefix("sha256:"))
        .unwrap_or_else(|| panic!("no digest in {stdout}"))
        .to_owned()
}

#[test]
fn example_pipeline_pip_installs_from_the_mirror_in_a_network_denied_step() {
    let env = Env::new();
    import_python_rootfs(&env);
    let wheel = add_example_wheel(&env);
    let first = env.kiln_ok(&[
        "mirror",
        "index",
        "pypi",
        "--name",
        "pypi-index@1",
        "kiln-hello@1.0.0",
    ]);

    let out = env.run(&repo().join("pipelines/examples/pip-offline.yaml"));
    assert!(out.status.success(), "{}", text(&out));
    let greeting = std::fs::read_to_string(env.path("out/greeting.txt")).unwrap();
    // Only the installed package's code could have printed this.
    assert_eq!(
        greeting,
        "hello, kiln, from kiln-hello 1.0.0 (installed from the kiln mirror)\n"
    );
    // The artifact's provenance names the index, by the digest it was added with.
    let index = reported_digest(&first);
    let statement = provenance_statement(&env.path("out/greeting.txt.intoto.jsonl"));
    let resolved = statement["predicate"]["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .unwrap();
    assert!(
        resolved
            .iter()
            .any(|d| d["name"] == "pypi-index@1" && d["digest"]["sha256"] == index.as_str()),
        "{statement}"
    );

    // ... and records that the step ran without a network.
    let network = &statement["predicate"]["buildDefinition"]["internalParameters"]["steps"]["install"]
        ["sandbox"]["network"];
    assert!(
        network.as_str().is_some_and(|n| n.starts_with("none")),
        "{network}"
    );

    // The same members, listed again (twice over), make the very same tree.
    let again = env.kiln_ok(&[
        "mirror",
        "index",
        "pypi",
        "--name",
        "pypi-index@1",
        "kiln-hello@1.0.0",
        "kiln-hello@1.0.0",
    ]);
    assert!(text(&again).contains("already present"), "{}", text(&again));
    assert_eq!(reported_digest(&first), reported_digest(&again));

    // `why` shows the index, then each member its manifest lists, with its own evidence.
    let why = text(&env.kiln_ok(&["mirror", "why", "pypi-index@1"]));
    let index_line = format!("pypi-index@1 sha256:{}  root: ", reported_digest(&first));
    let member_line = format!("  kiln-hello@1.0.0 sha256:{wheel}  root: admitted");
    assert!(why.starts_with(&index_line), "{why}");
    assert!(why.contains("members (kiln-index.json)"), "{why}");
    assert!(why.contains(&member_line), "{why}");
}

#[test]
fn pip_step_reaching_for_the_network_fails() {
    let env = Env::new();
    import_python_rootfs(&env);
    // A public address, so no name lookup is involved: what fails is the connection itself.
    let pipeline = env.write(
        "net.yaml",
        r#"version: 1
name: pip-network
rootfs: python3-pip@1
steps:
  - name: fetch
    run: |
      python3 -m pip download --no-cache-dir --disable-pip-version-check --retries 1 \
        --timeout 5 --index-url http://151.101.0.223/simple --trusted-host 151.101.0.223 \
        --dest /work/dl six
"#,
    );
    let out = env.run(&pipeline);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("Network is unreachable"),
        "the step failed for another reason than the network:\n{}",
        text(&out)
    );
}

#[test]
fn an_index_of_a_non_wheel_entry_is_refused_and_stores_nothing() {
    let env = Env::new();
    add_example_wheel(&env);
    let notes = env.write("README.md", "not a package\n");
    env.kiln_ok(&[
        "mirror",
        "add",
        notes.to_str().unwrap(),
        "--name",
        "notes@1",
    ]);
    let blobs_before = count_files(&env.data_dir().join("store"));

    index_is_refused(
        &env,
        &["kiln-hello@1.0.0", "notes@1"],
        "notes@1: \"README.md\" is not a wheel",
    );
    assert_eq!(count_files(&env.data_dir().join("store")), blobs_before);
}

#[test]
fn an_index_carrying_a_revoked_entry_is_refused() {
    let env = Env::new();
    add_example_wheel(&env);
    env.kiln_ok(&[
        "mirror",
        "revoke",
        "kiln-hello@1.0.0",
        "--reason",
        "CVE-0000-0000",
    ]);
    index_is_refused(
        &env,
        &["kiln-hello@1.0.0"],
        "kiln-hello@1.0.0 is revoked (CVE-0000-0000)",
    );
}

/// Regular files under `dir`, recursively (the store's blobs, trees and scratch space).
/// `kiln mirror index pypi --name pypi-index@1 ENTRIES...` is refused with `why`, and no index
/// entry is left behind.
fn index_is_refused(env: &Env, entries: &[&str], why: &str) {
    let mut args = vec!["mirror", "index", "pypi", "--name", "pypi-index@1"];
    args.extend_from_slice(entries);
    env.kiln_refused(&args, why);
    let list = env.kiln_ok(&["mirror", "list"]);
    assert!(!text(&list).contains("pypi-index"), "{}", text(&list));
}

fn count_files(dir: &Path) -> usize {
    let mut count = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            count += count_files(&entry.path());
        } else if kind.is_file() {
            count += 1;
        }
    }
    count
}
