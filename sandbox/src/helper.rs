//! The sandbox helper: a small synchronous process that builds one step's sandbox as real root
//! and supervises it. It is single-threaded from start to exec and never returns to its
//! caller. It runs either as its own process, started by [`crate::run`] for one step, or as a
//! process the launcher (`serve`, started once per worker by [`crate::Launcher`]) forked for
//! the step, which hands it a cgroup and a network namespace made ahead of time, and a cloner
//! already in that cgroup ([`crate::cloner`]) (`Prepared`).
//!
//! # Order of operations
//!
//! sanitise (die with parent, refuse extra threads, close inherited descriptors) → read and
//! check the spec → (one-shot only: find the cgroup layout, sweep stale step cgroups) → private
//! mount namespace → mount plan under the rootfs ([`crate::mounts`]) → `clone3` pid 1 into new
//! user/mount/pid/ipc/uts namespaces and a new network namespace (or keep the pre-made one it
//! is in), through the cloner if there is one (pid 1 is then born in the step's cgroup) → while
//! pid 1 finishes its mount namespace: write its id maps, create the step's cgroup (or take the
//! pre-made one) with its limits, move pid 1 into it unless it was born there
//! ([`crate::cgroup`]), reap the cloner → release pid 1, which makes its cgroup namespace and
//! forks the step → go back to the host's mount namespace → wait for the step's exec (or a
//! setup error) → wait for pid 1's exit or the deadline → kill whatever is left in the cgroup,
//! read usage and limit events → report, close stdout (the reader's EOF) → remove the cgroup,
//! exit.
//!
//! # Choices made on this machine (kernel 6.18, root), and why
//!
//! - Mounts are made as real root before the user namespace exists (no path-permission
//!   trouble under `0700` data dirs), then copied, *locked*, into the step's mount namespace.
//! - Deviation from the suggested recipe: `pivot_root(".", ".")` fails with `EINVAL` on the
//!   copied rootfs mount, because the kernel refuses a locked mount as new root. Pid 1 first
//!   makes a fresh recursive copy of the tree with `open_tree(OPEN_TREE_CLONE | AT_RECURSIVE)`
//!   and attaches it onto itself with `move_mount`: the root of such a copy is unlocked, its
//!   submounts (`/in/*`, `/out`, …) stay locked. Then `pivot_root` and `umount2(".",
//!   MNT_DETACH)` work.
//! - `clone3` with `CLONE_PIDFD` rather than `clone`: one syscall gives the child and a pidfd to
//!   `poll` with the timeout, with no timer signal and no pid reuse race.
//! - `/proc` is mounted by pid 1 *before* `pivot_root`: the kernel only lets a user namespace
//!   mount proc while a fully visible proc is present in its mount namespace.
//! - The id maps are written by the helper (root in the initial namespace), so setgroups stays
//!   allowed and the step can drop the supplementary groups it inherited from root. Pid 1 sets
//!   up while the helper writes them; it waits for them only before forking the step.
//! - The caps a new user namespace grants are not dropped by `setresuid` (uid 0 is not mapped
//!   inside, so the kernel's "leaving root" rule does not fire): the step empties the bounding
//!   set and every capability set explicitly.
//! - Ignored signals survive `execve` and the Rust runtime ignores SIGPIPE: the step resets
//!   every disposition with raw `rt_sigaction` (glibc refuses its reserved signals).
//! - Pid 1 (the reaper) keeps host uid 0, unmapped inside: the step cannot signal or ptrace it,
//!   and only the helper (outside the pid namespace) can kill it.
//! - Once pid 1 is released, the helper `setns`es back to the host's mount namespace, so the
//!   private one is torn down in parallel with the step's start instead of at the helper's exit.
//! - Through a launcher, pid 1 is cloned *in* the step's cgroup by the standby's cloner, which
//!   moved itself there while the standby waited for its step ([`crate::cloner`]): moving a
//!   process between cgroups waits for an RCU grace period (~12 ms here) whenever none moved in
//!   the last ~10–20 ms, which is the usual case between the steps of a DAG. The helper itself
//!   never enters the cgroup (its kill, freezer, usage and OOM choice concern the step alone).
//!   Without a cloner (the one-shot helper, or the cloner is gone) pid 1 is cloned outside and
//!   moved in (one `cgroup.procs` write per hierarchy) while it sets up. Either way it makes its
//!   cgroup namespace itself once released; before that it runs only kiln's code.
//! - The cgroup is removed after the report, not before: `rmdir` waits for the lock that a
//!   cloner's move holds through the grace period.
//! - A pre-made network namespace belongs to the host's user namespace: pid 1 cannot bring `lo`
//!   up in it (the launcher did), and nothing in the sandbox holds any capability over it.
//!
//! # Cost (see `scripts/bench-sandbox.sh`)
//!
//! On this 2-core VM (`-n 200`, load 1–2), `true` takes a median 2.8–3.0 ms end to end through
//! the launcher: 0.82–0.84× a bare `bwrap --unshare-all --ro-bind ROOTFS / true` in the same
//! run (3.4–3.6 ms), 0.63–0.69× bwrap doing the same mounts and privilege drop. The one-shot
//! helper takes 4.9–5.8 ms (1.4–1.7×); before the launcher every step took that path, ~6.2 ms,
//! 1.9×. Re-measured with the cloner (2026-11-22 05:18–05:21, load 2.3–4.8): 0.98× in
//! `scripts/bench-sandbox.sh`, and 0.82–0.86× in an A/B in the same window where the launcher
//! without it took 1.64–1.81× (it paid the cgroup move's grace period under that load). Where
//! the launcher's time goes, from timestamps per phase (medians, before the cloner):
//!
//! - ~0.5 ms before this code runs and after it reports: the request and the report over the
//!   sockets, waking the standby process (forking the `kiln` binary per request instead cost
//!   ~0.4 ms more; exec'ing it, as the one-shot helper does, ~1.5 ms more);
//! - reading the spec 0.09 ms, the mount plan 0.25 ms, `clone3` 0.2 ms (~0.6 ms more with a
//!   new network namespace, which the launcher's pool takes off the path);
//! - id maps 0.04 ms, limits 0.13 ms, moving pid 1 into the cgroup 0.12 ms, in parallel with
//!   pid 1's own setup (`/proc`, `pivot_root`, the 11 `/proc` masks, hostname). The move waits
//!   for an RCU grace period whenever no cgroup migration happened on the machine in the last
//!   ~10–20 ms: measured here (2026-11-22, a `cgroup.procs` write after a pause), 0.2 ms after
//!   a 10 ms pause, 12 ms median (p90 16–20 ms) after 20–50 ms. Steps back to back (this
//!   benchmark) rarely pay it; the steps of a DAG nearly all did (strace: p50 11.6 ms per move
//!   during a chain). Through the launcher no process is moved on the critical path any more:
//!   the standby's cloner moves into the cgroup while it waits, pid 1 is cloned there
//!   ([`crate::cloner`]; the cloner's fork, decode, clone and exit add ~0.3–0.5 ms of CPU per
//!   step, not on the path). `favordynmods` on the cgroup mounts would also remove the wait, at
//!   a cost to every fork on the host: an operator's choice, not kiln's;
//! - the step's privilege drop, seccomp and exec 0.4 ms after the release (installing the
//!   filter cost ~0.3 ms more as seccompiler's linear program: see `build.rs`), `true` and pid
//!   1's exit 0.55 ms;
//! - kill check, usage, events and `rmdir` of the cgroup 0.23 ms (measured before the cloner);
//!   the `rmdir` now comes after the report (it waits for the cgroup mutex while another
//!   helper's cloner moves).
//!
//! In the DAG benchmark (`scripts/bench-dag.sh`, docs/benchmarks.md; 2026-11-22 05:06–05:20,
//! load 3–13 on the 2 cores), per chained step through daemon and workers, medians of two
//! runs: the launcher's round trip 5.1–5.6 ms, of which this code's setup to the step's exec
//! 3.0–3.3 ms and the command to pid 1's exit 1.3 ms; the chain took 1.86–2.11× (paired
//! 1.60–2.11) ninja running the same steps in `bwrap --unshare-all` (from 2.2–3.8× before the
//! cloner, the work dir removal off the path and the standby restart, at other times; in one
//! window against the binary before them, 2.2–2.3× against 2.4–3.0×; the goal is 1.5×). What is left there is spread out: the claim and
//! report round trips, the launcher, `/out`, pid 1's setup under load.
//!
//! # Not yet
//!
//! No `/dev/shm`, `/dev/pts` or `/sys`; no I/O or cpuset limits. (The rlimits,
//! the `/proc` masks and the seccomp filter are applied inside, see [`crate::child`] and
//! `sandbox/policy/README.md`.) The step's network is loopback only, by construction (a network
//! namespace of its own, never used before).

use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::{MsFlags, mount};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{Pid, chdir, pipe2};

use crate::cgroup::{self, Layout};
use crate::child::{self, Pid1Pipes};
use crate::cloner::Cloner;
use crate::error::SetupError;
use crate::mounts::{self, errno_of};
use crate::protocol::{self, HelperReport};
use crate::run::{LimitEvent, Outcome, RunReport, Timing};
use crate::spec::SandboxSpec;
use crate::sys::{self, Cloned};

/// Namespaces the step's pid 1 is cloned into, besides the network one (see [`Network`]). Its
/// cgroup namespace is made by pid 1 itself, once it is in the step's cgroup.
pub(crate) const NAMESPACES: CloneFlags = CloneFlags::CLONE_NEWUSER
    .union(CloneFlags::CLONE_NEWNS)
    .union(CloneFlags::CLONE_NEWPID)
    .union(CloneFlags::CLONE_NEWIPC)
    .union(CloneFlags::CLONE_NEWUTS);

/// Where the step's network namespace comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Network {
    /// Pid 1 is cloned into a new one and brings `lo` up itself.
    Fresh,
    /// The helper already entered one made ahead of time, with `lo` up, and never used before
    /// (the launcher's pool). It belongs to the host's user namespace: nothing in the sandbox,
    /// not even pid 1, holds a capability over it.
    Premade,
}

/// What the process that started [`supervise`] prepared for it.
pub(crate) struct Prepared {
    /// The machine's cgroup layout, when already known (the launcher detects it once and
    /// sweeps stale step cgroups itself); `None`: detect it and sweep now.
    pub layout: Option<Layout>,
    pub network: Network,
    /// This process's step cgroup, made ahead of time without limits (a launcher's standby
    /// process); `None`: make it once pid 1 is cloned.
    pub cgroup: Option<cgroup::Guard>,
    /// A child already in that cgroup, to clone pid 1 there ([`crate::cloner`]); `None`: clone
    /// pid 1 here and move it in.
    pub cloner: Option<Cloner>,
}

/// Entry point of the helper process (`kiln sandbox-helper`, `kiln-sandbox-helper`).
///
/// Call it first thing in `main`, before starting an async runtime, a logger or anything that
/// opens descriptors: it closes every descriptor above 2 and refuses to run with more than one
/// thread. Start it directly (not through a forking wrapper such as `sudo`): it must be a
/// direct child of the process calling [`crate::run`] or [`crate::Launcher::start`].
///
/// With a socket on stdin it is the long-lived launcher (see [`crate::Launcher`]) and runs
/// until the socket is hung up. Otherwise it builds one sandbox: it writes one report on stdout
/// and exits 0; any other exit status means it crashed.
pub fn helper_main() -> ! {
    if stdin_is_socket() {
        crate::serve::serve()
    }
    report_and_exit(Prepared {
        layout: None,
        network: Network::Fresh,
        cgroup: None,
        cloner: None,
    })
}

fn stdin_is_socket() -> bool {
    nix::sys::stat::fstat(std::io::stdin()).is_ok_and(|st| {
        nix::sys::stat::SFlag::from_bits_truncate(st.st_mode) & nix::sys::stat::SFlag::S_IFMT
            == nix::sys::stat::SFlag::S_IFSOCK
    })
}

/// Builds and supervises one sandbox, writes the report on stdout, exits.
pub(crate) fn report_and_exit(prepared: Prepared) -> ! {
    let (report, cgroup) = match supervise(prepared) {
        Ok((report, cgroup)) => (HelperReport::Finished(report), Some(cgroup)),
        Err(err) => (HelperReport::Failed(err), None),
    };
    let json = serde_json::to_vec(&report).unwrap_or_default();
    let mut rest = &json[..];
    while let Ok(n @ 1..) = nix::unistd::write(std::io::stdout(), rest) {
        rest = &rest[n..];
    }
    // EOF for the reader now, rather than once the kernel has torn this process down.
    let _ = nix::unistd::close(1);
    // The step's cgroup is empty: remove it now, after the report, because `rmdir` takes the
    // lock that another helper's cgroup migration holds through an RCU grace period (a
    // launcher's cloner moving in: see `crate::cloner`). The one-shot helper's caller waits
    // for this process's exit, so it finds the cgroup gone either way.
    drop(cgroup);
    sys::exit_now(0)
}

/// Builds and supervises the sandbox; returns the report and the step's cgroup, emptied, for
/// the caller to remove once it has reported.
fn supervise(prepared: Prepared) -> Result<(RunReport, cgroup::Guard), SetupError> {
    let started = Instant::now();
    sanitise_keeping(prepared.cloner.as_ref())?;
    let (spec, raw) = read_spec()?;
    // The cloner decodes the request while the mounts are made here.
    let cloner = prepared.cloner.and_then(|cloner| cloner.send_request(&raw));
    let layout = match prepared.layout {
        Some(layout) => layout,
        None => {
            let layout = cgroup::detect()?;
            cgroup::sweep_stale(&layout);
            layout
        }
    };
    let host_mounts = enter_private_mount_namespace()?;
    mounts::check_rootfs(&spec)?;
    mounts::apply(&spec.rootfs, &mounts::plan(&spec))?;
    let rootfs = &spec.rootfs;
    chdir(rootfs).map_err(|source| SetupError::Chdir {
        path: rootfs.clone(),
        source,
    })?;
    let deadline = Instant::now() + spec.timeout;
    let pid1 = spawn_pid1(&spec, prepared.network, cloner.as_ref())?;
    // While pid 1 finishes its mount namespace: its id maps, then its cgroup (see
    // `crate::cgroup`). Dropping the guard on any early return kills whatever of the step is
    // left and removes the cgroup.
    write_id_maps(pid1.pid, &spec)?;
    let cgroup = match prepared.cgroup {
        Some(mut made) => made.set_limits(&spec.limits).map(|()| made)?,
        None => cgroup::create(&layout, &spec.limits)?,
    };
    if !pid1.born_in_cgroup {
        cgroup.get().add(pid1.pid)?;
    }
    // Nothing but pid 1 may be in the cgroup once the step can fork.
    if let Some(cloner) = cloner {
        cloner.reap();
    }
    nix::unistd::write(&pid1.release, &[1]).map_err(SetupError::Release)?;
    // pid 1 has its own copy of the tree. Going back to the host's mount namespace tears the
    // private one down here, while the step starts, rather than at exit while `run` waits.
    setns(host_mounts, CloneFlags::CLONE_NEWNS).map_err(SetupError::LeaveMounts)?;
    if !wait_for_exec(&pid1, deadline)? {
        let setup = started.elapsed();
        let outcome = time_out(&pid1)?;
        let timing = Timing {
            setup,
            command: Duration::ZERO,
        };
        return settle(&cgroup, outcome, timing).map(|report| (report, cgroup));
    }
    let setup = started.elapsed();
    let outcome = wait_for_exit(&pid1, deadline)?;
    let timing = Timing {
        setup,
        command: started.elapsed() - setup,
    };
    settle(&cgroup, outcome, timing).map(|report| (report, cgroup))
}

/// Kills whatever of the step is left in its cgroup (pid 1's exit already took the pid
/// namespace down; this catches anything that got out of it), reads usage and limit events.
fn settle(
    cgroup: &cgroup::Guard,
    outcome: Outcome,
    timing: Timing,
) -> Result<RunReport, SetupError> {
    let (usage, mut events) = cgroup.settle()?;
    if outcome == Outcome::TimedOut {
        events.push(LimitEvent::Timeout);
    }
    Ok(RunReport {
        outcome,
        timing,
        usage,
        events,
    })
}

/// Dies with the parent, refuses to run multi-threaded, closes inherited descriptors.
pub(crate) fn sanitise() -> Result<(), SetupError> {
    sanitise_keeping(None)
}

/// [`sanitise`], but keeps the socket to `cloner`, if any.
fn sanitise_keeping(cloner: Option<&Cloner>) -> Result<(), SetupError> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(SetupError::ParentDeathSignal)?;
    let threads = std::fs::read_dir("/proc/self/task").map_or(1, Iterator::count);
    if threads != 1 {
        return Err(SetupError::NotSingleThreaded { threads });
    }
    match cloner {
        Some(cloner) => sys::close_all_above_2_but(cloner.socket_fd()),
        None => sys::close_from(3),
    }
    .map_err(SetupError::CloseFds)
}

/// Reads the request on stdin, checks it, then points stdin at `/dev/null` for the step.
/// Returns the spec and the request as read.
fn read_spec() -> Result<(SandboxSpec, Vec<u8>), SetupError> {
    let mut bytes = Vec::new();
    std::io::stdin()
        .lock()
        .read_to_end(&mut bytes)
        .map_err(|err| SetupError::ReadSpec(errno_of(&err)))?;
    let request = protocol::decode_request(&bytes)?;
    if nix::unistd::getppid().as_raw() != request.parent_pid {
        return Err(SetupError::Orphaned);
    }
    let spec = request.spec;
    spec.check().map_err(|err| SetupError::InvalidSpec {
        message: err.to_string(),
    })?;
    let null = nix::fcntl::open(
        "/dev/null",
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(SetupError::StdinToDevNull)?;
    nix::unistd::dup2_stdin(null).map_err(SetupError::StdinToDevNull)?;
    Ok((spec, bytes))
}

/// A mount namespace of our own where nothing propagates back to the host. Returns the host's
/// mount namespace, to go back to once pid 1 has its copy.
fn enter_private_mount_namespace() -> Result<OwnedFd, SetupError> {
    let flags = OFlag::O_RDONLY | OFlag::O_CLOEXEC;
    let host = nix::fcntl::open("/proc/self/ns/mnt", flags, nix::sys::stat::Mode::empty())
        .map_err(SetupError::OpenMountNamespace)?;
    unshare(CloneFlags::CLONE_NEWNS).map_err(SetupError::UnshareMounts)?;
    let flags = MsFlags::MS_REC | MsFlags::MS_PRIVATE;
    mount(None::<&str>, "/", None::<&str>, flags, None::<&str>).map_err(SetupError::MakePrivate)?;
    Ok(host)
}

/// The sandbox's pid 1 as the helper sees it.
struct Pid1 {
    pid: Pid,
    pidfd: OwnedFd,
    /// Write end: one byte releases pid 1 to fork the step, once its ids are mapped and it is in
    /// the step's cgroup.
    release: OwnedFd,
    /// Read end: a JSON [`SetupError`], or EOF alone once the step has exec'd.
    errors: OwnedFd,
    /// Read end: the step's wait status.
    status: OwnedFd,
    /// Cloned in the step's cgroup by the cloner: no move needed.
    born_in_cgroup: bool,
}

/// Clones pid 1 into the new namespaces (cwd: the rootfs mount): through `cloner`, in the
/// step's cgroup, if there is one; else here, outside any step cgroup. It sets up while the
/// helper maps its ids and sets its limits, then waits for the release.
fn spawn_pid1(
    spec: &SandboxSpec,
    network: Network,
    cloner: Option<&Cloner>,
) -> Result<Pid1, SetupError> {
    let pipe = || pipe2(OFlag::O_CLOEXEC).map_err(SetupError::Pipe);
    let (release_r, release_w) = pipe()?;
    let (errors_r, errors_w) = pipe()?;
    let (status_r, status_w) = pipe()?;
    let pipes = Pid1Pipes {
        release: release_r,
        errors: errors_w,
        status: status_w,
    };
    let ours = (release_w, errors_r, status_r);
    let (pid, pidfd, born_in_cgroup) = match cloner.map(|c| c.spawn_pid1(network, &pipes)) {
        Some(Ok(Some(cloned))) => (cloned.pid, cloned.pidfd, true),
        Some(Err(err)) => return Err(err),
        // No cloner, or it is gone: clone here.
        None | Some(Ok(None)) => {
            let namespaces = match network {
                Network::Fresh => NAMESPACES | CloneFlags::CLONE_NEWNET,
                Network::Premade => NAMESPACES,
            };
            let cloned = sys::clone_into_namespaces(namespaces, sys::ParentOfClone::Caller);
            match cloned.map_err(SetupError::Clone)? {
                Cloned::Child => {
                    drop(ours);
                    child::pid1(spec, network, pipes)
                }
                Cloned::Parent { pid, pidfd } => (pid, pidfd, false),
            }
        }
    };
    drop(pipes);
    let (release, errors, status) = ours;
    Ok(Pid1 {
        pid,
        pidfd,
        release,
        errors,
        status,
        born_in_cgroup,
    })
}

fn write_id_maps(pid: Pid, spec: &SandboxSpec) -> Result<(), SetupError> {
    let ids = &spec.ids;
    write_id_map(pid, "uid_map", ids.step_uid, ids.host_uid)?;
    write_id_map(pid, "gid_map", ids.step_gid, ids.host_gid)
}

fn write_id_map(pid: Pid, file: &str, inside: u32, outside: u32) -> Result<(), SetupError> {
    let path = std::path::PathBuf::from(format!("/proc/{pid}/{file}"));
    std::fs::write(&path, format!("{inside} {outside} 1\n")).map_err(|err| SetupError::WriteIdMap {
        path,
        source: errno_of(&err),
    })
}

/// Waits until the step has exec'd (`true`), the deadline passed (`false`), or setup failed.
fn wait_for_exec(pid1: &Pid1, deadline: Instant) -> Result<bool, SetupError> {
    if !wait_readable(pid1.errors.as_fd(), deadline)? {
        return Ok(false);
    }
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match nix::unistd::read(&pid1.errors, &mut buf) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(Errno::EINTR) => continue,
            Err(errno) => return Err(SetupError::Wait(errno)),
        }
    }
    if bytes.is_empty() {
        return Ok(true);
    }
    let _ = reap(pid1.pid); // it exits on its own after reporting
    Err(serde_json::from_slice(&bytes).unwrap_or(SetupError::ChildVanished))
}

/// Waits for pid 1 to exit, or kills it at the deadline; returns how the step ended.
fn wait_for_exit(pid1: &Pid1, deadline: Instant) -> Result<Outcome, SetupError> {
    if !wait_readable(pid1.pidfd.as_fd(), deadline)? {
        return time_out(pid1);
    }
    let pid1_status = reap(pid1.pid)?;
    let mut bytes = [0u8; 8];
    match nix::unistd::read(&pid1.status, &mut bytes) {
        Ok(8) => Ok(decode_status(bytes)),
        _ => match pid1_status {
            // Killed from outside (e.g. by the OOM killer): the whole namespace died with it.
            WaitStatus::Signaled(_, signal, _) => Ok(Outcome::Signaled(signal as i32)),
            _ => Err(SetupError::NoStatus),
        },
    }
}

/// SIGKILLs pid 1, which makes the kernel kill every process in its pid namespace.
fn time_out(pid1: &Pid1) -> Result<Outcome, SetupError> {
    kill(pid1.pid, Signal::SIGKILL).map_err(SetupError::Kill)?;
    reap(pid1.pid)?;
    Ok(Outcome::TimedOut)
}

fn decode_status(bytes: [u8; 8]) -> Outcome {
    let kind = i32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let value = i32::from_ne_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    match kind {
        0 => Outcome::Exited(value),
        _ => Outcome::Signaled(value),
    }
}

fn reap(pid: Pid) -> Result<WaitStatus, SetupError> {
    loop {
        match waitpid(pid, None) {
            Err(Errno::EINTR) => continue,
            other => return other.map_err(SetupError::Wait),
        }
    }
}

/// Polls `fd` for readability (or hang-up) until `deadline`; `false` if the deadline passed.
fn wait_readable(fd: BorrowedFd<'_>, deadline: Instant) -> Result<bool, SetupError> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        // Round up so we never wake just before the deadline and spin.
        let millis = left.as_nanos().div_ceil(1_000_000);
        let timeout = PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(0) if left.is_zero() => return Ok(false),
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => return Ok(true),
            Err(errno) => return Err(SetupError::Wait(errno)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_wire_form_round_trips() {
        assert_eq!(
            decode_status(child::encode_status(0, 7)),
            Outcome::Exited(7)
        );
        assert_eq!(
            decode_status(child::encode_status(1, 9)),
            Outcome::Signaled(9)
        );
    }
}
