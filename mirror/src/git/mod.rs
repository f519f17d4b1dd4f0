//! Git sources: bare mirrors of local repositories, commits checked against their content and
//! the mirror's refs, and commit trees exported into the store as deterministic archives.
//!
//! A mirror is only ever fetched from a local path (libgit2 is built without network
//! transports): an operator clones over the network with git first, then mirrors the clone.
//! Fetching adds and moves refs but never prunes, so a commit once reachable stays stored.
//!
//! Deliberately absent: the name → origin catalogue (the controller's database), checkouts with
//! a working tree, submodules, LFS and any content filter (the exported bytes are the blobs').

use std::fs::{self, Permissions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use git2::{ObjectType, Oid, Repository, TreeWalkMode};
use kiln_core::GitSigner;

mod signers;

pub use signers::AllowedSigners;
use signers::SignatureProblem;

use crate::{BlobStore, StoreError, Stored};

/// Why a git mirror could not be updated or a commit could not be used.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error(
        "git origin {origin:?} is not a local path or file:// URL: clone it with git first, then mirror the clone"
    )]
    RemoteOrigin { origin: String },
    #[error("git origin {path} does not exist")]
    NoOrigin {
        path: PathBuf,
        #[source]
        err: io::Error,
    },
    #[error("git origin {path} is not a readable git repository")]
    OpenOrigin {
        path: PathBuf,
        #[source]
        err: git2::Error,
    },
    #[error("cannot create the git mirror {path}")]
    CreateMirror {
        path: PathBuf,
        #[source]
        err: git2::Error,
    },
    #[error("cannot fetch {origin} into the git mirror {path}")]
    Fetch {
        origin: String,
        path: PathBuf,
        #[source]
        err: git2::Error,
    },
    #[error("cannot open the git mirror {path}")]
    OpenMirror {
        path: PathBuf,
        #[source]
        err: git2::Error,
    },
    #[error("git mirror {mirror}: commit {commit} does not exist")]
    NoSuchCommit { mirror: String, commit: String },
    #[error("git mirror {mirror}: object {commit} is a {kind}, not a commit")]
    NotACommit {
        mirror: String,
        commit: String,
        kind: String,
    },
    #[error(
        "git mirror {mirror}: the object stored as {commit} hashes to {actual}: its id does not match its content"
    )]
    IdMismatch {
        mirror: String,
        commit: String,
        actual: String,
    },
    #[error(
        "git mirror {mirror}: commit {commit} is not reachable from any branch or tag of the mirror"
    )]
    Unreachable { mirror: String, commit: String },
    #[error("git mirror {mirror}: no branch or tag {git_ref}")]
    NoSuchRef { mirror: String, git_ref: String },
    #[error("git mirror {mirror}: {git_ref} points at {actual}, not at the pinned commit {commit}")]
    RefMismatch {
        mirror: String,
        git_ref: String,
        commit: String,
        actual: String,
    },
    #[error(
        "git mirror {mirror}: commit {commit} has a submodule at {path}: submodules are not supported; mirror that repository and declare it as a source of its own"
    )]
    Submodule {
        mirror: String,
        commit: String,
        path: String,
    },
    #[error("git mirror {mirror}: commit {commit} has an unsafe entry name {path:?}")]
    UnsafeName {
        mirror: String,
        commit: String,
        path: String,
    },
    #[error(
        "git mirror {mirror}: commit {commit} is not signed, but the mirror only admits commits signed by an allowed signer"
    )]
    Unsigned { mirror: String, commit: String },
    #[error("git mirror {mirror}: commit {commit} is refused: {problem}")]
    Signature {
        mirror: String,
        commit: String,
        problem: String,
    },
    #[error("git mirror {mirror}: cannot read commit {commit}")]
    Read {
        mirror: String,
        commit: String,
        #[source]
        err: git2::Error,
    },
    #[error("cannot write the exported tree at {path}")]
    Write {
        path: PathBuf,
        #[source]
        err: io::Error,
    },
    #[error("cannot store the exported tree of commit {commit}")]
    Store {
        commit: String,
        #[source]
        err: Box<StoreError>,
    },
}

/// The refspecs a mirror fetches: every branch and tag, under the same names. Not forced: a
/// ref that upstream rewrote is left where it was.
const REFSPECS: [&str; 2] = ["refs/heads/*:refs/heads/*", "refs/tags/*:refs/tags/*"];

/// Turns what an operator gave (`PATH` or `file://PATH`) into the absolute, canonical path of
/// a git repository. Network URLs are refused: libgit2 here has no network transports.
pub fn local_origin(origin: &str) -> Result<PathBuf, GitError> {
    let path = match origin.strip_prefix("file://") {
        Some(path) => path,
        None if origin.contains("://") || looks_like_scp(origin) => {
            return Err(GitError::RemoteOrigin {
                origin: origin.to_owned(),
            });
        }
        None => origin,
    };
    let path = fs::canonicalize(path).map_err(|err| GitError::NoOrigin {
        path: PathBuf::from(path),
        err,
    })?;
    Repository::open(&path).map_err(|err| GitError::OpenOrigin {
        path: path.clone(),
        err,
    })?;
    Ok(path)
}

/// `host:path` (git's scp-like syntax) with no slash before the colon.
fn looks_like_scp(origin: &str) -> bool {
    origin
        .split_once(':')
        .is_some_and(|(host, _)| !host.is_empty() && !host.contains('/'))
}

/// Creates the bare mirror at `mirror` if needed, then fetches every branch and tag of the
/// repository at `origin` into it. Returns how many refs the mirror holds afterwards.
pub fn fetch_mirror(origin: &Path, mirror: &Path) -> Result<usize, GitError> {
    let repo = match Repository::open_bare(mirror) {
        Ok(repo) => repo,
        Err(_) if !mirror.exists() => {
            Repository::init_bare(mirror).map_err(|err| GitError::CreateMirror {
                path: mirror.to_path_buf(),
                err,
            })?
        }
        Err(err) => {
            return Err(GitError::OpenMirror {
                path: mirror.to_path_buf(),
                err,
            });
        }
    };
    let url = origin.to_string_lossy().into_owned();
    let fetch_error = |err| GitError::Fetch {
        origin: url.clone(),
        path: mirror.to_path_buf(),
        err,
    };
    let mut remote = repo.remote_anonymous(&url).map_err(fetch_error)?;
    remote.fetch(&REFSPECS, None, None).map_err(fetch_error)?;
    let refs = repo.references().map_err(fetch_error)?.count();
    tracing::info!(origin = %url, mirror = %mirror.display(), refs, "fetched git mirror");
    Ok(refs)
}

/// A commit of a mirror, checked: it exists as a commit, its id matches its content, and a
/// branch or tag of the mirror reaches it.
pub struct CheckedCommit {
    repo: Repository,
    mirror: String,
    oid: Oid,
}

impl CheckedCommit {
    /// The full commit id.
    pub fn id(&self) -> String {
        self.oid.to_string()
    }

    /// The repository the commit lives in, for signature checks.
    pub fn repo(&self) -> &Repository {
        &self.repo
    }

    /// The commit's object id.
    pub fn oid(&self) -> Oid {
        self.oid
    }

    /// Checks that the commit carries an SSH signature by one of `allowed_signers` (git's
    /// allowed-signers format) and returns who signed it.
    pub fn check_signature(&self, allowed_signers: &str) -> Result<GitSigner, GitError> {
        let refused = |problem| GitError::Signature {
            mirror: self.mirror.clone(),
            commit: self.id(),
            problem,
        };
        let allowed = AllowedSigners::parse(allowed_signers)
            .map_err(|e| refused(format!("the mirror's allowed signers do not parse: {e}")))?;
        let (signature, payload) = match self.repo.extract_signature(&self.oid, None) {
            Ok(parts) => parts,
            Err(err) if err.code() == git2::ErrorCode::NotFound => {
                return Err(GitError::Unsigned {
                    mirror: self.mirror.clone(),
                    commit: self.id(),
                });
            }
            Err(err) => return Err(self.read_error(err)),
        };
        match signers::verify(&allowed, &signature, &payload) {
            Ok(v) => {
                tracing::info!(mirror = %self.mirror, commit = %self.oid, signer = %v.principals, key = %v.fingerprint, "verified commit signature");
                Ok(GitSigner {
                    principal: v.principals,
                    fingerprint: v.fingerprint,
                })
            }
            Err(SignatureProblem::Gpg) => Err(refused(
                "GPG-signed commits are not supported; use SSH signatures (git -c gpg.format=ssh)"
                    .into(),
            )),
            Err(SignatureProblem::Malformed(e)) => Err(refused(format!(
                "the signature is not an SSH signature: {e}"
            ))),
            Err(SignatureProblem::UnknownKey(fp)) => Err(refused(format!(
                "signed by {fp}, which is not an allowed signer"
            ))),
            Err(SignatureProblem::Invalid(e)) => Err(refused(format!(
                "the SSH signature does not verify over the commit: {e}"
            ))),
        }
    }
}

/// Opens the bare mirror `path` (named `mirror` in messages) and checks `commit` in it; if
/// `git_ref` is given, that branch or tag must point at the commit too.
pub fn check_commit(
    path: &Path,
    mirror: &str,
    commit: &str,
    git_ref: Option<&str>,
) -> Result<CheckedCommit, GitError> {
    let repo = Repository::open_bare(path).map_err(|err| GitError::OpenMirror {
        path: path.to_path_buf(),
        err,
    })?;
    let no_such = || GitError::NoSuchCommit {
        mirror: mirror.to_owned(),
        commit: commit.to_owned(),
    };
    let read_error = |err| GitError::Read {
        mirror: mirror.to_owned(),
        commit: commit.to_owned(),
        err,
    };
    let oid = Oid::from_str(commit).map_err(|_| no_such())?;
    // Only a full id names one object; `from_str` pads a short one with zeros.
    if oid.to_string() != commit {
        return Err(no_such());
    }
    let odb = repo.odb().map_err(read_error)?;
    let object = match odb.read(oid) {
        Ok(object) => object,
        Err(err) if err.code() == git2::ErrorCode::NotFound => return Err(no_such()),
        // libgit2 re-hashes what it reads and reports a mismatch as its own error.
        Err(err) if err.message().contains("mismatch") => {
            return Err(GitError::IdMismatch {
                mirror: mirror.to_owned(),
                commit: commit.to_owned(),
                actual: "different content".to_owned(),
            });
        }
        Err(err) => return Err(read_error(err)),
    };
    if object.kind() != ObjectType::Commit {
        return Err(GitError::NotACommit {
            mirror: mirror.to_owned(),
            commit: commit.to_owned(),
            kind: object.kind().to_string(),
        });
    }
    let actual = Oid::hash_object(ObjectType::Commit, object.data()).map_err(read_error)?;
    if actual != oid {
        return Err(GitError::IdMismatch {
            mirror: mirror.to_owned(),
            commit: commit.to_owned(),
            actual: actual.to_string(),
        });
    }
    drop(object);
    drop(odb);
    let checked = CheckedCommit {
        repo,
        mirror: mirror.to_owned(),
        oid,
    };
    checked.check_reachable()?;
    if let Some(git_ref) = git_ref {
        checked.check_ref(git_ref)?;
    }
    Ok(checked)
}

impl CheckedCommit {
    fn read_error(&self, err: git2::Error) -> GitError {
        GitError::Read {
            mirror: self.mirror.clone(),
            commit: self.id(),
            err,
        }
    }

    /// Some branch or tag of the mirror is the commit or descends from it.
    fn check_reachable(&self) -> Result<(), GitError> {
        for glob in ["refs/heads/*", "refs/tags/*"] {
            let refs = self
                .repo
                .references_glob(glob)
                .map_err(|e| self.read_error(e))?;
            for reference in refs {
                let reference = reference.map_err(|e| self.read_error(e))?;
                let Ok(tip) = reference.peel_to_commit() else {
                    continue;
                };
                let tip = tip.id();
                if tip == self.oid
                    || self
                        .repo
                        .graph_descendant_of(tip, self.oid)
                        .map_err(|e| self.read_error(e))?
                {
                    return Ok(());
                }
            }
        }
        Err(GitError::Unreachable {
            mirror: self.mirror.clone(),
            commit: self.id(),
        })
    }

    /// `git_ref` (a tag, a branch, or a full `refs/…` name) points at the commit.
    fn check_ref(&self, git_ref: &str) -> Result<(), GitError> {
        let candidates = [
            format!("refs/tags/{git_ref}"),
            format!("refs/heads/{git_ref}"),
            git_ref.to_owned(),
        ];
        let found = candidates
            .iter()
            .filter(|name| name.starts_with("refs/tags/") || name.starts_with("refs/heads/"))
            .find_map(|name| self.repo.find_reference(name).ok())
            .ok_or_else(|| GitError::NoSuchRef {
                mirror: self.mirror.clone(),
                git_ref: git_ref.to_owned(),
            })?;
        let actual = found.peel_to_commit().map_err(|e| self.read_error(e))?.id();
        if actual != self.oid {
            return Err(GitError::RefMismatch {
                mirror: self.mirror.clone(),
                git_ref: git_ref.to_owned(),
                commit: self.id(),
                actual: actual.to_string(),
            });
        }
        Ok(())
    }

    /// Writes the commit's tree under a temporary directory of `store` and stores it as a
    /// deterministic archive: no `.git`, regular files 0644 or 0755 as git records them,
    /// directories 0755, symlinks kept as symlinks, fixed mtime (the archive's). The same tree
    /// always gets the same digest. Submodules are refused.
    pub fn export(&self, store: &BlobStore) -> Result<Stored, GitError> {
        let tmp = store.root().join("tmp");
        let staging = tempfile::Builder::new()
            .prefix("git-export-")
            .tempdir_in(&tmp)
            .map_err(|err| GitError::Write { path: tmp, err })?;
        self.write_tree(staging.path())?;
        let stored = store
            .put_dir(staging.path())
            .map_err(|err| GitError::Store {
                commit: self.id(),
                err: Box::new(err),
            })?;
        tracing::info!(mirror = %self.mirror, commit = %self.oid, tree = %stored.sha256, "exported git tree");
        Ok(stored)
    }

    fn write_tree(&self, root: &Path) -> Result<(), GitError> {
        let commit = self
            .repo
            .find_commit(self.oid)
            .map_err(|e| self.read_error(e))?;
        let tree = commit.tree().map_err(|e| self.read_error(e))?;
        let mut failure = None;
        tree.walk(TreeWalkMode::PreOrder, |dir, entry| {
            match self.write_entry(root, dir, entry) {
                Ok(()) => git2::TreeWalkResult::Ok,
                Err(err) => {
                    failure = Some(err);
                    git2::TreeWalkResult::Abort
                }
            }
        })
        .or_else(|err| match failure.is_some() {
            true => Ok(()),
            false => Err(self.read_error(err)),
        })?;
        failure.map_or(Ok(()), Err)
    }

    /// Writes one tree entry; `dir` is its parent's path inside the tree, `""` or ending in `/`.
    fn write_entry(&self, root: &Path, dir: &str, entry: &git2::TreeEntry) -> Result<(), GitError> {
        let name = entry.name_bytes();
        let rel = format!("{dir}{}", String::from_utf8_lossy(name));
        if !safe_name(name) {
            return Err(GitError::UnsafeName {
                mirror: self.mirror.clone(),
                commit: self.id(),
                path: rel,
            });
        }
        let path = root
            .join(Path::new(std::ffi::OsStr::from_bytes(dir.as_bytes())))
            .join(std::ffi::OsStr::from_bytes(name));
        let write_error = |err| GitError::Write {
            path: path.clone(),
            err,
        };
        let blob = |oid| {
            self.repo
                .find_blob(oid)
                .map(|b| b.content().to_vec())
                .map_err(|e| self.read_error(e))
        };
        match entry.filemode() {
            0o040000 => {
                fs::create_dir(&path).map_err(write_error)?;
                fs::set_permissions(&path, Permissions::from_mode(0o755)).map_err(write_error)
            }
            mode @ (0o100644 | 0o100755 | 0o100664) => {
                fs::write(&path, blob(entry.id())?).map_err(write_error)?;
                let mode = if mode == 0o100755 { 0o755 } else { 0o644 };
                fs::set_permissions(&path, Permissions::from_mode(mode)).map_err(write_error)
            }
            0o120000 => {
                let target = blob(entry.id())?;
                symlink(std::ffi::OsStr::from_bytes(&target), &path).map_err(write_error)
            }
            _ => Err(GitError::Submodule {
                mirror: self.mirror.clone(),
                commit: self.id(),
                path: rel,
            }),
        }
    }
}

/// A tree entry name that stays inside its directory and is not git's own.
fn safe_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name != b"."
        && name != b".."
        && !name.eq_ignore_ascii_case(b".git")
        && !name.contains(&b'/')
        && !name.contains(&0)
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    /// Runs git in `dir` with a fixed identity and dates, so commits are reproducible.
    fn git(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .current_dir(dir)
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args([
                "-c",
                "commit.gpgsign=false",
                "-c",
                "init.defaultBranch=main",
            ])
            .args(args)
            .env("GIT_AUTHOR_DATE", "1700000000 +0000")
            .env("GIT_COMMITTER_DATE", "1700000000 +0000")
            .output()
            .expect("run git");
        assert!(out.status.success(), "git {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// A repository with a file, an executable, a symlink and a subdirectory, committed.
    fn origin(dir: &Path) -> String {
        git(dir, &["init", "-q"]);
        fs::write(dir.join("README"), "hello\n").unwrap();
        fs::create_dir(dir.join("bin")).unwrap();
        fs::write(dir.join("bin/run"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(dir.join("bin/run"), Permissions::from_mode(0o755)).unwrap();
        symlink("README", dir.join("link")).unwrap();
        git(dir, &["add", "-A"]);
        git(dir, &["commit", "-q", "-m", "one"]);
        git(dir, &["rev-parse", "HEAD"])
    }

    fn mirrored(tmp: &Path) -> (PathBuf, String) {
        let src = tmp.join("src");
        fs::create_dir(&src).unwrap();
        let commit = origin(&src);
        let mirror = tmp.join("m.git");
        let origin = local_origin(src.to_str().unwrap()).unwrap();
        fetch_mirror(&origin, &mirror).unwrap();
        (mirror, commit)
    }

    #[test]
    fn same_tree_exports_to_same_digest_from_two_commits() {
        let tmp = tempfile::tempdir().unwrap();
        let (mirror, first) = mirrored(tmp.path());
        let src = tmp.path().join("src");
        // A second commit with the same tree but another message and date.
        git(&src, &["commit", "-q", "--allow-empty", "-m", "two"]);
        let second = git(&src, &["rev-parse", "HEAD"]);
        fetch_mirror(&src, &mirror).unwrap();
        assert_ne!(first, second);

        let store = BlobStore::open(&tmp.path().join("store")).unwrap();
        let a = check_commit(&mirror, "m", &first, None).unwrap();
        let b = check_commit(&mirror, "m", &second, Some("main")).unwrap();
        let (da, db) = (a.export(&store).unwrap(), b.export(&store).unwrap());
        assert_eq!(da, db);

        let tree = store.tree(&da.sha256).unwrap();
        assert_eq!(fs::read_to_string(tree.join("README")).unwrap(), "hello\n");
        let mode = |p: &str| fs::metadata(tree.join(p)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode("README"), 0o644);
        assert_eq!(mode("bin/run"), 0o755);
        assert_eq!(
            fs::read_link(tree.join("link")).unwrap(),
            Path::new("README")
        );
        assert!(!tree.join(".git").exists());
        // Nothing is left behind in the store's temporary directory.
        assert_eq!(fs::read_dir(store.root().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn changed_content_exports_to_another_digest() {
        let tmp = tempfile::tempdir().unwrap();
        let (mirror, first) = mirrored(tmp.path());
        let src = tmp.path().join("src");
        fs::write(src.join("README"), "changed\n").unwrap();
        git(&src, &["commit", "-q", "-am", "two"]);
        let second = git(&src, &["rev-parse", "HEAD"]);
        fetch_mirror(&src, &mirror).unwrap();
        let store = BlobStore::open(&tmp.path().join("store")).unwrap();
        let a = check_commit(&mirror, "m", &first, None)
            .unwrap()
            .export(&store);
        let b = check_commit(&mirror, "m", &second, None)
            .unwrap()
            .export(&store);
        assert_ne!(a.unwrap().sha256, b.unwrap().sha256);
    }

    #[test]
    fn commit_missing_from_mirror_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let (mirror, _) = mirrored(tmp.path());
        let absent = "0123456789abcdef0123456789abcdef01234567";
        let err = check_commit(&mirror, "m", absent, None).err().unwrap();
        assert!(matches!(err, GitError::NoSuchCommit { .. }), "{err}");
    }

    #[test]
    fn commit_no_ref_reaches_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let (mirror, first) = mirrored(tmp.path());
        let src = tmp.path().join("src");
        let tree = git(&src, &["rev-parse", "HEAD^{tree}"]);
        let dangling = git(
            &src,
            &["commit-tree", &tree, "-p", &first, "-m", "dangling"],
        );
        // Put the object in the mirror without any ref: fetch it under a temporary ref, then
        // delete the ref.
        git(&src, &["update-ref", "refs/heads/tmp", &dangling]);
        fetch_mirror(&src, &mirror).unwrap();
        git(&mirror, &["update-ref", "-d", "refs/heads/tmp"]);
        let err = check_commit(&mirror, "m", &dangling, None).err().unwrap();
        assert!(matches!(err, GitError::Unreachable { .. }), "{err}");
    }

    #[test]
    fn ref_pointing_elsewhere_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let (mirror, first) = mirrored(tmp.path());
        let src = tmp.path().join("src");
        git(&src, &["tag", "v1", &first]);
        git(&src, &["commit", "-q", "--allow-empty", "-m", "two"]);
        let second = git(&src, &["rev-parse", "HEAD"]);
        fetch_mirror(&src, &mirror).unwrap();
        check_commit(&mirror, "m", &first, Some("v1")).unwrap();
        let err = check_commit(&mirror, "m", &second, Some("v1"))
            .err()
            .unwrap();
        assert!(matches!(err, GitError::RefMismatch { .. }), "{err}");
        let err = check_commit(&mirror, "m", &second, Some("v9"))
            .err()
            .unwrap();
        assert!(matches!(err, GitError::NoSuchRef { .. }), "{err}");
    }

    #[test]
    fn object_stored_under_another_id_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let (mirror, first) = mirrored(tmp.path());
        // The loose commit object of `first`, planted in the mirror under another id.
        let forged = format!(
            "{}{}",
            &first[..39],
            if first.ends_with('0') { "1" } else { "0" }
        );
        let loose = |root: &Path, id: &str| root.join("objects").join(&id[..2]).join(&id[2..]);
        let from = loose(&tmp.path().join("src/.git"), &first);
        let to = loose(&mirror, &forged);
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        fs::copy(from, &to).unwrap();
        let err = check_commit(&mirror, "m", &forged, None).err().unwrap();
        assert!(matches!(err, GitError::IdMismatch { .. }), "{err}");
    }

    /// A fresh Ed25519 key pair at `path`; returns the public key line.
    fn keygen(path: &Path) -> String {
        let out = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "k", "-f"])
            .arg(path)
            .output()
            .expect("run ssh-keygen");
        assert!(out.status.success(), "{out:?}");
        fs::read_to_string(path.with_extension("pub")).unwrap()
    }

    /// Commits an empty change signed with the SSH key at `key`; returns its id.
    fn signed_commit(src: &Path, key: &Path, message: &str) -> String {
        let key = key.to_str().unwrap();
        let signing = format!("user.signingkey={key}");
        git(
            src,
            &[
                "-c",
                "gpg.format=ssh",
                "-c",
                &signing,
                "commit",
                "-q",
                "-S",
                "--allow-empty",
                "-m",
                message,
            ],
        );
        git(src, &["rev-parse", "HEAD"])
    }

    #[test]
    fn only_commits_signed_by_an_allowed_key_pass() {
        let tmp = tempfile::tempdir().unwrap();
        let (mirror, unsigned) = mirrored(tmp.path());
        let src = tmp.path().join("src");
        let allowed_pub = keygen(&tmp.path().join("allowed"));
        keygen(&tmp.path().join("other"));
        let good = signed_commit(&src, &tmp.path().join("allowed"), "good");
        let bad = signed_commit(&src, &tmp.path().join("other"), "bad");
        fetch_mirror(&src, &mirror).unwrap();
        let mut fields = allowed_pub.split_whitespace();
        let (kind, key) = (fields.next().unwrap(), fields.next().unwrap());
        let allowed = format!("alice@example.com {kind} {key}\n");

        let signer = check_commit(&mirror, "m", &good, None)
            .unwrap()
            .check_signature(&allowed)
            .unwrap();
        assert_eq!(signer.principal, "alice@example.com");
        let expected = PublicKeyLine(&allowed_pub).fingerprint();
        assert_eq!(signer.fingerprint, expected);

        let err = check_commit(&mirror, "m", &unsigned, None)
            .unwrap()
            .check_signature(&allowed)
            .unwrap_err();
        assert!(matches!(err, GitError::Unsigned { .. }), "{err}");
        let err = check_commit(&mirror, "m", &bad, None)
            .unwrap()
            .check_signature(&allowed)
            .unwrap_err();
        assert!(err.to_string().contains("not an allowed signer"), "{err}");
    }

    /// The fingerprint `ssh-keygen -l` prints for a public key line.
    struct PublicKeyLine<'a>(&'a str);

    impl PublicKeyLine<'_> {
        fn fingerprint(&self) -> String {
            let mut child = Command::new("ssh-keygen")
                .args(["-l", "-E", "sha256", "-f", "-"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write as _;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(self.0.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            let text = String::from_utf8(out.stdout).unwrap();
            text.split_whitespace().nth(1).unwrap().to_owned()
        }
    }

    #[test]
    fn network_origin_is_refused() {
        for origin in ["https://example.com/r.git", "git@example.com:r.git"] {
            let err = local_origin(origin).err().unwrap();
            assert!(
                matches!(err, GitError::RemoteOrigin { .. }),
                "{origin}: {err}"
            );
        }
    }

    #[test]
    fn entry_names_that_escape_are_unsafe() {
        for bad in [&b".."[..], b".", b".git", b".GIT", b"a/b", b""] {
            assert!(!safe_name(bad), "{bad:?}");
        }
        assert!(safe_name(b".gitignore"));
    }
}
