//! A running step's log: an anonymous in-memory file (`memfd_create`), the step's stdout and
//! stderr, stored in the blob store when the step ends and gone when the last reader drops it.
//!
//! Not a file on the host's disk: a step's log is written once, read once or twice (the live
//! stream, the store) and thrown away, and making and removing a file per step cost a visible
//! share of a worker's CPU on ext4 (inode allocation scans the recently deleted inodes of the
//! directory's group when the file system has no journal). Its pages are charged to the memory
//! cgroup of the process that writes them, the step's, like its `/out`: a log counts against
//! the step's memory limit, and cannot outgrow it.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;

use nix::sys::memfd::{MFdFlags, memfd_create};

/// One step's log.
#[derive(Debug)]
pub(crate) struct StepLog {
    file: File,
}

impl StepLog {
    /// A new, empty log.
    pub(crate) fn new() -> io::Result<Self> {
        let fd = memfd_create(c"kiln-step-log", MFdFlags::MFD_CLOEXEC).map_err(io::Error::from)?;
        Ok(Self {
            file: File::from(fd),
        })
    }

    /// What the step writes to (its stdout and stderr): the same open file, so writes go on
    /// after the step's.
    pub(crate) fn writer(&self) -> io::Result<File> {
        self.file.try_clone()
    }

    /// A reader from the start, with an offset of its own.
    pub(crate) fn reader(&self) -> io::Result<File> {
        File::open(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
    }

    /// Appends `line` after whatever the step wrote (best effort).
    pub(crate) fn append_line(&self, line: &str) {
        let _ = writeln!(&self.file, "{line}");
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn read_all(mut file: File) -> String {
        let mut text = String::new();
        file.read_to_string(&mut text).unwrap();
        text
    }

    #[test]
    fn readers_see_the_steps_writes_then_appended_lines_from_the_start() {
        let log = StepLog::new().unwrap();
        let early = log.reader().unwrap();
        log.writer().unwrap().write_all(b"built\n").unwrap();
        log.append_line("kiln: step failed: timed out");
        let whole = "built\nkiln: step failed: timed out\n";
        assert_eq!(read_all(log.reader().unwrap()), whole);
        // A reader opened before the writes has its own offset, at the start.
        assert_eq!(read_all(early), whole);
    }

    #[test]
    fn a_reader_outlives_the_log() {
        let log = StepLog::new().unwrap();
        log.append_line("last words");
        let reader = log.reader().unwrap();
        drop(log);
        assert_eq!(read_all(reader), "last words\n");
    }
}
