//! The step's cgroup: resource limits over every process of the step together, the usage and
//! limit events read back at the end, and the kill that makes sure nothing of the step
//! outlives it.
//!
//! # Shape
//!
//! [`StepCgroup`] is the one interface; [`v1`] and [`v2`] implement it over the cgroup
//! filesystem (plain reads and writes, no library). [`create`] picks one at run time: cgroup v2
//! when `/sys/fs/cgroup/cgroup.controllers` lists `memory` and `pids`, else the v1 hierarchies
//! found in `/proc/self/mountinfo` (`memory`, `pids`, `cpu`, `cpuacct`, and `freezer` when
//! mounted). On a hybrid machine (v1 controllers plus a cgroup2 mount at
//! `/sys/fs/cgroup/unified` that holds no controller) that is v1.
//!
//! # Where the cgroups live
//!
//! Every step gets `kiln/<helper pid>-<helper start time>` under a *kiln parent*:
//!
//! - v1: under the helper's own cgroup in each hierarchy (`/proc/self/cgroup`), so the step
//!   stays inside whatever limits the worker itself runs under;
//! - v2: next to the helper's own cgroup (`<parent of own>/kiln`), because v2 forbids
//!   processes in a cgroup whose controllers are delegated to children: the worker must run in
//!   a leaf of a delegated subtree (e.g. systemd `Delegate=yes` and a `worker/` sub-cgroup).
//!
//! The kiln parent is created once and kept (creating and removing it around every step cost
//! two more `mkdir`/`rmdir` per hierarchy); the launcher removes it, if empty, when it exits.
//!
//! The name identifies the helper that owns the cgroup. A helper killed before it could clean
//! up (SIGKILL, OOM, power cut of the worker) leaves its cgroup behind; [`sweep_stale`] kills
//! and removes every child whose owner is no longer alive. The one-shot helper sweeps before
//! each step, the launcher when it starts and after handing out each step.
//!
//! # Order
//!
//! A launcher's standby process makes its step's cgroup before the step arrives
//! ([`create_unlimited`]) and forks a cloner that moves itself in ([`crate::cloner`]); the
//! cloner clones the step's pid 1 there when the step comes, so no process is moved on the
//! step's critical path (a move waits for an RCU grace period when none happened in the last
//! ~10–20 ms: ~12 ms here). Otherwise (one-shot helper) the helper clones pid 1 outside any
//! step cgroup, creates the cgroup and moves pid 1 in while it finishes its mount namespace.
//! Either way the limits are written and the cloner is reaped before the release. Pid 1 runs
//! only kiln's code until the helper releases it; then it unshares its cgroup namespace
//! (rooted at the step's cgroup: the step sees `/`, not the host path) and forks the step,
//! which is born in the cgroup with no moment outside its limits. When pid 1 is gone the
//! helper kills whatever is left in the cgroup ([`StepCgroup::kill_all`]) and reads usage and
//! events ([`Guard::settle`]); after its report, dropping the [`Guard`] removes the
//! directories. The guard does the kill and removal on every early return too.
//!
//! # Deliberately absent
//!
//! No rlimits (per process, see the pid 1 code), no I/O or cpuset limits, no memory
//! reservation or soft limits, no reuse of a step's cgroup (peaks and event counters cannot
//! all be reset), no use of `CLONE_INTO_CGROUP` (v2 only; the cloner works on both).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::error::SetupError;
use crate::run::{LimitEvent, ResourceUsage};
use crate::spec::Limits;

mod file;
pub(crate) mod v1;
pub(crate) mod v2;

/// Where cgroup filesystems are mounted on every Linux distribution kiln supports.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The directory steps' cgroups are created in, under the kiln parent.
const KILN_DIR: &str = "kiln";
/// CFS period used for CPU bandwidth, in microseconds (the kernel's default).
const CPU_PERIOD_US: u64 = 100_000;
/// The smallest CFS quota the kernel accepts, in microseconds.
const MIN_CPU_QUOTA_US: u64 = 1_000;
/// How long [`StepCgroup::kill_all`] keeps killing before it reports survivors.
const KILL_PATIENCE: Duration = Duration::from_secs(5);
/// How long a sweep waits for one stale cgroup to empty (see [`sweep`]).
const SWEEP_PATIENCE: Duration = Duration::from_millis(100);

/// One step's cgroup, in whichever cgroup version the machine has.
pub(crate) trait StepCgroup {
    /// Writes the step's limits.
    fn set_limits(&mut self, limits: &Limits) -> Result<(), SetupError>;

    /// Moves process `pid` (all its threads) into the cgroup; its future children are born
    /// there.
    fn add(&self, pid: Pid) -> Result<(), SetupError>;

    /// Pids of the processes in the cgroup now.
    fn procs(&self) -> Result<Vec<Pid>, SetupError>;

    /// Kills every process in the cgroup and waits until it is empty.
    fn kill_all(&self) -> Result<(), SetupError>;

    /// Peak memory, CPU time and peak pids so far.
    fn usage(&self) -> Result<ResourceUsage, SetupError>;

    /// OOM kills and refused forks so far (never [`LimitEvent::Timeout`]: the helper knows
    /// about that one).
    fn events(&self) -> Result<Vec<LimitEvent>, SetupError>;

    /// Removes the cgroup directories; the cgroup must be empty. Idempotent.
    fn remove(&mut self) -> Result<(), SetupError>;
}

/// Which cgroup version the machine offers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Layout {
    /// Unified hierarchy with `memory` and `pids`: the `kiln` directory next to the helper's
    /// own cgroup.
    V2 { kiln: PathBuf },
    /// Separate hierarchies: the helper's own cgroup directory in each.
    V1(v1::OwnDirs),
}

/// Finds the machine's cgroup layout and the helper's place in it.
pub(crate) fn detect() -> Result<Layout, SetupError> {
    let root = Path::new(CGROUP_ROOT);
    let proc_cgroup = file::read(Path::new("/proc/self/cgroup"))?;
    let controllers = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
    let words: Vec<&str> = controllers.split_whitespace().collect();
    if words.contains(&"memory") && words.contains(&"pids") {
        let own = v2::own_dir(root, &proc_cgroup)?;
        let kiln = v2::kiln_parent(root, &own);
        return Ok(Layout::V2 { kiln });
    }
    let mountinfo = file::read(Path::new("/proc/self/mountinfo"))?;
    v1::own_dirs(&mountinfo, &proc_cgroup).map(Layout::V1)
}

/// The directories under which steps' cgroups are created for processes in the caller's
/// cgroups (one per v1 hierarchy, one on v2). For health checks and tests: after every step
/// ended, they hold no child whose owning helper is gone.
pub fn step_cgroup_parents() -> Result<Vec<PathBuf>, SetupError> {
    detect().map(|layout| parents(&layout))
}

/// Creates this helper's step cgroup in `layout`, with `limits` written.
pub(crate) fn create(layout: &Layout, limits: &Limits) -> Result<Guard, SetupError> {
    let mut guard = create_unlimited(layout)?;
    guard.set_limits(limits)?;
    Ok(guard)
}

/// Creates this process's step cgroup in `layout`, with no limits yet: a launcher's standby
/// process makes it before it knows its step. Nothing may run in it before
/// [`Guard::set_limits`].
pub(crate) fn create_unlimited(layout: &Layout) -> Result<Guard, SetupError> {
    let name = own_name()?;
    let cgroup: Box<dyn StepCgroup> = match layout {
        Layout::V2 { kiln } => Box::new(v2::V2::create(kiln, &name)?),
        Layout::V1(own) => Box::new(v1::V1::create(own, &name)?),
    };
    Ok(Guard {
        cgroup: Some(cgroup),
    })
}

/// A step cgroup that is killed and removed when dropped, whatever happened before.
pub(crate) struct Guard {
    cgroup: Option<Box<dyn StepCgroup>>,
}

impl Guard {
    pub(crate) fn set_limits(&mut self, limits: &Limits) -> Result<(), SetupError> {
        self.cgroup
            .as_deref_mut()
            .expect("only `drop` takes the cgroup")
            .set_limits(limits)
    }

    pub(crate) fn get(&self) -> &dyn StepCgroup {
        self.cgroup
            .as_deref()
            .expect("only `drop` takes the cgroup")
    }

    /// Kills what is left of the step, reads usage and events. Dropping the guard removes the
    /// cgroup.
    pub(crate) fn settle(&self) -> Result<(ResourceUsage, Vec<LimitEvent>), SetupError> {
        let cgroup = self.get();
        cgroup.kill_all()?;
        Ok((cgroup.usage()?, cgroup.events()?))
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut cgroup) = self.cgroup.take() {
            let killed = cgroup.kill_all();
            let removed = cgroup.remove();
            if killed.is_err() || removed.is_err() {
                tracing::error!(?killed, ?removed, "cannot clean up the step's cgroup");
            }
        }
    }
}

/// `<pid>-<start time in clock ticks since boot>` of this process: unique among live
/// processes, and tells a later helper whether the owner is still alive.
fn own_name() -> Result<String, SetupError> {
    let pid = std::process::id();
    let started = start_time(pid).ok_or_else(|| SetupError::CgroupRead {
        path: "/proc/self/stat".into(),
        source: Errno::EINVAL,
    })?;
    Ok(format!("{pid}-{started}"))
}

/// Field 22 of `/proc/<pid>/stat`, if the process exists.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

fn parse_start_time(stat: &str) -> Option<u64> {
    // The command name (field 2) may contain spaces and parentheses; it ends at the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    // `rest` starts at field 3, so field 22 is the 20th word.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the step cgroup called `name` belongs to a helper that is gone. Names kiln did not
/// make are never stale: they are left alone.
fn is_stale(name: &str) -> bool {
    let Some((pid, started)) = name.split_once('-') else {
        return false;
    };
    let (Ok(pid), Ok(started)) = (pid.parse::<u32>(), started.parse::<u64>()) else {
        return false;
    };
    start_time(pid) != Some(started)
}

/// The kiln parents of `layout`: one per v1 hierarchy, one on v2.
fn parents(layout: &Layout) -> Vec<PathBuf> {
    match layout {
        Layout::V2 { kiln } => vec![kiln.clone()],
        Layout::V1(own) => own.kiln_parents(),
    }
}

/// Kills and removes every step cgroup of `layout` whose owning helper is gone.
pub(crate) fn sweep_stale(layout: &Layout) {
    sweep(&parents(layout));
}

/// Removes the kiln parents of `layout` if no step cgroup is left in them (the launcher, when
/// it exits), so that the worker's own cgroup can be removed once the worker is gone.
pub(crate) fn remove_empty_parents(layout: &Layout) {
    for parent in parents(layout) {
        let _ = std::fs::remove_dir(parent);
    }
}

/// Kills and removes every step cgroup under `parents` whose owning helper is gone. Best
/// effort and brief: a cgroup that is not empty within [`SWEEP_PATIENCE`] is left for the next
/// sweep, so that one stuck leftover never holds up every step after it.
///
/// A helper killed while it had its step frozen (v1 `freezer.state`, v2 `cgroup.freeze`)
/// leaves the step's processes frozen, and a frozen process does not die of SIGKILL until it is
/// thawed: every stale cgroup is thawed first, in every hierarchy, then killed.
fn sweep(parents: &[PathBuf]) {
    let stale: Vec<PathBuf> = parents
        .iter()
        .filter_map(|parent| std::fs::read_dir(parent).ok())
        .flat_map(|entries| entries.flatten())
        // The name first: most entries are the parent's control files, and `file_type` comes
        // from the directory listing, without a `stat` per entry.
        .filter(|entry| {
            is_stale(&entry.file_name().to_string_lossy())
                && entry.file_type().is_ok_and(|t| t.is_dir())
        })
        .map(|entry| entry.path())
        .collect();
    for dir in &stale {
        thaw(dir);
    }
    for dir in &stale {
        let killed = kill_until_empty(dir, None, SWEEP_PATIENCE);
        match file::try_remove_dir(dir) {
            Ok(()) => tracing::warn!(cgroup = %dir.display(), ?killed, "swept a stale step cgroup"),
            Err(removed) => tracing::warn!(cgroup = %dir.display(), ?killed, %removed,
                "a stale step cgroup is not empty yet; the next sweep tries again"),
        }
    }
}

/// Thaws `dir` if it is a freezer cgroup (v1) or a frozen v2 cgroup. Best effort.
fn thaw(dir: &Path) {
    let v1 = dir.join("freezer.state");
    if v1.exists() {
        let _ = file::write(&v1, "THAWED");
    }
    let v2 = dir.join("cgroup.freeze");
    if v2.exists() {
        let _ = file::write(&v2, "0");
    }
}

/// SIGKILLs every process listed in `dir/cgroup.procs` until none is left or `patience`
/// passed. `freeze`, if given, freezes (`true`) and thaws (`false`) the
/// cgroup around each round: while frozen nothing in it can fork, or exit and free its pid
/// for reuse, between the read and the kill.
pub(crate) fn kill_until_empty(
    dir: &Path,
    freeze: Option<&dyn Fn(bool)>,
    patience: Duration,
) -> Result<(), SetupError> {
    // The usual case: pid 1's exit already emptied the cgroup; no need to freeze it.
    if file::pids(&dir.join("cgroup.procs"))?.is_empty() {
        return Ok(());
    }
    let give_up = Instant::now() + patience;
    let mut pause = Duration::from_micros(100);
    loop {
        if let Some(freeze) = freeze {
            freeze(true);
        }
        let procs = file::pids(&dir.join("cgroup.procs"));
        let signalled = procs.as_deref().map_or(Ok(()), |procs| {
            for pid in procs {
                match kill(*pid, Signal::SIGKILL) {
                    Ok(()) | Err(Errno::ESRCH) => {}
                    Err(source) => return Err(source),
                }
            }
            Ok(())
        });
        if let Some(freeze) = freeze {
            // Killed tasks die as soon as they are thawed.
            freeze(false);
        }
        let procs = procs?;
        signalled.map_err(|source| SetupError::CgroupSignal {
            path: dir.to_owned(),
            source,
        })?;
        if procs.is_empty() {
            return Ok(());
        }
        if Instant::now() > give_up {
            return Err(SetupError::CgroupKill {
                path: dir.to_owned(),
                left: procs.len(),
            });
        }
        // Dying processes leave the cgroup when they have exited, not when signalled.
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// CFS quota in microseconds per [`CPU_PERIOD_US`] for `millicpus` thousandths of a CPU.
pub(crate) fn cpu_quota_us(millicpus: u64) -> u64 {
    (millicpus.saturating_mul(CPU_PERIOD_US) / 1000).max(MIN_CPU_QUOTA_US)
}

/// The value of `key` in a flat keyed file (`key value` per line), e.g. `memory.events`.
/// The limit events a step's counters show, the same for v1 and v2: `memory_events` is the
/// text holding the `oom_kill` counter (v1 `memory.oom_control`, v2 `memory.events`),
/// `pids_events` the content of `pids.events`.
pub(crate) fn limit_events(
    memory_events: &str,
    pids_events: &str,
    limits: &Limits,
) -> Vec<LimitEvent> {
    let mut events = Vec::new();
    if keyed(memory_events, "oom_kill").unwrap_or(0) > 0 {
        events.push(LimitEvent::MemoryLimit {
            limit_bytes: limits.memory_bytes,
        });
    }
    if keyed(pids_events, "max").unwrap_or(0) > 0 {
        events.push(LimitEvent::PidsLimit { limit: limits.pids });
    }
    events
}

/// `pids.peak` where the kernel keeps it (Linux 6.1+), else `pids.current`, in `dir`.
pub(crate) fn peak_pids(dir: &Path) -> Result<u64, SetupError> {
    match file::read_u64_if_present(&dir.join("pids.peak"))? {
        Some(peak) => Ok(peak),
        None => file::read_u64(&dir.join("pids.current")),
    }
}

pub(crate) fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_is_field_22_even_with_parentheses_in_the_name() {
        let stat = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 123456 \
                    1000 100 18446744073709551615";
        assert_eq!(parse_start_time(stat), Some(123_456));
        assert_eq!(parse_start_time("garbage"), None);
    }

    #[test]
    fn own_name_is_not_stale_and_dead_or_foreign_names_are() {
        let name = own_name().unwrap();
        assert!(!is_stale(&name), "{name}");
        let pid = std::process::id();
        assert!(is_stale(&format!("{pid}-1")), "same pid, other start time");
        assert!(is_stale(&format!("{}-5", u32::MAX)), "no such process");
        for foreign in ["system.slice", "a-b", "12", "-", ""] {
            assert!(!is_stale(foreign), "{foreign:?} is not kiln's: leave it");
        }
    }

    #[test]
    fn cpu_quota_scales_and_respects_the_kernel_minimum() {
        assert_eq!(cpu_quota_us(1000), 100_000);
        assert_eq!(cpu_quota_us(1500), 150_000);
        assert_eq!(cpu_quota_us(500), 50_000);
        assert_eq!(cpu_quota_us(1), MIN_CPU_QUOTA_US);
        assert_eq!(cpu_quota_us(u64::MAX), u64::MAX / 1000);
    }

    /// Real cgroups, as root: the kill works on its own, with no pid namespace to help it.
    #[test]
    fn kill_all_empties_the_cgroup_and_finish_removes_it() {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let limits = Limits {
            memory_bytes: 64 << 20,
            pids: 16,
            millicpus: 1000,
            open_files: 64,
        };
        let guard = create(&detect().unwrap(), &limits).unwrap();
        // The shell forks its two sleeps only once it is in the cgroup.
        let mut shell = Command::new("/bin/sh")
            .args(["-c", "read go; sleep 1000 & exec sleep 1000"])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        guard.get().add(Pid::from_raw(shell.id() as i32)).unwrap();
        shell.stdin.take().unwrap().write_all(b"go\n").unwrap();
        let until = Instant::now() + Duration::from_secs(5);
        while guard.get().procs().unwrap().len() < 2 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(guard.get().procs().unwrap().len(), 2, "shell and its sleep");
        guard.get().kill_all().unwrap();
        assert_eq!(guard.get().procs().unwrap(), []);
        let status = shell.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
        let (usage, events) = guard.settle().unwrap();
        drop(guard);
        assert!(usage.peak_pids >= 2, "{usage:?}");
        assert_eq!(events, []);
        let name = own_name().unwrap();
        for parent in step_cgroup_parents().unwrap() {
            assert!(
                !parent.join(&name).exists(),
                "{} left behind",
                parent.display()
            );
        }
    }

    #[test]
    fn keyed_files_are_read_by_key() {
        let events = "low 0\nhigh 3\nmax 7\noom 1\noom_kill 2\noom_group_kill 0\n";
        assert_eq!(keyed(events, "oom_kill"), Some(2));
        assert_eq!(keyed(events, "max"), Some(7));
        assert_eq!(keyed(events, "oom"), Some(1));
        assert_eq!(keyed(events, "missing"), None);
    }

    /// Regression: a helper killed between freezing its step and thawing it left the step's
    /// processes frozen with SIGKILL pending; the sweep killed without thawing, waited its full
    /// patience on every step, and the cgroup never went away (every later step took ~35 s).
    #[test]
    fn a_stale_frozen_step_cgroup_is_thawed_killed_and_removed() {
        let parents = step_cgroup_parents().unwrap();
        // This process's pid with another start time: an owner that is gone.
        let name = format!("{}-1", std::process::id());
        let dirs: Vec<PathBuf> = parents.iter().map(|p| p.join(&name)).collect();
        for (parent, dir) in parents.iter().zip(&dirs) {
            file::create_in_parent(parent, &name).unwrap();
            assert!(dir.is_dir());
        }
        let mut child = std::process::Command::new("sleep")
            .arg("1000")
            .spawn()
            .unwrap();
        let pid = Pid::from_raw(child.id() as i32);
        let leftover = Leftover {
            dirs: dirs.clone(),
            pid,
        };
        for dir in &dirs {
            file::write(&dir.join("cgroup.procs"), &pid.to_string()).unwrap();
        }
        let frozen = freeze_for_test(&dirs);
        kill(pid, Signal::SIGKILL).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        if frozen {
            assert!(
                child.try_wait().unwrap().is_none(),
                "a frozen task survives SIGKILL"
            );
        }

        // Sweeps, as launchers make them before steps, until the leftover is gone.
        let give_up = Instant::now() + Duration::from_secs(3);
        while dirs.iter().any(|d| d.exists()) && Instant::now() < give_up {
            sweep(&parents);
        }
        let gone: Vec<_> = dirs.iter().filter(|d| d.exists()).collect();
        assert!(gone.is_empty(), "still there: {gone:?}");
        assert!(child.wait().unwrap().code().is_none(), "killed by a signal");
        drop(leftover);
    }

    /// Freezes the test's cgroup (v1 freezer or v2 `cgroup.freeze`); `false` without a freezer.
    fn freeze_for_test(dirs: &[PathBuf]) -> bool {
        // (file to write, value, file to read, what it reads once frozen) per cgroup version.
        let v1 = |dir: &Path| {
            (
                dir.join("freezer.state"),
                "FROZEN",
                dir.join("freezer.state"),
                "FROZEN",
            )
        };
        let v2 = |dir: &Path| {
            (
                dir.join("cgroup.freeze"),
                "1",
                dir.join("cgroup.events"),
                "frozen 1",
            )
        };
        let Some((control, value, state, frozen)) = dirs
            .iter()
            .flat_map(|dir| [v1(dir), v2(dir)])
            .find(|(control, ..)| control.exists())
        else {
            return false;
        };
        file::write(&control, value).unwrap();
        for _ in 0..200 {
            if std::fs::read_to_string(&state).unwrap().contains(frozen) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("{} never froze", control.display());
    }

    /// Thaws, kills and removes what a failed test left.
    struct Leftover {
        dirs: Vec<PathBuf>,
        pid: Pid,
    }

    impl Drop for Leftover {
        fn drop(&mut self) {
            for dir in &self.dirs {
                thaw(dir);
            }
            let _ = kill(self.pid, Signal::SIGKILL);
            for dir in &self.dirs {
                let _ = file::remove_dir(dir);
            }
        }
    }
}
