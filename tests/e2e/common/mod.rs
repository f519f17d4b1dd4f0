//! Shared helpers of the end-to-end tests: they drive the real `kiln` binary.
#![allow(dead_code)]

pub mod cluster;
pub mod openssl;
pub mod process;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `kiln` binary under test.
pub fn kiln_bin() -> &'static str {
    env!("CARGO_BIN_EXE_kiln")
}

/// One isolated kiln installation: its own data dir and scratch space, removed on drop.
pub struct Env {
    pub dir: tempfile::TempDir,
    /// `KILN_DATABASE_URL` for every `kiln` this env runs: the controller's state on
    /// PostgreSQL instead of `DATA/state.sqlite`.
    pub database_url: Option<String>,
}

impl Env {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
            database_url: None,
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// `kiln ARGS` with this env's data dir; returns the output whatever the exit status.
    pub fn kiln(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(kiln_bin());
        cmd.args(args)
            .env("KILN_DATA_DIR", self.data_dir())
            .env_remove("KILN_LOG")
            .env_remove("KILN_DATABASE_URL")
            .current_dir(self.dir.path());
        if let Some(url) = &self.database_url {
            cmd.env("KILN_DATABASE_URL", url);
        }
        cmd.output().expect("spawn kiln")
    }

    /// `kiln ARGS`, which must succeed.
    pub fn kiln_ok(&self, args: &[&str]) -> Output {
        let out = self.kiln(args);
        assert!(
            out.status.success(),
            "kiln {args:?} failed:\n{}",
            text(&out)
        );
        out
    }

    /// `kiln ARGS`, which must fail saying `expected`; the output.
    #[allow(dead_code)] // not every e2e binary expects a refusal
    pub fn kiln_refused(&self, args: &[&str], expected: &str) -> Output {
        let out = self.kiln(args);
        assert!(
            !out.status.success(),
            "kiln {args:?} succeeded:\n{}",
            text(&out)
        );
        assert!(
            text(&out).contains(expected),
            "kiln {args:?}:\n{}",
            text(&out)
        );
        out
    }

    /// `kiln admin token create --team TEAM --ttl TTL` against this env's data dir: the token.
    #[allow(dead_code)] // not every e2e binary submits to a daemon
    pub fn team_token(&self, team: &str, ttl: &str) -> String {
        let out = self.kiln_ok(&["admin", "token", "create", "--team", team, "--ttl", ttl]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("token: "))
            .expect("kiln admin token create prints `token: ...`")
            .trim()
            .to_string()
    }

    /// Writes a file relative to the env's dir and returns its path.
    pub fn write(&self, rel: &str, content: &str) -> PathBuf {
        let path = self.path(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, content).unwrap();
        path
    }

    /// Imports a minimal busybox rootfs as `busybox@1`.
    pub fn import_busybox(&self) {
        let root = self.path("busybox-rootfs");
        busybox_rootfs(&root);
        self.kiln_ok(&[
            "mirror",
            "import-rootfs",
            root.to_str().unwrap(),
            "--name",
            "busybox@1",
        ]);
    }

    /// Runs a pipeline file; returns the output whatever the exit status.
    pub fn run(&self, pipeline: &Path) -> Output {
        self.kiln(&[
            "run",
            pipeline.to_str().unwrap(),
            "--out",
            self.path("out").to_str().unwrap(),
        ])
    }
}

impl Drop for Env {
    /// A worker killed with SIGKILL leaves its staging tmpfs and its steps' `/out` tmpfs
    /// mounted (a restarted worker would sweep them; a test's never restarts): detach every
    /// mount under this env so the machine is left as it was and the temp dir can be removed.
    fn drop(&mut self) {
        detach_mounts_under(self.dir.path());
    }
}

/// Lazily unmounts every mount at or below `dir`, deepest first.
pub fn detach_mounts_under(dir: &Path) {
    let Ok(mountinfo) = fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<&str> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| Path::new(p).starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for point in points {
        let _ = Command::new("umount").arg("-l").arg(point).status();
    }
}

/// stdout and stderr together, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A tiny rootfs: static busybox and the applets the tests use.
pub fn busybox_rootfs(root: &Path) {
    for dir in ["bin", "etc", "usr/bin"] {
        fs::create_dir_all(root.join(dir)).unwrap();
    }
    fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox-static is installed");
    for applet in [
        "sh", "cat", "echo", "ls", "touch", "nc", "wget", "ln", "mkdir", "id", "sleep", "grep",
        "true", "false", "head", "dd", "rm", "env", "ip", "chmod", "mknod", "mkfifo", "cp", "stat",
    ] {
        symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    fs::write(
        root.join("etc/passwd"),
        "root:x:0:0::/root:/bin/sh\nbuilder:x:1000:1000::/work:/bin/sh\n",
    )
    .unwrap();
}

/// Digest of a file, as lowercase hex.
pub fn sha256_file(path: &Path) -> String {
    kiln_core::Sha256Digest::of(&fs::read(path).unwrap()).to_string()
}
