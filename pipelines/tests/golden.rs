//! Golden tests: every `fixtures/invalid/NAME.yaml` must be refused with exactly the
//! diagnostics in `NAME.expected`, one per line.
//!
//! `KILN_UPDATE_FIXTURES=1 cargo test -p kiln-pipelines --test golden` rewrites the expected
//! files from the current output; review the diff before committing it.

use std::fs;
use std::path::{Path, PathBuf};

use kiln_pipelines::{Diagnostics, parse};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/invalid")
}

/// The fixture stems (`NAME` of `NAME.yaml`), sorted.
fn stems(ext: &str) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(fixtures())
        .expect("read fixtures/invalid")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn refused(file: &str) -> Diagnostics {
    let text = fs::read_to_string(fixtures().join(file)).expect("read fixture");
    match parse(file, &text) {
        Ok(p) => panic!("{file}: accepted, but must be refused: {p:?}"),
        Err(d) => d,
    }
}

/// Each diagnostic is one line, points into the file, and names the fixture.
fn check_shape(file: &str, diags: &Diagnostics) {
    assert!(!diags.is_empty(), "{file}: refused without a diagnostic");
    let lines = fs::read_to_string(fixtures().join(file))
        .unwrap()
        .lines()
        .count()
        .max(1);
    for d in diags {
        let shown = d.to_string();
        assert!(
            !shown.contains(['\n', '\r']),
            "{file}: multi-line diagnostic {shown:?}"
        );
        assert!(
            d.line >= 1 && d.column >= 1,
            "{file}: bad position in {shown}"
        );
        assert!(
            d.line <= lines + 1,
            "{file}: line {} is past the end",
            d.line
        );
        assert_eq!(d.file, file);
        assert!(shown.starts_with(&format!("{file}:{}:{}: ", d.line, d.column)));
    }
}

#[test]
fn every_invalid_fixture_is_refused_with_its_expected_diagnostics() {
    let update = std::env::var_os("KILN_UPDATE_FIXTURES").is_some();
    let mut failures = Vec::new();
    for stem in stems("yaml") {
        let file = format!("{stem}.yaml");
        let diags = refused(&file);
        check_shape(&file, &diags);
        let actual = format!("{diags}\n");
        let expected_path = fixtures().join(format!("{stem}.expected"));
        if update {
            fs::write(&expected_path, &actual).expect("write expected");
            continue;
        }
        let expected = fs::read_to_string(&expected_path).unwrap_or_default();
        if actual != expected {
            failures.push(format!(
                "{file}:\n  expected:\n{expected}  actual:\n{actual}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} fixture(s) differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn fixtures_are_paired_and_cover_enough_kinds() {
    let (yaml, expected) = (stems("yaml"), stems("expected"));
    assert_eq!(
        yaml, expected,
        "every NAME.yaml needs a NAME.expected and vice versa"
    );
    assert!(
        yaml.len() >= 25,
        "only {} malformed-pipeline fixtures",
        yaml.len()
    );
}

#[test]
fn expected_files_hold_only_diagnostic_lines() {
    for stem in stems("expected") {
        let text = fs::read_to_string(fixtures().join(format!("{stem}.expected"))).unwrap();
        let prefix = format!("{stem}.yaml:");
        assert!(
            text.ends_with('\n') && !text.ends_with("\n\n"),
            "{stem}: trailing newlines"
        );
        for line in text.lines() {
            assert!(line.starts_with(&prefix), "{stem}.expected: {line:?}");
        }
    }
}
