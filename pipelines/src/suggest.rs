//! "Did you mean" suggestions for misspelt names.

/// The candidate closest to `word`, if it is close enough to be a plausible typo.
pub(crate) fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).clamp(1, 3);
    candidates
        .into_iter()
        .map(|c| (distance(word, c), c))
        .filter(|&(d, _)| d <= limit)
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

/// Optimal string alignment distance: insertions, deletions, substitutions and adjacent
/// transpositions each cost one.
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let width = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * width];
    for i in 0..=a.len() {
        for j in 0..=b.len() {
            d[i * width + j] = match (i, j) {
                (0, j) => j,
                (i, 0) => i,
                _ => cell(&d, width, &a, &b, i, j),
            };
        }
    }
    d[a.len() * width + b.len()]
}

/// One cell of the distance table, from the cells above and to the left.
fn cell(d: &[usize], width: usize, a: &[char], b: &[char], i: usize, j: usize) -> usize {
    let cost = usize::from(a[i - 1] != b[j - 1]);
    let mut best = (d[(i - 1) * width + j] + 1)
        .min(d[i * width + j - 1] + 1)
        .min(d[(i - 1) * width + j - 1] + cost);
    if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
        best = best.min(d[(i - 2) * width + j - 2] + 1);
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transposition_costs_one() {
        assert_eq!(distance("outptus", "outputs"), 1);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("kitten", "sitting"), 3);
    }

    #[test]
    fn suggests_only_close_candidates() {
        let fields = [
            "name", "inputs", "needs", "run", "outputs", "timeout", "env",
        ];
        assert_eq!(did_you_mean("outptus", fields), Some("outputs"));
        assert_eq!(did_you_mean("nedes", fields), Some("needs"));
        assert_eq!(did_you_mean("command", fields), None);
    }
}
