//! The worker's tmpfs mounts. The step's `/out`: a tmpfs capped at the worker's output limit,
//! mounted on the host at the step's staging directory for the duration of the step. And the
//! staging tmpfs those directories live on, mounted while the worker runs.
//!
//! A plain directory would let a step fill the host's disk until its timeout, because the
//! output cap can only be checked once the step has ended. A `size=`-capped tmpfs makes the
//! kernel refuse the write that crosses the cap (ENOSPC) instead. Its pages are charged to the
//! step's memory cgroup, so outputs also count against the step's memory limit.

use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};

/// A tmpfs the worker mounted: a step's `/out`, or its staging tmpfs. Detached on drop, so no
/// `/out` outlives its step.
#[derive(Debug)]
pub(crate) struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Most bytes of the staging tmpfs: directories only, which take none.
    const STAGING_BYTES: u64 = 1 << 20;

    /// A step's `/out`: a tmpfs of `max_bytes` at `path` (an existing empty directory), owned
    /// by `host_id` with mode 0700.
    pub(crate) fn out(path: &Path, max_bytes: u64, host_id: u32) -> io::Result<Self> {
        let options = format!("size={max_bytes},mode=0700,uid={host_id},gid={host_id}");
        Self::mount("kiln-out", path, MsFlags::empty(), &options)
    }

    /// The tmpfs a worker stages steps in, at `path` (made if missing), root-owned, mode 0755:
    /// each step's directory, which holds nothing but its `/out` mount point, is made and
    /// removed there instead of on the host's disk. On this VM's ext4 (no journal) making and
    /// removing two directories per step cost a visible share of a worker's CPU: inode
    /// allocation skips the group's recently deleted inodes one by one.
    pub(crate) fn staging(path: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(path)?;
        let options = format!("size={},mode=0755", Self::STAGING_BYTES);
        Self::mount("kiln-staging", path, MsFlags::MS_NOEXEC, &options)
    }

    /// Mounts a `nosuid,nodev` tmpfs named `source` (as `/proc/self/mountinfo` shows it).
    fn mount(source: &str, path: &Path, flags: MsFlags, options: &str) -> io::Result<Self> {
        let flags = flags | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        mount(Some(source), path, Some("tmpfs"), flags, Some(options)).map_err(io::Error::from)?;
        Ok(Self {
            path: path.to_owned(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if let Err(err) = umount2(&self.path, MntFlags::MNT_DETACH) {
            tracing::error!(path = %self.path.display(), %err, "cannot unmount a worker's tmpfs");
        }
    }
}

/// Detaches every mount left at or under `work_root` by a worker that died (its staging tmpfs,
/// and the `/out` of steps it was running), so the staging directories can be removed.
pub(crate) fn sweep_stale_mounts(work_root: &Path) {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut stale: Vec<&str> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|mount_point| Path::new(mount_point).starts_with(work_root))
        .collect();
    // Deepest first.
    stale.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for mount_point in stale {
        tracing::warn!(mount_point, "detaching a stale step mount");
        let _ = umount2(mount_point, MntFlags::MNT_DETACH);
    }
}
