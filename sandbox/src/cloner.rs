//! The cloner: a small child that a launcher's standby process ([`crate::serve`]) forks while
//! it waits for its step, and that moves itself into the step's cgroup then, so that the
//! step's pid 1 is *born* in its cgroup instead of being moved there on the critical path.
//!
//! # Why
//!
//! Writing a pid to `cgroup.procs` waits for an RCU grace period whenever no cgroup migration
//! happened on the machine in the last ~10–20 ms: 12 ms median (p90 16–20 ms) on this VM
//! against 0.2 ms right after another one. Steps of a DAG start after a report and a claim
//! round trip, so nearly every one paid it while its pid 1 waited. cgroup v1 cannot clone into
//! a cgroup (`CLONE_INTO_CGROUP` is v2 only). The cloner's own move happens while nothing
//! waits for it; while it waits, the cgroup holds nothing else and has no limits.
//!
//! # Protocol (one `SOCK_SEQPACKET` pair; one request per cloner)
//!
//! 1. standby → cloner, `S` and a pipe's read end: the raw request, which the standby writes
//!    into the pipe and closes; the cloner decodes it while the standby makes the mounts;
//! 2. standby → cloner, `C` and the network ([`Network`], one byte) with the standby's mount
//!    namespace, its cwd (the rootfs mount), pid 1's three pipe ends and the step log: the
//!    cloner enters that mount namespace and cwd, puts the log on stderr and clones pid 1 with
//!    `CLONE_PARENT`, so that pid 1 is the standby's child, as it would be without the cloner;
//! 3. cloner → standby: pid 1's pid (native-endian `i32`) and its pidfd, or the negated errno
//!    of what failed and no descriptor. Then the cloner exits; the standby reaps it before it
//!    releases pid 1 (until it is reaped it counts against the step's `pids.max`).
//!
//! # Invariants
//!
//! The supervising process never enters the step's cgroup: kill, usage, limits and the freezer
//! concern the step's processes alone. The cloner is the only other process ever in it, and it
//! is gone before pid 1 forks the step. Its CPU time from its move to its exit (decoding the
//! request, `setns`, `clone3`, `exit`) is counted in the step's usage, like pid 1's own setup.
//! If the cloner is gone or cannot be made, the helper clones pid 1 itself and moves it in,
//! as the one-shot helper always does.

use std::fs::File;
use std::io::{IoSlice, Read, Write};
use std::mem::ManuallyDrop;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sched::{CloneFlags, setns};
use nix::sys::signal::Signal;
use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
use nix::sys::stat::Mode;
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid, getpid};

use crate::cgroup;
use crate::child::{self, Pid1Pipes};
use crate::error::SetupError;
use crate::helper::Network;
use crate::protocol;
use crate::sys::{self, Cloned, ParentOfClone};

/// The standby's handle on its cloner.
pub(crate) struct Cloner {
    socket: OwnedFd,
    pid: Pid,
}

/// Pid 1 as the cloner made it: in the step's cgroup, a child of the caller.
pub(crate) struct ClonedPid1 {
    pub pid: Pid,
    pub pidfd: OwnedFd,
}

impl Cloner {
    /// Forks the cloner, which moves itself into `cgroup` and waits for its request. `None` if
    /// it cannot be forked. The caller must be single-threaded.
    pub(crate) fn start(cgroup: &cgroup::Guard) -> Option<Self> {
        let (ours, theirs) = sys::seqpacket_pair().ok()?;
        let standby = getpid();
        match sys::fork() {
            Ok(ForkResult::Child) => {
                drop(ours);
                cloner_main(theirs, cgroup, standby)
            }
            Ok(ForkResult::Parent { child }) => Some(Self {
                socket: ours,
                pid: child,
            }),
            Err(_) => None,
        }
    }

    /// Step 1: hands the raw request over. `None` if the cloner is gone.
    pub(crate) fn send_request(self, raw: &[u8]) -> Option<Self> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).ok()?;
        send(&self.socket, b"S", &[read.as_raw_fd()]).ok()?;
        drop(read);
        // Blocks beyond the pipe's capacity until the cloner reads; EPIPE if it died.
        File::from(write).write_all(raw).ok()?;
        Some(self)
    }

    /// Steps 2 and 3: has pid 1 cloned in the step's cgroup, into `namespaces` (the caller's
    /// cwd must be the rootfs mount, in the caller's private mount namespace). `Ok(None)` if
    /// the cloner is gone: the caller clones pid 1 itself.
    pub(crate) fn spawn_pid1(
        &self,
        network: Network,
        pipes: &Pid1Pipes,
    ) -> Result<Option<ClonedPid1>, SetupError> {
        let open = |path: &str, flags: OFlag| {
            nix::fcntl::open(path, flags | OFlag::O_CLOEXEC, Mode::empty())
                .map_err(SetupError::Clone)
        };
        let mounts = open("/proc/self/ns/mnt", OFlag::O_RDONLY)?;
        let cwd = open(".", OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
        let fds = [
            mounts.as_raw_fd(),
            cwd.as_raw_fd(),
            pipes.release.as_raw_fd(),
            pipes.errors.as_raw_fd(),
            pipes.status.as_raw_fd(),
            std::io::stderr().as_raw_fd(),
        ];
        if send(&self.socket, &[b'C', network_byte(network)], &fds).is_err() {
            return Ok(None);
        }
        let mut reply = [0u8; 4];
        let (len, mut received) = loop {
            match sys::receive_with_fds::<1>(self.socket.as_fd(), &mut reply) {
                Err(Errno::EINTR) => continue,
                Ok(got) => break got,
                Err(_) => return Ok(None),
            }
        };
        let value = i32::from_ne_bytes(reply);
        match (len, received.pop()) {
            (4, Some(pidfd)) if value > 0 => Ok(Some(ClonedPid1 {
                pid: Pid::from_raw(value),
                pidfd,
            })),
            (4, None) if value < 0 => Err(SetupError::Clone(Errno::from_raw(-value))),
            _ => Ok(None),
        }
    }

    /// The standby's end of the socket, which the helper keeps when it closes the rest.
    pub(crate) fn socket_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    /// Waits for the cloner's exit: it leaves the step's cgroup (and its `pids.max` count)
    /// only once reaped.
    pub(crate) fn reap(self) {
        drop(self.socket);
        while let Err(Errno::EINTR) = waitpid(self.pid, None) {}
    }
}

fn network_byte(network: Network) -> u8 {
    match network {
        Network::Fresh => b'F',
        Network::Premade => b'P',
    }
}

fn send(socket: &OwnedFd, bytes: &[u8], fds: &[RawFd]) -> Result<(), Errno> {
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs = if fds.is_empty() { &[][..] } else { &rights[..] };
    sendmsg::<()>(
        socket.as_raw_fd(),
        &[IoSlice::new(bytes)],
        cmsgs,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map(drop)
}

/// Body of the cloner process. Never returns: the standby's objects copied into it (its
/// cgroup guard among them) must never be dropped here, hence `exit_now` on every path and no
/// unwinding out of this function.
fn cloner_main(socket: OwnedFd, cgroup: &cgroup::Guard, standby: Pid) -> ! {
    let socket = ManuallyDrop::new(socket);
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        serve_one(&socket, cgroup, standby)
    }));
    sys::exit_now(if run.is_ok() { 0 } else { 1 })
}

/// Gets ready, waits for the request, clones pid 1 (which never returns here), replies.
fn serve_one(socket: &OwnedFd, cgroup: &cgroup::Guard, standby: Pid) {
    // Die with the standby, which may have died before this process asked.
    if nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).is_err() || nix::unistd::getppid() != standby
    {
        return;
    }
    // The standby's descriptors (the launcher's control socket on stdin among them) are not
    // ours: pid 1 is cloned from this process and must hold nothing but its own.
    if sys::close_all_above_2_but(socket.as_raw_fd()).is_err() || null_stdio().is_err() {
        return;
    }
    if cgroup.get().add(getpid()).is_err() {
        return; // the standby reads EOF and moves pid 1 in itself
    }
    let Some(spec) = receive_spec(socket) else {
        return;
    };
    let mut order = [0u8; 2];
    let Ok((2, fds)) = sys::receive_with_fds::<6>(socket.as_fd(), &mut order) else {
        return;
    };
    let Ok::<[OwnedFd; 6], _>([mounts, cwd, release, errors, status, log]) = fds.try_into() else {
        return;
    };
    let network = match order {
        [b'C', b'P'] => Network::Premade,
        [b'C', b'F'] => Network::Fresh,
        _ => return,
    };
    let entered = setns(&mounts, CloneFlags::CLONE_NEWNS)
        .and_then(|()| nix::unistd::fchdir(&cwd))
        .and_then(|()| nix::unistd::dup2_stderr(&log));
    drop((mounts, cwd, log));
    if let Err(errno) = entered {
        reply(socket, -(errno as i32), None);
        return;
    }
    let namespaces = match network {
        Network::Fresh => crate::helper::NAMESPACES | CloneFlags::CLONE_NEWNET,
        Network::Premade => crate::helper::NAMESPACES,
    };
    let pipes = Pid1Pipes {
        release,
        errors,
        status,
    };
    match sys::clone_into_namespaces(namespaces, ParentOfClone::CallersParent) {
        Ok(Cloned::Child) => child::pid1(&spec, network, pipes),
        Ok(Cloned::Parent { pid, pidfd }) => reply(socket, pid.as_raw(), Some(&pidfd)),
        Err(errno) => reply(socket, -(errno as i32), None),
    }
}

/// Stdin and stdout on `/dev/null` (pid 1 points stdout at the log itself).
fn null_stdio() -> Result<(), Errno> {
    let null = nix::fcntl::open("/dev/null", OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty())?;
    nix::unistd::dup2_stdin(&null)?;
    nix::unistd::dup2_stdout(&null)
}

/// Step 1: the request, read from the pipe to EOF and decoded (the standby checked it).
fn receive_spec(socket: &OwnedFd) -> Option<crate::spec::SandboxSpec> {
    let mut tag = [0u8; 1];
    let (1, mut fds) = sys::receive_with_fds::<1>(socket.as_fd(), &mut tag).ok()? else {
        return None;
    };
    let pipe = fds.pop().filter(|_| tag == *b"S")?;
    let mut raw = Vec::new();
    File::from(pipe).read_to_end(&mut raw).ok()?;
    protocol::decode_request(&raw)
        .ok()
        .map(|request| request.spec)
}

fn reply(socket: &OwnedFd, value: i32, pidfd: Option<&OwnedFd>) {
    let fds: Vec<RawFd> = pidfd.iter().map(|fd| fd.as_raw_fd()).collect();
    let _ = send(socket, &value.to_ne_bytes(), &fds);
}
