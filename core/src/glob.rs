//! The one pattern language of kiln's policies: the mirror's trust policy (entry names) and
//! consumers' verification policies (builder ids, repositories, dependency names).

/// Whether `text` matches `glob`: `*` matches any run of characters (`/` included), `?` exactly
/// one character, every other character itself. A glob without `*` or `?` is an exact match.
pub fn glob_match(glob: &str, text: &str) -> bool {
    let (g, t): (Vec<char>, Vec<char>) = (glob.chars().collect(), text.chars().collect());
    let (mut gi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if gi < g.len() && (g[gi] == '?' || g[gi] == t[ti]) {
            gi += 1;
            ti += 1;
        } else if gi < g.len() && g[gi] == '*' {
            star = Some(gi);
            mark = ti;
            gi += 1;
        } else if let Some(s) = star {
            gi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    g[gi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs_match_like_shell_patterns_across_slashes() {
        assert!(glob_match(
            "https://github.com/acme/*",
            "https://github.com/acme/x/y"
        ));
        assert!(!glob_match(
            "https://github.com/acme/*",
            "https://github.com/evil/x"
        ));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "ac"));
        assert!(glob_match("*", ""));
        assert!(glob_match("busybox@*", "busybox@1"));
    }
}
