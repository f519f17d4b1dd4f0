//! cgroup v1: one directory per hierarchy (`memory`, `pids`, `cpu`, `cpuacct`, and `freezer`
//! when mounted; co-mounted controllers such as `cpu,cpuacct` share one).
//!
//! Limits: `memory.limit_in_bytes` and, with swap accounting, `memory.memsw.limit_in_bytes` at
//! the same value (no swap on top; without swap accounting `memory.swappiness` is 0 instead);
//! `pids.max`; `cpu.cfs_quota_us` per `cpu.cfs_period_us`. Usage: `memory.max_usage_in_bytes`,
//! `cpuacct.usage`, `pids.peak`. Events: `oom_kill` in `memory.oom_control`, `max` in
//! `pids.events`. Kill: freeze (if the freezer is mounted), SIGKILL every task, thaw, repeat
//! until `cgroup.procs` is empty.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::unistd::Pid;

use super::file;
use super::{
    CPU_PERIOD_US, KILL_PATIENCE, KILN_DIR, StepCgroup, cpu_quota_us, kill_until_empty,
    limit_events, peak_pids,
};
use crate::error::SetupError;
use crate::run::{LimitEvent, ResourceUsage};
use crate::spec::Limits;

/// The v1 controllers kiln uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Controller {
    Memory,
    Pids,
    Cpu,
    Cpuacct,
    /// Optional: makes the kill race-free; without it kiln kills in a loop.
    Freezer,
}

impl Controller {
    const ALL: [Self; 5] = [
        Self::Memory,
        Self::Pids,
        Self::Cpu,
        Self::Cpuacct,
        Self::Freezer,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Pids => "pids",
            Self::Cpu => "cpu",
            Self::Cpuacct => "cpuacct",
            Self::Freezer => "freezer",
        }
    }

    fn required(self) -> bool {
        self != Self::Freezer
    }
}

/// The helper's own cgroup directory in each v1 hierarchy kiln uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct OwnDirs(BTreeMap<Controller, PathBuf>);

impl OwnDirs {
    /// `<own>/kiln` in each hierarchy, without duplicates.
    pub(crate) fn kiln_parents(&self) -> Vec<PathBuf> {
        let mut parents: Vec<PathBuf> = self.0.values().map(|own| own.join(KILN_DIR)).collect();
        parents.sort();
        parents.dedup();
        parents
    }
}

/// Finds each controller's hierarchy in `mountinfo` (`/proc/self/mountinfo`) and the caller's
/// cgroup in it from `proc_cgroup` (`/proc/self/cgroup`).
pub(crate) fn own_dirs(mountinfo: &str, proc_cgroup: &str) -> Result<OwnDirs, SetupError> {
    let mut dirs = BTreeMap::new();
    for controller in Controller::ALL {
        let name = controller.name();
        let Some((mount_root, mount_point)) = mount_of(mountinfo, name) else {
            if controller.required() {
                return Err(SetupError::NoCgroups {
                    reason: format!(
                        "no cgroup v2 with memory and pids at /sys/fs/cgroup, and no cgroup v1 \
                         `{name}` hierarchy in /proc/self/mountinfo"
                    ),
                });
            }
            continue;
        };
        let Some(own) = own_path(proc_cgroup, name) else {
            return Err(SetupError::NoCgroups {
                reason: format!("/proc/self/cgroup has no line for the `{name}` controller"),
            });
        };
        // In a container the mount may show only a subtree: `own` is relative to the
        // hierarchy's root, the mount point shows `mount_root`.
        let Ok(below) = Path::new(own).strip_prefix(mount_root) else {
            return Err(SetupError::NoCgroups {
                reason: format!(
                    "own `{name}` cgroup {own} is outside the part {mount_root} mounted at \
                     {mount_point}"
                ),
            });
        };
        dirs.insert(controller, Path::new(mount_point).join(below));
    }
    Ok(OwnDirs(dirs))
}

/// `(root, mount point)` of the v1 hierarchy that has `controller`.
fn mount_of<'a>(mountinfo: &'a str, controller: &str) -> Option<(&'a str, &'a str)> {
    mountinfo.lines().find_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        let mut after = after.split_whitespace();
        let (fstype, _source, options) = (after.next()?, after.next()?, after.next()?);
        if fstype != "cgroup" || !options.split(',').any(|o| o == controller) {
            return None;
        }
        let mut before = before.split_whitespace();
        Some((before.nth(3)?, before.next()?))
    })
}

/// The caller's cgroup path in the v1 hierarchy that has `controller`.
fn own_path<'a>(proc_cgroup: &'a str, controller: &str) -> Option<&'a str> {
    proc_cgroup.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_id, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers
            .split(',')
            .any(|c| c == controller)
            .then_some(path)
    })
}

/// A step's cgroup in every v1 hierarchy kiln uses.
pub(crate) struct V1 {
    /// The step's directory per controller (co-mounted controllers share a path).
    dirs: BTreeMap<Controller, PathBuf>,
    limits: Limits,
    removed: bool,
}

impl V1 {
    /// Creates `<own>/kiln/<name>` in every hierarchy, with no limits yet. On failure,
    /// whatever was created is removed again.
    pub(crate) fn create(own: &OwnDirs, name: &str) -> Result<Self, SetupError> {
        let mut cgroup = Self {
            dirs: BTreeMap::new(),
            limits: Limits::default(),
            removed: false,
        };
        let created = own.0.iter().try_for_each(|(&controller, own_dir)| {
            let dir = own_dir.join(KILN_DIR).join(name);
            if !cgroup.dirs.values().any(|d| *d == dir) {
                file::create_in_parent(&own_dir.join(KILN_DIR), name)?;
            }
            cgroup.dirs.insert(controller, dir);
            Ok(())
        });
        match created {
            Ok(()) => Ok(cgroup),
            Err(err) => {
                let _ = cgroup.remove();
                Err(err)
            }
        }
    }

    fn dir(&self, controller: Controller) -> &Path {
        &self.dirs[&controller]
    }

    /// Distinct directories, each once.
    fn unique_dirs(&self) -> Vec<&PathBuf> {
        let mut dirs: Vec<&PathBuf> = self.dirs.values().collect();
        dirs.sort();
        dirs.dedup();
        dirs
    }

    /// Freezes (`true`) or thaws (`false`) the step; waits briefly for `FROZEN`. Best effort:
    /// the kill loop works without it, only less tidily.
    fn freeze(&self, freeze: bool) {
        let Some(dir) = self.dirs.get(&Controller::Freezer) else {
            return;
        };
        let state = dir.join("freezer.state");
        let want = if freeze { "FROZEN" } else { "THAWED" };
        if file::write(&state, want).is_err() || !freeze {
            return;
        }
        let give_up = Instant::now() + Duration::from_millis(100);
        while Instant::now() < give_up {
            match std::fs::read_to_string(&state) {
                Ok(now) if now.trim() == "FREEZING" => {
                    std::thread::sleep(Duration::from_micros(200))
                }
                _ => return,
            }
        }
    }
}

impl StepCgroup for V1 {
    fn set_limits(&mut self, limits: &Limits) -> Result<(), SetupError> {
        self.limits = *limits;
        let memory = self.dir(Controller::Memory);
        let bytes = self.limits.memory_bytes.to_string();
        file::write(&memory.join("memory.limit_in_bytes"), &bytes)?;
        let memsw = memory.join("memory.memsw.limit_in_bytes");
        if memsw.exists() {
            file::write(&memsw, &bytes)?;
        } else {
            file::write(&memory.join("memory.swappiness"), "0")?;
        }
        let pids = self.dir(Controller::Pids);
        file::write(&pids.join("pids.max"), &self.limits.pids.to_string())?;
        let cpu = self.dir(Controller::Cpu);
        file::write(&cpu.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
        let quota = cpu_quota_us(self.limits.millicpus).to_string();
        file::write(&cpu.join("cpu.cfs_quota_us"), &quota)
    }

    fn add(&self, pid: Pid) -> Result<(), SetupError> {
        for dir in self.unique_dirs() {
            file::write(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    fn procs(&self) -> Result<Vec<Pid>, SetupError> {
        file::pids(&self.dir(Controller::Pids).join("cgroup.procs"))
    }

    fn kill_all(&self) -> Result<(), SetupError> {
        // Every process of the step is in every hierarchy; the pids one is as good as any.
        let freeze = |on: bool| self.freeze(on);
        kill_until_empty(self.dir(Controller::Pids), Some(&freeze), KILL_PATIENCE)
    }

    fn usage(&self) -> Result<ResourceUsage, SetupError> {
        let memory = self.dir(Controller::Memory);
        let peak_memory_bytes = file::read_u64(&memory.join("memory.max_usage_in_bytes"))?;
        let cpu_ns = file::read_u64(&self.dir(Controller::Cpuacct).join("cpuacct.usage"))?;
        let peak_pids = peak_pids(self.dir(Controller::Pids))?;
        Ok(ResourceUsage {
            peak_memory_bytes,
            cpu_time: Duration::from_nanos(cpu_ns),
            peak_pids,
        })
    }

    fn events(&self) -> Result<Vec<LimitEvent>, SetupError> {
        let oom = file::read(&self.dir(Controller::Memory).join("memory.oom_control"))?;
        let pids = file::read(&self.dir(Controller::Pids).join("pids.events"))?;
        Ok(limit_events(&oom, &pids, &self.limits))
    }

    fn remove(&mut self) -> Result<(), SetupError> {
        if self.removed {
            return Ok(());
        }
        // A frozen cgroup cannot be removed with tasks in it; make sure none is left frozen.
        self.freeze(false);
        for dir in self.unique_dirs() {
            file::remove_dir(dir)?;
        }
        self.removed = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    const HYBRID_CGROUP: &str = "\
9:name=systemd:/
8:pids:/
6:freezer:/
4:memory:/process_api/c895
2:cpuacct:/
1:cpu:/
0::/
";

    #[test]
    fn own_dirs_follow_each_hierarchy_and_the_own_cgroup_in_it() {
        let own = own_dirs(HYBRID_MOUNTINFO, HYBRID_CGROUP).unwrap();
        let expected = [
            (Controller::Memory, "/sys/fs/cgroup/memory/process_api/c895"),
            (Controller::Pids, "/sys/fs/cgroup/pids/"),
            (Controller::Cpu, "/sys/fs/cgroup/cpu/"),
            (Controller::Cpuacct, "/sys/fs/cgroup/cpuacct/"),
            (Controller::Freezer, "/sys/fs/cgroup/freezer/"),
        ];
        for (controller, dir) in expected {
            assert_eq!(own.0[&controller], Path::new(dir), "{controller:?}");
        }
        assert_eq!(own.kiln_parents().len(), 5);
    }

    #[test]
    fn co_mounted_controllers_share_one_directory_and_container_roots_are_stripped() {
        let mountinfo = "\
30 25 0:26 /docker/abc /sys/fs/cgroup/cpu,cpuacct ro,nosuid - cgroup cgroup rw,cpu,cpuacct
31 25 0:27 /docker/abc /sys/fs/cgroup/memory ro,nosuid - cgroup cgroup rw,memory
32 25 0:28 /docker/abc /sys/fs/cgroup/pids ro,nosuid - cgroup cgroup rw,pids
";
        let cgroup = "5:pids:/docker/abc/w\n4:cpu,cpuacct:/docker/abc/w\n3:memory:/docker/abc/w\n";
        let own = own_dirs(mountinfo, cgroup).unwrap();
        assert_eq!(own.0[&Controller::Cpu], own.0[&Controller::Cpuacct]);
        assert_eq!(
            own.0[&Controller::Cpu],
            Path::new("/sys/fs/cgroup/cpu,cpuacct/w")
        );
        assert!(!own.0.contains_key(&Controller::Freezer));
        assert_eq!(
            own.kiln_parents(),
            [
                PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/w/kiln"),
                PathBuf::from("/sys/fs/cgroup/memory/w/kiln"),
                PathBuf::from("/sys/fs/cgroup/pids/w/kiln"),
            ]
        );
    }

    #[test]
    fn a_missing_required_hierarchy_is_refused_by_name() {
        let mountinfo = HYBRID_MOUNTINFO.replace("rw,pids", "rw,hugetlb");
        let err = own_dirs(&mountinfo, HYBRID_CGROUP).unwrap_err();
        assert!(err.to_string().contains("`pids`"), "{err}");
    }

    #[test]
    fn limits_usage_and_events_use_the_v1_files() {
        let tmp = tempfile::tempdir().unwrap();
        let mut own = BTreeMap::new();
        for controller in [
            Controller::Memory,
            Controller::Pids,
            Controller::Cpu,
            Controller::Cpuacct,
        ] {
            let dir = tmp.path().join(controller.name());
            std::fs::create_dir(&dir).unwrap();
            own.insert(controller, dir);
        }
        // A tempdir grows no control files, so this looks like a kernel without swap
        // accounting.
        let limits = Limits {
            memory_bytes: 64 << 20,
            pids: 64,
            millicpus: 500,
            open_files: 10,
        };
        let mut cgroup = V1::create(&OwnDirs(own), "s").unwrap();
        cgroup.set_limits(&limits).unwrap();
        let read = |path: &str| std::fs::read_to_string(tmp.path().join(path)).unwrap();
        assert_eq!(read("memory/kiln/s/memory.limit_in_bytes"), "67108864");
        assert_eq!(read("memory/kiln/s/memory.swappiness"), "0");
        assert_eq!(read("pids/kiln/s/pids.max"), "64");
        assert_eq!(read("cpu/kiln/s/cpu.cfs_quota_us"), "50000");
        assert_eq!(read("cpu/kiln/s/cpu.cfs_period_us"), "100000");

        let write = |path: &str, text: &str| std::fs::write(tmp.path().join(path), text).unwrap();
        write("memory/kiln/s/memory.max_usage_in_bytes", "52428800\n");
        write("cpuacct/kiln/s/cpuacct.usage", "1500000000\n");
        write("pids/kiln/s/pids.peak", "64\n");
        write(
            "memory/kiln/s/memory.oom_control",
            "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
        );
        write("pids/kiln/s/pids.events", "max 12\n");
        let usage = cgroup.usage().unwrap();
        assert_eq!(usage.peak_memory_bytes, 50 << 20);
        assert_eq!(usage.cpu_time, Duration::from_millis(1500));
        assert_eq!(usage.peak_pids, 64);
        assert_eq!(
            cgroup.events().unwrap(),
            [
                LimitEvent::MemoryLimit {
                    limit_bytes: 64 << 20
                },
                LimitEvent::PidsLimit { limit: 64 }
            ]
        );
        write(
            "memory/kiln/s/memory.oom_control",
            "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
        );
        write("pids/kiln/s/pids.events", "max 0\n");
        assert_eq!(cgroup.events().unwrap(), []);
        // The fake directories hold files, so rmdir fails: removal must say which one.
        let err = cgroup.remove().unwrap_err();
        assert!(matches!(err, SetupError::CgroupRemove { .. }), "{err}");
    }
}
