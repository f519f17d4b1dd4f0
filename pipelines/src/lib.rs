//! kiln's pipeline model: parse a pipeline file, validate it, and order its steps.
//!
//! Text goes in through [`parse`]; out comes either a [`Pipeline`] the rest of kiln trusts
//! without re-checking, or [`Diagnostics`] naming every problem found, each at
//! `FILE:LINE:COL` on one line. Parsing runs under tight resource budgets (aliases, nesting,
//! node count, scalar size), refuses duplicate keys and YAML 1.1 booleans such as `yes`.
//!
//! Invariant: this crate performs no I/O. It reads only the text it is handed, knows nothing
//! of the mirror, the sandbox or the database, and its types are not wire formats (they do
//! not derive `Serialize`). The published JSON Schema ([`json_schema`]) is generated from the
//! same raw types the parser fills, so the two cannot drift apart.
#![forbid(unsafe_code)]

mod diagnostic;
mod duration;
mod graph;
mod model;
mod raw;
mod resources;
mod suggest;
mod validate;
mod yaml;

pub use diagnostic::{Diagnostic, Diagnostics};
pub use model::{Artifact, DEFAULT_TIMEOUT, InputDecl, MAX_TIMEOUT, Pipeline, SourceDecl, Step};

use validate::Issue;

/// Parses and validates a pipeline file. `file` is the name used in diagnostics.
///
/// ```
/// let text = "version: 1\nname: demo\nrootfs: base@1\nsteps:\n  - { name: hi, run: echo hi }\n";
/// let p = kiln_pipelines::parse("demo.yaml", text).unwrap();
/// assert_eq!(p.steps()[0].run(), "echo hi");
///
/// let bad = "version: 1\nname: demo\nrootfs: base\nsteps: []\n";
/// let err = kiln_pipelines::parse("demo.yaml", bad).unwrap_err();
/// let lines: Vec<String> = err.iter().map(|d| d.to_string()).collect();
/// assert!(lines[0].starts_with("demo.yaml:3:9: invalid rootfs: floating reference"));
/// assert!(lines[1].starts_with("demo.yaml:4:8: pipeline has no steps"));
/// ```
pub fn parse(file: &str, text: &str) -> Result<Pipeline, Diagnostics> {
    let issues = match yaml::read(text) {
        Ok(raw) => match Pipeline::try_from(raw) {
            Ok(pipeline) => return Ok(pipeline),
            Err(issues) => issues,
        },
        Err(issue) => vec![issue],
    };
    Err(Diagnostics::new(report(file, &issues)))
}

/// The most diagnostics reported for one file; a hostile file could otherwise produce one per
/// node.
pub const MAX_DIAGNOSTICS: usize = 100;

/// Ties issues to `file`, keeping at most [`MAX_DIAGNOSTICS`] and saying how many were left out.
fn report(file: &str, issues: &[Issue]) -> Vec<Diagnostic> {
    let kept = issues.iter().take(MAX_DIAGNOSTICS);
    let mut out: Vec<Diagnostic> = kept.map(|i| diagnostic(file, i)).collect();
    if let Some(first_left_out) = issues.get(MAX_DIAGNOSTICS) {
        let more = issues.len() - MAX_DIAGNOSTICS;
        let message = format!("{more} more problems not shown: fix the ones above first");
        out.push(diagnostic(file, &Issue::new(first_left_out.at, message)));
    }
    out
}

fn diagnostic(file: &str, issue: &Issue) -> Diagnostic {
    Diagnostic::new(file, issue.at.line, issue.at.column, &issue.message)
}

/// The JSON Schema (draft 2020-12) of pipeline files, generated from the parser's own types.
///
/// It describes the shape and the per-field syntax; cross-references (needs, artifacts,
/// step inputs), uniqueness and cycles are only checked by [`parse`].
pub fn json_schema() -> serde_json::Value {
    schemars::schema_for!(raw::RawPipeline).to_value()
}
