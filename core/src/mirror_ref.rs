//! `NAME@VERSION` references to mirror entries.

use std::fmt;
use std::str::FromStr;

/// A pinned reference to a mirror entry: a name and an exact version.
///
/// A name without a version is a floating reference and is refused: what a step sees must not
/// change behind the pipeline's back.
///
/// ```
/// use kiln_core::MirrorRef;
/// let r: MirrorRef = "gcc-toolchain@12".parse().unwrap();
/// assert_eq!((r.name(), r.version()), ("gcc-toolchain", "12"));
/// assert!("gcc-toolchain".parse::<MirrorRef>().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MirrorRef {
    name: String,
    version: String,
}

/// Why a text is not a `NAME@VERSION` reference.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MirrorRefError {
    #[error("floating reference {0:?}: expected NAME@VERSION with an exact version")]
    Floating(String),
    #[error(
        "invalid mirror name {0:?}: expected lowercase letters, digits, '.', '_' or '-', starting with a letter or digit"
    )]
    Name(String),
    #[error("invalid version {0:?}: expected letters, digits, '.', '_', '+', '~' or '-'")]
    Version(String),
}

impl MirrorRef {
    /// The entry's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The entry's exact version.
    pub fn version(&self) -> &str {
        &self.version
    }
}

fn valid_name(s: &str) -> bool {
    s.len() <= 128
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
}

fn valid_version(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '~' | '-'))
}

impl FromStr for MirrorRef {
    type Err = MirrorRefError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some((name, version)) = s.split_once('@') else {
            return Err(MirrorRefError::Floating(s.to_owned()));
        };
        if !valid_name(name) {
            return Err(MirrorRefError::Name(name.to_owned()));
        }
        if version.is_empty() {
            return Err(MirrorRefError::Floating(s.to_owned()));
        }
        if !valid_version(version) {
            return Err(MirrorRefError::Version(version.to_owned()));
        }
        Ok(Self {
            name: name.to_owned(),
            version: version.to_owned(),
        })
    }
}

impl fmt::Display for MirrorRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.version)
    }
}

impl serde::Serialize for MirrorRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// What [`serde::Serialize`] emits: `NAME@VERSION`, with the limits [`FromStr`] enforces.
impl schemars::JsonSchema for MirrorRef {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "MirrorRef".into()
    }

    fn schema_id() -> std::borrow::Cow<'static, str> {
        concat!(module_path!(), "::MirrorRef").into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A pinned mirror entry, `NAME@VERSION` with an exact version.",
            "type": "string",
            "pattern": PATTERN,
        })
    }
}

/// [`valid_name`] `@` [`valid_version`], as one regular expression.
const PATTERN: &str = "^[a-z0-9][a-z0-9._-]{0,127}@[A-Za-z0-9][A-Za-z0-9._+~-]{0,127}$";

impl<'de> serde::Deserialize<'de> for MirrorRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_floating_and_bad_names() {
        assert!(matches!(
            "x@".parse::<MirrorRef>(),
            Err(MirrorRefError::Floating(_))
        ));
        assert!(matches!(
            "X@1".parse::<MirrorRef>(),
            Err(MirrorRefError::Name(_))
        ));
        assert!(matches!(
            "x@1 2".parse::<MirrorRef>(),
            Err(MirrorRefError::Version(_))
        ));
        assert_eq!(
            "hello-src@1.0".parse::<MirrorRef>().unwrap().to_string(),
            "hello-src@1.0"
        );
    }
}
