//! Diagnostics: what `parse` reports about a pipeline it refuses.

use std::fmt;

/// One problem in a pipeline file, at the node that causes it.
///
/// Displays as `FILE:LINE:COL: MESSAGE`, always on one line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file name given to [`crate::parse`].
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong, and what to do when that is known; one line.
    pub message: String,
}

impl Diagnostic {
    /// A diagnostic; control characters (line breaks included) in `file` and `message` are
    /// escaped so it stays on one line, and line and column are at least 1.
    pub fn new(file: &str, line: usize, column: usize, message: &str) -> Self {
        Self {
            file: escape_controls(file),
            line: line.max(1),
            column: column.max(1),
            message: escape_controls(message),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

/// Every problem found in a pipeline file, in file order; never empty.
///
/// Displays one diagnostic per line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostics(Vec<Diagnostic>);

impl Diagnostics {
    /// Wraps a non-empty list of diagnostics.
    pub(crate) fn new(list: Vec<Diagnostic>) -> Self {
        debug_assert!(!list.is_empty());
        Self(list)
    }

    /// The diagnostics, in file order.
    pub fn as_slice(&self) -> &[Diagnostic] {
        &self.0
    }

    /// Iterates over the diagnostics.
    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.0.iter()
    }

    /// How many problems were found.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: a refused pipeline has at least one diagnostic.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl IntoIterator for Diagnostics {
    type Item = Diagnostic;
    type IntoIter = std::vec::IntoIter<Diagnostic>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a Diagnostics {
    type Item = &'a Diagnostic;
    type IntoIter = std::slice::Iter<'a, Diagnostic>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// `text` with control characters written as escapes (`\n`, `\u{1b}`), so it is one line.
pub(crate) fn escape_controls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagnostic_stays_on_one_line() {
        let d = Diagnostic::new("a\nb.yaml", 0, 0, "bad\r\nthing\t!");
        assert_eq!(d.to_string(), r"a\nb.yaml:1:1: bad\r\nthing\t!");
    }

    #[test]
    fn diagnostics_display_one_per_line() {
        let ds = Diagnostics::new(vec![
            Diagnostic::new("p.yaml", 1, 2, "first"),
            Diagnostic::new("p.yaml", 3, 4, "second"),
        ]);
        assert_eq!(ds.to_string(), "p.yaml:1:2: first\np.yaml:3:4: second");
    }
}
