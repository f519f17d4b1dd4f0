//! Outside half of the sandbox tests: builds a tiny busybox rootfs in a tempdir, runs steps
//! through the real helper binary and checks that the host's mount table never changes.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kiln_sandbox::{
    HelperCommand, IdMap, InputMount, MountRoot, RunReport, SandboxError, SandboxSpec,
    step_cgroup_parents,
};

/// Unprivileged host id the step's uid/gid 1000 maps to.
pub const HOST_ID: u32 = 100_000;
/// Size cap of /work and /tmp in these tests.
pub const SCRATCH: u64 = 1 << 20;

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub rootfs: PathBuf,
    pub input: PathBuf,
    pub out: PathBuf,
}

pub fn helper() -> HelperCommand {
    HelperCommand {
        program: env!("CARGO_BIN_EXE_kiln-sandbox-helper").into(),
        args: Vec::new(),
    }
}

fn mkdir(path: &Path) {
    fs::create_dir(path).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// A rootfs with `/bin/busybox`, a symlink per applet and the directories the sandbox needs.
pub fn busybox_rootfs(rootfs: &Path) {
    mkdir(rootfs);
    for dir in ["bin", "in", "out", "proc", "dev", "tmp", "work"] {
        mkdir(&rootfs.join(dir));
    }
    fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    let list = std::process::Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .unwrap();
    for applet in String::from_utf8(list.stdout).unwrap().lines() {
        if applet != "busybox" && !applet.contains('/') {
            symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
    }
}

impl Fixture {
    pub fn new() -> Self {
        assert!(
            nix::unistd::geteuid().is_root(),
            "the sandbox tests need root (user, mount and pid namespaces, id maps)"
        );
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        busybox_rootfs(&rootfs);
        let input = dir.path().join("src");
        mkdir(&input);
        fs::write(input.join("hello.txt"), "hello from the host\n").unwrap();
        let out = dir.path().join("out");
        mkdir(&out);
        std::os::unix::fs::chown(&out, Some(HOST_ID), Some(HOST_ID)).unwrap();
        Fixture {
            dir,
            rootfs,
            input,
            out,
        }
    }

    /// A spec running `script` with `/bin/sh -c`, one input named `src`, 10 s timeout.
    pub fn spec(&self, script: &str) -> SandboxSpec {
        SandboxSpec {
            rootfs: self.rootfs.clone(),
            inputs: vec![InputMount {
                source: self.input.clone(),
                name: "src".into(),
                root: MountRoot::In,
            }],
            out_dir: Some(self.out.clone()),
            scratch_bytes: SCRATCH,
            argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
            env: BTreeMap::from([("PATH".into(), "/bin".into())]),
            ids: IdMap {
                host_uid: HOST_ID,
                host_gid: HOST_ID,
                step_uid: 1000,
                step_gid: 1000,
            },
            timeout: Duration::from_secs(10),
            hostname: "kiln-test".into(),
            limits: kiln_sandbox::Limits::default(),
        }
    }

    /// The host's mounts at or under this test's directory (where a leaked sandbox mount would
    /// show: its rootfs, inputs and out dir live here). Mounts elsewhere belong to other tests
    /// running at the same time, e.g. a worker's /out tmpfs.
    fn mounts_here(&self) -> Vec<String> {
        let root = self.dir.path().to_string_lossy().into_owned();
        fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| l.split(' ').nth(4).is_some_and(|m| m.starts_with(&root)))
            .map(str::to_owned)
            .collect()
    }

    /// Runs `spec`; returns the report and the log. Asserts the host's mounts did not change.
    pub fn run(&self, spec: &SandboxSpec) -> Result<(RunReport, String), SandboxError> {
        let before = self.mounts_here();
        let log_path = self.dir.path().join("step.log");
        let log = fs::File::create(&log_path).unwrap();
        let report = kiln_sandbox::run_report(&helper(), spec, log);
        let after = self.mounts_here();
        assert_eq!(before, after, "the sandbox left mounts behind on the host");
        let log = fs::read_to_string(&log_path).unwrap();
        report.map(|report| (report, log))
    }

    /// Runs `script`, expects it to exit 0, returns its log.
    pub fn run_ok(&self, script: &str) -> String {
        let (report, log) = self.run(&self.spec(script)).unwrap();
        assert_eq!(
            report.outcome,
            kiln_sandbox::Outcome::Exited(0),
            "log:\n{log}"
        );
        log
    }
}

/// Host pids whose command line contains `needle` (NUL-separated argv, e.g. `sleep\0123`).
pub fn processes_with_cmdline(needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmdline) = fs::read(entry.path().join("cmdline"))
            && String::from_utf8_lossy(&cmdline).contains(needle)
        {
            found.push(pid);
        }
    }
    found
}

/// This test process, moved into a cgroup of its own below its own in every v1 hierarchy: a
/// killed launcher or standby leaves its step cgroup behind until the next sweep, and it must
/// not show under the kiln parents that tests running at the same time check for stale
/// cgroups (nextest runs each test as a process of its own, all in one cgroup). Dropping it moves the process back and removes what is left.
pub struct OwnCgroup {
    dirs: Vec<PathBuf>,
}

impl OwnCgroup {
    pub fn enter() -> Self {
        let parents = step_cgroup_parents().unwrap();
        let mut dirs = Vec::new();
        if parents.len() > 1 {
            // v1: each kiln parent is `<own>/kiln`.
            for own in parents.iter().filter_map(|p| p.parent()) {
                let dir = own.join(format!("launcher-test-{}", std::process::id()));
                fs::create_dir(&dir).unwrap();
                fs::write(dir.join("cgroup.procs"), std::process::id().to_string()).unwrap();
                dirs.push(dir);
            }
        }
        Self { dirs }
    }
}

impl Drop for OwnCgroup {
    fn drop(&mut self) {
        // A failed test may have left a step frozen: thaw every hierarchy's first, or its
        // processes cannot die and the other hierarchies' directories cannot go.
        for dir in &self.dirs {
            let entries = fs::read_dir(dir.join("kiln"))
                .into_iter()
                .flatten()
                .flatten();
            for entry in entries {
                let _ = fs::write(entry.path().join("freezer.state"), "THAWED");
            }
        }
        for dir in &self.dirs {
            let own = dir.parent().unwrap();
            fs::write(own.join("cgroup.procs"), std::process::id().to_string()).unwrap();
            let kiln = dir.join("kiln");
            let entries = fs::read_dir(&kiln).into_iter().flatten().flatten();
            for entry in entries.filter(|e| e.path().is_dir()) {
                remove_cgroup_soon(&entry.path());
            }
            remove_cgroup_soon(&kiln);
            remove_cgroup_soon(dir);
            assert!(!dir.exists(), "cannot remove {}", dir.display());
        }
    }
}

/// Removes a cgroup directory, retrying for up to 5 s while its last processes exit.
fn remove_cgroup_soon(dir: &Path) {
    let until = Instant::now() + Duration::from_secs(5);
    while dir.exists() && fs::remove_dir(dir).is_err() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
}
