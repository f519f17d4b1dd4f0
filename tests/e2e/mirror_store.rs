//! The store under the mirror, end to end with the real binary: a blob changed on disk after
//! it was admitted is caught at the next read, and the step that needs it fails saying so.

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use common::{Env, text};

/// Where `DATA/store` keeps the blob `hex`.
fn blob_path(env: &Env, hex: &str) -> PathBuf {
    env.data_dir()
        .join("store/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
}

#[test]
fn a_tampered_input_blob_fails_the_step_with_a_clear_message() {
    let env = Env::new();
    env.import_busybox();
    let input = env.write("data/data.txt", "the vetted bytes\n");
    env.kiln_ok(&["mirror", "add", input.to_str().unwrap(), "--name", "data@1"]);
    let digest = common::sha256_file(&input);
    let pipeline = env.write(
        "p.yaml",
        "version: 1\nname: p\nrootfs: busybox@1\ninputs:\n  data: { mirror: data@1 }\nsteps:\n  - name: s\n    inputs: [data]\n    run: cat /in/data/data.txt > /out/copy\n    outputs: [copy]\nartifacts:\n  - { name: copy, from: s, path: copy }\n",
    );
    let first = env.run(&pipeline);
    assert!(first.status.success(), "{}", text(&first));
    // Let the blob's verified fingerprint outlive the store's 2 s "racy" window, so the second
    // run takes the fast path unless the tampering is noticed.
    std::thread::sleep(Duration::from_millis(2100));
    let second = env.run(&pipeline);
    assert!(second.status.success(), "{}", text(&second));

    // Same size, other bytes, written in place.
    let blob = blob_path(&env, &digest);
    fs::set_permissions(&blob, fs::Permissions::from_mode(0o644)).unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(&blob)
        .unwrap()
        .write_all(b"THE VETTED BYTES\n")
        .unwrap();
    fs::set_permissions(&blob, fs::Permissions::from_mode(0o444)).unwrap();

    let out = env.run(&pipeline);
    assert!(
        !out.status.success(),
        "a tampered input was used: {}",
        text(&out)
    );
    let all = text(&out);
    let line = all
        .lines()
        .find(|l| l.contains("does not match"))
        .unwrap_or_else(|| panic!("no line says the store's copy does not match:\n{all}"));
    assert!(line.contains("input data"), "{line}");
    assert!(line.contains(&digest), "{line}");
    assert!(line.contains("store's copy"), "{line}");
}
