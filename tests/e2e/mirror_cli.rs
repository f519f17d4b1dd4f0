//! `kiln mirror`: entries are immutable, digests can be asserted, hostile trees are refused.

mod common;

use common::{Env, text};

#[test]
fn a_mirror_entry_never_points_at_another_digest() {
    let env = Env::new();
    let a = env.write("a/lib.c", "int a;\n");
    let b = env.write("b/lib.c", "int b;\n");
    env.kiln_ok(&["mirror", "add", a.to_str().unwrap(), "--name", "lib@1"]);
    let again = env.kiln_ok(&["mirror", "add", a.to_str().unwrap(), "--name", "lib@1"]);
    assert!(text(&again).contains("already present"), "{}", text(&again));
    let other = env.kiln(&["mirror", "add", b.to_str().unwrap(), "--name", "lib@1"]);
    assert!(!other.status.success());
    assert!(
        text(&other).contains("entries are immutable"),
        "{}",
        text(&other)
    );
    let list = env.kiln_ok(&["mirror", "list"]);
    let digest = common::sha256_file(&a);
    assert!(
        text(&list).contains(&format!("lib@1\tsha256:{digest}")),
        "{}",
        text(&list)
    );
}

#[test]
fn an_asserted_digest_must_match() {
    let env = Env::new();
    let a = env.write("a/lib.c", "int a;\n");
    let wrong = "1".repeat(64);
    let out = env.kiln(&[
        "mirror",
        "add",
        a.to_str().unwrap(),
        "--name",
        "lib@1",
        "--sha256",
        &wrong,
    ]);
    assert!(!out.status.success());
    assert!(text(&out).contains("was asserted"), "{}", text(&out));
    let list = env.kiln_ok(&["mirror", "list"]);
    assert!(
        list.stdout.is_empty(),
        "a refused file was catalogued: {}",
        text(&list)
    );
}

#[test]
fn a_floating_reference_is_refused() {
    let env = Env::new();
    let a = env.write("a/lib.c", "int a;\n");
    let out = env.kiln(&["mirror", "add", a.to_str().unwrap(), "--name", "lib"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("floating reference"), "{}", text(&out));
}

#[test]
fn a_tree_input_is_staged_as_a_directory() {
    let env = Env::new();
    env.import_busybox();
    env.write("src/a.txt", "A\n");
    env.write("src/sub/b.txt", "B\n");
    env.kiln_ok(&[
        "mirror",
        "add",
        env.path("src").to_str().unwrap(),
        "--tree",
        "--name",
        "src@1",
    ]);
    let pipeline = env.write(
        "p.yaml",
        "version: 1\nname: p\nrootfs: busybox@1\ninputs:\n  src: { mirror: src@1 }\nsteps:\n  - name: s\n    inputs: [src]\n    run: cat /in/src/a.txt /in/src/sub/b.txt > /out/ab\n    outputs: [ab]\nartifacts:\n  - { name: ab, from: s, path: ab }\n",
    );
    let out = env.run(&pipeline);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(env.path("out/ab")).unwrap(),
        "A\nB\n"
    );
}
