//! Step resource requests: `memory: 512MiB`, `pids: 256`, `cpus: 1.5`.
//!
//! Values are read from the scalar's text, not through floats: `cpus: 0.1` is exactly 100
//! thousandths of a CPU.

/// The smallest memory limit a step may ask for: less cannot start a shell.
pub(crate) const MIN_MEMORY: u64 = 4 << 20;
/// The fewest processes a step may ask for: the sandbox's pid 1 and the command take two.
pub(crate) const MIN_PIDS: u64 = 8;
/// The most processes a step may ask for (the kernel's largest `pid_max`).
pub(crate) const MAX_PIDS: u64 = 1 << 22;
/// The smallest CPU share, in thousandths: the kernel's 1 ms CFS quota per 100 ms period.
pub(crate) const MIN_MILLICPUS: u64 = 10;
/// The largest CPU share, in thousandths.
pub(crate) const MAX_MILLICPUS: u64 = 1024 * 1000;

/// Why a resource value was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum ResourceError {
    #[error(
        "invalid memory `{0}`: expected bytes or a whole number of KiB, MiB or GiB, like 512MiB"
    )]
    MemorySyntax(String),
    #[error("memory `{0}` is below the minimum of 4MiB")]
    MemoryTooSmall(String),
    #[error("memory `{0}` is more than 2^64 bytes")]
    MemoryTooLarge(String),
    #[error("invalid pids `{0}`: expected a whole number of processes, like 256")]
    PidsSyntax(String),
    #[error("pids {0} is out of range: expected 8 to 4194304")]
    PidsRange(u64),
    #[error(
        "invalid cpus `{0}`: expected a number of CPUs greater than 0 with at most three \
         decimals, like 1.5"
    )]
    CpusSyntax(String),
    #[error("cpus `{0}` is out of range: expected 0.01 to 1024")]
    CpusRange(String),
}

/// Parses `536870912`, `524288KiB`, `512MiB` or `1GiB` into bytes, at least [`MIN_MEMORY`].
pub(crate) fn parse_memory(text: &str) -> Result<u64, ResourceError> {
    let syntax = || ResourceError::MemorySyntax(text.to_owned());
    let (digits, scale) = [("KiB", 1u64 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30)]
        .into_iter()
        .find_map(|(unit, scale)| text.strip_suffix(unit).map(|d| (d, scale)))
        .unwrap_or((text, 1));
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(syntax());
    }
    let bytes = digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| ResourceError::MemoryTooLarge(text.to_owned()))?;
    match bytes {
        b if b < MIN_MEMORY => Err(ResourceError::MemoryTooSmall(text.to_owned())),
        b => Ok(b),
    }
}

/// Parses a process count between [`MIN_PIDS`] and [`MAX_PIDS`].
pub(crate) fn parse_pids(text: &str) -> Result<u64, ResourceError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ResourceError::PidsSyntax(text.to_owned()));
    }
    let pids = text
        .parse::<u64>()
        .map_err(|_| ResourceError::PidsSyntax(text.to_owned()))?;
    match pids {
        MIN_PIDS..=MAX_PIDS => Ok(pids),
        _ => Err(ResourceError::PidsRange(pids)),
    }
}

/// Parses `1`, `1.5` or `0.25` CPUs into thousandths, between [`MIN_MILLICPUS`] and
/// [`MAX_MILLICPUS`]; at most three decimals.
pub(crate) fn parse_cpus(text: &str) -> Result<u64, ResourceError> {
    let syntax = || ResourceError::CpusSyntax(text.to_owned());
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !all_digits(whole) || !all_digits(fraction) || fraction.len() > 3 {
        return Err(syntax());
    }
    if text.ends_with('.') {
        return Err(syntax());
    }
    let whole: u64 = whole.parse().map_err(|_| syntax())?;
    let fraction: u64 = format!("{fraction:0<3}").parse().map_err(|_| syntax())?;
    let millicpus = whole
        .checked_mul(1000)
        .and_then(|w| w.checked_add(fraction))
        .ok_or_else(|| ResourceError::CpusRange(text.to_owned()))?;
    match millicpus {
        0 => Err(syntax()),
        MIN_MILLICPUS..=MAX_MILLICPUS => Ok(millicpus),
        _ => Err(ResourceError::CpusRange(text.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_accepts_bytes_and_binary_units() {
        let cases = [
            ("536870912", 512 << 20),
            ("4194304", MIN_MEMORY),
            ("524288KiB", 512 << 20),
            ("512MiB", 512 << 20),
            ("2GiB", 2 << 30),
        ];
        for (text, bytes) in cases {
            assert_eq!(parse_memory(text), Ok(bytes), "{text}");
        }
    }

    #[test]
    fn memory_refuses_other_units_fractions_and_tiny_or_huge_values() {
        for bad in [
            "", "MiB", "512M", "512mib", "1.5GiB", "-1", "512 MiB", "1e9", "0x10",
        ] {
            assert_eq!(
                parse_memory(bad),
                Err(ResourceError::MemorySyntax(bad.into())),
                "{bad:?}"
            );
        }
        assert_eq!(
            parse_memory("1MiB"),
            Err(ResourceError::MemoryTooSmall("1MiB".into()))
        );
        assert_eq!(
            parse_memory("0"),
            Err(ResourceError::MemoryTooSmall("0".into()))
        );
        for huge in ["99999999999GiB", "99999999999999999999"] {
            assert_eq!(
                parse_memory(huge),
                Err(ResourceError::MemoryTooLarge(huge.into()))
            );
        }
    }

    #[test]
    fn pids_are_bounded_whole_numbers() {
        assert_eq!(parse_pids("256"), Ok(256));
        assert_eq!(parse_pids("8"), Ok(8));
        assert_eq!(parse_pids("7"), Err(ResourceError::PidsRange(7)));
        assert_eq!(parse_pids("0"), Err(ResourceError::PidsRange(0)));
        assert_eq!(
            parse_pids("4194305"),
            Err(ResourceError::PidsRange(4_194_305))
        );
        for bad in ["", "-1", "1.5", "lots", "99999999999999999999999"] {
            assert_eq!(
                parse_pids(bad),
                Err(ResourceError::PidsSyntax(bad.into())),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn cpus_are_exact_thousandths() {
        let cases = [
            ("1", 1000),
            ("1.5", 1500),
            ("0.1", 100),
            ("0.25", 250),
            ("0.01", 10),
            ("2.125", 2125),
            ("1024", 1_024_000),
        ];
        for (text, millicpus) in cases {
            assert_eq!(parse_cpus(text), Ok(millicpus), "{text}");
        }
    }

    #[test]
    fn cpus_refuse_zero_negatives_and_too_much_precision() {
        for bad in [
            "", "0", "0.0", "-1", "1.", ".5", "1.2345", "one", "1e3", "1,5",
        ] {
            assert_eq!(
                parse_cpus(bad),
                Err(ResourceError::CpusSyntax(bad.into())),
                "{bad:?}"
            );
        }
        for out in ["0.001", "0.009", "1025", "99999999999999999999"] {
            assert!(
                matches!(
                    parse_cpus(out),
                    Err(ResourceError::CpusRange(_) | ResourceError::CpusSyntax(_))
                ),
                "{out:?}"
            );
        }
        assert_eq!(
            parse_cpus("0.001"),
            Err(ResourceError::CpusRange("0.001".into()))
        );
    }
}
