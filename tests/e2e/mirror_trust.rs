//! Checks that keep running after the build, through the real binary: `kiln mirror revoke`,
//! `kiln mirror advisories import` (OSV) and `kiln audit affected`, on a chain of runs where a
//! kiln-built artifact is imported into the mirror and used by a later run.

mod common;

use common::{Env, text};
use serde_json::Value;

/// Builds `lib` from `lib-src`.
const LIB: &str = "version: 1\nname: lib\nrootfs: busybox@1\ninputs:\n  src: { mirror: lib-src@1 }\nsteps:\n  - name: build\n    inputs: [src]\n    run: cat /in/src/lib.txt > /out/lib; echo built >> /out/lib\n    outputs: [lib]\nartifacts:\n  - { name: lib, from: build, path: lib }\n";
/// Builds `app` from the kiln-built `lib@1`.
const APP: &str = "version: 1\nname: app\nrootfs: busybox@1\ninputs:\n  lib: { mirror: lib@1 }\nsteps:\n  - name: link\n    inputs: [lib]\n    run: cat /in/lib/lib > /out/app; echo linked >> /out/app\n    outputs: [app]\nartifacts:\n  - { name: app, from: link, path: app }\n";
/// Unrelated: uses neither.
const OTHER: &str = "version: 1\nname: other\nrootfs: busybox@1\ninputs:\n  src: { mirror: other-src@1 }\nsteps:\n  - name: copy\n    inputs: [src]\n    run: cp /in/src/other.txt /out/other\n    outputs: [other]\nartifacts:\n  - { name: other, from: copy, path: other }\n";

fn run_ok(env: &Env, file: &str, yaml: &str) {
    let pipeline = env.write(file, yaml);
    let out = env.run(&pipeline);
    assert!(out.status.success(), "{file}: {}", text(&out));
}

fn affected(env: &Env, entry: &str) -> Vec<(String, usize)> {
    let out = env.kiln_ok(&["audit", "affected", entry, "--json"]);
    let report: Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    report["affected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["artifact"].as_str().unwrap().to_string(),
                a["via"].as_array().unwrap().len(),
            )
        })
        .collect()
}

/// `kiln mirror add PATH --name NAME`.
fn add(env: &Env, path: &std::path::Path, name: &str) {
    env.kiln_ok(&["mirror", "add", path.to_str().unwrap(), "--name", name]);
}

/// busybox, `lib-src@1`, the kiln-built `lib` imported as `lib@1`, and `app` built from it.
fn build_chain(env: &Env) {
    env.import_busybox();
    add(env, &env.write("src/lib.txt", "lib source\n"), "lib-src@1");
    run_ok(env, "lib.yaml", LIB);
    // The library kiln built goes back into the mirror, and an app is built from it.
    add(env, &env.path("out/lib"), "lib@1");
    run_ok(env, "app.yaml", APP);
}

#[test]
fn affected_follows_kiln_built_inputs_and_revocation_stops_new_runs() {
    let env = Env::new();
    build_chain(&env);
    add(
        &env,
        &env.write("src/other.txt", "other source\n"),
        "other-src@1",
    );
    run_ok(&env, "other.yaml", OTHER);

    // Through the chain: lib directly, app through lib; other not at all.
    assert_eq!(
        affected(&env, "lib-src@1"),
        [("lib".to_string(), 2), ("app".to_string(), 3)]
    );
    assert_eq!(affected(&env, "lib@1"), [("app".to_string(), 2)]);
    assert_eq!(affected(&env, "other-src@1"), [("other".to_string(), 2)]);
    let text_out = env.kiln_ok(&["audit", "affected", "lib-src@1"]);
    let printed = String::from_utf8_lossy(&text_out.stdout);
    assert!(
        printed.contains("2 of 3 published artifact(s)"),
        "{printed}"
    );

    // Revoked: new runs may not use it; its evidence stays; already built artifacts are listed.
    env.kiln_ok(&[
        "mirror",
        "revoke",
        "lib-src@1",
        "--reason",
        "CVE-2026-0001 in lib source",
    ]);
    let pipeline = env.write("lib-again.yaml", LIB);
    let refused = env.run(&pipeline);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(
        text(&refused).contains("input src lib-src@1 was revoked at")
            && text(&refused).contains("(CVE-2026-0001 in lib source)"),
        "{}",
        text(&refused)
    );
    let shown = env.kiln_ok(&["mirror", "show", "lib-src@1"]);
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.contains("revoked:   at ") && shown.contains("policy:"),
        "{shown}"
    );
    assert_eq!(affected(&env, "lib-src@1").len(), 2);
    let unknown = env.kiln(&["mirror", "revoke", "nope@1", "--reason", "x"]);
    assert_eq!(unknown.status.code(), Some(2));
}

#[test]
fn why_prints_a_three_level_chain_with_digests_and_verification() {
    let env = Env::new();
    build_chain(&env);
    add(&env, &env.path("out/app"), "app@1");

    let printed = env.kiln_ok(&["mirror", "why", "app@1"]);
    let printed = String::from_utf8_lossy(&printed.stdout).into_owned();
    let lines: Vec<&str> = printed.lines().collect();
    let digest = |path: &str| common::sha256_file(&env.path(path));
    assert!(
        lines[0].starts_with(&format!(
            "app@1 sha256:{}  built by kiln: run ",
            digest("out/app")
        )),
        "{printed}"
    );
    assert!(
        lines[0].contains("artifact app; provenance verified with key "),
        "{printed}"
    );
    let find = |prefix: &str| {
        lines
            .iter()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting {prefix:?} in\n{printed}"))
    };
    assert!(
        find(&format!("  lib@1 sha256:{}", digest("out/lib")))
            .contains("artifact lib; provenance verified"),
        "{printed}"
    );
    assert!(
        find(&format!("    lib-src@1 sha256:{}", digest("src/lib.txt")))
            .contains("root: admitted unsigned"),
        "{printed}"
    );
    assert!(
        find("    busybox@1 sha256:").contains("root: admitted"),
        "{printed}"
    );
    assert!(
        find("  busybox@1 sha256:").contains("root: admitted"),
        "{printed}"
    );

    let json = env.kiln_ok(&["mirror", "why", "app@1", "--json"]);
    let chain: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(chain["origin"]["kind"], "built");
    assert_eq!(chain["origin"]["verified"], true);
    let lib = chain["from"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["entry"] == "lib@1")
        .unwrap();
    assert_eq!(lib["origin"]["verified"], true);
    let src = lib["from"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["entry"] == "lib-src@1")
        .unwrap();
    assert_eq!(src["origin"]["kind"], "admitted");

    // Provenance signed by another key does not verify, and the chain says so.
    let other = env.path("other-key");
    env.kiln_ok(&["keys", "generate", "--out", other.to_str().unwrap()]);
    std::fs::copy(other.join("kiln.key"), env.data_dir().join("keys/kiln.key")).unwrap();
    let printed = env.kiln_ok(&["mirror", "why", "app@1"]);
    let printed = String::from_utf8_lossy(&printed.stdout);
    assert!(
        printed
            .lines()
            .next()
            .unwrap()
            .contains("provenance does NOT verify"),
        "{printed}"
    );
}

#[test]
fn osv_advisories_flag_the_entries_they_name() {
    let env = Env::new();
    let zlib = env.write("zlib.tar", "not really zlib\n");
    env.kiln_ok(&[
        "mirror",
        "add",
        zlib.to_str().unwrap(),
        "--name",
        "zlib@1.2.13",
    ]);
    env.kiln_ok(&[
        "mirror",
        "add",
        zlib.to_str().unwrap(),
        "--name",
        "zlib@1.3.1",
    ]);
    let osv = env.write(
        "osv.json",
        r#"{"id": "OSV-2026-42", "summary": "inflate overflow", "modified": "2026-11-01T00:00:00Z",
            "affected": [{"package": {"ecosystem": "Debian", "name": "zlib"}, "versions": ["1.2.13"]}]}"#,
    );
    let imported = env.kiln_ok(&["mirror", "advisories", "import", osv.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&imported.stdout).contains("1 name an entry in this mirror"),
        "{}",
        text(&imported)
    );
    let list = env.kiln_ok(&["mirror", "list"]);
    let list = String::from_utf8_lossy(&list.stdout);
    let line = |name: &str| {
        list.lines()
            .find(|l| l.starts_with(name))
            .unwrap()
            .to_string()
    };
    assert!(
        line("zlib@1.2.13").ends_with(",VULNERABLE:OSV-2026-42"),
        "{list}"
    );
    assert!(!line("zlib@1.3.1").contains("VULNERABLE"), "{list}");
    let shown = env.kiln_ok(&["mirror", "show", "zlib@1.2.13"]);
    assert!(
        String::from_utf8_lossy(&shown.stdout)
            .contains("advisory:  OSV-2026-42 (modified 2026-11-01T00:00:00Z): inflate overflow")
    );
    let garbage = env.write("bad.json", "{\"nope\": true}");
    let refused = env.kiln(&["mirror", "advisories", "import", garbage.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
}
