//! Reading and writing cgroupfs files, with the path in every error.

use std::io::ErrorKind;
use std::path::Path;
use std::time::Duration;

use nix::errno::Errno;
use nix::unistd::Pid;

use crate::error::SetupError;
use crate::mounts::errno_of;

/// How long [`remove_dir`] retries a cgroup that is still busy (its last processes exiting).
const REMOVE_PATIENCE: Duration = Duration::from_secs(2);

pub(super) fn read(path: &Path) -> Result<String, SetupError> {
    std::fs::read_to_string(path).map_err(|err| SetupError::CgroupRead {
        path: path.to_owned(),
        source: errno_of(&err),
    })
}

/// Reads a file holding one unsigned number, or `max` (read as `u64::MAX`).
pub(super) fn read_u64(path: &Path) -> Result<u64, SetupError> {
    let text = read(path)?;
    match text.trim() {
        "max" => Ok(u64::MAX),
        number => number.parse().map_err(|_| SetupError::CgroupRead {
            path: path.to_owned(),
            source: Errno::EINVAL,
        }),
    }
}

/// Like [`read_u64`], `None` if the file does not exist (an older kernel).
pub(super) fn read_u64_if_present(path: &Path) -> Result<Option<u64>, SetupError> {
    match path.exists() {
        true => read_u64(path).map(Some),
        false => Ok(None),
    }
}

pub(super) fn write(path: &Path, value: &str) -> Result<(), SetupError> {
    std::fs::write(path, value).map_err(|err| SetupError::CgroupWrite {
        path: path.to_owned(),
        value: value.to_owned(),
        source: errno_of(&err),
    })
}

/// The pids in a `cgroup.procs` file; none if the cgroup is already gone.
pub(super) fn pids(path: &Path) -> Result<Vec<Pid>, SetupError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => {
            return Err(SetupError::CgroupRead {
                path: path.to_owned(),
                source: errno_of(&err),
            });
        }
    };
    Ok(text
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .map(Pid::from_raw)
        .collect())
}

/// Creates one cgroup directory; the parent must exist. `Ok(false)` if it already existed.
pub(super) fn create_dir(path: &Path) -> Result<bool, SetupError> {
    match std::fs::create_dir(path) {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == ErrorKind::AlreadyExists => Ok(false),
        Err(err) => Err(SetupError::CgroupCreate {
            path: path.to_owned(),
            source: errno_of(&err),
        }),
    }
}

/// Removes a cgroup directory, retrying while the kernel still counts exiting processes in
/// it (`EBUSY`). Missing is fine.
pub(super) fn remove_dir(path: &Path) -> Result<(), SetupError> {
    let give_up = std::time::Instant::now() + REMOVE_PATIENCE;
    let mut pause = Duration::from_micros(100);
    loop {
        match std::fs::remove_dir(path) {
            Ok(()) => return Ok(()),
            Err(err) if err.kind() == ErrorKind::NotFound => return Ok(()),
            Err(err) if errno_of(&err) == Errno::EBUSY && std::time::Instant::now() < give_up => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            Err(err) => {
                return Err(SetupError::CgroupRemove {
                    path: path.to_owned(),
                    source: errno_of(&err),
                });
            }
        }
    }
}

/// Removes a cgroup directory once, without waiting; missing is fine.
pub(super) fn try_remove_dir(path: &Path) -> Result<(), Errno> {
    match std::fs::remove_dir(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(()),
        Err(err) => Err(errno_of(&err)),
    }
}

/// Creates `parent/name`, and `parent` first if it is missing (the kiln parent is kept, so
/// usually it is there); retries if a launcher that was exiting removed the parent meanwhile.
pub(super) fn create_in_parent(parent: &Path, name: &str) -> Result<(), SetupError> {
    let dir = parent.join(name);
    for attempt in 0..10 {
        if attempt > 0 {
            create_dir(parent)?;
        }
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(()),
            Err(err) if err.kind() == ErrorKind::NotFound => continue,
            Err(err) => {
                return Err(SetupError::CgroupCreate {
                    path: dir,
                    source: errno_of(&err),
                });
            }
        }
    }
    Err(SetupError::CgroupCreate {
        path: dir,
        source: Errno::ENOENT,
    })
}
