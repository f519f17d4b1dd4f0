//! Software bills of materials for one artifact of a kiln run: an SPDX 2.3 JSON document
//! ([`spdx`]) and a CycloneDX 1.6 JSON BOM ([`cyclonedx`]), each also signed as an in-toto
//! statement. docs/sbom.md says what each holds and how to validate it.
//!
//! Both are built from the same [`ProvenanceRequest`] as the SLSA provenance, after the same
//! consistency checks, so the SBOMs never list a dependency the provenance does not: the root
//! filesystem of every step, every mirror entry a step read, and every upstream step output a
//! step read, each with its sha256. The artifact is the described package (SPDX) or the
//! metadata component (CycloneDX), generated from / depending on each of them.
//!
//! Invariant: the output depends only on the request's content. Lists are sorted, the only
//! timestamp is the run's finish time, and the SPDX `documentNamespace` and CycloneDX
//! `serialNumber` are derived from the run id and the artifact digest, so the same run always
//! gives the same bytes.
//!
//! The Debian packages inside a root filesystem ([`rootfs`]) are listed when the caller passes
//! them in ([`SbomInputs`]): the daemon reads them from the rootfs's
//! `/etc/kiln-rootfs-packages`, with licenses from DEP-5 copyright files where present.
//!
//! Deliberately absent: any network or file I/O.

pub mod cyclonedx;
pub mod rootfs;
pub mod spdx;

pub use rootfs::{RootfsPackage, RootfsPackages, RootfsPackagesError};

use std::collections::BTreeMap;

use kiln_core::{BlobKind, InputSource, MirrorInput, Sha256Digest};
use serde::Serialize;
use time::{OffsetDateTime, UtcOffset};

use crate::attestation::{SignError, sign_statement, to_jsonl};
use crate::intoto::{DigestSet, ResourceDescriptor, STATEMENT_TYPE, Statement};
use crate::keys::KeyPair;
use crate::provenance::{
    ProvenanceError, ProvenanceRequest, checked_steps, encode_uri_path, mirror_uri, step_output_uri,
};

/// `ARTIFACT.spdx.json`: the SPDX 2.3 JSON document.
pub fn spdx_file_name(artifact_name: &str) -> String {
    format!("{artifact_name}.spdx.json")
}

/// `ARTIFACT.cdx.json`: the CycloneDX 1.6 JSON BOM.
pub fn cyclonedx_file_name(artifact_name: &str) -> String {
    format!("{artifact_name}.cdx.json")
}

/// `ARTIFACT.spdx.intoto.jsonl`: the SPDX document signed as an in-toto statement.
pub fn spdx_attestation_file_name(artifact_name: &str) -> String {
    format!("{artifact_name}.spdx.intoto.jsonl")
}

/// `ARTIFACT.cdx.intoto.jsonl`: the CycloneDX BOM signed as an in-toto statement.
pub fn cyclonedx_attestation_file_name(artifact_name: &str) -> String {
    format!("{artifact_name}.cdx.intoto.jsonl")
}

/// Both SBOMs of one artifact.
#[derive(Clone, Debug, PartialEq)]
pub struct Sboms {
    pub spdx: spdx::Document,
    pub cyclonedx: cyclonedx::Bom,
}

/// The contents of the four SBOM files written beside an artifact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SbomFiles {
    /// `ARTIFACT.spdx.json`.
    pub spdx: String,
    /// `ARTIFACT.spdx.intoto.jsonl`: one DSSE envelope, one line.
    pub spdx_attestation: String,
    /// `ARTIFACT.cdx.json`.
    pub cyclonedx: String,
    /// `ARTIFACT.cdx.intoto.jsonl`: one DSSE envelope, one line.
    pub cyclonedx_attestation: String,
}

/// What the SBOMs list beyond the step records: read by the caller, passed in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SbomInputs {
    /// The packages of root filesystems, by the rootfs's digest. A rootfs of the request that
    /// is not here is listed without packages; entries for other digests are ignored.
    pub rootfs_packages: BTreeMap<Sha256Digest, RootfsPackages>,
}

/// Builds both SBOMs for `req.artifact`, refusing the same inconsistent inputs as
/// [`crate::build_statement`]. Lists no rootfs packages; see [`build_sboms_with`].
pub fn build_sboms(req: &ProvenanceRequest<'_>) -> Result<Sboms, ProvenanceError> {
    build_sboms_with(req, &SbomInputs::default())
}

/// Like [`build_sboms`], also listing the packages of each root filesystem in `inputs`.
pub fn build_sboms_with(
    req: &ProvenanceRequest<'_>,
    inputs: &SbomInputs,
) -> Result<Sboms, ProvenanceError> {
    let mut deps = resolve(req)?;
    for dep in &mut deps.deps {
        if dep.role == Role::Rootfs
            && let Some(p) = inputs.rootfs_packages.get(&dep.sha256)
        {
            dep.packages = p.packages().to_vec();
        }
    }
    Ok(Sboms {
        spdx: spdx::build(req, &deps),
        cyclonedx: cyclonedx::build(req, &deps),
    })
}

impl Sboms {
    /// The SPDX document as an in-toto statement about the artifact
    /// (predicate type [`spdx::PREDICATE_TYPE`]).
    pub fn spdx_statement(&self, req: &ProvenanceRequest<'_>) -> Statement<&spdx::Document> {
        statement(req, spdx::PREDICATE_TYPE, &self.spdx)
    }

    /// The CycloneDX BOM as an in-toto statement about the artifact
    /// (predicate type [`cyclonedx::PREDICATE_TYPE`]).
    pub fn cyclonedx_statement(&self, req: &ProvenanceRequest<'_>) -> Statement<&cyclonedx::Bom> {
        statement(req, cyclonedx::PREDICATE_TYPE, &self.cyclonedx)
    }

    /// Renders both SBOMs (pretty JSON, ending in a newline) and signs each as an in-toto
    /// statement with `key`.
    pub fn to_files(
        &self,
        req: &ProvenanceRequest<'_>,
        key: &KeyPair,
    ) -> Result<SbomFiles, SignError> {
        let spdx_env = sign_statement(&self.spdx_statement(req), key)?;
        let cdx_env = sign_statement(&self.cyclonedx_statement(req), key)?;
        Ok(SbomFiles {
            spdx: to_pretty_json(&self.spdx)?,
            spdx_attestation: to_jsonl(&[spdx_env])?,
            cyclonedx: to_pretty_json(&self.cyclonedx)?,
            cyclonedx_attestation: to_jsonl(&[cdx_env])?,
        })
    }
}

fn statement<P>(req: &ProvenanceRequest<'_>, predicate_type: &str, predicate: P) -> Statement<P> {
    Statement {
        statement_type: STATEMENT_TYPE.to_owned(),
        subject: vec![ResourceDescriptor {
            name: Some(req.artifact.name.clone()),
            digest: DigestSet::sha256(req.artifact.sha256),
            ..Default::default()
        }],
        predicate_type: predicate_type.to_owned(),
        predicate,
    }
}

fn to_pretty_json<T: Serialize>(v: &T) -> Result<String, SignError> {
    let mut text = serde_json::to_string_pretty(v).map_err(SignError::Encode)?;
    text.push('\n');
    Ok(text)
}

/// What a dependency is to the artifact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// A mirror entry some step ran in as its root filesystem.
    Rootfs,
    /// A mirror entry staged as a directory.
    MirrorTree,
    /// A mirror entry staged as a single file.
    MirrorFile,
    /// An output file of an upstream step of the same run.
    StepOutput,
    /// A commit of a git mirror, staged as a directory at `/src`.
    GitSource,
}

impl Role {
    /// The `kiln:kind` property value.
    pub(crate) fn kind(self) -> &'static str {
        match self {
            Self::Rootfs => "rootfs",
            Self::MirrorTree => "tree",
            Self::MirrorFile => "file",
            Self::StepOutput => "step-output",
            Self::GitSource => "git",
        }
    }
}

/// One resolved dependency of the artifact, as both SBOMs list it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Dependency {
    /// The same `kiln:` URI the provenance's `resolvedDependencies` use; unique per dependency.
    pub uri: String,
    /// The mirror entry's name, or `STEP/PATH` for a step output.
    pub name: String,
    /// The mirror entry's version; step outputs have none.
    pub version: Option<String>,
    pub sha256: Sha256Digest,
    pub role: Role,
    /// `pkg:generic/NAME@VERSION?checksum=sha256:HEX` for mirror entries.
    pub purl: Option<String>,
    /// For a mirror entry of kind file, the name it is staged under.
    pub file_name: Option<String>,
    /// For a root filesystem, the Debian packages it contains (sorted), when known.
    pub packages: Vec<RootfsPackage>,
}

/// The checked inputs of both SBOMs.
pub(crate) struct Resolved {
    /// Sorted by `uri`, each once.
    pub deps: Vec<Dependency>,
    /// The run's finish time, in UTC, to the second (SPDX allows no fraction).
    pub created: OffsetDateTime,
}

impl Resolved {
    /// `created` as `YYYY-MM-DDThh:mm:ssZ`, the form both formats accept.
    pub(crate) fn created_text(&self) -> String {
        let t = self.created;
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        )
    }
}

fn resolve(req: &ProvenanceRequest<'_>) -> Result<Resolved, ProvenanceError> {
    let steps = checked_steps(req)?;
    let mut deps: BTreeMap<String, Dependency> = BTreeMap::new();
    for rec in steps.values() {
        insert(&mut deps, mirror_dependency(&rec.rootfs, true))?;
        for input in &rec.inputs {
            match &input.source {
                InputSource::Mirror(m) => insert(&mut deps, mirror_dependency(m, false))?,
                InputSource::Git(g) => insert(
                    &mut deps,
                    Dependency {
                        uri: crate::provenance::git_uri(g),
                        name: input.mount_name.clone(),
                        version: Some(g.commit.clone()),
                        sha256: g.sha256,
                        role: Role::GitSource,
                        purl: None,
                        file_name: None,
                        packages: Vec::new(),
                    },
                )?,
                InputSource::Step { step, outputs } => {
                    for out in outputs {
                        insert(
                            &mut deps,
                            Dependency {
                                uri: step_output_uri(step, &out.path),
                                name: format!("{step}/{}", out.path),
                                version: None,
                                sha256: out.sha256,
                                role: Role::StepOutput,
                                purl: None,
                                file_name: None,
                                packages: Vec::new(),
                            },
                        )?;
                    }
                }
            }
        }
    }
    let created = req.finished_on.to_offset(UtcOffset::UTC);
    Ok(Resolved {
        deps: deps.into_values().collect(),
        created: created.replace_nanosecond(0).unwrap_or(created),
    })
}

/// Adds `dep` once; the same URI with other contents is refused. A mirror entry used both as a
/// root filesystem and as an input is listed once, as a root filesystem.
fn insert(deps: &mut BTreeMap<String, Dependency>, dep: Dependency) -> Result<(), ProvenanceError> {
    match deps.get_mut(&dep.uri) {
        None => {
            deps.insert(dep.uri.clone(), dep);
            Ok(())
        }
        Some(existing) => {
            let rootfs_either = existing.role == Role::Rootfs || dep.role == Role::Rootfs;
            let same = existing.sha256 == dep.sha256
                && existing.file_name == dep.file_name
                && (existing.role == dep.role
                    || (rootfs_either && [existing.role, dep.role].contains(&Role::MirrorTree)));
            if !same {
                return Err(ProvenanceError::ConflictingDependency { uri: dep.uri });
            }
            if dep.role == Role::Rootfs {
                existing.role = Role::Rootfs;
            }
            Ok(())
        }
    }
}

fn mirror_dependency(input: &MirrorInput, rootfs: bool) -> Dependency {
    let (role, file_name) = match &input.kind {
        BlobKind::Tree if rootfs => (Role::Rootfs, None),
        BlobKind::Tree => (Role::MirrorTree, None),
        BlobKind::File { file_name } => (Role::MirrorFile, Some(file_name.clone())),
    };
    let name = input.reference.name().to_owned();
    let version = input.reference.version().to_owned();
    Dependency {
        uri: mirror_uri(input),
        purl: Some(generic_purl(&name, &version, input.sha256)),
        name,
        version: Some(version),
        sha256: input.sha256,
        role,
        file_name,
        packages: Vec::new(),
    }
}

/// `pkg:generic/NAME@VERSION?checksum=sha256:HEX` (purl spec, type `generic`).
pub(crate) fn generic_purl(name: &str, version: &str, sha256: Sha256Digest) -> String {
    format!(
        "pkg:generic/{}@{}?checksum=sha256:{sha256}",
        purl_encode(name),
        purl_encode(version)
    )
}

/// Percent-encodes all but RFC 3986 unreserved characters, as purl components require
/// (a version's `+` becomes `%2B`).
fn purl_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A name-based identifier for this run's SBOM of this artifact:
/// `https://kiln.dev/sbom/RUN/SHA256`.
pub(crate) fn document_uri(req: &ProvenanceRequest<'_>) -> String {
    format!(
        "https://kiln.dev/sbom/{}/{}",
        encode_uri_path(&req.invocation_id).replace('/', "%2F"),
        req.artifact.sha256
    )
}

/// Short, stable hex tag of `text`, for identifiers that must be unique but stay readable.
pub(crate) fn short_hash(text: &str) -> String {
    Sha256Digest::of(text.as_bytes()).to_string()[..12].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provenance::tests::{mirror, request, three_steps};
    use kiln_core::{MirrorRef, StagedInput, StepRecord};

    #[test]
    fn dependencies_match_the_provenance_and_carry_purls() {
        let steps = three_steps();
        let req = request(&steps);
        let resolved = resolve(&req).unwrap();
        let statement = crate::build_statement(&req).unwrap();
        let prov_uris: Vec<_> = statement
            .predicate
            .build_definition
            .resolved_dependencies
            .iter()
            .map(|d| d.uri.clone().unwrap())
            .collect();
        let uris: Vec<_> = resolved.deps.iter().map(|d| d.uri.clone()).collect();
        assert_eq!(uris, prov_uris);
        let rootfs = &resolved.deps[0];
        assert_eq!(rootfs.role, Role::Rootfs);
        assert_eq!(rootfs.name, "debian-rootfs");
        assert_eq!(rootfs.version.as_deref(), Some("12.5"));
        assert_eq!(
            rootfs.purl.as_deref().unwrap(),
            format!(
                "pkg:generic/debian-rootfs@12.5?checksum=sha256:{}",
                rootfs.sha256
            )
        );
        let out = resolved.deps.last().unwrap();
        assert_eq!(out.role, Role::StepOutput);
        assert_eq!(out.name, "fetch/src/hello.c");
        assert_eq!(out.purl, None);
        assert_eq!(resolved.created_text(), "2025-01-01T00:05:00Z");
    }

    fn with_packages(steps: &[StepRecord]) -> SbomInputs {
        let dep5 = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n\
                    Files: *\nLicense: GPL-2+ or Expat\n";
        let packages =
            RootfsPackages::parse("gcc-12 12.2.0-14+deb12u1 amd64\nbash 5.2.15-2+b8 amd64\n")
                .unwrap()
                .with_licenses(|name| (name == "bash").then(|| dep5.to_owned()));
        SbomInputs {
            rootfs_packages: [(steps[0].rootfs.sha256, packages)].into(),
        }
    }

    #[test]
    fn rootfs_packages_are_contained_in_the_rootfs_in_both_formats() {
        let steps = three_steps();
        let req = request(&steps);
        let sboms = build_sboms_with(&req, &with_packages(&steps)).unwrap();
        let plain = build_sboms(&req).unwrap();

        let doc = &sboms.spdx;
        assert_eq!(doc.packages.len(), plain.spdx.packages.len() + 2);
        let rootfs = doc
            .packages
            .iter()
            .find(|p| p.name == "debian-rootfs")
            .unwrap();
        let contained: Vec<_> = doc
            .relationships
            .iter()
            .filter(|r| r.relationship_type == spdx::RelationshipType::Contains)
            .collect();
        assert_eq!(contained.len(), 2);
        for rel in &contained {
            assert_eq!(rel.spdx_element_id, rootfs.spdx_id);
            assert!(
                doc.packages
                    .iter()
                    .any(|p| p.spdx_id == rel.related_spdx_element)
            );
        }
        let bash = doc.packages.iter().find(|p| p.name == "bash").unwrap();
        assert_eq!(bash.license_declared, "GPL-2.0-or-later OR MIT");
        assert_eq!(bash.license_concluded, "NOASSERTION");
        assert_eq!(
            bash.external_refs[0].reference_locator,
            "pkg:deb/debian/bash@5.2.15-2%2Bb8?arch=amd64"
        );
        let gcc = doc.packages.iter().find(|p| p.name == "gcc-12").unwrap();
        assert_eq!(gcc.license_declared, "NOASSERTION");
        assert_eq!(gcc.version_info.as_deref(), Some("12.2.0-14+deb12u1"));

        let bom = &sboms.cyclonedx;
        assert_eq!(bom.components.len(), plain.cyclonedx.components.len());
        let rootfs = &bom.components[0];
        assert_eq!(rootfs.name, "debian-rootfs");
        let nested: Vec<_> = rootfs.components.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(nested, ["bash", "gcc-12"]);
        let v = serde_json::to_value(&rootfs.components[0]).unwrap();
        assert_eq!(v["licenses"][0]["expression"], "GPL-2.0-or-later OR MIT");
        assert_eq!(v["type"], "library");
        assert_eq!(v["purl"], "pkg:deb/debian/bash@5.2.15-2%2Bb8?arch=amd64");
        assert!(serde_json::to_value(&rootfs.components[1]).unwrap()["licenses"].is_null());
    }

    #[test]
    fn packages_of_another_rootfs_are_ignored() {
        let steps = three_steps();
        let mut inputs = with_packages(&steps);
        let p = inputs.rootfs_packages.pop_first().unwrap().1;
        inputs.rootfs_packages.insert(Sha256Digest::of(b"other"), p);
        let req = request(&steps);
        assert_eq!(
            build_sboms_with(&req, &inputs).unwrap(),
            build_sboms(&req).unwrap()
        );
    }

    #[test]
    fn purl_percent_encodes_version_plus() {
        assert_eq!(
            generic_purl("zlib", "1.3+dfsg-1", Sha256Digest::of(b"z")),
            format!(
                "pkg:generic/zlib@1.3%2Bdfsg-1?checksum=sha256:{}",
                Sha256Digest::of(b"z")
            )
        );
    }

    #[test]
    fn refuses_same_mirror_reference_with_two_digests() {
        let mut steps = three_steps();
        let mut other = mirror("gcc-toolchain@12", BlobKind::Tree);
        other.sha256 = Sha256Digest::of(b"another toolchain");
        steps[2].inputs.push(StagedInput {
            mount_name: "tc".into(),
            source: InputSource::Mirror(other),
        });
        assert_eq!(
            build_sboms(&request(&steps)).unwrap_err(),
            ProvenanceError::ConflictingDependency {
                uri: "kiln:mirror/gcc-toolchain@12".into()
            }
        );
    }

    #[test]
    fn refuses_what_the_provenance_refuses() {
        let steps = three_steps();
        assert!(matches!(
            build_sboms(&request(&steps[1..])),
            Err(ProvenanceError::MissingUpstream { .. })
        ));
    }

    #[test]
    fn rootfs_also_staged_as_input_is_listed_once_as_rootfs() {
        let mut steps = three_steps();
        let rootfs = steps[0].rootfs.clone();
        assert_eq!(
            rootfs.reference,
            "debian-rootfs@12.5".parse::<MirrorRef>().unwrap()
        );
        steps[2].inputs.push(StagedInput {
            mount_name: "sysroot".into(),
            source: InputSource::Mirror(rootfs),
        });
        let resolved = resolve(&request(&steps)).unwrap();
        let matching: Vec<_> = resolved
            .deps
            .iter()
            .filter(|d| d.name == "debian-rootfs")
            .collect();
        assert_eq!(matching.len(), 1);
        assert_eq!(matching[0].role, Role::Rootfs);
    }
}
