//! CycloneDX 1.6 JSON (<https://cyclonedx.org/docs/1.6/json/>): the wire types kiln writes and
//! how it fills them.
//!
//! Only the fields kiln fills are modelled; names follow the CycloneDX 1.6 JSON schema, which
//! allows no other properties. The artifact is `metadata.component`; each dependency is a
//! component the artifact `dependsOn`.

use serde::{Deserialize, Serialize};

use super::{Dependency, Resolved, Role, RootfsPackage, document_uri};
use crate::provenance::ProvenanceRequest;

/// `bomFormat`.
pub const BOM_FORMAT: &str = "CycloneDX";

/// `specVersion`.
pub const SPEC_VERSION: &str = "1.6";

/// The in-toto `predicateType` of a CycloneDX 1.6 BOM (in-toto attestation spec,
/// predicates/cyclonedx.md).
pub const PREDICATE_TYPE: &str = "https://cyclonedx.org/bom/v1.6";

/// A CycloneDX 1.6 BOM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bom {
    pub bom_format: String,
    pub spec_version: String,
    /// `urn:uuid:…`, derived from the run id and the artifact digest.
    pub serial_number: String,
    pub version: u32,
    pub metadata: Metadata,
    #[serde(default)]
    pub components: Vec<Component>,
    #[serde(default)]
    pub dependencies: Vec<DependencyNode>,
}

/// Who made the BOM, when, and about what.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// `YYYY-MM-DDThh:mm:ssZ`: when the run finished.
    pub timestamp: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lifecycles: Vec<Lifecycle>,
    pub tools: Tools,
    /// The artifact.
    pub component: Component,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub properties: Vec<Property>,
}

/// A lifecycle phase the BOM was made in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifecycle {
    pub phase: LifecyclePhase,
}

/// `metadata.lifecycles[].phase` values kiln writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LifecyclePhase {
    Build,
}

/// The tools that made the BOM (the 1.5+ object form).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tools {
    pub components: Vec<Component>,
}

/// A component: the artifact, a dependency, or a tool.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Component {
    #[serde(rename = "type")]
    pub component_type: ComponentType,
    #[serde(rename = "bom-ref", default, skip_serializing_if = "Option::is_none")]
    pub bom_ref: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hashes: Vec<Hash>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub licenses: Vec<LicenseChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purl: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub properties: Vec<Property>,
    /// Components inside this one: the Debian packages of a root filesystem.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<Component>,
}

/// One entry of `licenses`: a single SPDX license id, or an SPDX expression.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LicenseChoice {
    License { license: License },
    Expression { expression: String },
}

/// A license named by its SPDX id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct License {
    pub id: String,
}

/// `component.type` values kiln writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ComponentType {
    Application,
    Library,
    OperatingSystem,
    File,
}

/// A hash of a component.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hash {
    pub alg: HashAlgorithm,
    /// Lowercase hex.
    pub content: String,
}

/// Hash algorithms kiln writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HashAlgorithm {
    #[serde(rename = "SHA-256")]
    Sha256,
}

/// A name-value pair; kiln's names start with `kiln:`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Property {
    pub name: String,
    pub value: String,
}

/// One node of the dependency graph.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DependencyNode {
    #[serde(rename = "ref")]
    pub reference: String,
    #[serde(rename = "dependsOn", default)]
    pub depends_on: Vec<String>,
}

/// The `bom-ref` of the artifact: `kiln:artifact/NAME`.
pub fn artifact_ref(name: &str) -> String {
    format!("kiln:artifact/{}", crate::provenance::encode_uri_path(name))
}

pub(crate) fn build(req: &ProvenanceRequest<'_>, resolved: &Resolved) -> Bom {
    let artifact_ref = artifact_ref(&req.artifact.name);
    let components: Vec<Component> = resolved.deps.iter().map(dependency_component).collect();
    let mut dependencies = vec![DependencyNode {
        reference: artifact_ref.clone(),
        depends_on: resolved.deps.iter().map(|d| d.uri.clone()).collect(),
    }];
    // Every component is a node, so a reader can tell "depends on nothing kiln knows of" from
    // "not described".
    dependencies.extend(resolved.deps.iter().map(|d| DependencyNode {
        reference: d.uri.clone(),
        depends_on: Vec::new(),
    }));
    let prop = |name: &str, value: String| Property {
        name: name.to_owned(),
        value,
    };
    Bom {
        bom_format: BOM_FORMAT.to_owned(),
        spec_version: SPEC_VERSION.to_owned(),
        serial_number: serial_number(&document_uri(req)),
        version: 1,
        metadata: Metadata {
            timestamp: resolved.created_text(),
            lifecycles: vec![Lifecycle {
                phase: LifecyclePhase::Build,
            }],
            tools: Tools {
                components: vec![Component {
                    component_type: ComponentType::Application,
                    bom_ref: None,
                    name: "kiln".to_owned(),
                    version: req.builder.version.clone(),
                    hashes: Vec::new(),
                    licenses: Vec::new(),
                    purl: None,
                    properties: Vec::new(),
                    components: Vec::new(),
                }],
            },
            component: Component {
                component_type: ComponentType::File,
                bom_ref: Some(artifact_ref),
                name: req.artifact.name.clone(),
                version: None,
                hashes: vec![sha256(&req.artifact.sha256.to_string())],
                licenses: Vec::new(),
                purl: None,
                properties: Vec::new(),
                components: Vec::new(),
            },
            properties: vec![
                prop("kiln:builder:id", req.builder.id.clone()),
                prop("kiln:pipeline:name", req.pipeline.name.clone()),
                prop("kiln:pipeline:sha256", req.pipeline.sha256.to_string()),
                prop("kiln:run:id", req.invocation_id.clone()),
            ],
        },
        components,
        dependencies,
    }
}

fn dependency_component(dep: &Dependency) -> Component {
    let component_type = match dep.role {
        Role::Rootfs => ComponentType::OperatingSystem,
        Role::MirrorTree | Role::MirrorFile | Role::StepOutput | Role::GitSource => {
            ComponentType::File
        }
    };
    let mut properties = vec![
        Property {
            name: "kiln:kind".to_owned(),
            value: dep.role.kind().to_owned(),
        },
        Property {
            name: "kiln:uri".to_owned(),
            value: dep.uri.clone(),
        },
    ];
    if let Some(f) = &dep.file_name {
        properties.push(Property {
            name: "kiln:fileName".to_owned(),
            value: f.clone(),
        });
    }
    Component {
        component_type,
        bom_ref: Some(dep.uri.clone()),
        name: dep.name.clone(),
        version: dep.version.clone(),
        hashes: vec![sha256(&dep.sha256.to_string())],
        licenses: Vec::new(),
        purl: dep.purl.clone(),
        properties,
        components: dep
            .packages
            .iter()
            .map(|p| debian_component(dep, p))
            .collect(),
    }
}

/// A Debian package inside the root filesystem `rootfs`, nested under it. Its `bom-ref` is
/// `ROOTFS_URI#PURL`, unique per rootfs. The license, when kiln could determine one from the
/// package's DEP-5 copyright file, is an SPDX id or expression.
fn debian_component(rootfs: &Dependency, p: &RootfsPackage) -> Component {
    let purl = p.purl();
    let licenses = match &p.license {
        None => Vec::new(),
        Some(l) if l.contains(' ') => vec![LicenseChoice::Expression {
            expression: l.clone(),
        }],
        Some(l) => vec![LicenseChoice::License {
            license: License { id: l.clone() },
        }],
    };
    Component {
        component_type: ComponentType::Library,
        bom_ref: Some(format!("{}#{purl}", rootfs.uri)),
        name: p.name.clone(),
        version: Some(p.version.clone()),
        hashes: Vec::new(),
        licenses,
        purl: Some(purl),
        properties: vec![Property {
            name: "kiln:kind".to_owned(),
            value: "rootfs-package".to_owned(),
        }],
        components: Vec::new(),
    }
}

fn sha256(hex: &str) -> Hash {
    Hash {
        alg: HashAlgorithm::Sha256,
        content: hex.to_owned(),
    }
}

/// `urn:uuid:…` from the SHA-256 of `name`: a name-based UUID laid out like version 5 (RFC
/// 9562 would call a SHA-256 one version 8, which the CycloneDX schema's pattern refuses).
fn serial_number(name: &str) -> String {
    let digest = kiln_core::Sha256Digest::of(name.as_bytes()).to_string();
    let mut b: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&digest[2 * i..2 * i + 2], 16).unwrap_or(0))
        .collect();
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provenance::tests::{request, three_steps};
    use crate::sbom::build_sboms;

    #[test]
    fn artifact_depends_on_every_component() {
        let steps = three_steps();
        let bom = build_sboms(&request(&steps)).unwrap().cyclonedx;
        assert_eq!(bom.components.len(), 5);
        let refs: Vec<_> = bom
            .components
            .iter()
            .map(|c| c.bom_ref.clone().unwrap())
            .collect();
        assert_eq!(bom.dependencies[0].reference, "kiln:artifact/hello");
        assert_eq!(bom.dependencies[0].depends_on, refs);
        assert_eq!(bom.dependencies.len(), 6);
        assert_eq!(
            bom.components[0].component_type,
            ComponentType::OperatingSystem
        );
    }

    #[test]
    fn serial_number_is_stable_and_differs_per_artifact() {
        let steps = three_steps();
        let a = build_sboms(&request(&steps)).unwrap().cyclonedx;
        let b = build_sboms(&request(&steps)).unwrap().cyclonedx;
        assert_eq!(a.serial_number, b.serial_number);
        let mut req = request(&steps);
        req.invocation_id = "0190b6f2-0000-7000-8000-000000000001".into();
        let c = build_sboms(&req).unwrap().cyclonedx;
        assert_ne!(a.serial_number, c.serial_number);
        let s = a.serial_number.strip_prefix("urn:uuid:").unwrap();
        assert_eq!(s.len(), 36);
        assert_eq!(&s[14..15], "5");
        assert!(matches!(&s[19..20], "8" | "9" | "a" | "b"), "{s}");
    }

    #[test]
    fn serialises_with_spec_field_names() {
        let steps = three_steps();
        let v = serde_json::to_value(build_sboms(&request(&steps)).unwrap().cyclonedx).unwrap();
        assert_eq!(v["bomFormat"], "CycloneDX");
        assert_eq!(v["specVersion"], "1.6");
        assert_eq!(v["metadata"]["component"]["bom-ref"], "kiln:artifact/hello");
        assert_eq!(v["metadata"]["lifecycles"][0]["phase"], "build");
        assert_eq!(v["components"][0]["type"], "operating-system");
        assert_eq!(v["components"][0]["hashes"][0]["alg"], "SHA-256");
        assert_eq!(
            v["dependencies"][0]["dependsOn"][0],
            "kiln:mirror/debian-rootfs@12.5"
        );
    }
}
