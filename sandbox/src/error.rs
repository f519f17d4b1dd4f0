//! Errors: [`SetupError`] is one variant per operation the helper (or the sandbox's pid 1)
//! performs, carrying the path involved and the kernel's errno. It crosses from the helper to
//! [`crate::run`] as JSON, which is why it is `Serialize`. [`SandboxError`] is what `run`
//! returns.

use std::path::PathBuf;
use std::process::ExitStatus;

use nix::errno::Errno;
use serde::{Deserialize, Serialize};

use crate::spec::SpecError;

/// Why [`crate::run`] could not tell how the command ended.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("invalid sandbox spec")]
    InvalidSpec(#[from] SpecError),
    #[error("cannot encode the sandbox spec (are all paths UTF-8?)")]
    Encode(#[source] serde_json::Error),
    #[error("cannot start the sandbox helper {program}")]
    SpawnHelper {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the sandbox helper's report")]
    ReadReport(#[source] std::io::Error),
    #[error("cannot wait for the sandbox helper")]
    WaitHelper(#[source] std::io::Error),
    #[error("the sandbox helper {status} without a report; the step log may say why")]
    HelperDied { status: ExitStatus },
    #[error("the sandbox helper sent an unreadable report: {message}")]
    BadReport { message: String },
    #[error("cannot set up the sandbox")]
    Setup(#[source] SetupError),
    #[error("cannot start the sandbox launcher {program}")]
    StartLauncher {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the sandbox launcher is gone (its stderr may say why); start a new one")]
    LauncherGone,
    #[error("cannot hand the step to the sandbox launcher")]
    SendRequest(#[source] std::io::Error),
    #[error("the launcher's process for this step died without a report; the step log may say why")]
    SupervisorDied,
}

/// One failed setup operation, reported by the helper.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum SetupError {
    #[error("cannot ask to die with the parent process")]
    ParentDeathSignal(
        #[source]
        #[serde(with = "errno")]
        Errno,
    ),
    #[error("cannot close inherited file descriptors")]
    CloseFds(
        #[source]
        #[serde(with = "errno")]
        Errno,
    ),
    #[error("cannot read the spec on stdin")]
    ReadSpec(
        #[source]
        #[serde(with = "errno")]
        Errno,
    ),
    #[error("cannot decode the spec: {message}")]
    DecodeSpec { message: String },
    #[error("helper protocol version {got}, expected {want}: run the helper from the same build")]
    ProtocolVersion { got: u32, want: u32 },
    #[error("invalid sandbox spec: {message}")]
    InvalidSpec { message: String },
    #[error("the helper has {threads} threads: call helper_main before starting any runtime")]
    NotSingleThreaded { threads: usize },
    #[error("the process that started the helper is gone")]
    Orphaned,
    #[error("cannot point stdin at /dev/null")]
    StdinToDevNull(
        #[source]
        #[serde(with = "errno")]
        Errno,
    ),
    #[error("cannot point stdout at the log")]
    StdoutToLog(
        #[source]
        #[serde(with = "errno")]
        Errno,
    ),
    #[error("cannot open the host's mount namespace")]
    OpenMountNamespace(
        #[source]
        #[serde(with = "errno")]
        Errno,
    ),
    #[error("cannot go back to the host's mount namespace")]
    LeaveMounts(
        #[source]
        #[serde(with = "errno")]
        Errno,
    ),
    #[error("cannot create a mount namespace")]
    UnshareMounts(
        #[source]
        #[serde(with = "errno")]
        Errno,
    ),
    #[error("cannot make / recursively private")]
    MakePrivate(
        #[source]
        #[serde(with = "errno")]
        Errno,
    ),
    #[error("cannot inspect {path}")]
    Inspect {
        path: PathBuf,
        #[source]
        #[serde(with = "errno")]
        source: Errno,
    },
    #[error("{path} is not a directory (symlinks are refused): fix the rootfs in the store")]
    NotADirectory { path: PathBuf },
    #[error("cannot bind-mount {src} at {dst}")]
    Bind {
        src: PathBuf,
        dst: PathBuf,
        #[source]
        #[serde(with = "errno")]
        source: Errno,
    },
    #[error("cannot remount {target} with restricted flags")]
    Remount {
        target: PathBuf,
        #[source]
        #[serde(with = "errno")]
        source: Errno,
    },
    #[error("cannot mount a tmpfs at {target}")]
    Tmpfs {
        target: PathBuf,
        #[source]
        #[serde(with = "errno")]
        source: Errno,
    },
    #[error("cannot create directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        #[serde(with = "errno")]
        source: Errno,
    },
    #[error("cannot create file {path}")]
    CreateFile {
        path: PathBuf,
        #[source]
        #[serde(with = "errno")]
        source: Errno,
    },
    #[error("cannot create symlink {path}")]
    Symlink {
        path: PathBuf,
        #[source]
        #[serde(with = "errno")]
        source: Errno,
    },
    #[error("cannot change directory to {path}")]
    Chdir {
        path: PathBuf,
        #[source]
        #[serde(with = "errno")]
        source: Errno,
    },
    #[error("cannot create a pipe")]
    Pipe(
        #[source]
        #[serde(with = "errno")]
        Errno,
    ),
    #[error("cannot clone into new namespaces")]
    Clone(
        #[source]
        #[serde(with = "errno")]
        Errno,
    ),
    #[error("cannot write {path}")]
    WriteIdMap {
        path: PathBuf,
        #[source]
        #[serde(with = "errno")]
        source: Errno,
    },
    #[error("cannot release the sandbox's pid 1")]
    Release(
        #[source]
        #[serde(with = "errno")]
        Errno,
    ),
    #[error("cannot mount /proc")]
    MountProc(
        #[source]
        #[serde(with = "errno")]
        Errno,
    ),
    #[error("cannot make an unlocked copy of the rootfs mount tree")]
    CloneRootTree(
        #[source]
        #[serde(with = "errno")]
        Errno,
    ),
    #[error("cannot pivot_root into the rootfs")]
    PivotRoot(
        #[source]
        #[serde(with = "errno")]
        Errno,
    ),
    #[error("cannot detach the old root")]
    DetachOldRoot(
        #[source]
        #[serde(with = "errno")]
        Errno,
    ),
    #[error("cannot set the hostname")]
    Hostname(
        #[source]
        #[serde(with = "errno")]
        Errno,
    ),
    #[error("cannot bring the loopback interface up")]
    Loopback(
        #[source]
        #[serde(with = "errno")]
        Errno,
    ),
    #[error("cannot have the kernel reap the launcher's children")]
    ReapChildren(
        #[source]
        #[serde(with = "errno")]
        Errno,
    ),
    #[error("cannot receive a request from the worker")]
    ReceiveRequest(
        #[source]
        #[serde(with = "errno")]
        Errno,
    ),
    #[error("cannot open or go back to the host's network namespace")]
    HostNetwork(
        #[source]
        #[serde(with = "errno")]
        Errno,
    ),
    #[error("cannot prepare a network namespace ahead of time")]
    PremadeNetwork(
        #[source]
        #[serde(with = "errno")]
        Errno,
    ),
    #[error("cannot give the step a cgroup namespace of its own")]
    UnshareCgroup(
        #[source]
        #[serde(with = "errno")]
        Errno,
    ),
    #[error("cannot fork the step from the sandbox's pid 1")]
    Fork(
        #[source]
        #[serde(with = "errno")]
        Errno,
    ),
    #[error("cannot start a new session")]
    Setsid(
        #[source]
        #[serde(with = "errno")]
        Errno,
    ),
    #[error("cannot reset signal dispositions")]
    ResetSignals(
        #[source]
        #[serde(with = "errno")]
        Errno,
    ),
    #[error("cannot drop supplementary groups")]
    SetGroups(
        #[source]
        #[serde(with = "errno")]
        Errno,
    ),
    #[error("cannot switch to gid {gid}")]
    SetGid {
        gid: u32,
        #[source]
        #[serde(with = "errno")]
        source: Errno,
    },
    #[error("cannot switch to uid {uid}")]
    SetUid {
        uid: u32,
        #[source]
        #[serde(with = "errno")]
        source: Errno,
    },
    #[error("cannot drop capabilities")]
    DropCapabilities(
        #[source]
        #[serde(with = "errno")]
        Errno,
    ),
    #[error("cannot set no_new_privs")]
    NoNewPrivs(
        #[source]
        #[serde(with = "errno")]
        Errno,
    ),
    #[error("cannot set {resource} to {limit}: the worker's own hard limit may be lower")]
    RLimit {
        resource: String,
        limit: u64,
        #[source]
        #[serde(with = "errno")]
        source: Errno,
    },
    #[error("cannot install the seccomp filter")]
    Seccomp(
        #[source]
        #[serde(with = "errno")]
        Errno,
    ),
    #[error("cannot mask or make read-only {path}")]
    MaskProc {
        path: PathBuf,
        #[source]
        #[serde(with = "errno")]
        source: Errno,
    },
    #[error("cannot execute {program} inside the sandbox")]
    Exec {
        program: String,
        #[source]
        #[serde(with = "errno")]
        source: Errno,
    },
    #[error("the sandbox's pid 1 exited during setup without saying why")]
    ChildVanished,
    #[error("cannot wait for the sandbox's pid 1")]
    Wait(
        #[source]
        #[serde(with = "errno")]
        Errno,
    ),
    #[error("cannot kill the sandbox's pid 1")]
    Kill(
        #[source]
        #[serde(with = "errno")]
        Errno,
    ),
    #[error("the sandbox's pid 1 exited without reporting the command's status")]
    NoStatus,
    #[error("no usable cgroups: {reason}")]
    NoCgroups { reason: String },
    #[error("cannot create cgroup {path}")]
    CgroupCreate {
        path: PathBuf,
        #[source]
        #[serde(with = "errno")]
        source: Errno,
    },
    #[error(
        "cgroup {path} lacks the {missing} controller(s): run the worker in a leaf of a cgroup \
         subtree delegated to it (e.g. systemd Delegate=yes)"
    )]
    CgroupControllers { path: PathBuf, missing: String },
    #[error("cannot write {value:?} to {path}")]
    CgroupWrite {
        path: PathBuf,
        value: String,
        #[source]
        #[serde(with = "errno")]
        source: Errno,
    },
    #[error("cannot read {path}")]
    CgroupRead {
        path: PathBuf,
        #[source]
        #[serde(with = "errno")]
        source: Errno,
    },
    #[error("cannot kill the processes in cgroup {path}")]
    CgroupSignal {
        path: PathBuf,
        #[source]
        #[serde(with = "errno")]
        source: Errno,
    },
    #[error("{left} process(es) of the step survived being killed in cgroup {path}")]
    CgroupKill { path: PathBuf, left: usize },
    #[error("cannot remove cgroup {path}")]
    CgroupRemove {
        path: PathBuf,
        #[source]
        #[serde(with = "errno")]
        source: Errno,
    },
}

/// Serialises an [`Errno`] as its number.
mod errno {
    use nix::errno::Errno;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(errno: &Errno, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i32(*errno as i32)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Errno, D::Error> {
        i32::deserialize(d).map(Errno::from_raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_errors_survive_the_pipe_with_path_and_errno() {
        let err = SetupError::Bind {
            src: "/a".into(),
            dst: "/b".into(),
            source: Errno::EACCES,
        };
        let json = serde_json::to_string(&err).unwrap();
        let back: SetupError = serde_json::from_str(&json).unwrap();
        assert_eq!(back, err);
        let source = std::error::Error::source(&back).unwrap().to_string();
        assert!(source.contains("EACCES"), "{source}");
        assert_eq!(back.to_string(), "cannot bind-mount /a at /b");
    }
}
