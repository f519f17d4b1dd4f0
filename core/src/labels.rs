//! Worker labels (`kiln worker --label arch=x86_64`) and the labels a step requires
//! (`requires: { arch: x86_64 }`): one rule for both, so that whatever a pipeline can ask
//! for, a worker can offer.

/// Longest label key or value.
pub const MAX_LABEL_LEN: usize = 63;
/// Most labels a worker offers or a step requires.
pub const MAX_LABELS: usize = 32;

/// The labels every worker offers by itself, and the machine `kiln run` runs on offers:
/// `arch` (Rust's name for the CPU architecture, e.g. `x86_64`, `aarch64`) and `os` (`linux`).
pub fn host_labels() -> std::collections::BTreeMap<String, String> {
    std::collections::BTreeMap::from([
        ("arch".to_string(), std::env::consts::ARCH.to_string()),
        ("os".to_string(), std::env::consts::OS.to_string()),
    ])
}

/// Why a label is malformed, as a message fragment (`label key "…" …`), or `None` if it is
/// well formed: a key of letters, digits, `.`, `_`, `-` and `/` starting with a letter or digit,
/// and a non-empty value of the same characters, each at most [`MAX_LABEL_LEN`] long.
///
/// ```
/// assert_eq!(kiln_core::labels::label_problem("arch", "x86_64"), None);
/// assert!(kiln_core::labels::label_problem("arch", "").is_some());
/// ```
pub fn label_problem(key: &str, value: &str) -> Option<String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/');
    if key.is_empty() || key.len() > MAX_LABEL_LEN {
        return Some(format!(
            "label key {key:?} must be 1 to {MAX_LABEL_LEN} characters"
        ));
    }
    if !key.starts_with(|c: char| c.is_ascii_alphanumeric()) || !key.chars().all(allowed) {
        return Some(format!(
            "label key {key:?} must start with a letter or digit and hold only letters, digits, \
             `.`, `_`, `-` and `/`"
        ));
    }
    if value.is_empty() || value.len() > MAX_LABEL_LEN || !value.chars().all(allowed) {
        return Some(format!(
            "label {key}'s value {value:?} must be 1 to {MAX_LABEL_LEN} letters, digits, `.`, \
             `_`, `-` or `/`"
        ));
    }
    None
}
