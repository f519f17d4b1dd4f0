//! The only module allowed `unsafe`: thin wrappers over the syscalls that nix does not cover
//! safely (`clone3`, `fork`, `clone` sharing memory, `close_range`, `capset`, interface ioctls,
//! signal dispositions).
//! Each wrapper is one small `unsafe` block with the reason it holds.
#![allow(unsafe_code)]

use std::os::fd::{FromRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::unistd::{ForkResult, Pid};

/// Result of [`clone_into_namespaces`].
pub(crate) enum Cloned {
    /// In the caller: the child's pid and a pidfd that becomes readable when it exits.
    Parent { pid: Pid, pidfd: OwnedFd },
    /// In the child, which runs on a copy of the caller's address space, like after `fork`.
    Child,
}

/// Whose child the process made by [`clone_into_namespaces`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ParentOfClone {
    /// The caller's: it exits with `SIGCHLD` to the caller.
    Caller,
    /// The caller's parent's (`CLONE_PARENT`): the cloner in the step's cgroup makes pid 1 for
    /// the helper that supervises it (see `crate::cloner`). It exits with the caller's own exit
    /// signal (`SIGCHLD` for a forked caller): clone3 refuses any other with `CLONE_PARENT`.
    CallersParent,
}

/// `clone3(2)` without a new stack (fork-like) into the namespaces in `namespaces`, with a
/// pidfd for the child, as a child of `parent`.
///
/// Must only be called while the process is single-threaded.
pub(crate) fn clone_into_namespaces(
    namespaces: CloneFlags,
    parent: ParentOfClone,
) -> Result<Cloned, Errno> {
    /// `struct clone_args` from `<linux/sched.h>`, up to `set_tid_size` (CLONE_ARGS_SIZE_VER1).
    #[repr(C, align(8))]
    #[derive(Default)]
    struct CloneArgs {
        flags: u64,
        pidfd: u64,
        child_tid: u64,
        parent_tid: u64,
        exit_signal: u64,
        stack: u64,
        stack_size: u64,
        tls: u64,
        set_tid: u64,
        set_tid_size: u64,
    }
    let mut pidfd: libc::c_int = -1;
    let (parent_flag, exit_signal) = match parent {
        ParentOfClone::Caller => (0, libc::SIGCHLD as u64),
        ParentOfClone::CallersParent => (libc::CLONE_PARENT as u64, 0),
    };
    let args = CloneArgs {
        flags: namespaces.bits() as u64 | libc::CLONE_PIDFD as u64 | parent_flag,
        pidfd: &raw mut pidfd as u64,
        exit_signal,
        ..CloneArgs::default()
    };
    // SAFETY: `args` is a valid, initialised `clone_args` of the size passed, and `pidfd` outlives
    // the call. Without CLONE_VM and with no stack the child gets a copy-on-write copy of the
    // address space and continues here, exactly like fork(2); the caller guarantees the process
    // is single-threaded (checked in `helper::sanitise`), so no lock is held by a thread that
    // does not exist in the child.
    let ret = unsafe { libc::syscall(libc::SYS_clone3, &raw const args, size_of::<CloneArgs>()) };
    match Errno::result(ret)? {
        0 => Ok(Cloned::Child),
        pid => {
            // SAFETY: with CLONE_PIDFD the kernel stored a fresh descriptor in `pidfd` that
            // nothing else owns.
            let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
            Ok(Cloned::Parent {
                pid: Pid::from_raw(pid as libc::pid_t),
                pidfd,
            })
        }
    }
}

/// `fork(2)`. Must only be called while the process is single-threaded.
pub(crate) fn fork() -> Result<ForkResult, Errno> {
    // SAFETY: callers are the launcher, its standbys and their cloners, all single-threaded
    // (checked in `helper::sanitise`, and forking keeps it so), so the child may run arbitrary
    // code, allocation included: no lock is held by a thread that does not exist in it.
    unsafe { nix::unistd::fork() }
}

/// Runs `child` in a new process that shares the caller's memory until it execs or exits,
/// as `posix_spawn` does (`clone(CLONE_VM | CLONE_VFORK)`, exit signal `SIGCHLD`), on `stack`.
/// The caller is suspended until then. No page table is copied and none torn down at the
/// exec: a fork of this (large) binary cost more than the step's whole `execve`.
///
/// `child` must end in `execve` or [`exit_now`] and must not touch `stack` itself. Must only
/// be called while the process is single-threaded.
pub(crate) fn spawn_sharing_memory(
    stack: &mut [u8],
    child: Box<dyn FnMut() -> isize + '_>,
) -> Result<Pid, Errno> {
    let flags = CloneFlags::CLONE_VM | CLONE_VFORK;
    // SAFETY: the child runs on `stack`, which the caller keeps alive and does not use, and
    // while it runs the caller is suspended (CLONE_VFORK): no two tasks ever run in the shared
    // address space at once, so the child may use the heap, and the thread-local state it
    // shares with the caller, as the caller would; the process is single-threaded, so no lock
    // is held by another thread. Its descriptor table, signal handlers, credentials, rlimits
    // and seccomp filter are its own (no CLONE_FILES, CLONE_SIGHAND, CLONE_THREAD). It never
    // returns into the caller's frames: it execs or exits.
    unsafe { nix::sched::clone(child, stack, flags, Some(libc::SIGCHLD)) }
}

/// `CLONE_VFORK`, which nix's `CloneFlags` leaves out.
const CLONE_VFORK: CloneFlags = CloneFlags::from_bits_retain(libc::CLONE_VFORK);

/// Closes every descriptor from 3 upwards except `keep` (the cloner's socket).
pub(crate) fn close_all_above_2_but(keep: std::os::fd::RawFd) -> Result<(), Errno> {
    let keep = libc::c_uint::try_from(keep).map_err(|_| Errno::EBADF)?;
    // SAFETY: close_range only closes descriptors. Called first thing in the cloner, a forked
    // process that never returns to the code that owns the other descriptors (it ends with
    // `exit_now`), so no `OwnedFd` still in use is left dangling.
    let ret = unsafe {
        if keep > 3 {
            libc::close_range(3, keep - 1, 0);
        }
        libc::close_range(keep + 1, libc::c_uint::MAX, 0)
    };
    Errno::result(ret).map(drop)
}

/// Closes every descriptor from `first` upwards.
pub(crate) fn close_from(first: u32) -> Result<(), Errno> {
    // SAFETY: close_range only closes descriptors. Called first thing in the helper, before any
    // Rust object owns a descriptor above 2, so no `OwnedFd` is left dangling.
    let ret = unsafe { libc::close_range(first, libc::c_uint::MAX, 0) };
    Errno::result(ret).map(drop)
}

/// Brings the loopback interface of the current network namespace up.
pub(crate) fn loopback_up() -> Result<(), Errno> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    let raw = Errno::result(raw)?;
    // SAFETY: `raw` is a fresh descriptor owned by nothing else.
    let socket = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: `ifreq` is plain old data for which all-zero bytes are a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    request.ifr_name[..2].copy_from_slice(&[b'l' as libc::c_char, b'o' as libc::c_char]);
    let fd = std::os::fd::AsRawFd::as_raw_fd(&socket);
    // SAFETY: SIOCGIFFLAGS reads a NUL-terminated name from and writes the flags into `request`,
    // a valid `ifreq` that outlives the call.
    Errno::result(unsafe { libc::ioctl(fd, libc::SIOCGIFFLAGS, &raw mut request) })?;
    // SAFETY: the kernel has just filled `ifru_flags`, the active field of the union.
    unsafe { request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads the name and flags from `request`, valid for the call.
    Errno::result(unsafe { libc::ioctl(fd, libc::SIOCSIFFLAGS, &raw const request) }).map(drop)
}

/// Empties the capability bounding set. Needs CAP_SETPCAP (the sandbox's pid 1 has every
/// capability in its user namespace), so it runs before dropping to the step's uid.
pub(crate) fn drop_bounding_set() -> Result<(), Errno> {
    for cap in 0..64 {
        // SAFETY: PR_CAPBSET_DROP takes an integer argument and touches no memory.
        match Errno::result(unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) }) {
            Ok(_) => {}
            Err(Errno::EINVAL) if cap > 0 => return Ok(()), // past the last capability
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

/// Empties the effective, permitted, inheritable and ambient capability sets.
pub(crate) fn clear_capabilities() -> Result<(), Errno> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let header = Header {
        version: 0x2008_0522,
        pid: 0,
    }; // _LINUX_CAPABILITY_VERSION_3
    let data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: version 3 of capset reads one header and two `Data` structs, both valid for the call.
    Errno::result(unsafe { libc::syscall(libc::SYS_capset, &raw const header, data.as_ptr()) })?;
    let clear = libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong;
    // SAFETY: PR_CAP_AMBIENT with CLEAR_ALL takes integer arguments and touches no memory.
    Errno::result(unsafe { libc::prctl(libc::PR_CAP_AMBIENT, clear, 0, 0, 0) }).map(drop)
}

/// Restores the default disposition of every signal and unblocks them all, so the step starts
/// as if spawned by a shell: ignored signals survive `execve`, and the Rust runtime (or
/// whatever started the worker) ignores some, e.g. SIGPIPE.
pub(crate) fn reset_signals() -> Result<(), Errno> {
    /// The kernel's `struct sigaction` for `rt_sigaction` (glibc's wrapper refuses the signals
    /// it reserves for itself, which may be ignored too).
    #[repr(C)]
    struct KernelSigaction {
        handler: libc::sighandler_t,
        flags: libc::c_ulong,
        restorer: libc::sighandler_t,
        mask: u64,
    }
    let default = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    for signal in 1..=64 {
        if signal == libc::SIGKILL || signal == libc::SIGSTOP {
            continue;
        }
        // SAFETY: installs SIG_DFL (no handler, so no code runs in signal context) from a valid
        // struct of the size the kernel expects for an 8-byte signal set; no old action is read.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                signal,
                &raw const default,
                std::ptr::null_mut::<u8>(),
                8,
            )
        };
        Errno::result(ret)?;
    }
    let empty = nix::sys::signal::SigSet::empty();
    nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&empty),
        None,
    )
}

/// A connected pair of close-on-exec `SOCK_SEQPACKET` Unix sockets: the launcher's, the
/// standby's and the cloner's channels, where each message keeps its bounds and descriptors.
pub(crate) fn seqpacket_pair() -> Result<(OwnedFd, OwnedFd), Errno> {
    nix::sys::socket::socketpair(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::SeqPacket,
        None,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
    )
}

/// Receives one message of at most `buf.len()` bytes on `socket`, with the descriptors it
/// carries (`SCM_RIGHTS`, at most `MAX_FDS`; received close-on-exec). `(0, [])` is end of file.
pub(crate) fn receive_with_fds<const MAX_FDS: usize>(
    socket: std::os::fd::BorrowedFd<'_>,
    buf: &mut [u8],
) -> Result<(usize, Vec<OwnedFd>), Errno> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; MAX_FDS]);
    let fd = std::os::fd::AsRawFd::as_raw_fd(&socket);
    let msg = recvmsg::<()>(fd, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)?;
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(raw) = cmsg {
            // SAFETY: the kernel installed these descriptors in this process for this message
            // alone; nothing else owns them.
            fds.extend(
                raw.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    Ok((msg.bytes, fds))
}

/// Whether the kernel reaps this process's children by itself (`SIGCHLD` ignored: the
/// launcher, which never waits for its per-step processes) or leaves them to `waitpid`.
pub(crate) fn reap_children_automatically(yes: bool) -> Result<(), Errno> {
    use nix::sys::signal::{SigHandler, Signal, signal};
    let handler = if yes {
        SigHandler::SigIgn
    } else {
        SigHandler::SigDfl
    };
    // SAFETY: SIG_IGN and SIG_DFL install no handler, so no code ever runs in signal context.
    unsafe { signal(Signal::SIGCHLD, handler) }.map(drop)
}

/// `_exit(2)`: ends the process now, without atexit handlers or flushing buffers that a forked
/// child shares with its parent.
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit takes an integer and never returns; skipping destructors is the point.
    unsafe { libc::_exit(code) }
}

/// Makes a fresh recursive copy of the mount tree at the cwd (`open_tree(OPEN_TREE_CLONE)`) and
/// attaches it on top of the cwd (`move_mount`); returns a descriptor of the copy's root.
///
/// The root of such a copy is not `MNT_LOCKED` even when the original was (mounts copied into
/// a less privileged mount namespace are), and `pivot_root` refuses a locked new root. The
/// copy's children stay locked.
pub(crate) fn clone_cwd_tree() -> Result<OwnedFd, Errno> {
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
    let flags =
        OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | libc::AT_RECURSIVE as libc::c_uint;
    // SAFETY: the path is a NUL-terminated literal; open_tree touches no other memory.
    let raw = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, c".".as_ptr(), flags) };
    let raw = Errno::result(raw)? as libc::c_int;
    // SAFETY: `raw` is a fresh descriptor owned by nothing else.
    let tree = unsafe { OwnedFd::from_raw_fd(raw) };
    let fd = std::os::fd::AsRawFd::as_raw_fd(&tree);
    // SAFETY: both paths are NUL-terminated literals and `fd` is open for the whole call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            fd,
            c"".as_ptr(),
            libc::AT_FDCWD,
            c".".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    Errno::result(ret).map(|_| tree)
}
