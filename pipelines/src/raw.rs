//! The raw shape of a pipeline file, exactly as YAML says it: strings are not yet references,
//! names are not yet checked, and every node keeps the position it came from.
//!
//! These types exist to be deserialized, checked by [`crate::validate`] and thrown away; they
//! are also the source of the published JSON Schema. Nothing outside this crate sees them.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use schemars::JsonSchema;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// Where a YAML node starts: 1-based line and column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    /// The start of the file, for problems that belong to no particular node.
    pub const START: Self = Self { line: 1, column: 1 };

    /// Converts a parser location; unknown positions (line 0) become the start of the file.
    pub fn from_location(loc: serde_saphyr::Location) -> Self {
        match (usize::try_from(loc.line()), usize::try_from(loc.column())) {
            (Ok(line @ 1..), Ok(column @ 1..)) => Self { line, column },
            (Ok(line @ 1..), _) => Self { line, column: 1 },
            _ => Self::START,
        }
    }
}

/// A deserialized value and the position of the node it came from.
#[derive(Clone, Debug)]
pub(crate) struct Node<T> {
    pub value: T,
    pub at: Pos,
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Node<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let spanned = serde_saphyr::Spanned::<T>::deserialize(d)?;
        Ok(Self {
            value: spanned.value,
            at: Pos::from_location(spanned.referenced),
        })
    }
}

/// In the schema a node is just its value.
impl<T: JsonSchema> JsonSchema for Node<T> {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        T::schema_name()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        T::json_schema(generator)
    }
}

/// A YAML mapping with string keys, in document order, each key with its position.
///
/// Duplicate keys never reach this type: the parser refuses them.
#[derive(Debug)]
pub(crate) struct NodeMap<V>(pub Vec<(Node<String>, V)>);

impl<V> Default for NodeMap<V> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for NodeMap<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(NodeMapVisitor(PhantomData))
    }
}

struct NodeMapVisitor<V>(PhantomData<V>);

impl<'de, V: Deserialize<'de>> Visitor<'de> for NodeMapVisitor<V> {
    type Value = NodeMap<V>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry::<Node<String>, V>()? {
            entries.push(entry);
        }
        Ok(NodeMap(entries))
    }
}

/// In the schema a node map is an object.
impl<V: JsonSchema> JsonSchema for NodeMap<V> {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        <BTreeMap<String, V>>::schema_name()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        <BTreeMap<String, V>>::json_schema(generator)
    }
}

/// The pattern every step, input, artifact and pipeline name must match.
pub(crate) const NAME_PATTERN: &str = "^[a-z0-9][a-z0-9._-]{0,63}$";
/// The pattern of a pinned `NAME@VERSION` mirror reference.
const MIRROR_REF_PATTERN: &str = "^[a-z0-9][a-z0-9._-]*@[A-Za-z0-9][A-Za-z0-9._+~-]*$";
/// The pattern of a SHA-256 digest.
const SHA256_PATTERN: &str = "^[0-9a-f]{64}$";
/// The pattern of a full git commit id (SHA-1, lowercase hex).
const COMMIT_PATTERN: &str = "^[0-9a-f]{40}$";
/// The pattern of a step timeout.
const TIMEOUT_PATTERN: &str = "^(?=[0-9])([0-9]+h)?([0-9]+m)?([0-9]+s)?$";
/// The pattern of an output path: relative, without `.`, `..` or empty components.
const OUTPUT_PATTERN: &str = r"^(?!/)(?!.*(^|/)\.{1,2}(/|$))(?!.*//)[^/].*$";

/// A kiln pipeline, format version 1.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "kiln pipeline",
    extend("$id" = "https://kiln.dev/schemas/pipeline/v1.json")
)]
pub(crate) struct RawPipeline {
    /// Format version of this file; must be 1.
    #[schemars(range(min = 1, max = 1))]
    pub version: Node<u32>,
    /// Name of the pipeline.
    #[schemars(pattern(NAME_PATTERN))]
    pub name: Node<String>,
    /// The mirror entry (`NAME@VERSION`) every step runs in as its root filesystem.
    #[schemars(pattern(MIRROR_REF_PATTERN))]
    pub rootfs: Node<String>,
    /// `SOURCE_DATE_EPOCH` given to every step, in seconds since 1970; default 0.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub source_date_epoch: Option<Node<i64>>,
    /// Mirror entries steps may use, by the name they are mounted under in `/in`.
    #[serde(default)]
    #[schemars(extend("propertyNames" = { "pattern": NAME_PATTERN }))]
    pub inputs: NodeMap<RawInput>,
    /// Git sources steps may use, by the name they are mounted under in `/src`; each one a
    /// commit of a git mirror (`kiln mirror git add`), pinned by its full id.
    #[serde(default)]
    #[schemars(extend("propertyNames" = { "pattern": NAME_PATTERN }))]
    pub sources: NodeMap<RawSource>,
    /// The steps, in any order; `needs` decides the order they run in.
    #[schemars(length(min = 1))]
    pub steps: Node<Vec<RawStep>>,
    /// Step outputs to publish as the run's artifacts.
    #[serde(default)]
    pub artifacts: Vec<RawArtifact>,
}

/// A pipeline input: a pinned mirror entry.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Input")]
pub(crate) struct RawInput {
    /// The mirror entry, `NAME@VERSION`.
    #[schemars(pattern(MIRROR_REF_PATTERN))]
    pub mirror: Node<String>,
    /// If present, the digest the entry must have.
    #[serde(default)]
    #[schemars(pattern(SHA256_PATTERN))]
    pub sha256: Option<Node<String>>,
}

/// A git source: one commit of a git mirror. A branch or tag alone is not a pin; `ref` is
/// only a cross-check of `commit`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Source", extend("required" = ["git", "commit"]))]
pub(crate) struct RawSource {
    /// The git mirror's name (`kiln mirror git add PATH --name NAME`).
    #[schemars(pattern(NAME_PATTERN))]
    pub git: Node<String>,
    /// The full commit id, 40 lowercase hex digits.
    #[serde(default)]
    #[schemars(pattern(COMMIT_PATTERN))]
    pub commit: Option<Node<String>>,
    /// If present, a branch or tag of the mirror that must point at `commit` when the run is
    /// accepted.
    #[serde(default, rename = "ref")]
    #[schemars(length(min = 1, max = 255))]
    pub git_ref: Option<Node<String>>,
}

/// One step: a command run in a fresh sandbox.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Step")]
pub(crate) struct RawStep {
    /// Name of the step; its outputs appear at `/in/<name>/` in steps that need it.
    #[schemars(pattern(NAME_PATTERN))]
    pub name: Node<String>,
    /// Pipeline inputs mounted read-only at `/in/<input>`.
    #[serde(default)]
    #[schemars(inner(pattern(NAME_PATTERN)))]
    #[schemars(extend("uniqueItems" = true))]
    pub inputs: Vec<Node<String>>,
    /// Pipeline sources mounted read-only at `/src/<source>`.
    #[serde(default)]
    #[schemars(inner(pattern(NAME_PATTERN)))]
    #[schemars(extend("uniqueItems" = true))]
    pub sources: Vec<Node<String>>,
    /// Steps that must succeed first; their outputs are mounted read-only at `/in/<step>/`.
    #[serde(default)]
    #[schemars(inner(pattern(NAME_PATTERN)))]
    #[schemars(extend("uniqueItems" = true))]
    pub needs: Vec<Node<String>>,
    /// The shell command to run.
    #[schemars(pattern(r"\S"))]
    pub run: Node<String>,
    /// Paths under `/out` the step produces.
    #[serde(default)]
    #[schemars(inner(pattern(OUTPUT_PATTERN)))]
    #[schemars(extend("uniqueItems" = true))]
    pub outputs: Vec<Node<String>>,
    /// Wall-clock limit such as `30s`, `2m` or `1h30m`; default 10m, at most 24h.
    #[serde(default)]
    #[schemars(pattern(TIMEOUT_PATTERN))]
    pub timeout: Option<Node<String>>,
    /// Environment for the command (a scalar is taken as its text); kiln sets PATH and HOME.
    #[serde(default)]
    #[schemars(extend(
        "propertyNames" = {
            "pattern": "^[A-Za-z_][A-Za-z0-9_]*$",
            "not": { "enum": ["PATH", "HOME", "SOURCE_DATE_EPOCH"] }
        },
        "additionalProperties" = { "type": ["string", "number", "boolean"] }
    ))]
    pub env: NodeMap<Node<String>>,
    /// Limits for the whole step (every process it starts); the worker's defaults fill gaps.
    #[serde(default)]
    pub resources: Option<RawResources>,
    /// Labels a worker must offer (`kiln worker --label KEY=VALUE`) to be given this step,
    /// such as `{ arch: x86_64 }`.
    #[serde(default)]
    #[schemars(extend(
        "propertyNames" = { "pattern": "^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$" },
        "additionalProperties" = { "type": "string", "pattern": "^[A-Za-z0-9._/-]{1,63}$" },
        "maxProperties" = 32
    ))]
    pub requires: NodeMap<Node<String>>,
}

/// A step's resource limits, each optional. Values are kept as the scalar's text and parsed
/// exactly (no float rounding of `cpus`).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Resources")]
pub(crate) struct RawResources {
    /// Memory of the whole step (RSS, page cache, tmpfs pages): bytes, or a whole number of
    /// KiB, MiB or GiB such as `512MiB`; at least 4MiB. Past it the kernel kills the step.
    #[serde(default)]
    #[schemars(schema_with = "memory_schema")]
    pub memory: Option<Node<String>>,
    /// Most processes and threads alive at once, 8 to 4194304.
    #[serde(default)]
    #[schemars(schema_with = "pids_schema")]
    pub pids: Option<Node<String>>,
    /// CPU bandwidth in CPUs, such as `1.5`; 0.01 to 1024, at most three decimals.
    #[serde(default)]
    #[schemars(schema_with = "cpus_schema")]
    pub cpus: Option<Node<String>>,
}

fn memory_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "oneOf": [
            { "type": "integer", "minimum": crate::resources::MIN_MEMORY },
            { "type": "string", "pattern": "^[0-9]+(KiB|MiB|GiB)?$" }
        ]
    })
}

fn pids_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "integer",
        "minimum": crate::resources::MIN_PIDS,
        "maximum": crate::resources::MAX_PIDS
    })
}

fn cpus_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "number",
        "minimum": 0.01,
        "maximum": 1024
    })
}

/// A published artifact: one output of one step.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Artifact")]
pub(crate) struct RawArtifact {
    /// Name of the artifact.
    #[schemars(pattern(NAME_PATTERN))]
    pub name: Node<String>,
    /// The step that produces it.
    #[schemars(pattern(NAME_PATTERN))]
    pub from: Node<String>,
    /// One of that step's `outputs`.
    pub path: Node<String>,
}
