//! kiln's Linux sandbox: runs one command in a fresh set of namespaces described by a plain
//! [`SandboxSpec`], and reports how it ended.
//!
//! # Shape
//!
//! [`run`] may be called from a multi-threaded (tokio) program. It starts a small synchronous
//! *helper* process ([`HelperCommand`], in practice `kiln-sandbox-helper` from a sealed memfd
//! ([`HelperImage`]) or `kiln sandbox-helper`, whose `main` is [`helper_main`]), sends it the spec as JSON on stdin and reads one JSON report back on the
//! helper's stdout. The helper's stderr is the step log: the step's stdout and stderr both go
//! there. Namespace setup never happens in the worker itself, because `unshare` and a
//! multi-threaded runtime do not mix.
//!
//! A worker runs its steps through a [`Launcher`] instead: the same helper binary started once,
//! with a socket on stdin, which keeps a process forked ahead of time for the next step (its
//! network namespace and cgroup already made) and runs the same steps below in it. The spec
//! and the report travel as with [`run`], over a stream socket per step whose other end, with
//! the step log, reaches the launcher by `SCM_RIGHTS`.
//!
//! The helper, single-threaded from start to exec:
//!
//! 1. sanitises itself: dies with its parent, closes every inherited descriptor but 0–2;
//! 2. reads and checks the spec, points stdin at `/dev/null`;
//! 3. as real root, in a private mount namespace, bind-mounts the rootfs onto itself, makes it
//!    read-only, and mounts `/in/<name>` (ro), `/out` (rw), `/work` and `/tmp` (size-capped
//!    tmpfs owned by the step) and a minimal read-only `/dev` under it ([`mounts`]). Doing this
//!    as real root, before any user namespace exists, avoids path-permission trouble when the
//!    data dir sits under a `0700` directory such as `/root`;
//! 4. `clone3`s the step's pid 1 into new user, mount, pid, network (or a pre-made one, see
//!    [`Launcher`]), ipc and uts namespaces. The mounts copied into the new (less privileged) mount namespace are
//!    *locked*: nothing inside can remount them read-write or unmount them to reveal what is
//!    underneath;
//! 5. writes the child's `uid_map`/`gid_map` (`STEP_ID HOST_ID 1`), creates the step's cgroup
//!    with its limits and moves the child into it (through a [`Launcher`], the child was born
//!    there instead: see `cloner`), releases it and returns to the host's mount namespace (its
//!    private one is no longer needed);
//! 6. waits on the child's pidfd with the spec's timeout; on expiry SIGKILLs the pid 1, which
//!    makes the kernel kill everything left in the pid namespace;
//! 7. kills whatever is left in the step's cgroup (pid 1 was in it before it forked the step,
//!    so every process of the step is), reads [`ResourceUsage`] and [`LimitEvent`]s into the [`RunReport`],
//!    reports, then removes the cgroup. Memory, pids and CPU limits come from [`Limits`], through cgroup v2
//!    where the machine has it with `memory` and `pids`, else the v1 hierarchies.
//!
//! Inside, the pid 1 mounts a fresh `/proc`, `pivot_root`s into the rootfs and detaches the
//! old root, sets the hostname, brings `lo` up (in a fresh network namespace), waits for the
//! release, makes its cgroup namespace (rooted at the step's cgroup), then forks the step and
//! reaps: when the step
//! exits, pid 1 reports its wait status and exits, so daemonised leftovers die with the
//! namespace. Its `/proc` has `hidepid=2` and the host-wide files masked. The step sets its
//! rlimits (no core dumps, `open_files` descriptors), drops supplementary groups, takes the step
//! uid/gid, empties every capability set, sets `no_new_privs`, changes to `/work`, installs the
//! seccomp filter (`sandbox/policy/seccomp.json`, compiled at build time) and execs with
//! exactly the given environment. Everything the helper mounted lives in mount namespaces that
//! vanish once the helper and pid 1 have left them: nothing leaks onto the host.
//!
//! # Deliberately absent
//!
//! This crate knows nothing of pipelines, the store, databases or the mirror; it never creates
//! directories in the rootfs (see the module docs of [`helper`], which also say where this
//! design deviates from the obvious recipe and why). It uses no cgroup library: cgroup v1 and
//! v2 are plain files behind one trait (`cgroup::StepCgroup`).
//!
//! # Unsafe
//!
//! Only the private `sys` module may use `unsafe`; every block is small and says why it holds.

mod cgroup;
mod child;
mod cloner;
mod error;
pub mod helper;
mod image;
mod launcher;
pub mod mounts;
mod protocol;
mod run;
mod seccomp;
mod serve;
mod spec;
mod sys;

pub use cgroup::step_cgroup_parents;
pub use error::{SandboxError, SetupError};
pub use helper::helper_main;
pub use image::{HelperImage, ImageError};
pub use launcher::Launcher;
pub use mounts::{Description, describe};
pub use run::{
    HelperCommand, LimitEvent, Outcome, ResourceUsage, RunReport, Timing, run, run_report,
};
pub use spec::{IdMap, InputMount, Limits, MountRoot, SandboxSpec, SpecError};
