//! What a sandbox looks like, as plain data. [`SandboxSpec`] crosses to the helper process as
//! JSON, so it derives `Serialize`; [`SandboxSpec::check`] is the one place its fields are
//! validated, by [`crate::run`] before the helper starts and by the helper before it mounts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Directories every rootfs must already contain (the store guarantees it; the sandbox never
/// creates them, because the rootfs is shared by many steps and stays read-only).
pub(crate) const REQUIRED_DIRS: [&str; 6] = ["in", "out", "proc", "dev", "tmp", "work"];

/// Longest hostname the kernel accepts.
const HOST_NAME_MAX: usize = 64;

/// One command in one sandbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxSpec {
    /// Extracted rootfs directory on the host, mounted read-only at `/`. Shared by many steps.
    /// Must already contain the empty directories `in/ out/ proc/ dev/ tmp/ work/`.
    pub rootfs: PathBuf,
    /// Host directories mounted read-only at `/in/<name>`.
    pub inputs: Vec<InputMount>,
    /// Host directory mounted read-write at `/out`; the only writable path that persists. It
    /// must be writable by [`IdMap::host_uid`]. `None` for a step that declares no outputs:
    /// its `/out` is then a tmpfs of `scratch_bytes` like `/work`, gone with the sandbox, so
    /// the worker mounts and reads nothing for it.
    pub out_dir: Option<PathBuf>,
    /// Size cap, in bytes, of each of the tmpfs at `/work` (the working directory) and `/tmp`.
    pub scratch_bytes: u64,
    /// The command, e.g. `["/bin/sh", "-c", "make"]`; `argv[0]` is a path inside the rootfs.
    pub argv: Vec<String>,
    /// The complete environment of the command; nothing is inherited.
    pub env: BTreeMap<String, String>,
    /// Who the command runs as.
    pub ids: IdMap,
    /// Wall-clock limit, from namespace creation to the command's exit.
    pub timeout: Duration,
    /// Hostname inside the sandbox's uts namespace.
    pub hostname: String,
    /// Resource limits of the whole step (every process it starts).
    pub limits: Limits,
}

/// Resource limits of one step. cgroup limits (memory, pids, cpu) cover every process of the
/// step together; rlimits apply per process.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Memory (RSS + page cache + tmpfs pages charged to the step), in bytes.
    pub memory_bytes: u64,
    /// Most processes and threads alive at once.
    pub pids: u64,
    /// CPU bandwidth in thousandths of a CPU (1500 = one and a half CPUs).
    pub millicpus: u64,
    /// `RLIMIT_NOFILE` of every process.
    pub open_files: u64,
}

impl Eq for Limits {}

impl Default for Limits {
    /// The defaults a worker uses when neither its config nor the pipeline says otherwise.
    fn default() -> Self {
        Self {
            memory_bytes: 2 << 30,
            pids: 1024,
            millicpus: 2000,
            open_files: 4096,
        }
    }
}

/// A host directory made visible read-only at `/in/<name>` (or `/src/<name>`, see
/// [`MountRoot`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputMount {
    /// Directory on the host.
    pub source: PathBuf,
    /// One path component: the input appears at `<root>/<name>`.
    pub name: String,
    /// Which directory of the sandbox the input appears under.
    #[serde(default)]
    pub root: MountRoot,
}

/// The read-only directories inputs are mounted under. Each is a small tmpfs holding only
/// mount points, made read-only once the inputs are mounted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MountRoot {
    /// `/in`: mirror entries and upstream steps' outputs.
    #[default]
    In,
    /// `/src`: git sources. Present only in a step that has some; the rootfs must then have
    /// an empty `/src` (the store makes one).
    Src,
}

impl MountRoot {
    /// The absolute path inside the sandbox.
    pub fn path(self) -> &'static str {
        match self {
            MountRoot::In => "/in",
            MountRoot::Src => "/src",
        }
    }
}

/// The step's identity inside its user namespace and the host ids it maps to. Exactly one uid
/// and one gid are mapped; neither side may be root.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdMap {
    /// Unprivileged host uid the step's files and processes belong to.
    pub host_uid: u32,
    /// Unprivileged host gid.
    pub host_gid: u32,
    /// Uid inside the sandbox, e.g. 1000.
    pub step_uid: u32,
    /// Gid inside the sandbox, e.g. 1000.
    pub step_gid: u32,
}

/// A spec that cannot describe a sandbox.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("argv is empty: give at least the program to run")]
    EmptyArgv,
    #[error("argv contains a NUL byte")]
    NulInArgv,
    #[error("environment variable name {name:?} is empty or contains '=' or NUL")]
    EnvName { name: String },
    #[error("the value of environment variable {name:?} contains a NUL byte")]
    EnvValue { name: String },
    #[error("{what} {path:?} is not an absolute path")]
    RelativePath { what: &'static str, path: PathBuf },
    #[error("input name {name:?} is not a single path component")]
    InputName { name: String },
    #[error("input name {name:?} is used twice")]
    DuplicateInput { name: String },
    #[error("{which} maps to id 0: a step never runs as or maps to root")]
    RootId { which: &'static str },
    #[error("hostname {hostname:?} must be 1 to 64 bytes without NUL or '/'")]
    Hostname { hostname: String },
    #[error("scratch_bytes is 0: give /work and /tmp some room")]
    NoScratch,
}

impl SandboxSpec {
    /// Checks every field; returns the first problem found.
    pub fn check(&self) -> Result<(), SpecError> {
        self.check_command()?;
        self.check_paths()?;
        check_ids(&self.ids)?;
        let name = &self.hostname;
        if name.is_empty() || name.len() > HOST_NAME_MAX || name.contains(['\0', '/']) {
            return Err(SpecError::Hostname {
                hostname: name.clone(),
            });
        }
        if self.scratch_bytes == 0 {
            return Err(SpecError::NoScratch);
        }
        Ok(())
    }

    fn check_command(&self) -> Result<(), SpecError> {
        if self.argv.is_empty() {
            return Err(SpecError::EmptyArgv);
        }
        if self.argv.iter().any(|arg| arg.contains('\0')) {
            return Err(SpecError::NulInArgv);
        }
        for (name, value) in &self.env {
            if name.is_empty() || name.contains(['=', '\0']) {
                return Err(SpecError::EnvName { name: name.clone() });
            }
            if value.contains('\0') {
                return Err(SpecError::EnvValue { name: name.clone() });
            }
        }
        Ok(())
    }

    fn check_paths(&self) -> Result<(), SpecError> {
        let absolute = |what, path: &PathBuf| match path.is_absolute() {
            true => Ok(()),
            false => Err(SpecError::RelativePath {
                what,
                path: path.clone(),
            }),
        };
        absolute("rootfs", &self.rootfs)?;
        if let Some(out_dir) = &self.out_dir {
            absolute("out_dir", out_dir)?;
        }
        let mut seen = BTreeSet::new();
        for input in &self.inputs {
            absolute("input source", &input.source)?;
            let name = &input.name;
            let bad = name.is_empty() || name == "." || name == ".." || name.len() > 255;
            if bad || name.contains(['/', '\0']) {
                return Err(SpecError::InputName { name: name.clone() });
            }
            if !seen.insert((input.root, name.as_str())) {
                return Err(SpecError::DuplicateInput { name: name.clone() });
            }
        }
        Ok(())
    }
}

fn check_ids(ids: &IdMap) -> Result<(), SpecError> {
    let named = [
        ("host_uid", ids.host_uid),
        ("host_gid", ids.host_gid),
        ("step_uid", ids.step_uid),
        ("step_gid", ids.step_gid),
    ];
    match named.into_iter().find(|(_, id)| *id == 0) {
        Some((which, _)) => Err(SpecError::RootId { which }),
        None => Ok(()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn example() -> SandboxSpec {
        SandboxSpec {
            rootfs: "/store/rootfs/abc".into(),
            inputs: vec![InputMount {
                source: "/data/src".into(),
                name: "src".into(),
                root: MountRoot::In,
            }],
            out_dir: Some("/data/out".into()),
            scratch_bytes: 1 << 20,
            argv: vec!["/bin/sh".into(), "-c".into(), "true".into()],
            env: BTreeMap::from([("PATH".into(), "/bin".into())]),
            ids: IdMap {
                host_uid: 100_000,
                host_gid: 100_000,
                step_uid: 1000,
                step_gid: 1000,
            },
            timeout: Duration::from_secs(10),
            hostname: "kiln".into(),
            limits: Limits::default(),
        }
    }

    #[test]
    fn example_spec_is_valid() {
        assert_eq!(example().check(), Ok(()));
    }

    #[test]
    fn input_names_must_be_one_component() {
        for name in ["", ".", "..", "a/b", "/abs", "nul\0"] {
            let mut spec = example();
            spec.inputs[0].name = name.into();
            assert_eq!(
                spec.check(),
                Err(SpecError::InputName { name: name.into() }),
                "{name:?}"
            );
        }
    }

    #[test]
    fn duplicate_input_names_are_refused() {
        let mut spec = example();
        spec.inputs.push(spec.inputs[0].clone());
        assert_eq!(
            spec.check(),
            Err(SpecError::DuplicateInput { name: "src".into() })
        );
    }

    #[test]
    fn root_ids_are_refused_on_both_sides() {
        let mut spec = example();
        spec.ids.host_uid = 0;
        assert_eq!(spec.check(), Err(SpecError::RootId { which: "host_uid" }));
        let mut spec = example();
        spec.ids.step_gid = 0;
        assert_eq!(spec.check(), Err(SpecError::RootId { which: "step_gid" }));
    }

    #[test]
    fn env_names_with_equals_are_refused() {
        let mut spec = example();
        spec.env.insert("A=B".into(), "x".into());
        assert_eq!(spec.check(), Err(SpecError::EnvName { name: "A=B".into() }));
    }

    #[test]
    fn relative_paths_and_empty_argv_are_refused() {
        let mut spec = example();
        spec.rootfs = "rootfs".into();
        assert!(matches!(
            spec.check(),
            Err(SpecError::RelativePath { what: "rootfs", .. })
        ));
        let mut spec = example();
        spec.argv.clear();
        assert_eq!(spec.check(), Err(SpecError::EmptyArgv));
    }

    #[test]
    fn unknown_fields_are_refused_on_the_wire() {
        let mut json = serde_json::to_value(example()).unwrap();
        json["network"] = "host".into();
        assert!(serde_json::from_value::<SandboxSpec>(json).is_err());
    }
}
