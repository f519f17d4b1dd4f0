//! The Debian packages of a root filesystem, as kiln's toolchain rootfs records them in
//! `/etc/kiln-rootfs-packages` (scripts/make-toolchain-rootfs.sh): one
//! `PACKAGE VERSION ARCHITECTURE` line per package, sorted.
//!
//! Licenses come from the packages' `/usr/share/doc/PACKAGE/copyright` files when those are
//! machine-readable (DEP-5): the `License:` of the `Files: *` stanza, mapped to an SPDX
//! expression only when every term is a well-known license ([`dep5_license`]).
//!
//! Invariant: pure. The caller reads the files (with size caps) and passes their text in.

use std::collections::BTreeMap;

use super::purl_encode;

/// The path of the package list inside a root filesystem.
pub const PACKAGE_LIST_PATH: &str = "etc/kiln-rootfs-packages";

/// At most this many packages are accepted from one list.
pub const MAX_PACKAGES: usize = 20_000;

/// One Debian package installed in a root filesystem.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RootfsPackage {
    pub name: String,
    pub version: String,
    /// `amd64`, `all`, …; absent when the list does not record it.
    pub architecture: Option<String>,
    /// An SPDX license expression, when one could be determined ([`dep5_license`]).
    pub license: Option<String>,
}

impl RootfsPackage {
    /// `pkg:deb/debian/NAME@VERSION?arch=ARCH` (purl spec, type `deb`; version characters
    /// outside `[A-Za-z0-9._~-]` percent-encoded, so an epoch's `:` is `%3A`).
    pub fn purl(&self) -> String {
        let mut purl = format!(
            "pkg:deb/debian/{}@{}",
            purl_encode(&self.name),
            purl_encode(&self.version)
        );
        if let Some(arch) = &self.architecture {
            purl.push_str("?arch=");
            purl.push_str(&purl_encode(arch));
        }
        purl
    }
}

/// The packages of one root filesystem, sorted by name and architecture, each once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RootfsPackages {
    packages: Vec<RootfsPackage>,
}

/// Why a package list was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RootfsPackagesError {
    #[error("line {line}: expected `PACKAGE VERSION [ARCHITECTURE]`")]
    Malformed { line: usize },
    #[error("line {line}: package {name:?} is listed twice")]
    Duplicate { line: usize, name: String },
    #[error("more than {MAX_PACKAGES} packages listed")]
    TooMany,
}

impl RootfsPackages {
    /// Parses the text of `/etc/kiln-rootfs-packages`. Blank lines are skipped; every other
    /// line is `PACKAGE VERSION` or `PACKAGE VERSION ARCHITECTURE` with Debian's characters.
    pub fn parse(text: &str) -> Result<Self, RootfsPackagesError> {
        let mut by_key: BTreeMap<(String, Option<String>), RootfsPackage> = BTreeMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let fields: Vec<&str> = raw.split_ascii_whitespace().collect();
            let (name, version, arch) = match fields[..] {
                [] => continue,
                [n, v] => (n, v, None),
                [n, v, a] => (n, v, Some(a)),
                _ => return Err(RootfsPackagesError::Malformed { line }),
            };
            let name_ok = name.len() >= 2
                && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b));
            let version_ok = version.starts_with(|c: char| c.is_ascii_digit())
                && version
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".+~:-".contains(&b));
            let arch_ok = arch.is_none_or(|a| {
                !a.is_empty()
                    && a.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            });
            if !(name_ok && version_ok && arch_ok) {
                return Err(RootfsPackagesError::Malformed { line });
            }
            let key = (name.to_owned(), arch.map(str::to_owned));
            if by_key.contains_key(&key) {
                return Err(RootfsPackagesError::Duplicate {
                    line,
                    name: name.to_owned(),
                });
            }
            if by_key.len() == MAX_PACKAGES {
                return Err(RootfsPackagesError::TooMany);
            }
            by_key.insert(
                key,
                RootfsPackage {
                    name: name.to_owned(),
                    version: version.to_owned(),
                    architecture: arch.map(str::to_owned),
                    license: None,
                },
            );
        }
        Ok(Self {
            packages: by_key.into_values().collect(),
        })
    }

    /// The packages, sorted by name, then architecture.
    pub fn packages(&self) -> &[RootfsPackage] {
        &self.packages
    }

    /// Sets each package's license from `copyright(name)`, the text of its
    /// `/usr/share/doc/NAME/copyright` when the caller has it ([`dep5_license`]).
    pub fn with_licenses(mut self, mut copyright: impl FnMut(&str) -> Option<String>) -> Self {
        for p in &mut self.packages {
            p.license = copyright(&p.name).and_then(|text| dep5_license(&text));
        }
        self
    }

    pub fn is_empty(&self) -> bool {
        self.packages.is_empty()
    }
}

/// Debian short license names (DEP-5 and common practice) and SPDX ids, with their SPDX ids.
/// Deliberately small: a license outside it is not asserted.
const KNOWN_LICENSES: &[(&str, &str)] = &[
    ("apache-2.0", "Apache-2.0"),
    ("artistic-2.0", "Artistic-2.0"),
    ("bsd-2-clause", "BSD-2-Clause"),
    ("bsd-3-clause", "BSD-3-Clause"),
    ("bsl-1.0", "BSL-1.0"),
    ("cc0-1.0", "CC0-1.0"),
    ("expat", "MIT"),
    ("mit", "MIT"),
    ("gpl-2", "GPL-2.0-only"),
    ("gpl-2.0", "GPL-2.0-only"),
    ("gpl-2.0-only", "GPL-2.0-only"),
    ("gpl-2+", "GPL-2.0-or-later"),
    ("gpl-2.0+", "GPL-2.0-or-later"),
    ("gpl-2.0-or-later", "GPL-2.0-or-later"),
    ("gpl-3", "GPL-3.0-only"),
    ("gpl-3.0", "GPL-3.0-only"),
    ("gpl-3.0-only", "GPL-3.0-only"),
    ("gpl-3+", "GPL-3.0-or-later"),
    ("gpl-3.0+", "GPL-3.0-or-later"),
    ("gpl-3.0-or-later", "GPL-3.0-or-later"),
    ("lgpl-2", "LGPL-2.0-only"),
    ("lgpl-2+", "LGPL-2.0-or-later"),
    ("lgpl-2.1", "LGPL-2.1-only"),
    ("lgpl-2.1-only", "LGPL-2.1-only"),
    ("lgpl-2.1+", "LGPL-2.1-or-later"),
    ("lgpl-2.1-or-later", "LGPL-2.1-or-later"),
    ("lgpl-3", "LGPL-3.0-only"),
    ("lgpl-3.0", "LGPL-3.0-only"),
    ("lgpl-3+", "LGPL-3.0-or-later"),
    ("lgpl-3.0+", "LGPL-3.0-or-later"),
    ("isc", "ISC"),
    ("mpl-2.0", "MPL-2.0"),
    ("zlib", "Zlib"),
];

/// The SPDX id of a known license name, case-insensitively.
fn known_license(name: &str) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    KNOWN_LICENSES
        .iter()
        .find(|(k, _)| *k == lower)
        .map(|(_, id)| *id)
}

/// The SPDX license expression of the `Files: *` stanza of a machine-readable (DEP-5)
/// copyright file, or `None`: when the file is not DEP-5 (no `Format:` naming the
/// copyright-format spec in its first stanza), has no `Files: *` stanza or no `License:` there,
/// or the license is not one of a small list of well-known licenses, or combines them other
/// than with only `or` or only `and` (no exceptions, no parentheses, no mixed precedence).
pub fn dep5_license(text: &str) -> Option<String> {
    let mut stanzas = stanzas(text);
    let header = stanzas.next()?;
    if !field(&header, "format").is_some_and(|f| f.contains("copyright-format")) {
        return None;
    }
    let files_all = stanzas.find(|s| {
        field(s, "files").is_some_and(|f| f.split_ascii_whitespace().eq(std::iter::once("*")))
    })?;
    // Only the synopsis (the first line) names the license; later lines are its text.
    let synopsis = field(&files_all, "license")?
        .lines()
        .next()?
        .trim()
        .to_owned();
    license_expression(&synopsis)
}

/// `A`, `A or B or …`, `A and B and …` over [`KNOWN_LICENSES`] as an SPDX expression.
fn license_expression(synopsis: &str) -> Option<String> {
    let words: Vec<&str> = synopsis.split_ascii_whitespace().collect();
    if words.is_empty() || words.len().is_multiple_of(2) {
        return None;
    }
    let operator = words.get(1).map(|w| w.to_ascii_lowercase());
    let mut ids = Vec::new();
    for (i, w) in words.iter().enumerate() {
        if i % 2 == 1 {
            if Some(w.to_ascii_lowercase()) != operator
                || !matches!(operator.as_deref(), Some("or" | "and"))
            {
                return None;
            }
        } else {
            ids.push(known_license(w)?);
        }
    }
    let joiner = match operator.as_deref() {
        Some("and") => " AND ",
        _ => " OR ",
    };
    Some(ids.join(joiner))
}

/// The stanzas (paragraphs separated by blank lines) of a deb822-style file, each as its
/// fields with lowercased names; continuation lines are appended to their field's value.
fn stanzas(text: &str) -> impl Iterator<Item = Vec<(String, String)>> + '_ {
    let mut lines = text.lines().peekable();
    std::iter::from_fn(move || {
        while lines.peek().is_some_and(|l| l.trim().is_empty()) {
            lines.next();
        }
        lines.peek()?;
        let mut fields: Vec<(String, String)> = Vec::new();
        while let Some(line) = lines.next_if(|l| !l.trim().is_empty()) {
            if line.starts_with([' ', '\t']) {
                if let Some((_, v)) = fields.last_mut() {
                    v.push('\n');
                    v.push_str(line.trim());
                }
            } else if line.starts_with('#') {
                continue;
            } else if let Some((name, value)) = line.split_once(':') {
                fields.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
            }
        }
        Some(fields)
    })
}

fn field<'s>(stanza: &'s [(String, String)], name: &str) -> Option<&'s str> {
    stanza
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &str = "base-files 12.4+deb12u11 amd64\n\
        diffutils 1:3.8-4 amd64\n\
        gcc-12 12.2.0-14+deb12u1 amd64\n\
        \n\
        tzdata 2024a-0+deb12u1 all\n";

    #[test]
    fn parses_the_toolchain_rootfs_list() {
        let p = RootfsPackages::parse(LIST).unwrap();
        let names: Vec<_> = p.packages().iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["base-files", "diffutils", "gcc-12", "tzdata"]);
        let gcc = &p.packages()[2];
        assert_eq!(gcc.version, "12.2.0-14+deb12u1");
        assert_eq!(gcc.architecture.as_deref(), Some("amd64"));
        assert_eq!(
            gcc.purl(),
            "pkg:deb/debian/gcc-12@12.2.0-14%2Bdeb12u1?arch=amd64"
        );
        assert_eq!(
            p.packages()[1].purl(),
            "pkg:deb/debian/diffutils@1%3A3.8-4?arch=amd64"
        );
    }

    #[test]
    fn parses_lines_without_architecture_and_sorts() {
        let p = RootfsPackages::parse("zlib1g 1.2.13\nbash 5.2\n").unwrap();
        assert_eq!(p.packages()[0].name, "bash");
        assert_eq!(p.packages()[0].purl(), "pkg:deb/debian/bash@5.2");
        assert!(RootfsPackages::parse("").unwrap().is_empty());
    }

    #[test]
    fn refuses_malformed_and_duplicate_lines() {
        for (text, line) in [
            ("bash\n", 1),
            ("bash 5.2 amd64 extra\n", 1),
            ("bash 5.2 amd64\nBash 5.2 amd64\n", 2),
            ("bash v5 amd64\n", 1),
            ("bash 5.2 amd64/x\n", 1),
            ("bash 5.2 amd64\nx 1\n", 2),
        ] {
            assert_eq!(
                RootfsPackages::parse(text),
                Err(RootfsPackagesError::Malformed { line }),
                "{text:?}"
            );
        }
        assert_eq!(
            RootfsPackages::parse("bash 5.2 amd64\nbash 5.3 amd64\n"),
            Err(RootfsPackagesError::Duplicate {
                line: 2,
                name: "bash".into()
            })
        );
    }

    const DEP5: &str = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
        Upstream-Name: grep\n\
        \n\
        Files: *\n\
        Copyright: 1992-2023 Free Software Foundation, Inc.\n\
        License: GPL-3+\n \
        This program is free software; you can redistribute it\n \
        .\n \
        under the GPL.\n\
        \n\
        Files: lib/*\n\
        License: LGPL-2.1+\n";

    #[test]
    fn dep5_files_star_license_becomes_an_spdx_id() {
        assert_eq!(dep5_license(DEP5).as_deref(), Some("GPL-3.0-or-later"));
        let or = DEP5.replace("License: GPL-3+", "License: GPL-2+ or Expat");
        assert_eq!(
            dep5_license(&or).as_deref(),
            Some("GPL-2.0-or-later OR MIT")
        );
        let and = DEP5.replace("License: GPL-3+", "License: zlib and BSD-3-clause");
        assert_eq!(dep5_license(&and).as_deref(), Some("Zlib AND BSD-3-Clause"));
    }

    #[test]
    fn unknown_or_unclear_licenses_are_not_asserted() {
        for license in [
            "GPL-3+ with GCC-Runtime-Library-exception-3.1 exception",
            "GPL-2+ or LGPL-2.1+ and MIT",
            "public-domain",
            "GPL-2+ or",
            "(GPL-2+ or MIT)",
            "",
        ] {
            let text = DEP5.replace("License: GPL-3+", &format!("License: {license}"));
            assert_eq!(dep5_license(&text), None, "{license:?}");
        }
        // Not machine-readable: the classic free-form copyright file.
        assert_eq!(
            dep5_license("This is Debian's prepackaged version of GNU grep.\n\nLicense: GPL-3+\n"),
            None
        );
        // No `Files: *` stanza.
        assert_eq!(
            dep5_license(&DEP5.replace("Files: *\n", "Files: src/*\n")),
            None
        );
    }

    #[test]
    fn with_licenses_reads_only_what_the_caller_gives() {
        let p = RootfsPackages::parse(LIST)
            .unwrap()
            .with_licenses(|name| (name == "gcc-12").then(|| DEP5.to_owned()));
        let licensed: Vec<_> = p
            .packages()
            .iter()
            .filter_map(|p| Some((p.name.as_str(), p.license.as_deref()?)))
            .collect();
        assert_eq!(licensed, [("gcc-12", "GPL-3.0-or-later")]);
    }
}
