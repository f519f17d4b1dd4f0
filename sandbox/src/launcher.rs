//! The worker's side of the long-lived launcher ([`crate::serve`]): one process per worker
//! that builds every step's sandbox, instead of one helper process per step.

use std::fs::File;
use std::io::{IoSlice, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};

use crate::error::{SandboxError, SetupError};
use crate::protocol;
use crate::run::{HelperCommand, Outcome, RunReport};
use crate::spec::SandboxSpec;

/// How long, in milliseconds, [`Launcher::is_gone`] waits for the launcher's end of the control socket to close.
const GONE_PATIENCE_MS: u16 = 100;

/// A running launcher: `kiln sandbox-helper` with a control socket on its stdin.
///
/// Shared by every step of a worker: [`Launcher::run_report`] takes `&self` and may be called
/// from many threads at once; each call gets a stream socket and a launcher process of its own.
/// If the launcher dies, calls fail with [`SandboxError::LauncherGone`]; drop it and start a
/// new one. Dropping it hangs up: the launcher lets running steps finish, then exits.
#[derive(Debug)]
pub struct Launcher {
    control: OwnedFd,
    pid: u32,
    program: PathBuf,
    /// Started the launcher and waits for it: the launcher dies with this thread
    /// (`PR_SET_PDEATHSIG`), so it must live exactly as long as the launcher.
    keeper: Option<JoinHandle<()>>,
}

impl Launcher {
    /// Starts the launcher, e.g. `kiln sandbox-helper`, with an empty environment.
    pub fn start(helper: &HelperCommand) -> Result<Self, SandboxError> {
        let failed = |source| SandboxError::StartLauncher {
            program: helper.program.clone(),
            source,
        };
        let (control, theirs) =
            crate::sys::seqpacket_pair().map_err(|errno| failed(errno.into()))?;
        let (started_tx, started) = mpsc::channel();
        let command = helper.clone();
        let keeper = std::thread::Builder::new()
            .name("kiln-launcher".into())
            .spawn(move || keep(&command, theirs, &started_tx))
            .map_err(failed)?;
        let pid = match started.recv() {
            Ok(Ok(pid)) => pid,
            Ok(Err(err)) => return Err(failed(err)),
            Err(mpsc::RecvError) => return Err(SandboxError::LauncherGone),
        };
        Ok(Self {
            control,
            pid,
            program: helper.program.clone(),
            keeper: Some(keeper),
        })
    }

    /// The launcher's process id, for health checks.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Like [`crate::run`], through this launcher.
    pub fn run(&self, spec: &SandboxSpec, log: File) -> Result<Outcome, SandboxError> {
        self.run_report(spec, log).map(|report| report.outcome)
    }

    /// Like [`crate::run_report`], through this launcher: blocks the calling thread until the
    /// command ended (call it from `spawn_blocking`); any thread will do.
    pub fn run_report(&self, spec: &SandboxSpec, log: File) -> Result<RunReport, SandboxError> {
        spec.check()?;
        let request = protocol::encode_request(self.pid, spec)?;
        let (stream, theirs) = UnixStream::pair().map_err(SandboxError::SendRequest)?;
        self.hand_over(theirs.into(), log.into())?;
        // The launcher's process for this step reads the request until EOF, then answers and
        // exits; EOF on our side means it is done.
        let sent = (&stream)
            .write_all(&request)
            .and_then(|()| stream.shutdown(Shutdown::Write));
        let mut report = Vec::new();
        let read = (&stream).read_to_end(&mut report);
        if report.is_empty() {
            if self.is_gone() {
                return Err(SandboxError::LauncherGone);
            }
            tracing::warn!(send_error = ?sent.err(), read_error = ?read.err(), program = %self.program.display(),
                "the launcher's process for a step died without a report");
            return Err(SandboxError::SupervisorDied);
        }
        read.map_err(SandboxError::ReadReport)?;
        match protocol::decode_report(&report) {
            // The launcher died before the step's process could ask to die with it.
            Err(SandboxError::Setup(SetupError::Orphaned)) => Err(SandboxError::LauncherGone),
            other => other,
        }
    }

    /// Sends the step's stream socket and log to the launcher (one message, two descriptors).
    fn hand_over(&self, stream: OwnedFd, log: OwnedFd) -> Result<(), SandboxError> {
        let fds = [stream.as_raw_fd(), log.as_raw_fd()];
        let sent = sendmsg::<()>(
            self.control.as_raw_fd(),
            &[IoSlice::new(b"R")],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::MSG_NOSIGNAL,
            None,
        );
        match sent {
            Ok(_) => Ok(()),
            Err(Errno::EPIPE | Errno::ECONNRESET | Errno::ECONNREFUSED) => {
                Err(SandboxError::LauncherGone)
            }
            Err(errno) => Err(SandboxError::SendRequest(errno.into())),
        }
    }

    /// Whether the launcher has exited: its end of the control socket is closed. Called when a
    /// step's process died without a report; if the launcher is dying too, its socket closes
    /// within [`GONE_PATIENCE_MS`].
    fn is_gone(&self) -> bool {
        let mut fds = [PollFd::new(self.control.as_fd(), PollFlags::empty())];
        match poll(&mut fds, PollTimeout::from(GONE_PATIENCE_MS)) {
            Ok(_) => fds[0]
                .revents()
                .is_some_and(|r| r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR)),
            Err(_) => false,
        }
    }
}

impl Drop for Launcher {
    fn drop(&mut self) {
        // Hanging up asks the launcher to exit once its running steps have ended.
        let _ =
            nix::sys::socket::shutdown(self.control.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        if let Some(keeper) = self.keeper.take() {
            let _ = keeper.join();
        }
    }
}

/// Body of the keeper thread: starts the launcher, reports its pid, waits for it to exit.
fn keep(command: &HelperCommand, control: OwnedFd, started: &mpsc::Sender<std::io::Result<u32>>) {
    let spawned = Command::new(&command.program)
        .args(&command.args)
        .env_clear()
        .stdin(Stdio::from(control))
        .stdout(Stdio::null())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(err) => {
            let _ = started.send(Err(err));
            return;
        }
    };
    let _ = started.send(Ok(child.id()));
    match child.wait() {
        Ok(status) if status.success() => {}
        status => tracing::warn!(?status, "the sandbox launcher exited"),
    }
}
