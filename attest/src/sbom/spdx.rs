//! SPDX 2.3 JSON (<https://spdx.github.io/spdx-spec/v2.3/>): the wire types kiln writes and
//! how it fills them.
//!
//! Only the fields kiln fills are modelled; field names follow the SPDX 2.3 JSON schema, and
//! unknown fields are ignored when reading. The artifact is the package the document
//! describes; each dependency is a package the artifact is `GENERATED_FROM`.

use serde::{Deserialize, Serialize};

use super::{Dependency, Resolved, Role, RootfsPackage, document_uri, short_hash};
use crate::provenance::ProvenanceRequest;

/// `spdxVersion`.
pub const SPDX_VERSION: &str = "SPDX-2.3";

/// The in-toto `predicateType` of an SPDX 2.3 document (in-toto attestation spec,
/// predicates/spdx.md).
pub const PREDICATE_TYPE: &str = "https://spdx.dev/Document/v2.3";

/// `dataLicense`: SPDX documents are licensed CC0-1.0, always.
pub const DATA_LICENSE: &str = "CC0-1.0";

/// The value SPDX uses for "the author of this document makes no assertion".
pub const NOASSERTION: &str = "NOASSERTION";

/// The `SPDXID` of the document itself.
pub const DOCUMENT_ID: &str = "SPDXRef-DOCUMENT";

/// The `SPDXID` of the artifact's package.
pub const ARTIFACT_ID: &str = "SPDXRef-Artifact";

/// An SPDX 2.3 document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Document {
    #[serde(rename = "SPDXID")]
    pub spdx_id: String,
    pub spdx_version: String,
    pub data_license: String,
    pub name: String,
    pub document_namespace: String,
    pub creation_info: CreationInfo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default)]
    pub document_describes: Vec<String>,
    #[serde(default)]
    pub packages: Vec<Package>,
    #[serde(default)]
    pub relationships: Vec<Relationship>,
}

/// Who made the document, and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreationInfo {
    /// `YYYY-MM-DDThh:mm:ssZ`.
    pub created: String,
    /// `Tool: NAME-VERSION`, `Organization: NAME` or `Person: NAME`.
    pub creators: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// An SPDX package.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Package {
    #[serde(rename = "SPDXID")]
    pub spdx_id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_info: Option<String>,
    pub download_location: String,
    pub files_analyzed: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checksums: Vec<Checksum>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external_refs: Vec<ExternalRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_package_purpose: Option<PackagePurpose>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub built_date: Option<String>,
    pub license_concluded: String,
    pub license_declared: String,
    pub copyright_text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// A checksum of a package.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Checksum {
    pub algorithm: ChecksumAlgorithm,
    /// Lowercase hex.
    pub checksum_value: String,
}

/// The checksum algorithms kiln writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChecksumAlgorithm {
    #[serde(rename = "SHA256")]
    Sha256,
}

/// An external reference of a package, e.g. its package URL.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExternalRef {
    pub reference_category: ReferenceCategory,
    pub reference_type: String,
    pub reference_locator: String,
}

/// `referenceCategory` values kiln writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReferenceCategory {
    /// With `referenceType` `purl`.
    #[serde(rename = "PACKAGE-MANAGER", alias = "PACKAGE_MANAGER")]
    PackageManager,
    /// With `referenceType` `kiln`: the dependency's `kiln:` URI, as in the provenance.
    #[serde(rename = "OTHER")]
    Other,
}

/// `primaryPackagePurpose` values kiln writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PackagePurpose {
    #[serde(rename = "OPERATING-SYSTEM")]
    OperatingSystem,
    #[serde(rename = "ARCHIVE")]
    Archive,
    #[serde(rename = "FILE")]
    File,
}

/// A relationship between two SPDX elements.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Relationship {
    pub spdx_element_id: String,
    pub relationship_type: RelationshipType,
    pub related_spdx_element: String,
}

/// `relationshipType` values kiln writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RelationshipType {
    /// The document describes the artifact.
    #[serde(rename = "DESCRIBES")]
    Describes,
    /// The artifact was generated from a dependency.
    #[serde(rename = "GENERATED_FROM")]
    GeneratedFrom,
    /// A root filesystem contains a Debian package.
    #[serde(rename = "CONTAINS")]
    Contains,
}

/// The `referenceType` of the OTHER external reference holding a dependency's `kiln:` URI.
pub const KILN_URI_REFERENCE_TYPE: &str = "kiln";

pub(crate) fn build(req: &ProvenanceRequest<'_>, resolved: &Resolved) -> Document {
    let created = resolved.created_text();
    let tool = match &req.builder.version {
        Some(v) => format!("Tool: kiln-{v}"),
        None => "Tool: kiln".to_owned(),
    };
    let mut packages = vec![Package {
        spdx_id: ARTIFACT_ID.to_owned(),
        name: req.artifact.name.clone(),
        version_info: None,
        download_location: NOASSERTION.to_owned(),
        files_analyzed: false,
        checksums: vec![sha256(&req.artifact.sha256.to_string())],
        external_refs: Vec::new(),
        primary_package_purpose: Some(PackagePurpose::File),
        built_date: Some(created.clone()),
        license_concluded: NOASSERTION.to_owned(),
        license_declared: NOASSERTION.to_owned(),
        copyright_text: NOASSERTION.to_owned(),
        comment: Some(format!(
            "Built by kiln run {} of pipeline {:?}.",
            req.invocation_id, req.pipeline.name
        )),
    }];
    let mut relationships = vec![Relationship {
        spdx_element_id: DOCUMENT_ID.to_owned(),
        relationship_type: RelationshipType::Describes,
        related_spdx_element: ARTIFACT_ID.to_owned(),
    }];
    let mut contained = Vec::new();
    for dep in &resolved.deps {
        let package = dependency_package(dep);
        relationships.push(Relationship {
            spdx_element_id: ARTIFACT_ID.to_owned(),
            relationship_type: RelationshipType::GeneratedFrom,
            related_spdx_element: package.spdx_id.clone(),
        });
        for p in &dep.packages {
            let deb = debian_package(dep, p);
            relationships.push(Relationship {
                spdx_element_id: package.spdx_id.clone(),
                relationship_type: RelationshipType::Contains,
                related_spdx_element: deb.spdx_id.clone(),
            });
            contained.push(deb);
        }
        packages.push(package);
    }
    // The dependencies first, then the packages inside root filesystems.
    packages.extend(contained);
    Document {
        spdx_id: DOCUMENT_ID.to_owned(),
        spdx_version: SPDX_VERSION.to_owned(),
        data_license: DATA_LICENSE.to_owned(),
        name: req.artifact.name.clone(),
        document_namespace: document_uri(req),
        creation_info: CreationInfo {
            created,
            creators: vec![tool],
            comment: Some(format!(
                "Builder {}; pipeline {:?}, file sha256:{}; run {}.",
                req.builder.id, req.pipeline.name, req.pipeline.sha256, req.invocation_id
            )),
        },
        comment: None,
        document_describes: vec![ARTIFACT_ID.to_owned()],
        packages,
        relationships,
    }
}

fn dependency_package(dep: &Dependency) -> Package {
    let purpose = match dep.role {
        Role::Rootfs => PackagePurpose::OperatingSystem,
        Role::MirrorTree | Role::GitSource => PackagePurpose::Archive,
        Role::MirrorFile | Role::StepOutput => PackagePurpose::File,
    };
    let mut external_refs = Vec::new();
    if let Some(purl) = &dep.purl {
        external_refs.push(ExternalRef {
            reference_category: ReferenceCategory::PackageManager,
            reference_type: "purl".to_owned(),
            reference_locator: purl.clone(),
        });
    }
    external_refs.push(ExternalRef {
        reference_category: ReferenceCategory::Other,
        reference_type: KILN_URI_REFERENCE_TYPE.to_owned(),
        reference_locator: dep.uri.clone(),
    });
    let comment = match (dep.role, &dep.file_name) {
        (Role::Rootfs, _) => "kiln mirror entry: the root filesystem of a step".to_owned(),
        (Role::MirrorTree, _) => "kiln mirror entry, staged as a directory".to_owned(),
        (Role::MirrorFile, Some(f)) => format!("kiln mirror entry, staged as the file {f:?}"),
        (Role::MirrorFile, None) => "kiln mirror entry, staged as a file".to_owned(),
        (Role::StepOutput, _) => "output of an upstream step of the same run".to_owned(),
        (Role::GitSource, _) => "commit of a kiln git mirror, staged as a directory".to_owned(),
    };
    Package {
        spdx_id: spdx_id(dep),
        name: dep.name.clone(),
        version_info: dep.version.clone(),
        download_location: NOASSERTION.to_owned(),
        files_analyzed: false,
        checksums: vec![sha256(&dep.sha256.to_string())],
        external_refs,
        primary_package_purpose: Some(purpose),
        built_date: None,
        license_concluded: NOASSERTION.to_owned(),
        license_declared: NOASSERTION.to_owned(),
        copyright_text: NOASSERTION.to_owned(),
        comment: Some(comment),
    }
}

/// A Debian package inside the root filesystem `rootfs`: its purl, and its license as declared
/// in its DEP-5 copyright file when kiln could map it to an SPDX expression. kiln concludes
/// nothing about licenses itself, so `licenseConcluded` is always `NOASSERTION`.
fn debian_package(rootfs: &Dependency, p: &RootfsPackage) -> Package {
    let purl = p.purl();
    let arch = p.architecture.as_deref().unwrap_or("-");
    Package {
        spdx_id: format!(
            "SPDXRef-Deb-{}-{}-{}",
            id_chars(&p.name),
            id_chars(arch),
            short_hash(&format!("{} {purl}", rootfs.uri))
        ),
        name: p.name.clone(),
        version_info: Some(p.version.clone()),
        download_location: NOASSERTION.to_owned(),
        files_analyzed: false,
        checksums: Vec::new(),
        external_refs: vec![ExternalRef {
            reference_category: ReferenceCategory::PackageManager,
            reference_type: "purl".to_owned(),
            reference_locator: purl,
        }],
        primary_package_purpose: None,
        built_date: None,
        license_concluded: NOASSERTION.to_owned(),
        license_declared: p.license.clone().unwrap_or_else(|| NOASSERTION.to_owned()),
        copyright_text: NOASSERTION.to_owned(),
        comment: Some(format!(
            "Debian package installed in the root filesystem {}",
            rootfs.uri
        )),
    }
}

/// `s` with every character SPDX ids do not allow replaced by `-`.
fn id_chars(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

fn sha256(hex: &str) -> Checksum {
    Checksum {
        algorithm: ChecksumAlgorithm::Sha256,
        checksum_value: hex.to_owned(),
    }
}

/// `SPDXRef-ROLE-NAME-TAG`: the name with every character SPDX ids do not allow replaced by
/// `-`, and a tag hashed from the unique URI so two names that map alike stay distinct.
fn spdx_id(dep: &Dependency) -> String {
    let prefix = match dep.role {
        Role::StepOutput => "Output",
        _ => "Mirror",
    };
    let mut readable: String = dep
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if let Some(v) = &dep.version {
        readable.push('-');
        readable.extend(v.chars().map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        }));
    }
    format!("SPDXRef-{prefix}-{readable}-{}", short_hash(&dep.uri))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provenance::tests::{request, three_steps};
    use crate::sbom::build_sboms;

    #[test]
    fn artifact_is_described_and_generated_from_every_dependency() {
        let steps = three_steps();
        let doc = build_sboms(&request(&steps)).unwrap().spdx;
        assert_eq!(doc.spdx_version, "SPDX-2.3");
        assert_eq!(doc.document_describes, [ARTIFACT_ID]);
        assert_eq!(doc.packages.len(), 6);
        assert_eq!(doc.relationships.len(), 6);
        assert_eq!(
            doc.relationships[0].relationship_type,
            RelationshipType::Describes
        );
        for (rel, pkg) in doc.relationships[1..].iter().zip(&doc.packages[1..]) {
            assert_eq!(rel.spdx_element_id, ARTIFACT_ID);
            assert_eq!(rel.relationship_type, RelationshipType::GeneratedFrom);
            assert_eq!(rel.related_spdx_element, pkg.spdx_id);
            assert!(
                pkg.spdx_id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'),
                "{}",
                pkg.spdx_id
            );
        }
        let toolchain = doc
            .packages
            .iter()
            .find(|p| p.name == "gcc-toolchain")
            .unwrap();
        assert_eq!(toolchain.version_info.as_deref(), Some("12"));
        assert_eq!(
            toolchain.primary_package_purpose,
            Some(PackagePurpose::Archive)
        );
        assert_eq!(toolchain.external_refs[0].reference_type, "purl");
        assert_eq!(
            doc.document_namespace,
            format!(
                "https://kiln.dev/sbom/0190b6f2-0000-7000-8000-000000000000/{}",
                request(&steps).artifact.sha256
            )
        );
    }

    #[test]
    fn serialises_with_spec_field_names() {
        let steps = three_steps();
        let v = serde_json::to_value(build_sboms(&request(&steps)).unwrap().spdx).unwrap();
        assert_eq!(v["SPDXID"], "SPDXRef-DOCUMENT");
        assert_eq!(v["dataLicense"], "CC0-1.0");
        assert_eq!(v["creationInfo"]["created"], "2025-01-01T00:05:00Z");
        assert_eq!(v["creationInfo"]["creators"][0], "Tool: kiln-0.1.0");
        assert_eq!(v["packages"][1]["checksums"][0]["algorithm"], "SHA256");
        assert_eq!(
            v["packages"][1]["externalRefs"][0]["referenceCategory"],
            "PACKAGE-MANAGER"
        );
        assert_eq!(v["relationships"][1]["relationshipType"], "GENERATED_FROM");
    }
}
