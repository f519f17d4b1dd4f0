//! The Debian packages of a root filesystem (`/etc/kiln-rootfs-packages`, and
//! `/usr/share/doc/PACKAGE/copyright` for licenses): what the SBOMs list beyond the step
//! records, read from each extracted rootfs a run used (docs/sbom.md), and what `kiln mirror
//! import-rootfs` records as evidence, read from the directory or the tar archive before
//! anything is stored (docs/mirror.md).
//!
//! Everything here is best effort: a rootfs without the list, with a malformed or oversized
//! list, or that cannot be extracted is listed without packages (with a warning). Reads never
//! follow symlinks and are capped, since a rootfs's content is not kiln's.

use std::fs::File;
use std::io::Read;
use std::path::{Component, Path};

use kiln_attest::sbom::rootfs::PACKAGE_LIST_PATH;
use kiln_attest::{RootfsPackages, SbomInputs};
use kiln_core::StepRecord;
use kiln_mirror::BlobStore;

/// The package list is refused when larger than this.
const MAX_LIST_BYTES: u64 = 4 << 20;
/// Only this much of a copyright file is read; the `Files: *` stanza comes first.
const MAX_COPYRIGHT_BYTES: u64 = 64 << 10;

/// The packages of every root filesystem of `steps` whose extracted tree records them.
pub fn sbom_inputs(store: &BlobStore, steps: &[StepRecord]) -> SbomInputs {
    let mut inputs = SbomInputs::default();
    for rec in steps {
        let digest = rec.rootfs.sha256;
        if inputs.rootfs_packages.contains_key(&digest) {
            continue;
        }
        let root = match store.rootfs(&digest) {
            Ok(root) => root,
            Err(err) => {
                tracing::warn!(%digest, error = %err, "rootfs unavailable: SBOM lists no packages of it");
                continue;
            }
        };
        if let Some(packages) = packages_of(&root) {
            inputs.rootfs_packages.insert(digest, packages);
        }
    }
    inputs
}

/// The packages the root filesystem at `root` records, with their licenses; `None` (and a
/// warning) when it records none or the list is malformed or oversized.
pub fn packages_of(root: &Path) -> Option<RootfsPackages> {
    let (text, complete) = read_capped(root, Path::new(PACKAGE_LIST_PATH), MAX_LIST_BYTES)?;
    if !complete {
        tracing::warn!(root = %root.display(), "rootfs package list too large: no packages read");
        return None;
    }
    match RootfsPackages::parse(&text) {
        Ok(packages) => Some(packages.with_licenses(|name| {
            let path = Path::new("usr/share/doc").join(name).join("copyright");
            read_capped(root, &path, MAX_COPYRIGHT_BYTES).map(|(text, _)| text)
        })),
        Err(err) => {
            tracing::warn!(root = %root.display(), error = %err, "rootfs package list malformed: no packages read");
            None
        }
    }
}

/// [`packages_of`] for a tar archive, streamed: the package list and
/// the copyright files are read from regular-file members without extracting anything.
pub fn packages_in_tar(path: &Path) -> Option<RootfsPackages> {
    use std::io::Read as _;
    let mut archive = tar::Archive::new(std::fs::File::open(path).ok()?);
    let mut list = None;
    let mut copyrights = std::collections::BTreeMap::new();
    for entry in archive.entries().ok()? {
        let Ok(entry) = entry else { break };
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let Ok(member) = entry.path().map(|p| p.into_owned()) else {
            continue;
        };
        let member = member.strip_prefix("./").unwrap_or(&member).to_owned();
        let member = member.strip_prefix("/").unwrap_or(&member).to_owned();
        let package = member
            .strip_prefix("usr/share/doc")
            .ok()
            .filter(|rest| rest.components().count() == 2 && rest.ends_with("copyright"))
            .and_then(|rest| rest.components().next())
            .and_then(|c| c.as_os_str().to_str().map(str::to_owned));
        let cap = match (&package, member == Path::new(PACKAGE_LIST_PATH)) {
            (_, true) => MAX_LIST_BYTES,
            (Some(_), false) => MAX_COPYRIGHT_BYTES,
            (None, false) => continue,
        };
        // As in a directory: a copyright file is cut at the cap, a longer list is refused.
        let mut bytes = Vec::new();
        if entry.take(cap + 1).read_to_end(&mut bytes).is_err() {
            continue;
        }
        let complete = bytes.len() as u64 <= cap;
        bytes.truncate(cap as usize);
        let text = String::from_utf8_lossy(&bytes).into_owned();
        match package {
            Some(name) => {
                copyrights.insert(name, text);
            }
            None if complete => list = Some(text),
            None => {
                tracing::warn!(archive = %path.display(), "rootfs package list too large: no packages read");
                return None;
            }
        }
    }
    let packages = RootfsPackages::parse(&list?).ok()?;
    Some(packages.with_licenses(|name| copyrights.get(name).cloned()))
}

/// Up to `cap` bytes of the regular file `root/rel`, and whether that was all of it; `None`
/// when it is absent, unreadable, or any component on the way is a symlink or not plain.
fn read_capped(root: &Path, rel: &Path, cap: u64) -> Option<(String, bool)> {
    let mut path = root.to_path_buf();
    for c in rel.components() {
        let Component::Normal(part) = c else {
            return None;
        };
        path.push(part);
        if std::fs::symlink_metadata(&path)
            .ok()?
            .file_type()
            .is_symlink()
        {
            return None;
        }
    }
    if !std::fs::symlink_metadata(&path).ok()?.is_file() {
        return None;
    }
    let mut bytes = Vec::new();
    File::open(&path)
        .ok()?
        .take(cap + 1)
        .read_to_end(&mut bytes)
        .ok()?;
    let complete = bytes.len() as u64 <= cap;
    bytes.truncate(cap as usize);
    Some((String::from_utf8_lossy(&bytes).into_owned(), complete))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_capped_refuses_symlinks_and_reports_truncation() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/list"), "bash 5.2 amd64\n").unwrap();
        std::os::unix::fs::symlink("/etc/hostname", dir.path().join("etc/link")).unwrap();
        std::os::unix::fs::symlink("etc", dir.path().join("via")).unwrap();
        assert_eq!(
            read_capped(dir.path(), Path::new("etc/list"), 100),
            Some(("bash 5.2 amd64\n".to_owned(), true))
        );
        assert_eq!(
            read_capped(dir.path(), Path::new("etc/list"), 4),
            Some(("bash".to_owned(), false))
        );
        assert_eq!(read_capped(dir.path(), Path::new("etc/link"), 100), None);
        assert_eq!(read_capped(dir.path(), Path::new("via/list"), 100), None);
        assert_eq!(read_capped(dir.path(), Path::new("../x"), 100), None);
        assert_eq!(read_capped(dir.path(), Path::new("etc/none"), 100), None);
    }
}
