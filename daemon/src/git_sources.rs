//! Git mirrors for pipeline `sources:` (docs/git-sources.md): `kiln mirror git add` binds a
//! name to a local repository and fetches every branch and tag of it into `DATA/git/NAME.git`.
//! Commits are checked and exported at run acceptance ([`crate::run`]); the git work itself
//! lives in [`kiln_mirror::git`].
//!
//! Deliberately absent: network fetches (an operator clones first), pruning (a commit once
//! fetched stays available) and re-binding a name to another origin.

use std::fs;
use std::path::{Path, PathBuf};

use kiln_mirror::git::{self, GitError};
use time::OffsetDateTime;

use crate::state::{GitMirror, GitMirrorBinding, State, StateError};

/// Why a git mirror could not be added or updated.
#[derive(Debug, thiserror::Error)]
pub enum GitMirrorError {
    #[error(
        "invalid git mirror name {name:?}: use 1 to 64 lowercase letters, digits, '.', '_' and '-', starting with a letter or digit"
    )]
    Name { name: String },
    #[error(
        "git mirror {name} is already bound to {bound}, not {origin}: a name is never re-bound; pick another name"
    )]
    OtherOrigin {
        name: String,
        bound: String,
        origin: String,
    },
    #[error("allowed signers {path}: {reason}")]
    AllowedSigners { path: PathBuf, reason: String },
    #[error("cannot read the allowed signers file {path}")]
    ReadAllowedSigners {
        path: PathBuf,
        #[source]
        err: std::io::Error,
    },
    #[error("cannot create {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        err: std::io::Error,
    },
    #[error(transparent)]
    Git(#[from] GitError),
    #[error(transparent)]
    State(#[from] StateError),
}

/// What `kiln mirror git add` did.
#[derive(Clone, Debug)]
pub struct GitMirrorAdded {
    pub mirror: GitMirror,
    /// False when the name already existed and was fetched again.
    pub new: bool,
    /// Branches and tags the mirror now holds.
    pub refs: usize,
}

/// A git mirror name: like a pipeline name, so it is also a safe path component.
fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
}

/// Mirrors the repository at `origin` (a path or `file://` URL) as `name` under `git_dir`, or
/// fetches it again if `name` is already bound to the same origin. With `allowed_signers`,
/// only commits signed by one of them may be used from now on; without, none need be.
///
/// Refused before anything is written: a bad name, a network origin, a name bound to another
/// origin, an allowed-signers file that does not parse. A failed first fetch removes the
/// half-made mirror.
pub async fn add_git_mirror(
    state: &State,
    git_dir: &Path,
    origin: &str,
    name: &str,
    allowed_signers: Option<&Path>,
) -> Result<GitMirrorAdded, GitMirrorError> {
    if !valid_name(name) {
        return Err(GitMirrorError::Name {
            name: name.to_owned(),
        });
    }
    let origin_path = git::local_origin(origin)?;
    let origin = origin_path.to_string_lossy().into_owned();
    if let Some(bound) = state.git_mirror(name).await?
        && bound.origin != origin
    {
        return Err(GitMirrorError::OtherOrigin {
            name: name.to_owned(),
            bound: bound.origin,
            origin,
        });
    }
    let signers = allowed_signers.map(read_allowed_signers).transpose()?;

    fs::create_dir_all(git_dir).map_err(|err| GitMirrorError::CreateDir {
        path: git_dir.to_owned(),
        err,
    })?;
    let path = git_dir.join(format!("{name}.git"));
    let existed = path.exists();
    let refs = match git::fetch_mirror(&origin_path, &path) {
        Ok(refs) => refs,
        Err(err) => {
            if !existed && let Err(rm) = fs::remove_dir_all(&path) {
                tracing::warn!(path = %path.display(), %rm, "cannot remove a half-made git mirror");
            }
            return Err(err.into());
        }
    };
    let now = OffsetDateTime::now_utc();
    match state
        .bind_git_mirror(name, &origin, signers.as_deref(), now)
        .await?
    {
        GitMirrorBinding::Added(mirror) => Ok(GitMirrorAdded {
            mirror,
            new: true,
            refs,
        }),
        GitMirrorBinding::Updated(mirror) => Ok(GitMirrorAdded {
            mirror,
            new: false,
            refs,
        }),
        // Another `kiln mirror git add` bound the name first, from elsewhere.
        GitMirrorBinding::OtherOrigin(bound) => Err(GitMirrorError::OtherOrigin {
            name: name.to_owned(),
            bound: bound.origin,
            origin,
        }),
    }
}

/// Reads an allowed-signers file and checks that every line parses, so a typo is refused when
/// the mirror is added rather than when a run is.
fn read_allowed_signers(path: &Path) -> Result<String, GitMirrorError> {
    let text = fs::read_to_string(path).map_err(|err| GitMirrorError::ReadAllowedSigners {
        path: path.to_owned(),
        err,
    })?;
    let signers =
        git::AllowedSigners::parse(&text).map_err(|reason| GitMirrorError::AllowedSigners {
            path: path.to_owned(),
            reason,
        })?;
    if signers.is_empty() {
        return Err(GitMirrorError::AllowedSigners {
            path: path.to_owned(),
            reason: "no signer is listed: add a line `PRINCIPAL KEY-TYPE BASE64-KEY`".into(),
        });
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_single_safe_path_components() {
        for good in ["app", "lib-1.2", "0x"] {
            assert!(valid_name(good), "{good}");
        }
        for bad in ["", "..", ".git", "App", "a/b", "-x", &"a".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
