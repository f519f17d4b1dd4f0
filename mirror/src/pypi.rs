//! The package-manager view for pip: a PEP 503 "simple" repository laid out as a file tree,
//! built from wheels and sdists that are already mirror entries (docs/package-index.md).
//!
//! The tree [`write_simple_index`] writes, once admitted as a tree entry and mounted read-only
//! at `/in/INPUT/`, is what `pip install --index-url file:///in/INPUT/simple` reads:
//!
//! ```text
//! kiln-index.json                 the manifest: each member's NAME@VERSION, file name, sha256
//! files/<file name>               each member's bytes
//! simple/index.html               one link per project
//! simple/<project>/index.html     one link per file: ../../files/<file name>#sha256=<hex>
//! ```
//!
//! The output depends only on the members (names, file names and bytes), never on their order,
//! the clock or the umask, so the same members always give the same tree digest.
//!
//! Deliberately absent: reading the store or the catalogue (the caller hands in verified bytes),
//! looking inside wheels (pip checks them against the `#sha256=` it is given), and any network.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use kiln_core::{MirrorRef, Sha256Digest};

/// The manifest's name at the top of the tree.
pub const MANIFEST: &str = "kiln-index.json";

/// The manifest's format tag; bump it when its shape changes.
pub const MANIFEST_FORMAT: &str = "kiln-index/v1";

/// One wheel or sdist going into an index: the mirror entry it is, and its verified bytes.
#[derive(Clone, Copy, Debug)]
pub struct IndexMember<'a> {
    /// The mirror entry the file was admitted as.
    pub reference: &'a MirrorRef,
    /// The entry's file name (`kiln_hello-1.0.0-py3-none-any.whl`).
    pub file_name: &'a str,
    /// The file's bytes, as read (and verified) from the store.
    pub bytes: &'a [u8],
}

/// Which kind of distribution a file name says it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DistributionKind {
    /// A built distribution: `NAME-VERSION(-BUILD)?-PY-ABI-PLATFORM.whl`.
    Wheel,
    /// A source distribution: `NAME-VERSION.tar.gz` (or a legacy `.zip`).
    Sdist,
}

/// What a distribution's file name says: its project (PEP 503-normalized) and version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Distribution {
    /// The normalized project name: lowercase, runs of `-`, `_`, `.` as one `-`.
    pub project: String,
    /// The version, as written in the file name.
    pub version: String,
    /// Wheel or sdist.
    pub kind: DistributionKind,
}

/// What [`write_simple_index`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexSummary {
    /// The normalized project names, sorted.
    pub projects: Vec<String>,
    /// How many files are under `files/`.
    pub files: usize,
}

/// Why an index cannot be built. Nothing is left behind when one is returned.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error(
        "{reference}: {file_name:?} is not a wheel (NAME-VERSION-PY-ABI-PLATFORM.whl) or an sdist \
         (NAME-VERSION.tar.gz) file name; add the package file under its own name"
    )]
    NotADistribution {
        reference: MirrorRef,
        file_name: String,
    },
    #[error("{second} and {first} are both named {file_name:?}; an index holds one file per name")]
    DuplicateFile {
        file_name: String,
        first: MirrorRef,
        second: MirrorRef,
    },
    #[error("an index needs at least one member")]
    Empty,
    #[error("cannot write the index at {path}")]
    Write {
        path: PathBuf,
        #[source]
        err: io::Error,
    },
}

/// PEP 503 normalization of a project name: lowercase, each run of `-`, `_` and `.` as one `-`.
///
/// ```
/// assert_eq!(kiln_mirror::pypi::normalize_project("Kiln__Hello.World"), "kiln-hello-world");
/// ```
pub fn normalize_project(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut in_separator_run = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !in_separator_run {
                out.push('-');
            }
            in_separator_run = true;
        } else {
            out.push(c.to_ascii_lowercase());
            in_separator_run = false;
        }
    }
    out
}

/// Reads a wheel or sdist file name, refusing anything else with an error naming `reference`.
///
/// File names are restricted to ASCII letters, digits and `._-+!`, so they are safe as path
/// components and in HTML without escaping.
pub fn parse_file_name(reference: &MirrorRef, file_name: &str) -> Result<Distribution, IndexError> {
    parse_wheel(file_name)
        .or_else(|| parse_sdist(file_name))
        .ok_or_else(|| IndexError::NotADistribution {
            reference: reference.clone(),
            file_name: file_name.to_owned(),
        })
}

/// `NAME-VERSION(-BUILD)?-PY-ABI-PLATFORM.whl`, NAME with `_` for `-` (the wheel spec).
fn parse_wheel(file_name: &str) -> Option<Distribution> {
    let stem = file_name.strip_suffix(".whl")?;
    let parts: Vec<&str> = stem.split('-').collect();
    let build_ok = match parts.len() {
        5 => true,
        6 => parts[2].starts_with(|c: char| c.is_ascii_digit()),
        _ => false,
    };
    let ok = build_ok
        && valid_chars(file_name)
        && valid_project(parts[0])
        && valid_version(parts[1])
        && parts.iter().all(|p| !p.is_empty());
    ok.then(|| Distribution {
        project: normalize_project(parts[0]),
        version: parts[1].to_owned(),
        kind: DistributionKind::Wheel,
    })
}

/// `NAME-VERSION.tar.gz` (PEP 625) or a legacy `NAME-VERSION.zip`; the version is after the
/// last `-`, as legacy names may hold `-` in NAME.
fn parse_sdist(file_name: &str) -> Option<Distribution> {
    let stem = file_name
        .strip_suffix(".tar.gz")
        .or_else(|| file_name.strip_suffix(".zip"))?;
    let (name, version) = stem.rsplit_once('-')?;
    let ok = valid_chars(file_name) && valid_project(name) && valid_version(version);
    ok.then(|| Distribution {
        project: normalize_project(name),
        version: version.to_owned(),
        kind: DistributionKind::Sdist,
    })
}

fn valid_chars(file_name: &str) -> bool {
    file_name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+' | '!'))
}

/// PEP 508 names: letters and digits at both ends, `._-` allowed inside.
fn valid_project(name: &str) -> bool {
    let alnum = |c: char| c.is_ascii_alphanumeric();
    name.starts_with(alnum)
        && name.ends_with(alnum)
        && name
            .chars()
            .all(|c| alnum(c) || matches!(c, '.' | '_' | '-'))
}

/// PEP 440 versions start with a digit (or an epoch, which also starts with one).
fn valid_version(version: &str) -> bool {
    version.starts_with(|c: char| c.is_ascii_digit())
        && version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '!'))
}

/// A member with what was derived from it.
struct Checked<'a> {
    member: IndexMember<'a>,
    dist: Distribution,
    sha256: Sha256Digest,
}

/// Writes the simple index of `members` into `dir`, which must not exist yet; on error `dir`
/// is removed again.
///
/// The same member listed twice (same entry, same file) counts once; two different entries
/// with the same file name are refused, as are names that are not wheels or sdists.
pub fn write_simple_index(
    members: &[IndexMember<'_>],
    dir: &Path,
) -> Result<IndexSummary, IndexError> {
    let checked = check_members(members)?;
    make_dir(dir)?;
    let written = write_tree(&checked, dir);
    if written.is_err() {
        // Best effort: the write error is what the caller needs to see.
        let _ = fs::remove_dir_all(dir);
    }
    written
}

/// Parses every member's file name and hashes its bytes; sorted by file name, deduplicated.
fn check_members<'a>(members: &[IndexMember<'a>]) -> Result<Vec<Checked<'a>>, IndexError> {
    if members.is_empty() {
        return Err(IndexError::Empty);
    }
    let mut by_file: BTreeMap<&str, Checked<'a>> = BTreeMap::new();
    for member in members {
        let dist = parse_file_name(member.reference, member.file_name)?;
        if let Some(seen) = by_file.get(member.file_name) {
            if seen.member.reference == member.reference {
                continue;
            }
            return Err(IndexError::DuplicateFile {
                file_name: member.file_name.to_owned(),
                first: seen.member.reference.clone(),
                second: member.reference.clone(),
            });
        }
        let sha256 = Sha256Digest::of(member.bytes);
        by_file.insert(
            member.file_name,
            Checked {
                member: *member,
                dist,
                sha256,
            },
        );
    }
    Ok(by_file.into_values().collect())
}

/// Fills `dir`, which [`write_simple_index`] just created.
fn write_tree(checked: &[Checked<'_>], dir: &Path) -> Result<IndexSummary, IndexError> {
    make_dir(&dir.join("files"))?;
    make_dir(&dir.join("simple"))?;
    let mut projects: BTreeMap<&str, Vec<&Checked<'_>>> = BTreeMap::new();
    for c in checked {
        write_file(&dir.join("files").join(c.member.file_name), c.member.bytes)?;
        projects.entry(&c.dist.project).or_default().push(c);
    }
    for (project, files) in &projects {
        let project_dir = dir.join("simple").join(project);
        make_dir(&project_dir)?;
        write_file(
            &project_dir.join("index.html"),
            project_page(project, files).as_bytes(),
        )?;
    }
    let names: Vec<&str> = projects.keys().copied().collect();
    write_file(&dir.join("simple/index.html"), root_page(&names).as_bytes())?;
    write_file(&dir.join(MANIFEST), manifest(checked).as_bytes())?;
    Ok(IndexSummary {
        projects: names.into_iter().map(str::to_owned).collect(),
        files: checked.len(),
    })
}

/// Directories are 0755 and files 0644 whatever the umask: modes are part of the tree digest.
fn make_dir(path: &Path) -> Result<(), IndexError> {
    fs::DirBuilder::new()
        .mode(0o755)
        .create(path)
        .and_then(|()| fs::set_permissions(path, fs::Permissions::from_mode(0o755)))
        .map_err(|err| IndexError::Write {
            path: path.to_owned(),
            err,
        })
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), IndexError> {
    fs::write(path, bytes)
        .and_then(|()| fs::set_permissions(path, fs::Permissions::from_mode(0o644)))
        .map_err(|err| IndexError::Write {
            path: path.to_owned(),
            err,
        })
}

/// `simple/index.html`: one link per project (PEP 503). Names need no escaping: they passed
/// [`valid_chars`].
fn root_page(projects: &[&str]) -> String {
    let mut page = page_head("Simple index");
    for project in projects {
        let _ = writeln!(page, "<a href=\"{project}/\">{project}</a><br/>");
    }
    page + "</body>\n</html>\n"
}

/// `simple/<project>/index.html`: one link per file, with its sha256 as the URL fragment pip
/// checks the download against.
fn project_page(project: &str, files: &[&Checked<'_>]) -> String {
    let mut page = page_head(&format!("Links for {project}"));
    for c in files {
        let name = c.member.file_name;
        let _ = writeln!(
            page,
            "<a href=\"../../files/{name}#sha256={}\">{name}</a><br/>",
            c.sha256
        );
    }
    page + "</body>\n</html>\n"
}

fn page_head(title: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html>\n<head>\n<meta name=\"pypi:repository-version\" content=\"1.0\">\n\
         <title>{title}</title>\n</head>\n<body>\n<h1>{title}</h1>\n"
    )
}

/// `kiln-index.json`: what an index holds. A stored format (inside the index's tree, so
/// content-addressed with it): fields are only ever added.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IndexManifest {
    /// [`MANIFEST_FORMAT`].
    pub format: String,
    /// `pypi`.
    pub ecosystem: String,
    /// Sorted by file name.
    pub members: Vec<ManifestMember>,
}

/// One mirror entry of an index.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ManifestMember {
    /// NAME@VERSION of the mirror entry.
    pub entry: String,
    pub file: String,
    pub project: String,
    pub version: String,
    pub sha256: Sha256Digest,
}

impl IndexManifest {
    /// Parses a manifest read by [`manifest_in_archive`].
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

fn manifest(checked: &[Checked<'_>]) -> String {
    let manifest = IndexManifest {
        format: MANIFEST_FORMAT.into(),
        ecosystem: "pypi".into(),
        members: checked
            .iter()
            .map(|c| ManifestMember {
                entry: c.member.reference.to_string(),
                file: c.member.file_name.to_owned(),
                project: c.dist.project.clone(),
                version: c.dist.version.clone(),
                sha256: c.sha256,
            })
            .collect(),
    };
    let mut out = serde_json::to_string_pretty(&manifest).expect("a manifest serialises");
    out.push('\n');
    out
}

/// The manifest inside a tree entry's archive (the tar blob the store holds), if the tree is
/// an index; `None` for any other tree or an unreadable archive. Only the manifest's bytes are
/// kept in memory.
pub fn manifest_in_archive(archive: impl io::Read) -> Option<Vec<u8>> {
    let mut entries = tar::Archive::new(archive);
    for entry in entries.entries().ok()? {
        let mut entry = entry.ok()?;
        if entry.path().ok()?.as_ref() == Path::new(MANIFEST) {
            let mut bytes = Vec::new();
            io::Read::read_to_end(&mut entry, &mut bytes).ok()?;
            return Some(bytes);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive_dir;

    fn r(s: &str) -> MirrorRef {
        s.parse().unwrap()
    }

    /// The tree's digest, as the store would name it.
    fn tree_digest(dir: &Path) -> Sha256Digest {
        let mut tar = Vec::new();
        archive_dir(dir, &mut tar).unwrap();
        Sha256Digest::of(&tar)
    }

    #[test]
    fn same_members_in_any_order_give_the_same_tree_digest() {
        let (a, b) = (r("kiln-hello@1.0.0"), r("other@2"));
        let one = IndexMember {
            reference: &a,
            file_name: "kiln_hello-1.0.0-py3-none-any.whl",
            bytes: b"wheel bytes",
        };
        let two = IndexMember {
            reference: &b,
            file_name: "Other.Pkg-2.0.tar.gz",
            bytes: b"sdist bytes",
        };
        let tmp = tempfile::tempdir().unwrap();
        write_simple_index(&[one, two], &tmp.path().join("x")).unwrap();
        write_simple_index(&[two, one, two], &tmp.path().join("y")).unwrap();
        assert_eq!(
            tree_digest(&tmp.path().join("x")),
            tree_digest(&tmp.path().join("y"))
        );

        let changed = IndexMember {
            bytes: b"other wheel bytes",
            ..one
        };
        write_simple_index(&[changed, two], &tmp.path().join("z")).unwrap();
        assert_ne!(
            tree_digest(&tmp.path().join("x")),
            tree_digest(&tmp.path().join("z"))
        );
    }

    #[test]
    fn project_page_links_each_file_with_its_sha256() {
        let a = r("kiln-hello@1.0.0");
        let bytes = b"wheel bytes";
        let member = IndexMember {
            reference: &a,
            file_name: "Kiln_Hello-1.0.0-py3-none-any.whl",
            bytes,
        };
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("index");
        let summary = write_simple_index(&[member], &dir).unwrap();
        assert_eq!(summary.projects, ["kiln-hello"]);

        let page = fs::read_to_string(dir.join("simple/kiln-hello/index.html")).unwrap();
        let expected = format!(
            "<a href=\"../../files/Kiln_Hello-1.0.0-py3-none-any.whl#sha256={}\">",
            Sha256Digest::of(bytes)
        );
        assert!(page.contains(&expected), "{page}");
        let root = fs::read_to_string(dir.join("simple/index.html")).unwrap();
        assert!(
            root.contains("<a href=\"kiln-hello/\">kiln-hello</a>"),
            "{root}"
        );
        assert_eq!(
            fs::read(dir.join("files/Kiln_Hello-1.0.0-py3-none-any.whl")).unwrap(),
            bytes
        );
        let manifest = fs::read_to_string(dir.join(MANIFEST)).unwrap();
        assert!(
            manifest.contains("\"entry\": \"kiln-hello@1.0.0\""),
            "{manifest}"
        );
        assert!(
            manifest.contains(&Sha256Digest::of(bytes).to_string()),
            "{manifest}"
        );
    }

    #[test]
    fn the_manifest_is_found_in_the_index_archive_and_not_in_others() {
        let a = r("kiln-hello@1.0.0");
        let member = IndexMember {
            reference: &a,
            file_name: "kiln_hello-1.0.0-py3-none-any.whl",
            bytes: b"wheel bytes",
        };
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("index");
        write_simple_index(&[member], &dir).unwrap();
        let mut tar = Vec::new();
        archive_dir(&dir, &mut tar).unwrap();
        assert_eq!(
            manifest_in_archive(tar.as_slice()).unwrap(),
            fs::read(dir.join(MANIFEST)).unwrap()
        );

        fs::remove_file(dir.join(MANIFEST)).unwrap();
        let mut tar = Vec::new();
        archive_dir(&dir, &mut tar).unwrap();
        assert_eq!(manifest_in_archive(tar.as_slice()), None);
    }

    #[test]
    fn normalization_folds_case_and_separator_runs_as_pep_503_says() {
        for (name, normalized) in [
            ("friendly-bard", "friendly-bard"),
            ("Friendly-Bard", "friendly-bard"),
            ("FRIENDLY-BARD", "friendly-bard"),
            ("friendly.bard", "friendly-bard"),
            ("friendly_bard", "friendly-bard"),
            ("friendly--bard", "friendly-bard"),
            ("FrIeNdLy-._.-bArD", "friendly-bard"),
        ] {
            assert_eq!(normalize_project(name), normalized, "{name}");
        }
    }

    #[test]
    fn file_names_that_are_not_wheels_or_sdists_are_refused_naming_the_entry() {
        let a = r("notes@1");
        for name in [
            "README.md",
            "pkg.whl",
            "pkg-1.0.whl",
            "pkg-1.0-py3-none.whl",
            "pkg-1.0-x-py3-none-any.whl",
            "pkg-v1.0.tar.gz",
            "pkg.tar.gz",
            "../evil-1.0-py3-none-any.whl",
            "pkg-1.0-py3-none-any.whl\"",
            "-1.0.tar.gz",
        ] {
            let err = parse_file_name(&a, name).unwrap_err();
            let message = err.to_string();
            assert!(message.starts_with("notes@1: "), "{message}");
        }
        assert_eq!(
            parse_file_name(&a, "kiln_hello-1.0.0-1-py3-none-any.whl").unwrap(),
            Distribution {
                project: "kiln-hello".into(),
                version: "1.0.0".into(),
                kind: DistributionKind::Wheel
            }
        );
        assert_eq!(
            parse_file_name(&a, "zope.interface-6.0.tar.gz")
                .unwrap()
                .project,
            "zope-interface"
        );
    }

    #[test]
    fn a_refused_member_leaves_no_directory_behind() {
        let (a, b) = (r("good@1"), r("bad@1"));
        let members = [
            IndexMember {
                reference: &a,
                file_name: "good-1-py3-none-any.whl",
                bytes: b"x",
            },
            IndexMember {
                reference: &b,
                file_name: "bad.txt",
                bytes: b"y",
            },
        ];
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("index");
        let err = write_simple_index(&members, &dir).unwrap_err();
        assert!(matches!(err, IndexError::NotADistribution { .. }), "{err}");
        assert!(!dir.exists());
    }

    #[test]
    fn two_entries_with_one_file_name_are_refused() {
        let (a, b) = (r("one@1"), r("two@1"));
        let file_name = "pkg-1.0-py3-none-any.whl";
        let members = [
            IndexMember {
                reference: &a,
                file_name,
                bytes: b"x",
            },
            IndexMember {
                reference: &b,
                file_name,
                bytes: b"y",
            },
        ];
        let tmp = tempfile::tempdir().unwrap();
        let err = write_simple_index(&members, &tmp.path().join("index")).unwrap_err();
        assert!(matches!(err, IndexError::DuplicateFile { .. }), "{err}");
    }
}
