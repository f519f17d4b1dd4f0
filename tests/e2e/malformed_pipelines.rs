//! Every malformed pipeline is refused by `kiln run` with one-line `file:line:column` errors,
//! and leaves nothing behind in the data dir.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Env, kiln_bin, text};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines/tests/fixtures/invalid")
}

/// Every file under `dir` with the digest of its content.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut files = BTreeMap::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() && !path.is_symlink() {
                todo.push(path);
            } else if path.is_file() {
                files.insert(path.clone(), common::sha256_file(&path));
            }
        }
    }
    files
}

#[test]
fn every_invalid_fixture_gives_one_line_errors_and_writes_nothing() {
    let env = Env::new();
    env.import_busybox();
    let before = snapshot(&env.data_dir());
    let mut kinds = 0;
    for entry in fs::read_dir(fixtures()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let expected = fs::read_to_string(path.with_extension("expected")).unwrap();
        let out = Command::new(kiln_bin())
            .args(["run", &name, "--out", env.path("out").to_str().unwrap()])
            .env("KILN_DATA_DIR", env.data_dir())
            .current_dir(fixtures())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{name}: {}", text(&out));
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.trim_end(), expected.trim_end(), "{name}");
        for line in stderr.lines() {
            let mut parts = line.splitn(4, ':');
            assert_eq!(parts.next(), Some(name.as_str()), "{line}");
            assert!(parts.next().unwrap().parse::<u32>().unwrap() >= 1, "{line}");
            assert!(parts.next().unwrap().parse::<u32>().unwrap() >= 1, "{line}");
        }
        kinds += 1;
    }
    assert!(kinds >= 20, "only {kinds} malformed pipelines were tried");
    assert_eq!(
        snapshot(&env.data_dir()),
        before,
        "a refused pipeline changed the data dir"
    );
    assert!(
        !env.path("out").exists(),
        "a refused pipeline created the output dir"
    );
}

fn run_counts(env: &Env) -> Vec<(&'static str, i64)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let state = kiln_daemon::state::State::open(&env.data_dir().join("state.sqlite"))
            .await
            .unwrap();
        let counts = state.row_counts().await.unwrap();
        state.close().await;
        counts
            .into_iter()
            .filter(|(table, _)| *table != "mirror_entries")
            .collect()
    })
}

#[test]
fn pipelines_refused_at_acceptance_record_nothing() {
    let env = Env::new();
    env.import_busybox();
    let src = env.write("f.txt", "x");
    env.kiln_ok(&["mirror", "add", src.to_str().unwrap(), "--name", "f@1"]);
    let wrong = "0".repeat(64);
    let cases = [
        (
            "unknown-rootfs",
            "rootfs: nothing@1\nsteps:\n  - { name: s, run: 'true' }\n",
            "rootfs nothing@1 is not in the mirror",
        ),
        (
            "unknown-input",
            "rootfs: busybox@1\ninputs:\n  i: { mirror: nope@2 }\nsteps:\n  - { name: s, inputs: [i], run: 'true' }\n",
            "input i nope@2 is not in the mirror",
        ),
        (
            "digest-mismatch",
            &format!(
                "rootfs: busybox@1\ninputs:\n  i: {{ mirror: f@1, sha256: \"{wrong}\" }}\nsteps:\n  - {{ name: s, inputs: [i], run: 'true' }}\n"
            ),
            "but the pipeline asserts",
        ),
        (
            "file-as-rootfs",
            "rootfs: f@1\nsteps:\n  - { name: s, run: 'true' }\n",
            "a rootfs must be a tree",
        ),
    ];
    for (name, body, message) in cases {
        let pipeline = env.write(
            &format!("{name}.yaml"),
            &format!("version: 1\nname: {name}\n{body}"),
        );
        let out = env.run(&pipeline);
        assert!(!out.status.success(), "{name}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(message), "{name}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{name}: {stderr}");
    }
    assert!(
        run_counts(&env).iter().all(|(_, n)| *n == 0),
        "{:?}",
        run_counts(&env)
    );
}
