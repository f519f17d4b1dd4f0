//! Builds the sandbox helper (`kiln-sandbox-helper`, from the `kiln-sandbox` crate) as a binary
//! of its own and leaves it at `$OUT_DIR/kiln-sandbox-helper`, which `src/main.rs` embeds. A
//! worker runs its sandbox launcher from that image (`kiln_sandbox::HelperImage`) instead of
//! from `kiln` itself: the launcher forks a process per step, which forks one more and clones
//! pid 1, and each of them copies the launcher's page tables, re-faults the code it runs and
//! tears it all down. That cost grows with the binary, and `kiln` (~30 MB: daemon, database,
//! HTTP, signing) is thirty times the helper (docs/benchmarks.md, session 7).
//!
//! The helper is built by a nested `cargo build` of the same workspace and lock file, with the
//! same profile and target, into a target directory of its own under `$OUT_DIR` (so it never
//! waits for the outer build's lock). A failure fails the build: a `kiln` without its helper
//! would still work (`kiln sandbox-helper`), only slower, and nobody would notice.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(env("CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir.parent().expect("cli/ sits in the workspace");
    let out_dir = PathBuf::from(env("OUT_DIR"));
    for input in ["sandbox", "Cargo.lock", "Cargo.toml"] {
        println!("cargo:rerun-if-changed={}", workspace.join(input).display());
    }
    let built = build_helper(workspace, &out_dir.join("helper-target"));
    let embedded = out_dir.join("kiln-sandbox-helper");
    std::fs::copy(&built, &embedded)
        .unwrap_or_else(|e| panic!("cannot copy {}: {e}", built.display()));
}

/// Runs the nested build; returns the helper's path.
fn build_helper(workspace: &Path, target_dir: &Path) -> PathBuf {
    let release = env("PROFILE") == "release";
    let (host, target) = (env("HOST"), env("TARGET"));
    let mut cargo = Command::new(env("CARGO"));
    cargo
        .current_dir(workspace)
        .args(["build", "--locked", "--package", "kiln-sandbox"])
        .args(["--bin", "kiln-sandbox-helper", "--target-dir"])
        .arg(target_dir)
        // Not wanted in the helper, which is copied into `kiln` whole: debug info.
        .env("CARGO_PROFILE_DEV_DEBUG", "false")
        // A lint pass (`cargo clippy`) of the outer build is not one of this build.
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO_TARGET_DIR");
    if release {
        cargo.arg("--release");
    }
    if host != target {
        cargo.args(["--target", &target]);
    }
    let status = cargo
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo to build the sandbox helper: {e}"));
    assert!(status.success(), "building the sandbox helper failed");
    let mut dir = target_dir.to_owned();
    if host != target {
        dir.push(&target);
    }
    dir.push(if release { "release" } else { "debug" });
    dir.join("kiln-sandbox-helper")
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("cargo sets {name} for build scripts"))
}
