//! The client config file: defaults for the controller URL, team token and CA of the team and
//! worker commands, for users who would rather not repeat flags or export variables.
//!
//! `$KILN_CONFIG`, else `$XDG_CONFIG_HOME/kiln/config.yaml`, else `~/.config/kiln/config.yaml`:
//!
//! ```yaml
//! controller: https://ci.example:7070
//! token: kiln-team-…          # the file must then be private (mode 0600)
//! ca: controller-ca.pem       # relative to this file; or ca_fingerprint: <64 hex>
//! ```
//!
//! A flag wins over its environment variable, which wins over the file.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Deserialize;

/// What the config file may set.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    pub controller: Option<String>,
    pub token: Option<String>,
    pub ca: Option<PathBuf>,
    pub ca_fingerprint: Option<String>,
}

/// The config file's path, and whether the user named it (then it must exist).
fn location() -> Option<(PathBuf, bool)> {
    if let Some(path) = std::env::var_os("KILN_CONFIG").filter(|v| !v.is_empty()) {
        return Some((PathBuf::from(path), true));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some((base.join("kiln/config.yaml"), false))
}

impl ClientConfig {
    /// The config file's settings; empty when there is none.
    pub fn load() -> anyhow::Result<Self> {
        match location() {
            Some((path, named)) => Self::load_from(&path, named),
            None => Ok(Self::default()),
        }
    }

    fn load_from(path: &Path, must_exist: bool) -> anyhow::Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => {
                return Ok(Self::default());
            }
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let mut config: Self = if text.trim().is_empty() {
            Self::default()
        } else {
            serde_saphyr::from_str(&text).map_err(|err| {
                let (line, column) = err.location().map_or((1, 1), |l| (l.line(), l.column()));
                let message = serde_saphyr::MessageFormatter::format_message(
                    &serde_saphyr::DefaultMessageFormatter,
                    &err,
                );
                anyhow::anyhow!("{}:{line}:{column}: {message}", path.display())
            })?
        };
        if config.token.is_some() {
            let mode = std::fs::metadata(path)
                .with_context(|| format!("cannot stat {}", path.display()))?
                .permissions()
                .mode();
            anyhow::ensure!(
                mode & 0o077 == 0,
                "{} holds a token but others may read it (mode {:o}): chmod 600 it",
                path.display(),
                mode & 0o777
            );
        }
        if let Some(ca) = config.ca.take() {
            let base = path.parent().unwrap_or(Path::new("."));
            config.ca = Some(base.join(ca));
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str, mode: u32) -> PathBuf {
        let path = dir.join("config.yaml");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn settings_are_read_and_the_ca_is_relative_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "controller: https://ci:7070\ntoken: kiln-team-x\nca: ca.pem\n",
            0o600,
        );
        let config = ClientConfig::load_from(&path, true).unwrap();
        assert_eq!(config.controller.as_deref(), Some("https://ci:7070"));
        assert_eq!(config.token.as_deref(), Some("kiln-team-x"));
        assert_eq!(config.ca, Some(dir.path().join("ca.pem")));
    }

    #[test]
    fn a_token_in_a_file_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "token: kiln-team-x\n", 0o644);
        let err = ClientConfig::load_from(&path, true)
            .unwrap_err()
            .to_string();
        assert!(
            err.ends_with("holds a token but others may read it (mode 644): chmod 600 it"),
            "{err}"
        );
    }

    #[test]
    fn an_unknown_key_names_its_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "controller: http://x:1\ntokn: y\n", 0o600);
        let err = ClientConfig::load_from(&path, true)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("{}:2:1: ", path.display())),
            "{err}"
        );
        assert!(err.contains("tokn"), "{err}");
    }

    #[test]
    fn a_missing_default_file_is_no_config_but_a_named_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.yaml");
        assert!(
            ClientConfig::load_from(&path, false)
                .unwrap()
                .controller
                .is_none()
        );
        assert!(ClientConfig::load_from(&path, true).is_err());
    }
}
