//! Step timeouts: `30s`, `2m`, `1h`, `1h30m`, `1h2m3s`.

use std::time::Duration;

use crate::model::MAX_TIMEOUT;

/// Why a timeout was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum TimeoutError {
    #[error("invalid timeout `{0}`: expected a duration like 30s, 2m, 1h or 1h30m")]
    Syntax(String),
    #[error("timeout must be greater than zero")]
    Zero,
    #[error("timeout `{0}` exceeds the maximum of 24h")]
    TooLong(String),
}

/// Parses and bounds a timeout.
pub(crate) fn parse_timeout(text: &str) -> Result<Duration, TimeoutError> {
    let secs = seconds(text).ok_or_else(|| TimeoutError::Syntax(text.to_owned()))?;
    match Duration::from_secs(secs) {
        Duration::ZERO => Err(TimeoutError::Zero),
        d if d > MAX_TIMEOUT => Err(TimeoutError::TooLong(text.to_owned())),
        d => Ok(d),
    }
}

/// Total seconds of `[Nh][Nm][Ns]` (at least one part, units in that order), if well-formed.
fn seconds(text: &str) -> Option<u64> {
    let mut rest = text;
    let mut total: u64 = 0;
    let mut parts = 0;
    for (unit, scale) in [('h', 3600), ('m', 60), ('s', 1)] {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 || !rest[digits..].starts_with(unit) {
            continue;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        total = total.checked_add(n.checked_mul(scale)?)?;
        rest = &rest[digits + 1..];
        parts += 1;
    }
    (parts > 0 && rest.is_empty()).then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_each_unit_and_combinations() {
        let cases = [
            ("30s", 30),
            ("2m", 120),
            ("1h", 3600),
            ("1h30m", 5400),
            ("1h2m3s", 3723),
        ];
        for (text, secs) in cases {
            assert_eq!(parse_timeout(text), Ok(Duration::from_secs(secs)), "{text}");
        }
        assert_eq!(parse_timeout("24h"), Ok(MAX_TIMEOUT));
    }

    #[test]
    fn refuses_malformed_zero_and_too_long() {
        for bad in [
            "",
            "30",
            "m",
            "2m1h",
            "1h 30m",
            "-1s",
            "1.5h",
            "1d",
            "2mm",
            "99999999999999999999s",
        ] {
            assert_eq!(
                parse_timeout(bad),
                Err(TimeoutError::Syntax(bad.into())),
                "{bad:?}"
            );
        }
        assert_eq!(parse_timeout("0s"), Err(TimeoutError::Zero));
        assert_eq!(parse_timeout("0h0m"), Err(TimeoutError::Zero));
        assert_eq!(
            parse_timeout("24h1s"),
            Err(TimeoutError::TooLong("24h1s".into()))
        );
    }
}
