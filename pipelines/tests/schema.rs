//! The committed JSON Schema must be what the code generates.
//!
//! `KILN_UPDATE_SCHEMA=1 cargo test -p kiln-pipelines --test schema` regenerates it.

use std::fs;
use std::path::Path;

#[test]
fn committed_schema_matches_generated() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/pipeline.schema.json");
    let generated = serde_json::to_string_pretty(&kiln_pipelines::json_schema()).unwrap() + "\n";
    if std::env::var_os("KILN_UPDATE_SCHEMA").is_some() {
        fs::write(&path, &generated).expect("write docs/pipeline.schema.json");
    }
    let committed = fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/pipeline.schema.json is stale: run KILN_UPDATE_SCHEMA=1 cargo test -p kiln-pipelines --test schema"
    );
}

#[test]
fn schema_describes_the_top_level_fields() {
    let schema = kiln_pipelines::json_schema();
    let props = schema["properties"].as_object().expect("properties");
    let mut keys: Vec<_> = props.keys().map(String::as_str).collect();
    keys.sort();
    let expected = [
        "artifacts",
        "inputs",
        "name",
        "rootfs",
        "source_date_epoch",
        "sources",
        "steps",
        "version",
    ];
    assert_eq!(keys, expected);
    let required = schema["required"].as_array().unwrap();
    for field in ["version", "name", "rootfs", "steps"] {
        assert!(required.iter().any(|r| r == field), "{field} not required");
    }
    assert_eq!(schema["additionalProperties"], false);
}
