//! What runs inside the new namespaces: the sandbox's pid 1 (finishes the mount namespace:
//! `/proc` with `hidepid=2` and its host-wide parts masked, then forks the step and reaps) and
//! the step itself (rlimits, drops every privilege, `no_new_privs`, seccomp, then execs).
//!
//! Setup errors are written as JSON to the `errors` pipe, which is close-on-exec: the helper
//! reads EOF with no bytes exactly when the step's `execve` succeeded.

use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::resource::{Resource, setrlimit};
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{
    Gid, Pid, Uid, chdir, execve, pivot_root, read, setgroups, setresgid, setresuid,
};

use crate::error::SetupError;
use crate::helper::Network;
use crate::mounts;
use crate::seccomp;
use crate::spec::SandboxSpec;
use crate::sys;

/// Pipe ends the sandbox's pid 1 starts with.
pub(crate) struct Pid1Pipes {
    /// Read end: one byte once the id maps are written; EOF if the helper died. Read just
    /// before forking the step.
    pub release: OwnedFd,
    /// Write end for a JSON [`SetupError`].
    pub errors: OwnedFd,
    /// Write end for the step's wait status, as [`encode_status`] bytes.
    pub status: OwnedFd,
}

/// Entry point of the sandbox's pid 1, right after `clone3`. Never returns.
pub(crate) fn pid1(spec: &SandboxSpec, network: Network, pipes: Pid1Pipes) -> ! {
    let Pid1Pipes {
        release,
        errors,
        status,
    } = pipes;
    match prepare(spec, network) {
        Ok(()) => {}
        Err(err) => fail(&errors, &err),
    }
    // Only the step needs the id maps and the cgroup: wait for them now, so that the helper
    // makes them while this process sets up.
    if !matches!(read(release.as_fd(), &mut [0u8]), Ok(1)) {
        sys::exit_now(1); // the helper is gone; nobody to report to
    }
    // The helper has moved this process into the step's cgroup: a cgroup namespace made now is
    // rooted there, so the step sees `/` as its cgroup, not the host's path.
    if let Err(source) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP) {
        fail(&errors, &SetupError::UnshareCgroup(source));
    }
    // The step shares this process's memory until its `execve` (see `sys::spawn_sharing_memory`).
    let mut stack = vec![0u8; STEP_SETUP_STACK];
    let spawned = sys::spawn_sharing_memory(
        &mut stack,
        Box::new(|| {
            let err = exec_step(spec);
            fail(&errors, &err)
        }),
    );
    match spawned {
        Ok(child) => {
            drop(errors);
            reap(child, &status)
        }
        Err(source) => fail(&errors, &SetupError::Fork(source)),
    }
}

/// The stack the step sets itself up on before its `execve`: dropping privileges, the seccomp
/// filter, or serialising a setup error need a few KiB; pages never touched cost nothing.
const STEP_SETUP_STACK: usize = 256 * 1024;

/// Finishes the sandbox: `/proc`, root, hostname, loopback (in a fresh network namespace; a
/// pre-made one has it up already). Needs the capabilities a new user namespace grants, not
/// the id maps.
fn prepare(spec: &SandboxSpec, network: Network) -> Result<(), SetupError> {
    // Die with the helper; waiting for the release byte closes the race with its death.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(SetupError::ParentDeathSignal)?;
    // Nobody inside may hold the helper's report pipe (its stdout): point stdout at the log.
    nix::unistd::dup2_stdout(std::io::stderr()).map_err(SetupError::StdoutToLog)?;
    // The cwd is the rootfs bind mount (see `helper::spawn_pid1`). A fresh proc belongs to the
    // new pid namespace; it must be mounted while the host's /proc is still visible.
    // hidepid: the step sees only its own processes (pid 1, unmapped root, is invisible).
    let proc_flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(
        Some("proc"),
        "proc",
        Some("proc"),
        proc_flags,
        Some(mounts::PROC_OPTIONS),
    )
    .map_err(SetupError::MountProc)?;
    // The rootfs mount was copied into this namespace, so it is locked and pivot_root refuses
    // it as new root; a fresh copy of the tree is not (its submounts stay locked).
    let tree = sys::clone_cwd_tree().map_err(SetupError::CloneRootTree)?;
    nix::unistd::fchdir(&tree).map_err(|source| SetupError::Chdir {
        path: "/".into(),
        source,
    })?;
    drop(tree);
    // Stack the old root under the new one, then detach it: the host tree is unreachable.
    pivot_root(".", ".").map_err(SetupError::PivotRoot)?;
    umount2(".", MntFlags::MNT_DETACH).map_err(SetupError::DetachOldRoot)?;
    chdir("/").map_err(|source| SetupError::Chdir {
        path: "/".into(),
        source,
    })?;
    // Hide or freeze the host-wide parts of /proc. These mounts are made by this namespace's
    // owner, so a step that got a new user namespace could not unmount them either (they would
    // be locked in its copy).
    mounts::mask_proc()?;
    nix::unistd::sethostname(&spec.hostname).map_err(SetupError::Hostname)?;
    match network {
        Network::Fresh => sys::loopback_up().map_err(SetupError::Loopback),
        Network::Premade => Ok(()),
    }
}

/// Runs as the step's parent until the step exits, reaping whatever gets reparented here; then
/// reports the step's status and exits, which kills everything left in the pid namespace.
fn reap(step: Pid, status: &OwnedFd) -> ! {
    loop {
        match waitpid(None::<Pid>, None) {
            Ok(WaitStatus::Exited(pid, code)) if pid == step => report(status, 0, code),
            Ok(WaitStatus::Signaled(pid, signal, _)) if pid == step => {
                report(status, 1, signal as i32)
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => sys::exit_now(1),
        }
    }
}

fn report(status: &OwnedFd, kind: i32, value: i32) -> ! {
    let _ = nix::unistd::write(status, &encode_status(kind, value));
    sys::exit_now(0)
}

/// Wire form of a wait status on the status pipe: kind (0 exited, 1 signaled), then the value.
pub(crate) fn encode_status(kind: i32, value: i32) -> [u8; 8] {
    let mut bytes = [0u8; 8];
    bytes[..4].copy_from_slice(&kind.to_ne_bytes());
    bytes[4..].copy_from_slice(&value.to_ne_bytes());
    bytes
}

/// In the step: drops privileges and execs. Returns only on failure.
fn exec_step(spec: &SandboxSpec) -> SetupError {
    match drop_privileges(spec) {
        Ok(()) => {}
        Err(err) => return err,
    }
    if let Err(source) = chdir("/work") {
        return SetupError::Chdir {
            path: "/work".into(),
            source,
        };
    }
    // `check` refused NUL bytes, so these conversions cannot fail.
    let cstring = |s: String| CString::new(s).unwrap_or_default();
    let argv: Vec<CString> = spec.argv.iter().cloned().map(cstring).collect();
    let env: Vec<CString> = spec
        .env
        .iter()
        .map(|(k, v)| cstring(format!("{k}={v}")))
        .collect();
    // Last step before exec: from here on, the policy applies (execve itself is allowed).
    if let Err(source) = seccomp::install() {
        return SetupError::Seccomp(source);
    }
    let Err(source) = execve(&argv[0], &argv, &env);
    SetupError::Exec {
        program: spec.argv[0].clone(),
        source,
    }
}

/// New session (no controlling terminal), default signals, rlimits, no groups, the step's ids,
/// no capabilities, `no_new_privs`.
fn drop_privileges(spec: &SandboxSpec) -> Result<(), SetupError> {
    nix::unistd::setsid().map_err(SetupError::Setsid)?;
    sys::reset_signals().map_err(SetupError::ResetSignals)?;
    set_rlimits(spec)?;
    sys::drop_bounding_set().map_err(SetupError::DropCapabilities)?;
    setgroups(&[]).map_err(SetupError::SetGroups)?;
    let (uid, gid) = (spec.ids.step_uid, spec.ids.step_gid);
    let g = Gid::from_raw(gid);
    setresgid(g, g, g).map_err(|source| SetupError::SetGid { gid, source })?;
    let u = Uid::from_raw(uid);
    setresuid(u, u, u).map_err(|source| SetupError::SetUid { uid, source })?;
    sys::clear_capabilities().map_err(SetupError::DropCapabilities)?;
    nix::sys::prctl::set_no_new_privs().map_err(SetupError::NoNewPrivs)
}

/// Soft and hard limits alike, so the step cannot raise them: no core dumps (they would land in
/// /work, fill the scratch and may hold secrets from memory), and `limits.open_files`
/// descriptors. Lowering needs no privilege; raising `RLIMIT_NOFILE` above the hard limit the
/// worker was started with would need `CAP_SYS_RESOURCE` on the host, which the step lacks.
fn set_rlimits(spec: &SandboxSpec) -> Result<(), SetupError> {
    let limits = [
        (Resource::RLIMIT_CORE, "RLIMIT_CORE", 0),
        (
            Resource::RLIMIT_NOFILE,
            "RLIMIT_NOFILE",
            spec.limits.open_files,
        ),
    ];
    for (resource, name, limit) in limits {
        setrlimit(resource, limit, limit).map_err(|source| SetupError::RLimit {
            resource: name.into(),
            limit,
            source,
        })?;
    }
    Ok(())
}

/// Reports `err` to the helper and exits.
fn fail(errors: &OwnedFd, err: &SetupError) -> ! {
    if let Ok(json) = serde_json::to_vec(err) {
        let mut rest = &json[..];
        while let Ok(n @ 1..) = nix::unistd::write(errors, rest) {
            rest = &rest[n..];
        }
    }
    sys::exit_now(127)
}
