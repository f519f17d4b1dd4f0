//! Limits that keep a hostile pipeline file from costing more than a small one.

use kiln_pipelines::{MAX_DIAGNOSTICS, parse};

const HEADER: &str = "version: 1\nname: demo\nrootfs: base@1\nsteps:\n";

#[test]
fn oversized_file_is_refused_before_parsing() {
    let text = format!(
        "{HEADER}  - name: a\n    run: \"{}\"\n",
        "x".repeat(1024 * 1024)
    );
    let err = parse("big.yaml", &text).unwrap_err();
    assert_eq!(err.len(), 1);
    let msg = err.to_string();
    assert!(msg.starts_with("big.yaml:1:1: pipeline file is "), "{msg}");
    assert!(msg.ends_with("more than the limit of 1048576"), "{msg}");
}

#[test]
fn diagnostics_are_capped_with_a_count_of_the_rest() {
    let mut text = HEADER.to_owned();
    for i in 0..150 {
        text.push_str(&format!("  - {{ name: Bad{i}, run: \"true\" }}\n"));
    }
    let err = parse("many.yaml", &text).unwrap_err();
    assert_eq!(err.len(), MAX_DIAGNOSTICS + 1);
    let last = err.iter().last().unwrap();
    assert_eq!(
        last.message,
        "50 more problems not shown: fix the ones above first"
    );
    assert_eq!(last.line, 5 + MAX_DIAGNOSTICS);
}

#[test]
fn long_values_are_cut_short_in_messages() {
    let text = format!(
        "{HEADER}  - {{ name: a, run: \"true\", outputs: [\"/{}\"] }}\n",
        "a".repeat(5000)
    );
    let err = parse("long.yaml", &text).unwrap_err();
    let msg = &err.as_slice()[0].message;
    assert!(
        msg.starts_with("output path `/aaaa") && msg.contains("…`"),
        "{msg}"
    );
    assert!(msg.len() < 200, "message is {} bytes", msg.len());
}
