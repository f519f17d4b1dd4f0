//! A `kiln` child process owned by a test: its output goes to files in the test's directory,
//! and its whole process group is killed (SIGKILL) and reaped when the guard drops, also when
//! the test fails.

use std::fs;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::kiln_bin;

/// A running `kiln ARGS`, killed with its process group on drop.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Proc {
    /// Spawns `kiln ARGS` with no kiln variables inherited from the test's environment, logs at
    /// info level, output in `DIR/NAME.stdout` and `DIR/NAME.stderr`.
    pub fn spawn(name: &str, dir: &Path, args: &[&str]) -> Self {
        Self::spawn_with_env(name, dir, args, &[])
    }

    /// [`Proc::spawn`] with extra environment variables.
    pub fn spawn_with_env(name: &str, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let stdout = dir.join(format!("{name}.stdout"));
        let stderr = dir.join(format!("{name}.stderr"));
        let child = Command::new(kiln_bin())
            .args(args)
            .env_remove("KILN_DATA_DIR")
            .env_remove("KILN_CONTROLLER")
            .env_remove("KILN_TOKEN")
            .env_remove("KILN_CONFIG")
            .env_remove("KILN_DATABASE_URL")
            .env("KILN_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(fs::File::create(&stdout).unwrap())
            .stderr(fs::File::create(&stderr).unwrap())
            // Its own process group, so that the guard can kill what it started too.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        Self {
            name: name.into(),
            child: Some(child),
            stdout,
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => child.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    pub fn stdout(&self) -> String {
        fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// What it printed so far, for assertions and failure messages.
    pub fn output(&self) -> String {
        format!(
            "--- {} stdout ---\n{}--- {} stderr ---\n{}",
            self.name,
            self.stdout(),
            self.name,
            self.stderr()
        )
    }

    /// `kill -9` of the process and its group (its sandbox helpers die with it).
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            kill_group(child.id());
        }
    }

    /// Sends a signal to the process (not its group).
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{sig} {}", self.name);
    }

    /// Waits for the process to exit on its own; its exit status.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {timeout:?}\n{}",
                self.name,
                self.output()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until a line of its output yields `Some` under `find`.
    pub fn wait_for_line<T>(
        &self,
        timeout: Duration,
        what: &str,
        find: impl Fn(&str) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            let printed = self.output();
            if let Some(found) = printed.lines().find_map(&find) {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "{}: timed out waiting for {what}\n{printed}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The URL a daemon prints once it listens.
    pub fn listening_url(&self) -> String {
        self.wait_for_line(Duration::from_secs(30), "the daemon to listen", |l| {
            l.split("listening on ")
                .nth(1)
                .map(|u| u.trim().to_string())
        })
    }

    /// The id the controller gave a worker, from its "registered" log line.
    pub fn worker_id(&self) -> String {
        self.wait_for_line(Duration::from_secs(30), "the worker to register", |l| {
            if !l.contains("registered") {
                return None;
            }
            l.split("worker=")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .map(str::to_string)
        })
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(child.id());
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status();
}
