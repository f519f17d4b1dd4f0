//! Keeps the architecture honest: which workspace crate may depend on which, where `unsafe` may
//! live, and which third-party crates are banned from the lock file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The allowed arrows (docs/ARCHITECTURE.md, "Which crate may depend on which").
fn allowed() -> BTreeMap<&'static str, BTreeSet<&'static str>> {
    let rules: [(&str, &[&str]); 9] = [
        ("kiln-core", &[]),
        ("kiln-pipelines", &["kiln-core"]),
        ("kiln-sandbox", &["kiln-core"]),
        ("kiln-mirror", &["kiln-core"]),
        ("kiln-attest", &["kiln-core"]),
        // The API client knows the wire types, nothing else: no store, no sandbox, no daemon.
        ("kiln-client", &["kiln-core"]),
        (
            "kiln-worker",
            &["kiln-core", "kiln-sandbox", "kiln-mirror", "kiln-client"],
        ),
        // Never the sandbox, the worker or the client: the daemon runs no step and calls no one.
        (
            "kiln-daemon",
            &["kiln-core", "kiln-pipelines", "kiln-mirror", "kiln-attest"],
        ),
        (
            "kiln-cli",
            &[
                "kiln-core",
                "kiln-pipelines",
                "kiln-sandbox",
                "kiln-mirror",
                "kiln-attest",
                "kiln-worker",
                "kiln-daemon",
                "kiln-client",
            ],
        ),
    ];
    rules
        .into_iter()
        .map(|(k, v)| (k, v.iter().copied().collect()))
        .collect()
}

#[test]
fn workspace_crates_depend_only_along_the_allowed_arrows() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let allowed = allowed();
    for package in meta["packages"].as_array().unwrap() {
        let name = package["name"].as_str().unwrap();
        let permitted = allowed
            .get(name)
            .unwrap_or_else(|| panic!("{name}: add it to the allowed arrows"));
        for dep in package["dependencies"].as_array().unwrap() {
            let dep_name = dep["name"].as_str().unwrap();
            let is_normal = dep["kind"].is_null();
            if dep_name.starts_with("kiln-") && is_normal {
                assert!(
                    permitted.contains(dep_name),
                    "{name} may not depend on {dep_name}"
                );
            }
        }
        if name != "kiln-daemon" && name != "kiln-cli" {
            let links_sqlx = package["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d["name"] == "sqlx");
            assert!(!links_sqlx, "only the daemon links sqlx, not {name}");
        }
    }
}

#[test]
fn only_the_sandbox_crate_may_use_unsafe() {
    for (krate, root_file) in [
        ("core", "src/lib.rs"),
        ("pipelines", "src/lib.rs"),
        ("mirror", "src/lib.rs"),
        ("attest", "src/lib.rs"),
        ("worker", "src/lib.rs"),
        ("client", "src/lib.rs"),
        ("daemon", "src/lib.rs"),
        ("cli", "src/main.rs"),
    ] {
        let text = std::fs::read_to_string(root().join(krate).join(root_file)).unwrap();
        assert!(
            text.contains("#![forbid(unsafe_code)]"),
            "{krate}/{root_file} must forbid unsafe code"
        );
    }
}

#[test]
fn banned_crates_are_not_in_the_lock_file() {
    // serde_yml: RUSTSEC-2025-0068; serde_yaml: archived upstream; tokio-tar/async-tar: PAX and
    // symlink bugs with no maintained fix.
    let banned = [
        "serde_yml",
        "serde_yaml",
        "tokio-tar",
        "async-tar",
        "cgroups-rs",
    ];
    let lock = std::fs::read_to_string(root().join("Cargo.lock")).unwrap();
    for line in lock.lines() {
        if let Some(name) = line.strip_prefix("name = ") {
            let name = name.trim_matches('"');
            assert!(
                !banned.contains(&name),
                "banned crate {name} is in Cargo.lock"
            );
        }
    }
}
