//! cgroup v2: one directory in the unified hierarchy.
//!
//! Limits: `memory.max`, `memory.swap.max` = 0 (no swap on top), `pids.max`, `cpu.max`.
//! Usage: `memory.peak` (Linux 5.19+, else `memory.current`), `usage_usec` in `cpu.stat`,
//! `pids.peak` (6.1+, else `pids.current`). Events: `oom_kill` in `memory.events`, `max` in
//! `pids.events`. Kill: `cgroup.kill` (5.14+), then SIGKILL in a loop for whatever is left.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::unistd::Pid;

use super::file;
use super::{
    CPU_PERIOD_US, KILL_PATIENCE, KILN_DIR, StepCgroup, cpu_quota_us, keyed, kill_until_empty,
    limit_events, peak_pids,
};
use crate::error::SetupError;
use crate::run::{LimitEvent, ResourceUsage};
use crate::spec::Limits;

/// Controllers a step's cgroup needs.
const CONTROLLERS: [&str; 3] = ["cpu", "memory", "pids"];

/// The helper's own cgroup directory under `root`, from `/proc/self/cgroup` (`0::/path`).
pub(crate) fn own_dir(root: &Path, proc_cgroup: &str) -> Result<PathBuf, SetupError> {
    let path = proc_cgroup
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .ok_or_else(|| SetupError::NoCgroups {
            reason: "/proc/self/cgroup has no cgroup v2 line (`0::/path`)".into(),
        })?;
    // A path outside our cgroup namespace shows as `/../..`: nothing kiln can use.
    if path.split('/').any(|c| c == "..") {
        return Err(SetupError::NoCgroups {
            reason: format!("own cgroup {path} is outside this cgroup namespace"),
        });
    }
    Ok(root.join(path.trim_start_matches('/')))
}

/// The `kiln` directory next to `own` (under the root itself when `own` is the root): v2 allows
/// no processes in a cgroup that delegates controllers, so it cannot go under `own`.
pub(crate) fn kiln_parent(root: &Path, own: &Path) -> PathBuf {
    match own.parent() {
        Some(parent) if own != root && parent.starts_with(root) => parent.join(KILN_DIR),
        _ => root.join(KILN_DIR),
    }
}

/// A step's cgroup in the unified hierarchy.
pub(crate) struct V2 {
    dir: PathBuf,
    kiln: PathBuf,
    limits: Limits,
    removed: bool,
}

impl V2 {
    /// Creates `kiln/<name>` and delegates the controllers to it, with no limits yet.
    pub(crate) fn create(kiln: &Path, name: &str) -> Result<Self, SetupError> {
        file::create_in_parent(kiln, name)?;
        let mut cgroup = Self {
            dir: kiln.join(name),
            kiln: kiln.to_owned(),
            limits: Limits::default(),
            removed: false,
        };
        match cgroup.delegate() {
            Ok(()) => Ok(cgroup),
            Err(err) => {
                let _ = cgroup.remove();
                Err(err)
            }
        }
    }

    /// Makes sure `kiln` has the controllers and hands them down to the step's cgroup.
    fn delegate(&self) -> Result<(), SetupError> {
        let missing_in = |dir: &Path, file: &str| -> Vec<&'static str> {
            let text = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
            let have: Vec<&str> = text.split_whitespace().collect();
            CONTROLLERS
                .into_iter()
                .filter(|c| !have.contains(c))
                .collect()
        };
        let plus = |names: &[&str]| {
            names
                .iter()
                .map(|n| format!("+{n}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let missing = missing_in(&self.kiln, "cgroup.controllers");
        if !missing.is_empty() {
            if let Some(parent) = self.kiln.parent() {
                // Fails if the parent holds processes: then the worker is not in a leaf of a
                // delegated subtree, and the error below says so.
                let _ = file::write(&parent.join("cgroup.subtree_control"), &plus(&missing));
            }
            let missing = missing_in(&self.kiln, "cgroup.controllers");
            if !missing.is_empty() {
                return Err(SetupError::CgroupControllers {
                    path: self.kiln.clone(),
                    missing: missing.join(" "),
                });
            }
        }
        let undelegated = missing_in(&self.kiln, "cgroup.subtree_control");
        if undelegated.is_empty() {
            return Ok(());
        }
        file::write(
            &self.kiln.join("cgroup.subtree_control"),
            &plus(&undelegated),
        )
    }
}

impl StepCgroup for V2 {
    fn set_limits(&mut self, limits: &Limits) -> Result<(), SetupError> {
        self.limits = *limits;
        let dir = &self.dir;
        file::write(
            &dir.join("memory.max"),
            &self.limits.memory_bytes.to_string(),
        )?;
        let swap = dir.join("memory.swap.max");
        if swap.exists() {
            file::write(&swap, "0")?;
        }
        file::write(&dir.join("pids.max"), &self.limits.pids.to_string())?;
        let quota = cpu_quota_us(self.limits.millicpus);
        file::write(&dir.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))
    }

    fn add(&self, pid: Pid) -> Result<(), SetupError> {
        file::write(&self.dir.join("cgroup.procs"), &pid.to_string())
    }

    fn procs(&self) -> Result<Vec<Pid>, SetupError> {
        file::pids(&self.dir.join("cgroup.procs"))
    }

    fn kill_all(&self) -> Result<(), SetupError> {
        let kill = self.dir.join("cgroup.kill");
        if kill.exists() && !self.procs()?.is_empty() {
            file::write(&kill, "1")?;
        }
        kill_until_empty(&self.dir, None, KILL_PATIENCE)
    }

    fn usage(&self) -> Result<ResourceUsage, SetupError> {
        let dir = &self.dir;
        let peak_memory_bytes = match file::read_u64_if_present(&dir.join("memory.peak"))? {
            Some(peak) => peak,
            None => file::read_u64(&dir.join("memory.current"))?,
        };
        let cpu_stat = dir.join("cpu.stat");
        let usec = keyed(&file::read(&cpu_stat)?, "usage_usec").ok_or(SetupError::CgroupRead {
            path: cpu_stat,
            source: nix::errno::Errno::EINVAL,
        })?;
        let peak_pids = peak_pids(dir)?;
        Ok(ResourceUsage {
            peak_memory_bytes,
            cpu_time: Duration::from_micros(usec),
            peak_pids,
        })
    }

    fn events(&self) -> Result<Vec<LimitEvent>, SetupError> {
        let memory = file::read(&self.dir.join("memory.events"))?;
        let pids = file::read(&self.dir.join("pids.events"))?;
        Ok(limit_events(&memory, &pids, &self.limits))
    }

    fn remove(&mut self) -> Result<(), SetupError> {
        if self.removed {
            return Ok(());
        }
        file::remove_dir(&self.dir)?;
        self.removed = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_dir_and_kiln_parent_follow_proc_self_cgroup() {
        let root = Path::new("/sys/fs/cgroup");
        let own = own_dir(root, "0::/system.slice/kiln-worker.service/worker\n").unwrap();
        assert_eq!(
            own,
            Path::new("/sys/fs/cgroup/system.slice/kiln-worker.service/worker")
        );
        assert_eq!(
            kiln_parent(root, &own),
            Path::new("/sys/fs/cgroup/system.slice/kiln-worker.service/kiln")
        );
        let top = own_dir(root, "0::/\n").unwrap();
        assert_eq!(kiln_parent(root, &top), Path::new("/sys/fs/cgroup/kiln"));
        assert!(own_dir(root, "0::/../../x\n").is_err());
        assert!(own_dir(root, "4:memory:/\n").is_err());
    }

    #[test]
    fn limits_usage_and_events_use_the_v2_files() {
        let tmp = tempfile::tempdir().unwrap();
        let kiln = tmp.path().join("kiln");
        std::fs::create_dir(&kiln).unwrap();
        std::fs::write(
            kiln.join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .unwrap();
        let limits = Limits {
            memory_bytes: 512 << 20,
            pids: 256,
            millicpus: 1500,
            open_files: 10,
        };
        let mut cgroup = V2::create(&kiln, "s").unwrap();
        cgroup.set_limits(&limits).unwrap();
        let read = |path: &str| std::fs::read_to_string(tmp.path().join(path)).unwrap();
        assert_eq!(read("kiln/cgroup.subtree_control"), "+cpu +memory +pids");
        assert_eq!(read("kiln/s/memory.max"), "536870912");
        assert_eq!(read("kiln/s/pids.max"), "256");
        assert_eq!(read("kiln/s/cpu.max"), "150000 100000");

        let write = |path: &str, text: &str| std::fs::write(tmp.path().join(path), text).unwrap();
        write("kiln/s/memory.peak", "1048576\n");
        write(
            "kiln/s/cpu.stat",
            "usage_usec 250000\nuser_usec 200000\nsystem_usec 50000\n",
        );
        write("kiln/s/pids.current", "0\n");
        write(
            "kiln/s/memory.events",
            "low 0\nhigh 0\nmax 9\noom 1\noom_kill 1\n",
        );
        write("kiln/s/pids.events", "max 0\n");
        let usage = cgroup.usage().unwrap();
        assert_eq!(usage.peak_memory_bytes, 1 << 20);
        assert_eq!(usage.cpu_time, Duration::from_millis(250));
        assert_eq!(usage.peak_pids, 0);
        assert_eq!(
            cgroup.events().unwrap(),
            [LimitEvent::MemoryLimit {
                limit_bytes: 512 << 20
            }]
        );
        assert!(matches!(
            cgroup.remove(),
            Err(SetupError::CgroupRemove { .. })
        ));
    }

    #[test]
    fn undelegated_controllers_are_refused_with_a_hint() {
        let tmp = tempfile::tempdir().unwrap();
        let kiln = tmp.path().join("kiln");
        std::fs::create_dir(&kiln).unwrap();
        std::fs::write(kiln.join("cgroup.controllers"), "memory\n").unwrap();
        let err = V2::create(&kiln, "s").err().unwrap();
        assert_eq!(
            err,
            SetupError::CgroupControllers {
                path: kiln,
                missing: "cpu pids".into()
            }
        );
    }
}
