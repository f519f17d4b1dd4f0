//! Builds the SLSA provenance statement for one artifact of a kiln run.
//!
//! The build type is `https://kiln.dev/buildtypes/pipeline/v1`; docs/build-type.md says what
//! each field holds. The input is what the controller knows after a run: the pipeline file's
//! digest, the run's id and times, the artifact, and the step records of every step that
//! reached the artifact. The records are checked against each other before anything is
//! claimed about them: an inconsistent set is refused, not papered over.
//!
//! Invariant: the output depends only on the input's content, never on its order: every list
//! is sorted and every map is a `BTreeMap`, so the same run always yields the same bytes.
//! This module performs no I/O and no signing.

use std::collections::{BTreeMap, BTreeSet};

use kiln_core::{BlobKind, GitInput, InputSource, MirrorInput, Sha256Digest, StepRecord};
use serde::{Deserialize, Serialize};
use time::{OffsetDateTime, UtcOffset};

use crate::intoto::{DigestSet, ResourceDescriptor, STATEMENT_TYPE, Statement};
use crate::slsa::{self, BuildDefinition, BuildMetadata, Builder, Provenance, RunDetails};

/// The `buildType` of provenance kiln writes for a pipeline run.
pub const BUILD_TYPE: &str = "https://kiln.dev/buildtypes/pipeline/v1";

/// The builder that ran the pipeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuilderInfo {
    /// A URI naming the builder and its trust boundary, e.g. `https://kiln.dev/builders/local/v1`.
    pub id: String,
    /// The kiln version, recorded as `builder.version.kiln` when present.
    pub version: Option<String>,
}

/// The submitted pipeline file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineParameter {
    pub name: String,
    pub sha256: Sha256Digest,
}

/// The artifact the statement is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Artifact {
    pub name: String,
    pub sha256: Sha256Digest,
}

/// Everything the controller passes in to describe one artifact of one run.
#[derive(Clone, Debug)]
pub struct ProvenanceRequest<'a> {
    pub builder: BuilderInfo,
    pub pipeline: PipelineParameter,
    /// The run's id (a UUID v7), recorded as `runDetails.metadata.invocationId`.
    pub invocation_id: String,
    pub started_on: OffsetDateTime,
    pub finished_on: OffsetDateTime,
    pub artifact: Artifact,
    /// The step that produced the artifact and every step upstream of it, in any order.
    pub steps: &'a [StepRecord],
}

/// `externalParameters` of [`BUILD_TYPE`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalParameters {
    pub pipeline: PipelineParameter,
}

/// `internalParameters` of [`BUILD_TYPE`]: how each step was run, keyed by step name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InternalParameters {
    pub steps: BTreeMap<String, StepParameters>,
}

/// How one step was run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepParameters {
    /// Run by `/bin/sh -c`.
    pub command: String,
    /// `NAME@VERSION` of the root filesystem.
    pub rootfs: String,
    /// Names of the declared environment variables. Their values are fixed by the pipeline file
    /// (see `externalParameters.pipeline.sha256`) and deliberately not repeated here.
    pub env: Vec<String>,
    /// Steps whose outputs this step read.
    pub upstream: Vec<String>,
    pub sandbox: SandboxParameters,
}

/// Summary of the sandbox a step ran in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxParameters {
    pub namespaces: Vec<String>,
    pub network: String,
    pub host_uid: u32,
    pub step_uid: u32,
    pub scratch_bytes: u64,
    pub timeout_secs: u64,
    pub mounts: Vec<String>,
}

/// Why a set of step records cannot be described as the provenance of an artifact.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProvenanceError {
    #[error("no step records given: pass the producing step and all its upstream steps")]
    NoSteps,
    #[error("step {step:?} is given twice")]
    DuplicateStep { step: String },
    #[error("step {step:?} did not succeed; provenance is only written for successful steps")]
    StepFailed { step: String },
    #[error("no given step produced an output with digest {digest}")]
    ArtifactNotProduced { digest: Sha256Digest },
    #[error(
        "step {step:?} reads outputs of step {upstream:?}, whose record was not given: pass every upstream step"
    )]
    MissingUpstream { step: String, upstream: String },
    #[error(
        "step {step:?} read {path:?} from step {upstream:?} with a digest that step's record does not list"
    )]
    UpstreamMismatch {
        step: String,
        upstream: String,
        path: String,
    },
    #[error("step {step:?} is not upstream of the artifact; pass only the steps that reached it")]
    UnrelatedStep { step: String },
    #[error("dependency {uri} is listed twice with different contents")]
    ConflictingDependency { uri: String },
    #[error("the run finished ({finished}) before it started ({started})")]
    TimesReversed {
        started: OffsetDateTime,
        finished: OffsetDateTime,
    },
}

/// The `uri` of a mirror entry: `kiln:mirror/NAME@VERSION`.
pub fn mirror_uri(input: &MirrorInput) -> String {
    format!(
        "kiln:mirror/{}",
        encode_uri_path(&input.reference.to_string())
    )
}

/// The `uri` of a git source: `git+file://ORIGIN@COMMIT`, after the SLSA convention of naming
/// a git dependency `git+URL@REVISION`.
pub fn git_uri(input: &GitInput) -> String {
    format!(
        "git+file://{}@{}",
        encode_uri_path(&input.origin),
        input.commit
    )
}

/// The `uri` of a step output: `kiln:step/STEP/PATH`.
pub fn step_output_uri(step: &str, path: &str) -> String {
    format!(
        "kiln:step/{}/{}",
        encode_uri_path(step),
        encode_uri_path(path)
    )
}

/// The `uri` of a step's log: `kiln:log/STEP`.
pub fn log_uri(step: &str) -> String {
    format!("kiln:log/{}", encode_uri_path(step))
}

/// Builds the in-toto Statement carrying SLSA provenance for `req.artifact`.
pub fn build_statement(
    req: &ProvenanceRequest<'_>,
) -> Result<Statement<Provenance>, ProvenanceError> {
    let steps = checked_steps(req)?;
    let mut deps = Dependencies::default();
    let mut byproducts = Vec::new();
    let mut internal = BTreeMap::new();
    for (name, rec) in &steps {
        deps.insert(mirror_descriptor(&rec.rootfs))?;
        let mut upstream = BTreeSet::new();
        for input in &rec.inputs {
            match &input.source {
                InputSource::Mirror(m) => deps.insert(mirror_descriptor(m))?,
                InputSource::Git(g) => deps.insert(git_descriptor(&input.mount_name, g))?,
                InputSource::Step { step, outputs } => {
                    upstream.insert(step.clone());
                    for out in outputs {
                        deps.insert(ResourceDescriptor {
                            name: Some(format!("{step}/{}", out.path)),
                            uri: Some(step_output_uri(step, &out.path)),
                            digest: DigestSet::sha256(out.sha256),
                            ..Default::default()
                        })?;
                    }
                }
            }
        }
        byproducts.push(ResourceDescriptor {
            name: Some(format!("{name}.log")),
            uri: Some(log_uri(name)),
            digest: DigestSet::sha256(rec.log.sha256),
            annotations: BTreeMap::from([("size".to_owned(), rec.log.size.into())]),
            ..Default::default()
        });
        internal.insert(
            (*name).to_owned(),
            StepParameters {
                command: rec.command.clone(),
                rootfs: rec.rootfs.reference.to_string(),
                env: rec.env.keys().cloned().collect(),
                upstream: upstream.into_iter().collect(),
                sandbox: sandbox_parameters(rec),
            },
        );
    }
    byproducts.sort_by(|a, b| a.uri.cmp(&b.uri));

    let external = ExternalParameters {
        pipeline: req.pipeline.clone(),
    };
    let internal = InternalParameters { steps: internal };
    Ok(Statement {
        statement_type: STATEMENT_TYPE.to_owned(),
        subject: vec![ResourceDescriptor {
            name: Some(req.artifact.name.clone()),
            digest: DigestSet::sha256(req.artifact.sha256),
            ..Default::default()
        }],
        predicate_type: slsa::PREDICATE_TYPE.to_owned(),
        predicate: Provenance {
            build_definition: BuildDefinition {
                build_type: BUILD_TYPE.to_owned(),
                external_parameters: to_value(&external),
                internal_parameters: Some(to_value(&internal)),
                resolved_dependencies: deps.into_sorted(),
            },
            run_details: RunDetails {
                builder: Builder {
                    id: req.builder.id.clone(),
                    version: req
                        .builder
                        .version
                        .iter()
                        .map(|v| ("kiln".to_owned(), v.clone()))
                        .collect(),
                    builder_dependencies: Vec::new(),
                },
                metadata: Some(BuildMetadata {
                    invocation_id: Some(req.invocation_id.clone()),
                    started_on: Some(req.started_on.to_offset(UtcOffset::UTC)),
                    finished_on: Some(req.finished_on.to_offset(UtcOffset::UTC)),
                }),
                byproducts,
            },
        },
    })
}

/// The request's step records by name, after every consistency check: times in order, no
/// duplicate or failed step, every upstream output accounted for, every step reaching the
/// artifact. The SBOMs ([`crate::sbom`]) are built from the same checked records.
pub(crate) fn checked_steps<'a>(
    req: &ProvenanceRequest<'a>,
) -> Result<BTreeMap<&'a str, &'a StepRecord>, ProvenanceError> {
    if req.finished_on < req.started_on {
        return Err(ProvenanceError::TimesReversed {
            started: req.started_on,
            finished: req.finished_on,
        });
    }
    let steps = index_steps(req.steps)?;
    check_upstreams(&steps)?;
    check_all_reach_artifact(&steps, req.artifact.sha256)?;
    Ok(steps)
}

/// Step records by name, refusing duplicates and failed steps.
fn index_steps(records: &[StepRecord]) -> Result<BTreeMap<&str, &StepRecord>, ProvenanceError> {
    if records.is_empty() {
        return Err(ProvenanceError::NoSteps);
    }
    let mut steps = BTreeMap::new();
    for rec in records {
        if steps.insert(rec.step.as_str(), rec).is_some() {
            return Err(ProvenanceError::DuplicateStep {
                step: rec.step.clone(),
            });
        }
        if !rec.exit.success() {
            return Err(ProvenanceError::StepFailed {
                step: rec.step.clone(),
            });
        }
    }
    Ok(steps)
}

/// Every step input read from another step names a given step and one of its recorded outputs.
fn check_upstreams(steps: &BTreeMap<&str, &StepRecord>) -> Result<(), ProvenanceError> {
    for (name, rec) in steps {
        for input in &rec.inputs {
            let InputSource::Step { step: up, outputs } = &input.source else {
                continue;
            };
            let Some(up_rec) = steps.get(up.as_str()) else {
                return Err(ProvenanceError::MissingUpstream {
                    step: (*name).to_owned(),
                    upstream: up.clone(),
                });
            };
            for out in outputs {
                if !up_rec
                    .outputs
                    .iter()
                    .any(|o| o.path == out.path && o.sha256 == out.sha256)
                {
                    return Err(ProvenanceError::UpstreamMismatch {
                        step: (*name).to_owned(),
                        upstream: up.clone(),
                        path: out.path.clone(),
                    });
                }
            }
        }
    }
    Ok(())
}

/// Every given step produced the artifact or is upstream of a step that did.
fn check_all_reach_artifact(
    steps: &BTreeMap<&str, &StepRecord>,
    artifact: Sha256Digest,
) -> Result<(), ProvenanceError> {
    let mut todo: Vec<&str> = steps
        .iter()
        .filter(|(_, rec)| rec.outputs.iter().any(|o| o.sha256 == artifact))
        .map(|(name, _)| *name)
        .collect();
    if todo.is_empty() {
        return Err(ProvenanceError::ArtifactNotProduced { digest: artifact });
    }
    let mut reached = BTreeSet::new();
    while let Some(name) = todo.pop() {
        if !reached.insert(name) {
            continue;
        }
        for input in &steps[name].inputs {
            if let InputSource::Step { step, .. } = &input.source {
                todo.push(step.as_str());
            }
        }
    }
    match steps.keys().find(|name| !reached.contains(*name)) {
        Some(name) => Err(ProvenanceError::UnrelatedStep {
            step: (*name).to_owned(),
        }),
        None => Ok(()),
    }
}

fn mirror_descriptor(input: &MirrorInput) -> ResourceDescriptor {
    let annotations = match &input.kind {
        BlobKind::Tree => BTreeMap::from([("kind".to_owned(), "tree".into())]),
        BlobKind::File { file_name } => BTreeMap::from([
            ("kind".to_owned(), "file".into()),
            ("fileName".to_owned(), file_name.as_str().into()),
        ]),
    };
    ResourceDescriptor {
        name: Some(input.reference.to_string()),
        uri: Some(mirror_uri(input)),
        digest: DigestSet::sha256(input.sha256),
        annotations,
        ..Default::default()
    }
}

/// A git source: the commit id as `gitCommit` beside the sha256 of the exported tree, and who
/// signed the commit when the mirror requires signatures.
fn git_descriptor(name: &str, input: &GitInput) -> ResourceDescriptor {
    let mut annotations = BTreeMap::from([
        ("kind".to_owned(), "git".into()),
        ("mirror".to_owned(), input.mirror.as_str().into()),
    ]);
    if let Some(git_ref) = &input.git_ref {
        annotations.insert("ref".to_owned(), git_ref.as_str().into());
    }
    if let Some(signer) = &input.signer {
        annotations.insert("signer".to_owned(), signer.principal.as_str().into());
        annotations.insert("signerKey".to_owned(), signer.fingerprint.as_str().into());
    }
    ResourceDescriptor {
        name: Some(name.to_owned()),
        uri: Some(git_uri(input)),
        digest: DigestSet {
            sha256: Some(input.sha256),
            other: BTreeMap::from([("gitCommit".to_owned(), input.commit.clone())]),
        },
        annotations,
        ..Default::default()
    }
}

fn sandbox_parameters(rec: &StepRecord) -> SandboxParameters {
    let s = &rec.sandbox;
    SandboxParameters {
        namespaces: s.namespaces.clone(),
        network: s.network.clone(),
        host_uid: s.host_uid,
        step_uid: s.step_uid,
        scratch_bytes: s.scratch_bytes,
        timeout_secs: s.timeout_secs,
        mounts: s.mounts.clone(),
    }
}

/// Resolved dependencies keyed by uri: the same resource reached twice is listed once.
#[derive(Default)]
struct Dependencies(BTreeMap<String, ResourceDescriptor>);

impl Dependencies {
    fn insert(&mut self, desc: ResourceDescriptor) -> Result<(), ProvenanceError> {
        let uri = desc.uri.clone().unwrap_or_default();
        match self.0.get(&uri) {
            Some(existing) if *existing != desc => {
                Err(ProvenanceError::ConflictingDependency { uri })
            }
            Some(_) => Ok(()),
            None => {
                self.0.insert(uri, desc);
                Ok(())
            }
        }
    }

    fn into_sorted(self) -> Vec<ResourceDescriptor> {
        self.0.into_values().collect()
    }
}

fn to_value<T: Serialize>(v: &T) -> serde_json::Value {
    // Plain structs of strings, integers, vectors and string-keyed maps always serialise.
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

/// Percent-encodes everything but RFC 3986 unreserved characters and `/ @ +`, so names with
/// spaces or other odd characters still give one stable, valid URI.
pub(crate) fn encode_uri_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/' | b'@' | b'+')
        {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use kiln_core::{ExitRecord, LogRecord, MirrorRef, OutputRecord, SandboxRecord, StagedInput};
    use time::macros::datetime;

    pub(crate) fn mirror(reference: &str, kind: BlobKind) -> MirrorInput {
        MirrorInput {
            reference: reference.parse::<MirrorRef>().unwrap(),
            sha256: Sha256Digest::of(reference.as_bytes()),
            kind,
        }
    }

    pub(crate) fn output(path: &str, content: &[u8]) -> OutputRecord {
        OutputRecord {
            path: path.into(),
            sha256: Sha256Digest::of(content),
            size: content.len() as u64,
            executable: false,
        }
    }

    pub(crate) fn record(
        step: &str,
        inputs: Vec<StagedInput>,
        outputs: Vec<OutputRecord>,
    ) -> StepRecord {
        StepRecord {
            run_id: "0190b6f2-0000-7000-8000-000000000000".into(),
            step: step.into(),
            command: format!("make {step}"),
            env: BTreeMap::from([("CC".into(), "gcc".into())]),
            rootfs: mirror("debian-rootfs@12.5", BlobKind::Tree),
            inputs,
            outputs,
            exit: ExitRecord::Exited { code: 0 },
            started_on: datetime!(2025-01-01 00:00:00 UTC),
            finished_on: datetime!(2025-01-01 00:01:00 UTC),
            log: LogRecord {
                sha256: Sha256Digest::of(format!("log of {step}").as_bytes()),
                size: 42,
            },
            sandbox: SandboxRecord {
                namespaces: vec!["mount".into(), "net".into(), "pid".into()],
                network: "none".into(),
                host_uid: 100000,
                step_uid: 1000,
                scratch_bytes: 1 << 30,
                timeout_secs: 600,
                mounts: vec!["/in:ro".into(), "/out:rw".into()],
                limits: kiln_core::LimitsRecord {
                    memory_bytes: 1 << 30,
                    pids: 1024,
                    millicpus: 2000,
                    open_files: 4096,
                },
                rlimits: "RLIMIT_CORE=0".into(),
                seccomp: "deny-list".into(),
                seccomp_sha256: "00".repeat(32),
            },
            usage: kiln_core::UsageRecord::default(),
            events: Vec::new(),
        }
    }

    /// `fetch` → `compile` → `link`; the artifact is `link`'s `bin/hello`.
    pub(crate) fn three_steps() -> Vec<StepRecord> {
        let src = mirror(
            "hello-src@1.0",
            BlobKind::File {
                file_name: "hello.tar.gz".into(),
            },
        );
        let fetch = record(
            "fetch",
            vec![StagedInput {
                mount_name: "src".into(),
                source: InputSource::Mirror(src.clone()),
            }],
            vec![output("src/hello.c", b"int main(){}")],
        );
        let compile = record(
            "compile",
            vec![
                StagedInput {
                    mount_name: "src".into(),
                    source: InputSource::Step {
                        step: "fetch".into(),
                        outputs: fetch.outputs.clone(),
                    },
                },
                StagedInput {
                    mount_name: "toolchain".into(),
                    source: InputSource::Mirror(mirror("gcc-toolchain@12", BlobKind::Tree)),
                },
            ],
            vec![output("hello.o", b"object")],
        );
        let link = record(
            "link",
            vec![
                StagedInput {
                    mount_name: "obj".into(),
                    source: InputSource::Step {
                        step: "compile".into(),
                        outputs: compile.outputs.clone(),
                    },
                },
                StagedInput {
                    mount_name: "src".into(),
                    source: InputSource::Mirror(src),
                },
            ],
            vec![output("bin/hello", b"ELF hello")],
        );
        vec![fetch, compile, link]
    }

    pub(crate) fn request(steps: &[StepRecord]) -> ProvenanceRequest<'_> {
        ProvenanceRequest {
            builder: BuilderInfo {
                id: "https://kiln.dev/builders/local/v1".into(),
                version: Some("0.1.0".into()),
            },
            pipeline: PipelineParameter {
                name: "hello".into(),
                sha256: Sha256Digest::of(b"pipeline: hello"),
            },
            invocation_id: "0190b6f2-0000-7000-8000-000000000000".into(),
            started_on: datetime!(2025-01-01 00:00:00 UTC),
            finished_on: datetime!(2025-01-01 00:05:00 UTC),
            artifact: Artifact {
                name: "hello".into(),
                sha256: Sha256Digest::of(b"ELF hello"),
            },
            steps,
        }
    }

    #[test]
    fn statement_lists_each_dependency_once_sorted_and_logs_as_byproducts() {
        let steps = three_steps();
        let st = build_statement(&request(&steps)).unwrap();
        assert_eq!(st.statement_type, STATEMENT_TYPE);
        assert_eq!(st.predicate_type, slsa::PREDICATE_TYPE);
        let bd = &st.predicate.build_definition;
        assert_eq!(bd.build_type, BUILD_TYPE);
        let uris: Vec<_> = bd
            .resolved_dependencies
            .iter()
            .map(|d| d.uri.as_deref().unwrap())
            .collect();
        assert_eq!(
            uris,
            [
                "kiln:mirror/debian-rootfs@12.5",
                "kiln:mirror/gcc-toolchain@12",
                "kiln:mirror/hello-src@1.0",
                "kiln:step/compile/hello.o",
                "kiln:step/fetch/src/hello.c",
            ]
        );
        let byproducts: Vec<_> = st
            .predicate
            .run_details
            .byproducts
            .iter()
            .map(|d| d.uri.as_deref().unwrap())
            .collect();
        assert_eq!(
            byproducts,
            ["kiln:log/compile", "kiln:log/fetch", "kiln:log/link"]
        );
        assert_eq!(
            bd.external_parameters,
            serde_json::json!({"pipeline": {"name": "hello", "sha256": Sha256Digest::of(b"pipeline: hello").to_string()}})
        );
        let internal: InternalParameters =
            serde_json::from_value(bd.internal_parameters.clone().unwrap()).unwrap();
        assert_eq!(internal.steps["link"].upstream, ["compile"]);
        assert_eq!(internal.steps["link"].env, ["CC"]);
        // Env values stay out of the provenance.
        assert!(!serde_json::to_string(&st).unwrap().contains("\"gcc\""));
    }

    #[test]
    fn output_does_not_depend_on_step_order() {
        let steps = three_steps();
        let mut reversed = steps.clone();
        reversed.reverse();
        let a = serde_json::to_vec(&build_statement(&request(&steps)).unwrap()).unwrap();
        let b = serde_json::to_vec(&build_statement(&request(&reversed)).unwrap()).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn refuses_missing_upstream_step() {
        let steps = three_steps();
        let err = build_statement(&request(&steps[1..])).unwrap_err();
        assert_eq!(
            err,
            ProvenanceError::MissingUpstream {
                step: "compile".into(),
                upstream: "fetch".into()
            }
        );
    }

    #[test]
    fn refuses_upstream_output_whose_digest_the_upstream_record_does_not_list() {
        let mut steps = three_steps();
        steps[0].outputs[0].sha256 = Sha256Digest::of(b"something else");
        assert!(matches!(
            build_statement(&request(&steps)),
            Err(ProvenanceError::UpstreamMismatch { .. })
        ));
    }

    #[test]
    fn refuses_unrelated_failed_duplicate_and_unproduced() {
        let mut steps = three_steps();
        steps.push(record(
            "docs",
            vec![],
            vec![output("index.html", b"<html>")],
        ));
        assert_eq!(
            build_statement(&request(&steps)).unwrap_err(),
            ProvenanceError::UnrelatedStep {
                step: "docs".into()
            }
        );

        let mut steps = three_steps();
        steps[0].exit = ExitRecord::Exited { code: 1 };
        assert!(matches!(
            build_statement(&request(&steps)),
            Err(ProvenanceError::StepFailed { .. })
        ));

        let mut steps = three_steps();
        steps.push(steps[0].clone());
        assert!(matches!(
            build_statement(&request(&steps)),
            Err(ProvenanceError::DuplicateStep { .. })
        ));

        let steps = three_steps();
        let mut req = request(&steps);
        req.artifact.sha256 = Sha256Digest::of(b"not built");
        assert!(matches!(
            build_statement(&req),
            Err(ProvenanceError::ArtifactNotProduced { .. })
        ));
    }

    #[test]
    fn refuses_same_mirror_reference_with_two_digests() {
        let mut steps = three_steps();
        steps[1].rootfs.sha256 = Sha256Digest::of(b"other rootfs");
        assert_eq!(
            build_statement(&request(&steps)).unwrap_err(),
            ProvenanceError::ConflictingDependency {
                uri: "kiln:mirror/debian-rootfs@12.5".into()
            }
        );
    }

    #[test]
    fn uris_percent_encode_odd_characters() {
        assert_eq!(
            step_output_uri("a b", "x%/y?.txt"),
            "kiln:step/a%20b/x%25/y%3F.txt"
        );
    }
}
