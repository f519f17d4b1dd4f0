//! The validated pipeline: what the rest of kiln trusts without re-checking.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use kiln_core::{MirrorRef, ResourceRequest, Sha256Digest};

/// A checked pipeline. Every name is valid and unique, every reference resolves, and
/// [`Pipeline::steps`] is in an order where each step comes after the steps it needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pipeline {
    pub(crate) name: String,
    pub(crate) rootfs: MirrorRef,
    pub(crate) source_date_epoch: i64,
    pub(crate) inputs: BTreeMap<String, InputDecl>,
    pub(crate) sources: BTreeMap<String, SourceDecl>,
    pub(crate) steps: Vec<Step>,
    /// Index into `steps` by name: the daemon looks a step up on every lease.
    pub(crate) step_index: HashMap<String, usize>,
    /// For each step in `steps`, the indices of the steps that need it, in order.
    pub(crate) dependents: Vec<Vec<usize>>,
    pub(crate) artifacts: Vec<Artifact>,
}

impl Pipeline {
    /// The pipeline's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The mirror entry every step runs in as its root filesystem.
    pub fn rootfs(&self) -> &MirrorRef {
        &self.rootfs
    }

    /// `SOURCE_DATE_EPOCH` for every step (seconds since 1970, never negative).
    pub fn source_date_epoch(&self) -> i64 {
        self.source_date_epoch
    }

    /// Declared inputs, by the name they are mounted under in `/in`.
    pub fn inputs(&self) -> &BTreeMap<String, InputDecl> {
        &self.inputs
    }

    /// Declared git sources, by the name they are mounted under in `/src`.
    pub fn sources(&self) -> &BTreeMap<String, SourceDecl> {
        &self.sources
    }

    /// The steps, topologically sorted; among steps ready at the same time, declaration order.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// The step called `name`.
    pub fn step(&self, name: &str) -> Option<&Step> {
        self.step_index.get(name).map(|&i| &self.steps[i])
    }

    /// The steps that need the step called `name`, in [`Pipeline::steps`] order; none for a
    /// step that is not in the pipeline.
    ///
    /// ```
    /// let yaml = "version: 1\nname: p\nrootfs: base@1\nsteps:\n\
    ///     - { name: a, run: make }\n\
    ///     - { name: b, run: make, needs: [a] }\n";
    /// let pipeline = kiln_pipelines::parse("p.yaml", yaml).unwrap();
    /// let names: Vec<_> = pipeline.dependents("a").map(|s| s.name()).collect();
    /// assert_eq!(names, ["b"]);
    /// assert_eq!(pipeline.dependents("b").count(), 0);
    /// ```
    pub fn dependents(&self, name: &str) -> impl Iterator<Item = &Step> {
        let indices = self
            .step_index
            .get(name)
            .map_or(&[][..], |&i| &self.dependents[i][..]);
        indices.iter().map(|&i| &self.steps[i])
    }

    /// The artifacts to publish, in declaration order.
    pub fn artifacts(&self) -> &[Artifact] {
        &self.artifacts
    }
}

/// A declared pipeline input: a pinned mirror entry, optionally with the digest it must have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputDecl {
    /// The mirror entry.
    pub mirror: MirrorRef,
    /// If set, the entry's content must have this digest.
    pub sha256: Option<Sha256Digest>,
}

/// A declared git source: one commit of a git mirror, pinned by its full id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceDecl {
    /// The git mirror's name (a valid name, like an input's).
    pub git: String,
    /// The full commit id: 40 lowercase hex digits.
    pub commit: String,
    /// A branch or tag that must point at `commit` when the run is accepted.
    pub git_ref: Option<String>,
}

/// One step of a pipeline: a command run in a fresh sandbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub(crate) name: String,
    pub(crate) inputs: Vec<String>,
    pub(crate) sources: Vec<String>,
    pub(crate) needs: Vec<String>,
    pub(crate) run: String,
    pub(crate) outputs: Vec<String>,
    pub(crate) timeout: Duration,
    pub(crate) env: BTreeMap<String, String>,
    pub(crate) resources: ResourceRequest,
    pub(crate) requires: BTreeMap<String, String>,
}

impl Step {
    /// The step's name; its outputs appear at `/in/<name>/` in the steps that need it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Declared pipeline inputs the step mounts at `/in/<input>`, in the order listed.
    pub fn inputs(&self) -> &[String] {
        &self.inputs
    }

    /// Declared git sources the step mounts at `/src/<source>`, in the order listed.
    pub fn sources(&self) -> &[String] {
        &self.sources
    }

    /// Steps that must succeed first, in the order listed.
    pub fn needs(&self) -> &[String] {
        &self.needs
    }

    /// The shell command.
    pub fn run(&self) -> &str {
        &self.run
    }

    /// Paths relative to `/out` the step must produce: no `.`, `..` or empty components.
    pub fn outputs(&self) -> &[String] {
        &self.outputs
    }

    /// Wall-clock limit: more than zero, at most [`MAX_TIMEOUT`].
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The declared environment; never sets `PATH`, `HOME` or `SOURCE_DATE_EPOCH`.
    pub fn env(&self) -> &BTreeMap<String, String> {
        &self.env
    }

    /// The limits the step asks for (`resources:`); `None` where the worker's default applies.
    /// Every value given is within the bounds documented in the JSON Schema.
    pub fn resources(&self) -> ResourceRequest {
        self.resources
    }

    /// Labels a worker must offer to be given this step (`requires:`); each well formed
    /// ([`kiln_core::labels::label_problem`]).
    pub fn requires(&self) -> &BTreeMap<String, String> {
        &self.requires
    }
}

/// A published artifact: one output of one step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Artifact {
    pub(crate) name: String,
    pub(crate) from: String,
    pub(crate) path: String,
}

impl Artifact {
    /// The artifact's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The step that produces it.
    pub fn from(&self) -> &str {
        &self.from
    }

    /// The path, one of that step's [`Step::outputs`].
    pub fn path(&self) -> &str {
        &self.path
    }
}

/// A step's timeout when the pipeline does not give one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// The longest timeout a step may ask for.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);
