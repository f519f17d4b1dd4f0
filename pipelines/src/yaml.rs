//! Reading YAML into the raw types, under explicit resource budgets, and turning the parser's
//! errors into one-line issues.

use std::borrow::Cow;

use serde_saphyr::budget::BudgetBreach;
use serde_saphyr::options::{AliasLimits, DuplicateKeyPolicy};
use serde_saphyr::{Budget, DefaultMessageFormatter, Error, MessageFormatter, Options};

use crate::raw::{Pos, RawPipeline};
use crate::suggest::did_you_mean;
use crate::validate::Issue;

/// The largest pipeline file accepted, in bytes.
pub(crate) const MAX_FILE_BYTES: usize = 1024 * 1024;

/// Parses `text` into the raw pipeline shape.
pub(crate) fn read(text: &str) -> Result<RawPipeline, Issue> {
    if text.len() > MAX_FILE_BYTES {
        let message = format!(
            "pipeline file is {} bytes, more than the limit of {MAX_FILE_BYTES}",
            text.len()
        );
        return Err(Issue::new(Pos::START, message));
    }
    if is_blank(text) {
        let message = "empty document: expected a pipeline mapping with `version`, `name`, \
                       `rootfs` and `steps`";
        return Err(Issue::new(Pos::START, message));
    }
    serde_saphyr::from_str_with_options(text, options()).map_err(|e| issue_from(&e))
}

/// Whether `text` holds no YAML content at all: only blank lines and comments.
fn is_blank(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .all(|l| l.is_empty() || l.starts_with('#') || l == "---" || l == "...")
}

/// Parser options: a pipeline is a small hand-written file, so the budgets are tight.
fn options() -> Options {
    let mut budget = Budget::default();
    budget.max_documents = 1;
    budget.max_depth = 16;
    budget.flow_nesting_limit = 16;
    budget.max_nodes = 50_000;
    budget.max_events = 200_000;
    budget.max_aliases = 1_000;
    budget.max_anchors = 1_000;
    budget.max_merge_keys = 100;
    budget.max_total_scalar_bytes = MAX_FILE_BYTES;
    budget.max_recorded_anchor_events = 10_000;
    budget.max_recorded_anchor_bytes = MAX_FILE_BYTES;

    let mut alias_limits = AliasLimits::default();
    alias_limits.max_total_replayed_events = 10_000;
    alias_limits.max_replay_stack_depth = 8;
    alias_limits.max_alias_expansions_per_anchor = 100;

    let mut options = Options::default();
    options.budget = Some(budget);
    options.alias_limits = alias_limits;
    options.duplicate_keys = DuplicateKeyPolicy::Error;
    options.strict_booleans = true;
    options.with_snippet = false;
    options
}

/// Converts a parser error into one issue with a one-line message.
fn issue_from(err: &Error) -> Issue {
    let at = err.location().map_or(Pos::START, Pos::from_location);
    Issue::new(at, message(innermost(err)))
}

/// The error underneath snippet and alias wrappers.
fn innermost(mut err: &Error) -> &Error {
    loop {
        err = match err {
            Error::WithSnippet { error, .. } | Error::AliasError { error, .. } => error,
            other => return other,
        };
    }
}

/// The message for a parser error, with kiln's wording where it matters.
fn message(err: &Error) -> String {
    match err {
        Error::SerdeUnknownField {
            field, expected, ..
        } => unknown_field(field, expected),
        Error::DuplicateMappingKey { key: Some(key), .. } => {
            format!("duplicate key `{key}`: each key may appear once in a mapping")
        }
        Error::Budget { breach, .. } => budget_message(breach),
        Error::AliasReplayLimitExceeded { .. }
        | Error::AliasExpansionLimitExceeded { .. }
        | Error::AliasReplayStackDepthExceeded { .. } => {
            "aliases expand to too much data (possible alias bomb): write the values out".into()
        }
        Error::Unexpected { expected, .. } => format!("wrong type: expected {}", kind(expected)),
        Error::InvalidScalar { ty, .. } => format!("invalid value: expected {}", kind(ty)),
        other => {
            let text = DefaultMessageFormatter.format_message(other);
            if text == "recursion limit exceeded" {
                budget_message(&BudgetBreach::Depth { depth: 0 })
            } else {
                text.into_owned()
            }
        }
    }
}

/// Names what the parser expected in the words of a pipeline author.
fn kind(expected: &str) -> &str {
    match expected {
        "sequence start" => "a list",
        "mapping start" => "a mapping",
        "string scalar" => "a string",
        "i8" | "i16" | "i32" | "i64" | "i128" | "u8" | "u16" | "u32" | "u64" | "u128" => {
            "an integer"
        }
        "bool" => "true or false",
        other => other,
    }
}

/// "unknown field `outptus`, expected one of …; did you mean `outputs`?"
fn unknown_field(field: &str, expected: &[&str]) -> String {
    let list = expected
        .iter()
        .map(|f| format!("`{f}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut msg = format!("unknown field `{field}`, expected one of {list}");
    if let Some(best) = did_you_mean(field, expected.iter().copied()) {
        msg.push_str(&format!("; did you mean `{best}`?"));
    }
    msg
}

/// Says which budget a hostile or runaway document exceeded.
fn budget_message(breach: &BudgetBreach) -> String {
    let what: Cow<'_, str> = match breach {
        BudgetBreach::Depth { .. } => "nesting is too deep".into(),
        BudgetBreach::Aliases { .. } | BudgetBreach::Anchors { .. } => {
            "too many aliases or anchors (possible alias bomb)".into()
        }
        BudgetBreach::Documents { .. } => "more than one YAML document".into(),
        BudgetBreach::Nodes { .. } | BudgetBreach::Events { .. } => "too many YAML nodes".into(),
        BudgetBreach::ScalarBytes { .. } => "too much scalar text".into(),
        other => format!("resource budget exceeded: {other:?}").into(),
    };
    format!("{what}: refusing to parse the pipeline")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_1_1_booleans_are_not_booleans() {
        for word in ["yes", "no", "on", "off", "y", "n"] {
            let parsed = serde_saphyr::from_str_with_options::<bool>(word, options());
            assert!(parsed.is_err(), "{word} was taken as a boolean");
        }
        assert!(serde_saphyr::from_str_with_options::<bool>("true", options()).unwrap());
    }

    #[test]
    fn parser_errors_become_one_line_with_position() {
        let issue = read("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(issue.at.line >= 1 && issue.at.column >= 1);
        assert!(!issue.message.contains('\n'), "{}", issue.message);
    }
}
