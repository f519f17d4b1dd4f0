//! Raw pipeline → [`Pipeline`]: every check, every diagnostic at once.

use std::collections::{BTreeMap, HashMap};

use kiln_core::{MirrorRef, ResourceRequest, Sha256Digest};

use crate::duration::parse_timeout;
use crate::graph::{Edge, topo_order};
use crate::model::{Artifact, DEFAULT_TIMEOUT, InputDecl, Pipeline, SourceDecl, Step};
use crate::raw::{
    Node, NodeMap, Pos, RawArtifact, RawInput, RawPipeline, RawResources, RawSource, RawStep,
};
use crate::resources::{ResourceError, parse_cpus, parse_memory, parse_pids};
use crate::suggest::did_you_mean;

/// One problem found in a pipeline, before it is tied to a file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Issue {
    pub at: Pos,
    pub message: String,
}

impl Issue {
    pub fn new(at: Pos, message: impl Into<String>) -> Self {
        Self {
            at,
            message: message.into(),
        }
    }
}

/// The longest step, input, artifact or pipeline name.
const MAX_NAME_LEN: usize = 64;

/// Variables kiln sets itself; a pipeline may not override them.
const RESERVED_ENV: [&str; 3] = ["PATH", "HOME", "SOURCE_DATE_EPOCH"];

impl TryFrom<RawPipeline> for Pipeline {
    type Error = Vec<Issue>;

    fn try_from(raw: RawPipeline) -> Result<Self, Self::Error> {
        Checker::default().pipeline(raw)
    }
}

/// Collects issues while building the validated pipeline.
#[derive(Default)]
struct Checker {
    issues: Vec<Issue>,
}

impl Checker {
    fn err(&mut self, at: Pos, message: impl Into<String>) {
        self.issues.push(Issue::new(at, message));
    }

    fn pipeline(mut self, raw: RawPipeline) -> Result<Pipeline, Vec<Issue>> {
        self.version(&raw.version);
        self.name("pipeline name", &raw.name);
        let rootfs = self.mirror_ref("rootfs", &raw.rootfs);
        let source_date_epoch = self.epoch(raw.source_date_epoch.as_ref());
        let inputs = self.inputs(&raw.inputs);
        let sources = self.sources(&raw.sources);
        let source_names: Vec<&str> = raw
            .sources
            .0
            .iter()
            .map(|(k, _)| k.value.as_str())
            .collect();
        let steps = self.steps(&raw.steps, &raw.inputs, &source_names);
        let artifacts = self.artifacts(&raw.artifacts, &steps);
        match rootfs {
            Some(rootfs) if self.issues.is_empty() => {
                let step_index: HashMap<String, usize> = steps
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (s.name.clone(), i))
                    .collect();
                let mut dependents = vec![Vec::new(); steps.len()];
                for (i, step) in steps.iter().enumerate() {
                    for need in &step.needs {
                        dependents[step_index[need]].push(i);
                    }
                }
                Ok(Pipeline {
                    name: raw.name.value,
                    rootfs,
                    source_date_epoch,
                    inputs,
                    sources,
                    step_index,
                    dependents,
                    steps,
                    artifacts,
                })
            }
            _ => {
                self.issues.sort_by_key(|i| i.at);
                Err(self.issues)
            }
        }
    }

    fn version(&mut self, version: &Node<u32>) {
        if version.value != 1 {
            let msg = format!("unsupported pipeline version {}: expected 1", version.value);
            self.err(version.at, msg);
        }
    }

    fn epoch(&mut self, epoch: Option<&Node<i64>>) -> i64 {
        match epoch {
            None => 0,
            Some(e) if e.value < 0 => {
                self.err(e.at, "source_date_epoch must not be negative");
                0
            }
            Some(e) => e.value,
        }
    }

    /// Checks a step, input, artifact or pipeline name; returns whether it is valid.
    fn name(&mut self, kind: &str, node: &Node<String>) -> bool {
        let name = &node.value;
        let problem = if name.is_empty() {
            format!("{kind} is empty")
        } else if name.len() > MAX_NAME_LEN {
            format!(
                "{kind} {} is longer than {MAX_NAME_LEN} characters",
                shown(name)
            )
        } else if !is_valid_name(name) {
            format!(
                "invalid {kind} {}: use lowercase letters, digits, '.', '_' and '-', \
                 starting with a letter or digit",
                shown(name)
            )
        } else {
            return true;
        };
        self.err(node.at, problem);
        false
    }

    fn mirror_ref(&mut self, what: &str, node: &Node<String>) -> Option<MirrorRef> {
        node.value
            .parse()
            .map_err(|e| self.err(node.at, format!("invalid {what}: {e}")))
            .ok()
    }

    fn inputs(&mut self, raw: &NodeMap<RawInput>) -> BTreeMap<String, InputDecl> {
        let mut inputs = BTreeMap::new();
        for (name, input) in &raw.0 {
            self.name("input name", name);
            let what = format!("mirror for input {}", shown(&name.value));
            let mirror = self.mirror_ref(&what, &input.mirror);
            let sha256 = input
                .sha256
                .as_ref()
                .and_then(|d| self.digest(&name.value, d));
            if let Some(mirror) = mirror {
                inputs.insert(name.value.clone(), InputDecl { mirror, sha256 });
            }
        }
        inputs
    }

    fn sources(&mut self, raw: &NodeMap<RawSource>) -> BTreeMap<String, SourceDecl> {
        let mut sources = BTreeMap::new();
        for (name, source) in &raw.0 {
            self.name("source name", name);
            let git_ok = self.name("git mirror name", &source.git);
            let commit = self.commit(name, source);
            let git_ref = source
                .git_ref
                .as_ref()
                .and_then(|r| self.git_ref(&name.value, r));
            if let (true, Some(commit)) = (git_ok, commit) {
                let decl = SourceDecl {
                    git: source.git.value.clone(),
                    commit,
                    git_ref,
                };
                sources.insert(name.value.clone(), decl);
            }
        }
        sources
    }

    /// The source's commit: present, and a full id. A branch or tag is never a pin.
    fn commit(&mut self, name: &Node<String>, source: &RawSource) -> Option<String> {
        let src = shown(&name.value);
        let Some(commit) = &source.commit else {
            let (at, msg) = match &source.git_ref {
                Some(r) => (
                    r.at,
                    format!("source {src}: a branch or tag is not pinned: give `commit: <40 hex>`"),
                ),
                None => (
                    name.at,
                    format!("source {src} has no commit: give `commit: <40 hex>`"),
                ),
            };
            self.err(at, msg);
            return None;
        };
        let c = &commit.value;
        if c.len() == 40 && c.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Some(c.clone());
        }
        let msg = format!(
            "invalid commit for source {src}: expected a full commit id, 40 lowercase hex \
             digits, got {}",
            shown(c)
        );
        self.err(commit.at, msg);
        None
    }

    fn git_ref(&mut self, source: &str, node: &Node<String>) -> Option<String> {
        let r = &node.value;
        let bad = r.is_empty()
            || r.len() > 255
            || r.starts_with('-')
            || r.chars().any(|c| c.is_whitespace() || c.is_control());
        if bad {
            let msg = format!(
                "invalid ref for source {}: expected a branch or tag name such as `v1.2`",
                shown(source)
            );
            self.err(node.at, msg);
            return None;
        }
        Some(r.clone())
    }

    fn digest(&mut self, input: &str, node: &Node<String>) -> Option<Sha256Digest> {
        node.value
            .parse()
            .map_err(|e| {
                let msg = format!("invalid sha256 for input {}: {e}", shown(input));
                self.err(node.at, msg);
            })
            .ok()
    }
}

/// Steps: names, references, graph.
impl Checker {
    fn steps(
        &mut self,
        raw: &Node<Vec<RawStep>>,
        inputs: &NodeMap<RawInput>,
        sources: &[&str],
    ) -> Vec<Step> {
        if raw.value.is_empty() {
            self.err(
                raw.at,
                "pipeline has no steps: declare at least one under `steps`",
            );
        }
        let input_names: Vec<&str> = inputs.0.iter().map(|(k, _)| k.value.as_str()).collect();
        self.step_names(&raw.value, &input_names);
        let mut steps: Vec<Step> = raw
            .value
            .iter()
            .map(|s| self.step(s, &input_names, sources))
            .collect();
        let edges = self.needs(&raw.value);
        match topo_order(&edges) {
            Ok(order) => {
                let mut slots: Vec<Option<Step>> = steps.into_iter().map(Some).collect();
                steps = order.iter().filter_map(|&i| slots[i].take()).collect();
            }
            Err(cycles) => {
                for c in cycles {
                    let names: Vec<&str> = c.steps.iter().map(|&i| steps[i].name()).collect();
                    let msg = format!("cycle in `needs`: {} -> {}", names.join(" -> "), names[0]);
                    self.err(c.at, msg);
                }
            }
        }
        steps
    }

    /// Step names: valid, unique, and not the name of an input (both live under `/in`).
    fn step_names(&mut self, steps: &[RawStep], inputs: &[&str]) {
        let mut seen = HashMap::new();
        for step in steps {
            let name = &step.name;
            if !self.name("step name", name) {
                continue;
            }
            if let Some(first) = seen.insert(name.value.as_str(), name.at) {
                let msg = format!(
                    "duplicate step name {}: already declared at line {}",
                    shown(&name.value),
                    first.line
                );
                self.err(name.at, msg);
                seen.insert(name.value.as_str(), first);
            } else if inputs.contains(&name.value.as_str()) {
                let msg = format!(
                    "step name {} is also an input name: both are mounted under /in, rename one",
                    shown(&name.value)
                );
                self.err(name.at, msg);
            }
        }
    }

    fn step(&mut self, raw: &RawStep, inputs: &[&str], sources: &[&str]) -> Step {
        let name = raw.name.value.as_str();
        Step {
            name: name.to_owned(),
            inputs: self.step_inputs(name, "input", &raw.inputs, inputs),
            sources: self.step_inputs(name, "source", &raw.sources, sources),
            needs: raw.needs.iter().map(|n| n.value.clone()).collect(),
            run: self.run(name, &raw.run),
            outputs: self.outputs(name, &raw.outputs),
            timeout: self.timeout(raw.timeout.as_ref()),
            env: self.env(name, &raw.env),
            resources: self.resources(raw.resources.as_ref()),
            requires: self.requires(name, &raw.requires),
        }
    }

    fn requires(&mut self, step: &str, raw: &NodeMap<Node<String>>) -> BTreeMap<String, String> {
        if raw.0.len() > kiln_core::labels::MAX_LABELS {
            let msg = format!(
                "step {} requires {} labels; at most {} are allowed",
                shown(step),
                raw.0.len(),
                kiln_core::labels::MAX_LABELS
            );
            self.err(raw.0[kiln_core::labels::MAX_LABELS].0.at, msg);
        }
        for (key, value) in &raw.0 {
            let escaped_key = crate::diagnostic::escape_controls(&key.value);
            let escaped_value = crate::diagnostic::escape_controls(&value.value);
            if let Some(problem) = kiln_core::labels::label_problem(&escaped_key, &escaped_value) {
                let at = if kiln_core::labels::label_problem(&escaped_key, "x").is_some() {
                    key.at
                } else {
                    value.at
                };
                self.err(
                    at,
                    format!("step {} requires a malformed label: {problem}", shown(step)),
                );
            }
        }
        raw.0
            .iter()
            .map(|(k, v)| (k.value.clone(), v.value.clone()))
            .collect()
    }

    fn resources(&mut self, raw: Option<&RawResources>) -> ResourceRequest {
        let Some(raw) = raw else {
            return ResourceRequest::default();
        };
        ResourceRequest {
            memory_bytes: self.resource(raw.memory.as_ref(), parse_memory),
            pids: self.resource(raw.pids.as_ref(), parse_pids),
            millicpus: self.resource(raw.cpus.as_ref(), parse_cpus),
        }
    }

    fn resource(
        &mut self,
        node: Option<&Node<String>>,
        parse: fn(&str) -> Result<u64, ResourceError>,
    ) -> Option<u64> {
        let node = node?;
        // Parse what a message would show: a valid value is short and plain, so it is the
        // same text; a hostile one is cut short and escaped before it can reach the output.
        let escaped = crate::diagnostic::escape_controls(&node.value);
        let text = match escaped.char_indices().nth(40) {
            Some((cut, _)) => format!("{}…", &escaped[..cut]),
            None => escaped,
        };
        parse(&text)
            .map_err(|e| self.err(node.at, e.to_string()))
            .ok()
    }

    /// A step's `inputs` or `sources` (`kind` says which): each declared, none twice.
    fn step_inputs(
        &mut self,
        step: &str,
        kind: &str,
        used: &[Node<String>],
        declared: &[&str],
    ) -> Vec<String> {
        let mut seen = Vec::new();
        for input in used {
            let name = input.value.as_str();
            if seen.contains(&name) {
                self.err(
                    input.at,
                    format!("step {} lists {kind} {} twice", shown(step), shown(name)),
                );
            } else if !declared.contains(&name) {
                let mut msg = format!(
                    "step {} uses undeclared {kind} {}: declare it under top-level `{kind}s`",
                    shown(step),
                    shown(name)
                );
                suggest(&mut msg, name, declared.iter().copied());
                self.err(input.at, msg);
            }
            seen.push(name);
        }
        used.iter().map(|i| i.value.clone()).collect()
    }

    /// Resolves every step's `needs` to step indices; reports unknown and repeated entries.
    fn needs(&mut self, steps: &[RawStep]) -> Vec<Vec<Edge>> {
        let mut index = HashMap::new();
        for (i, s) in steps.iter().enumerate() {
            index.entry(s.name.value.as_str()).or_insert(i);
        }
        steps.iter().map(|s| self.step_needs(s, &index)).collect()
    }

    fn step_needs(&mut self, step: &RawStep, index: &HashMap<&str, usize>) -> Vec<Edge> {
        let me = shown(&step.name.value);
        let mut edges: Vec<Edge> = Vec::new();
        for need in &step.needs {
            let name = need.value.as_str();
            match index.get(name) {
                Some(&i) if edges.iter().any(|&(n, _)| n == i) => {
                    self.err(
                        need.at,
                        format!("step {me} needs step {} twice", shown(name)),
                    );
                }
                Some(&i) => edges.push((i, need.at)),
                None => {
                    let mut msg = format!("step {me} needs unknown step {}", shown(name));
                    suggest(&mut msg, name, index.keys().copied());
                    self.err(need.at, msg);
                }
            }
        }
        edges
    }

    fn run(&mut self, step: &str, run: &Node<String>) -> String {
        if run.value.trim().is_empty() {
            self.err(
                run.at,
                format!("step {} has an empty `run` command", shown(step)),
            );
        } else if run.value.contains('\0') {
            self.err(
                run.at,
                format!("`run` of step {} contains a NUL character", shown(step)),
            );
        }
        run.value.clone()
    }

    fn outputs(&mut self, step: &str, outputs: &[Node<String>]) -> Vec<String> {
        let mut seen: Vec<&str> = Vec::new();
        for out in outputs {
            let path = out.value.as_str();
            if let Some(problem) = output_path_problem(path) {
                self.err(out.at, problem);
            } else if seen.contains(&path) {
                let msg = format!(
                    "duplicate output path {} in step {}",
                    shown(path),
                    shown(step)
                );
                self.err(out.at, msg);
            }
            seen.push(path);
        }
        outputs.iter().map(|o| o.value.clone()).collect()
    }

    fn timeout(&mut self, timeout: Option<&Node<String>>) -> std::time::Duration {
        let Some(node) = timeout else {
            return DEFAULT_TIMEOUT;
        };
        parse_timeout(&node.value).unwrap_or_else(|e| {
            self.err(node.at, e.to_string());
            DEFAULT_TIMEOUT
        })
    }

    fn env(&mut self, step: &str, env: &NodeMap<Node<String>>) -> BTreeMap<String, String> {
        for (name, value) in &env.0 {
            if let Some(problem) = env_name_problem(step, &name.value) {
                self.err(name.at, problem);
            }
            if value.value.contains('\0') {
                let msg = format!(
                    "environment variable {} contains a NUL character",
                    shown(&name.value)
                );
                self.err(value.at, msg);
            }
        }
        env.0
            .iter()
            .map(|(k, v)| (k.value.clone(), v.value.clone()))
            .collect()
    }
}

/// Artifacts: names, and that each names an existing output of an existing step.
impl Checker {
    fn artifacts(&mut self, raw: &[RawArtifact], steps: &[Step]) -> Vec<Artifact> {
        let mut seen: HashMap<&str, Pos> = HashMap::new();
        for a in raw {
            if self.name("artifact name", &a.name) {
                if let Some(first) = seen.get(a.name.value.as_str()) {
                    let msg = format!(
                        "duplicate artifact name {}: already declared at line {}",
                        shown(&a.name.value),
                        first.line
                    );
                    self.err(a.name.at, msg);
                } else {
                    seen.insert(a.name.value.as_str(), a.name.at);
                }
            }
            self.artifact_source(a, steps);
        }
        raw.iter()
            .map(|a| Artifact {
                name: a.name.value.clone(),
                from: a.from.value.clone(),
                path: a.path.value.clone(),
            })
            .collect()
    }

    fn artifact_source(&mut self, a: &RawArtifact, steps: &[Step]) {
        let art = shown(&a.name.value);
        let Some(step) = steps.iter().find(|s| s.name == a.from.value) else {
            let mut msg = format!(
                "artifact {art} comes from unknown step {}",
                shown(&a.from.value)
            );
            suggest(&mut msg, &a.from.value, steps.iter().map(Step::name));
            self.err(a.from.at, msg);
            return;
        };
        if !step.outputs.contains(&a.path.value) {
            let listed: Vec<String> = step.outputs.iter().map(|o| shown(o)).collect();
            let msg = format!(
                "artifact {art} path {} is not an output of step {} (its outputs: {})",
                shown(&a.path.value),
                shown(&step.name),
                if listed.is_empty() {
                    "none".into()
                } else {
                    listed.join(", ")
                }
            );
            self.err(a.path.at, msg);
        }
    }
}

/// `[a-z0-9][a-z0-9._-]*`
fn is_valid_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
}

/// Why `path` is not a usable output path, if it is not.
fn output_path_problem(path: &str) -> Option<String> {
    let p = shown(path);
    if path.is_empty() {
        Some("output path is empty".into())
    } else if path.starts_with('/') {
        Some(format!(
            "output path {p} is absolute: write it relative to /out"
        ))
    } else if path.split('/').any(|c| c == "..") {
        Some(format!(
            "output path {p} contains `..`: outputs must stay under /out"
        ))
    } else if path.split('/').any(|c| c.is_empty() || c == ".") {
        Some(format!("output path {p} has an empty or `.` component"))
    } else if path.contains('\0') {
        Some(format!("output path {p} contains a NUL character"))
    } else {
        None
    }
}

/// Why `name` may not be set in a step's `env`, if it may not.
fn env_name_problem(step: &str, name: &str) -> Option<String> {
    let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        Some(format!(
            "invalid environment variable name {}: expected [A-Za-z_][A-Za-z0-9_]*",
            shown(name)
        ))
    } else if RESERVED_ENV.contains(&name) {
        Some(format!(
            "step {} cannot set {}: kiln sets PATH, HOME and SOURCE_DATE_EPOCH itself \
             (use top-level `source_date_epoch`)",
            shown(step),
            shown(name)
        ))
    } else {
        None
    }
}

/// Appends "; did you mean `x`?" when a candidate is close to `word`.
fn suggest<'a>(msg: &mut String, word: &str, candidates: impl IntoIterator<Item = &'a str>) {
    if let Some(best) = did_you_mean(word, candidates) {
        msg.push_str(&format!("; did you mean `{best}`?"));
    }
}

/// A user-supplied value for a message: in backticks, control characters escaped, and cut
/// short so a hostile value cannot flood the output.
fn shown(value: &str) -> String {
    const MAX: usize = 80;
    let escaped = crate::diagnostic::escape_controls(value);
    match escaped.char_indices().nth(MAX) {
        Some((cut, _)) => format!("`{}…`", &escaped[..cut]),
        None => format!("`{escaped}`"),
    }
}
