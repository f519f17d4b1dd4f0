//! A helper executable held in memory: a sealed memfd that a [`crate::Launcher`] (or the
//! one-shot [`crate::run`]) starts the helper from, for a program that carries the helper's
//! bytes in itself (`kiln` embeds `kiln-sandbox-helper`).
//!
//! Why not start `kiln sandbox-helper`: the launcher forks a process for every step, which
//! forks once more and clones pid 1 (see [`crate::serve`]). Each of those copies the launcher's
//! page tables, re-faults the code it runs and tears it all down again, and all of that grows
//! with the binary; the dedicated helper is a thirtieth of `kiln`'s size.
//!
//! Sealed (no write, grow, shrink or new seals), the image cannot change under a running
//! worker, whatever happens to the files on disk.

use std::fs::File;
use std::io::Write as _;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, SealFlag, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};

use crate::run::HelperCommand;

/// An executable in a sealed memfd of this process.
#[derive(Debug)]
pub struct HelperImage {
    fd: OwnedFd,
}

/// Why a [`HelperImage`] could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("the helper image is empty")]
    Empty,
    #[error("cannot create a memfd for the helper image")]
    Create(#[source] Errno),
    #[error("cannot write the helper image")]
    Write(#[source] std::io::Error),
    #[error("cannot seal the helper image")]
    Seal(#[source] Errno),
}

impl HelperImage {
    /// Copies `executable` into a new memfd called `name` (it shows as `memfd:NAME` in
    /// `/proc/PID/exe`) and seals it.
    pub fn seal(name: &str, executable: &[u8]) -> Result<Self, ImageError> {
        if executable.is_empty() {
            return Err(ImageError::Empty);
        }
        let fd = create(name)?;
        let mut file = File::from(fd);
        file.write_all(executable).map_err(ImageError::Write)?;
        let seals = SealFlag::F_SEAL_SEAL
            | SealFlag::F_SEAL_SHRINK
            | SealFlag::F_SEAL_GROW
            | SealFlag::F_SEAL_WRITE;
        fcntl(file.as_fd(), FcntlArg::F_ADD_SEALS(seals)).map_err(ImageError::Seal)?;
        Ok(Self { fd: file.into() })
    }

    /// How to start the image with `args`: through `/proc/self/fd`, which names the memfd in
    /// this process and in the children it starts (the descriptor is close-on-exec, and the
    /// kernel opens the path before it closes those). Valid while `self` lives.
    pub fn command(&self, args: Vec<String>) -> HelperCommand {
        HelperCommand {
            program: PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd())),
            args,
        }
    }
}

/// A memfd that may be sealed and executed. Since Linux 6.3 a memfd is executable only when
/// asked for (`MFD_EXEC`) under `vm.memfd_noexec = 1`; older kernels refuse the flag.
fn create(name: &str) -> Result<OwnedFd, ImageError> {
    let flags = MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING;
    let exec = MFdFlags::from_bits_retain(libc::MFD_EXEC);
    match memfd_create(name, flags | exec) {
        Err(Errno::EINVAL) => memfd_create(name, flags),
        other => other,
    }
    .map_err(ImageError::Create)
}
