//! Valid pipelines: what comes out of `parse`, and in which order.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::Duration;

use kiln_pipelines::{DEFAULT_TIMEOUT, Pipeline, parse};

fn load(rel: &str) -> Pipeline {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    let text = fs::read_to_string(&path).expect("read pipeline");
    parse(rel, &text).unwrap_or_else(|d| panic!("{rel} refused:\n{d}"))
}

fn step_names(p: &Pipeline) -> Vec<&str> {
    p.steps().iter().map(|s| s.name()).collect()
}

/// Each step comes after every step it needs.
fn assert_topological(p: &Pipeline) {
    let names = step_names(p);
    for (i, step) in p.steps().iter().enumerate() {
        for need in step.needs() {
            let j = names.iter().position(|n| n == need).expect("need resolves");
            assert!(j < i, "{} runs before {need}, which it needs", step.name());
        }
    }
}

#[test]
fn hello_fixture_yields_every_declared_field() {
    let p = load("tests/fixtures/valid/hello.yaml");
    assert_eq!(p.name(), "hello");
    assert_eq!(p.rootfs().to_string(), "gcc-toolchain@12");
    assert_eq!(p.source_date_epoch(), 1_700_000_000);
    let src = &p.inputs()["hello-src"];
    assert_eq!(src.mirror.to_string(), "hello-src@1.0");
    assert_eq!(src.sha256.unwrap(), kiln_core::Sha256Digest::of(b"hello"));
    assert_eq!(step_names(&p), ["compile", "test"]);

    let compile = p.step("compile").unwrap();
    assert_eq!(compile.inputs(), ["hello-src"]);
    assert_eq!(compile.run(), "cc -O2 -o /out/hello /in/hello-src/hello.c");
    assert_eq!(compile.outputs(), ["hello"]);
    assert_eq!(compile.timeout(), Duration::from_secs(120));
    assert_eq!(
        compile.env(),
        &BTreeMap::from([("CFLAGS".into(), "-O2".into())])
    );

    let test = p.step("test").unwrap();
    assert_eq!(test.needs(), ["compile"]);
    assert_eq!(test.run(), "/in/compile/hello | grep -q 'hello'");
    assert_eq!(test.timeout(), DEFAULT_TIMEOUT);
    assert!(test.outputs().is_empty() && test.env().is_empty() && test.inputs().is_empty());

    let [hello] = p.artifacts() else {
        panic!("one artifact expected")
    };
    assert_eq!(
        (hello.name(), hello.from(), hello.path()),
        ("hello", "compile", "hello")
    );
}

#[test]
fn diamond_is_ordered_topologically_and_stably() {
    let p = load("tests/fixtures/valid/diamond.yaml");
    // Declared bottom, right, left, top: top is the only root, then right and left in
    // declaration order, then bottom.
    assert_eq!(step_names(&p), ["top", "right", "left", "bottom"]);
    assert_topological(&p);
    let bottom = p.step("bottom").unwrap();
    assert_eq!(bottom.needs(), ["right", "left"]);
    assert_eq!(bottom.timeout(), Duration::from_secs(5400));
    assert_eq!(p.step("top").unwrap().outputs(), ["t", "sub/dir/file.txt"]);
    assert_eq!(p.source_date_epoch(), 0);
    assert!(p.inputs().is_empty());
    let names: Vec<_> = p
        .artifacts()
        .iter()
        .map(|a| (a.name(), a.from(), a.path()))
        .collect();
    assert_eq!(
        names,
        [
            ("both", "bottom", "both"),
            ("deep", "top", "sub/dir/file.txt")
        ]
    );
}

#[test]
fn yes_and_numbers_stay_strings_where_strings_are_expected() {
    let p = load("tests/fixtures/valid/diamond.yaml");
    let env = p.step("left").unwrap().env();
    assert_eq!(env["FLAG"], "yes");
    assert_eq!(env["ANSWER"], "42");
}

#[test]
fn every_valid_fixture_parses_in_topological_order() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/valid");
    let mut count = 0;
    for entry in fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert_topological(&load(&format!("tests/fixtures/valid/{name}")));
        count += 1;
    }
    assert!(count >= 2);
}

#[test]
fn demo_example_parses() {
    let p = load("examples/hello.yaml");
    assert_eq!(p.rootfs().to_string(), "gcc-toolchain@12");
    assert_eq!(p.inputs()["hello-src"].mirror.to_string(), "hello-src@1.0");
    assert_eq!(p.inputs()["hello-src"].sha256, None);
    assert_eq!(step_names(&p), ["compile", "test"]);
    assert_eq!(
        p.step("compile").unwrap().run(),
        "cc -O2 -o /out/hello /in/hello-src/hello.c"
    );
    assert_eq!(
        p.step("test").unwrap().run(),
        "/in/compile/hello | grep -q 'hello'"
    );
    assert_eq!(p.artifacts()[0].path(), "hello");
    let c = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hello-src/hello.c");
    assert!(
        fs::read_to_string(c)
            .unwrap()
            .contains("\"hello from kiln\"")
    );
}

#[test]
fn resources_are_parsed_exactly_and_absent_ones_stay_unset() {
    let text = "version: 1\nname: demo\nrootfs: base@1\nsteps:\n\
        - { name: all, run: make, resources: { memory: 512MiB, pids: 256, cpus: 1.5 } }\n\
        - { name: bytes, run: make, resources: { memory: 67108864, cpus: 0.1 } }\n\
        - { name: none, run: make }\n";
    let p = parse("r.yaml", text).unwrap_or_else(|d| panic!("{d}"));
    let all = p.step("all").unwrap().resources();
    assert_eq!(all.memory_bytes, Some(512 << 20));
    assert_eq!(all.pids, Some(256));
    assert_eq!(all.millicpus, Some(1500));
    let bytes = p.step("bytes").unwrap().resources();
    assert_eq!(bytes.memory_bytes, Some(64 << 20));
    assert_eq!(bytes.pids, None);
    assert_eq!(
        bytes.millicpus,
        Some(100),
        "0.1 CPU is exactly 100 thousandths"
    );
    assert_eq!(p.step("none").unwrap().resources(), Default::default());
}

#[test]
fn sources_fixture_pins_each_source_to_a_full_commit() {
    let p = load("tests/fixtures/valid/sources.yaml");
    let app = &p.sources()["app"];
    assert_eq!(app.git, "app-repo");
    assert_eq!(app.commit, "3f2a9c1b3f2a9c1b3f2a9c1b3f2a9c1b3f2a9c1b");
    assert_eq!(app.git_ref.as_deref(), Some("v1.2"));
    assert_eq!(p.sources()["docs"].git_ref, None);
    assert_eq!(p.step("build").unwrap().sources(), ["app"]);
    assert!(p.step("build").unwrap().inputs().is_empty());
}
