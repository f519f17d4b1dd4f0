//! The launcher: `kiln sandbox-helper` started once per worker by [`crate::Launcher::start`],
//! with its stdin a `SOCK_SEQPACKET` control socket (see [`crate::protocol`]). Long-lived,
//! single-threaded and synchronous, like the one-shot helper it replaces: it saves each step
//! the exec, dynamic linking and runtime start of the `kiln` binary, the cgroup layout
//! detection and sweep, and the creation of its network namespace.
//!
//! Each request runs in a process of its own that does exactly what the one-shot helper does
//! ([`crate::helper::report_and_exit`]), with the request's stream socket as stdin and stdout
//! and the step log as stderr, and sanitises itself the same way (dies with the launcher,
//! closes every other descriptor). Usually that process is the *standby* ([`Standby`]), forked
//! right after the previous step was handed out, which has already entered a network
//! namespace (pre-made, or made by itself if the pool was empty), made its (empty, unlimited)
//! step cgroup and forked the cloner that moved into it ([`crate::cloner`]), and waits on a
//! socket of its own; if there is none, the launcher forks one for the request. The launcher never waits for them: `SIGCHLD` is
//! ignored, so the kernel reaps them, and the worker reads the report from the stream socket.
//!
//! When no request came for [`QUIET`], it keeps [`POOL`] network namespaces ready, each with
//! `lo` up, made by `unshare` and left again at once; each is handed to one step and closed
//! here, never reused. A standby that finds the pool empty makes its own while it waits; a step
//! forked for on arrival gets a fresh one from `clone3`, as with the one-shot helper.
//!
//! It dies with the worker thread that started it (`PR_SET_PDEATHSIG`), and its per-step
//! processes die with it. It sweeps stale step cgroups when it starts and when quiet, at most
//! every [`SWEEP_EVERY`]. When the worker hangs up it waits for its running steps, removes the
//! empty kiln cgroup parents and exits.
//!
//! Deliberately absent: no threads, no async runtime, no state shared between steps but the
//! cgroup layout; nothing from one request reaches another's process.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::signal::Signal;
use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid};

use crate::cgroup::{self, Layout};
use crate::cloner::Cloner;
use crate::error::SetupError;
use crate::helper::{self, Network, Prepared};
use crate::sys;

/// Network namespaces kept ready. Two steps starting at once both find one; more concurrent
/// starts than that fall back to a fresh namespace each.
const POOL: usize = 2;

/// How long the launcher waits for the next request before it uses the quiet to top up its
/// pool and sweep. Making a network namespace while a step sets up slowed that step's cgroup
/// migration from a median of 0.2 ms to 6 ms: it waits until the step is past that.
const QUIET: Duration = Duration::from_millis(10);

/// How often, at most, a quiet launcher sweeps stale step cgroups. A sweep lists every kiln
/// cgroup parent and reads each live owner's `/proc/<pid>/stat`: ~20 opens with four steps
/// running. Leftovers come from crashed helpers, which are rare; under a steady stream of
/// short steps a launcher is quiet between most of them, and sweeping each time cost more
/// than any other per-step system call the launcher makes.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Entry point of the launcher; see the module doc. Errors go to its stderr (the worker's).
pub(crate) fn serve() -> ! {
    match serve_requests() {
        Ok(()) => sys::exit_now(0),
        Err(err) => {
            eprintln!("kiln sandbox launcher: {err}");
            sys::exit_now(1)
        }
    }
}

fn serve_requests() -> Result<(), SetupError> {
    helper::sanitise()?;
    sys::reap_children_automatically(true).map_err(SetupError::ReapChildren)?;
    let layout = cgroup::detect()?;
    cgroup::sweep_stale(&layout);
    let mut swept = Instant::now();
    let mut pool = NetPool::open()?;
    pool.fill()?;
    let mut standby = Standby::start(&mut pool, &layout);
    loop {
        if !request_within(QUIET)? {
            if swept.elapsed() >= SWEEP_EVERY {
                cgroup::sweep_stale(&layout);
                swept = Instant::now();
            }
            pool.fill()?;
            if standby.is_none() {
                standby = Standby::start(&mut pool, &layout);
            }
        }
        let Some(request) = receive()? else {
            break;
        };
        // The standby takes the step if it is still there; else a process forked for it now.
        let request = match standby.take() {
            Some(ready) => ready.hand_over(request),
            None => Some(request),
        };
        if let Some(request) = request {
            let network = pool.take();
            if let Ok(ForkResult::Child) = sys::fork() {
                supervise_one(request, network, &layout)
            }
        }
        // Dropping the request closes the launcher's copies; if the fork failed, the worker
        // reads EOF on its stream and reports it.
        // The next standby now, not after a quiet spell: its cloner's move into a cgroup takes
        // an RCU grace period (~12 ms) unless another move happened in the last ~10–20 ms, and
        // the steps of a chain come one after the other, a few ms apart, to one launcher.
        if standby.is_none() {
            standby = Standby::start(&mut pool, &layout);
        }
    }
    // The worker hung up: the standby (hung up too) removes its cgroup; let the running steps
    // finish (waitpid fails with ECHILD once none is left), then tidy up.
    drop(standby);
    while let Ok(_) | Err(Errno::EINTR) = waitpid(None, None) {}
    cgroup::remove_empty_parents(&layout);
    Ok(())
}

/// Whether a request (or the hang-up) arrives within `quiet`.
fn request_within(quiet: Duration) -> Result<bool, SetupError> {
    let timeout = PollTimeout::try_from(quiet).unwrap_or(PollTimeout::MAX);
    let stdin = std::io::stdin();
    let mut fds = [PollFd::new(stdin.as_fd(), PollFlags::POLLIN)];
    match poll(&mut fds, timeout) {
        Ok(n) => Ok(n > 0),
        Err(Errno::EINTR) => Ok(true),
        Err(errno) => Err(SetupError::ReceiveRequest(errno)),
    }
}

/// One step to run: where to read its spec and write its report, and its log.
struct Request {
    stream: OwnedFd,
    log: OwnedFd,
}

/// Waits for the next request; `None` once the worker hung up. Malformed messages are dropped.
fn receive() -> Result<Option<Request>, SetupError> {
    loop {
        let mut byte = [0u8; 1];
        let (len, mut fds) = match sys::receive_with_fds::<2>(std::io::stdin().as_fd(), &mut byte) {
            Err(Errno::EINTR) => continue,
            other => other.map_err(SetupError::ReceiveRequest)?,
        };
        if len == 0 && fds.is_empty() {
            return Ok(None);
        }
        if let (1, Some(log), Some(stream), None) = (len, fds.pop(), fds.pop(), fds.pop()) {
            return Ok(Some(Request { stream, log }));
        }
    }
}

/// In a process forked for `request`: enters the pre-made network namespace, puts the request
/// on stdin, stdout and stderr, then builds the sandbox like the one-shot helper.
fn supervise_one(request: Request, network: Option<OwnedFd>, layout: &Layout) -> ! {
    // This process waits for the sandbox's pid 1, so its children are its to reap again.
    if sys::reap_children_automatically(false).is_err() {
        sys::exit_now(1); // no report: the worker says the step's process died
    }
    let network = enter_network(network);
    run_request(request, layout, network, None, None)
}

/// Uses the pre-made network namespace, if any (and if it can).
fn enter_network(network: Option<OwnedFd>) -> Network {
    match network {
        Some(ns) if setns(&ns, CloneFlags::CLONE_NEWNET).is_ok() => Network::Premade,
        _ => Network::Fresh,
    }
}

/// A standby's network namespace: the pre-made one, else one made now by this process (it is
/// waiting for its step; pid 1 would otherwise make one on the step's critical path).
fn standby_network(network: Option<OwnedFd>) -> Network {
    match enter_network(network) {
        Network::Fresh if unshare(CloneFlags::CLONE_NEWNET).is_ok() => {
            match sys::loopback_up() {
                Ok(()) => Network::Premade,
                // A fresh namespace with `lo` down: pid 1 makes its own as usual.
                Err(_) => Network::Fresh,
            }
        }
        network => network,
    }
}

/// Stdin and stdout: the request's stream; stderr: the step log. Then the one-shot helper's
/// work, which starts by closing every other descriptor.
fn run_request(
    request: Request,
    layout: &Layout,
    network: Network,
    cgroup: Option<cgroup::Guard>,
    cloner: Option<Cloner>,
) -> ! {
    let Request { stream, log } = request;
    let stdio = nix::unistd::dup2_stdin(&stream)
        .and_then(|()| nix::unistd::dup2_stdout(&stream))
        .and_then(|()| nix::unistd::dup2_stderr(&log));
    if stdio.is_err() {
        sys::exit_now(1);
    }
    helper::report_and_exit(Prepared {
        layout: Some(layout.clone()),
        network,
        cgroup,
        cloner,
    })
}

/// A process forked ahead of time for the next step, with its network namespace entered and
/// its cgroup made (without limits: nothing runs in it yet), waiting on a socket of its own
/// for a request. Saves the step the fork of the launcher (a large process: the `kiln`
/// binary), the cgroup's `mkdir`s and the `setns`. Dropping it hangs up: it removes its cgroup
/// and exits.
struct Standby {
    socket: OwnedFd,
}

impl Standby {
    /// `None` if it cannot be made now; steps are then forked for on arrival.
    fn start(pool: &mut NetPool, layout: &Layout) -> Option<Self> {
        let (ours, theirs) = sys::seqpacket_pair().ok()?;
        let network = pool.take();
        let launcher = nix::unistd::getpid();
        match sys::fork() {
            Ok(ForkResult::Child) => {
                drop(ours);
                standby_main(theirs, launcher, network, layout)
            }
            Ok(ForkResult::Parent { .. }) => Some(Self { socket: ours }),
            Err(_) => None,
        }
    }

    /// Passes `request` on; gives it back if the standby is gone.
    fn hand_over(self, request: Request) -> Option<Request> {
        let fds = [request.stream.as_raw_fd(), request.log.as_raw_fd()];
        let sent = sendmsg::<()>(
            self.socket.as_raw_fd(),
            &[std::io::IoSlice::new(b"R")],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::MSG_NOSIGNAL,
            None,
        );
        match sent {
            Ok(_) => None,
            Err(_) => Some(request),
        }
    }
}

/// Body of a standby process: get ready, wait for the request (or the hang-up), run it.
fn standby_main(socket: OwnedFd, launcher: Pid, network: Option<OwnedFd>, layout: &Layout) -> ! {
    // Die with the launcher, which may have died before this process asked.
    if nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).is_err()
        || nix::unistd::getppid() != launcher
        || sys::reap_children_automatically(false).is_err()
    {
        sys::exit_now(1);
    }
    let network = standby_network(network);
    // Made now, by this process, so it is named after it, like any step's; the cloner moves
    // into it now, so that pid 1 is born there (see `crate::cloner`).
    let cgroup = cgroup::create_unlimited(layout).ok();
    let cloner = cgroup.as_ref().and_then(Cloner::start);
    let mut byte = [0u8; 1];
    let request = loop {
        match sys::receive_with_fds::<2>(socket.as_fd(), &mut byte) {
            Err(Errno::EINTR) => continue,
            Ok((1, mut fds)) if fds.len() == 2 => {
                let (log, stream) = (fds.pop(), fds.pop());
                if let (Some(stream), Some(log)) = (stream, log) {
                    break Request { stream, log };
                }
            }
            // Hung up (or garbage): remove the cgroup (killing the cloner in it), exit.
            _ => {
                drop(cgroup);
                sys::exit_now(0)
            }
        }
    };
    drop(socket);
    run_request(request, layout, network, cgroup, cloner)
}

/// Network namespaces made ahead of time, each with `lo` up.
struct NetPool {
    /// The launcher's own (the host's) namespace, to return to after making one.
    host: OwnedFd,
    ready: Vec<OwnedFd>,
}

impl NetPool {
    fn open() -> Result<Self, SetupError> {
        let host = open_own_net().map_err(SetupError::HostNetwork)?;
        Ok(Self {
            host,
            ready: Vec::new(),
        })
    }

    fn take(&mut self) -> Option<OwnedFd> {
        self.ready.pop()
    }

    /// Tops the pool up. Failing to make one is not an error (steps get a fresh namespace
    /// meanwhile); failing to return to the host's namespace is.
    fn fill(&mut self) -> Result<(), SetupError> {
        while self.ready.len() < POOL {
            match self.make() {
                Ok(ns) => self.ready.push(ns),
                Err(err @ SetupError::HostNetwork(_)) => return Err(err),
                Err(_) => break,
            }
        }
        Ok(())
    }

    fn make(&self) -> Result<OwnedFd, SetupError> {
        unshare(CloneFlags::CLONE_NEWNET).map_err(SetupError::PremadeNetwork)?;
        let made = sys::loopback_up().and_then(|()| open_own_net());
        setns(&self.host, CloneFlags::CLONE_NEWNET).map_err(SetupError::HostNetwork)?;
        made.map_err(SetupError::PremadeNetwork)
    }
}

fn open_own_net() -> Result<OwnedFd, Errno> {
    let flags = OFlag::O_RDONLY | OFlag::O_CLOEXEC;
    nix::fcntl::open(
        "/proc/thread-self/ns/net",
        flags,
        nix::sys::stat::Mode::empty(),
    )
}
