//! cgroup limits, usage and limit events, through the real helper and real cgroups: a memory
//! bomb, a fork bomb, a CPU spin, a daemon that ignores SIGTERM, and stale cgroups left by a
//! dead helper. Every test also checks that the step's cgroups are gone afterwards.
//!
//! Each test runs its step under a host uid of its own, so "no process of the step is left"
//! is a question about one uid, even with the tests running in parallel.

mod common;

use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Fixture, OwnCgroup};
use kiln_sandbox::{LimitEvent, Limits, Outcome, RunReport, SandboxSpec, step_cgroup_parents};

/// A spec running `script` as host uid `host_uid` with `limits`.
fn spec(f: &Fixture, script: &str, host_uid: u32, limits: Limits) -> SandboxSpec {
    let mut spec = f.spec(script);
    spec.ids.host_uid = host_uid;
    spec.ids.host_gid = host_uid;
    spec.limits = limits;
    spec
}

fn limits(memory_bytes: u64, pids: u64, millicpus: u64) -> Limits {
    Limits {
        memory_bytes,
        pids,
        millicpus,
        ..Limits::default()
    }
}

/// Host pids of the processes whose real uid is `uid`.
fn processes_of(uid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(status) = fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let real_uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().next())
            .and_then(|id| id.parse::<u32>().ok());
        if real_uid == Some(uid) {
            found.push(pid);
        }
    }
    found
}

/// The step cgroup directories (one per hierarchy) that process `pid` is in.
fn step_cgroup_dirs_of(pid: u32) -> Vec<PathBuf> {
    let Ok(text) = fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
        return Vec::new();
    };
    // From the host's cgroup namespace the step's path ends in `kiln/<name>`.
    let Some(name) = text
        .lines()
        .filter_map(|l| l.rsplit_once("/kiln/"))
        .map(|(_, name)| name.to_owned())
        .next()
    else {
        return Vec::new();
    };
    let parents = step_cgroup_parents().unwrap();
    parents.iter().map(|p| p.join(&name)).collect()
}

/// Runs `spec` while watching the host for processes of `uid`; returns the report, the log,
/// and the step's cgroup directories as seen while it ran.
fn run_watched(f: &Fixture, spec: &SandboxSpec, uid: u32) -> (RunReport, String, Vec<PathBuf>) {
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                if let Some(&pid) = processes_of(uid).first() {
                    let dirs = step_cgroup_dirs_of(pid);
                    if !dirs.is_empty() {
                        return dirs;
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Vec::new()
        });
        let result = f.run(spec);
        done.store(true, Ordering::Relaxed);
        let dirs = watcher.join().unwrap();
        let (report, log) = result.unwrap();
        (report, log, dirs)
    })
}

/// Nothing of the step is left: no process of its uid, none of its cgroup directories, and
/// no step cgroup whose helper is gone.
fn assert_step_gone(uid: u32, dirs: &[PathBuf]) {
    assert!(!dirs.is_empty(), "the step's cgroup was never seen");
    assert_eq!(
        processes_of(uid),
        Vec::<u32>::new(),
        "processes of host uid {uid} survived"
    );
    for dir in dirs {
        assert!(!dir.exists(), "{} was left behind", dir.display());
    }
    assert_no_stale_step_cgroups();
}

/// Every step cgroup left under the kiln parents belongs to a helper that is still running.
fn assert_no_stale_step_cgroups() {
    for parent in step_cgroup_parents().unwrap() {
        let Ok(entries) = fs::read_dir(&parent) else {
            continue; // removed once empty
        };
        for entry in entries.flatten().filter(|e| e.path().is_dir()) {
            let name = entry.file_name().to_string_lossy().into_owned();
            let owner = name.split_once('-').map(|(pid, _)| pid.to_owned());
            let alive = owner.is_some_and(|pid| fs::metadata(format!("/proc/{pid}")).is_ok());
            assert!(alive, "stale step cgroup {}", entry.path().display());
        }
    }
}

#[test]
fn memory_bomb_is_oom_killed_and_reported_as_memory_limit() {
    let _own = OwnCgroup::enter();
    const UID: u32 = 100_201;
    let f = Fixture::new();
    // Command substitution buffers all 300MiB in the shell itself.
    let script = "x=$(head -c $((300 << 20)) /dev/zero | tr '\\0' a); echo survived ${#x}";
    let spec = spec(&f, script, UID, limits(64 << 20, 64, 2000));
    let (report, log, dirs) = run_watched(&f, &spec, UID);
    assert_eq!(
        report.events,
        [LimitEvent::MemoryLimit {
            limit_bytes: 64 << 20
        }],
        "{report:?}\nlog:\n{log}"
    );
    assert_eq!(
        report.memory_limit().unwrap().to_string(),
        "killed: memory limit 64MiB exceeded"
    );
    assert!(!log.contains("survived"), "{log}");
    assert!(
        report.usage.peak_memory_bytes <= 64 << 20,
        "{:?}",
        report.usage
    );
    assert!(
        report.usage.peak_memory_bytes > 32 << 20,
        "the bomb got going: {:?}",
        report.usage
    );
    assert_step_gone(UID, &dirs);
}

#[test]
fn fork_bomb_is_contained_by_the_pids_limit_and_the_host_stays_responsive() {
    let _own = OwnCgroup::enter();
    const UID: u32 = 100_202;
    let f = Fixture::new();
    // The step's own shell forks only before the bomb starts (`sleep`, then the subshell), then
    // waits: a shell whose fork fails exits, and on a loaded machine the bomb used to fill the
    // pids limit before the shell forked `sleep` (exit 2 instead of the timeout: once in CI, and
    // 4 runs of 15 beside four busy loops; none of 10 since).
    let mut spec = spec(
        &f,
        "sleep 100 & (bomb() { bomb | bomb & }; bomb) 2>/dev/null; wait",
        UID,
        limits(256 << 20, 64, 2000),
    );
    spec.timeout = Duration::from_secs(3);
    let done = AtomicBool::new(false);
    let (report, log, dirs, host_forks) = std::thread::scope(|s| {
        // While the bomb runs, the host can still start processes.
        let prober = s.spawn(|| {
            let mut forks = 0;
            while !done.load(Ordering::Relaxed) {
                let status = std::process::Command::new("/bin/true").status().unwrap();
                assert!(status.success());
                forks += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            forks
        });
        let (report, log, dirs) = run_watched(&f, &spec, UID);
        done.store(true, Ordering::Relaxed);
        (report, log, dirs, prober.join().unwrap())
    });
    assert_eq!(report.outcome, Outcome::TimedOut, "log:\n{log}");
    assert_eq!(
        report.events,
        [LimitEvent::PidsLimit { limit: 64 }, LimitEvent::Timeout],
        "{report:?}"
    );
    assert!(
        report.usage.peak_pids <= 64 && report.usage.peak_pids > 32,
        "{:?}",
        report.usage
    );
    assert!(
        host_forks >= 10,
        "the host started only {host_forks} processes in 3 s"
    );
    assert_step_gone(UID, &dirs);
}

/// CPU time over wall time of a 2 s busy loop with `millicpus`.
fn spin_share(f: &Fixture, uid: u32, millicpus: u64) -> f64 {
    let script = "while :; do :; done & sleep 2; kill $!";
    let spec = spec(f, script, uid, limits(256 << 20, 64, millicpus));
    let (report, log, dirs) = run_watched(f, &spec, uid);
    assert_eq!(report.outcome, Outcome::Exited(0), "log:\n{log}");
    assert_eq!(report.events, []);
    assert_step_gone(uid, &dirs);
    report.usage.cpu_time.as_secs_f64() / report.timing.command.as_secs_f64()
}

#[test]
fn cpu_spin_gets_about_the_share_it_was_given() {
    let _own = OwnCgroup::enter();
    let f = Fixture::new();
    let half = spin_share(&f, 100_203, 500);
    let whole = spin_share(&f, 100_203, 2000);
    // The anchor is printed, not asserted: on a loaded machine (these tests run in parallel
    // with bombs) the unlimited spin may get little more than the limited one.
    println!("cpu share with 0.5 CPU: {half:.2}; unlimited anchor: {whole:.2}");
    assert!(half < 0.8, "0.5 CPU used {half:.2} of wall time");
    assert!(half > 0.2, "the spin barely ran: {half:.2}");
}

#[test]
fn peak_memory_is_reported_for_a_step_that_allocates_50_mib() {
    let _own = OwnCgroup::enter();
    const UID: u32 = 100_204;
    let f = Fixture::new();
    let script = "x=$(head -c $((50 << 20)) /dev/zero | tr '\\0' a); echo ${#x}";
    let spec = spec(&f, script, UID, limits(512 << 20, 64, 2000));
    let (report, log, dirs) = run_watched(&f, &spec, UID);
    assert_eq!(report.outcome, Outcome::Exited(0), "log:\n{log}");
    assert_eq!(log, format!("{}\n", 50 << 20));
    assert_eq!(report.events, []);
    let peak = report.usage.peak_memory_bytes;
    assert!(
        (50 << 20..400 << 20).contains(&peak),
        "peak {peak} for a 50MiB string"
    );
    assert!(report.usage.cpu_time > Duration::ZERO);
    assert_step_gone(UID, &dirs);
}

#[test]
fn double_forked_daemon_that_ignores_sigterm_is_gone_after_the_step() {
    let _own = OwnCgroup::enter();
    const UID: u32 = 100_205;
    let f = Fixture::new();
    let script = "(trap '' TERM HUP; setsid sh -c \"trap '' TERM HUP; sleep 1000\" &) ; \
                  sleep 0.5; echo parent-exits";
    let spec = spec(&f, script, UID, Limits::default());
    let (report, log, dirs) = run_watched(&f, &spec, UID);
    assert_eq!(report.outcome, Outcome::Exited(0), "log:\n{log}");
    assert_eq!(log, "parent-exits\n");
    assert_step_gone(UID, &dirs);
}

/// A step cgroup whose helper died (here: a made-up dead owner) with a process still in it.
struct StaleCgroup {
    dirs: Vec<PathBuf>,
    survivor: std::process::Child,
}

impl Drop for StaleCgroup {
    fn drop(&mut self) {
        let _ = self.survivor.kill();
        let _ = self.survivor.wait();
        for dir in &self.dirs {
            let _ = fs::remove_dir(dir);
        }
    }
}

#[test]
fn stale_cgroups_of_dead_helpers_are_swept_with_their_processes() {
    let f = Fixture::new();
    // Its stale cgroup must not show to tests running at the same time.
    let _own = OwnCgroup::enter();
    // No process has pid u32::MAX: the owner of this name is certainly gone.
    let name = format!("{}-1", u32::MAX);
    let mut stale = StaleCgroup {
        dirs: Vec::new(),
        survivor: std::process::Command::new("/bin/sleep")
            .arg("1000")
            .spawn()
            .unwrap(),
    };
    for parent in step_cgroup_parents().unwrap() {
        fs::create_dir_all(&parent).unwrap();
        let dir = parent.join(&name);
        fs::create_dir(&dir).unwrap();
        stale.dirs.push(dir.clone());
        fs::write(dir.join("cgroup.procs"), stale.survivor.id().to_string()).unwrap();
    }
    f.run_ok("true");
    let status = stale.survivor.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL),
        "the survivor in the stale cgroup was killed by the sweep"
    );
    for dir in &stale.dirs {
        assert!(!dir.exists(), "{} was not swept", dir.display());
    }
}

#[test]
fn limits_hold_for_a_quick_step_and_usage_is_reported_even_without_events() {
    let _own = OwnCgroup::enter();
    const UID: u32 = 100_206;
    let f = Fixture::new();
    let started = Instant::now();
    let spec = spec(
        &f,
        "cat /proc/self/cgroup; sleep 0.2",
        UID,
        Limits::default(),
    );
    let (report, log, dirs) = run_watched(&f, &spec, UID);
    assert_eq!(report.outcome, Outcome::Exited(0), "log:\n{log}");
    // The step's cgroup namespace is rooted at its own cgroup: no host path shows.
    for line in log.lines() {
        assert!(line.ends_with(":/"), "{line:?} shows a host cgroup path");
    }
    assert!(report.usage.peak_pids >= 2, "{:?}", report.usage);
    assert!(report.usage.peak_memory_bytes > 0);
    assert!(report.timing.command < started.elapsed());
    assert_step_gone(UID, &dirs);
}
